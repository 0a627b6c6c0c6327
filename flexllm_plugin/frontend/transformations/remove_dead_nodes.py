"""Remove nodes whose outputs nobody reads (and the initialisers no node reads any more)."""

from qonnx.transformation.base import Transformation

from ._graph import remove_dead_nodes


class RemoveDeadNodes(Transformation):
    def apply(self, model):
        remove_dead_nodes(model)
        return model, False
