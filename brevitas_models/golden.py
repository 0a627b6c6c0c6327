"""Bit-true golden model of the FlexLLM hardware numerics (numpy; float32 and exact integers).

This docstring is the **numerics contract** that the Vitis HLS C++ implementation must reproduce
bit-exactly. The golden model computes the same network as the quantized Brevitas model
(:class:`brevitas_models.model.LlamaModel` built with a FlexLLM-style preset) but in the hardware's
arithmetic order and rounding. Brevitas (PyTorch fake-quant) remains the *quality* reference; this
module is the *bit-exact* reference (they agree closely, not bit-exactly: see "Differences").

Notation and general rules
==========================
* ``f32`` = IEEE-754 binary32; every float operation below is ONE binary32 operation with round to
  nearest even, evaluated in the order written (parentheses are binding). No fused multiply-add
  (C++: ``-ffp-contract=off``; HLS: no ``fma`` binding), no flush-to-zero of subnormals, no
  reassociation (``-fno-fast-math``). ``sqrt`` and ``/`` are correctly rounded (IEEE).
* Integers are exact (the accumulator widths below never overflow). ``f32(int)`` converts an
  integer to binary32 with round to nearest even (exact when ``|v| <= 2^24``).
* ``rint(v)``: round to nearest integer, ties to even. ``clamp(v, lo, hi) = min(max(v, lo), hi)``.
* ``sum_partials(x[0..n-1])``: 128 partial sums ``p[r] = +0`` (r = 0..127); for ``k = 0..n-1`` in
  increasing order ``p[k % 128] = p[k % 128] + x[k]`` (sequential per partial); then a fixed pairwise
  tree, repeatedly ``q[i] = q[2i] + q[2i+1]`` (128 -> 64 -> ... -> 1); the result is ``q[0]``.
  (Zero-padding or appending +0 elements does not change the result; n = 0 gives +0. The hardware
  adds LANES <= 16 elements per cycle into distinct partials; the result does not depend on it.)
* ``exp32(x)``: a fixed sequence of binary32 operations (Cody-Waite range reduction, a degree-7
  polynomial, two exact powers of two; ``fp32.exp32``, docs/numerics.md); within 1 ulp of the correctly
  rounded exp. Overflow gives ``+inf``, underflow ``+0``.
* Constants derived offline are computed once and stored as binary32 (stated per constant below).
  ``L`` = tokens in the current call, ``t`` a token row, ``P`` its absolute position.

Parameters (extracted once by :meth:`GoldenModel.from_brevitas`)
================================================================
* Linear ``j``-th output row: integer weights ``w[j, k]`` (symmetric narrow range, int4:
  ``[-7, 7]``), per-output-channel scale ``s_w[j]`` (f32), and for uint4 inputs the zero-offset
  correction ``wsum[j] = s_w[j] * f32(sum_k w[j, k])`` (one f32 multiply; the integer row sum is
  exact).
* Per head (``H`` query heads, ``KVH`` kv heads, ``g = H / KVH``, query head ``h`` uses kv head
  ``h // g``): static scales ``s_q[h], s_k[kh], s_v[kh], s_p[h]`` (f32, Brevitas ``HeadQuant.scale()``;
  ``s_q`` is the scale of the *softmax-scaled* Q, as in Brevitas). Derived f32 constants:
  ``c_q[h] = f32(f64(softmax_scale) / f64(s_q[h]))`` with ``softmax_scale = 1/sqrt(head_dim)`` in
  double (one rounding to f32); ``ik[kh] = 1 / s_k[kh]``, ``iv[kh] = 1 / s_v[kh]``,
  ``ip[h] = 1 / s_p[h]`` (f32 divisions); ``qk[h] = s_q[h] * s_k[h // g]``,
  ``pv[h] = s_p[h] * s_v[h // g]`` (f32 multiplies).
* RMSNorm weights ``w_n`` (f32; all ones after rotation, as the norms are fused), ``eps = f32(eps)``,
  embedding table (f32), RoPE tables ``cos[P, i]``, ``sin[P, i]`` (f32, copied from the Brevitas
  model), whether R4 (online Hadamard before down_proj) is enabled, the input quantizer kind.

Operators
=========
RMSNorm (per token row ``x`` of length ``n``)::

    ms = sum_partials(x[k] * x[k]) / f32(n);  r = 1 / sqrt(ms + eps);  y[k] = (x[k] * r) * w_n[k]

Per-token dynamic input quantization of a linear input row ``x`` (one scale per token):

* ``uint4_asym``: ``mn = min_k x``, ``mx = max_k x`` (exact), ``s = (mx - mn) / 15``,
  ``inv = 1 / s``, ``q[k] = clamp(rint((x[k] - mn) * inv), 0, 15)`` (uint4, stored as uint8);
  dequantized ``q * s + mn``.
* ``int8``: ``a = max_k |x[k]|``, ``s = a / 128``, ``inv = 1 / s``,
  ``q[k] = clamp(rint(x[k] * inv), -128, 127)``; dequantized ``q * s``.
* Guard (both): if ``s < 2^-126`` (``s == 0``: a constant row, or a subnormal ``s``) then ``s = 1``
  and ``q[k] = 0`` for all ``k``; the linear output below is then exactly ``mn * wsum[j]`` (uint4)
  or ``0`` (int8). Brevitas instead clamps the range statistic at 1e-10 (``s = 1e-10 / 15`` or
  ``/ 128``) and also yields ``q = 0``, i.e. the same dequantized row.

Linear (``d_in`` inputs, quantized row ``q``, scale ``s``, offset ``mn``)::

    acc[j] = sum_k q[k] * w[j, k]                       exact integer
    uint4:  y[j] = ((f32(acc[j]) * s) * s_w[j]) + (mn * wsum[j])
    int8:   y[j] =  (f32(acc[j]) * s) * s_w[j]

``|acc| <= d_in * qmax * wmax`` (uint4/int4: ``d_in * 105``); the accumulator needs
``accumulator_bits`` = bit_length(bound) + 1 (sign) bits, e.g. 19 bits for ``d_in = 2048`` and
21 bits for ``d_in = 8192`` (the paper's ``log2(d_in) + 8``). ``q``, ``k``, ``v`` share one
quantized input; ``gate`` and ``up`` share one.

Attention of one layer (tokens at positions ``P0 .. P0+L-1``; KV cache holds positions ``< P0``)::

    qf, kf, vf = q_proj, k_proj, v_proj outputs split into heads of head_dim d
    RoPE (f32):   x_rot[i] = (x[i] * cos[P, i]) + (rot(x)[i] * sin[P, i]),
                  rot(x) = [-x[d/2], .., -x[d-1], x[0], .., x[d/2-1]]    (for Q and K; not V)
    q_int[h, t, i]  = clamp(rint(q_rot[h, t, i] * c_q[h]), -128, 127)      int8
    k_int[kh, t, i] = clamp(rint(k_rot[kh, t, i] * ik[kh]), -128, 127)     int8   -> KV cache
    v_int[kh, t, i] = clamp(rint(vf[kh, t, i] * iv[kh]), -128, 127)        int8   -> KV cache
    scores_acc[h, t, u] = sum_i q_int[h, t, i] * k_int[h // g, u, i]       exact (|.| <= d * 2^14)
    s[h, t, u] = f32(scores_acc[h, t, u]) * qk[h]                           for keys u <= P(t)
    m = max_u s;  e[u] = exp32(s[u] - m);  sum = sum_partials(e[0..P(t)]);  p[u] = e[u] / sum
    p_int[h, t, u] = clamp(rint(p[h, t, u] * ip[h]), 0, 255)              uint8 (0 for u > P(t))
    av_acc[h, t, i] = sum_{u <= P(t)} p_int[h, t, u] * v_int[h // g, u, i] exact (|.| <= T*255*128)
    attn[t, h*d + i] = f32(av_acc[h, t, i]) * pv[h]
    h_res = h_res + o_proj(attn)                                           f32 add

MLP::

    x = RMSNorm(h_res);  gq = Quant(x);  gate = linear(gq);  up = linear(gq)
    u = (gate / (1 + exp32(-gate))) * up                                   SiLU(gate) * up, f32
    R4 (if enabled): u = fast_hadamard_transform_np(u)   (f32 operation order defined in
                     :func:`brevitas_models.hadamard.fast_hadamard_transform_np`: with
                     n = m * 2^k, unnormalized butterflies (u + v, u - v) over the 2^k index for
                     half-widths 1, 2, 4, ...; then the +-1 mix of the m blocks accumulated in
                     ascending block order; then one multiply by f32(1 / sqrt(n)))
    h_res = h_res + down_proj(Quant(u))

Model: ``h_res = embed[token]``; every decoder layer as above (``x = RMSNorm(h_res)`` feeds
q/k/v); ``logits = lm_head(Quant(RMSNorm_final(h_res)))`` (a quantized linear, f32 logits).
Greedy decoding takes ``argmax`` (lowest index on ties). The KV cache holds the int8 codes
``k_int, v_int`` per layer as ``[kv_heads, T, head_dim]``.

Trace (``prefill(..., trace=True)`` / ``decode(..., trace=True)``): a dict of numpy arrays, ``L`` =
tokens of the call, ``T`` = keys (cache + new). Per linear ``{lin}`` (``layers.{i}.self_attn.q_proj``
... ``layers.{i}.mlp.down_proj``, ``lm_head``): ``{lin}.x_int`` [L, d_in] (uint8 holding uint4
codes, or int8), ``{lin}.x_scale`` [L] f32 (one per token), ``{lin}.x_zero`` [L] f32 (uint4 only,
= min), ``{lin}.w_int`` [out, in] int8, ``{lin}.w_scale`` [out] f32, ``{lin}.w_zsum`` [out] f32
(uint4 only, = wsum), ``{lin}.acc`` [L, out] int32, ``{lin}.y`` [L, out] f32. Per layer
``layers.{i}.self_attn.``: ``q_rot`` [H, L, d] / ``k_rot`` [KVH, L, d] f32, ``q_int`` [H, L, d] int8,
``k_int`` / ``v_int`` [KVH, L, d] int8 (the new cache entries), ``scores_acc`` [H, L, T] int32,
``scores`` [H, L, T] f32 (0 where masked), ``p`` [H, L, T] f32, ``p_int`` [H, L, T] uint8,
``av_acc`` [H, L, d] int32, ``attn_out`` [L, H*d] f32; ``layers.{i}.input_layernorm.y``,
``layers.{i}.residual_attn``, ``layers.{i}.post_attention_layernorm.y``, ``layers.{i}.mlp.act``
(SiLU(gate)*up), ``layers.{i}.mlp.hadamard`` (R4 output, if enabled), ``layers.{i}.out`` (residual
after the layer), ``embed``, ``norm.y``, ``logits`` (all f32).

Every per-token operation depends only on that token's row (and, for attention, on the cache
contents), so ``decode(token, P, kv of P entries)`` is bit-identical to row ``P`` of a prefill of
``P + 1`` tokens (tested).

Differences from the Brevitas model (why they agree closely but not bit-exactly)
================================================================================
* Brevitas computes every linear/attention product in float32 on dequantized values
  (``(q*s + mn) @ (w*s_w)^T``); the golden model accumulates integers exactly and rescales once.
* Brevitas quantizes uint4 inputs as ``rint(x / s + (-mn / s))`` and Q as
  ``rint((q_rot * softmax_scale) / s_q)`` (two roundings); the golden model uses one multiply by a
  precomputed reciprocal / folded constant (``(x - mn) * inv``, ``q_rot * c_q``).
* Both use the paper's uint4 range ``r (max - min)`` (``quantizers._MinMaxRange`` /
  ``_ClippedMinMaxRange``, not Brevitas' ``AbsMinMax``, which would clamp the minimum at 0), but Brevitas
  forms ``r max - r min`` and its zero point ``-(r min) / s`` while the golden model rounds
  ``(x - mn) * inv`` with ``mn = r min``: the same values, with different roundings.
* torch reductions (RMSNorm mean, softmax sum) use their own summation order; the golden model uses
  ``sum_partials``. torch's ``exp`` is its own float32 routine; the golden ``exp32`` is the contract's.
These differences flip occasional rounding decisions; a flipped code is one quantization step.

Consequence for verification: a deep W4A4 network is chaotic with respect to such flips. On the tiny
random preset the golden and Brevitas codes agree on >= 99.97 % of elements end to end, but on the
real SmolLM2-135M (30 layers) free-running code agreement falls below 50 % after ~3 layers; Brevitas
against *itself* with a 1-ulp perturbation of the embeddings diverges in the same way (logits
correlation ~0.81, top-1 ~51 %, perplexity moved by ~9 %), as much as golden vs Brevitas (0.82,
50 %, 2 %). With int8 inputs both comparisons give logits correlation 0.998 and top-1 ~95 %, and the
golden perplexity is within 0.7 % of Brevitas'. Run layer by layer on the Brevitas model's
own layer inputs (:meth:`GoldenModel.layer_forward`, "teacher forcing") the codes agree on
>= 99.8 % (q/k/v/p, every layer), >= 99.2 % (o_proj / gate inputs) and >= 92 % (down_proj input, the
most sensitive: one flipped gate/up input code perturbs all 1536 elements of that token's down_proj
input), and the lm_head logits to a relative error of 2e-7 (uint4 inputs; int8: >= 94.5 %).
So: hardware vs golden = bit-exact; golden vs Brevitas = per-layer teacher-forced agreement plus
statistical quality (perplexity), never end-to-end code equality on a deep model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .fp32 import (F32, accumulator_bits, int_matmul, quant_int8_sym, quant_static, quant_uint4_asym,
                   rmsnorm, rope, silu, softmax_masked)
from .hadamard import fast_hadamard_transform_np

__all__ = ["GoldenModel", "KVCache", "LinearParams", "LayerParams", "INPUT_QUANT_KINDS", "attention_constants"]

INPUT_QUANT_KINDS = ("uint4_asym", "int8")
_INPUT_QMAX = {"uint4_asym": 15, "int8": 128}     # max |code| of a quantized linear input
_MAX_INT32 = 2 ** 31 - 1


@dataclass
class LinearParams:
    """A quantized linear: ``w_int`` int8 [out, in] (narrow-range codes), ``w_scale`` f32 [out],
    ``w_rowsum`` int32 [out] (``sum_k w_int[j, k]``), ``wsum`` f32 [out] = ``w_scale * f32(w_rowsum)``."""

    name: str
    w_int: np.ndarray
    w_scale: np.ndarray
    w_bits: int
    input_kind: Optional[str] = None          # kind of the input quantizer this linear reads (set by finalize)
    input_clip: float = 1.0                   # clip ratio of that (uint4) input quantizer (set by finalize)
    w_rowsum: np.ndarray = field(init=False)
    wsum: np.ndarray = field(init=False)
    acc_bound: int = field(init=False)
    _wt: Optional[np.ndarray] = field(default=None, init=False, repr=False)

    def finalize(self, input_kind: str, input_clip: float = 1.0) -> "LinearParams":
        if input_kind not in INPUT_QUANT_KINDS:
            raise ValueError(f"{self.name}: input kind must be one of {INPUT_QUANT_KINDS}, got {input_kind!r}")
        if not 0.0 < input_clip <= 1.0 or (input_clip != 1.0 and input_kind != "uint4_asym"):
            raise ValueError(f"{self.name}: input clip ratio {input_clip!r} (need (0, 1], uint4_asym inputs only)")
        self.input_kind = input_kind
        self.input_clip = float(input_clip)
        self.w_int = np.ascontiguousarray(self.w_int, dtype=np.int8)
        self.w_scale = np.ascontiguousarray(self.w_scale, dtype=np.float32).reshape(-1)
        if self.w_scale.shape[0] != self.w_int.shape[0]:
            raise ValueError(f"{self.name}: {self.w_scale.shape[0]} weight scales for "
                             f"{self.w_int.shape[0]} output channels")
        # int64 sums and the extreme codes without an int64 copy of the matrix
        self.w_rowsum = self.w_int.sum(axis=1, dtype=np.int64).astype(np.int32)
        self.wsum = self.w_scale * self.w_rowsum.astype(np.float32)
        wmax = max(-int(self.w_int.min()), int(self.w_int.max())) if self.w_int.size else 0
        self.acc_bound = self.d_in * _INPUT_QMAX[input_kind] * max(wmax, 1)
        if self.acc_bound > _MAX_INT32:
            raise ValueError(f"{self.name}: accumulator bound {self.acc_bound} exceeds int32")
        self._wt = None            # exact float copy of w_int.T for BLAS, made on first use (wt)
        return self

    @property
    def wt(self) -> np.ndarray:
        if self._wt is None:
            dt = np.float32 if self.acc_bound <= 2 ** 24 else np.float64
            self._wt = np.ascontiguousarray(self.w_int.T.astype(dt))
        return self._wt

    @property
    def d_in(self) -> int:
        return int(self.w_int.shape[1])

    @property
    def d_out(self) -> int:
        return int(self.w_int.shape[0])

    @property
    def acc_bits(self) -> int:
        return accumulator_bits(self.acc_bound)


def attention_constants(s_q, s_k, s_v, s_p, softmax_scale: float, group: int) -> Dict[str, np.ndarray]:
    """The f32 attention constants of the contract, from the per-head static scales:
    ``c_q = f32(f64(softmax_scale) / f64(s_q))``, ``inv_k = 1/s_k``, ``inv_v = 1/s_v``, ``inv_p = 1/s_p``,
    ``qk_scale = s_q * s_k[h // group]``, ``pv_scale = s_p * s_v[h // group]`` (f32 operations)."""
    s_q, s_k, s_v, s_p = (np.ascontiguousarray(v, dtype=np.float32).reshape(-1) for v in (s_q, s_k, s_v, s_p))
    one = np.float32(1.0)
    kv_of = np.arange(s_q.shape[0]) // group
    return {"c_q": (np.float64(softmax_scale) / s_q.astype(np.float64)).astype(np.float32),
            "inv_k": one / s_k, "inv_v": one / s_v, "inv_p": one / s_p,
            "qk_scale": s_q * s_k[kv_of], "pv_scale": s_p * s_v[kv_of]}


@dataclass
class LayerParams:
    input_norm: np.ndarray
    post_norm: np.ndarray
    q_proj: LinearParams
    k_proj: LinearParams
    v_proj: LinearParams
    o_proj: LinearParams
    gate_proj: LinearParams
    up_proj: LinearParams
    down_proj: LinearParams
    s_q: np.ndarray      # f32 [H]
    s_k: np.ndarray      # f32 [KVH]
    s_v: np.ndarray      # f32 [KVH]
    s_p: np.ndarray      # f32 [H]
    c_q: np.ndarray = field(init=False)
    inv_k: np.ndarray = field(init=False)
    inv_v: np.ndarray = field(init=False)
    inv_p: np.ndarray = field(init=False)
    qk_scale: np.ndarray = field(init=False)
    pv_scale: np.ndarray = field(init=False)

    def finalize(self, softmax_scale: float, group: int) -> "LayerParams":
        for name in ("s_q", "s_k", "s_v", "s_p"):
            v = np.ascontiguousarray(getattr(self, name), dtype=np.float32).reshape(-1)
            if not np.all(np.isfinite(v)) or np.any(v <= 0):
                raise ValueError(f"static scale {name} must be finite and > 0, got {v}")
            setattr(self, name, v)
        c = attention_constants(self.s_q, self.s_k, self.s_v, self.s_p, softmax_scale, group)
        self.c_q, self.inv_k, self.inv_v, self.inv_p = c["c_q"], c["inv_k"], c["inv_v"], c["inv_p"]
        self.qk_scale, self.pv_scale = c["qk_scale"], c["pv_scale"]
        return self

    def linears(self):
        return [("self_attn.q_proj", self.q_proj), ("self_attn.k_proj", self.k_proj),
                ("self_attn.v_proj", self.v_proj), ("self_attn.o_proj", self.o_proj),
                ("mlp.gate_proj", self.gate_proj), ("mlp.up_proj", self.up_proj),
                ("mlp.down_proj", self.down_proj)]


@dataclass
class KVCache:
    """int8 K and V codes per layer, each ``[kv_heads, T, head_dim]`` (positions ``0 .. T-1``)."""

    k: List[np.ndarray]
    v: List[np.ndarray]

    @property
    def length(self) -> int:
        return int(self.k[0].shape[1]) if self.k else 0

    @classmethod
    def empty(cls, num_layers: int, kv_heads: int, head_dim: int) -> "KVCache":
        z = np.zeros((kv_heads, 0, head_dim), dtype=np.int8)
        return cls([z] * num_layers, [z] * num_layers)

    def appended(self, new_k: Sequence[np.ndarray], new_v: Sequence[np.ndarray]) -> "KVCache":
        return KVCache([np.concatenate([a, b], axis=1) for a, b in zip(self.k, new_k)],
                       [np.concatenate([a, b], axis=1) for a, b in zip(self.v, new_v)])


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy()


def weight_codes(linear):
    """(int8 codes, float32 per-row scale, zero point, bit width) of a Brevitas linear's weight, from the
    steps of its own integer quantizer (``RescalingIntQuant``: scale, zero point, ``to_int``) -- the codes
    ``linear.quant_weight().int()`` gives, without the fake-quantized float weight, the re-division of
    ``QuantTensor.int()`` and its validity pass (three full passes over the weight saved)."""
    import torch
    from brevitas.core.quant.int import RescalingIntQuant

    proxy = linear.weight_quant
    tq = proxy.tensor_quant
    if not isinstance(tq, RescalingIntQuant) or proxy.export_mode or tq.observer_only:
        raise ValueError(f"weight quantizer {type(tq).__name__}: integer codes need a RescalingIntQuant "
                         "in quantization mode")
    with torch.no_grad():
        w = linear.weight
        bit_width = tq.msb_clamp_bit_width_impl()
        scale = tq.scaling_impl(w, tq.int_scaling_impl(bit_width))
        zero_point = tq.zero_point_impl(w, scale, bit_width)
        bits = int(bit_width.item())
        if bits > 8 or not proxy.is_signed:
            raise ValueError(f"weight quantizer: {bits}-bit {'signed' if proxy.is_signed else 'unsigned'} "
                             "codes, the golden model needs signed codes of at most 8 bits")
        w_int = _np(_rows_to_int(tq.int_quant, scale, zero_point, bit_width, w))
    return (w_int, _np(scale).astype(np.float32).reshape(-1), _np(zero_point), bits)


TO_INT_BLOCK_ELEMENTS = 1 << 20     # elements per block of rows in _rows_to_int (4 MB of float32)


def _rows_to_int(int_quant, scale, zero_point, bit_width, w):
    """int8 ``int_quant.to_int(scale, zero_point, bit_width, w)``, a block of rows at a time when scale and
    zero point are per row (or per tensor) and the input view is the identity: the same elementwise steps
    (divide, add, round, clamp) on each element, with block-sized temporaries instead of five weight-sized
    ones (each a fresh allocation, i.e. page faults, for every matrix)."""
    import torch
    from brevitas.core.function_wrapper.misc import Identity

    rows = w.shape[0]

    def per_row(t):
        return t.dim() <= 1 and t.numel() == 1 or t.dim() == 2 and t.shape[0] in (1, rows) and t.shape[1] == 1

    def block(t, i, j):
        return t[i:j] if t.dim() == 2 and t.shape[0] == rows and rows > 1 else t

    if w.dim() != 2 or type(int_quant.input_view_impl) is not Identity or not (per_row(scale) and per_row(zero_point)):
        return int_quant.to_int(scale, zero_point, bit_width, w).to(torch.int8)
    out = torch.empty(w.shape, dtype=torch.int8)
    step = max(1, TO_INT_BLOCK_ELEMENTS // max(1, w.shape[1]))
    for i in range(0, rows, step):
        j = min(rows, i + step)
        out[i:j] = int_quant.to_int(block(scale, i, j), block(zero_point, i, j), bit_width, w[i:j])
    return out


def hardware_scheme_problems(spec) -> list:
    """Why a QuantSpec cannot run on the FlexLLM hardware (empty: it can)."""
    problems = []
    if spec.weight_bits is None:
        problems.append("weight_bits is None (float weights)")
    if spec.input_quant not in INPUT_QUANT_KINDS:
        problems.append(f"input_quant is {spec.input_quant!r} (need one of {INPUT_QUANT_KINDS})")
    for site, kind in spec.input_quant_overrides:
        if kind not in INPUT_QUANT_KINDS:
            problems.append(f"input_quant_overrides.{site} is {kind!r} (need one of {INPUT_QUANT_KINDS})")
    if spec.qkv_bits != 8:
        problems.append(f"qkv_bits is {spec.qkv_bits!r} (need 8)")
    if spec.softmax_bits != 8:
        problems.append(f"softmax_bits is {spec.softmax_bits!r} (need 8)")
    return problems


class GoldenModel:
    """Bit-true numpy model of the hardware arithmetic (see the module docstring for the contract)."""

    def __init__(self, *, hidden_size: int, num_heads: int, num_kv_heads: int, head_dim: int,
                 intermediate_size: int, vocab_size: int, rms_norm_eps: float, input_quant: str,
                 weight_bits: int, r4: bool, embed: np.ndarray, final_norm: np.ndarray,
                 lm_head: LinearParams, layers: List[LayerParams], rope_cos: np.ndarray,
                 rope_sin: np.ndarray, input_overrides: Optional[Dict[str, str]] = None,
                 input_clips: Optional[Dict[str, float]] = None):
        """``input_quant``: the kind of every linear input; ``input_overrides``: exceptions per site
        (``q_proj`` -- shared by q/k/v --, ``o_proj``, ``gate_proj`` -- shared by gate/up --, ``down_proj``,
        ``lm_head``); ``input_clips``: clip ratios of uint4 inputs per site (default 1)."""
        if input_quant not in INPUT_QUANT_KINDS:
            raise ValueError(f"input_quant must be one of {INPUT_QUANT_KINDS}, got {input_quant!r}")
        if num_heads % num_kv_heads:
            raise ValueError("num_heads must be a multiple of num_kv_heads")
        self.hidden_size, self.num_heads, self.num_kv_heads = hidden_size, num_heads, num_kv_heads
        self.head_dim, self.intermediate_size, self.vocab_size = head_dim, intermediate_size, vocab_size
        self.group = num_heads // num_kv_heads
        self.eps = np.float32(rms_norm_eps)
        self.input_quant = input_quant
        self.weight_bits = int(weight_bits)
        self.r4 = bool(r4)
        self.softmax_scale = 1.0 / math.sqrt(head_dim)
        self.embed = np.ascontiguousarray(embed, dtype=np.float32)
        self.final_norm = np.ascontiguousarray(final_norm, dtype=np.float32)
        self.rope_cos = np.ascontiguousarray(rope_cos, dtype=np.float32)
        self.rope_sin = np.ascontiguousarray(rope_sin, dtype=np.float32)
        self.input_overrides = dict(input_overrides or {})
        self.input_clips = {k: float(v) for k, v in (input_clips or {}).items()}
        sites = {"q_proj", "o_proj", "gate_proj", "down_proj", "lm_head"}
        bad = sorted((set(self.input_overrides) | set(self.input_clips)) - sites)
        if bad:
            raise ValueError(f"input_overrides / input_clips: unknown site(s) {bad}")
        kind_of = {"k_proj": "q_proj", "v_proj": "q_proj", "up_proj": "gate_proj"}

        def fin(lp, site):
            site = kind_of.get(site, site)
            return lp.finalize(self.input_overrides.get(site, input_quant), self.input_clips.get(site, 1.0))

        self.lm_head = fin(lm_head, "lm_head")
        self.layers = layers
        for layer in layers:
            for name, lp in layer.linears():
                fin(lp, name.split(".")[-1])
            layer.finalize(self.softmax_scale, self.group)
        self._kv_of = np.arange(num_heads) // self.group

    # ---- construction ---------------------------------------------------------------------------
    @classmethod
    def from_brevitas(cls, model) -> "GoldenModel":
        """Extract integer weights, scales and tables from a calibrated Brevitas ``LlamaModel``.

        Requires the hardware scheme: integer weights, per-token dynamic inputs (``uint4_asym`` or
        ``int8``), 8-bit static Q/K/V and 8-bit static softmax output; raises ``ValueError`` otherwise.
        """
        import torch

        spec, a = model.spec, model.arch
        problems = hardware_scheme_problems(spec)
        if problems:
            raise ValueError(f"the golden model needs the hardware quantization scheme (integer weights, "
                             f"per-token input quant, qkv_bits=8, softmax_bits=8); preset "
                             f"{spec.name!r}: " + "; ".join(problems))
        kind = spec.input_quant

        def linear(name, unit, needs_input_quant=True) -> LinearParams:
            if not unit.linear.weight_quant.is_quant_enabled:
                raise ValueError(f"{name}: weight quantization is disabled")
            kind = spec.input_kind(name.split(".")[-1]) if needs_input_quant else None
            if needs_input_quant and unit.input_quant.kind != kind:
                raise ValueError(f"{name}: input quantizer {unit.input_quant.kind!r}, expected {kind!r}")
            if needs_input_quant and unit.input_quant.clip_ratio != spec.input_clip(name.split(".")[-1]):
                raise ValueError(f"{name}: input clip ratio {unit.input_quant.clip_ratio}, spec says "
                                 f"{spec.input_clip(name.split('.')[-1])}")
            w_int, scale, zero_point, bits = weight_codes(unit.linear)
            if not bool(np.all(zero_point == 0)):
                raise ValueError(f"{name}: weight zero point must be 0 (symmetric weights)")
            if bits != spec.weight_bits:
                raise ValueError(f"{name}: weight bit width {bits}, spec says {spec.weight_bits}")
            wmax = 2 ** (bits - 1) - 1
            if w_int.dtype != np.int8 or int(w_int.min()) < -wmax - 1 or int(w_int.max()) > wmax:
                raise ValueError(f"{name}: integer weights outside int{bits}")
            return LinearParams(name, w_int, scale, bits)

        def head_scale(hq, n) -> np.ndarray:
            if hq.quant is None:
                raise ValueError("a Q/K/V/P quantizer is missing")
            s = _np(hq.scale()).astype(np.float32).reshape(-1)
            if s.shape[0] != n:
                raise ValueError(f"expected {n} per-head scales, got {s.shape[0]}")
            return s

        layers = []
        r4_flags = []
        for i, layer in enumerate(model.layers):
            at, mlp = layer.self_attn, layer.mlp
            p = f"layers.{i}."
            r4_flags.append(bool(mlp.online_hadamard.enabled))
            layers.append(LayerParams(
                input_norm=_np(layer.input_layernorm.weight).astype(np.float32),
                post_norm=_np(layer.post_attention_layernorm.weight).astype(np.float32),
                q_proj=linear(p + "self_attn.q_proj", at.q_proj),
                k_proj=linear(p + "self_attn.k_proj", at.k_proj, False),
                v_proj=linear(p + "self_attn.v_proj", at.v_proj, False),
                o_proj=linear(p + "self_attn.o_proj", at.o_proj),
                gate_proj=linear(p + "mlp.gate_proj", mlp.gate_proj),
                up_proj=linear(p + "mlp.up_proj", mlp.up_proj, False),
                down_proj=linear(p + "mlp.down_proj", mlp.down_proj),
                s_q=head_scale(at.q_quant, a.num_heads), s_k=head_scale(at.k_quant, a.num_kv_heads),
                s_v=head_scale(at.v_quant, a.num_kv_heads), s_p=head_scale(at.p_quant, a.num_heads)))
            if abs(at.softmax_scale - 1.0 / math.sqrt(a.head_dim)) > 1e-12:
                raise ValueError(f"layer {i}: unexpected softmax scale {at.softmax_scale}")
        if len(set(r4_flags)) > 1:
            raise ValueError("online Hadamard (R4) must be enabled in all layers or none")
        return cls(hidden_size=a.hidden_size, num_heads=a.num_heads, num_kv_heads=a.num_kv_heads,
                   head_dim=a.head_dim, intermediate_size=a.intermediate_size, vocab_size=a.vocab_size,
                   rms_norm_eps=a.rms_norm_eps, input_quant=kind, weight_bits=spec.weight_bits,
                   input_overrides=dict(spec.input_quant_overrides), input_clips=dict(spec.input_clip_ratios),
                   r4=bool(r4_flags and r4_flags[0]),
                   # copies: the golden model owns its arrays (a view would keep the model's storage alive --
                   # for a model restored with mmap, the whole mapped file)
                   embed=_np(model.embed_tokens.weight).copy(), final_norm=_np(model.norm.weight).copy(),
                   lm_head=linear("lm_head", model.lm_head), layers=layers,
                   rope_cos=_np(model.rope_cos), rope_sin=_np(model.rope_sin))

    # ---- properties -----------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def max_positions(self) -> int:
        return int(self.rope_cos.shape[0])

    def linears(self):
        """(qualified name, LinearParams) in execution order (names as ``LlamaModel.linears``)."""
        for i, layer in enumerate(self.layers):
            for name, lp in layer.linears():
                yield f"layers.{i}.{name}", lp
        yield "lm_head", self.lm_head

    def accumulator_bits(self, max_context: Optional[int] = None) -> Dict[str, int]:
        """Signed accumulator width every integer dot product needs (linears per name; attention
        ``scores`` and ``av`` for ``max_context`` keys, default the RoPE table length)."""
        t = max_context or self.max_positions
        out = {name: lp.acc_bits for name, lp in self.linears()}
        out["attention.scores"] = accumulator_bits(self.head_dim * 128 * 128)
        out["attention.av"] = accumulator_bits(t * 255 * 128)
        return out

    def empty_cache(self) -> KVCache:
        return KVCache.empty(self.num_layers, self.num_kv_heads, self.head_dim)

    # ---- operators ------------------------------------------------------------------------------
    def _quant_input(self, x: np.ndarray, lp: "LinearParams"):
        """The per-token input quantizer of the linear ``lp`` (its kind and clip ratio)."""
        if lp.input_kind == "uint4_asym":
            return quant_uint4_asym(x, lp.input_clip)
        q, s = quant_int8_sym(x)
        return q, s, None

    def _linear_q(self, lp: LinearParams, q: np.ndarray, s: np.ndarray, zero: Optional[np.ndarray],
                  trace: Optional[dict], prefix: str) -> np.ndarray:
        acc = int_matmul(q, lp.wt, lp.acc_bound)                       # [L, out] exact
        y = (acc.astype(np.float32) * s[:, None]) * lp.w_scale[None, :]
        if zero is not None:
            y = y + zero[:, None] * lp.wsum[None, :]
        if trace is not None:
            trace[prefix + ".x_int"] = q
            trace[prefix + ".x_scale"] = s
            if zero is not None:
                trace[prefix + ".x_zero"] = zero
                trace[prefix + ".w_zsum"] = lp.wsum
            trace[prefix + ".w_int"] = lp.w_int
            trace[prefix + ".w_scale"] = lp.w_scale
            trace[prefix + ".acc"] = acc.astype(np.int32)
            trace[prefix + ".y"] = y
        return y

    def _attention(self, i: int, layer: LayerParams, x: np.ndarray, start: int,
                   past_k: np.ndarray, past_v: np.ndarray, trace: Optional[dict]):
        L = x.shape[0]
        H, KVH, d = self.num_heads, self.num_kv_heads, self.head_dim
        p = f"layers.{i}.self_attn"
        q8, s, z = self._quant_input(x, layer.q_proj)
        qf = self._linear_q(layer.q_proj, q8, s, z, trace, p + ".q_proj")
        kf = self._linear_q(layer.k_proj, q8, s, z, trace, p + ".k_proj")
        vf = self._linear_q(layer.v_proj, q8, s, z, trace, p + ".v_proj")
        qf = qf.reshape(L, H, d).transpose(1, 0, 2)                      # [H, L, d]
        kf = kf.reshape(L, KVH, d).transpose(1, 0, 2)                    # [KVH, L, d]
        vf = vf.reshape(L, KVH, d).transpose(1, 0, 2)
        cos = self.rope_cos[start:start + L]
        sin = self.rope_sin[start:start + L]
        q_rot = rope(qf, cos, sin)
        k_rot = rope(kf, cos, sin)
        q_int = quant_static(q_rot, layer.c_q[:, None, None], -128, 127, np.int8)
        k_int = quant_static(k_rot, layer.inv_k[:, None, None], -128, 127, np.int8)
        v_int = quant_static(vf, layer.inv_v[:, None, None], -128, 127, np.int8)
        K = np.concatenate([past_k, k_int], axis=1)                      # [KVH, T, d]
        V = np.concatenate([past_v, v_int], axis=1)
        T = K.shape[1]
        Kh = K[self._kv_of]                                              # [H, T, d]
        Vh = V[self._kv_of]
        scores_acc = int_matmul(q_int, Kh.transpose(0, 2, 1), d * 128 * 128)     # [H, L, T]
        scores = scores_acc.astype(np.float32) * layer.qk_scale[:, None, None]
        q_pos = start + np.arange(L)
        valid = np.arange(T)[None, :] <= q_pos[:, None]                  # [L, T] causal
        probs = softmax_masked(scores, valid[None])
        p_int = quant_static(probs, layer.inv_p[:, None, None], 0, 255, np.uint8)
        av_acc = int_matmul(p_int, Vh, T * 255 * 128)                    # [H, L, d]
        attn = av_acc.astype(np.float32) * layer.pv_scale[:, None, None]
        attn = attn.transpose(1, 0, 2).reshape(L, H * d)
        o8, os_, oz = self._quant_input(attn, layer.o_proj)
        out = self._linear_q(layer.o_proj, o8, os_, oz, trace, p + ".o_proj")
        if trace is not None:
            trace[p + ".q_rot"] = q_rot
            trace[p + ".k_rot"] = k_rot
            trace[p + ".q_int"] = q_int
            trace[p + ".k_int"] = k_int
            trace[p + ".v_int"] = v_int
            trace[p + ".scores_acc"] = scores_acc.astype(np.int32)
            trace[p + ".scores"] = np.where(valid[None], scores, np.float32(0.0))
            trace[p + ".p"] = probs
            trace[p + ".p_int"] = p_int
            trace[p + ".av_acc"] = av_acc.astype(np.int32)
            trace[p + ".attn_out"] = attn
        return out, k_int, v_int

    def _mlp(self, i: int, layer: LayerParams, x: np.ndarray, trace: Optional[dict]) -> np.ndarray:
        p = f"layers.{i}.mlp"
        q8, s, z = self._quant_input(x, layer.gate_proj)
        g = self._linear_q(layer.gate_proj, q8, s, z, trace, p + ".gate_proj")
        u = self._linear_q(layer.up_proj, q8, s, z, trace, p + ".up_proj")
        act = silu(g) * u
        if trace is not None:
            trace[p + ".act"] = act
        if self.r4:
            act = fast_hadamard_transform_np(act)
            if trace is not None:
                trace[p + ".hadamard"] = act
        d8, ds, dz = self._quant_input(act, layer.down_proj)
        return self._linear_q(layer.down_proj, d8, ds, dz, trace, p + ".down_proj")

    def _forward(self, ids: np.ndarray, start: int, kv: KVCache, trace: bool):
        ids = np.asarray(ids).reshape(-1)
        if ids.size == 0:
            raise ValueError("need at least one token")
        if not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"token ids must be integers, got {ids.dtype}")
        if ids.min() < 0 or ids.max() >= self.vocab_size:
            raise ValueError(f"token ids must be in [0, {self.vocab_size})")
        L = ids.shape[0]
        if start + L > self.max_positions:
            raise ValueError(f"position {start + L} exceeds the RoPE table ({self.max_positions})")
        tr: Optional[dict] = {} if trace else None
        h = self.embed[ids]
        if tr is not None:
            tr["embed"] = h
        new_k, new_v = [], []
        for i in range(self.num_layers):
            h, k_int, v_int = self.decoder_layer(i, h, start, kv.k[i], kv.v[i], tr)
            new_k.append(k_int)
            new_v.append(v_int)
        logits = self.head_logits(h, tr)
        return logits, kv.appended(new_k, new_v), (tr if tr is not None else {})

    def decoder_layer(self, i: int, h: np.ndarray, start: int, past_k: np.ndarray, past_v: np.ndarray,
               tr: Optional[dict]):
        """Decoder layer i on rows h [L, d] at positions start.. after the cache (past_k, past_v):
        (h out, the new K and V codes); ``tr`` collects the trace when not None."""
        layer = self.layers[i]
        x = rmsnorm(h, layer.input_norm, self.eps)
        attn, k_int, v_int = self._attention(i, layer, x, start, past_k, past_v, tr)
        h = h + attn
        if tr is not None:
            tr[f"layers.{i}.input_layernorm.y"] = x
            tr[f"layers.{i}.residual_attn"] = h
        x = rmsnorm(h, layer.post_norm, self.eps)
        h = h + self._mlp(i, layer, x, tr)
        if tr is not None:
            tr[f"layers.{i}.post_attention_layernorm.y"] = x
            tr[f"layers.{i}.out"] = h
        return h, k_int, v_int

    def head_logits(self, h: np.ndarray, tr: Optional[dict]) -> np.ndarray:
        """Final norm and the LM head on rows h [L, d]: logits [L, vocab]."""
        x = rmsnorm(h, self.final_norm, self.eps)
        q8, s, z = self._quant_input(x, self.lm_head)
        logits = self._linear_q(self.lm_head, q8, s, z, tr, "lm_head")
        if tr is not None:
            tr["norm.y"] = x
            tr["logits"] = logits
        return logits

    # ---- public API -----------------------------------------------------------------------------
    def prefill(self, ids: np.ndarray, trace: bool = False) -> Tuple[np.ndarray, KVCache, dict]:
        """Run the prompt ``ids`` [L] from position 0: (logits [L, vocab] f32, KV cache of L, trace)."""
        return self._forward(ids, 0, self.empty_cache(), trace)

    def decode(self, token: int, position: int, kv: KVCache, trace: bool = False
               ) -> Tuple[np.ndarray, KVCache, dict]:
        """One token at ``position`` (== ``kv.length``): (logits [vocab] f32, KV cache of
        position+1 entries, trace). Bit-identical to row ``position`` of a prefill."""
        if position != kv.length:
            raise ValueError(f"decode position {position} must equal the KV cache length {kv.length}")
        logits, kv, tr = self._forward(np.array([int(token)], dtype=np.int64), position, kv, trace)
        return logits[0], kv, tr

    def layer_forward(self, i: int, h: np.ndarray, start: int = 0, kv: Optional[KVCache] = None,
                      trace: bool = False) -> Tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        """Decoder layer ``i`` alone on a residual-stream input ``h`` [L, hidden] (f32) at positions
        ``start ..`` with the layer's cache entries from ``kv`` (must hold ``start`` positions):
        (output residual [L, hidden], new k_int, new v_int, trace). For per-layer verification,
        e.g. feeding the Brevitas model's layer input (teacher forcing)."""
        h = np.ascontiguousarray(h, dtype=np.float32)
        if h.ndim != 2 or h.shape[1] != self.hidden_size:
            raise ValueError(f"h must be [L, {self.hidden_size}], got {h.shape}")
        kv = kv if kv is not None else self.empty_cache()
        if kv.length != start:
            raise ValueError(f"start {start} must equal the KV cache length {kv.length}")
        if start + h.shape[0] > self.max_positions:
            raise ValueError(f"position {start + h.shape[0]} exceeds the RoPE table ({self.max_positions})")
        tr: Optional[dict] = {} if trace else None
        out, k_int, v_int = self.decoder_layer(i, h, start, kv.k[i], kv.v[i], tr)
        return out, k_int, v_int, (tr if tr is not None else {})

    def generate(self, prompt_ids, max_new_tokens: int) -> List[int]:
        """Greedy decoding: returns the ``max_new_tokens`` generated ids (without the prompt)."""
        if max_new_tokens <= 0:
            return []
        prompt = np.asarray(prompt_ids, dtype=np.int64).reshape(-1)
        logits, kv, _ = self.prefill(prompt)
        tok = int(np.argmax(logits[-1]))
        out = [tok]
        pos = prompt.shape[0]
        while len(out) < max_new_tokens:
            logits, kv, _ = self.decode(tok, pos, kv)
            tok = int(np.argmax(logits))
            out.append(tok)
            pos += 1
        return out

    def perplexity(self, windows) -> dict:
        """Same definition as :func:`brevitas_models.evaluation.perplexity`: every window [N, ctx]
        scores tokens 1..ctx-1; natural-log cross-entropy (float64) averaged over scored tokens."""
        w = np.asarray(windows.numpy() if hasattr(windows, "numpy") else windows, dtype=np.int64)
        if w.ndim != 2 or w.shape[1] < 2:
            raise ValueError(f"windows must be [N, ctx >= 2], got shape {w.shape}")
        total, count = 0.0, 0
        for row in w:
            logits, _, _ = self.prefill(row)
            lg = logits[:-1].astype(np.float64)
            m = lg.max(axis=1, keepdims=True)
            lse = np.log(np.exp(lg - m).sum(axis=1)) + m[:, 0]
            tgt = row[1:]
            total += float((lse - lg[np.arange(tgt.shape[0]), tgt]).sum())
            count += int(tgt.shape[0])
        return {"ppl": math.exp(total / count), "scored_tokens": count}
