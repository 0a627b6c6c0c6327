"""``SwiGLU``: ``(gate * sigmoid(gate)) * up``."""

from onnx import helper

from ._base import FlexLLMOp, run_onnx_node


class SwiGLU(FlexLLMOp):
    """inputs  ``gate`` [..., F], ``up`` [..., F]
    outputs ``y`` = ``Mul(Mul(gate, Sigmoid(gate)), up)`` (Sigmoid by onnxruntime, as the replaced node)."""

    NUM_INPUTS = (2,)

    def get_nodeattr_types(self):
        return {}

    def make_shape_compatible_op(self, model):
        node = self.onnx_node
        return helper.make_node("Mul", [node.input[0], node.input[1]], [node.output[0]])

    def execute_node(self, context, graph):
        gate, up = self._inputs(context)
        self._set(context, (gate * run_onnx_node("Sigmoid", [gate])) * up)
