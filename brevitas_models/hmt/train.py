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

import ast
import hashlib
import json
import math
import sysconfig
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import torch

from .backbone import ADAPTER_TARGETS, LoRAAdapter, adapter_applied, adapter_shapes
from .memory import HMTParams
from .spec import HMTSpec
from .wrapper import HMTWrapper

TRAINING_TEXT_CHARS = 1_000_000
CHECKPOINT_FORMAT = 2              # 2: the checkpoint may carry a LoRA adapter of the backbone


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 120
    segments: int = 4                # segment blocks per step (backpropagation through all of them)
    lr: float = 2e-3                 # T, P_0, W_q, W_k
    clip: float = 1.0
    seed: int = 0
    lora_rank: int = 8               # 0: backbone frozen, no adapter
    lora_alpha: float = 16.0
    lora_targets: Tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    lora_lr: float = 1e-3
    warmup: int = 8                  # linear warm-up steps, then cosine decay to 10 % of the rates
    segment_length: Optional[int] = 128   # training segments' main-pass length L, at most the config's (None:
                                          # the config's); more recalls per CPU-second, evaluation at the config's
    lora_start: int = 0              # step from which the adapter trains (before it: the memory parameters only)
    recall_init: float = 1.0         # W_q, W_k start at recall_init * I (1: identity; < 1 softens the first
                                     # recalls' softmax, saturated at identity by post-norm states of norm ~51)

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {self.steps}")
        if self.segments < 2:
            raise ValueError(f"--segments must be >= 2 (memory flows between segments), got {self.segments}")
        if not isinstance(self.lora_rank, int) or self.lora_rank < 0:
            raise ValueError(f"--lora-rank must be an integer >= 0, got {self.lora_rank!r}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if self.segment_length is not None and (not isinstance(self.segment_length, int) or self.segment_length < 3):
            raise ValueError(f"--train-segment-length must be an integer >= 3, got {self.segment_length!r}")
        if not isinstance(self.recall_init, (int, float)) or isinstance(self.recall_init, bool) \
                or not self.recall_init > 0:
            raise ValueError(f"--recall-init must be a number > 0, got {self.recall_init!r}")
        if not isinstance(self.lora_start, int) or self.lora_start < 0:
            raise ValueError(f"--lora-start must be an integer >= 0, got {self.lora_start!r}")
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))
        bad = [t for t in self.lora_targets if t not in ADAPTER_TARGETS]
        if bad or (self.lora_rank and not self.lora_targets):
            raise ValueError(f"--lora-targets must be a non-empty subset of {sorted(ADAPTER_TARGETS)}, got "
                             f"{list(self.lora_targets)}")

    def training_spec(self, spec: HMTSpec) -> HMTSpec:
        """The HMT sizes the training segments use: ``spec`` with ``segment_length`` (if set and shorter than
        ``spec``'s) and the summary length scaled to keep the fraction j / block of ``spec`` (the memory
        parameters do not depend on L)."""
        if self.segment_length is None or self.segment_length >= spec.segment_length:
            return spec
        try:
            short = spec.replace(segment_length=self.segment_length, summary_tokens=None)
        except ValueError as e:
            raise ValueError(f"--train-segment-length {self.segment_length}: {e}") from e
        j = max(1, min(short.block, round(spec.summary * short.block / spec.block)))
        return short.replace(summary_tokens=j)

    def rate(self, step: int) -> float:
        """Multiplier of the learning rates at ``step`` (0-based): warm-up, then cosine to 0.1."""
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        span = max(1, self.steps - self.warmup - 1)
        t = min(1.0, (step - self.warmup) / span)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))


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


DOCSTRING_MIN_CHARS = 200
EXCLUDED_PACKAGES = ("pydoc_data", "test", "tests", "idlelib", "lib2to3", "site-packages")


