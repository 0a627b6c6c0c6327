"""The residual basis of a backbone seen from HMT.

HMT parameters and memories live in the float model's basis: input embeddings as ``embed_tokens`` rows,
S_n / M_n as the float model's final hidden states. A rotated backbone (quantization presets with
``rotation: hadamard``) computes in ``x R1`` with the final-norm weight gamma folded into the LM head,
so at the HMT boundary: embeddings in ``e R1``; post-norm states out ``gamma * (u R1^T)``; pre-norm
states out ``x R1^T``. Unrotated backbones need no change.
"""

from __future__ import annotations

from typing import Optional

import torch


class BackboneBasis:

    def __init__(self, model, final_norm_weight: Optional[torch.Tensor] = None, reads_states: bool = True):
        """``reads_states``: S_n / M_n are read (memory on), so a rotated backbone needs gamma."""
        self.r1 = None
        self.gamma = None
        if model.rotated:
            from ..rotation import Rotation
            if model.spec.rotation == "learned":
                raise ValueError("HMT on a backbone with learned rotations (Quantization.Rotation: learned) is "
                                 "not supported: its basis needs the learned R1, which the model does not keep")
            d = model.arch.hidden_size
            rot = Rotation.residual(d, model.arch.seed)
            self.r1 = rot.right(torch.eye(d, dtype=torch.float64)).float()
            if final_norm_weight is None and not reads_states:
                return
            if final_norm_weight is None:
                raise ValueError("a rotated backbone needs the float model's final-norm weight "
                                 "(model.norm.weight of the checkpoint) to read HMT memories")
            if tuple(final_norm_weight.shape) != (d,):
                raise ValueError(f"final-norm weight shape {tuple(final_norm_weight.shape)} is not [{d}]")
            self.gamma = final_norm_weight.detach().float()

    def to_model(self, e: torch.Tensor) -> torch.Tensor:
        """An embedding of the float basis as the backbone's input."""
        return e if self.r1 is None else e @ self.r1

    def from_post_norm(self, u: torch.Tensor) -> torch.Tensor:
        return u if self.r1 is None else (u @ self.r1.t()) * self.gamma

    def from_pre_norm(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.r1 is None else x @ self.r1.t()
