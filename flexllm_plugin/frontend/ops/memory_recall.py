"""``MemoryRecall``: the HMT memory recall as one node (query projection, scores against the cached keys
with the empty slots masked, fp32 softmax, mix over the memories; brevitas_models/hmt/memory.py)."""

import numpy as np
from onnx import helper

from ._base import FlexLLMOp


class MemoryRecall(FlexLLMOp):
    """inputs ``summary`` [1, d] (S_n), ``w_q`` [d, d] (out x in), ``keys`` [N, d] (W_k M_i per slot),
    ``memories`` [N, d], ``filled`` [1] int64 (slots 0 .. filled-1 hold memories, 1 <= filled <= N);
    output ``recalled`` [1, d] = softmax((W_q S) . K / sqrt(d), slots >= filled masked) M, in the hardware's
    fp32 contract (brevitas_models/hmt/golden_recall.py, layers/flexllm_memory_recall.h)."""

    NUM_INPUTS = (5,)

    def get_nodeattr_types(self):
        return {}

    def make_shape_compatible_op(self, model):
        node = self.onnx_node
        return helper.make_node("Identity", [node.input[0]], [node.output[0]])

    def execute_node(self, context, graph):
        from brevitas_models.hmt.golden_recall import memory_recall
        summary, w_q, keys, memories, filled = self._inputs(context)
        n = int(np.asarray(filled).reshape(-1)[0])
        out = memory_recall(np.asarray(w_q, np.float32), np.asarray(summary, np.float32).reshape(-1),
                            np.asarray(keys, np.float32), np.asarray(memories, np.float32), n)
        self._set(context, out[None, :])
