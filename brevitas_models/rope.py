"""Rotary position embedding tables (rotate-half convention, as HF Llama), with Llama-3 scaling."""

from __future__ import annotations

import math

import torch

from .arch import LlamaArch


def inverse_frequencies(arch: LlamaArch) -> torch.Tensor:
    """inv_freq[i] = theta^(-2i/d), i < d/2, in float32 (as HF), then Llama-3 scaled if configured."""
    d = arch.head_dim
    inv_freq = 1.0 / (arch.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    rs = arch.rope_scaling
    if rs is None:
        return inv_freq
    low_wavelen = rs.original_max_position_embeddings / rs.low_freq_factor
    high_wavelen = rs.original_max_position_embeddings / rs.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / rs.factor, inv_freq)
    smooth = (rs.original_max_position_embeddings / wavelen - rs.low_freq_factor) / (
        rs.high_freq_factor - rs.low_freq_factor)
    smoothed = (1 - smooth) * scaled / rs.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, smoothed, scaled)


def rope_tables(arch: LlamaArch, num_positions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin tables [num_positions, head_dim] in float32 (angles computed in float32 like HF)."""
    inv_freq = inverse_frequencies(arch).to(torch.float32)
    pos = torch.arange(num_positions, dtype=torch.float32)
    freqs = pos[:, None] * inv_freq[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, H, L, D]; cos/sin [L, D]: x*cos + rotate_half(x)*sin."""
    return x * cos + rotate_half(x) * sin
