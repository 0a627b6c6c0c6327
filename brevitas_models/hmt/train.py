"""Training of the HMT memory parameters (T, P_0, W_q, W_k) on CPU with the backbone frozen.

Each step takes a random window of ``segments`` consecutive segment blocks of the training text and
backpropagates the mean next-token loss of all of them through the whole recurrence (summary passes,
recalls, main passes and the memories carried between segments). The backbone is the float model;
quantized presets use the trained parameters unchanged (they are fp32 in hardware).

Training text: by default the Python standard library's own sources (``Lib/*.py`` of the running
interpreter, sorted by file name), which never include the evaluation text (``pydoc_data/topics.py``).

Checkpoints are cached in ``<cache>/hmt/`` keyed on every input: the backbone weights, the HMT sizes,
the training tokens, the optimiser settings and the code of this subpackage.
"""

from __future__ import annotations

import hashlib
import json
import sysconfig
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, Optional

import torch

from .memory import HMTParams
from .spec import HMTSpec
from .wrapper import HMTWrapper

TRAINING_TEXT_CHARS = 1_000_000
CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 40
    segments: int = 3                # segment blocks per step (backpropagation through all of them)
    lr: float = 2e-3
    clip: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {self.steps}")
        if self.segments < 2:
            raise ValueError(f"--segments must be >= 2 (memory flows between segments), got {self.segments}")


def stdlib_training_text(max_chars: int = TRAINING_TEXT_CHARS) -> str:
    """The standard library's top-level ``*.py`` sources in file-name order, up to ``max_chars``."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(root.glob("*.py"))
    if not files:
        raise FileNotFoundError(f"no Python standard library sources in {root}")
    parts, size = [], 0
    for f in files:
        text = f.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        size += len(text)
        if size >= max_chars:
            break
    return "".join(parts)[:max_chars]


TRAINING_CODE = ("spec.py", "memory.py", "basis.py", "wrapper.py", "train.py")


def code_version() -> str:
    """Hash of the HMT sources that shape a trained checkpoint (``TRAINING_CODE``)."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for name in TRAINING_CODE:
        h.update(name.encode() + b"\0" + (root / name).read_bytes())
    return h.hexdigest()[:16]


def checkpoint_key(weights, spec: HMTSpec, tokens: torch.Tensor, settings: TrainSettings) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"format": CHECKPOINT_FORMAT, "code": code_version(), "arch": weights.arch.to_dict(),
                         "hmt": spec.trained_fields(), "train": asdict(settings)},
                        sort_keys=True, default=str).encode())
    for name in sorted(weights.state_dict):
        t = weights.state_dict[name].detach().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().data if t.numel() else b"")
    h.update(tokens.contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def initial_params(model) -> HMTParams:
    """T and P_0 start at the mean token embedding (the backbone's input scale); W_q, W_k at identity."""
    return HMTParams(model.arch.hidden_size, model.embed_tokens.weight.detach().mean(0))


def train(model, spec: HMTSpec, tokens: torch.Tensor, settings: TrainSettings,
          log: Optional[Callable[[str], None]] = None) -> Dict:
    """Train HMT parameters on ``tokens`` (1-D) around the frozen float ``model``; returns
    {"params": HMTParams, "losses": [...], "seconds": s}."""
    from ..progress import bar
    log = log or (lambda msg: None)
    if not spec.memory:
        raise ValueError("training needs HMT with memory")
    span = settings.segments * spec.block
    if tokens.numel() < span:
        raise ValueError(f"the training text has {tokens.numel()} tokens; one step needs {span} "
                         f"({settings.segments} segment blocks of {spec.block})")
    torch.manual_seed(settings.seed)
    model.eval()
    model.requires_grad_(False)
    params = initial_params(model)
    wrapper = HMTWrapper(model, spec, params)
    opt = torch.optim.Adam(params.parameters(), lr=settings.lr)
    gen = torch.Generator().manual_seed(settings.seed)
    starts = torch.randint(0, tokens.numel() - span + 1, (settings.steps,), generator=gen)
    losses = []
    progress = bar(settings.steps, "HMT training", "steps")
    t0 = time.perf_counter()
    for step, start in enumerate(starts.tolist()):
        ids = tokens[start:start + span][None]
        out = wrapper.run(ids)
        loss = sum(o[0] for o in out) / sum(o[1] for o in out)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params.parameters(), settings.clip)
        opt.step()
        losses.append(float(loss.detach()))
        progress.update(1)
        progress.set_postfix_str(f"loss {losses[-1]:.3f}")
        if (step + 1) % 10 == 0 or step + 1 == settings.steps:
            recent = losses[-10:]
            log(f"HMT step {step + 1}/{settings.steps}: mean loss of the last {len(recent)} "
                f"{sum(recent) / len(recent):.4f} ({time.perf_counter() - t0:.0f} s)")
    progress.close()
    return {"params": params, "losses": losses, "seconds": time.perf_counter() - t0}


