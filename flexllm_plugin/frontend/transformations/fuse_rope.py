"""Rotate-half RoPE -> ``RoPE``.

``Add(Mul(x, cos), Mul(Concat(Neg(Slice(x, d/2:)), Slice(x, :d/2), axis=-1), sin))`` (commutative
operands in either order) on ``x [1, heads, L, d]``, where ``cos``/``sin`` are either constants of
[L, d] (prefill: rows 0..L-1) or ``Gather(table [T, d], position [1], axis=0)`` (decode, L = 1: the
fused node reads the full tables and takes ``position`` as its 4th input)."""

import numpy as np

from ._fusion import FusionTransformation
from ._graph import attr

INT64_MAX = np.iinfo(np.int64).max


def _slice_params(idx, sl, rank):
    """(start, end) of a Slice over the last axis with step 1, else None."""
    ins = list(sl.input) + [""] * (5 - len(sl.input))
    starts, ends, axes, steps = (idx.const(n) if n else None for n in ins[1:5])
    if starts is None or ends is None or starts.size != 1 or ends.size != 1:
        return None
    if ins[3] and (axes is None or axes.size != 1 or int(axes.reshape(-1)[0]) not in (-1, rank - 1)):
        return None
    if not ins[3] and rank != 1:
        return None
    if ins[4] and (steps is None or steps.size != 1 or int(steps.reshape(-1)[0]) != 1):
        return None
    return int(starts.reshape(-1)[0]), int(ends.reshape(-1)[0])


class FuseRoPE(FusionTransformation):
    def _table(self, idx, t, length, dim):
        """('const', value [L, d]) | ('gather', table name, table value, position name) | None."""
        val = idx.const(t)
        if val is not None:
            if val.dtype != np.float32 or val.size != length * dim or val.shape[-1] != dim:
                return None
            return ("const", val.reshape(length, dim), t)
        g = idx.prod(t, "Gather")
        if g is None or int(attr(g, "axis", 0)) != 0 or length != 1:
            return None
        table = idx.const(g.input[0])
        pos_shape = idx.shape(g.input[1])
        if table is None or table.ndim != 2 or table.shape[1] != dim or table.dtype != np.float32:
            return None
        if idx.is_const(g.input[1]) or pos_shape != [1]:
            return None
        return ("gather", table, g.input[0], g.input[1])

    def match(self, rw, node):
        idx = rw.idx
        if node.op_type != "Add" or node.domain != "":
            return
        muls = [idx.prod(t, "Mul") for t in node.input]
        if any(m is None for m in muls):
            return
        # the sin product is the Mul with a Concat operand
        for m_cos, m_sin in ((muls[0], muls[1]), (muls[1], muls[0])):
            cat = next((idx.prod(t, "Concat") for t in m_sin.input if idx.prod(t, "Concat") is not None), None)
            if cat is not None:
                break
        else:
            return
        sin_t = m_sin.input[1] if m_sin.input[0] == cat.output[0] else m_sin.input[0]
        if len(cat.input) != 2:
            return
        neg = idx.prod(cat.input[0], "Neg")
        sl_lo = idx.prod(cat.input[1], "Slice")
        sl_hi = neg and idx.prod(neg.input[0], "Slice")
        if sl_lo is None or sl_hi is None or sl_lo.input[0] != sl_hi.input[0]:
            return
        x = sl_lo.input[0]
        if x not in m_cos.input:
            return
        cos_t = m_cos.input[1] if m_cos.input[0] == x else m_cos.input[0]
        shape = idx.shape(x)
        if shape is None or len(shape) != 4 or shape[-1] % 2:
            return
        dim, length, half = shape[-1], shape[-2], shape[-1] // 2
        if int(attr(cat, "axis", 0)) not in (-1, 3):
            return
        p_hi, p_lo = _slice_params(idx, sl_hi, 4), _slice_params(idx, sl_lo, 4)
        if p_hi is None or p_lo is None or p_lo != (0, half) or p_hi[0] != half or p_hi[1] < dim:
            return
        tcos, tsin = self._table(idx, cos_t, length, dim), self._table(idx, sin_t, length, dim)
        if tcos is None or tsin is None or tcos[0] != tsin[0]:
            return
        chain = [sl_hi, neg, sl_lo, cat, m_sin, m_cos, node]
        for n in chain[:-1]:
            if not idx.only_used_by(n.output[0], chain):
                return
        if rw.claimed(chain):
            return
        if tcos[0] == "const":
            cos_name = rw.initializer_for(tcos[2], tcos[1], tcos[2])
            sin_name = rw.initializer_for(tsin[2], tsin[1], tsin[2])
            inputs = [x, cos_name, sin_name]
        else:
            if tcos[3] != tsin[3]:
                return
            inputs = [x, rw.initializer_for(tcos[2], tcos[1], tcos[2]),
                      rw.initializer_for(tsin[2], tsin[1], tsin[2]), tcos[3]]
        rw.replace(chain, rw.make_node("RoPE", inputs, [node.output[0]], chain))
