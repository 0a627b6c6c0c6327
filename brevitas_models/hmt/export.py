"""QONNX of the HMT memory operations: the fused ``MemoryRecall`` node (flexllm_plugin.frontend.ops) and
the key projection of a new memory (a plain MatMul), with the trained W_q / W_k as initialisers.

Graph inputs: ``summary`` [1, d], ``keys`` [N, d], ``memories`` [N, d], ``filled`` [1] int64,
``new_memory`` [1, d]; outputs ``recalled`` [1, d] (the mix over the memories) and ``new_key`` [1, d]
(``new_memory @ W_k^T``); with ``w_p`` (the image's recall projection: a rotated backbone's basis change
and / or the learned recall scale, :mod:`.hardware`) and / or ``residual_row`` (P0_hw, HMT.RecallResidual)
also ``recalled_row`` [1, d] = ``recalled @ W_p^T (+ residual_row)``, the input row P_n. Executable by qonnx (``qonnx.core.onnx_exec.execute_onnx``)."""

from __future__ import annotations

from typing import Optional

import numpy as np
from onnx import TensorProto, helper, numpy_helper

FLEXLLM_DOMAIN = "flexllm_plugin.frontend.ops"


def memory_graph(w_q: np.ndarray, w_k: np.ndarray, slots: int, w_p: Optional[np.ndarray] = None,
                 residual_row: Optional[np.ndarray] = None):
    """A qonnx ModelWrapper of the recall and key ops for W_q, W_k [d, d] (fp32) and N = ``slots``; with
    ``w_p`` [d, d] the recall projection of the mix, with ``residual_row`` [d] its addition, too."""
    from qonnx.core.modelwrapper import ModelWrapper

    w_q = np.ascontiguousarray(w_q, dtype=np.float32)
    w_k = np.ascontiguousarray(w_k, dtype=np.float32)
    d = w_q.shape[0]
    if w_q.shape != (d, d) or w_k.shape != (d, d):
        raise ValueError(f"W_q {w_q.shape} and W_k {w_k.shape} must both be [d, d]")
    if w_p is not None:
        w_p = np.ascontiguousarray(w_p, dtype=np.float32)
        if w_p.shape != (d, d):
            raise ValueError(f"W_p {w_p.shape} must be [d, d] = [{d}, {d}]")
    if residual_row is not None:
        residual_row = np.ascontiguousarray(residual_row, dtype=np.float32).reshape(1, -1)
        if residual_row.shape != (1, d):
            raise ValueError(f"the residual row {residual_row.shape} must have d = {d} elements")
    if slots < 1:
        raise ValueError(f"memory slots must be >= 1, got {slots}")
    f = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("summary", f, [1, d]),
              helper.make_tensor_value_info("keys", f, [slots, d]),
              helper.make_tensor_value_info("memories", f, [slots, d]),
              helper.make_tensor_value_info("filled", TensorProto.INT64, [1]),
              helper.make_tensor_value_info("new_memory", f, [1, d])]
    outputs = [helper.make_tensor_value_info("recalled", f, [1, d]),
               helper.make_tensor_value_info("new_key", f, [1, d])]
    nodes = [helper.make_node("MemoryRecall", ["summary", "w_q", "keys", "memories", "filled"], ["recalled"],
                              name="memory_recall", domain=FLEXLLM_DOMAIN),
             helper.make_node("MatMul", ["new_memory", "w_k_t"], ["new_key"], name="memory_key")]
    inits = [numpy_helper.from_array(w_q, "w_q"), numpy_helper.from_array(np.ascontiguousarray(w_k.T), "w_k_t")]
    row, inner = "recalled", []
    if w_p is not None:
        nodes.append(helper.make_node("MatMul", [row, "w_p_t"], ["projected"], name="recall_projection"))
        inits.append(numpy_helper.from_array(np.ascontiguousarray(w_p.T), "w_p_t"))
        row = "projected"
        inner.append(helper.make_tensor_value_info(row, f, [1, d]))
    if residual_row is not None:
        nodes.append(helper.make_node("Add", ["residual_row", row], ["with_residual"], name="recall_residual"))
        inits.append(numpy_helper.from_array(residual_row, "residual_row"))
        row = "with_residual"
        inner.append(helper.make_tensor_value_info(row, f, [1, d]))
    if row != "recalled":
        outputs.append(helper.make_tensor_value_info("recalled_row", f, [1, d]))
        nodes.append(helper.make_node("Identity", [row], ["recalled_row"], name="recalled_row"))
    graph = helper.make_graph(nodes, "hmt_memory", inputs, outputs, inits, value_info=inner)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(FLEXLLM_DOMAIN, 1)],
                              producer_name="flexllm")
    return ModelWrapper(model)
