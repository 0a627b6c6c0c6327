"""Offline rotations (SpinQuant/QuaRot style) folded into the float weights, and the online R4 switch.

* RMSNorm weights are fused into the linears that read the norm output (norm weights become 1).
* R1 (hidden x hidden, residual stream): embeddings ``E <- E R1``; linears reading the residual
  ``W <- W R1``; linears writing it (o_proj, down_proj) ``W <- R1^T W``. RMSNorm commutes with an
  orthogonal R1 once its weight is 1. Hadamard when the size has a construction, else random orthogonal.
* R2 (head_dim, per head): ``v_proj`` output rows of each KV head ``<- R2^T W``, ``o_proj`` input
  columns of each query head ``<- W R2``. V is quantized per head after the rotation.
* R4 (intermediate, online): ``down_proj`` ``W <- W H^T`` and the model applies ``x H^T`` (a fast
  Walsh-Hadamard transform) to the down_proj input at run time.

All products are computed in float64 and stored as float32. Float outputs are unchanged (tested).
"""

from __future__ import annotations

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


def rotate(model: LlamaModel, online_r4: bool = True) -> None:
    """Fuse norms, fold R1 and R2, and (optionally) pre-rotate down_proj for the online R4."""
    if model.rotated:
        raise RuntimeError("model is already rotated")
    a = model.arch
    fuse_norms(model)
    r1 = residual_rotation(a.hidden_size, a.seed)
    r2 = torch.from_numpy(hadamard_matrix(a.head_dim).astype(np.float64))
    _set(model.embed_tokens.weight, model.embed_tokens.weight.detach().double() @ r1)
    _set(model.lm_head.weight, model.lm_head.weight.detach().double() @ r1)
    d = a.head_dim
    for layer in model.layers:
        at = layer.self_attn
        for lin in (at.q_proj, at.k_proj, at.v_proj, layer.mlp.gate_proj, layer.mlp.up_proj):
            _set(lin.weight, lin.weight.detach().double() @ r1)
        for lin in (at.o_proj, layer.mlp.down_proj):
            _set(lin.weight, r1.T @ lin.weight.detach().double())
        wv = at.v_proj.weight.detach().double().view(a.num_kv_heads, d, a.hidden_size)
        _set(at.v_proj.weight, torch.einsum("ji,hjk->hik", r2, wv).reshape(a.kv_size, a.hidden_size))
        wo = at.o_proj.weight.detach().double().view(a.hidden_size, a.num_heads, d)
        _set(at.o_proj.weight, torch.einsum("ohj,ji->ohi", wo, r2).reshape(a.hidden_size, a.q_size))
        if online_r4:
            h4 = torch.from_numpy(hadamard_matrix(a.intermediate_size).astype(np.float64))
            _set(layer.mlp.down_proj.weight, layer.mlp.down_proj.weight.detach().double() @ h4.T)
            layer.mlp.online_hadamard.enabled = True
    model.rotated = True
