"""layers/flexllm_memory_recall.h in C simulation against the HMT golden recall
(brevitas_models/hmt/golden_recall.py) bit for bit, the golden against the PyTorch recall within fp32
tolerance, and the cost model's loop counts (flexllm_plugin/cost/memory_recall.py) against the C
simulation's counters."""

from collections import Counter

import numpy as np
import pytest
import torch

from brevitas_models.hmt.golden_recall import GoldenMemoryCache, inv_sqrt, memory_key, memory_recall
from brevitas_models.hmt.memory import MemoryCache
from flexllm_plugin.cost.memory_recall import MemoryRecallUnit
from tests.test_layers_csim import F32, CSim, Output, assert_bits, csim, payload  # noqa: F401  (fixture)

SHAPES = {0: (4, 96), 1: (3, 40)}        # shape id -> (N, D), as in tests/csim/drv_hmt.cpp


def _counters(out: Output) -> Counter:
    text = out.data[out.pos:].decode()
    return Counter({name: int(v) for name, v in (line.split() for line in text.splitlines())})


def _case(seed, n_slots, d):
    rng = np.random.default_rng(seed)
    w_q = (rng.standard_normal((d, d)) / np.sqrt(d)).astype(F32)
    w_k = (rng.standard_normal((d, d)) / np.sqrt(d)).astype(F32)
    mems = (rng.standard_normal((n_slots, d)) * 3).astype(F32)
    s = (rng.standard_normal(d) * 3).astype(F32)
    return w_q, w_k, mems, s


@pytest.mark.parametrize("lanes", [1, 4, 16])
@pytest.mark.parametrize("shape", [0, 1])
def test_key_and_recall_bit_exact(csim, lanes, shape):
    n_slots, d = SHAPES[shape]
    w_q, w_k, mems, s = _case(shape * 10 + lanes, n_slots, d)
    keys = np.stack([memory_key(w_k, m) for m in mems])
    out = csim.run("hmt", "key", lanes, shape, w_k, mems[0])
    assert_bits(out.take(F32, d), keys[0], "key")
    unit = MemoryRecallUnit(d, n_slots, lanes)
    assert _counters(out) == unit.key_iterations()
    for n in range(1, n_slots + 1):
        junk = keys.copy(), mems.copy()
        junk[0][n:], junk[1][n:] = 1e30, np.nan          # unfilled slots are never read
        out = csim.run("hmt", "recall", lanes, shape, n, inv_sqrt(d), w_q, s, junk[0], junk[1])
        ref = memory_recall(w_q, s, keys, mems, n)
        assert_bits(out.take(F32, d), ref, f"recall n={n}")
        assert _counters(out) == unit.recall_iterations(n)


def test_golden_ring_cache_matches_the_pytorch_recall():
    n_slots, d = 4, 96
    w_q, w_k, _, _ = _case(7, n_slots, d)
    rng = np.random.default_rng(8)
    golden = GoldenMemoryCache(n_slots, d)
    torch_cache = MemoryCache(n_slots, 1, d)
    for t in range(6):                                   # wraps around: slots 0, 1, 2, 3, 0, 1
        m = (rng.standard_normal(d) * 3).astype(F32)
        assert golden.push(w_k, m) == torch_cache.push(torch.from_numpy(m)[None], torch.from_numpy(w_k)) == t % 4
        s = (rng.standard_normal(d) * 3).astype(F32)
        ref = torch_cache.recall(torch.from_numpy(s)[None], torch.from_numpy(w_q))[0].numpy()
        np.testing.assert_allclose(golden.recall(w_q, s), ref, rtol=1e-5, atol=1e-5)
    assert golden.filled == 4


def test_cost_model_by_hand():
    unit = MemoryRecallUnit(hidden=576, slots=64, lanes=16)
    it = unit.recall_iterations(10)
    assert it["memory_dot"] == (576 + 10) * 36 and it["memory_mix"] == 10 * 36
    assert unit.key_iterations()["memory_dot"] == 576 * 36
    assert unit.weight_bytes_per_segment() == 2 * 576 * 576 * 4
    assert unit.resources().uram > 0
    with pytest.raises(ValueError, match="lanes must divide 128"):
        MemoryRecallUnit(576, 64, 3)
