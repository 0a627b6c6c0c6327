"""From weights and a QuantSpec to a calibrated Brevitas model: rotate, calibrate (GPTQ + static
scales) on real text, ready for evaluation and export."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Optional

import torch

from .calibration import calibrate, init_weight_scales
from .model import LlamaModel, no_random_init
from .quant_presets import QuantSpec
from .learned_rotation import learn_rotations
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


# Bump when a change to rotation/calibration/GPTQ makes earlier cached models stale (the key also hashes
# the source code of this package, so this is a belt to those braces).
RECIPE_VERSION = 3
CACHE_SUFFIX = ".pt"


def default_cache_dir() -> Optional[Path]:
    """``$FLEXLLM_CACHE`` (empty or ``off`` disables caching), else ``~/.cache/flexllm``."""
    env = os.environ.get("FLEXLLM_CACHE")
    if env is not None:
        return None if env in ("", "off") else Path(env)
    return Path.home() / ".cache" / "flexllm"


# Subpackages of brevitas_models that never compute a calibrated model (HMT runs around the finished model
# and caches its own trained parameters): editing them keeps the calibrated-model cache valid.
NOT_CALIBRATION_CODE = ("hmt",)


CACHE_ARCHIVE_NAME = "calibrated"     # the archive name inside every cache entry (see build_model)


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """Hash of every source file of ``brevitas_models`` (the code that computes a calibrated model; not the
    subpackages in ``NOT_CALIBRATION_CODE``) and the versions of torch and Brevitas."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for f in sorted(root.rglob("*.py")):
        if f.relative_to(root).parts[0] in NOT_CALIBRATION_CODE:
            continue
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    for pkg in ("torch", "brevitas"):
        try:
            from importlib.metadata import version
            h.update(f"{pkg}={version(pkg)}".encode())
        except Exception:
            h.update(f"{pkg}=?".encode())
    return h.hexdigest()[:16]


