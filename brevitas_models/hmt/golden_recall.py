"""The HMT memory recall in the hardware numerics contract (numpy, bit-exact with
``layers/flexllm_memory_recall.h``): fp32 GEMVs for the query and the keys, fp32 dot products for the
scores, the contract's masked softmax, and the mix over the memories.

Operations (all binary32, round to nearest even, no FMA; ``sum_partials`` and ``softmax_masked`` of
:mod:`brevitas_models.fp32`):

* ``gemv(W, x)[o] = sum_partials(W[o, :] * x)`` (element-wise products, then the 128-partial sum);
* key of a new memory: ``k = gemv(W_k, M)`` (once per memory, stored in the memory's slot);
* query: ``q = gemv(W_q, S)``;
* scores: ``s[i] = sum_partials(q * k_i) * inv_sqrt_d`` for the ``n`` filled slots
  (``inv_sqrt_d = float32(1 / sqrt(d))``), the others masked;
* ``p = softmax_masked(s, i < n)``;
* ``P[c] = (((+0 + p[0] M_0[c]) + p[1] M_1[c]) + ...) + p[n-1] M_{n-1}[c]`` (sequential in slot order).

Slots fill in order (memory t goes to slot t mod N), so the filled slots are always the prefix
``0 .. n-1`` with ``n = min(pushed, N)``.
"""

from __future__ import annotations

import math

import numpy as np

from ..fp32 import F32, softmax_masked, sum_partials


def _f32(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise TypeError(f"{name} must be float32, got {x.dtype}")
    return x


def inv_sqrt(d: int) -> np.float32:
    return F32(1.0 / math.sqrt(d))


def gemv(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``y[o] = sum_partials(w[o, :] * x)`` in fp32; w [out, in], x [in]."""
    w, x = _f32(w, "W"), _f32(x, "x")
    if w.ndim != 2 or x.shape != (w.shape[1],):
        raise ValueError(f"gemv of W {w.shape} and x {x.shape}")
    return sum_partials(w * x[None, :])


def memory_key(w_k: np.ndarray, memory: np.ndarray) -> np.ndarray:
    return gemv(w_k, memory)


def memory_recall(w_q: np.ndarray, summary: np.ndarray, keys: np.ndarray, memories: np.ndarray,
                  n: int) -> np.ndarray:
    """P_n of one summary S against the filled slots 0..n-1 of keys / memories [N, d]."""
    keys, memories = _f32(keys, "keys"), _f32(memories, "memories")
    slots, d = memories.shape
    if keys.shape != memories.shape:
        raise ValueError(f"keys {keys.shape} and memories {memories.shape} differ")
    if not 1 <= n <= slots:
        raise ValueError(f"recall needs 1 <= n <= {slots} filled slots, got {n}")
    q = gemv(w_q, summary)
    scores = sum_partials(keys * q[None, :]) * inv_sqrt(d)
    p = softmax_masked(scores, np.arange(slots) < n)
    out = np.zeros(d, dtype=np.float32)
    for i in range(n):
        out = out + p[i] * memories[i]
    return out


class GoldenMemoryCache:
    """The ring buffer of the hardware: N slots of memories and keys, memory t in slot t mod N."""

    def __init__(self, slots: int, d: int):
        self.memories = np.zeros((slots, d), dtype=np.float32)
        self.keys = np.zeros((slots, d), dtype=np.float32)
        self.pushed = 0

    @property
    def filled(self) -> int:
        return min(self.pushed, self.memories.shape[0])

    def push(self, w_k: np.ndarray, memory: np.ndarray) -> int:
        slot = self.pushed % self.memories.shape[0]
        self.memories[slot] = _f32(memory, "memory")
        self.keys[slot] = memory_key(w_k, self.memories[slot])
        self.pushed += 1
        return slot

    def recall(self, w_q: np.ndarray, summary: np.ndarray) -> np.ndarray:
        return memory_recall(w_q, summary, self.keys, self.memories, self.filled)
