"""``QuantLinear``: ``x @ Quant(weight)^T`` with a per-output-channel weight scale, no bias."""

import numpy as np
from onnx import helper

from ._base import FlexLLMOp, f32, matmul, quant


class QuantLinear(FlexLLMOp):
    """inputs  ``x`` [..., in] (the output of a DynamicTokenQuant), ``weight`` float32 initialiser
            [out, in] (the float weight the replaced weight ``Quant`` consumed), ``w_scale`` float32
            initialiser [out, 1]
    attrs   ``w_bits`` (i), ``narrow`` (i); the weight quantizer is signed with zero point 0
    outputs ``y`` [..., out] = ``MatMul(x, Quant(weight, w_scale, 0, w_bits, signed=1, narrow)^T)``
    (MatMul by onnxruntime on the same operands as the replaced MatMul)."""

    NUM_INPUTS = (3,)

    def get_nodeattr_types(self):
        return {"w_bits": ("i", True, 4), "narrow": ("i", True, 1, {0, 1})}

    def make_shape_compatible_op(self, model):
        node = self.onnx_node
        return helper.make_node("Einsum", [node.input[0], node.input[1]], [node.output[0]], equation="...i,oi->...o")

    def quantized_weight(self, weight, w_scale):
        return quant(weight, w_scale, f32(0.0), self.get_nodeattr("w_bits"), 1, self.get_nodeattr("narrow"))

    def execute_node(self, context, graph):
        x, weight, w_scale = self._inputs(context)
        wq = self.quantized_weight(weight, w_scale)
        self._set(context, matmul(x, np.ascontiguousarray(wq.T)))
