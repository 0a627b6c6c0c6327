"""``flexllm dse``: a config file + board + objective -> the search result and the best config as YAML."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import yaml

from ..config import ConfigError, load_config
from ..cost.board import BOARDS
from .evaluate import Evaluator
from .search import Search
from .space import KNOBS, default_space, parse_space_overrides

DEFAULT_PROMPT = 1024
DEFAULT_NEW = 1024


def run_dse(config: Path, board: Optional[str] = None, objective: str = "end-to-end", prompt: Optional[int] = None,
            new_tokens: Optional[int] = None, context: Optional[int] = None, space: Sequence[str] = (),
            mode: str = "auto", out: Optional[Path] = None, log: Callable[[str], None] = lambda s: None,
            build_top: int = 0) -> Dict:
    """The search; with ``out`` the best config as YAML (and ``<out>.dse.json``); with ``build_top`` K, ``out`` is
    a sweep directory: the K best designs as configs plus a Makefile that builds and C-simulates them
    (``dse/sweep.py``), the best config as ``out/best.yaml``."""
    from ..preflight import model_arch

    if build_top and out is None:
        raise ConfigError("--build-top K needs --out DIR (the sweep directory)")
    t0 = time.perf_counter()
    cfg = load_config(config)
    b = BOARDS[board or cfg["Board"]] if (board or cfg["Board"]) in BOARDS else None
    if b is None:
        raise ConfigError(f"--board {board!r}: unknown board; known: {sorted(BOARDS)}")
    p, d = cfg["Prefill"], cfg["Decode"]
    prompt = int(prompt or min(DEFAULT_PROMPT, p["MaxSeqLen"]))
    new_tokens = int(new_tokens or min(DEFAULT_NEW, d["MaxNewTokens"]))
    context = int(context or prompt)
    if prompt > p["MaxSeqLen"]:
        raise ConfigError(f"--prompt {prompt} exceeds Prefill.MaxSeqLen {p['MaxSeqLen']} of {config}")
    if prompt + new_tokens > d["MaxContext"]:
        raise ConfigError(f"--prompt {prompt} + --new {new_tokens} exceed Decode.MaxContext {d['MaxContext']} of {config}")
    if context > d["MaxContext"]:
        raise ConfigError(f"--context {context} exceeds Decode.MaxContext {d['MaxContext']} of {config}")
    arch, spec = model_arch(cfg), cfg.quant_spec()
    sp = parse_space_overrides(default_space(cfg, arch, spec, b), space)
    log(f"board {b.name}: {sp.size():,} designs ({', '.join(f'{k} {len(v)}' for k, v in sp.values)})")
    ev = Evaluator(cfg, arch, spec, b, prompt, new_tokens, context)
    result = Search(ev, sp, objective, mode, log).run()
    result.update({"config": str(config), "board": b.name, "board_file": b.source_file,
                   "board_unverified": list(b.unverified), "prompt": prompt, "new_tokens": new_tokens,
                   "context": context, "clock_MHz": round(ev.clock_mhz, 1), "space": sp.as_dict(),
                   "space_size": sp.size(), "search_seconds": round(time.perf_counter() - t0, 2)})
    best = result["best"]
    if best is None:
        raise ConfigError(f"no design in the space fits the {b.name} budget (config {config})")
    result["best_config"] = ev.config_data(best["knobs"])
    if build_top:
        from .sweep import write_sweep
        result["sweep"] = write_sweep(result, ev.config_data, Path(out), int(build_top))
        write_best(result, Path(out) / "best.yaml")
        result["out"] = str(Path(out) / "best.yaml")
    elif out is not None:
        write_best(result, Path(out))
        result["out"] = str(out)
    return result


def write_best(result: Dict, out: Path) -> None:
    """The best config as YAML ready for ``flexllm build`` and the whole result next to it (``*.dse.json``,
    which ``flexllm report`` plots)."""
    best = result["best"]
    m = best["metrics"]
    head = [f"# flexllm dse {result['config']} --board {result['board']} --objective {result['objective']} "
            f"--prompt {result['prompt']} --new {result['new_tokens']}",
            f"# modeled (cost model, not synthesis): decode {m['decode_tokens_per_s']:.1f} tokens/s at "
            f"{result['context']} keys, prefill of {result['prompt']} tokens {m['prefill_seconds']:.3f} s, "
            f"end to end {m['end_to_end_seconds']:.3f} s; largest resource share {100 * m['utilization']:.1f} %",
            "# searched knobs: " + ", ".join(f"{k}={best['knobs'][k]}" for k in KNOBS)]
    data = copy.deepcopy(result["best_config"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(head) + "\n" + yaml.safe_dump(data, sort_keys=False))
    out.with_suffix(".dse.json").write_text(json.dumps({k: v for k, v in result.items()}, indent=1, default=str))
