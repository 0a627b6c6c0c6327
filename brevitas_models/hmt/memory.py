"""HMT memory: the trained parameters (T, P_0, W_q, W_k and the optional recall scale), the recall (one
query against the cached memories, empty slots masked, fp32 softmax, no value projection; the output map
is the learned recall scale of ``HMT.RecallScale``, none by default, plus P_0 with ``HMT.RecallResidual``)
and the ring cache of the
N most recent memories with their keys precomputed once per memory (slot n mod N, as the hardware's
URAM ring buffer).

Vectors are columns as in the hardware's GEMV: ``q = W_q S``, ``k_i = W_k M_i``,
``P = sum_i softmax_i(q . k_i / sqrt(d)) M_i``. All HMT parameters live in the float model's residual
basis (see :mod:`.basis` for rotated backbones).
"""

from __future__ import annotations

import math
from typing import List, Optional

import torch
from torch import nn

from .backbone import LoRAAdapter
from .spec import RECALL_SCALES

# Start of the learned recall scale: the ratio of a token embedding's norm (~3 for SmolLM2) to a post-norm
# memory's (~51), so the recalled row starts at the input scale of the backbone.
RECALL_SCALE_INIT = 0.06


class HMTParams(nn.Module):
    """T (summary token embedding), P_0 (initial memory), W_q and W_k ([d, d], out x in), the recall scale
    (``recall_scale`` "scalar": a parameter [] ; "diagonal": [d]; "none": absent) and optionally ``adapter``:
    a LoRA adapter of the backbone trained with them (:mod:`.backbone`; merged into the float weights by
    ``hmt_backbone_weights`` before any model is built)."""

    def __init__(self, hidden_size: int, init_embedding: Optional[torch.Tensor] = None,
                 adapter: Optional[LoRAAdapter] = None, recall_scale: str = "none",
                 recall_residual: bool = False):
        super().__init__()
        if recall_scale not in RECALL_SCALES:
            raise ValueError(f"HMT.RecallScale must be one of {RECALL_SCALES}, got {recall_scale!r}")
        d = hidden_size
        start = torch.zeros(d) if init_embedding is None else init_embedding.detach().float().clone()
        self.summary_token = nn.Parameter(start.clone())
        self.initial_memory = nn.Parameter(start.clone())
        # Identity start: the first recall weighs memories by their similarity to the summary.
        self.w_q = nn.Parameter(torch.eye(d))
        self.w_k = nn.Parameter(torch.eye(d))
        self.recall_scale_kind = recall_scale
        self.recall_residual = bool(recall_residual)
        shape = {"none": None, "scalar": (), "diagonal": (d,)}[recall_scale]
        self.recall_scale = None if shape is None else nn.Parameter(torch.full(shape, RECALL_SCALE_INIT))
        self.adapter = adapter

    def memory_parameters(self):
        """T, P_0, W_q, W_k and the recall scale if any (not the adapter)."""
        extra = [] if self.recall_scale is None else [self.recall_scale]
        return [self.summary_token, self.initial_memory, self.w_q, self.w_k] + extra

    def recall_output(self, mix: torch.Tensor) -> torch.Tensor:
        """The recalled row P_n from the mix over the memories [B, d]: the mix times the recall scale, plus
        P_0 with ``recall_residual``."""
        row = mix if self.recall_scale is None else mix * self.recall_scale
        return row + self.initial_memory if self.recall_residual else row

    def recall_scale_vector(self) -> Optional[torch.Tensor]:
        """The recall scale as one factor per channel [d] (None without a recall scale)."""
        if self.recall_scale is None:
            return None
        return self.recall_scale.detach().expand(self.hidden_size).clone()

    @property
    def hidden_size(self) -> int:
        return self.w_q.shape[0]


def recall(summary: torch.Tensor, keys: torch.Tensor, memories: torch.Tensor, filled: torch.Tensor,
           w_q: torch.Tensor) -> torch.Tensor:
    """P = softmax((W_q S) K^T / sqrt(d), empty slots masked) M, in fp32.

    summary [B, d]; keys, memories [B, N, d] (keys = W_k M, row i of slot i); filled [N] bool.
    """
    if not bool(filled.any()):
        raise ValueError("recall needs at least one filled memory slot")
    d = w_q.shape[0]
    q = summary.float() @ w_q.t()                                    # [B, d] = (W_q S)^T
    scores = torch.einsum("bd,bnd->bn", q, keys.float()) / math.sqrt(d)
    scores = scores.masked_fill(~filled[None, :], float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return torch.einsum("bn,bnd->bd", weights, memories.float())


class MemoryCache:
    """The N most recent memories and their keys in a ring of N slots (memory n goes to slot n mod N).

    Slots are kept as a list (autograd flows through a memory into later recalls during training).
    """

    def __init__(self, slots: int, batch: int, hidden_size: int):
        self.slots = slots
        self.batch, self.hidden_size = batch, hidden_size
        self.memories: List[Optional[torch.Tensor]] = [None] * slots
        self.keys: List[Optional[torch.Tensor]] = [None] * slots
        self.pushed = 0

    def push(self, memory: torch.Tensor, w_k: torch.Tensor) -> int:
        """Store memory [B, d] and its key W_k M in slot (pushed mod N); returns the slot."""
        if tuple(memory.shape) != (self.batch, self.hidden_size):
            raise ValueError(f"memory shape {tuple(memory.shape)} is not [{self.batch}, {self.hidden_size}]")
        slot = self.pushed % self.slots
        self.memories[slot] = memory
        self.keys[slot] = memory.float() @ w_k.t()
        self.pushed += 1
        return slot

    def __len__(self) -> int:
        return min(self.pushed, self.slots)

    def filled(self) -> torch.Tensor:
        return torch.tensor([m is not None for m in self.memories])

    def stacked(self):
        """(keys [B, N, d], memories [B, N, d], filled [N]); empty slots hold zeros."""
        zero = torch.zeros(self.batch, self.hidden_size)
        keys = torch.stack([zero if k is None else k for k in self.keys], dim=1)
        mems = torch.stack([zero if m is None else m.float() for m in self.memories], dim=1)
        return keys, mems, self.filled()

    def recall(self, summary: torch.Tensor, w_q: torch.Tensor) -> torch.Tensor:
        keys, mems, filled = self.stacked()
        return recall(summary, keys, mems, filled, w_q)
