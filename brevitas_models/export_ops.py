"""Exportable (TorchScript/QONNX) forms of the model's run-time operations.

* :func:`dynamic_token_quant` -- per-token dynamic quantization of a linear input, written as plain torch
  ops that compute the scale (and zero point) from the tensor itself, followed by Brevitas' QONNX
  ``Quant`` autograd function. Exported, the ops become an in-graph subgraph feeding the ``scale`` and
  ``zero_point`` inputs of a ``qonnx.custom_op.general::Quant`` node (docs/qonnx-dynamic-quant.md).
  The configuration (statistic, integer threshold, scale floor, bit width, signedness, zero point) is
  read from the Brevitas quantizer itself (:func:`dynamic_quant_config`) and the float operations and
  their order are those of its modules (``RuntimeDynamicStatsScaling`` with ``AbsMax`` / ``_MinMaxRange``
  / ``AbsMinMax``, ``RuntimePerTokenZeroPoint``, ``IntQuant``), so the values are bit-identical to the
  Brevitas ``QuantIdentity`` (tested). A quantizer built from anything else raises instead of silently
  exporting different arithmetic.
* :func:`static_quant` -- a ``Quant`` node with constant scale / zero point (used to mark the int8 K/V
  cache inputs of the decode graph).
* :func:`hadamard_matmul` -- the online Hadamard transform R4 as a MatMul with a constant matrix
  (Brevitas' online Hadamard module and our fast transform do not export).
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np
import torch

from brevitas.export.onnx.qonnx.function import BrevitasQuantTorchScriptFn

__all__ = ["DynamicQuantConfig", "DYNAMIC_KINDS", "dynamic_quant_config", "dynamic_token_quant",
           "dynamic_token_params", "static_quant", "hadamard_matmul", "hadamard_constant",
           "clear_hadamard_cache", "keep_hadamard_constants", "LeanQuantTorchScriptFn", "LeanQuantOp"]


@dataclass(frozen=True)
class DynamicQuantConfig:
    """What a per-token dynamic quantizer computes (all reductions over the last dim):

    ``stat``: ``"absmax"`` max|x|; ``"range"`` max(x) - min(x); ``"range_min_clamped"`` max(x) -
    min(min(x), 0) (Brevitas' ``AbsMinMax``). ``scale = clamp_min(stat, scale_min) / threshold``.
    ``zero_point``: ``"zero"`` or ``"neg_min"`` = -min(x) / scale + min_int (float, not rounded).
    """
    bits: int
    signed: bool
    narrow: bool
    threshold: float
    scale_min: Optional[float]
    stat: str
    zero_point: str
    min_int: float
    clip: float = 1.0           # "range" / "neg_min" on the clipped range [clip * min, clip * max]


# The configurations of the quantizers in quantizers.py (used when no quantizer module is given).
DYNAMIC_KINDS: Dict[str, DynamicQuantConfig] = {
    "int8": DynamicQuantConfig(8, True, False, 128.0, 1e-10, "absmax", "zero", -128.0),
    "uint4_asym": DynamicQuantConfig(4, False, False, 15.0, 1e-10, "range", "neg_min", 0.0),
}

_CONFIG_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def dynamic_quant_config(quant_identity) -> DynamicQuantConfig:
    """Read the :class:`DynamicQuantConfig` of a Brevitas ``QuantIdentity`` with a dynamic per-token
    quantizer (cached per module). Raises ``NotImplementedError`` for an implementation this export does
    not reproduce."""
    cached = _CONFIG_CACHE.get(quant_identity)
    if cached is not None:
        return cached
    from brevitas.core.function_wrapper.ops_ste import ScalarSignedClampMinSte
    from brevitas.core.stats.stats_op import AbsMax, AbsMinMax
    from brevitas.core.zero_point import ZeroZeroPoint
    from .quantizers import (RuntimePerTokenZeroPoint, _ClippedMinMaxRange, _ClippedNegativeMin, _MinMaxRange,
                             _NegativeMin)

    name = type(quant_identity).__name__
    with torch.no_grad():
        tq = quant_identity.act_quant.fused_activation_quant_proxy.tensor_quant
        scaling = tq.scaling_impl
        bit_width = tq.msb_clamp_bit_width_impl()
        bits = int(bit_width)
        threshold = float(scaling.restrict_clamp_threshold(scaling.restrict_threshold_pre(
            tq.int_scaling_impl(bit_width))))
        signed, narrow = bool(tq.int_quant.signed), bool(tq.int_quant.narrow_range)
        min_int = float(tq.int_quant.min_int(bit_width))
    stats = scaling.stats_impl
    clip = 1.0
    if type(stats) is AbsMax:
        stat = "absmax"
    elif type(stats) is _MinMaxRange:
        stat = "range"
    elif type(stats) is _ClippedMinMaxRange:
        stat, clip = "range", float(stats.ratio)
    elif type(stats) is AbsMinMax:
        stat = "range_min_clamped"
    else:
        raise NotImplementedError(f"{name}: dynamic scale statistic {type(stats).__name__} is not exportable")
    if getattr(stats, "stats_reduce_dim", None) not in (1, -1):
        raise NotImplementedError(f"{name}: statistic must reduce the feature dim, got {stats.stats_reduce_dim}")
    clamp = scaling.restrict_clamp_scaling.clamp_ste
    if isinstance(clamp, ScalarSignedClampMinSte):
        scale_min = float(clamp.min_val)
    elif type(clamp).__name__ == "Identity":
        scale_min = None
    else:
        raise NotImplementedError(f"{name}: scale clamp {type(clamp).__name__} is not exportable")
    for restrict in (scaling.restrict_clamp_scaling.restrict_value_impl,
                     scaling.restrict_clamp_threshold.restrict_value_impl):
        if type(restrict).__name__ not in ("FloatRestrictValue", "Identity"):
            raise NotImplementedError(f"{name}: scale restriction {type(restrict).__name__} is not exportable")
    zp_impl = tq.zero_point_impl
    if isinstance(zp_impl, ZeroZeroPoint):
        zero_point = "zero"
    elif (isinstance(zp_impl, RuntimePerTokenZeroPoint) and not zp_impl.scale_shift_zero_point.quantize_zero_point
          and ((clip == 1.0 and isinstance(zp_impl.stats, _NegativeMin)) or
               (isinstance(zp_impl.stats, _ClippedNegativeMin) and float(zp_impl.stats.ratio) == clip))):
        zero_point = "neg_min"
    else:
        raise NotImplementedError(f"{name}: zero point {type(zp_impl).__name__} is not exportable "
                                  f"(or its clip ratio differs from the scale's)")
    cfg = DynamicQuantConfig(bits, signed, narrow, threshold, scale_min, stat, zero_point, min_int, clip)
    _CONFIG_CACHE[quant_identity] = cfg
    return cfg


def _config(kind: Optional[str], quant_identity) -> DynamicQuantConfig:
    if quant_identity is not None:
        return dynamic_quant_config(quant_identity)
    if kind not in DYNAMIC_KINDS:
        raise ValueError(f"unknown dynamic quantizer kind {kind!r}; known: {sorted(DYNAMIC_KINDS)}")
    return DYNAMIC_KINDS[kind]


def dynamic_token_params(x: torch.Tensor, kind: Optional[str] = None, quant_identity=None):
    """(scale, zero_point) [..., 1] of a per-token (last dim) dynamic quantizer, given by its Brevitas
    ``QuantIdentity`` (preferred) or by ``kind``. Same float ops, same order as Brevitas:

    * scale: ``RuntimeDynamicStatsScaling`` -- statistic (``AbsMax``: max|x|; ``_MinMaxRange``:
      max - min; ``AbsMinMax``: abs(max - min(min, 0)), where the abs is the identity), then
      ``ScalarSignedClampMinSte`` (clamp_min 1e-10 on a non-negative value), then ``/ threshold``
      (128 = -min_int for int8, 15 = max_int for uint4); the ``Abs`` restrictions are identities on
      these non-negative values and are not emitted.
    * zero point: 0, or ``_NegativeMin`` (-min, not clamped) then ``_ScaleShiftZeroPoint`` with
      ``quantize_zero_point=False``: ``zp / scale + min_int``; ``min_int = 0`` for unsigned, so the
      addition is not emitted (it changes no value).
    """
    cfg = _config(kind, quant_identity)
    if cfg.stat == "absmax":
        stat = torch.amax(torch.abs(x), dim=-1, keepdim=True)
        mn = None
    else:
        mx = torch.amax(x, dim=-1, keepdim=True)
        mn = torch.amin(x, dim=-1, keepdim=True)
        if cfg.clip != 1.0:                 # Brevitas: max * r - min * r; zero point -(min * r) / scale
            mx, mn = mx * cfg.clip, mn * cfg.clip
        stat = mx - (torch.clamp_max(mn, 0.0) if cfg.stat == "range_min_clamped" else mn)
    if cfg.scale_min is not None:
        stat = torch.clamp_min(stat, cfg.scale_min)
    scale = stat / cfg.threshold
    if cfg.zero_point == "zero":
        zero_point = torch.zeros((), dtype=x.dtype)
    else:
        if mn is None:
            mn = torch.amin(x, dim=-1, keepdim=True)
        zero_point = torch.neg(mn) / scale
        if cfg.min_int != 0.0:
            zero_point = zero_point + cfg.min_int
    return scale, zero_point


def dynamic_token_quant(x: torch.Tensor, kind: Optional[str] = None, quant_identity=None) -> torch.Tensor:
    """Per-token dynamic fake quantization of ``x`` (last dim = features) as a QONNX ``Quant`` node with
    in-graph scale / zero-point inputs; values bit-identical to the Brevitas quantizer ``quant_identity``
    (or the quantizers.py quantizer of ``kind``)."""
    cfg = _config(kind, quant_identity)
    scale, zero_point = dynamic_token_params(x, quant_identity=quant_identity, kind=kind)
    bit_width = torch.tensor(float(cfg.bits), dtype=x.dtype)
    return BrevitasQuantTorchScriptFn.apply(x, scale, zero_point, bit_width, cfg.narrow, cfg.signed, "ROUND")


def static_quant(x: torch.Tensor, scale: torch.Tensor, bits: int = 8, signed: bool = True,
                 narrow: bool = False) -> torch.Tensor:
    """A ``Quant`` node with a constant scale (e.g. [1, heads, 1, 1]) and zero point 0."""
    if scale.dtype != x.dtype:
        scale = scale.to(x.dtype)
    zero_point = torch.zeros((), dtype=x.dtype)
    bit_width = torch.tensor(float(bits), dtype=x.dtype)
    return BrevitasQuantTorchScriptFn.apply(x, scale, zero_point, bit_width, narrow, signed, "ROUND")


class LeanQuantTorchScriptFn(BrevitasQuantTorchScriptFn):
    """``BrevitasQuantTorchScriptFn`` (same ``symbolic``: the same QONNX ``Quant`` node) whose forward is
    Brevitas' ``IntQuant`` arithmetic written with plain torch ops, in the same order
    (``x / scale + zero_point``, round half to even, clamp to the integer range, ``- zero_point``,
    ``* scale``). Under TorchScript tracing Brevitas' own forward keeps about half a weight's worth of
    memory per quantized weight alive until the trace ends (measured: 0.48 GB -> 0.86 GB extra peak for
    4 -> 16 weights of 64 MB), and every intermediate of one Quant stays alive until it returns (six
    weight-sized tensors: 6 GB for Llama-3.2-1B's LM head); this one works in place after the first op
    and keeps nothing."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, bit_width, narrow_range, signed, rounding_mode):
        if rounding_mode != "ROUND":
            return BrevitasQuantTorchScriptFn.forward(ctx, x, scale, zero_point, bit_width, narrow_range,
                                                      signed, rounding_mode)
        bits = int(bit_width)
        if signed:
            max_int = 2 ** (bits - 1) - 1
            min_int = -max_int if narrow_range else -max_int - 1
        else:
            min_int, max_int = 0, 2 ** bits - 1 - int(bool(narrow_range))
        # In place after the first op: one weight-sized temporary instead of six (all of them stay
        # alive until the traced Function returns).
        y = x / scale
        y.add_(zero_point).round_().clamp_(float(min_int), float(max_int))
        return y.sub_(zero_point).mul_(scale)


class LeanQuantOp:
    """Drop-in for Brevitas' ``BrevitasQuantOp`` (``torchscript`` / ``dynamo`` backends)."""
    from brevitas.export.onnx.qonnx.function import BrevitasQuantDynamoFn as dynamo
    torchscript = LeanQuantTorchScriptFn


_HADAMARD_CACHE: Dict[int, torch.Tensor] = {}


_HADAMARD_KEEPERS = [0]         # open keep_hadamard_constants() contexts


def clear_hadamard_cache() -> None:
    """Forget the cached Hadamard constants (256 MiB for n = 8192); deferred to the end of the outermost
    ``keep_hadamard_constants()`` context when one is open."""
    if not _HADAMARD_KEEPERS[0]:
        _HADAMARD_CACHE.clear()


@contextlib.contextmanager
def keep_hadamard_constants():
    """Keep the Hadamard constants across several exports (each export clears them when it ends); they
    are cleared when the outermost context exits."""
    _HADAMARD_KEEPERS[0] += 1
    try:
        yield
    finally:
        _HADAMARD_KEEPERS[0] -= 1
        clear_hadamard_cache()


def hadamard_constant(n: int) -> torch.Tensor:
    """``hadamard_matrix(n).T`` in float32 (built in float64, transposed, rounded once); one cached
    tensor per size so every layer's MatMul references the same constant."""
    if n not in _HADAMARD_CACHE:
        from .hadamard import hadamard_matrix
        mat = np.ascontiguousarray(hadamard_matrix(n).T).astype(np.float32)
        _HADAMARD_CACHE[n] = torch.from_numpy(mat)
    return _HADAMARD_CACHE[n]


def hadamard_matmul(x: torch.Tensor) -> torch.Tensor:
    """``x @ hadamard_matrix(n).T`` over the last dim as one MatMul with a constant (exportable form of
    ``fast_hadamard_transform``; equal up to float summation order)."""
    # int(): under TorchScript tracing x.shape[-1] is a traced value, which would miss the cache.
    return torch.matmul(x, hadamard_constant(int(x.shape[-1])))
