"""Seam smoothing (SmoothQuant's per-channel migration, applied before the rotations as SmoothRot does),
folded into the float weights: no operation is added to the hardware.

Four seams carry a per-channel scale s exactly through a linear map:

* ``down_proj`` (up -> down): ``u = silu(gate) * up`` is linear in ``up``, so ``up_proj`` output rows
  ``/ s`` and ``down_proj`` input columns ``* s`` leave the float output unchanged; the online R4
  Hadamard then rotates the smoothed ``u``.
* ``o_proj`` (v -> o): attention is linear in V per channel, so ``v_proj`` output rows of KV head h
  ``/ s[h]`` and the ``o_proj`` input columns of every query head of that group ``* s[h]`` (one scale per
  KV head and channel, shared by its ``gqa_group`` query heads); R2 then rotates each head.
* ``qkv`` and ``gate_up`` (RMSNorm -> its consumers): the norm weight ``/ s`` and the consumers' input
  columns ``* s``. These inputs are quantized in the rotated (R1) basis, so these two seams are smoothed
  after the rotations, in that basis (the norm weight is an fp32 vector the hardware applies anyway).

``o_proj`` and ``down_proj`` are smoothed before the rotations (SmoothRot: smooth, then rotate), ``qkv``
and ``gate_up`` after them.

With ``a_j`` the largest ``|input|`` of channel j over the calibration tokens (float model) and ``w_j``
the largest ``|W[:, j]|`` of the consumer's column: ``s_j = a_j^alpha / w_j^(1 - alpha)`` (SmoothQuant,
arXiv 2211.10438, eq. 4), normalised to geometric mean 1 so the weights keep their overall scale.
``alpha`` per seam is ``Quantization.SeamSmoothing`` (``{o_proj: 0.5, down_proj: 0.5}``).

Statistics come from ``STAT_WINDOWS`` calibration windows (the same real-text windows GPTQ uses).
Products in float64, stored as float32; the float model's outputs are unchanged (tested).
"""

from __future__ import annotations

from typing import Dict, Iterable, Tuple

import torch

from .model import LlamaModel

BEFORE_ROTATION = ("o_proj", "down_proj")
AFTER_ROTATION = ("qkv", "gate_up")
SEAMS = BEFORE_ROTATION + AFTER_ROTATION
STAT_WINDOWS = 2          # calibration windows whose activations give the per-channel maxima
MIN_SCALE = 1e-5


def _set(param, value: torch.Tensor):
    with torch.no_grad():
        param.copy_(value.to(param.dtype))


@torch.no_grad()
def seam_maxima(model: LlamaModel, windows: torch.Tensor) -> Dict[Tuple[int, str], torch.Tensor]:
    """{(layer, seam): per-channel max |x|} of every seam's input: the o_proj input, the down_proj input
    before R4, the q/k/v and the gate/up input (the norm outputs)."""
    maxima: Dict[Tuple[int, str], torch.Tensor] = {}

    def keep(key):
        def hook(mod, args):
            x = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(0).double()
            maxima[key] = x if key not in maxima else torch.maximum(maxima[key], x)
        return hook

    handles = []
    for i, layer in enumerate(model.layers):
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(keep((i, "o_proj"))))
        handles.append(layer.mlp.online_hadamard.register_forward_pre_hook(keep((i, "down_proj"))))
        handles.append(layer.self_attn.q_proj.input_quant.register_forward_pre_hook(keep((i, "qkv"))))
        handles.append(layer.mlp.gate_proj.input_quant.register_forward_pre_hook(keep((i, "gate_up"))))
    try:
        for w in windows[:STAT_WINDOWS]:
            model(w[None])
    finally:
        for h in handles:
            h.remove()
    return maxima


