"""Model sources: ``gguf:PATH``, ``gguf-package:NAME``, ``hf:DIR``, ``preset:NAME`` (random weights),
or an explicit architecture (random weights). Returns the architecture, HF-named float32 weights and
a tokenizer."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

import torch

from .arch import LlamaArch, preset
from .text import ByteTokenizer

SOURCE_KINDS = ("gguf", "gguf-package", "hf", "preset")


@dataclass
class LoadedWeights:
    arch: LlamaArch
    state_dict: Mapping[str, torch.Tensor]      # a dict, or a LazyRandomStateDict (generated on first use)
    tokenizer: Any
    source: str


def parse_source(source: str):
    kind, sep, value = source.partition(":")
    if not sep or kind not in SOURCE_KINDS or not value:
        raise ValueError(f"Model.Source {source!r} must be one of gguf:PATH, gguf-package:NAME, hf:DIR, "
                         f"preset:NAME")
    return kind, value


def load_arch(source: Optional[str], architecture: Optional[Dict[str, Any]] = None) -> LlamaArch:
    """The architecture :func:`load_source` would return, from the checkpoint's header alone (HF
    config.json, GGUF metadata) -- no weights are read: what the config checks need, in milliseconds."""
    if source is None:
        if not architecture:
            raise ValueError("Model: give Source or Architecture")
        return LlamaArch.from_dict(architecture)
    kind, value = parse_source(source)
    if kind == "preset":
        arch = preset(value)
        return LlamaArch.from_dict({**dataclasses.asdict(arch), **architecture}) if architecture else arch
    _check_checkpoint_overrides(source, architecture)
    if kind in ("gguf", "gguf-package"):
        from .loaders.gguf import find_package_gguf, gguf_arch
        arch = gguf_arch(find_package_gguf(value) if kind == "gguf-package" else value)
    else:
        from .loaders.hf import hf_arch
        arch = hf_arch(value)
    return _truncated(arch, architecture)


def _check_checkpoint_overrides(source, architecture):
    if architecture:
        allowed = {"num_layers"}
        bad = sorted(set(architecture) - allowed)
        if bad:
            raise ValueError(f"Model.Architecture: key(s) {bad} cannot override a loaded checkpoint "
                             f"({source}); only {sorted(allowed)} can")


def _truncated(arch: LlamaArch, architecture) -> LlamaArch:
    if not architecture:
        return arch
    n = architecture["num_layers"]
    if not isinstance(n, int) or isinstance(n, bool) or not 0 < n <= arch.num_layers:
        raise ValueError(f"Model.Architecture.num_layers must be 1..{arch.num_layers}, got {n!r}")
    return dataclasses.replace(arch, num_layers=n)


def load_source(source: Optional[str], architecture: Optional[Dict[str, Any]] = None) -> LoadedWeights:
    """Load weights. ``architecture`` (a Model.Architecture dict) alone defines a random-weight model;
    with ``preset:NAME`` it overrides preset fields (e.g. num_layers, seed)."""
    from .loaders.random_init import LazyRandomStateDict
    if source is None or parse_source(source)[0] == "preset":
        arch = load_arch(source, architecture)
        return LoadedWeights(arch, LazyRandomStateDict(arch), ByteTokenizer(arch.vocab_size), source or "architecture")
    kind, value = parse_source(source)
    _check_checkpoint_overrides(source, architecture)
    if kind in ("gguf", "gguf-package"):
        from .loaders.gguf import find_package_gguf, load_gguf, load_gguf_tokenizer
        path = find_package_gguf(value) if kind == "gguf-package" else value
        arch, sd = load_gguf(path)
        tok = load_gguf_tokenizer(path)
    else:
        from .loaders.hf import load_hf_dir, load_hf_tokenizer
        arch, sd = load_hf_dir(value)
        tok = load_hf_tokenizer(value)
    if architecture:
        arch = _truncated(arch, architecture)
        sd = {k: v for k, v in sd.items()
              if not k.startswith("model.layers.") or int(k.split(".")[2]) < arch.num_layers}
    return LoadedWeights(arch, sd, tok, source)
