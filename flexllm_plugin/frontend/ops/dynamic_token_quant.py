"""``DynamicTokenQuant``: per-token dynamic input quantizer (docs/qonnx-dynamic-quant.md, sections 2-4)."""

import numpy as np
from onnx import helper

from ._base import FlexLLMOp, f32, quant, run_onnx_node

KINDS = ("uint4_asym", "int8")


def token_quant_params(x: np.ndarray, kind: str, bit_width: int, range_min: float, clip: float = 1.0):
    """(scale, zero_point) per token (last axis, keepdims), in the exported graph's operation order.

    uint4_asym: ``scale = max(max(x) r - min(x) r, range_min) / (2^bits - 1)``, ``zp = -(min(x) r) / scale``
    (r = ``clip``; r = 1: no multiply);
    int8:       ``scale = max(max|x|, range_min) / 2^(bits-1)``, ``zp = 0``."""
    lo = f32(range_min)
    if kind == "uint4_asym":
        mx = run_onnx_node("ReduceMax", [x], axes=[-1], keepdims=1)
        mn = run_onnx_node("ReduceMin", [x], axes=[-1], keepdims=1)
        if clip != 1.0:
            mx, mn = mx * f32(clip), mn * f32(clip)
        rng = np.maximum(mx - mn, lo)                       # Clip(min=range_min)
        scale = rng / f32(2 ** bit_width - 1)
        zero_point = (-mn) / scale
        return scale, zero_point
    if kind == "int8":
        mx = run_onnx_node("ReduceMax", [np.abs(x)], axes=[-1], keepdims=1)
        scale = np.maximum(mx, lo) / f32(2 ** (bit_width - 1))
        return scale, f32(0.0)
    raise ValueError(f"unknown DynamicTokenQuant kind {kind!r}")


class DynamicTokenQuant(FlexLLMOp):
    """inputs  ``x`` [..., D]
    attrs   ``kind`` (s: "uint4_asym" | "int8"), ``bit_width`` (i), ``signed`` (i), ``narrow`` (i),
            ``range_min`` (f, the Clip lower bound of the statistic, 1e-10),
            ``clip`` (f, uint4_asym only: the range is [clip min, clip max], codes saturate; default 1)
    outputs ``y`` [..., D]: the dequantized values, exactly the replaced ``Quant`` node's output.

    uint4_asym (signed 0): ``q = clamp(round(x / s + zp), 0, 2^bits - 1)``, ``y = (q - zp) * s`` with
    ``s = max(max(x) - min(x), range_min) / (2^bits - 1)`` and the float (unrounded) ``zp = -min(x) / s``.
    int8 (signed 1): ``s = max(max|x|, range_min) / 2^(bits-1)``, ``zp = 0``."""

    def get_nodeattr_types(self):
        return {
            "kind": ("s", True, "uint4_asym", set(KINDS)),
            "bit_width": ("i", True, 4),
            "signed": ("i", True, 0, {0, 1}),
            "narrow": ("i", False, 0, {0, 1}),
            "range_min": ("f", True, 1e-10),
            "clip": ("f", False, 1.0),
        }

    def verify_specific(self):
        kind, signed = self.get_nodeattr("kind"), self.get_nodeattr("signed")
        if (kind == "int8") != bool(signed):
            raise ValueError(f"DynamicTokenQuant '{self.onnx_node.name}': kind {kind} with signed={signed}")
        clip = self.get_nodeattr("clip")
        if not 0.0 < clip <= 1.0 or (clip != 1.0 and kind != "uint4_asym"):
            raise ValueError(f"DynamicTokenQuant '{self.onnx_node.name}': clip {clip} (need (0, 1], uint4_asym only)")

    def make_shape_compatible_op(self, model):
        node = self.onnx_node
        return helper.make_node("Identity", [node.input[0]], [node.output[0]])

    def execute_node(self, context, graph):
        (x,) = self._inputs(context)
        bits = self.get_nodeattr("bit_width")
        scale, zp = token_quant_params(x, self.get_nodeattr("kind"), bits, self.get_nodeattr("range_min"),
                                       self.get_nodeattr("clip"))
        self._set(context, quant(x, scale, zp, bits, self.get_nodeattr("signed"), self.get_nodeattr("narrow")))
