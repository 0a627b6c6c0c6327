"""``MatMul(x, W')`` with ``x`` from a ``DynamicTokenQuant`` and ``W'`` a quantized constant weight ->
``QuantLinear``.

Raw export:   ``Quant(W [out, in], s [out, 1], 0, b, signed=1) -> Transpose(1, 0) -> MatMul``.
After qonnx cleanup (``FoldTransposeIntoQuantInit``): ``Quant(W^T [in, out], s [1, out], 0, b) -> MatMul``;
the weight and scale are then transposed back (the quantizer is elementwise, so the values are the same)."""

import numpy as np

from ..ops._base import FLEXLLM_DOMAIN
from ._fusion import FusionTransformation
from ._graph import attr, static_quant


class FuseQuantLinear(FusionTransformation):
    def match(self, rw, node):
        idx = rw.idx
        if node.op_type != "MatMul" or node.domain != "":
            return
        x, w_in = node.input
        xprod = idx.producer.get(x)
        if xprod is None or xprod.domain != FLEXLLM_DOMAIN or xprod.op_type != "DynamicTokenQuant":
            return
        chain = []
        tr = idx.prod(w_in, "Transpose")
        if tr is not None:
            if list(attr(tr, "perm", [1, 0])) != [1, 0]:
                return
            qnode = idx.prod(tr.input[0], "Quant")
            transposed = False          # Quant output is [out, in]
            chain.append(tr)
        else:
            qnode = idx.prod(w_in, "Quant")
            transposed = True           # Quant output is [in, out]
        q = static_quant(idx, qnode)
        if q is None or q["signed"] != 1 or np.any(q["zero_point"] != 0):
            return
        meta = idx.const_meta(q["x"])
        if meta is None or len(meta[0]) != 2 or meta[1] != np.float32:
            return
        wshape = meta[0]
        scale = q["scale"]
        try:
            scale = np.broadcast_to(scale, wshape)       # must broadcast against the weight
        except ValueError:
            return
        # per output channel: constant along the input axis
        first = scale[:1, :] if transposed else scale[:, :1]
        if not np.all(scale == first):
            return
        scale = np.ascontiguousarray(first.T if transposed else first).astype(np.float32)   # [out, 1]
        out_f, in_f = (wshape[1], wshape[0]) if transposed else wshape
        xshape = idx.shape(x)
        if xshape is not None and xshape[-1] != in_f:
            return
        chain = [qnode] + chain + [node]
        for n in chain[:-1]:
            if not idx.only_used_by(n.output[0], chain):
                return
        if rw.claimed(chain):
            return
        new = rw.make_node("QuantLinear", [x, "", ""], [node.output[0]], chain, w_bits=q["bits"],
                           narrow=q["narrow"])
        if transposed:   # after qonnx cleanup: store [out, in] again
            new.input[1] = rw.add_initializer(f"{new.name}.weight", np.ascontiguousarray(idx.const(q["x"]).T))
        else:
            new.input[1] = rw.initializer_for(q["x"], None, q["x"])
        new.input[2] = rw.initializer_for(qnode.input[1], scale, f"{new.name}.w_scale")
        rw.replace(chain, new)
