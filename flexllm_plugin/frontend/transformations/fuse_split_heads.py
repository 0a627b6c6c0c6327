"""``Reshape(x [1, L, H*d], [.., L, H, d]) -> Transpose(0, 2, 1, 3)`` -> ``SplitHeads`` ([1, H, L, d])."""

from ._fusion import FusionTransformation
from ._graph import attr


class FuseSplitHeads(FusionTransformation):
    def match(self, rw, node):
        idx = rw.idx
        if node.op_type != "Transpose" or node.domain != "" or list(attr(node, "perm", [])) != [0, 2, 1, 3]:
            return
        reshape = idx.prod(node.input[0], "Reshape")
        if reshape is None or not idx.is_const(reshape.input[1]):
            return
        x = reshape.input[0]
        xs, rs = idx.shape(x), idx.shape(reshape.output[0])
        if xs is None or rs is None or len(xs) != 3 or len(rs) != 4:
            return
        if rs[0] != xs[0] or rs[1] != xs[1] or rs[2] * rs[3] != xs[2]:
            return
        chain = [reshape, node]
        if not idx.only_used_by(reshape.output[0], chain) or rw.claimed(chain):
            return
        rw.replace(chain, rw.make_node("SplitHeads", [x], [node.output[0]], chain, num_heads=int(rs[2]),
                                       head_dim=int(rs[3])))