def smoothing_scale(act_max: torch.Tensor, weight_max: torch.Tensor, alpha: float) -> torch.Tensor:
    """s = a^alpha / w^(1 - alpha), geometric mean 1 (float64)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"smoothing alpha must be in [0, 1], got {alpha}")
    s = act_max.clamp_min(MIN_SCALE) ** alpha / weight_max.clamp_min(MIN_SCALE) ** (1.0 - alpha)
    s = s.clamp_min(MIN_SCALE)
    return s / torch.exp(torch.log(s).mean())


def smooth_down_seam(layer, act_max: torch.Tensor, alpha: float) -> torch.Tensor:
    if layer.mlp.online_hadamard.enabled:
        # down_proj's columns are in the R4 basis then, the scale on u acts before R4: not one seam
        raise RuntimeError("the up -> down seam is smoothed before the rotations (R4 is already folded)")
    up, down = layer.mlp.up_proj.weight, layer.mlp.down_proj.weight
    wd = down.detach().double()
    s = smoothing_scale(act_max, wd.abs().amax(0), alpha)
    _set(up, up.detach().double() / s[:, None])
    _set(down, wd * s[None, :])
    return s


def smooth_o_seam(layer, act_max: torch.Tensor, alpha: float, num_heads: int, num_kv_heads: int,
                  head_dim: int) -> torch.Tensor:
    """One scale per (KV head, channel); act and weight maxima pooled over the group's query heads."""
    group = num_heads // num_kv_heads
    v, o = layer.self_attn.v_proj.weight, layer.self_attn.o_proj.weight
    wo = o.detach().double().view(o.shape[0], num_kv_heads, group, head_dim)
    a = act_max.view(num_kv_heads, group, head_dim).amax(1)
    w = wo.abs().amax(dim=(0, 2))                                     # [kv, d]
    s = smoothing_scale(a.reshape(-1), w.reshape(-1), alpha).view(num_kv_heads, head_dim)
    _set(v, v.detach().double().view(num_kv_heads, head_dim, -1).div(s[:, :, None]).reshape(v.shape))
    _set(o, (wo * s[None, :, None, :]).reshape(o.shape))
    return s


def smooth_norm_seam(norm, consumers, act_max: torch.Tensor, alpha: float) -> torch.Tensor:
    """RMSNorm weight / s, the consumers' input columns * s (max |W[:, j]| over all consumers)."""
    ws = [c.weight.detach().double() for c in consumers]
    s = smoothing_scale(act_max, torch.stack([w.abs().amax(0) for w in ws]).amax(0), alpha)
    _set(norm.weight, norm.weight.detach().double() / s)
    for c, w in zip(consumers, ws):
        _set(c.weight, w * s[None, :])
    return s


def _smooth_layer(model: LlamaModel, layer, seam: str, act_max: torch.Tensor, alpha: float) -> torch.Tensor:
    a = model.arch
    if seam == "down_proj":
        return smooth_down_seam(layer, act_max, alpha)
    if seam == "o_proj":
        return smooth_o_seam(layer, act_max, alpha, a.num_heads, a.num_kv_heads, a.head_dim)
    if seam == "qkv":
        at = layer.self_attn
        return smooth_norm_seam(layer.input_layernorm, (at.q_proj, at.k_proj, at.v_proj), act_max, alpha)
    return smooth_norm_seam(layer.post_attention_layernorm, (layer.mlp.gate_proj, layer.mlp.up_proj), act_max,
                            alpha)


def smooth_seams(models: Iterable[LlamaModel], stats_model: LlamaModel, windows: torch.Tensor,
                 alphas: Iterable[Tuple[str, float]]) -> Dict:
    """Fold the seam smoothing of ``alphas`` ((seam, alpha) pairs) into the weights of every model of
    ``models`` (equal weights, e.g. the quantized model and ``stats_model`` itself); the activation maxima
    come from ``stats_model``, a float model with those weights (the quantized model's static quantizers
    are not calibrated yet), taken before any weight changes. Returns {(layer, seam): s} of the first."""
    alphas = dict(alphas)
    for seam in alphas:
        if seam not in SEAMS:
            raise ValueError(f"unknown smoothing seam {seam!r}; known: {list(SEAMS)}")
    if not alphas:
        return {}
    maxima = seam_maxima(stats_model, windows)
    scales = {}
    for k, model in enumerate(models):
        for i, layer in enumerate(model.layers):
            for seam, alpha in alphas.items():
                s = _smooth_layer(model, layer, seam, maxima[(i, seam)], alpha)
                if k == 0:
                    scales[(i, seam)] = s
    return scales
