"""``Add(a, b)`` of two non-constant tensors of the same shape [1, L, D] -> ``ResidualAdd``.

Runs last: by then the RMSNorm (eps), RoPE and mask Adds are fused, so only the two residual
connections per layer are left."""

from ._fusion import FusionTransformation


class FuseResidualAdd(FusionTransformation):
    def match(self, rw, node):
        idx = rw.idx
        if node.op_type != "Add" or node.domain != "":
            return
        a, b = node.input
        if idx.is_const(a) or idx.is_const(b):
            return
        sa, sb = idx.shape(a), idx.shape(b)
        if sa is None or sa != sb or len(sa) != 3:
            return
        rw.replace([node], rw.make_node("ResidualAdd", [a, b], [node.output[0]], [node]))
