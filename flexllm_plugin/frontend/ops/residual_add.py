"""``ResidualAdd``: the residual connection ``a + b`` (two per decoder layer)."""

from onnx import helper

from ._base import FlexLLMOp


class ResidualAdd(FlexLLMOp):
    """inputs ``a``, ``b`` (same shape [1, L, D]); outputs ``y = a + b``."""

    NUM_INPUTS = (2,)

    def get_nodeattr_types(self):
        return {}

    def make_shape_compatible_op(self, model):
        node = self.onnx_node
        return helper.make_node("Add", [node.input[0], node.input[1]], [node.output[0]])

    def execute_node(self, context, graph):
        a, b = self._inputs(context)
        self._set(context, a + b)
