"""Llama-family architecture description and the shape presets.

An architecture is plain data: every model, loader, exporter and (later) hardware generator reads
its sizes from a :class:`LlamaArch`, never from constants.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional


@dataclass(frozen=True)
class RopeScaling:
    """Llama-3 style frequency-dependent RoPE scaling (``rope_type: llama3`` in HF configs)."""

    factor: float = 32.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclass(frozen=True)
class LlamaArch:
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    head_dim: Optional[int] = None
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_embeddings: bool = True
    rope_scaling: Optional[RopeScaling] = None
    max_position_embeddings: int = 2048
    seed: int = 0

    def __post_init__(self):
        if self.head_dim is None:
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
        for name in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size",
                     "vocab_size", "head_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"Model.Architecture.{name} must be a positive integer, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"Model.Architecture.num_heads ({self.num_heads}) must be a multiple of "
                f"num_kv_heads ({self.num_kv_heads})")
        if self.head_dim % 2:
            raise ValueError(f"Model.Architecture.head_dim must be even for RoPE, got {self.head_dim}")
        if self.rms_norm_eps <= 0:
            raise ValueError(f"Model.Architecture.rms_norm_eps must be > 0, got {self.rms_norm_eps}")
        if self.rope_theta <= 0:
            raise ValueError(f"Model.Architecture.rope_theta must be > 0, got {self.rope_theta}")

    @property
    def gqa_group(self) -> int:
        return self.num_heads // self.num_kv_heads

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any], where: str = "Model.Architecture") -> "LlamaArch":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
        data = dict(data)
        if data.get("rope_scaling") is not None and not isinstance(data["rope_scaling"], RopeScaling):
            rs = dict(data["rope_scaling"])
            rs_names = {f.name for f in dataclasses.fields(RopeScaling)}
            bad = sorted(set(rs) - rs_names)
            if bad:
                raise ValueError(f"{where}.rope_scaling: unknown key(s) {bad}; allowed: {sorted(rs_names)}")
            data["rope_scaling"] = RopeScaling(**rs)
        missing = [n for n in ("hidden_size", "num_layers", "num_heads", "num_kv_heads",
                               "intermediate_size", "vocab_size") if n not in data]
        if missing:
            raise ValueError(f"{where}: missing required key(s) {missing}")
        return cls(**data)


PRESETS: Dict[str, LlamaArch] = {
    # Tiny but structurally faithful: GQA group 3 (as SmolLM2), head_dim 16, hidden 96 = 12 * 8 and
    # FFN 160 = 20 * 8 exercise the non-power-of-two Hadamard constructions.
    "tiny": LlamaArch(hidden_size=96, num_layers=2, num_heads=6, num_kv_heads=2, intermediate_size=160,
                      vocab_size=512, head_dim=16, rope_theta=10000.0, rms_norm_eps=1e-5,
                      tie_embeddings=True, max_position_embeddings=256, seed=0),
    "smollm2-135m": LlamaArch(hidden_size=576, num_layers=30, num_heads=9, num_kv_heads=3,
                              intermediate_size=1536, vocab_size=49152, head_dim=64,
                              rope_theta=100000.0, rms_norm_eps=1e-5, tie_embeddings=True,
                              max_position_embeddings=8192, seed=0),
    "llama-3.2-1b": LlamaArch(hidden_size=2048, num_layers=16, num_heads=32, num_kv_heads=8,
                              intermediate_size=8192, vocab_size=128256, head_dim=64,
                              rope_theta=500000.0, rms_norm_eps=1e-5, tie_embeddings=True,
                              rope_scaling=RopeScaling(32.0, 1.0, 4.0, 8192),
                              max_position_embeddings=131072, seed=0),
}


def preset(name: str) -> LlamaArch:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown architecture preset {name!r}; known: {sorted(PRESETS)}") from None
