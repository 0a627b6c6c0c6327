"""Sizes and switches of HMT: the main-pass length L, the segment block, the summary and sensory lengths,
the memory slots, and the FlexLLM hardware conventions."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional

MEMORY_POINTS = ("post_norm", "pre_norm")
RECALL_SCALES = ("none", "scalar", "diagonal")


@dataclass(frozen=True)
class HMTSpec:
    """One HMT configuration.

    ``segment_length`` is L, the length of the main pass ``[P_n, k sensory, block, P_n]``: the segment
    block (new tokens per segment) is ``L - 2 - k`` in every mode, so all modes see the same segments.
    ``summary_tokens`` is j, the tokens of the block that the summary pass ``[T, block[:j], T]`` reads
    (default ``round(block / 2)``, HMT-pytorch's ``sum_fraction`` 0.5).

    Switches:

    * ``memory``: False runs no summary pass and puts no memory embedding in the main pass (then
      ``[k sensory, block]``: sensory-only, or independent segments with ``sensory_tokens == 0``).
    * ``zero_initial``: the FlexLLM testbench convention: P_0 is zeros (not the learned P_0) and the
      first segment's k sensory slots hold zero embeddings (the main pass always has L positions).
    * ``memory_point``: where S_n and M_n are read: ``post_norm`` (after the final RMSNorm, the method)
      or ``pre_norm`` (the residual stream before it).

    ``recall_scale`` (``HMT.RecallScale``, a trained field): the learned output map of the recall, applied
    to the mix before it becomes the input row P_n: ``none`` (the method: P_n = the mix), ``scalar``
    (P_n = s * mix) or ``diagonal`` (P_n = v * mix, one factor per channel); s and v start at
    ``memory.RECALL_SCALE_INIT`` (the post-norm memories have norm ~51, a token embedding ~3). Hardware
    folds it into the W_p of the parameter image (:mod:`.hardware`). ``recall_residual``
    (``HMT.RecallResidual``, a trained field): P_n = P_0 + (scaled) mix, so the row at position 0 (the
    backbone's attention sink) stays near the learned P_0 and the recall adds to it.
    """

    segment_length: int = 1024
    sensory_tokens: int = 32
    memory_slots: int = 64
    summary_tokens: Optional[int] = None
    memory: bool = True
    zero_initial: bool = False
    memory_point: str = "post_norm"
    recall_scale: str = "none"
    recall_residual: bool = False

    def __post_init__(self):
        for key, lo in (("segment_length", 3), ("sensory_tokens", 0), ("memory_slots", 1)):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"HMT.{_key(key)} must be an integer >= {lo}, got {v!r}")
        if self.block < 1:
            raise ValueError(f"HMT.SegmentLength {self.segment_length} leaves no room for a segment block: "
                             f"it must exceed 2 memory positions + HMT.SensoryTokens {self.sensory_tokens}")
        j = self.summary_tokens
        if j is not None and (not isinstance(j, int) or isinstance(j, bool) or not 1 <= j <= self.block):
            raise ValueError(f"HMT.SummaryTokens must be an integer in [1, {self.block}] (the segment block "
                             f"L - 2 - k), got {j!r}")
        if self.memory_point not in MEMORY_POINTS:
            raise ValueError(f"HMT memory_point must be one of {MEMORY_POINTS}, got {self.memory_point!r}")
        if self.recall_scale not in RECALL_SCALES:
            raise ValueError(f"HMT.RecallScale must be one of {RECALL_SCALES}, got {self.recall_scale!r}")
        if not isinstance(self.recall_residual, bool):
            raise ValueError(f"HMT.RecallResidual must be true or false, got {self.recall_residual!r}")

    @property
    def block(self) -> int:
        """New tokens per segment: L minus two memory positions minus the sensory tokens."""
        return self.segment_length - 2 - self.sensory_tokens

    @property
    def summary(self) -> int:
        return self.summary_tokens if self.summary_tokens is not None else max(1, round(self.block / 2))

    def replace(self, **changes) -> "HMTSpec":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def trained_fields(self) -> Dict[str, Any]:
        """The fields a trained checkpoint depends on (not the evaluation switches)."""
        return {k: getattr(self, k) for k in ("segment_length", "sensory_tokens", "memory_point",
                                                    "recall_scale", "recall_residual")} | {
            "summary_tokens": self.summary}


def _key(field: str) -> str:
    return "".join(p.capitalize() for p in field.split("_"))