# ---- checkpoints ---------------------------------------------------------------------------------
def save_checkpoint(path: Path, params: HMTParams, spec: HMTSpec, meta: Dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"format": CHECKPOINT_FORMAT, "hmt": spec.trained_fields(), "hidden_size": params.hidden_size,
                "params": {k: v.detach().clone() for k, v in params.state_dict().items()}, "meta": meta}, tmp)
    path.with_suffix(".json").write_text(json.dumps({"hmt": spec.trained_fields(), **meta}, sort_keys=True))
    tmp.replace(path)


def load_checkpoint(path, spec: HMTSpec, hidden_size: int) -> HMTParams:
    """HMT parameters from a checkpoint written by :func:`save_checkpoint`, checked against the HMT sizes
    and the model's hidden size (a mismatch names the field and the file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"HMT checkpoint not found: {path}")
    try:
        data = torch.load(path, weights_only=True)
    except Exception as e:
        raise ValueError(f"HMT checkpoint {path} cannot be read: {type(e).__name__}: {e}") from e
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT or "params" not in data:
        raise ValueError(f"{path} is not an HMT checkpoint of format {CHECKPOINT_FORMAT} (flexllm hmt-train)")
    if data["hidden_size"] != hidden_size:
        raise ValueError(f"HMT checkpoint {path} has hidden size {data['hidden_size']}, the model {hidden_size}")
    want = spec.trained_fields()
    for key, value in want.items():
        if data["hmt"].get(key) != value:
            raise ValueError(f"HMT checkpoint {path} was trained with {key} = {data['hmt'].get(key)!r}, the config "
                             f"asks for {value!r}")
    params = HMTParams(hidden_size)
    try:
        params.load_state_dict(data["params"], strict=True)
    except RuntimeError as e:
        raise ValueError(f"HMT checkpoint {path}: {str(e).splitlines()[0]}") from e
    for name, t in params.named_parameters():
        if not torch.isfinite(t).all():
            raise ValueError(f"HMT checkpoint {path}: parameter {name} holds NaN/Inf")
    return params


def train_cached(weights, model, spec: HMTSpec, tokens: torch.Tensor, settings: TrainSettings,
                 cache_dir: Optional[Path], log: Optional[Callable[[str], None]] = None):
    """(params, info): the cached checkpoint for these exact inputs, else train and cache it."""
    log = log or (lambda msg: None)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / "hmt" / f"hmt-{checkpoint_key(weights, spec, tokens, settings)}.pt"
        if path.is_file():
            log(f"loaded trained HMT parameters from {path}")
            meta = json.loads(path.with_suffix(".json").read_text()) if path.with_suffix(".json").is_file() else {}
            return load_checkpoint(path, spec, model.arch.hidden_size), {"checkpoint": str(path), "cached": True,
                                                                        **meta}
    result = train(model, spec, tokens, settings, log)
    meta = {"source": weights.source, "steps": settings.steps, "segments_per_step": settings.segments,
            "lr": settings.lr, "seed": settings.seed, "training_tokens": int(tokens.numel()),
            "seconds": round(result["seconds"], 1), "losses": [round(x, 4) for x in result["losses"]]}
    if path is not None:
        save_checkpoint(path, result["params"], spec, meta)
    return result["params"], {"checkpoint": str(path) if path else None, "cached": False, **meta}
