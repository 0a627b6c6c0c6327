"""Cost of layers/flexllm_attention.h (+ the KV reader / writer tasks of flexllm_kv_cache.h and the softmax
of flexllm_softmax.h it calls): the attention unit of a kernel.

Per kv head: quantize the new rows, keep them on chip and send them to the KV writer tasks (2 x row words
per token), load the cached rows from the KV reader tasks (KV_LANES keys per step: ceil(position / KV_LANES)
x row words steps, each K / V port streaming its share at the HBM rate of its channel), then per query
token and block of HEAD_LANES heads: SCORES (ceil(n_keys / KEY_LANES) steps), the exp + sum pass of each
head lane (SOFTMAX_LANES per cycle), PV with the normalisation fused (ceil(n_keys / KEY_LANES) steps) and
the output row. The KV reader / writer tasks run beside the core (DATAFLOW); their loops are counted here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .reduce import REDUCE_PARTIALS, ceil_div, tree_steps
from .resources import (CONTROL, EXP32, FADD, FCMP, FDIV, FMUL, INT8_MUL, INT8_PACK2, ITOF, ROUND, Resources, fifo,
                        memory)

KV_FILL = 80            # first-word latency of a KV burst (HBM)
LOOP_FILL = 10          # pipeline depth of a short element loop
TREE_LEVELS = 7         # the sum_partials tree: 128 -> 1 in 7 pipelined levels
CALL_FILL = 40          # DATAFLOW start / done of the attention pipeline


SOFTMAX_LANES = 16      # CFG::softmax_lanes of flexllm_attention.h: lanes of the head-vector loops


@dataclass(frozen=True)
class AttentionUnit:
    max_ctx: int
    max_new: int
    head_dim: int
    heads: int
    kv_heads: int
    head_lanes: int
    key_lanes: int
    kv_lanes: int = 1

    @property
    def row_words(self) -> int:
        return ceil_div(self.head_dim, 64)

    @property
    def softmax_lanes(self) -> int:
        return SOFTMAX_LANES

    def _items(self, n_tokens: int, position: int):
        """The query items of one kv head in pipeline order: (n_keys, active head lanes, first of its token)."""
        group = self.heads // self.kv_heads
        for t in range(n_tokens):
            for hb in range(ceil_div(group, self.head_lanes)):
                yield position + t + 1, min(self.head_lanes, group - hb * self.head_lanes), hb == 0

    def iterations(self, n_tokens: int, position: int) -> Counter:
        hd, rw, kl, sl = self.head_dim, self.row_words, self.key_lanes, self.softmax_lanes
        vec = ceil_div(hd, sl)            # head-vector loops: softmax_lanes elements per cycle
        one = Counter()                   # one kv head (all kv heads alike)
        one["kv_read_port_rows"] += 2 * position * rw          # reader tasks: every cached K and V row once
        one["kv_load"] += ceil_div(position, self.kv_lanes) * rw
        one["rope_load"] += n_tokens * vec                      # the KV stage (forwarded to the scores stage)
        one["attention_head_copy"] += n_tokens * 2 * vec
        one["attention_head_quant"] += n_tokens * 2 * vec
        one["kv_send_row"] += n_tokens * 2 * rw
        one["kv_write_port_rows"] += n_tokens * 2 * rw           # writer tasks
        for n_keys, active, _ in self._items(n_tokens, position):
            steps = ceil_div(n_keys, kl)
            one["attention_head_copy"] += active * vec
            one["attention_head_quant"] += active * vec
            one["attention_scores"] += steps
            one["softmax_exp"] += steps
            one["reduce_tree_steps"] += self.head_lanes * tree_steps(16)   # every lane's tree, one pass
            one["attention_pv"] += steps
            one["attention_write_out"] += active * vec
        return Counter({k: v * self.kv_heads for k, v in one.items()})

    def _stage_cycles(self, n_keys: int, active: int, first: bool):
        """(scores, softmax, PV) stage cycles of one item: their loops and pipeline fills."""
        vec = ceil_div(self.head_dim, self.softmax_lanes)
        steps = ceil_div(n_keys, self.key_lanes)
        a = steps + LOOP_FILL + active * 2 * (vec + LOOP_FILL) + ((vec + LOOP_FILL) if first else 0)
        b = steps + LOOP_FILL + self.head_lanes * tree_steps(16) + TREE_LEVELS * LOOP_FILL
        c = steps + LOOP_FILL + active * (vec + LOOP_FILL)
        return a, b, c

    def cycles(self, n_tokens: int, position: int, words_per_cycle: float) -> float:
        """One call: the four stages of attention_pipeline run concurrently. The KV stage takes, per kv head,
        the KV load (at the HBM rate of the K / V ports: one word per step at most ``words_per_cycle``, plus
        a burst's first-word latency) and the new rows; the scores stage starts a kv head's first item when
        the KV stage has delivered that kv head (its keys arrive as it goes); each later stage starts an item
        when its input item is complete and its own previous item is done (the FIFOs hold whole items). The
        reader and writer tasks overlap the core (their own loops are not on its path)."""
        rw, vec = self.row_words, ceil_div(self.head_dim, self.softmax_lanes)
        load = ceil_div(position, self.kv_lanes) * rw / min(1.0, words_per_cycle) + (KV_FILL if position else 0)
        new_rows = n_tokens * (vec + 2 * 2 * vec + 2 * rw + 4 * LOOP_FILL)
        l_end = a_end = b_end = c_end = 0.0
        for _ in range(self.kv_heads):
            l_end += LOOP_FILL + load + new_rows
            first_of_head = True
            for n_keys, active, first in self._items(n_tokens, position):
                a, b, c = self._stage_cycles(n_keys, active, first)
                a_end = max(a_end + a, l_end + LOOP_FILL) if first_of_head else a_end + a
                first_of_head = False
                b_end = max(b_end, a_end) + b
                c_end = max(c_end, b_end) + c
        return c_end + CALL_FILL

    def resources(self) -> dict:
        hl, kl, hd, sl = self.head_lanes, self.key_lanes, self.head_dim, self.softmax_lanes
        products = hl * kl * hd
        # the 8-bit products: head lanes in pairs, two per DSP48E2 (int8_pack2_mul), an odd lane alone
        multipliers = INT8_PACK2 * ((hl // 2) * kl * hd) + INT8_MUL * ((hl % 2) * kl * hd)
        adder = Resources(lut=18, ff=18)                     # one add of the int dot-product trees
        scores = multipliers + adder * products + (ITOF + FMUL + FCMP) * (hl * kl) + CONTROL
        # PV: the products, the accumulators and the fused normalisation (one divide + quantize per head lane
        # and key lane)
        pv = (multipliers + adder * products + Resources(lut=32, ff=32) * (hl * hd) + (FDIV + FMUL + ROUND) * (hl * kl)
              + CONTROL)
        # the softmax stage: HEAD_LANES x KEY_LANES exponentials and partial-sum adders, the 128 partials of
        # each head lane (32 banks), one 16-lane tree
        softmax = ((FADD + EXP32) * (hl * kl) + FADD * 16 + memory(REDUCE_PARTIALS // 32, 32, banks=32 * hl)
                   + CONTROL * 3)
        quant_head = (FMUL * 3 + FADD + ROUND) * sl + CONTROL * 2
        out = (ITOF + FMUL) * sl + CONTROL
        # K and V rows of one kv head (the scores and PV stages), and their lane FIFOs (a whole kv head)
        kv_buf = memory(ceil_div(self.max_ctx, kl), 512 * self.row_words, banks=2 * kl, impl="uram")
        lane_rows = ceil_div(self.max_ctx, kl) + 1
        kv_fifos = memory(lane_rows, 512 * self.row_words, banks=2 * kl, impl="uram")
        # the pipeline's FIFOs: scores and exponentials, two whole items of HL x KL floats per key step
        steps = 2 * ceil_div(self.max_ctx, kl)
        fifos = (fifo(steps, 32 * hl * kl) * 2 + fifo(4, 32 * hl) * 2 + fifo(2 * self.max_new, 64 * hd) + kv_fifos
                 + CONTROL * 2)
        return {"attention_scores": scores, "attention_pv": pv, "attention_softmax": softmax,
                "attention_quant_out": quant_head + out, "attention_buffers": kv_buf + fifos}
