"""``RMSNorm``: ``weight * (x * (1 / sqrt(mean(x^2, -1) + eps)))``."""

import numpy as np
from onnx import helper

from ._base import FlexLLMOp, f32, run_onnx_node


class RMSNorm(FlexLLMOp):
    """inputs  ``x`` [..., D], ``weight`` float32 initialiser [D]
    attrs   ``eps`` (f)
    outputs ``y`` [..., D]

    Replaces ``Pow(x, 2) -> ReduceMean(axes=[-1], keepdims=1) -> Add(eps) -> Sqrt -> Div(1, .) ->
    Mul(x, .) -> Mul(weight, .)`` and computes it in that order (Pow and ReduceMean by onnxruntime, the
    rest are IEEE-exact elementwise float32 operations)."""

    NUM_INPUTS = (2,)

    def get_nodeattr_types(self):
        return {"eps": ("f", True, 1e-5)}

    def make_shape_compatible_op(self, model):
        node = self.onnx_node
        return helper.make_node("Mul", [node.input[0], node.input[1]], [node.output[0]])

    def execute_node(self, context, graph):
        x, weight = self._inputs(context)
        sq = run_onnx_node("Pow", [x, f32(2.0)])
        mean = run_onnx_node("ReduceMean", [sq], axes=[-1], keepdims=1)
        inv = f32(1.0) / np.sqrt(mean + f32(self.get_nodeattr("eps")))
        self._set(context, weight * (x * inv))
