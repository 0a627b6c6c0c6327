"""``Gather(x [1, L, D], -1, axis=1)`` (scalar index -1 or L-1) -> ``LastToken`` ([1, D])."""

from ._fusion import FusionTransformation
from ._graph import attr


class FuseLastToken(FusionTransformation):
    def match(self, rw, node):
        idx = rw.idx
        if node.op_type != "Gather" or node.domain != "" or int(attr(node, "axis", 0)) != 1:
            return
        x, ind = node.input
        val, shape = idx.const(ind), idx.shape(x)
        if val is None or val.ndim != 0 or shape is None or len(shape) != 3:
            return
        if int(val) not in (-1, shape[1] - 1):
            return
        rw.replace([node], rw.make_node("LastToken", [x], [node.output[0]], [node]))
