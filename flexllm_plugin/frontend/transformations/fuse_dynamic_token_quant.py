"""Dynamic per-token input quantizer subgraph + QONNX ``Quant`` -> ``DynamicTokenQuant``
(docs/qonnx-dynamic-quant.md, section 4).

uint4_asym: ``Quant(x, s, zp, b, signed=0)`` with ``s = Div(Clip(Sub(ReduceMax(x), ReduceMin(x)), lo), 2^b-1)``
and ``zp = Div(Neg(ReduceMin(x)), s)``; with a clip ratio r (``Quantization.InputClipRatios``, exported as
``Mul(ReduceMax(x), r)`` and ``Mul(ReduceMin(x), r)`` feeding the Sub and the Neg) the node carries ``clip = r``.
int8: ``Quant(x, s, 0, b, signed=1)`` with ``s = Div(Clip(ReduceMax(Abs(x)), lo), 2^(b-1))``.
Reductions over the last axis with keepdims; ``lo`` (the Clip minimum) becomes ``range_min``."""

import numpy as np

from ._fusion import FusionTransformation
from ._graph import QONNX_QUANT_DOMAINS, attr, is_last_axis_reduce


def _clip_min(idx, clip):
    """Lower bound of a Clip with only a constant minimum, else None."""
    if clip is None:
        return None
    if len(clip.input) > 2 and clip.input[2]:
        return None
    if len(clip.input) < 2 or not clip.input[1]:
        lo = attr(clip, "min")   # opset < 11
        return None if lo is None or attr(clip, "max") is not None else float(lo)
    return idx.scalar(clip.input[1])


def _clipped(idx, name, op_type):
    """``(reduce node, Mul node or None, ratio)`` when ``name`` is ``op_type(..)`` or ``Mul(op_type(..), r)`` with
    a constant scalar r in (0, 1]; else None."""
    node = idx.prod(name, op_type)
    if node is not None:
        return node, None, 1.0
    mul = idx.prod(name, "Mul")
    if mul is None or len(mul.input) != 2:
        return None
    for a, b in (mul.input, mul.input[::-1]):
        red, r = idx.prod(a, op_type), idx.scalar(b)
        if red is not None and r is not None and 0.0 < r <= 1.0:
            return red, mul, float(np.float32(r))
    return None


class FuseDynamicTokenQuant(FusionTransformation):
    def match(self, rw, node):
        idx = rw.idx
        if node.op_type != "Quant" or node.domain not in QONNX_QUANT_DOMAINS or len(node.input) != 4:
            return
        x, scale, zp, bits_name = node.input
        if idx.is_const(scale):
            return                      # static quantizer
        bits = idx.scalar(bits_name)
        if bits is None or bits != int(bits):
            return
        if str(attr(node, "rounding_mode", "ROUND")).upper() not in ("ROUND", "HALF_EVEN"):
            return
        bits = int(bits)
        signed, narrow = int(attr(node, "signed", 1)), int(attr(node, "narrow", 0))
        shape = idx.shape(x)
        rank = len(shape) if shape else None
        div = idx.prod(scale, "Div")
        if div is None:
            return
        threshold = idx.scalar(div.input[1])
        clip = idx.prod(div.input[0], "Clip")
        lo = _clip_min(idx, clip)
        if lo is None:
            return
        stat = clip.input[0]
        chain = [div, clip]
        ratio = 1.0
        if signed == 0:
            kind = "uint4_asym"
            sub = idx.prod(stat, "Sub")
            if sub is None or threshold != float(2 ** bits - 1):
                return
            top, bottom = _clipped(idx, sub.input[0], "ReduceMax"), _clipped(idx, sub.input[1], "ReduceMin")
            if top is None or bottom is None or top[2] != bottom[2] or (top[1] is None) != (bottom[1] is None):
                return
            (rmax, mul_max, ratio), (rmin, mul_min, _) = top, bottom
            zdiv = idx.prod(zp, "Div")
            neg = zdiv and idx.prod(zdiv.input[0], "Neg")
            if neg is None or zdiv.input[1] != scale or neg.input[0] != sub.input[1]:
                return
            if rmax.input[0] != x or rmin.input[0] != x:
                return
            if not (is_last_axis_reduce(idx, rmax, rank) and is_last_axis_reduce(idx, rmin, rank)):
                return
            chain += [sub, rmax, rmin, neg, zdiv] + [m for m in (mul_max, mul_min) if m is not None]
        else:
            kind = "int8"
            rmax = idx.prod(stat, "ReduceMax")
            abs_ = rmax and idx.prod(rmax.input[0], "Abs")
            zval = idx.const(zp)
            if abs_ is None or abs_.input[0] != x or zval is None or np.any(zval != 0):
                return
            if not is_last_axis_reduce(idx, rmax, rank) or threshold != float(2 ** (bits - 1)):
                return
            chain += [rmax, abs_]
        chain.append(node)
        for n in chain[:-1]:
            if not idx.only_used_by(n.output[0], chain):
                return
        if rw.claimed(chain):
            return
        rw.replace(chain, rw.make_node("DynamicTokenQuant", [x], [node.output[0]], chain, kind=kind,
                                       bit_width=bits, signed=signed, narrow=narrow,
                                       range_min=float(np.float32(lo)), clip=ratio))
