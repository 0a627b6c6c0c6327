"""``Mul(Mul(gate, Sigmoid(gate)), up)`` (commutative operands in either order) -> ``SwiGLU``."""

from ._fusion import FusionTransformation
from ._graph import commutative_split


class FuseSwiGLU(FusionTransformation):
    def match(self, rw, node):
        idx = rw.idx

        def silu(t):
            """(inner Mul, Sigmoid, gate) if t = Mul(gate, Sigmoid(gate))."""
            mul = idx.prod(t, "Mul")
            if mul is None:
                return None
            for g, s in ((mul.input[0], mul.input[1]), (mul.input[1], mul.input[0])):
                sig = idx.prod(s, "Sigmoid")
                if sig is not None and sig.input[0] == g:
                    return mul, sig, g
            return None

        if node.op_type != "Mul" or node.domain != "":
            return
        split = commutative_split(idx, node, lambda t: silu(t) is not None)
        if split is None:
            return
        act, up = split
        if idx.is_const(up):
            return
        mul, sig, gate = silu(act)
        chain = [sig, mul, node]
        if not (idx.only_used_by(sig.output[0], [mul]) and idx.only_used_by(mul.output[0], [node])):
            return
        if rw.claimed(chain):
            return
        rw.replace(chain, rw.make_node("SwiGLU", [gate, up], [node.output[0]], chain))
