"""Brevitas quantizer definitions of the FlexLLM quantization suite.

Every quantizer here is a Brevitas injector; the model never fake-quantizes by hand.

| use                        | class                      | grid                 | scale                      |
|----------------------------|----------------------------|----------------------|----------------------------|
| linear weights             | ``IntWeightPerChannel(b)`` | [-(2^(b-1)-1), ..]   | max|w_row| / (2^(b-1)-1), a parameter after init (GPTQ keeps it) |
| linear inputs (int8)       | ``Int8PerTokenDynamic``    | [-128, 127]          | max|x_token| / 128 (Brevitas' convention) |
| linear inputs (uint4 asym) | ``Uint4PerTokenDynamicAsym`` | [0, 15]            | (max-min)/15, zero point -min/scale (float, not rounded) |
| Q/K/V, KV cache            | ``Int8PerHeadStatic``      | [-128, 127]          | calibrated threshold / 128 per head |
| softmax output P           | ``Uint8PerHeadStatic``     | [0, 255]             | calibrated threshold / 255 per head |

Rounding everywhere: round half to even (torch.round), then clamp.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

import brevitas
from brevitas.core.function_wrapper.shape import OverOutputFeaturesView
from brevitas.core.stats import StatsOp
from brevitas.core.zero_point import _ScaleShiftZeroPoint
from brevitas.inject.enum import ScalingImplType
from brevitas.quant.scaled_int import Int8ActPerTensorFloat, Int8WeightPerChannelFloat, Uint8ActPerTensorFloat
from brevitas.quant.shifted_scaled_int import ShiftedUint8ActPerTensorFloat
from brevitas_examples.common.generative.quant_blocks import RuntimeDynamicStatsScaling
from brevitas_examples.common.generative.quantizers import DynamicActProxyMixin


class _NegativeMin(brevitas.jit.ScriptModule):
    """-min over the last dim (keepdim); unlike Brevitas' NegativeMinOrZero it is not clamped at zero,
    so an all-positive token keeps its true offset (the paper's zero = min)."""

    def __init__(self, dtype=None, device=None) -> None:
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        return -torch.min(x, dim=-1, keepdim=True)[0]


class _ClippedNegativeMin(brevitas.jit.ScriptModule):
    """-(r * min) over the last dim: the zero point of a range clipped to [r min, r max]."""
    __constants__ = ['ratio']

    def __init__(self, ratio: float, dtype=None, device=None) -> None:
        super().__init__()
        self.ratio = float(ratio)

    def forward(self, x: Tensor) -> Tensor:
        return -(torch.min(x, dim=-1, keepdim=True)[0] * self.ratio)


class _MinMaxRange(brevitas.jit.ScriptModule):
    """max - min over the reduced dim. Brevitas' AbsMinMax clamps min at zero (so an all-positive
    token would get scale max/15 instead of the paper's (max - min)/15); this one does not."""
    __constants__ = ['stats_reduce_dim', 'keepdim']

    def __init__(self, stats_reduce_dim=None, keepdim: bool = False, dtype=None, device=None) -> None:
        super().__init__()
        self.stats_reduce_dim = stats_reduce_dim
        self.keepdim = keepdim

    def forward(self, x: Tensor) -> Tensor:
        if self.stats_reduce_dim is None:
            return torch.max(x) - torch.min(x)
        return (torch.max(x, dim=self.stats_reduce_dim, keepdim=self.keepdim)[0] -
                torch.min(x, dim=self.stats_reduce_dim, keepdim=self.keepdim)[0])


class _ClippedMinMaxRange(brevitas.jit.ScriptModule):
    """r max - r min over the reduced dim (the range [r min, r max] of a clipped asymmetric quantizer)."""
    __constants__ = ['stats_reduce_dim', 'keepdim', 'ratio']

    def __init__(self, ratio: float, stats_reduce_dim=None, keepdim: bool = False, dtype=None,
                 device=None) -> None:
        super().__init__()
        self.stats_reduce_dim = stats_reduce_dim
        self.keepdim = keepdim
        self.ratio = float(ratio)

    def forward(self, x: Tensor) -> Tensor:
        return (torch.max(x, dim=self.stats_reduce_dim, keepdim=self.keepdim)[0] * self.ratio -
                torch.min(x, dim=self.stats_reduce_dim, keepdim=self.keepdim)[0] * self.ratio)


class RuntimePerTokenZeroPoint(nn.Module):
    """Run-time zero point = -min(x)/scale per token, kept as a float (no rounding, no abs)."""

    def __init__(self, int_quant: nn.Module, clip_ratio: float = 1.0) -> None:
        super().__init__()
        self.stats = _NegativeMin() if clip_ratio == 1.0 else _ClippedNegativeMin(clip_ratio)
        self.scale_shift_zero_point = _ScaleShiftZeroPoint(int_quant, False)

    def forward(self, x, scale, bit_width) -> Tensor:
        return self.scale_shift_zero_point(self.stats(x), scale, bit_width)


def _per_row_broadcast(x, shape):
    return x.view(*shape[:-1], 1)


class IntWeightPerChannel(Int8WeightPerChannelFloat):
    """Symmetric, narrow-range, per-output-channel weights; scale initialised from max|w| then held
    as a parameter (so GPTQ-rounded weights keep the scale they were rounded with)."""

    scaling_impl_type = ScalingImplType.PARAMETER_FROM_STATS


def weight_quant(bits: int):
    return type(f"Int{bits}WeightPerChannel", (IntWeightPerChannel,), {"bit_width": bits})


class Int8PerTokenDynamic(DynamicActProxyMixin, Int8ActPerTensorFloat):
    """Symmetric int8, scale = max|x| / 128 per token (last dim reduced)."""

    scaling_impl = RuntimeDynamicStatsScaling
    scaling_stats_input_view_shape_impl = OverOutputFeaturesView
    scaling_stats_op = StatsOp.MAX
    scaling_per_output_channel = True
    dynamic_scaling_broadcastable_fn = _per_row_broadcast
    permute_dims = None


class Uint4PerTokenDynamicAsym(DynamicActProxyMixin, ShiftedUint8ActPerTensorFloat):
    """The paper's linear-input format: uint4, scale = (max-min)/15, zero point = -min/scale (float)."""

    bit_width = 4
    scaling_impl = RuntimeDynamicStatsScaling
    scaling_stats_input_view_shape_impl = OverOutputFeaturesView
    scaling_stats_op = StatsOp.MIN_MAX
    scaling_stats_impl = _MinMaxRange
    scaling_per_output_channel = True
    dynamic_scaling_broadcastable_fn = _per_row_broadcast
    permute_dims = None
    zero_point_impl = RuntimePerTokenZeroPoint
    quantize_zero_point = False


def per_head_static(num_heads: int, signed: bool, bits: int = 8):
    """Static per-head quantizer for tensors laid out [batch, heads, seq, dim]; the threshold
    (max magnitude) per head is a parameter set by calibration."""
    base = Int8ActPerTensorFloat if signed else Uint8ActPerTensorFloat
    shape = (1, num_heads, 1, 1)
    return type(
        f"{'Int' if signed else 'Uint'}{bits}PerHeadStatic{num_heads}", (base,), {
            "bit_width": bits,
            "scaling_impl_type": ScalingImplType.PARAMETER,
            "scaling_per_output_channel": True,
            "per_channel_broadcastable_shape": shape,
            "scaling_stats_permute_dims": (1, 0, 2, 3),
            "scaling_shape": shape,
            "scaling_init": torch.ones(shape),
        })


def uint4_asym_clipped(ratio: float):
    """Uint4PerTokenDynamicAsym on the clipped range [r min, r max] (0 < r <= 1): scale = r (max - min) / 15,
    zero point = -r min / scale; values outside the range saturate at code 0 or 15 (Brevitas' clamp)."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"clip ratio must be in (0, 1], got {ratio!r}")
    if ratio == 1.0:
        return Uint4PerTokenDynamicAsym
    return type(f"Uint4PerTokenDynamicAsymClip{ratio:g}".replace(".", "_"), (Uint4PerTokenDynamicAsym,), {
        "scaling_stats_impl": _ClippedMinMaxRange, "clip_ratio": float(ratio), "ratio": float(ratio)})


def dynamic_input_quant(kind: str, clip_ratio: float = 1.0):
    if kind == "uint4_asym":
        return uint4_asym_clipped(clip_ratio)
    if clip_ratio != 1.0:
        raise ValueError(f"a clip ratio applies to uint4_asym inputs only, not {kind!r}")
    return {"int8": Int8PerTokenDynamic}[kind]
