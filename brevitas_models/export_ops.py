"""Exportable (TorchScript/QONNX) forms of the model's run-time operations.

* :func:`dynamic_token_quant` -- per-token dynamic quantization of a linear input, written as plain torch
  ops that compute the scale (and zero point) from the tensor itself, followed by Brevitas' QONNX
  ``Quant`` autograd function. Exported, the ops become an in-graph subgraph feeding the ``scale`` and
  ``zero_point`` inputs of a ``qonnx.custom_op.general::Quant`` node (docs/qonnx-dynamic-quant.md).
  The float operations and their order are those of the Brevitas quantizers in ``quantizers.py``
  (``RuntimeDynamicStatsScaling`` + ``AbsMax`` / ``AbsMinMax``, ``RuntimePerTokenZeroPoint``,
  ``IntQuant``), so the values are bit-identical to the Brevitas ``QuantIdentity`` (tested).
* :func:`static_quant` -- a ``Quant`` node with constant scale / zero point (used to mark the int8 K/V
  cache inputs of the decode graph).
* :func:`hadamard_matmul` -- the online Hadamard transform R4 as a MatMul with a constant matrix
  (Brevitas' online Hadamard module and our fast transform do not export).
"""

from __future__ import annotations

from typing import Dict

import numpy as np
import torch

from brevitas.export.onnx.qonnx.function import BrevitasQuantTorchScriptFn

__all__ = ["DYNAMIC_KINDS", "SCALING_MIN_VAL", "dynamic_token_quant", "dynamic_token_params",
           "static_quant", "hadamard_matmul", "hadamard_constant"]

# kind -> (bit width, signed, narrow range, int threshold the statistic is divided by)
DYNAMIC_KINDS = {
    "int8": (8, True, False, 128.0),        # Brevitas' IntScaling for signed, not narrow: -min_int = 128
    "uint4_asym": (4, False, False, 15.0),  # unsigned: max_int = 15
}

# scaling_min_val of the Brevitas float-scaled activation quantizers (ScalarSignedClampMinSte): the
# scale statistic is clamped to >= 1e-10 before the division (only matters for all-zero tokens).
SCALING_MIN_VAL = 1e-10


def dynamic_token_params(x: torch.Tensor, kind: str):
    """(scale, zero_point) [..., 1] of the per-token (last dim) dynamic quantizer ``kind``.

    int8:        scale = clamp_min(max|x|, 1e-10) / 128;             zero_point = 0
    uint4_asym:  scale = clamp_min(max - min(min, 0), 1e-10) / 15;   zero_point = (-min) / scale + 0

    (Brevitas' ``AbsMinMax`` clamps the minimum at 0 for the *scale*, the zero point uses the unclamped
    minimum; ``_ScaleShiftZeroPoint`` with ``quantize_zero_point=False`` is ``zp / scale + min_int`` with
    ``min_int = 0`` for unsigned, i.e. a float, non-rounded zero point.)
    """
    if kind not in DYNAMIC_KINDS:
        raise ValueError(f"unknown dynamic quantizer kind {kind!r}; known: {sorted(DYNAMIC_KINDS)}")
    bits, signed, narrow, threshold = DYNAMIC_KINDS[kind]
    if kind == "int8":
        stat = torch.amax(torch.abs(x), dim=-1, keepdim=True)
        scale = torch.clamp_min(stat, SCALING_MIN_VAL) / threshold
        zero_point = torch.zeros((), dtype=x.dtype)
    else:
        mx = torch.amax(x, dim=-1, keepdim=True)
        mn = torch.amin(x, dim=-1, keepdim=True)
        # AbsMinMax: abs(max - clamp(min, max=0)); the abs is the identity on this non-negative value.
        stat = mx - torch.clamp_max(mn, 0.0)
        scale = torch.clamp_min(stat, SCALING_MIN_VAL) / threshold
        # _NegativeMin (-min, not clamped) then _ScaleShiftZeroPoint: zp / scale + min_int (min_int = 0;
        # adding 0.0 changes no value, so it is not emitted).
        zero_point = torch.neg(mn) / scale
    return scale, zero_point


def dynamic_token_quant(x: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token dynamic fake quantization of ``x`` (last dim = features) as a QONNX ``Quant`` node with
    in-graph scale / zero-point inputs; values bit-identical to the Brevitas quantizer of ``kind``."""
    bits, signed, narrow, _ = DYNAMIC_KINDS.get(kind, (None,) * 4)
    scale, zero_point = dynamic_token_params(x, kind)
    bit_width = torch.tensor(float(bits), dtype=x.dtype)
    return BrevitasQuantTorchScriptFn.apply(x, scale, zero_point, bit_width, narrow, signed, "ROUND")


def static_quant(x: torch.Tensor, scale: torch.Tensor, bits: int = 8, signed: bool = True,
                 narrow: bool = False) -> torch.Tensor:
    """A ``Quant`` node with a constant scale (e.g. [1, heads, 1, 1]) and zero point 0."""
    if scale.dtype != x.dtype:
        scale = scale.to(x.dtype)
    zero_point = torch.zeros((), dtype=x.dtype)
    bit_width = torch.tensor(float(bits), dtype=x.dtype)
    return BrevitasQuantTorchScriptFn.apply(x, scale, zero_point, bit_width, narrow, signed, "ROUND")


_HADAMARD_CACHE: Dict[int, torch.Tensor] = {}


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
