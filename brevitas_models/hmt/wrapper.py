"""The HMT wrapper: a long token sequence as segments, each with a summary pass, a memory recall and a
main pass through the unchanged backbone.

Per segment n (block ``x_n`` of ``B = L - 2 - k`` tokens, see :class:`~.spec.HMTSpec`):

1. summary (n >= 1, memory on): backbone on ``[T, emb(x_n[:j]), T]``; S_n = state at the trailing T;
2. recall: ``P_n = recall(S_n, cache)`` times the learned recall scale (if ``HMT.RecallScale``);
   segment 0 uses P_0;
3. main pass: ``[P_n, emb(last k tokens of x_{n-1}), emb(x_n), P_n]`` (no trailing P_n on the last
   segment); logits of the block positions; M_n = state at the trailing P_n goes into the cache.

Scored tokens: tokens 1..B-1 of each block, predicted from positions inside the block, so every mode
(independent, sensory, HMT) scores the same tokens from the same block. States S_n and M_n are read
after the final norm or before it (``HMTSpec.memory_point``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..model import LlamaModel, causal_mask
from .basis import BackboneBasis
from .memory import HMTParams, MemoryCache
from .spec import HMTSpec


@dataclass
class MainLayout:
    """The main-pass input of one segment: embeddings [B, len, d] (backbone basis) and where the block is."""
    embeds: torch.Tensor
    block_start: int
    block_len: int
    parts: List[str]                      # one label per position: "memory", "sensory", "block"


class HMTWrapper(nn.Module):

    def __init__(self, model: LlamaModel, spec: HMTSpec, params: Optional[HMTParams] = None,
                 final_norm_weight: Optional[torch.Tensor] = None):
        super().__init__()
        if spec.memory and params is None:
            raise ValueError("HMT with memory needs its parameters (T, P_0, W_q, W_k): train them with "
                             "`flexllm hmt-train` or give HMT.Checkpoint")
        if params is not None and params.hidden_size != model.arch.hidden_size:
            raise ValueError(f"HMT parameters have hidden size {params.hidden_size}, the model "
                             f"{model.arch.hidden_size}")
        self.model = model
        self.spec = spec
        self.params = params
        self.basis = BackboneBasis(model, final_norm_weight, reads_states=spec.memory)

    # ---- backbone on embeddings ----------------------------------------------------------------
    def backbone(self, embeds: torch.Tensor):
        """(pre-norm, post-norm) final hidden states [B, len, d] of the backbone on input embeddings,
        positions 0..len-1 (every pass starts a fresh context)."""
        m = self.model
        length = embeds.shape[1]
        cos, sin = m.rope(0, length)
        mask = causal_mask(length, 0) if length > 1 else None
        h = embeds
        for layer in m.layers:
            h, _ = layer(h, cos, sin, mask)
        return h, m.norm(h)

    def _state(self, pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
        """S_n / M_n in the float basis from the backbone's states at one position [B, d]."""
        if self.spec.memory_point == "pre_norm":
            return self.basis.from_pre_norm(pre)
        return self.basis.from_post_norm(post)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_tokens(ids)

    # ---- layouts ---------------------------------------------------------------------------------
    def summary_input(self, block_ids: torch.Tensor) -> torch.Tensor:
        """[T, emb(block[:j]), T] as backbone input [B, j + 2, d]."""
        b = block_ids.shape[0]
        t = self.basis.to_model(self.params.summary_token)[None, None, :].expand(b, 1, -1)
        return torch.cat([t, self.embed(block_ids[:, :self.spec.summary]), t], dim=1)

    def main_input(self, block_ids: torch.Tensor, memory: Optional[torch.Tensor],
                   tail_ids: Optional[torch.Tensor], trailing: bool) -> MainLayout:
        """[P, sensory, block, P] as backbone input. ``memory`` [B, d] in the float basis (None: no memory
        positions); ``tail_ids`` the previous block's last k ids ("zeros": k zero embeddings; None: none)."""
        b, n = block_ids.shape
        d = self.model.arch.hidden_size
        parts, pieces = [], []
        p = None
        if self.spec.memory:
            p = self.basis.to_model(memory)[:, None, :]
            pieces.append(p)
            parts.append("memory")
        k = self.spec.sensory_tokens
        if isinstance(tail_ids, str) and tail_ids == "zeros":
            if k:
                pieces.append(torch.zeros(b, k, d))
                parts += ["sensory"] * k
        elif tail_ids is not None and k:
            pieces.append(self.embed(tail_ids[:, -k:]))
            parts += ["sensory"] * min(k, tail_ids.shape[1])
        start = len(parts)
        pieces.append(self.embed(block_ids))
        parts += ["block"] * n
        if self.spec.memory and trailing:
            pieces.append(p)
            parts.append("memory")
        return MainLayout(torch.cat(pieces, dim=1), start, n, parts)

    # ---- segments ----------------------------------------------------------------------------------
    def segments(self, ids: torch.Tensor) -> List[torch.Tensor]:
        """Blocks [B, block] of ids [B, T]; T must be a multiple of the block."""
        blk = self.spec.block
        if ids.shape[1] % blk:
            raise ValueError(f"{ids.shape[1]} tokens are not a whole number of {blk}-token segment blocks")
        return list(ids.split(blk, dim=1))

    def run(self, ids: torch.Tensor, last_is_final: bool = True):
        """Process ids [B, T] segment by segment; returns per segment (nll_sum, scored_tokens, logits)
        with logits [B, block, vocab] of the block positions (grad flows to the HMT parameters)."""
        spec = self.spec
        blocks = self.segments(ids)
        b = ids.shape[0]
        d = self.model.arch.hidden_size
        cache = MemoryCache(spec.memory_slots, b, d) if spec.memory else None
        out = []
        tail = "zeros" if spec.zero_initial else None
        for n, block in enumerate(blocks):
            last = last_is_final and n == len(blocks) - 1
            memory = None
            if spec.memory:
                if len(cache):
                    pre, post = self.backbone(self.summary_input(block))
                    summary = self._state(pre[:, -1], post[:, -1])
                    memory = self.params.recall_output(cache.recall(summary, self.params.w_q))
                elif spec.zero_initial:
                    memory = torch.zeros(b, d)
                else:
                    memory = self.params.initial_memory[None, :].expand(b, d)
            layout = self.main_input(block, memory, tail, trailing=not last)
            pre, post = self.backbone(layout.embeds)
            s, e = layout.block_start, layout.block_start + layout.block_len
            logits = self.model.lm_head(post[:, s:e])
            nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), block[:, 1:].reshape(-1),
                                  reduction="sum")
            out.append((nll, block[:, 1:].numel(), logits))
            if spec.memory and not last:
                cache.push(self._state(pre[:, -1], post[:, -1]), self.params.w_k)
            tail = block
        return out
