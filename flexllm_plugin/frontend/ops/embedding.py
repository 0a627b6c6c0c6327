"""``Embedding``: token embedding lookup (replaces ``Gather(table, ids, axis=0)``)."""

import numpy as np
from onnx import helper

from ._base import FlexLLMOp


class Embedding(FlexLLMOp):
    """inputs  ``ids`` int64 [1, L], ``table`` float32 initialiser [V, D]
    outputs ``y`` float32 [1, L, D] = ``table[ids]``"""

    NUM_INPUTS = (2,)

    def get_nodeattr_types(self):
        return {}

    def make_shape_compatible_op(self, model):
        node = self.onnx_node
        return helper.make_node("Gather", [node.input[1], node.input[0]], [node.output[0]], axis=0)

    def execute_node(self, context, graph):
        ids, table = self._inputs(context)
        self._set(context, np.take(table, ids, axis=0))
