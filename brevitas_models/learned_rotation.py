"""Learned R1/R2 rotations (SpinQuant style): Cayley SGD on the orthogonal group, from the Hadamard ones.

What is learned: R1 (hidden x hidden, the residual stream, one for the model) and R2 (head_dim x head_dim,
one per layer, shared by the heads of the layer), the matrices :func:`brevitas_models.rotation.rotate`
folds into the weights. R4 (online Hadamard on the down_proj input) stays fixed and on.

Loss: the LM cross-entropy (next token) of the network with float weights (GPTQ rounds them afterwards,
as SpinQuant trains its rotations with 16-bit weights when GPTQ follows) and every linear input fake-
quantized as the spec says (per-token uint4/int8, per-site overrides and clip ratios) by the model's own
Brevitas quantizers (:class:`brevitas_models.model.TokenQuant`, straight-through rounding). The static
Q/K/V and softmax quantizers (int8/uint8, calibrated after the rotation) stay float during training.
Training data: the calibration windows only, cut into ``Tokens``-long windows used in turn, one per step.

Forward (:class:`RotatedForward`): the rotations act on activations rather than on weights, which is
cheaper when a step holds fewer tokens than a weight matrix has rows. With norm weights fused into the
linears and ``W`` the unrotated weights, the folded model computes ``Q(x R1) (W R1)^T = (Q(x R1) R1^T) W^T``
for linears reading the residual, ``(y W^T) R1`` for o_proj / down_proj writing it, ``E[ids] R1`` for the
embedding; ``v R2`` per head and ``Q(o) blockdiag(R2^T)`` before o_proj. Attention is float SDPA (causal).

Cayley SGD (:func:`cayley_step`), written for a square orthogonal ``R`` with Euclidean gradient ``G``::

    A     = (G R^T - R G^T) / 2                       skew-symmetric, A R = (G - R G^T R) / 2
    alpha = min(lr, 1 / (||A||_1 + 1e-8))             step capped as in SpinQuant's SGDG (||.||_1: max column sum)
    R'    = (I + alpha/2 A)^-1 (I - alpha/2 A) R      the Cayley transform of -alpha A, times R

``(I + B)^-1 (I - B)`` is orthogonal for every skew ``B``, so ``R'`` stays orthogonal up to the float64
rounding of one linear solve (no re-orthogonalisation). To first order ``R' = R - alpha (G - R G^T R) / 2``,
SGDG's descent direction (the Riemannian gradient under the canonical metric; SpinQuant computes the
same transform by a 5-step fixed-point iteration, here an exact solve). The learning rate follows a
cosine schedule ``lr_t = lr (1 + cos(pi t / Steps)) / 2``, no momentum (SpinQuant's default).
"""

from __future__ import annotations

import math
import resource
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .arch import LlamaArch
from .model import LlamaModel, OnlineHadamard, TokenQuant
from .quant_presets import QuantSpec, quant_preset
from .rope import apply_rope, rope_tables
from .rotation import Rotation, fuse_norms, hadamard_head_rotation


def cayley_alpha(a: torch.Tensor, lr: float) -> float:
    """The step size of the skew ``a``: ``min(lr, 1 / (||a||_1 + 1e-8))``."""
    return min(float(lr), 1.0 / (float(a.abs().sum(dim=0).max()) + 1e-8))


def cayley_step(r: torch.Tensor, grad: torch.Tensor, lr: float) -> torch.Tensor:
    """One Cayley SGD step of the orthogonal ``r`` (float64) along ``-grad`` (see the module docstring)."""
    if r.dim() != 2 or r.shape[0] != r.shape[1] or grad.shape != r.shape:
        raise ValueError(f"cayley_step needs a square R and a gradient of its shape, got {tuple(r.shape)}, "
                         f"{tuple(grad.shape)}")
    r, grad = r.double(), grad.double()
    a = 0.5 * (grad @ r.T - r @ grad.T)
    alpha = cayley_alpha(a, lr)
    eye = torch.eye(r.shape[0], dtype=torch.float64)
    return torch.linalg.solve(eye + 0.5 * alpha * a, (eye - 0.5 * alpha * a) @ r)


def orthogonality_error(r: torch.Tensor) -> float:
    """max |R^T R - I|."""
    r = r.double()
    return float((r.T @ r - torch.eye(r.shape[0], dtype=torch.float64)).abs().max())


