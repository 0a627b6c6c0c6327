"""``SplitHeads``: ``[1, L, H*d] -> [1, H, L, d]`` (the Reshape + Transpose(0, 2, 1, 3) after q/k/v_proj)."""

import numpy as np
from onnx import helper

from ._base import FlexLLMOp, const_node, function_shape_op


class SplitHeads(FlexLLMOp):
    """inputs  ``x`` [1, L, num_heads * head_dim]
    attrs   ``num_heads`` (i), ``head_dim`` (i)
    outputs ``y`` [1, num_heads, L, head_dim] (pure data movement)."""

    def get_nodeattr_types(self):
        return {"num_heads": ("i", True, 0), "head_dim": ("i", True, 0)}

    def make_shape_compatible_op(self, model):
        heads, dim = self.get_nodeattr("num_heads"), self.get_nodeattr("head_dim")
        body = [const_node("shape", np.array([0, 0, heads, dim], dtype=np.int64)),
                helper.make_node("Reshape", ["x", "shape"], ["r"]),
                helper.make_node("Transpose", ["r"], ["y"], perm=[0, 2, 1, 3])]
        return function_shape_op(model, self.onnx_node, f"SplitHeadsShape_{heads}_{dim}", ["x"], ["y"], body)

    def execute_node(self, context, graph):
        (x,) = self._inputs(context)
        b, length, _ = x.shape
        heads, dim = self.get_nodeattr("num_heads"), self.get_nodeattr("head_dim")
        y = x.reshape(b, length, heads, dim).transpose(0, 2, 1, 3)
        self._set(context, np.ascontiguousarray(y))
