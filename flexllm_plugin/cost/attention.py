"""Cost of layers/flexllm_attention.h (+ the KV-cache moves of flexllm_kv_cache.h and the softmax of
flexllm_softmax.h it calls): the attention unit of a kernel.

Per kv head: burst-read the cached K and V rows (512-bit words), quantize and append the new rows, then per
query token and block of HEAD_LANES heads: SCORES (ceil(n_keys / KEY_LANES) steps), the softmax of each head
lane (SOFTMAX_LANES per cycle), PV (ceil(n_keys / KEY_LANES) steps) and the output row.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from math import gcd

from .reduce import ceil_div, partials_resources, tree_steps
from .resources import (CONTROL, EXP32, FADD, FCMP, FDIV, FMUL, INT8_MUL, ITOF, ROUND, Resources, memory)

KV_FILL = 80            # first-word latency of a KV burst (HBM)
LOOP_FILL = 10          # pipeline depth of a short element loop


def softmax_lanes(key_lanes: int) -> int:
    """CFG::softmax_lanes of flexllm_attention.h (16 whatever the key lanes)."""
    return 16


@dataclass(frozen=True)
class AttentionUnit:
    max_ctx: int
    max_new: int
    head_dim: int
    heads: int
    kv_heads: int
    head_lanes: int
    key_lanes: int

    @property
    def row_words(self) -> int:
        return ceil_div(self.head_dim, 64)

    @property
    def softmax_lanes(self) -> int:
        return softmax_lanes(self.key_lanes)

    def iterations(self, n_tokens: int, position: int) -> Counter:
        hd, rw, kl, sl = self.head_dim, self.row_words, self.key_lanes, self.softmax_lanes
        vec = ceil_div(hd, sl)            # head-vector loops: softmax_lanes elements per cycle
        group = self.heads // self.kv_heads
        c = Counter()
        for _ in range(self.kv_heads):
            c["kv_read_rows_pair"] += position * rw
            c["rope_load"] += n_tokens * vec
            c["attention_head_copy"] += n_tokens * 2 * vec
            c["attention_head_quant"] += n_tokens * 2 * vec
            c["kv_write_row"] += n_tokens * 2 * rw
            for t in range(n_tokens):
                n_keys = position + t + 1
                c["rope_load"] += vec
                for hb in range(ceil_div(group, self.head_lanes)):
                    active = min(self.head_lanes, group - hb * self.head_lanes)
                    c["attention_head_copy"] += active * vec
                    c["attention_head_quant"] += active * vec
                    c["attention_scores"] += ceil_div(n_keys, kl)
                    c["softmax_exp"] += active * ceil_div(n_keys, sl)
                    c["reduce_tree_steps"] += active * tree_steps(sl)
                    c["softmax_normalize_quant"] += active * ceil_div(n_keys, sl)
                    c["attention_pv"] += ceil_div(n_keys, kl)
                    c["attention_write_out"] += active * vec
        return c

    def cycles(self, n_tokens: int, position: int, words_per_cycle: float) -> float:
        """Sequential loops of one call; the K/V bursts run at the HBM rate of their port."""
        it = self.iterations(n_tokens, position)
        kv = it["kv_read_rows_pair"] / min(1.0, words_per_cycle) + self.kv_heads * KV_FILL
        loops = sum(v for k, v in it.items() if k != "kv_read_rows_pair")
        group = self.heads // self.kv_heads
        invocations = self.kv_heads * (1 + n_tokens * (5 + ceil_div(group, self.head_lanes) * (4 + 3 * self.head_lanes)))
        return kv + loops + invocations * LOOP_FILL

    def resources(self) -> dict:
        hl, kl, hd, sl = self.head_lanes, self.key_lanes, self.head_dim, self.softmax_lanes
        products = hl * kl * hd
        adder = Resources(lut=18, ff=18)                     # one add of the int dot-product trees
        scores = (INT8_MUL + adder) * products + (ITOF + FMUL + FCMP) * (hl * kl) + CONTROL
        pv = (INT8_MUL + adder) * products + Resources(lut=32, ff=32) * (hl * hd) + CONTROL
        softmax = ((FADD + EXP32) * sl + partials_resources(sl) + (FDIV + FMUL + ROUND) * sl + CONTROL * 3)
        quant_head = (FMUL * 3 + FADD + ROUND) * sl + CONTROL * 2
        out = (ITOF + FMUL) * sl + CONTROL
        kv_buf = memory(ceil_div(self.max_ctx, kl), 512 * self.row_words, banks=2 * kl, impl="uram")
        sb = kl * 16 // gcd(kl, 16)
        score_buf = memory(ceil_div(self.max_ctx, sb), 32, banks=hl * sb, impl="bram")
        p_buf = memory(ceil_div(self.max_ctx, sb), 8, banks=hl * sb)
        return {"attention_scores": scores, "attention_pv": pv, "attention_softmax": softmax,
                "attention_quant_out": quant_head + out, "attention_buffers": kv_buf + score_buf + p_buf}
