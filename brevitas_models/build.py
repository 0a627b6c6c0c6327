"""From weights and a QuantSpec to a calibrated Brevitas model: rotate, calibrate (GPTQ + static
scales) on real text, ready for evaluation and export."""

from __future__ import annotations

from typing import Callable, Optional

import torch

from .calibration import calibrate, init_weight_scales
from .model import LlamaModel
from .quant_presets import QuantSpec
from .rotation import rotate
from .sources import LoadedWeights
from .text import encode, load_text, windows


def calibration_windows(weights: LoadedWeights, spec: QuantSpec, text: Optional[str] = None) -> torch.Tensor:
    """The last ``spec.calibration_tokens`` tokens of the text as [N, calibration_ctx] windows."""
    tokens = encode(weights.tokenizer, text if text is not None else load_text())
    need = spec.calibration_tokens
    if tokens.numel() < need:
        raise ValueError(f"calibration needs {need} tokens, the text has {tokens.numel()}")
    return windows(tokens[tokens.numel() - need:], min(spec.calibration_ctx, need))


def build_model(weights: LoadedWeights, spec: QuantSpec, calib_text: Optional[str] = None,
                max_positions: Optional[int] = None, log: Optional[Callable[[str], None]] = None) -> LlamaModel:
    torch.manual_seed(weights.arch.seed)
    model = LlamaModel(weights.arch, spec, max_positions=max_positions)
    model.load_hf_state_dict(weights.state_dict)
    model.eval()
    if spec.rotation == "hadamard":
        rotate(model)
    if spec.needs_calibration:
        calibrate(model, calibration_windows(weights, spec, calib_text), gptq=spec.gptq, log=log)
    else:
        init_weight_scales(model)
    return model