def stdlib_docstring_text(max_chars: int = TRAINING_TEXT_CHARS) -> str:
    """English prose about Python that is not the evaluation text: the docstrings (module, class and function,
    at least ``DOCSTRING_MIN_CHARS`` long) of the standard library's sources in path order, excluding
    ``pydoc_data`` (the evaluation text) and the test suites, separated by blank lines, up to ``max_chars``."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(f for f in root.rglob("*.py")
                   if not set(f.relative_to(root).parts[:-1]) & set(EXCLUDED_PACKAGES))
    if not files:
        raise FileNotFoundError(f"no Python standard library sources in {root}")
    parts, size = [], 0
    for f in files:
        try:
            tree = ast.parse(f.read_text(encoding="utf-8", errors="replace"))
        except SyntaxError:
            continue                      # a few stdlib files are templates or for other Python versions
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= DOCSTRING_MIN_CHARS:
                    parts.append(doc)
                    size += len(doc) + 2
        if size >= max_chars:
            break
    return "\n\n".join(parts)[:max_chars]


TRAINING_TEXTS = {"docstrings": stdlib_docstring_text, "sources": stdlib_training_text}


TRAINING_CODE = ("spec.py", "memory.py", "basis.py", "wrapper.py", "backbone.py", "train.py")


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


def initial_params(model, settings: Optional[TrainSettings] = None, spec: Optional[HMTSpec] = None) -> HMTParams:
    """T and P_0 start at the mean token embedding (the backbone's input scale); W_q, W_k at
    ``settings.recall_init`` times the identity; the
    LoRA adapter of ``settings`` (rank > 0) at B = 0, so the adapted backbone starts as the backbone; the
    recall scale of ``spec`` (``HMT.RecallScale``) at ``RECALL_SCALE_INIT``."""
    spec = spec or HMTSpec()
    adapter = None
    if settings is not None and settings.lora_rank:
        adapter = LoRAAdapter(model.arch.num_layers, adapter_shapes(model.arch, settings.lora_targets),
                              settings.lora_rank, settings.lora_alpha, seed=settings.seed)
    params = HMTParams(model.arch.hidden_size, model.embed_tokens.weight.detach().mean(0), adapter=adapter,
                       recall_scale=spec.recall_scale, recall_residual=spec.recall_residual)
    if settings is not None and settings.recall_init != 1.0:
        with torch.no_grad():
            params.w_q.mul_(settings.recall_init)
            params.w_k.mul_(settings.recall_init)
    return params


def train(model, spec: HMTSpec, tokens: torch.Tensor, settings: TrainSettings,
          log: Optional[Callable[[str], None]] = None) -> Dict:
    """Train HMT parameters (and the LoRA adapter of ``settings``) on ``tokens`` (1-D) around the float
    ``model`` (its own weights stay frozen); returns {"params": HMTParams, "losses": [...], "seconds": s}."""
    from ..progress import bar
    log = log or (lambda msg: None)
    if not spec.memory:
        raise ValueError("training needs HMT with memory")
    spec = settings.training_spec(spec)
    span = settings.segments * spec.block
    if tokens.numel() < span:
        raise ValueError(f"the training text has {tokens.numel()} tokens; one step needs {span} "
                         f"({settings.segments} segment blocks of {spec.block})")
    torch.manual_seed(settings.seed)
    model.eval()
    model.requires_grad_(False)
    params = initial_params(model, settings, spec)
    wrapper = HMTWrapper(model, spec, params)
    groups = [{"params": params.memory_parameters(), "lr": settings.lr}]
    if params.adapter is not None:
        groups.append({"params": list(params.adapter.parameters()), "lr": settings.lora_lr})
    base = [g["lr"] for g in groups]
    opt = torch.optim.Adam(groups)
    gen = torch.Generator().manual_seed(settings.seed)
    starts = torch.randint(0, tokens.numel() - span + 1, (settings.steps,), generator=gen)
    losses = []
    progress = bar(settings.steps, "HMT training", "steps")
    t0, c0 = time.perf_counter(), time.process_time()
    with adapter_applied(model, params.adapter):
        for step, start in enumerate(starts.tolist()):
            for i, (g, lr) in enumerate(zip(opt.param_groups, base)):
                g["lr"] = 0.0 if i and step < settings.lora_start else lr * settings.rate(step)
            ids = tokens[start:start + span][None]
            out = wrapper.run(ids)
            loss = sum(o[0] for o in out) / sum(o[1] for o in out)
            opt.zero_grad()
            loss.backward()
            training = list(params.memory_parameters())
            if params.adapter is not None:
                if step < settings.lora_start:
                    params.adapter.zero_grad(set_to_none=True)
                else:
                    training += list(params.adapter.parameters())
            torch.nn.utils.clip_grad_norm_(training, settings.clip)
            opt.step()
            losses.append(float(loss.detach()))
            progress.update(1)
            progress.set_postfix_str(f"loss {losses[-1]:.3f}")
            if (step + 1) % 10 == 0 or step + 1 == settings.steps:
                recent = losses[-10:]
                log(f"HMT step {step + 1}/{settings.steps}: mean loss of the last {len(recent)} "
                    f"{sum(recent) / len(recent):.4f} ({time.perf_counter() - t0:.0f} s)")
    progress.close()
    return {"params": params, "losses": losses, "seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - c0}


# ---- checkpoints ---------------------------------------------------------------------------------
def save_checkpoint(path: Path, params: HMTParams, spec: HMTSpec, meta: Dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    adapter = None if params.adapter is None else params.adapter.config()
    torch.save({"format": CHECKPOINT_FORMAT, "hmt": spec.trained_fields(), "hidden_size": params.hidden_size,
                "adapter": adapter, "params": {k: v.detach().clone() for k, v in params.state_dict().items()},
                "meta": meta}, tmp)
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
    if not isinstance(data, dict) or "params" not in data or not isinstance(data.get("format"), int):
        raise ValueError(f"{path} is not an HMT checkpoint (flexllm hmt-train)")
    if data["format"] != CHECKPOINT_FORMAT:
        raise ValueError(f"HMT checkpoint {path} has format {data['format']}, this flexllm reads format "
                         f"{CHECKPOINT_FORMAT} (a LoRA adapter of the backbone since format 2): train it again "
                         "with `flexllm hmt-train`")
    if data["hidden_size"] != hidden_size:
        raise ValueError(f"HMT checkpoint {path} has hidden size {data['hidden_size']}, the model {hidden_size}")
    want = spec.trained_fields()
    for key, value in want.items():
        # checkpoints from before HMT.RecallScale / RecallResidual were trained without them
        got = data["hmt"].get(key, {"recall_scale": "none", "recall_residual": False}.get(key))
        if got != value:
            raise ValueError(f"HMT checkpoint {path} was trained with {key} = {got!r}, the config "
                             f"asks for {value!r}")
    adapter = None
    if data.get("adapter") is not None:
        try:
            adapter = LoRAAdapter.from_config(data["adapter"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"HMT checkpoint {path}: bad LoRA adapter description {data['adapter']!r}: {e}") from e
    params = HMTParams(hidden_size, adapter=adapter, recall_scale=spec.recall_scale,
                       recall_residual=spec.recall_residual)
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
            "lora_rank": settings.lora_rank, "lora_targets": list(settings.lora_targets),
            "lora_lr": settings.lora_lr, "warmup": settings.warmup, "lora_start": settings.lora_start,
            "recall_init": settings.recall_init,
            "train_segment_length": settings.training_spec(spec).segment_length,
            "train_summary_tokens": settings.training_spec(spec).summary,
            "seconds": round(result["seconds"], 1), "cpu_seconds": round(result["cpu_seconds"], 1), "losses": [round(x, 4) for x in result["losses"]]}
    if path is not None:
        save_checkpoint(path, result["params"], spec, meta)
    return result["params"], {"checkpoint": str(path) if path else None, "cached": False, **meta}
