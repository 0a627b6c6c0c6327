"""Shared fixtures-as-functions for the tests (tiny random models, real text windows)."""

from functools import lru_cache

import torch

from brevitas_models.build import build_model
from brevitas_models.quant_presets import quant_preset
from brevitas_models.sources import load_source
from brevitas_models.text import encode, load_text, windows


@lru_cache(maxsize=None)
def tiny_weights():
    return load_source("preset:tiny")


def tiny_spec(preset: str, **over):
    return quant_preset(preset, calibration_tokens=512, calibration_ctx=128, **over)


def tiny_model(preset: str, **over):
    return build_model(tiny_weights(), tiny_spec(preset, **over))


@lru_cache(maxsize=None)
def text_tokens(tokenizer_key: str = "tiny") -> torch.Tensor:
    return encode(tiny_weights().tokenizer, load_text())


def text_windows(n: int, ctx: int) -> torch.Tensor:
    return windows(text_tokens()[: n * ctx], ctx)
