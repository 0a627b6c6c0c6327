"""``LastToken``: the hidden state of the last position (``Gather(x, -1, axis=1)``)."""

import numpy as np
from onnx import helper

from ._base import FlexLLMOp


class LastToken(FlexLLMOp):
    """inputs ``x`` [1, L, D]; outputs ``y`` [1, D] = ``x[:, -1, :]``."""

    def get_nodeattr_types(self):
        return {}

    def make_shape_compatible_op(self, model):
        node = self.onnx_node
        return helper.make_node("ReduceMax", [node.input[0]], [node.output[0]], axes=[1], keepdims=0)

    def execute_node(self, context, graph):
        (x,) = self._inputs(context)
        self._set(context, np.ascontiguousarray(x[:, -1, :]))
