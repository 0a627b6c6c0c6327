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


def tiny_float_model(rotated: bool = False):
    """The tiny model in float (R1/R2 folded in when ``rotated``), in eval mode."""
    from brevitas_models.model import LlamaModel
    from brevitas_models.rotation import rotate

    w = tiny_weights()
    m = LlamaModel(w.arch, quant_preset("float"))
    m.load_hf_state_dict(w.state_dict)
    if rotated:
        rotate(m)
    return m.eval()


def tiny_spec(preset: str, **over):
    return quant_preset(preset, calibration_tokens=512, calibration_ctx=128, **over)


def tiny_model(preset: str, **over):
    return build_model(tiny_weights(), tiny_spec(preset, **over))


@lru_cache(maxsize=None)
def text_tokens(tokenizer_key: str = "tiny") -> torch.Tensor:
    return encode(tiny_weights().tokenizer, load_text())


def text_windows(n: int, ctx: int) -> torch.Tensor:
    return windows(text_tokens()[: n * ctx], ctx)


def write_tiny_hf_dir(out, seed: int = 0):
    """A Hugging Face Llama directory with the tiny preset's shapes (random weights), a byte-level BPE
    tokenizer (256 byte tokens) and config.json: an ``hf:`` source that builds in seconds."""
    from pathlib import Path

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from brevitas_models.arch import preset

    arch = preset("tiny")
    out = Path(out)
    cfg = LlamaConfig(hidden_size=arch.hidden_size, num_hidden_layers=arch.num_layers,
                      num_attention_heads=arch.num_heads, num_key_value_heads=arch.num_kv_heads,
                      head_dim=arch.head_dim, intermediate_size=arch.intermediate_size,
                      vocab_size=arch.vocab_size, rms_norm_eps=arch.rms_norm_eps,
                      tie_word_embeddings=arch.tie_embeddings,
                      rope_parameters={"rope_type": "default", "rope_theta": arch.rope_theta},
                      max_position_embeddings=arch.max_position_embeddings)
    torch.manual_seed(seed)
    LlamaForCausalLM(cfg).eval().save_pretrained(out, safe_serialization=True)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    PreTrainedTokenizerFast(tokenizer_object=tok).save_pretrained(out)
    return out