def _cache_key(weights: LoadedWeights, spec: QuantSpec, calib: Optional[torch.Tensor],
               max_positions: Optional[int] = None, calib_text: Optional[str] = None) -> str:
    """Every byte that affects the calibrated model: all weights (whole tensors; or the ``fingerprint`` of a
    state dict that is a function of the architecture and the code, such as seeded random weights), the
    architecture, the recipe, the calibration text (its bytes) and tokens, the RoPE table size and the code
    version."""
    h = hashlib.sha256()
    text = calib_text if calib_text is not None else load_text()
    h.update(b"calibration-text:" + hashlib.sha256(text.encode("utf-8")).digest())
    h.update(json.dumps({"recipe": RECIPE_VERSION, "code": code_version(), "arch": weights.arch.to_dict(),
                         "spec": spec.to_dict(), "max_positions": max_positions},
                        sort_keys=True, default=str).encode())
    fingerprint = getattr(weights.state_dict, "fingerprint", None)
    if fingerprint is not None:
        h.update(b"weights-fingerprint:" + fingerprint.encode())
    else:
        for name in sorted(weights.state_dict):
            t = weights.state_dict[name].detach().contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().data if t.numel() else b"")
    if calib is not None:
        h.update(calib.contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def cache_entries(cache_dir: Optional[Path] = None):
    """The cached calibrated models: [{file, bytes, modified, and the metadata written with it}]."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out = []
    if cache_dir is None or not cache_dir.is_dir():
        return out
    for f in sorted(cache_dir.glob(f"*{CACHE_SUFFIX}")):
        meta = {}
        side = f.with_suffix(".json")
        if side.is_file():
            try:
                meta = json.loads(side.read_text())
            except ValueError:
                meta = {}
        st = f.stat()
        out.append({"file": str(f), "bytes": st.st_size, "modified": st.st_mtime, **meta})
    return out


def clear_cache(cache_dir: Optional[Path] = None) -> int:
    """Remove the cached calibrated models (only files this module wrote); returns how many."""
    entries = cache_entries(cache_dir)
    for e in entries:
        f = Path(e["file"])
        f.unlink(missing_ok=True)
        f.with_suffix(".json").unlink(missing_ok=True)
    return len(entries)


def restore_model(arch, spec: QuantSpec, state_dict, max_positions: Optional[int] = None,
                  assign: bool = False) -> LlamaModel:
    """A calibrated model from its saved state (cache entry or a project's reference model). ``assign``: the
    model's parameters and buffers become the tensors of ``state_dict`` (no copy; for a ``torch.load(...,
    mmap=True)`` state they stay pages of the file, read when first used)."""
    torch.manual_seed(arch.seed)
    with no_random_init():                 # every parameter comes from state_dict (strict) below
        model = LlamaModel(arch, spec, max_positions=max_positions)
    model.eval()
    if spec.rotated:
        model.rotated = True
        for layer in model.layers:
            layer.mlp.online_hadamard.enabled = True
    model.load_state_dict(state_dict, strict=True, assign=assign)
    return model


def smooth_model_seams(model: LlamaModel, weights: LoadedWeights, spec: QuantSpec, calib) -> None:
    """Seam smoothing (``spec.seam_smoothing``) and the rotations of the unrotated ``model``: the o/down
    seams, then the rotations (``spec.rotation``), then the norm seams in the rotated basis. Statistics come
    from a float model carried through the same steps, on the first calibration windows (or the text's
    last tokens when the recipe needs no calibration)."""
    from .quant_presets import quant_preset
    from .smoothing import AFTER_ROTATION, smooth_seams
    if calib is None:
        calib = calibration_windows(weights, spec)
    stats = LlamaModel(weights.arch, quant_preset("float"), max_positions=calib.shape[1])
    stats.eval()
    stats.load_hf_state_dict(weights.state_dict)
    before = [(k, a) for k, a in spec.seam_smoothing if k not in AFTER_ROTATION]
    after = [(k, a) for k, a in spec.seam_smoothing if k in AFTER_ROTATION]
    smooth_seams([model, stats], stats, calib, before)
    if spec.rotation == "hadamard":
        rotate(model)
        rotate(stats)
    smooth_seams([model], stats, calib, after)
    del stats


def build_model(weights: LoadedWeights, spec: QuantSpec, calib_text: Optional[str] = None,
                max_positions: Optional[int] = None, log: Optional[Callable[[str], None]] = None,
                cache_dir: Optional[Path] = None) -> LlamaModel:
    """Rotate and calibrate a model for ``spec``. Calibrated models are cached by a hash of the
    weights (whole tensors), architecture, recipe, calibration tokens and code: a cache hit restores the exact
    calibrated state (weights, scales) instead of recomputing GPTQ."""
    calib = calibration_windows(weights, spec, calib_text) if spec.needs_calibration else None
    cache_file = None
    if cache_dir is not None and calib is not None:
        cache_file = Path(cache_dir) / f"{spec.name}-{_cache_key(weights, spec, calib, max_positions, calib_text)}{CACHE_SUFFIX}"
        if cache_file.is_file():
            # mmap + assign: the model's parameters are the file's pages (private mapping: copy on write),
            # no in-memory copy of the state and no pass over it
            model = restore_model(weights.arch, spec, torch.load(cache_file, weights_only=True, mmap=True),
                                  max_positions, assign=True)
            model.state_file = cache_file
            if log:
                log(f"loaded calibrated model from {cache_file}")
            return model
    torch.manual_seed(weights.arch.seed)
    with no_random_init():                 # load_hf_state_dict sets every parameter
        model = LlamaModel(weights.arch, spec, max_positions=max_positions)
    model.eval()
    model.load_hf_state_dict(weights.state_dict)
    rotation_stats = None
    if spec.seam_smoothing:
        smooth_model_seams(model, weights, spec, calib)
    elif spec.rotation == "hadamard":
        rotate(model)
    elif spec.rotation == "learned":
        learned = learn_rotations(weights.state_dict, weights.arch, spec, calib, log=log)
        rotate(model, r1=learned.r1_rotation() if learned.losses else None, r2=learned.r2)
        rotation_stats = learned.stats
    if calib is not None:
        calibrate(model, calib, gptq=spec.gptq, log=log, weight_clip=spec.weight_clip_search,
                  target=spec.gptq_target)
    else:
        init_weight_scales(model)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        # saved as CACHE_ARCHIVE_NAME.pt (torch names the archive inside after the file), so that a
        # project's reference/calibrated.pt can be a byte copy of the entry
        tmp_dir = cache_file.with_suffix(".saving")
        tmp_dir.mkdir(exist_ok=True)
        tmp = tmp_dir / f"{CACHE_ARCHIVE_NAME}.pt"
        torch.save(model.state_dict(), tmp)
        cache_file.with_suffix(".json").write_text(json.dumps(
            {"source": weights.source, "preset": spec.name, "rotation": spec.rotation, "gptq": spec.gptq,
             "layers": weights.arch.num_layers, "hidden_size": weights.arch.hidden_size,
             "calibration_tokens": int(calib.numel()), "code": code_version(),
             "rotation_training": rotation_stats}, sort_keys=True))
        tmp.replace(cache_file)
        tmp_dir.rmdir()
        model.state_file = cache_file
    model.rotation_training = rotation_stats
    return model