@dataclass
class LearnedRotations:
    """R1 and the per-layer R2 (float64), and how training went."""
    r1: torch.Tensor
    r2: List[torch.Tensor]
    losses: List[float] = field(default_factory=list)   # training loss of every step (before its update)
    stats: Dict[str, float] = field(default_factory=dict)

    def r1_rotation(self) -> Rotation:
        return Rotation(self.r1, self.r1.shape[0], False)


def training_spec(spec: QuantSpec) -> QuantSpec:
    """The spec of the training forward: float weights and attention, the linear inputs of ``spec``."""
    return QuantSpec(f"{spec.name}-rotation-training", input_quant=spec.input_quant,
                     input_quant_overrides=spec.input_quant_overrides, input_clip_ratios=spec.input_clip_ratios)


class RotatedForward(torch.nn.Module):
    """The fake-quantized network as a function of R1 and the R2s (float weights, quantized linear inputs,
    online R4). Holds the norm-fused, unrotated float weights (down_proj pre-rotated for R4)."""

    def __init__(self, float_model: LlamaModel, spec: QuantSpec, max_positions: int):
        super().__init__()
        a: LlamaArch = float_model.arch
        self.arch = a
        model = float_model
        if model.rotated:
            raise ValueError("RotatedForward needs the unrotated float model")
        fuse_norms(model)
        tspec = training_spec(spec)
        # one Brevitas quantizer per input site (dynamic per-token quantizers hold no state)
        self.quant = torch.nn.ModuleDict({site: TokenQuant(tspec.input_kind(site), tspec.input_clip(site))
                                          for site in ("q_proj", "o_proj", "gate_proj", "down_proj", "lm_head")})
        self.r4 = OnlineHadamard(a.intermediate_size)
        self.r4.enabled = True
        h4 = Rotation.hadamard(a.intermediate_size)
        with torch.no_grad():
            self.embed = model.embed_tokens.weight.detach().clone()
            self.lm_head = model.lm_head.weight.detach().clone()
            self.layers = []
            for layer in model.layers:
                at, mlp = layer.self_attn, layer.mlp
                w = {n: getattr(at, n).weight.detach().clone() for n in ("q_proj", "k_proj", "v_proj", "o_proj")}
                w.update({n: getattr(mlp, n).weight.detach().clone() for n in ("gate_proj", "up_proj")})
                w["down_proj"] = h4.right_t(mlp.down_proj.weight.detach().double()).float()
                self.layers.append(w)
        cos, sin = rope_tables(a, max_positions)
        self.cos, self.sin = cos, sin
        self.eps = a.rms_norm_eps
        self.softmax_scale = 1.0 / math.sqrt(a.head_dim)

    def _norm(self, h):
        return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)

    def forward(self, ids: torch.Tensor, r1: torch.Tensor, r2: List[torch.Tensor]) -> torch.Tensor:
        """Logits [B, L, vocab] of the rotated, fake-quantized network (``r1``, ``r2`` float32)."""
        a = self.arch
        b, l = ids.shape
        cos, sin = self.cos[:l], self.sin[:l]
        h = F.embedding(ids, self.embed) @ r1
        for w, r2_l in zip(self.layers, r2):
            xu = F.linear(self.quant["q_proj"](self._norm(h)), r1)          # Q(x R1) R1^T
            q = F.linear(xu, w["q_proj"]).view(b, l, a.num_heads, a.head_dim).transpose(1, 2)
            k = F.linear(xu, w["k_proj"]).view(b, l, a.num_kv_heads, a.head_dim).transpose(1, 2)
            v = F.linear(xu, w["v_proj"]).view(b, l, a.num_kv_heads, a.head_dim).transpose(1, 2) @ r2_l
            q = apply_rope(q, cos, sin)
            k = apply_rope(k, cos, sin)
            if a.gqa_group > 1:
                k = k.repeat_interleave(a.gqa_group, dim=1)
                v = v.repeat_interleave(a.gqa_group, dim=1)
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.softmax_scale)
            o = self.quant["o_proj"](o.transpose(1, 2).reshape(b, l, a.q_size))
            o = (o.view(b, l, a.num_heads, a.head_dim) @ r2_l.T).reshape(b, l, a.q_size)
            h = h + F.linear(o, w["o_proj"]) @ r1
            xu = F.linear(self.quant["gate_proj"](self._norm(h)), r1)
            u = F.silu(F.linear(xu, w["gate_proj"])) * F.linear(xu, w["up_proj"])
            h = h + F.linear(self.quant["down_proj"](self.r4(u)), w["down_proj"]) @ r1
        return F.linear(F.linear(self.quant["lm_head"](self._norm(h)), r1), self.lm_head)

    def loss(self, ids: torch.Tensor, r1: torch.Tensor, r2: List[torch.Tensor]) -> torch.Tensor:
        logits = self.forward(ids, r1, r2)
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def initial_rotations(arch: LlamaArch) -> LearnedRotations:
    """The Hadamard R1 (dense, as :meth:`Rotation.residual` builds it) and R2 of every layer."""
    r1 = Rotation.residual(arch.hidden_size, arch.seed).right(torch.eye(arch.hidden_size, dtype=torch.float64))
    return LearnedRotations(r1, [hadamard_head_rotation(arch.head_dim) for _ in range(arch.num_layers)])


