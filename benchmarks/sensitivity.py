"""Per-site sensitivity of the calibrated flexllm-w4a4 model: which quantization point costs how much.

One calibrated model (GPTQ, rotations, static scales) is built or loaded once; then, for every site, only
that site's quantizer is swapped and the perplexity re-measured (weights and every other quantizer stay
as calibrated):

* ``up``: the site's per-token linear input goes from uint4 asymmetric to int8 (all other sites uint4):
  how much perplexity this site alone would win with an 8-bit input;
* ``down``: every linear input at int8 except this site at uint4: how much this site alone costs;
* static sites (Q/K/V and the KV cache, softmax output P) are switched from their 8-bit format to fp32.

Linear-input sites (every decoder layer at once): ``qkv`` (the shared q/k/v input), ``o_proj``,
``gate_up`` (the shared gate/up input), ``down_proj``, and ``lm_head``.

    python benchmarks/sensitivity.py [--config configs/smollm2_135m_u280.yaml] [--max-tokens 2048]
        [--state calibrated.pt] [--directions up down static clip] [--out sensitivity.json]

The model has the paper's formats (the preset without its default clip ratios and weight-clip search) unless
``--preset-defaults`` is given. ``--state`` loads a calibrated flexllm-w4a4 state dict (e.g. an entry of ``~/.cache/flexllm``) instead of
building (or loading from the cache) the model of the current code. Prints one JSON line per row as it
finishes, then a markdown table. The model is built once; each row is one perplexity evaluation
(about 10 s per 512-token window of SmolLM2 on two free cores: the default 2,048 tokens and the
directions up, down and static are 14 evaluations, about 10 minutes; several times that on a loaded
machine).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from brevitas_models.build import build_model, default_cache_dir, restore_model
from brevitas_models.evaluation import perplexity
from brevitas_models.model import LlamaModel, TokenQuant
from brevitas_models.text import encode, load_text, windows
from flexllm_plugin.config import load_config
from flexllm_plugin.resources import config_path

LINEAR_SITES = ("qkv", "o_proj", "gate_up", "down_proj", "lm_head")
STATIC_SITES = ("qkv_static", "softmax")


def input_quant_owners(model: LlamaModel, site: str):
    """The QuantLinearUnits whose ``input_quant`` quantizes the input of ``site``."""
    if site == "lm_head":
        return [model.lm_head]
    owner = {"qkv": lambda l: l.self_attn.q_proj, "o_proj": lambda l: l.self_attn.o_proj,
             "gate_up": lambda l: l.mlp.gate_proj, "down_proj": lambda l: l.mlp.down_proj}
    if site not in owner:
        raise ValueError(f"unknown linear-input site {site!r}; known: {LINEAR_SITES}")
    return [owner[site](layer) for layer in model.layers]


def head_quants(model: LlamaModel, site: str):
    names = {"qkv_static": ("q_quant", "k_quant", "v_quant"), "softmax": ("p_quant",)}[site]
    return [getattr(layer.self_attn, n) for layer in model.layers for n in names]


@contextmanager
def input_kinds(model: LlamaModel, kinds: dict, clip_ratio: float = 1.0):
    """Temporarily give linear-input sites another per-token quantizer kind ({site: 'int8' | ...}), uint4
    ones clipped to ``clip_ratio`` of their range."""
    saved = []
    for site, kind in kinds.items():
        for unit in input_quant_owners(model, site):
            saved.append((unit, unit.input_quant))
            unit.input_quant = TokenQuant(kind, clip_ratio if kind == "uint4_asym" else 1.0)
    try:
        yield
    finally:
        for unit, tq in reversed(saved):
            unit.input_quant = tq


@contextmanager
def float_static(model: LlamaModel, site: str):
    """Temporarily bypass a static per-head quantizer (fp32 at that site)."""
    saved = [(hq, hq.quant) for hq in head_quants(model, site)]
    for hq, _ in saved:
        hq.quant = None
    try:
        yield
    finally:
        for hq, q in saved:
            hq.quant = q


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(config_path("smollm2_135m_u280.yaml")))
    ap.add_argument("--state", default=None, help="calibrated flexllm-w4a4 state dict (.pt) to load")
    ap.add_argument("--text", default=None, help="evaluation text (default: pydoc topics)")
    ap.add_argument("--max-tokens", type=int, default=2048)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--directions", nargs="*", default=["up", "down", "static"],
                    choices=["up", "down", "static", "clip"])
    ap.add_argument("--clip-ratios", nargs="*", type=float, default=[0.95, 0.9, 0.85],
                    help="direction clip: every uint4 input clipped to this ratio of its range (one row each), "
                         "then each site alone at the best ratio")
    ap.add_argument("--preset-defaults", action="store_true",
                    help="calibrate the preset as it stands (clip 0.9, weight-clip search) instead of the paper's "
                         "formats")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    cfg = load_config(args.config)
    weights = cfg.load_weights()
    spec = cfg.quant_spec("flexllm-w4a4")
    if not args.preset_defaults:   # the paper's formats: no input clipping, no weight-clip search
        spec = spec.paper_formats()
    text = load_text(args.text)
    tokens = encode(weights.tokenizer, text)
    if args.text is None and args.max_tokens + spec.calibration_tokens > tokens.numel():
        raise SystemExit(f"--max-tokens {args.max_tokens} overlaps the calibration tokens")
    eval_windows = windows(tokens[:args.max_tokens], args.ctx)
    max_positions = max(args.ctx, 512)
    t0 = time.perf_counter()
    if args.state:
        model = restore_model(weights.arch, spec, torch.load(args.state, weights_only=True), max_positions)
    else:
        model = build_model(weights, spec, calib_text=load_text(), max_positions=max_positions,
                            cache_dir=default_cache_dir())
    build_s = time.perf_counter() - t0
    print(json.dumps({"model": args.state or "build_model", "build_s": round(build_s, 1)}), flush=True)

    float_model = build_model(weights, cfg.quant_spec("float", "none"), max_positions=max_positions)
    rows = []

    def measure(label, direction, m=model):
        t = time.perf_counter()
        res = perplexity(m, eval_windows)
        row = {"site": label, "direction": direction, "ppl": res["ppl"], "tokens": res["scored_tokens"],
               "eval_s": round(time.perf_counter() - t, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        return res["ppl"]

    float_ppl = measure("float model", "-", float_model)
    del float_model
    base = measure("flexllm-w4a4 as calibrated", "-")
    if "up" in args.directions:
        for site in LINEAR_SITES:
            with input_kinds(model, {site: "int8"}):
                measure(site, "up")
    if "down" in args.directions:
        all8 = {s: "int8" for s in LINEAR_SITES}
        with input_kinds(model, all8):
            all8_ppl = measure("every linear input int8", "-")
        for site in LINEAR_SITES:
            with input_kinds(model, {s: "int8" for s in LINEAR_SITES if s != site}):
                measure(site, "down")
    if "static" in args.directions:
        for site in STATIC_SITES:
            with float_static(model, site):
                measure(site, "static")
    if "clip" in args.directions:
        clip = {}
        for r in args.clip_ratios:
            with input_kinds(model, {s: "uint4_asym" for s in LINEAR_SITES}, clip_ratio=r):
                clip[r] = measure(f"every uint4 input clipped at {r:g}", "clip")
        best = min(clip, key=clip.get)
        if clip[best] < base:
            for site in LINEAR_SITES:
                with input_kinds(model, {site: "uint4_asym"}, clip_ratio=best):
                    measure(f"{site} clipped at {best:g}", "clip")

    for r in rows:
        r["x_float"] = r["ppl"] / float_ppl
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    if "clip" in args.directions:
        print("\n| clipped uint4 inputs (rest as calibrated) | ppl | x float | gain |")
        print("|---|---|---|---|")
        for r in rows:
            if r["direction"] == "clip":
                print(f"| {r['site']} | {r['ppl']:.2f} | {r['x_float']:.2f} | {(base - r['ppl']) / base * 100:+.1f} % |")
    print(f"\nflexllm-w4a4 as calibrated: ppl {base:.2f} ({base / float_ppl:.2f}x float {float_ppl:.2f}); "
          f"{rows[0]['tokens']} tokens, ctx {args.ctx}")
    print("\n| site | only this site at int8 (others uint4) | x float | gain | only this site at uint4 (others int8) "
          "| x float | cost |")
    print("|---|---|---|---|---|---|---|")
    by = {(r["site"], r["direction"]): r["ppl"] for r in rows}
    for site in LINEAR_SITES:
        up, down = by.get((site, "up")), by.get((site, "down"))
        cells = []
        cells += [f"{up:.2f}", f"{up / float_ppl:.2f}", f"{(base - up) / base * 100:+.1f} %"] if up else ["-"] * 3
        cells += ([f"{down:.2f}", f"{down / float_ppl:.2f}", f"{(down - all8_ppl) / all8_ppl * 100:+.1f} %"]
                  if down else ["-"] * 3)
        print(f"| {site} | " + " | ".join(cells) + " |")
    if "down" in args.directions:
        print(f"| (every linear input int8) | | | | {all8_ppl:.2f} | {all8_ppl / float_ppl:.2f} | |")
    if "static" in args.directions:
        print("\n| static site at fp32 (rest as calibrated) | ppl | x float | gain |")
        print("|---|---|---|---|")
        for site in STATIC_SITES:
            p = by[(site, "static")]
            print(f"| {site} | {p:.2f} | {p / float_ppl:.2f} | {(base - p) / base * 100:+.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
