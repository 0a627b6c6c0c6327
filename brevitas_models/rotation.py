"""Offline rotations (SpinQuant/QuaRot style) folded into the float weights, and the online R4 switch.

* RMSNorm weights are fused into the linears that read the norm output (norm weights become 1).
* R1 (hidden x hidden, residual stream): embeddings ``E <- E R1``; linears reading the residual
  ``W <- W R1``; linears writing it (o_proj, down_proj) ``W <- R1^T W``. RMSNorm commutes with an
  orthogonal R1 once its weight is 1. Hadamard when the size has a construction, else random orthogonal.
* R2 (head_dim, per head): ``v_proj`` output rows of each KV head ``<- R2^T W``, ``o_proj`` input
  columns of each query head ``<- W R2``. V is quantized per head after the rotation.
  R1 and R2 are the Hadamard ones by default, or learned ones (:mod:`.learned_rotation`) passed in.
* R4 (intermediate, online): ``down_proj`` ``W <- W H^T`` and the model applies ``x H^T`` (a fast
  Walsh-Hadamard transform) to the down_proj input at run time.

All products are computed in float64 and stored as float32. Float outputs are unchanged (tested).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from .hadamard import hadamard_factor, hadamard_matrix, random_orthogonal
from .model import LlamaModel


def residual_rotation(size: int, seed: int) -> torch.Tensor:
    try:
        hadamard_factor(size)
        mat = hadamard_matrix(size)
    except ValueError:
        mat = random_orthogonal(size, seed)
    return torch.from_numpy(np.asarray(mat, dtype=np.float64))


class Rotation:
    """An orthogonal rotation ``R`` applied to weight matrices (float64).

    Power-of-two sizes with a Hadamard construction use the Kronecker structure of the Sylvester
    matrix, ``H_n = H_a (x) H_b`` (``n = a * b``, both powers of two, ``H`` symmetric): a row ``x``
    reshaped to ``X`` [a, b] gives ``x @ H_n = H_a @ X @ H_b``, two small BLAS products instead of one
    n x n product (20x fewer flops at n = 2048). Other sizes (``m * 2^k`` constructions with
    ``m > 1``, random orthogonal) use the dense matrix, so their rotated weights are unchanged by this
    optimisation. The two paths agree to float64 rounding (checked in the tests).
    """

    def __init__(self, mat: Optional[torch.Tensor], size: int, fast: bool):
        self.mat, self.size, self.fast = mat, size, fast
        if fast:
            k = size.bit_length() - 1
            self.a, self.b = 2 ** (k // 2), 2 ** (k - k // 2)
            self.h_a = torch.from_numpy(hadamard_matrix(self.a).astype(np.float64))
            self.h_b = torch.from_numpy(hadamard_matrix(self.b).astype(np.float64))

    @classmethod
    def residual(cls, size: int, seed: int) -> "Rotation":
        try:
            m, _ = hadamard_factor(size)
        except ValueError:
            return cls(torch.from_numpy(np.asarray(random_orthogonal(size, seed), dtype=np.float64)), size, False)
        return cls.hadamard(size) if m == 1 else cls(residual_rotation(size, seed), size, False)

    @classmethod
    def hadamard(cls, size: int) -> "Rotation":
        m, _ = hadamard_factor(size)
        if m == 1:
            return cls(None, size, True)
        return cls(torch.from_numpy(hadamard_matrix(size).astype(np.float64)), size, False)

    def right(self, w: torch.Tensor) -> torch.Tensor:
        """``w @ R``."""
        if not self.fast:
            return w @ self.mat
        x = w.reshape(w.shape[0], self.a, self.b)
        return torch.matmul(torch.matmul(self.h_a, x), self.h_b).reshape(w.shape)

    def right_t(self, w: torch.Tensor) -> torch.Tensor:
        """``w @ R.T``."""
        return self.right(w) if self.fast else w @ self.mat.T

    def left_t(self, w: torch.Tensor) -> torch.Tensor:
        """``R.T @ w``."""
        return self.right(w.T.contiguous()).T if self.fast else self.mat.T @ w


def _set(param, value: torch.Tensor):
    with torch.no_grad():
        param.copy_(value.to(param.dtype))


def fuse_norms(model: LlamaModel) -> None:
    """Fold every RMSNorm weight into the linears that consume the norm's output."""
    for layer in model.layers:
        g = layer.input_layernorm.weight.detach().double()
        for lin in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
            _set(lin.weight, lin.weight.detach().double() * g[None, :])
        layer.input_layernorm.weight.data.fill_(1.0)
        g = layer.post_attention_layernorm.weight.detach().double()
        for lin in (layer.mlp.gate_proj, layer.mlp.up_proj):
            _set(lin.weight, lin.weight.detach().double() * g[None, :])
        layer.post_attention_layernorm.weight.data.fill_(1.0)
    g = model.norm.weight.detach().double()
    _set(model.lm_head.weight, model.lm_head.weight.detach().double() * g[None, :])
    model.norm.weight.data.fill_(1.0)


