"""Base class of the fusion transformations."""

from qonnx.transformation.base import Transformation

from ._graph import Rewriter


class FusionTransformation(Transformation):
    """One qonnx ``Transformation`` per fused pattern: ``match(rw, node)`` is called for every node of
    the graph (in order) and registers a fusion with ``rw.replace``; all fusions of a pass are applied
    together, dead nodes and unused initialisers are then removed and the node list re-sorted.
    ``apply`` returns ``graph_modified=True`` while a pass fused something (qonnx then re-applies it)."""

    def match(self, rw: Rewriter, node) -> None:
        raise NotImplementedError

    def apply(self, model):
        rw = Rewriter(model)
        for node in list(model.graph.node):
            if not rw.claimed([node]):
                self.match(rw, node)
        modified = rw.commit()
        return model, modified
