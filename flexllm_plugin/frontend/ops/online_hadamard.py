"""``OnlineHadamard``: the online R4 rotation ``x @ H`` (``H = hadamard_matrix(n).T``, float32)."""

from onnx import helper

from ._base import FlexLLMOp, matmul


class OnlineHadamard(FlexLLMOp):
    """inputs  ``x`` [..., n], ``matrix`` float32 initialiser [n, n] (equal to
            ``brevitas_models.export_ops.hadamard_constant(n)``)
    attrs   ``n`` (i)
    outputs ``y`` [..., n] = ``MatMul(x, matrix)`` (onnxruntime, as the replaced MatMul)."""

    NUM_INPUTS = (2,)

    def get_nodeattr_types(self):
        return {"n": ("i", True, 0)}

    def make_shape_compatible_op(self, model):
        node = self.onnx_node
        return helper.make_node("MatMul", [node.input[0], node.input[1]], [node.output[0]])

    def execute_node(self, context, graph):
        x, matrix = self._inputs(context)
        self._set(context, matmul(x, matrix))