def hadamard_head_rotation(head_dim: int) -> torch.Tensor:
    """The default R2: the orthonormal Hadamard matrix of the head dimension (float64)."""
    return torch.from_numpy(hadamard_matrix(head_dim).astype(np.float64))


def rotate(model: LlamaModel, online_r4: bool = True, r1: Optional[Rotation] = None,
           r2: Optional[Sequence[torch.Tensor]] = None) -> None:
    """Fuse norms, fold R1 and R2, and (optionally) pre-rotate down_proj for the online R4.

    ``r1``: the residual rotation (default :meth:`Rotation.residual`, Hadamard where a construction
    exists); ``r2``: one head_dim x head_dim matrix per layer (default the Hadamard matrix in every
    layer). Learned rotations (:mod:`.learned_rotation`) pass their matrices here; R4 stays Hadamard."""
    if model.rotated:
        raise RuntimeError("model is already rotated")
    a = model.arch
    d = a.head_dim
    if r1 is None:
        r1 = Rotation.residual(a.hidden_size, a.seed)
    elif r1.size != a.hidden_size:
        raise ValueError(f"R1 is {r1.size} x {r1.size}, the model's hidden size is {a.hidden_size}")
    if r2 is None:
        r2 = [hadamard_head_rotation(d)] * a.num_layers
    r2 = list(r2)
    if len(r2) != a.num_layers or any(tuple(m.shape) != (d, d) for m in r2):
        raise ValueError(f"R2 must be {a.num_layers} matrices of {d} x {d}, got "
                         f"{[tuple(m.shape) for m in r2]}")
    fuse_norms(model)
    h4 = Rotation.hadamard(a.intermediate_size) if online_r4 else None
    _set(model.embed_tokens.weight, r1.right(model.embed_tokens.weight.detach().double()))
    _set(model.lm_head.weight, r1.right(model.lm_head.weight.detach().double()))
    for layer, r2_layer in zip(model.layers, r2):
        r2_layer = r2_layer.detach().double()
        at = layer.self_attn
        for lin in (at.q_proj, at.k_proj, at.v_proj, layer.mlp.gate_proj, layer.mlp.up_proj):
            _set(lin.weight, r1.right(lin.weight.detach().double()))
        for lin in (at.o_proj, layer.mlp.down_proj):
            _set(lin.weight, r1.left_t(lin.weight.detach().double()))
        wv = at.v_proj.weight.detach().double().view(a.num_kv_heads, d, a.hidden_size)
        _set(at.v_proj.weight, torch.einsum("ji,hjk->hik", r2_layer, wv).reshape(a.kv_size, a.hidden_size))
        wo = at.o_proj.weight.detach().double().view(a.hidden_size, a.num_heads, d)
        _set(at.o_proj.weight, torch.einsum("ohj,ji->ohi", wo, r2_layer).reshape(a.hidden_size, a.q_size))
        if online_r4:
            _set(layer.mlp.down_proj.weight, h4.right_t(layer.mlp.down_proj.weight.detach().double()))
            layer.mlp.online_hadamard.enabled = True
    model.rotated = True
