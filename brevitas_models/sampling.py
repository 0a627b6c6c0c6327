"""Next-token selection of the FlexLLM kernels, bit-exact with ``layers/flexllm_sampling.h``.

Greedy: ``argmax`` (lowest index on ties, ``numpy.argmax``).

Top-k sampling (deterministic given the PRNG state), fp32 throughout:

1. keep the ``k' = min(k, n)`` largest logits ordered by (logit descending, index ascending);
2. ``w[i] = exp32((l[i] - l[0]) * inv_temperature)`` for ``i < k'`` (``exp32``: the contract's binary32
   exponential, :func:`brevitas_models.fp32.exp32`);
3. ``c[i] = c[i-1] + w[i]`` with ``c[-1] = +0`` (sequential fp32 adds);
4. advance the xorshift32 state (Marsaglia: ``x ^= x << 13; x ^= x >> 17; x ^= x << 5`` on 32
   bits, state != 0), ``u = f32(state >> 8) * 2^-24`` in [0, 1) (exact), ``target = u * c[k'-1]``;
5. pick the first ``i`` with ``c[i] > target`` (``k' - 1`` if none, a rounding corner case) and
   return its vocabulary index.

Logits must be finite or ``-inf`` (no NaN). ``inv_temperature`` is a float32 (``1 / T``). The HLS
``sample_top_k<MAX_V, MAX_K>`` also clamps ``k`` to its compile-time ``MAX_K``.
"""

from __future__ import annotations

import numpy as np

from .fp32 import exp32

__all__ = ["greedy", "xorshift32", "uniform_from_state", "top_k", "sample_top_k"]

_MASK32 = 0xFFFFFFFF
_TWO_M24 = np.float32(2.0 ** -24)


def greedy(logits: np.ndarray) -> int:
    """Index of the largest logit, lowest index on ties."""
    return int(np.argmax(np.asarray(logits, dtype=np.float32)))


def xorshift32(state: int) -> int:
    """One step of Marsaglia's xorshift32 (13, 17, 5); ``state`` must be a nonzero uint32."""
    x = int(state) & _MASK32
    if x == 0:
        raise ValueError("xorshift32 state must be nonzero")
    x ^= (x << 13) & _MASK32
    x ^= x >> 17
    x ^= (x << 5) & _MASK32
    return x


def uniform_from_state(state: int) -> np.float32:
    """The top 24 bits of ``state`` as a float32 in [0, 1): ``f32(state >> 8) * 2^-24`` (exact)."""
    return np.float32(np.float32((int(state) & _MASK32) >> 8) * _TWO_M24)


def top_k(logits: np.ndarray, k: int):
    """``(indices, values)`` of the ``min(k, n)`` largest logits, value descending, index ascending."""
    lg = np.asarray(logits, dtype=np.float32).reshape(-1)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    order = np.argsort(-lg, kind="stable")[: min(k, lg.shape[0])]
    return order, lg[order]


def sample_top_k(logits: np.ndarray, k: int, inv_temperature, state: int):
    """Top-k sample: returns ``(token index, new PRNG state)``."""
    idx, val = top_k(logits, k)
    w = exp32((val - val[0]) * np.float32(inv_temperature))
    c = np.cumsum(w, dtype=np.float32)          # sequential fp32 adds (add.accumulate)
    state = xorshift32(state)
    target = np.float32(uniform_from_state(state) * c[-1])
    hit = np.nonzero(c > target)[0]
    i = int(hit[0]) if hit.size else idx.shape[0] - 1
    return int(idx[i]), state