def training_windows(calib: torch.Tensor, tokens: int) -> torch.Tensor:
    """The calibration tokens cut into [N, tokens] windows (the remainder of each calibration window is
    dropped)."""
    per = calib.shape[1] // tokens
    if per == 0:
        raise ValueError(f"Quantization.RotationTraining.Tokens ({tokens}) exceeds the calibration window "
                         f"length ({calib.shape[1]})")
    return calib[:, :per * tokens].reshape(-1, tokens)


@torch.no_grad()
def mean_loss(fwd: RotatedForward, data: torch.Tensor, rots: LearnedRotations) -> float:
    """Mean cross-entropy of the training forward over the windows ``data`` [N, tokens]."""
    r1, r2 = rots.r1.float(), [m.float() for m in rots.r2]
    return float(np.mean([float(fwd.loss(data[i][None], r1, r2)) for i in range(data.shape[0])]))


def learn_rotations(weights_state_dict, arch: LlamaArch, spec: QuantSpec, calib: torch.Tensor,
                    log: Optional[Callable[[str], None]] = None) -> LearnedRotations:
    """Train R1 and the R2s of ``spec`` (rotation "learned") on the calibration windows ``calib`` [N, ctx]."""
    steps = spec.rotation_setting("Steps")
    lr = spec.rotation_setting("LearningRate")
    tokens = spec.rotation_setting("Tokens")
    init = initial_rotations(arch)
    if steps == 0:
        return init
    data = training_windows(calib, tokens)
    t0, c0 = time.perf_counter(), time.process_time()
    float_model = LlamaModel(arch, quant_preset("float"), max_positions=tokens)
    float_model.load_hf_state_dict(weights_state_dict)
    fwd = RotatedForward(float_model, spec, tokens)
    del float_model
    probe = data[:2]
    loss_before = mean_loss(fwd, probe, init)
    r1 = init.r1.clone()
    r2 = [m.clone() for m in init.r2]
    losses: List[float] = []
    capped = 0          # steps whose R1 step was capped at 1/||A||_1 below the scheduled learning rate
    for step in range(steps):
        lr_t = lr * 0.5 * (1.0 + math.cos(math.pi * step / steps))
        r1_leaf = r1.float().requires_grad_(True)
        r2_leaf = [m.float().requires_grad_(True) for m in r2]
        loss = fwd.loss(data[step % data.shape[0]][None], r1_leaf, r2_leaf)
        loss.backward()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"rotation training: loss {loss.item()} at step {step}")
        losses.append(float(loss.detach()))
        g1 = r1_leaf.grad.double()
        capped += cayley_alpha(0.5 * (g1 @ r1.T - r1 @ g1.T), lr_t) < lr_t
        r1 = cayley_step(r1, g1, lr_t)
        r2 = [cayley_step(m, leaf.grad.double(), lr_t) for m, leaf in zip(r2, r2_leaf)]
        if log and (step % 10 == 0 or step == steps - 1):
            log(f"rotation training step {step + 1}/{steps}: loss {losses[-1]:.4f} (lr {lr_t:.3f})")
    learned = LearnedRotations(r1, r2, losses)
    loss_after = mean_loss(fwd, probe, learned)
    stats = {"steps": steps, "tokens_per_step": tokens, "wall_s": round(time.perf_counter() - t0, 1),
             "cpu_s": round(time.process_time() - c0, 1),
             "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
             "r1_steps_capped": int(capped), "loss_before": round(loss_before, 4), "loss_after": round(loss_after, 4),
             "orthogonality_error": max([orthogonality_error(r1)] + [orthogonality_error(m) for m in r2])}
    if log:
        log(f"rotation training: {steps} steps in {stats['wall_s']} s wall, {stats['cpu_s']} s CPU; "
            f"loss on the first {probe.shape[0]} training windows {loss_before:.4f} -> {loss_after:.4f}")
    learned.stats = stats
    return learned
