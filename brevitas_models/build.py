"""From weights and a QuantSpec to a calibrated Brevitas model: rotate, calibrate (GPTQ + static
scales) on real text, ready for evaluation and export."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Optional

import torch

from .calibration import calibrate, init_weight_scales
from .model import LlamaModel
from .quant_presets import QuantSpec
from .rotation import rotate
from .sources import LoadedWeights
from .text import encode, load_text, windows


def calibration_windows(weights: LoadedWeights, spec: QuantSpec, text: Optional[str] = None) -> torch.Tensor:
    """The last ``spec.calibration_tokens`` tokens of the text as [N, ctx] windows, ctx =
    calibration_ctx capped by the model's maximum position."""
    tokens = encode(weights.tokenizer, text if text is not None else load_text())
    need = spec.calibration_tokens
    if tokens.numel() < need:
        raise ValueError(f"calibration needs {need} tokens, the text has {tokens.numel()}")
    ctx = min(spec.calibration_ctx, need, weights.arch.max_position_embeddings)
    return windows(tokens[tokens.numel() - need:], ctx)


# Bump when a change to rotation/calibration/GPTQ makes earlier cached models stale.
RECIPE_VERSION = 2


def default_cache_dir() -> Optional[Path]:
    """``$FLEXLLM_CACHE`` (empty or ``off`` disables caching), else ``~/.cache/flexllm``."""
    env = os.environ.get("FLEXLLM_CACHE")
    if env is not None:
        return None if env in ("", "off") else Path(env)
    return Path.home() / ".cache" / "flexllm"


def _cache_key(weights: LoadedWeights, spec: QuantSpec, calib: Optional[torch.Tensor]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"recipe": RECIPE_VERSION, "arch": weights.arch.to_dict(), "spec": spec.to_dict(),
                         "source": weights.source}, sort_keys=True, default=str).encode())
    for name in sorted(weights.state_dict):
        t = weights.state_dict[name]
        h.update(name.encode())
        h.update(t.detach().contiguous().view(torch.uint8).numpy()[:: max(1, t.numel() // 4096)].tobytes())
    if calib is not None:
        h.update(calib.numpy().tobytes())
    return h.hexdigest()[:24]


def build_model(weights: LoadedWeights, spec: QuantSpec, calib_text: Optional[str] = None,
                max_positions: Optional[int] = None, log: Optional[Callable[[str], None]] = None,
                cache_dir: Optional[Path] = None) -> LlamaModel:
    """Rotate and calibrate a model for ``spec``. Calibrated models are cached by a hash of the
    weights (sampled), architecture, recipe and calibration tokens: a cache hit restores the exact
    calibrated state (weights, scales) instead of recomputing GPTQ."""
    torch.manual_seed(weights.arch.seed)
    model = LlamaModel(weights.arch, spec, max_positions=max_positions)
    model.eval()
    calib = calibration_windows(weights, spec, calib_text) if spec.needs_calibration else None
    cache_file = None
    if cache_dir is not None and calib is not None:
        cache_file = Path(cache_dir) / f"{spec.name}-{_cache_key(weights, spec, calib)}.pt"
        if cache_file.is_file():
            if spec.rotation == "hadamard":
                model.rotated = True
                for layer in model.layers:
                    layer.mlp.online_hadamard.enabled = True
            model.load_state_dict(torch.load(cache_file, weights_only=True), strict=True)
            if log:
                log(f"loaded calibrated model from {cache_file}")
            return model
    model.load_hf_state_dict(weights.state_dict)
    if spec.rotation == "hadamard":
        rotate(model)
    if calib is not None:
        calibrate(model, calib, gptq=spec.gptq, log=log)
    else:
        init_weight_scales(model)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        tmp.replace(cache_file)
    return model
