"""Cost of layers/flexllm_memory_recall.h: the HMT memory recall on one fp32 GEMV unit (LANES products
per cycle), and the ring buffer of memories and keys."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .reduce import ceil_div, minmax_resources, partials_resources, tree_steps
from .resources import CONTROL, EXP32, FADD, FDIV, FMUL, Resources, memory

LOOP_FILL = 12


@dataclass(frozen=True)
class MemoryRecallUnit:
    hidden: int                   # d
    slots: int                    # N, memories in the ring buffer
    lanes: int                    # LANES: fp32 products per cycle (divides 128, <= 16)

    def __post_init__(self):
        if self.lanes < 1 or self.lanes > 16 or 128 % self.lanes:
            raise ValueError(f"memory recall lanes must divide 128 and be <= 16, got {self.lanes}")

    def _gemv(self, rows: int) -> Counter:
        return Counter({"memory_dot": rows * ceil_div(self.hidden, self.lanes),
                        "reduce_tree_steps": rows * tree_steps(self.lanes)})

    def key_iterations(self) -> Counter:
        """memory_key: one d x d GEMV."""
        return self._gemv(self.hidden)

    def recall_iterations(self, filled: int) -> Counter:
        """memory_recall with ``filled`` slots: query GEMV, one dot per slot, softmax, mix."""
        if not 1 <= filled <= self.slots:
            raise ValueError(f"recall needs 1..{self.slots} filled slots, got {filled}")
        c = self._gemv(self.hidden) + self._gemv(filled)
        c += Counter({"row_min_max": filled, "softmax_exp": filled, "softmax_normalize": filled,
                      "memory_mix": filled * ceil_div(self.hidden, self.lanes)})
        c["reduce_tree_steps"] += tree_steps(1)
        return c

    @staticmethod
    def _starts_per_dot() -> int:
        return 1 + 7                  # the MEMORY_DOT loop and the 7 levels of the partial-sum tree

    def key_cycles(self) -> int:
        return sum(self.key_iterations().values()) + LOOP_FILL * self.hidden * self._starts_per_dot()

    def recall_cycles(self, filled: int) -> int:
        """Loop iterations plus a pipeline fill per loop start (dots, trees, softmax passes, mix rows)."""
        starts = (self.hidden + filled) * self._starts_per_dot() + (3 + 7) + filled
        return sum(self.recall_iterations(filled).values()) + LOOP_FILL * starts

    def segment_cycles(self, filled: int) -> int:
        """One segment of HMT: the recall over ``filled`` memories and the key of the new memory."""
        return self.recall_cycles(filled) + self.key_cycles()

    def ring_iterations(self, filled: int, push: bool, residual: bool = False) -> Counter:
        """The HMT prefill kernel's data movement in one call (II = 1, one fp32 per cycle; the ring is one
        m_axi bundle, so each loop is one sequential burst): the T row, then with ``filled`` > 0 the filled
        memories and then their keys from HBM into URAM (and with ``residual``, HMT.RecallResidual, the
        P_0 row added to the recalled row), else the P_0 row; with ``push`` the new memory and then its key
        back."""
        c = Counter({"hmt_row_load": self.hidden * (2 if residual or not filled else 1),
                     "hmt_ring_load": 2 * filled * self.hidden})
        if push:
            c["hmt_ring_store"] = 2 * self.hidden
        return +c

    def ring_cycles(self, filled: int, push: bool = True, residual: bool = False) -> int:
        """:meth:`ring_iterations` plus one pipeline fill per loop."""
        loops = 2 + (2 + int(residual) if filled else 0) + (2 if push else 0)
        return sum(self.ring_iterations(filled, push, residual).values()) + LOOP_FILL * loops

    def weight_bytes_per_segment(self) -> int:
        """W_q and W_k (fp32, streamed from HBM) read once each per segment."""
        return 2 * self.hidden * self.hidden * 4

    def resources(self) -> Resources:
        L = self.lanes
        ring = memory(ceil_div(self.slots * self.hidden, L), 32, banks=L, impl="uram") * 2   # memories + keys
        return (FMUL * L + partials_resources(L) + FMUL + minmax_resources(1) + EXP32 + FADD + FDIV
                + (FMUL + FADD) * L + ring + CONTROL * 4)


def hmt_long_prompt(prefill, segment_length: int, block: int, summary_tokens: int, hidden: int, slots: int,
                    lanes: int, segments=(4, 16, 64)) -> list:
    """Modeled prefill seconds of a prompt of ``s`` whole segment blocks (``s`` in ``segments``) with HMT
    (per segment: the main pass of L rows, from the second on the summary pass of j + 2 rows and the recall
    plus the key on the fp32 GEMV unit) against full attention over the whole prompt in one prefill.
    ``prefill``: the prefill stage's cost model (``prefill_cycles``; it prices the LM head in every pass,
    which the summary pass does not need: the HMT figures are upper bounds). The KV cache HMT needs is
    L positions whatever the prompt length."""
    f = prefill.clock_mhz * 1e6
    summary_s = sum(prefill.prefill_cycles(summary_tokens + 2).values()) / f
    main_s = sum(prefill.prefill_cycles(segment_length).values()) / f
    unit = MemoryRecallUnit(hidden, slots, lanes)
    rows = []
    for s in segments:
        recall_s = sum(unit.segment_cycles(min(n, slots)) + unit.ring_cycles(min(n, slots)) for n in range(1, s)) / f
        hmt_s = s * main_s + (s - 1) * summary_s + recall_s
        tokens = s * block
        full_s = sum(prefill.prefill_cycles(tokens).values()) / f
        rows.append({"segments": s, "prompt_tokens": tokens, "hmt_s": round(hmt_s, 4),
                     "hmt_recall_s": round(recall_s, 6), "full_attention_s": round(full_s, 4),
                     "speedup": round(full_s / hmt_s, 2), "kv_positions_hmt": segment_length,
                     "kv_positions_full": tokens})
    return rows
