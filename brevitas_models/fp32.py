"""Bit-exact float32 / integer primitives of the hardware numerics contract (numpy).

Every function here is defined by an exact sequence of IEEE-754 binary32 operations (round to
nearest even, no fused multiply-add, no flush-to-zero) and exact integer arithmetic, so a C++
(Vitis HLS) implementation that performs the same operations in the same order reproduces the
results bit for bit. The complete contract is in the docstring of :mod:`brevitas_models.golden`;
this module only holds the building blocks:

=====================  ==========================================================================
``sum_partials``       fp32 reduction: 128 interleaved partial sums, then a fixed pairwise tree
``exp32``              exp in float32 arithmetic only (range reduction, polynomial, 2^k), <= 2 ulp
``rint``               round half to even (``np.rint``)
``quant_uint4_asym``   per-token asymmetric uint4 of linear inputs (scale, zero = min)
``quant_int8_sym``     per-token symmetric int8 of linear inputs (scale = absmax / 128)
``quant_static``       static per-head quantization with a precomputed fp32 multiplier
``rmsnorm``, ``silu``, ``softmax_masked``, ``rope``    fp32 element-wise / row operations
``int_matmul``         exact integer matrix product (float BLAS, exact under a checked bound)
=====================  ==========================================================================

numpy caveats honoured here: ``np.sum`` / ``np.add.reduce`` sum pairwise (never used for
contract reductions); ``np.cumsum`` (``add.accumulate``) is sequential. All constants are
``np.float32`` so no operation silently runs in float64.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32
ONE = np.float32(1.0)
FLT_MIN = np.float32(2.0 ** -126)          # smallest normal binary32
EXACT_F32_INT = 2 ** 24                    # integers of magnitude <= 2^24 are exact in float32
EXACT_F64_INT = 2 ** 53                    # ... and <= 2^53 in float64
REDUCE_PARTIALS = 128                      # interleaved partial sums of sum_partials (flexllm_reduce.h)

__all__ = [
    "F32", "FLT_MIN", "REDUCE_PARTIALS", "sum_partials", "exp32", "rint", "quant_uint4_asym", "quant_int8_sym", "quant_static",
    "rmsnorm", "silu", "softmax_masked", "rotate_half", "rope", "int_matmul", "accumulator_bits",
]


def _f32(x) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise TypeError(f"expected a float32 array, got {x.dtype}")
    return x


def sum_partials(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """fp32 sum along ``axis`` with ``REDUCE_PARTIALS = 128`` interleaved partial sums and a fixed tree.

    Partial sum ``p[r]`` (r = 0..127) starts at +0 and accumulates ``x[k]`` for ``k % 128 == r``
    sequentially in increasing ``k`` (``p[k % 128] = p[k % 128] + x[k]``); then a fixed pairwise
    tree ``q[i] = q[2i] + q[2i+1]`` halves 128 -> 64 -> ... -> 1 and ``q[0]`` is the result.

    Implementation: ``x`` is zero-padded (+0) to a multiple of 128 and viewed as [chunks, 128]; the
    chunks are added one after the other with element-wise fp32 adds (never ``np.sum``, which sums
    pairwise). Padding with +0 is exact: a partial starts at +0 and can never become -0 (an IEEE sum
    is -0 only when both operands are -0), so ``p + (+0) == p`` bit for bit (also for inf / NaN).
    For the same reason trailing zeros (masked softmax entries) never change the result. n == 0
    gives +0.
    """
    x = np.moveaxis(_f32(x), axis, -1)
    n = x.shape[-1]
    R = REDUCE_PARTIALS
    chunks = max(1, -(-n // R))
    pad = chunks * R - n
    if pad:
        x = np.concatenate([x, np.zeros(x.shape[:-1] + (pad,), dtype=np.float32)], axis=-1)
    x = x.reshape(x.shape[:-1] + (chunks, R))
    p = np.zeros(x.shape[:-2] + (R,), dtype=np.float32)
    for c in range(chunks):                          # sequential per partial, increasing k
        p = p + x[..., c, :]
    while p.shape[-1] > 1:                           # q[i] = q[2i] + q[2i+1]
        p = p[..., 0::2] + p[..., 1::2]
    return p[..., 0]


def exp32(x: np.ndarray) -> np.ndarray:
    """The contract's exponential: a fixed sequence of float32 operations (``layers/flexllm_math.h``
    ``exp32``, bit for bit; within 2 ulp of the correctly rounded exp).

    NaN -> NaN, ``x > 88.72283`` -> +inf, ``x < -103.97208`` -> +0; else ``k = rint(x * log2e)``,
    ``r = (x - k*C1) - k*C2`` (C1 = 0.693359375, C2 = -2.12194440e-4), a degree-7 polynomial
    ``p = ((t * (r*r)) + r) + 1`` with ``t`` by Horner from P5 to P0, and ``y = (p * 2^(k-h)) * 2^h``,
    ``h = trunc(k / 2)``.
    """
    x = _f32(x)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        k = np.rint(x * F32(1.44269504088896341))
        r = (x - k * F32(0.693359375)) - k * F32(-2.12194440e-4)
        t = np.full_like(r, F32(1.9875691500e-4))
        for c in (1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1):
            t = t * r + F32(c)
        p = ((t * (r * r)) + r) + ONE
        ki = np.where(np.isfinite(k), k, 0).astype(np.int32)
        h = np.where(ki < 0, -((-ki) // 2), ki // 2)
        y = (p * _pow2(ki - h)) * _pow2(h)
        y = np.where(x > F32(88.72283), F32(np.inf), y)
        y = np.where(x < F32(-103.97208), F32(0.0), y)
        y = np.where(np.isnan(x), x, y)
    return y.astype(np.float32)


def _pow2(e: np.ndarray) -> np.ndarray:
    """2^e as float32 bits (e in the normal range; values outside are masked by the caller)."""
    e = np.clip(e, -126, 127)
    return ((e.astype(np.int64) + 127) << 23).astype(np.uint32).view(np.float32)

def rint(x: np.ndarray) -> np.ndarray:
    """Round to nearest integer, ties to even (C ``nearbyint`` / ``rint`` in the default mode)."""
    return np.rint(x)


def quant_uint4_asym(x: np.ndarray, clip: float = 1.0):
    """Per-row (last axis) asymmetric uint4: returns ``(q uint8 in [0, 15], s float32, mn float32)``.

    ``mn = clip * min(x)``, ``mx = clip * max(x)`` (float32 products; ``clip`` in (0, 1], 1: the exact
    min and max), ``s = (mx - mn) / 15``, ``inv = 1 / s``, ``q = clamp(rint((x - mn) * inv), 0, 15)``;
    dequantized value ``q * s + mn`` (values outside [mn, mx] saturate).
    Guard: if ``s < 2^-126`` (zero: constant row; or subnormal) then ``s = 1`` and ``q = 0``
    (the dequantized row is ``mn``, exact for a constant row; keeps ``inv`` finite).
    """
    x = _f32(x)
    c = np.float32(clip)
    if not 0.0 < c <= 1.0:
        raise ValueError(f"clip must be in (0, 1], got {clip!r}")
    mn = (x.min(axis=-1) * c).astype(np.float32)
    mx = (x.max(axis=-1) * c).astype(np.float32)
    s = (mx - mn) / np.float32(15.0)
    guard = s < FLT_MIN
    s = np.where(guard, ONE, s).astype(np.float32)
    inv = ONE / s
    q = np.clip(rint((x - mn[..., None]) * inv[..., None]), 0, 15)
    q = np.where(guard[..., None], np.float32(0.0), q)
    return q.astype(np.uint8), s, mn


def quant_int8_sym(x: np.ndarray):
    """Per-row (last axis) symmetric int8: returns ``(q int8 in [-128, 127], s float32)``.

    ``a = max|x|``, ``s = a / 128``, ``inv = 1 / s``, ``q = clamp(rint(x * inv), -128, 127)``;
    dequantized value ``q * s``. Guard: ``s < 2^-126`` -> ``s = 1``, ``q = 0``.
    """
    x = _f32(x)
    a = np.abs(x).max(axis=-1)
    s = a / np.float32(128.0)
    guard = s < FLT_MIN
    s = np.where(guard, ONE, s).astype(np.float32)
    inv = ONE / s
    q = np.clip(rint(x * inv[..., None]), -128, 127)
    q = np.where(guard[..., None], np.float32(0.0), q)
    return q.astype(np.int8), s


def quant_static(x: np.ndarray, mult: np.ndarray, lo: int, hi: int, dtype) -> np.ndarray:
    """``clamp(rint(x * mult), lo, hi)`` (one fp32 multiply by a precomputed constant) as ``dtype``."""
    x = _f32(x)
    mult = _f32(mult)
    return np.clip(rint(x * mult), lo, hi).astype(dtype)


def rmsnorm(x: np.ndarray, w: np.ndarray, eps: np.float32) -> np.ndarray:
    """Row-wise: ``ms = sum_partials(x*x) / n``, ``r = 1 / sqrt(ms + eps)``, ``y = (x * r) * w`` (all fp32)."""
    x = _f32(x)
    n = np.float32(x.shape[-1])
    ms = sum_partials(x * x) / n
    r = ONE / np.sqrt(ms + np.float32(eps))
    return (x * r[..., None]) * _f32(w)


def silu(g: np.ndarray) -> np.ndarray:
    """``g / (1 + exp32(-g))`` in fp32 (``exp32(-g) = inf`` gives ``-0``)."""
    g = _f32(g)
    with np.errstate(over="ignore"):
        return g / (ONE + exp32(-g))


def softmax_masked(s: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Softmax over the last axis restricted to ``valid`` entries (others give exactly 0).

    ``m = max(valid s)``, ``e = exp32(s - m)`` (0 where not valid), ``sum = sum_partials(e)`` over the full
    row (the masked zeros do not change it), ``p = e / sum``. Every row needs >= 1 valid entry.
    """
    s = _f32(s)
    valid = np.broadcast_to(valid, s.shape)
    m = np.where(valid, s, np.float32(-np.inf)).max(axis=-1, keepdims=True)
    d = np.where(valid, s - m, np.float32(-np.inf))
    e = exp32(d)
    return e / sum_partials(e)[..., None]


