"""RMSNorm subgraph -> ``RMSNorm``.

``Pow(x, 2) -> ReduceMean(last axis, keepdims) -> Add(eps) -> Sqrt -> Div(1, .) -> Mul(x, .) ->
Mul(weight, .)`` (commutative operands in either order), weight a constant [D]."""

import numpy as np

from ._fusion import FusionTransformation
from ._graph import commutative_split, is_last_axis_reduce


class FuseRMSNorm(FusionTransformation):
    def match(self, rw, node):
        idx = rw.idx
        if node.op_type != "Mul" or node.domain != "":
            return
        split = commutative_split(idx, node, lambda t: idx.const(t) is not None and idx.const(t).ndim == 1)
        if split is None:
            return
        weight, y = split
        m1 = idx.prod(y, "Mul")
        if m1 is None:
            return
        # Mul(x, inv): inv is the Div output
        split = commutative_split(idx, m1, lambda t: idx.prod(t, "Div") is not None)
        if split is None:
            return
        inv, x = split
        div = idx.prod(inv, "Div")
        if idx.scalar(div.input[0]) != 1.0:
            return
        sqrt = idx.prod(div.input[1], "Sqrt")
        add = sqrt and idx.prod(sqrt.input[0], "Add")
        if add is None:
            return
        split = commutative_split(idx, add, lambda t: idx.scalar(t) is not None)
        if split is None:
            return
        eps_name, mean = split
        rmean = idx.prod(mean, "ReduceMean")
        pow_ = rmean and idx.prod(rmean.input[0], "Pow")
        if pow_ is None or pow_.input[0] != x or idx.scalar(pow_.input[1]) != 2.0:
            return
        shape = idx.shape(x)
        if not is_last_axis_reduce(idx, rmean, len(shape) if shape else None):
            return
        wval = idx.const(weight)
        if shape is None or wval.shape != (shape[-1],) or wval.dtype != np.float32:
            return
        chain = [pow_, rmean, add, sqrt, div, m1, node]
        for n in chain[:-1]:
            if not idx.only_used_by(n.output[0], chain):
                return
        if rw.claimed(chain):
            return
        eps = float(np.float32(idx.scalar(eps_name)))
        weight = rw.initializer_for(weight, wval, weight)
        rw.replace(chain, rw.make_node("RMSNorm", [x, weight], [node.output[0]], chain, eps=eps))
