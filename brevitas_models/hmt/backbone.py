"""The backbone an HMT model runs on: the float backbone weights, plus an optional LoRA adapter trained with
the memory parameters.

The original HMT training adapts the backbone (fine-tuning, or LoRA r = 8): a frozen backbone reads a
memory (a raw final state fed back as an input embedding) poorly. ``flexllm hmt-train`` trains a LoRA
adapter (:class:`LoRAAdapter`, ``W' = W + (alpha / r) B A`` on chosen projections of every decoder layer)
jointly with T, P_0, W_q, W_k. The adapter is merged into the float weights once, by
:func:`hmt_backbone_weights`, and every consumer (long-context perplexity, calibration of a quantized
preset, the golden model and the generated project) builds from those merged weights: the adapter costs no
hardware. During training (float backbone, unrotated) :func:`adapter_applied` adds the adapter's low-rank
product to the projections' outputs instead; the two agree to fp32 rounding.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Dict, Sequence, Tuple

import torch
from torch import nn

# target projection -> (sub-module of a decoder layer, HF name)
ADAPTER_TARGETS = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
                   "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}


def adapter_shapes(arch, targets: Sequence[str]) -> Dict[str, Tuple[int, int]]:
    """(out, in) of each target projection of a decoder layer of ``arch``."""
    h, f = arch.hidden_size, arch.intermediate_size
    shapes = {"q_proj": (arch.q_size, h), "k_proj": (arch.kv_size, h), "v_proj": (arch.kv_size, h),
              "o_proj": (h, arch.q_size), "gate_proj": (f, h), "up_proj": (f, h), "down_proj": (h, f)}
    bad = [t for t in targets if t not in shapes]
    if bad or not targets:
        raise ValueError(f"LoRA targets must be a non-empty subset of {sorted(shapes)}, got {list(targets)}")
    return {t: shapes[t] for t in targets}


class LoRAPair(nn.Module):
    """``a`` [r, in], ``b`` [out, r]: the update ``(alpha / r) b @ a`` of one [out, in] weight."""

    def __init__(self, out_features: int, in_features: int, rank: int, generator=None):
        super().__init__()
        # The usual LoRA start: A random (Kaiming-uniform bound 1/sqrt(in)), B zero, so the adapted backbone
        # starts as the backbone.
        bound = 1.0 / math.sqrt(in_features)
        self.a = nn.Parameter((torch.rand(rank, in_features, generator=generator) * 2 - 1) * bound)
        self.b = nn.Parameter(torch.zeros(out_features, rank))


class LoRAAdapter(nn.Module):
    """One :class:`LoRAPair` per target projection per decoder layer (state keys
    ``layers.{i}.{target}.a`` / ``.b``)."""

    def __init__(self, num_layers: int, shapes: Dict[str, Sequence[int]], rank: int, alpha: float,
                 seed: int = 0):
        super().__init__()
        if not isinstance(rank, int) or rank < 1:
            raise ValueError(f"LoRA rank must be an integer >= 1, got {rank!r}")
        if num_layers < 1:
            raise ValueError(f"LoRA needs at least one decoder layer, got {num_layers}")
        bad = [t for t in shapes if t not in ADAPTER_TARGETS]
        if bad or not shapes:
            raise ValueError(f"LoRA targets must be a non-empty subset of {sorted(ADAPTER_TARGETS)}, got "
                             f"{list(shapes)}")
        self.rank, self.alpha = rank, float(alpha)
        self.shapes = {t: (int(o), int(i)) for t, (o, i) in shapes.items()}
        g = torch.Generator().manual_seed(seed)
        self.layers = nn.ModuleList(
            nn.ModuleDict({t: LoRAPair(o, i, rank, g) for t, (o, i) in self.shapes.items()})
            for _ in range(num_layers))

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    @property
    def targets(self) -> Tuple[str, ...]:
        return tuple(self.shapes)

    def config(self) -> Dict:
        """What rebuilds this adapter's shape (stored in checkpoints)."""
        return {"num_layers": len(self.layers), "shapes": {t: list(s) for t, s in self.shapes.items()},
                "rank": self.rank, "alpha": self.alpha}

    @classmethod
    def from_config(cls, cfg: Dict) -> "LoRAAdapter":
        return cls(cfg["num_layers"], {t: tuple(s) for t, s in cfg["shapes"].items()}, cfg["rank"], cfg["alpha"])

    def delta(self, layer: int, target: str) -> torch.Tensor:
        """The merged update ``(alpha / r) B A`` [out, in] of one projection, in float64."""
        pair = self.layers[layer][target]
        return (pair.b.detach().double() @ pair.a.detach().double()) * self.scale


def hmt_backbone_weights(weights, params):
    """The float backbone weights the HMT parameters ``params`` were trained with: ``weights`` itself when
    the checkpoint carries no adapter (``params`` None or ``params.adapter`` None), else a copy with the
    LoRA adapter merged into the targeted projections (``W + (alpha / r) B A``, summed in float64, stored
    in the weights' dtype). Only the targeted tensors are new; the others are shared with ``weights``."""
    adapter = getattr(params, "adapter", None) if params is not None else None
    if adapter is None:
        return weights
    arch = weights.arch
    if len(adapter.layers) != arch.num_layers:
        raise ValueError(f"the HMT checkpoint's LoRA adapter has {len(adapter.layers)} decoder layers, the model "
                         f"{arch.num_layers}")
    state = dict(weights.state_dict)
    for i in range(arch.num_layers):
        for target in adapter.targets:
            name = f"model.layers.{i}.{ADAPTER_TARGETS[target]}.{target}.weight"
            if name not in state:
                raise ValueError(f"the HMT checkpoint's LoRA adapter targets {name}, which the weights lack")
            w = state[name]
            delta = adapter.delta(i, target)
            if tuple(w.shape) != tuple(delta.shape):
                raise ValueError(f"the HMT checkpoint's LoRA adapter of {name} is {tuple(delta.shape)}, the weight "
                                 f"{tuple(w.shape)}")
            state[name] = (w.double() + delta).to(w.dtype)
    return dataclasses.replace(weights, state_dict=state)


@contextlib.contextmanager
def adapter_applied(model, adapter):
    """Within the block, each targeted projection of the float, unrotated ``model`` outputs
    ``W x + (alpha / r) B (A x)`` (forward hooks; gradients reach A and B). No-op when ``adapter`` is None."""
    if adapter is None:
        yield
        return
    if model.rotated or model.spec.weight_bits:
        raise ValueError("a LoRA adapter is applied on the float, unrotated backbone only (quantized presets "
                         "build from the merged weights, hmt_backbone_weights)")
    if len(adapter.layers) != len(model.layers):
        raise ValueError(f"LoRA adapter of {len(adapter.layers)} layers on a model of {len(model.layers)}")
    handles = []

    def hook(pair, scale):
        def add(module, inputs, output):
            return output + (inputs[0] @ pair.a.t()) @ pair.b.t() * scale
        return add

    try:
        for layer, pairs in zip(model.layers, adapter.layers):
            for target, pair in pairs.items():
                unit = getattr(getattr(layer, ADAPTER_TARGETS[target]), target)
                handles.append(unit.linear.register_forward_hook(hook(pair, adapter.scale)))
        yield
    finally:
        for h in handles:
            h.remove()