def rotate_half(x: np.ndarray) -> np.ndarray:
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """``(x * cos) + (rotate_half(x) * sin)`` in fp32; ``rotate_half(x) = [-x[d/2:], x[:d/2]]``."""
    x = _f32(x)
    return (x * _f32(cos)) + (rotate_half(x) * _f32(sin))


def int_matmul(a: np.ndarray, b: np.ndarray, bound: int) -> np.ndarray:
    """Exact integer ``a @ b`` (any batch dims, numpy matmul semantics) as int64.

    ``bound`` must bound ``sum_k |a[.., k]| * |b[k, ..]|`` (hence every partial sum). The product is
    computed with float BLAS, which is exact for integers: in float32 when ``bound <= 2^24``, else in
    float64 (``bound <= 2^53`` asserted), whatever the summation order.
    """
    if bound > EXACT_F64_INT:
        raise OverflowError(f"integer accumulator bound {bound} exceeds 2^53; not exact in float64")
    dt = np.float32 if bound <= EXACT_F32_INT else np.float64
    a_f = a if a.dtype == dt else a.astype(dt)
    b_f = b if b.dtype == dt else b.astype(dt)
    return np.matmul(a_f, b_f).astype(np.int64)


def accumulator_bits(bound: int) -> int:
    """Bits of a two's-complement accumulator that holds every value in ``[-bound, bound]``."""
    return int(bound).bit_length() + 1
