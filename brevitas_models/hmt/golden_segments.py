"""The HMT path of the bit-true golden model: a long prompt as segments through the quantized backbone
(:class:`~brevitas_models.golden.GoldenModel`, integers bit-exact) with the fp32 recall of
:mod:`.golden_recall`, exactly as the generated project runs it.

Segment layout (``B = L - 2 - k`` block tokens, ``j`` summary tokens; ``n_seg = ceil(len / B)``
segments, the last block may be shorter). Input rows are token ids, or vector rows selected by a
negative id: ``ROW_SUMMARY = -1`` is T, ``ROW_MEMORY = -2`` is P_n (:func:`segment_layouts`; the
C++ twin is ``layers/flexllm_hmt_host.h``)::

    summary (n >= 1):  [T, block_n[:j], T]
    main:              [P_n, block_{n-1}[-k:] (n >= 1), block_n, P_n (not on the last segment)]

Per segment n, every pass from position 0 with an empty KV cache (the passes overwrite it):

1. n >= 1: summary pass; ``S = u`` = final-RMSNorm output of the last position (the hardware state);
   ``P_n = recall(W_q', S)`` over the filled slots of the ring (``golden_recall.memory_recall``), and
   if the image carries W_p (a rotated backbone, a recall scale) ``P_n = gemv(W_p, P_n)``; with
   ``recall_residual`` ``P_n = P0_hw + P_n`` (fp32 add); n = 0: ``P_0 = P0_hw``;
2. main pass; not the last segment: ``M_n = u`` of the trailing P_n position goes into slot n mod N
   with its key ``gemv(W_k', M_n)`` (``GoldenMemoryCache.push``);
3. the last segment's main pass leaves the KV cache decode continues from (positions
   ``0 .. len(main) - 1``) and the logits of its last position.

Parameters: :class:`.hardware.HardwareHMTParams` (the fp32 image the project stores).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from ..fp32 import rmsnorm
from .golden_recall import GoldenMemoryCache, gemv
from .hardware import HardwareHMTParams

ROW_SUMMARY = -1
ROW_MEMORY = -2


@dataclass(frozen=True)
class SegmentLayout:
    summary: Optional[List[int]]          # None on segment 0 (no recall)
    main: List[int]
    push: bool                            # the trailing P_n's state becomes memory n


def segment_layouts(n_prompt: int, block: int, summary_tokens: int, sensory_tokens: int,
                    prompt: Optional[List[int]] = None) -> List[SegmentLayout]:
    """The input rows of every segment of a prompt of ``n_prompt`` tokens (ids of ``prompt`` if given,
    else positions 0..n_prompt-1 as stand-ins)."""
    if n_prompt < 1:
        raise ValueError("the prompt is empty")
    ids = list(prompt) if prompt is not None else list(range(n_prompt))
    blocks = [ids[s:s + block] for s in range(0, n_prompt, block)]
    out = []
    for n, blk in enumerate(blocks):
        last = n == len(blocks) - 1
        summary = None if n == 0 else [ROW_SUMMARY] + blk[:summary_tokens] + [ROW_SUMMARY]
        sensory = blocks[n - 1][-sensory_tokens:] if n and sensory_tokens else []
        main = [ROW_MEMORY] + sensory + blk + ([] if last else [ROW_MEMORY])
        out.append(SegmentLayout(summary, main, not last))
    return out


@dataclass
class SegmentRecord:
    summary_state: Optional[np.ndarray]   # S_n (hardware state), None on segment 0
    memory_row: np.ndarray                # P_n as the input row
    memory: Optional[np.ndarray]          # M_n pushed (None on the last segment)
    key: Optional[np.ndarray]             # its key gemv(W_k', M_n)
    slot: Optional[int]


@dataclass
class HMTPrefill:
    logits: np.ndarray                    # [vocab] of the last position
    kv: object                            # KVCache of the last main pass
    position: int                         # decode starts here (= len of the last main pass)
    segments: List[SegmentRecord] = field(default_factory=list)
    cache: Optional[GoldenMemoryCache] = None


def backbone_pass(golden, rows: List[int], vectors: np.ndarray, head: bool):
    """One pass of the golden backbone over input rows from position 0 with an empty KV cache: ids >= 0
    are embedding rows, id -1 - r is ``vectors[r]``. Returns (state u of the last position [d],
    logits of the last position [vocab] or None, KVCache)."""
    ids = np.asarray(rows, dtype=np.int64)
    if ids.max() >= golden.vocab_size or ids.min() < -vectors.shape[0]:
        raise ValueError(f"input rows outside [-{vectors.shape[0]}, {golden.vocab_size})")
    if ids.size > golden.max_positions:
        raise ValueError(f"a pass of {ids.size} positions exceeds the RoPE table ({golden.max_positions})")
    h = np.where((ids >= 0)[:, None], golden.embed[np.maximum(ids, 0)], vectors[np.maximum(-1 - ids, 0)])
    h = np.ascontiguousarray(h, dtype=np.float32)
    kv = golden.empty_cache()
    new_k, new_v = [], []
    for i in range(golden.num_layers):
        h, k_int, v_int = golden.decoder_layer(i, h, 0, kv.k[i], kv.v[i], None)
        new_k.append(k_int)
        new_v.append(v_int)
    state = rmsnorm(h[-1:], golden.final_norm, golden.eps)[0]
    logits = golden.head_logits(h[-1:], None)[0] if head else None
    return state, logits, kv.appended(new_k, new_v)


class GoldenHMT:
    """The golden model's HMT prefill of a long prompt (see the module docstring)."""

    def __init__(self, golden, params: HardwareHMTParams, segment_length: int, sensory_tokens: int,
                 summary_tokens: int, memory_slots: int):
        if params.hidden_size != golden.hidden_size:
            raise ValueError(f"HMT parameters of hidden size {params.hidden_size}, the golden model "
                             f"{golden.hidden_size}")
        self.golden, self.params = golden, params
        self.segment_length, self.sensory = int(segment_length), int(sensory_tokens)
        self.block = self.segment_length - 2 - self.sensory
        self.summary, self.slots = int(summary_tokens), int(memory_slots)

    def layouts(self, prompt: List[int]) -> List[SegmentLayout]:
        return segment_layouts(len(prompt), self.block, self.summary, self.sensory, prompt)

    def prefill(self, prompt: List[int]) -> HMTPrefill:
        p = self.params
        cache = GoldenMemoryCache(self.slots, p.hidden_size)
        records = []
        result = None
        for n, lay in enumerate(self.layouts(prompt)):
            summary_state = None
            if n == 0:
                row = p.initial_row
            else:
                summary_state, _, _ = backbone_pass(self.golden, lay.summary, p.summary_row[None], head=False)
                row = cache.recall(p.w_q, summary_state)
                if p.projects_recall:
                    row = gemv(p.w_p, row)
                if p.recall_residual:
                    row = p.initial_row + row
            vectors = np.stack([p.summary_row, row])
            state, logits, kv = backbone_pass(self.golden, lay.main, vectors, head=not lay.push)
            memory = key = slot = None
            if lay.push:
                memory = state
                slot = cache.push(p.w_k, state)
                key = cache.keys[slot].copy()
            else:
                result = HMTPrefill(logits, kv, len(lay.main), records, cache)
            records.append(SegmentRecord(summary_state, row, memory, key, slot))
        return result
