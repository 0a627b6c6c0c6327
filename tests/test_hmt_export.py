"""The HMT memory ops in QONNX (brevitas_models/hmt/export.py): the fused MemoryRecall node and the key
MatMul executed by qonnx against the PyTorch einsum recall (brevitas_models/hmt/memory.py, fp32 tolerance)
and the hardware golden (bit for bit: the node executes the contract)."""

import numpy as np
import pytest
import torch

from brevitas_models.hmt.export import memory_graph
from brevitas_models.hmt.golden_recall import memory_key, memory_recall
from brevitas_models.hmt.memory import recall


@pytest.mark.parametrize("filled", [1, 3, 4])
def test_memory_recall_node_executes_like_the_references(filled):
    from qonnx.core.onnx_exec import execute_onnx

    rng = np.random.default_rng(filled)
    d, n = 48, 4
    w_q = (rng.standard_normal((d, d)) / np.sqrt(d)).astype(np.float32)
    w_k = (rng.standard_normal((d, d)) / np.sqrt(d)).astype(np.float32)
    mems = (rng.standard_normal((n, d)) * 2).astype(np.float32)
    keys = (mems.astype(np.float64) @ w_k.T.astype(np.float64)).astype(np.float32)
    keys[filled:], mems[filled:] = 1e30, np.nan            # empty slots must never be read
    s = (rng.standard_normal(d) * 2).astype(np.float32)
    model = memory_graph(w_q, w_k, n)
    out = execute_onnx(model, {"summary": s[None], "keys": keys, "memories": mems,
                               "filled": np.array([filled], dtype=np.int64), "new_memory": mems[:1]})
    got = out["recalled"][0]
    assert got.view(np.uint32).tolist() == memory_recall(w_q, s, keys, mems, filled).view(np.uint32).tolist()
    mask = torch.arange(n) < filled
    ref = recall(torch.from_numpy(s)[None], torch.from_numpy(np.where(mask[:, None].numpy(), keys, 0))[None],
                 torch.from_numpy(np.where(mask[:, None].numpy(), mems, 0))[None], mask, torch.from_numpy(w_q))
    np.testing.assert_allclose(got, ref[0].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["new_key"][0], memory_key(w_k, mems[0]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["new_key"][0], (torch.from_numpy(mems[:1]) @ torch.from_numpy(w_k).t())[0].numpy(),
                               rtol=1e-6, atol=1e-6)


def test_memory_graph_checks_shapes():
    with pytest.raises(ValueError, match="W_q"):
        memory_graph(np.zeros((4, 4), np.float32), np.zeros((4, 5), np.float32), 2)
