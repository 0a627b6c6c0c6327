"""Load a local Hugging Face Llama checkpoint directory (config.json + *.safetensors).

:func:`load_hf_dir` returns ``(LlamaArch, {hf_name: float32 tensor})`` with the same naming as the
GGUF loader (``lm_head.weight`` only when the embeddings are untied); :func:`load_hf_tokenizer`
loads the directory's tokenizer with ``local_files_only=True``.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Dict, List, Tuple, Union

import torch

from brevitas_models.arch import LlamaArch, RopeScaling
from brevitas_models.loaders.gguf import expected_hf_shapes

PathLike = Union[str, os.PathLike]

__all__ = ["load_hf_dir", "load_hf_tokenizer", "arch_from_hf_config", "hf_arch"]

_INDEX = "model.safetensors.index.json"
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def _check_dir(path: PathLike) -> pathlib.Path:
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Hugging Face model directory not found: {path}")
    if not path.is_dir():
        raise ValueError(f"{path}: expected a Hugging Face model directory (with config.json), got a file")
    return path


def _rope_scaling(cfg_file: pathlib.Path, rs: Any) -> Any:
    """``None`` for default RoPE, a :class:`RopeScaling` for llama3; error for anything else."""
    if rs is None:
        return None
    if not isinstance(rs, dict):
        raise ValueError(f"{cfg_file}: rope_scaling/rope_parameters must be an object, got {rs!r}")
    rope_type = rs.get("rope_type", rs.get("type", "default"))
    if rope_type in (None, "default"):
        return None
    if rope_type != "llama3":
        raise ValueError(f"{cfg_file}: unsupported RoPE scaling type {rope_type!r} (only 'llama3' is supported)")
    keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
    missing = [k for k in keys if rs.get(k) is None]
    if missing:
        raise ValueError(f"{cfg_file}: llama3 RoPE scaling is missing {missing}")
    try:
        return RopeScaling(factor=float(rs["factor"]), low_freq_factor=float(rs["low_freq_factor"]),
                           high_freq_factor=float(rs["high_freq_factor"]),
                           original_max_position_embeddings=int(rs["original_max_position_embeddings"]))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{cfg_file}: invalid llama3 RoPE scaling {rs!r} ({exc})") from exc


def arch_from_hf_config(cfg: Dict[str, Any], cfg_file: PathLike = "config.json", seed: int = 0) -> LlamaArch:
    """Build a :class:`LlamaArch` from a Llama ``config.json`` dict (transformers 4 or 5 layout)."""
    cfg_file = pathlib.Path(cfg_file)
    model_type = cfg.get("model_type")
    if model_type != "llama":
        raise ValueError(f"{cfg_file}: unsupported model_type {model_type!r} (only 'llama' is supported)")
    if cfg.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{cfg_file}: unsupported hidden_act {cfg.get('hidden_act')!r} (expected 'silu')")
    for flag in ("attention_bias", "mlp_bias"):
        if cfg.get(flag):
            raise ValueError(f"{cfg_file}: unsupported {flag}=true")
    missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                           "vocab_size") if cfg.get(k) is None]
    if missing:
        raise ValueError(f"{cfg_file}: missing required key(s) {missing}")

    # transformers 5 keeps rope_theta (and the scaling) in `rope_parameters`; 4.x uses top-level
    # `rope_theta` + `rope_scaling`.
    rope_params = cfg.get("rope_parameters")
    if rope_params is not None and not isinstance(rope_params, dict):
        raise ValueError(f"{cfg_file}: rope_parameters must be an object, got {rope_params!r}")
    rope_params = rope_params or {}
    theta = rope_params.get("rope_theta", cfg.get("rope_theta", 10000.0))
    scaling_src = rope_params if rope_params.get("rope_type", rope_params.get("type")) not in (None, "default") \
        else cfg.get("rope_scaling")
    rope_scaling = _rope_scaling(cfg_file, scaling_src)

    n_heads = cfg["num_attention_heads"]
    try:
        return LlamaArch(
            hidden_size=cfg["hidden_size"], num_layers=cfg["num_hidden_layers"], num_heads=n_heads,
            num_kv_heads=cfg.get("num_key_value_heads") or n_heads,
            intermediate_size=cfg["intermediate_size"], vocab_size=cfg["vocab_size"],
            head_dim=cfg.get("head_dim"), rope_theta=float(theta),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)), rope_scaling=rope_scaling,
            max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)), seed=seed)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{cfg_file}: invalid Llama configuration: {exc}") from exc


def _weight_files(path: pathlib.Path) -> List[pathlib.Path]:
    index = path / _INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{index}: invalid safetensors index ({type(exc).__name__}: {exc})") from exc
        files = [path / f for f in sorted(set(weight_map.values()))]
        absent = [str(f) for f in files if not f.is_file()]
        if absent:
            raise FileNotFoundError(f"{index}: referenced shard(s) missing: {absent}")
        return files
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{path}: no *.safetensors weights found (pytorch .bin is not supported)")
    return files


def hf_arch(path: PathLike) -> LlamaArch:
    """The architecture of a local HF Llama directory from its config.json alone."""
    return _read_config(_check_dir(path))[1]


def _read_config(path: pathlib.Path):
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{cfg_file}: config.json not found in Hugging Face model directory {path}")
    try:
        cfg = json.loads(cfg_file.read_text())
    except ValueError as exc:
        raise ValueError(f"{cfg_file}: invalid JSON ({exc})") from exc
    if not isinstance(cfg, dict):
        raise ValueError(f"{cfg_file}: expected a JSON object")
    return cfg_file, arch_from_hf_config(cfg, cfg_file)


def load_hf_dir(path: PathLike) -> Tuple[LlamaArch, Dict[str, torch.Tensor]]:
    """Load a local HF Llama directory as ``(LlamaArch, {hf_name: float32 tensor})``."""
    from safetensors import safe_open

    path = _check_dir(path)
    cfg_file, arch = _read_config(path)
    expected = expected_hf_shapes(arch)

    state: Dict[str, torch.Tensor] = {}
    unexpected: List[str] = []
    for f in _weight_files(path):
        try:
            with safe_open(str(f), framework="pt", device="cpu") as sf:
                for name in sf.keys():
                    if name.endswith(_IGNORED_SUFFIXES):
                        continue
                    if name == "lm_head.weight" and arch.tie_embeddings:
                        continue  # tied: the embedding is the head
                    if name not in expected:
                        unexpected.append(name)
                        continue
                    if name in state:
                        raise ValueError(f"{f}: tensor {name!r} appears in more than one shard")
                    t = sf.get_tensor(name)
                    if tuple(t.shape) != expected[name]:
                        raise ValueError(f"{f}: tensor {name!r} has shape {tuple(t.shape)}, "
                                         f"expected {expected[name]} from {cfg_file.name}")
                    if not t.is_floating_point():
                        raise ValueError(f"{f}: tensor {name!r} has non-float dtype {t.dtype}")
                    t = t.to(torch.float32).contiguous()
                    if not torch.isfinite(t).all():
                        bad = int((~torch.isfinite(t)).sum())
                        raise ValueError(f"{f}: tensor {name!r} contains {bad} NaN/Inf value(s)")
                    state[name] = t
        except ValueError:
            raise
        except Exception as exc:  # safetensors raises its own error types on corrupt files
            raise ValueError(f"{f}: cannot read safetensors file ({type(exc).__name__}: {exc})") from exc
    if unexpected:
        raise ValueError(f"{path}: unexpected tensor(s) for a llama model with {arch.num_layers} layers: "
                         f"{sorted(unexpected)[:10]}{' ...' if len(unexpected) > 10 else ''}")
    missing = [k for k in expected if k not in state]
    if missing:
        raise ValueError(f"{path}: missing tensor(s) in the safetensors weights: {missing[:10]}"
                         f"{' ...' if len(missing) > 10 else ''}")
    return arch, {k: state[k] for k in expected}


def load_hf_tokenizer(path: PathLike):
    """``AutoTokenizer`` for a local HF directory (never touches the network)."""
    from transformers import AutoTokenizer

    path = _check_dir(path)
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: cannot load a tokenizer from this directory ({type(exc).__name__}: {exc})") from exc
