"""The HMT parameters as the hardware holds them: one fp32 image in the backbone's own basis.

HMT's parameters live in the float model's basis (:mod:`.basis`). The hardware reads states where the
prefill kernel has them (the last position's final-RMSNorm output ``u`` of the backbone it runs, with
the final-norm weight of that backbone: all ones for a rotated one) and feeds vectors back as input
rows of the same backbone, so the basis changes are folded into the parameters once, in float64, and
rounded to fp32 (column vectors, ``G`` maps a hardware state to the float basis, ``R`` a float-basis
embedding to the backbone input)::

    unrotated:  G = I,                 R = I
    rotated:    G = diag(gamma) R1,    R = R1^T     (row forms: from_post_norm (u R1^T) * gamma, to_model e R1)

    T_hw  = R T,  P0_hw = R P_0,  W_q' = W_q G,  W_k' = W_k G,  W_p = R V G

with ``V = diag(v)`` the learned recall scale (``HMT.RecallScale``: ``v = s 1`` for ``scalar``, ``v``
for ``diagonal``; ``V = I`` for ``none``), so ``q = W_q' u_S``, ``k_i = W_k' u_i`` (the hardware stores
the raw states ``u_i`` as memories) and the recalled input row is ``W_p (sum_i p_i u_i)``: the same
recall as the float model up to fp32 rounding. W_p is in the image whenever it is not the identity (a
rotated backbone or a recall scale) and absent otherwise (the row is then the mix itself). With
``HMT.RecallResidual`` the row is ``P0_hw + W_p mix`` (= R (P_0 + V mix_float); ``recall_residual``, not
part of the image: P0_hw is). Only the post-norm memory point is supported in hardware.

Image layout (fp32, ``d`` = hidden size): ``[T_hw (d) | P0_hw (d) | W_q' (d x d) | W_k' (d x d) |
W_p (d x d, if any)]``, matrices row-major (out x in) as ``layers/flexllm_memory_recall.h`` reads
them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass
class HardwareHMTParams:
    summary_row: np.ndarray               # T_hw [d]
    initial_row: np.ndarray               # P0_hw [d]
    w_q: np.ndarray                       # W_q' [d, d]
    w_k: np.ndarray                       # W_k' [d, d]
    w_p: Optional[np.ndarray] = None      # W_p [d, d] (rotated backbones, recall scale)
    recall_residual: bool = False         # P_n = P0_hw + (W_p) mix

    @property
    def hidden_size(self) -> int:
        return int(self.summary_row.shape[0])

    @property
    def projects_recall(self) -> bool:
        """The recalled row is ``W_p mix`` (the image carries W_p), else the mix itself."""
        return self.w_p is not None

    def offsets(self) -> dict:
        """fp32 element offsets of each part in the image."""
        d = self.hidden_size
        off = {"summary_row": 0, "initial_row": d, "w_q": 2 * d, "w_k": 2 * d + d * d}
        if self.projects_recall:
            off["w_p"] = 2 * d + 2 * d * d
        return off

    def image(self) -> np.ndarray:
        parts = [self.summary_row, self.initial_row, self.w_q.reshape(-1), self.w_k.reshape(-1)]
        if self.projects_recall:
            parts.append(self.w_p.reshape(-1))
        return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)

    @classmethod
    def from_image(cls, image: np.ndarray, hidden_size: int, projects_recall: bool,
                   recall_residual: bool = False) -> "HardwareHMTParams":
        d = int(hidden_size)
        n = 3 if projects_recall else 2
        want = 2 * d + n * d * d
        image = np.asarray(image, dtype=np.float32).reshape(-1)
        if image.size != want:
            raise ValueError(f"HMT parameter image of {image.size} floats, expected {want} (d = {d}, "
                             f"W_p {'present' if projects_recall else 'absent'})")
        m = [image[2 * d + i * d * d: 2 * d + (i + 1) * d * d].reshape(d, d) for i in range(n)]
        return cls(image[:d].copy(), image[d:2 * d].copy(), m[0].copy(), m[1].copy(),
                   m[2].copy() if projects_recall else None, bool(recall_residual))


def hardware_params(params, model, final_norm_weight=None) -> HardwareHMTParams:
    """The hardware image of trained :class:`~.memory.HMTParams` for the backbone ``model`` (a
    :class:`~brevitas_models.model.LlamaModel`; rotated ones need the float checkpoint's final-norm
    weight, ``model.norm.weight``)."""
    import torch

    from .basis import BackboneBasis

    d = model.arch.hidden_size
    if params.hidden_size != d:
        raise ValueError(f"HMT parameters have hidden size {params.hidden_size}, the model {d}")
    basis = BackboneBasis(model, final_norm_weight, reads_states=True)
    f64 = {k: v.detach().double() for k, v in (("t", params.summary_token), ("p0", params.initial_memory),
                                                ("wq", params.w_q), ("wk", params.w_k))}
    scale = params.recall_scale_vector()
    v = None if scale is None else torch.diag(scale.double())      # V: the learned recall scale
    to32 = lambda t: np.ascontiguousarray(t.numpy(), dtype=np.float32)       # noqa: E731
    if basis.r1 is None:
        return HardwareHMTParams(to32(f64["t"]), to32(f64["p0"]), to32(f64["wq"]), to32(f64["wk"]),
                                 None if v is None else to32(v), params.recall_residual)
    r1 = basis.r1.double()                               # to_model(e) = e @ r1  ->  column: r1^T e
    gamma = basis.gamma.double()
    rot = r1.t()                                         # R
    g = torch.diag(gamma) @ r1                           # from_post_norm(u) = (u @ r1^T) * gamma -> column
    w_p = rot @ g if v is None else rot @ v @ g
    return HardwareHMTParams(to32(rot @ f64["t"]), to32(rot @ f64["p0"]), to32(f64["wq"] @ g),
                             to32(f64["wk"] @ g), to32(w_p), params.recall_residual)
