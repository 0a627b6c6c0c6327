"""W4A4 recipes on SmolLM2-135M: each technique of issue 11 with and without the others, on the README
perplexity protocol (pydoc topics, first 8,192 tokens, ctx 512: 8,176 scored tokens; calibration on the
last CalibrationTokens tokens of the same text, disjoint).

    python benchmarks/w4a4_recipes.py [--recipes NAME ...] [--max-tokens 8192] [--out rows.json]

Every recipe is flexllm-w4a4 (``--preset`` names another one) with the paper's formats (GPTQ, Hadamard
R1/R2 + online R4; the preset's default clip ratios and weight-clip search switched off) plus the QuantSpec
fields listed in RECIPES; each is calibrated (or loaded from ~/.cache/flexllm) and scored; one JSON line per recipe as
it finishes, then a markdown table with the ratio to float.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from brevitas_models.build import build_model, default_cache_dir
from brevitas_models.evaluation import perplexity
from brevitas_models.text import encode, load_text, windows
from flexllm_plugin.config import load_config
from flexllm_plugin.resources import config_path

OVERRIDES = {"down_proj": "int8", "lm_head": "int8"}
CLIP = {"q_proj": 0.9, "o_proj": 0.9, "gate_proj": 0.9}
SITE_CLIP = {"q_proj": 0.85, "o_proj": 0.95, "gate_proj": 0.95}
CLIP_ALL = {**CLIP, "down_proj": 0.9, "lm_head": 0.9}
# learned R1/R2 (Cayley SGD, brevitas_models/learned_rotation.py): SpinQuant's 100 steps at lr 1.5, 128 tokens
# per step (measured 182 s CPU for the 100 steps of SmolLM2-135M on one thread)
LEARNED = {"rotation": "learned", "rotation_training": {"Steps": 100, "LearningRate": 1.5, "Tokens": 128}}
SEAMS = {"od": ("o_proj", "down_proj"), "norm": ("qkv", "gate_up")}
RECIPES = {
    "paper": {},
    "paper-norot": {"rotation": "none"},
    "paper+clip+wclip-norot": {"rotation": "none", "input_clip_ratios": CLIP_ALL, "weight_clip_search": True},
    "paper+learned": LEARNED,
    "paper+clip+wclip+learned": {**LEARNED, "input_clip_ratios": CLIP_ALL, "weight_clip_search": True},
    "paper+clip": {"input_clip_ratios": CLIP_ALL},
    "paper+wclip": {"weight_clip_search": True},
    "paper+wclip+calib16k": {"weight_clip_search": True, "calibration_tokens": 16384},
    **{f"paper+wclip+gptq-{t}": {"weight_clip_search": True, "gptq_target": t} for t in ("unquantized", "float")},
    **{f"paper+clip+wclip+gptq-{t}": {"input_clip_ratios": CLIP_ALL, "weight_clip_search": True, "gptq_target": t}
       for t in ("unquantized", "float")},
    "paper+clip+wclip+calib16k": {"input_clip_ratios": CLIP_ALL, "weight_clip_search": True,
                                  "calibration_tokens": 16384},
    "paper+clip+wclip+gptq-unquantized+calib16k": {"input_clip_ratios": CLIP_ALL, "weight_clip_search": True,
                                                   "gptq_target": "unquantized", "calibration_tokens": 16384},
    "paper+clip+wclip": {"input_clip_ratios": CLIP_ALL, "weight_clip_search": True},
    "paper+smooth": {"seam_smoothing": {"o_proj": 0.5, "down_proj": 0.5}},
    # the smoothing exponent searched on the preset as it stands (clip 0.9 + weight-clip search)
    **{f"paper+clip+wclip+smooth-{seams}{alpha:g}": {"input_clip_ratios": CLIP_ALL, "weight_clip_search": True,
                                                     "seam_smoothing": {s: alpha for s in SEAMS[seams]}}
       for seams in ("od", "norm") for alpha in (0.15, 0.3)},
    "int8-down-lm": {"input_quant_overrides": OVERRIDES},
    "int8-down-lm+clip": {"input_quant_overrides": OVERRIDES, "input_clip_ratios": CLIP},
    "int8-down-lm+wclip": {"input_quant_overrides": OVERRIDES, "weight_clip_search": True},
    "int8-down-lm+clip+wclip": {"input_quant_overrides": OVERRIDES, "input_clip_ratios": CLIP,
                                "weight_clip_search": True},
    "int8-down-lm+clip+wclip+smooth-o": {"input_quant_overrides": OVERRIDES, "input_clip_ratios": CLIP,
                                         "weight_clip_search": True, "seam_smoothing": {"o_proj": 0.5}},
    "int8-down-lm+clip+wclip+smooth-norm": {"input_quant_overrides": OVERRIDES, "input_clip_ratios": CLIP,
                                            "weight_clip_search": True,
                                            "seam_smoothing": {"qkv": 0.5, "gate_up": 0.5}},
    # per-site clip ratios from the per-site screen (README: q/k/v 0.85, o 0.95, gate/up 0.95)
    "int8-down-lm+siteclip+wclip": {"input_quant_overrides": OVERRIDES, "input_clip_ratios": SITE_CLIP,
                                    "weight_clip_search": True},
    "int8-down-lm-o+siteclip+wclip": {"input_quant_overrides": {**OVERRIDES, "o_proj": "int8"},
                                      "input_clip_ratios": {"q_proj": 0.85, "gate_proj": 0.95},
                                      "weight_clip_search": True},
    "int8-all-but-qkv+qclip+wclip": {"input_quant_overrides": {**OVERRIDES, "o_proj": "int8", "gate_proj": "int8"},
                                     "input_clip_ratios": {"q_proj": 0.85}, "weight_clip_search": True},
    "int8-down-lm-o+siteclip+wclip+calib16k": {"input_quant_overrides": {**OVERRIDES, "o_proj": "int8"},
                                              "input_clip_ratios": {"q_proj": 0.85, "gate_proj": 0.95},
                                              "weight_clip_search": True, "calibration_tokens": 16384},
    "int8-down-lm+siteclip+wclip+calib16k": {"input_quant_overrides": OVERRIDES, "input_clip_ratios": SITE_CLIP,
                                             "weight_clip_search": True, "calibration_tokens": 16384},
    "int8-down-lm-o+clip08+wclip": {"input_quant_overrides": {**OVERRIDES, "o_proj": "int8"},
                                    "input_clip_ratios": {"q_proj": 0.8, "gate_proj": 0.9},
                                    "weight_clip_search": True},
    "int8-down-lm-o+clip+wclip": {"input_quant_overrides": {**OVERRIDES, "o_proj": "int8"},
                                  "input_clip_ratios": {"q_proj": 0.9, "gate_proj": 0.9},
                                  "weight_clip_search": True},
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(config_path("smollm2_135m_u280.yaml")))
    ap.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--preset", default="flexllm-w4a4", help="the preset the recipes modify (clip ratios "
                    "apply to uint4 sites only, so with w4a8 use the recipes without them)")
    ap.add_argument("--max-tokens", type=int, default=8192)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--float-ppl", type=float, default=None, help="float perplexity (else measured)")
    ap.add_argument("--eval-text", nargs="+", default=None, help="score these text files (joined) instead "
                    "(held-out check: the models stay calibrated on the pydoc topics, so cached ones are reused)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    weights = cfg.load_weights()
    text = load_text()
    eval_text = text if args.eval_text is None else "\n".join(load_text(f) for f in args.eval_text)
    tokens = encode(weights.tokenizer, eval_text)
    if args.eval_text is not None and len(tokens) < args.max_tokens:
        raise SystemExit(f"--eval-text {' '.join(args.eval_text)}: {len(tokens)} tokens, fewer than --max-tokens "
                         f"{args.max_tokens}")
    eval_windows = windows(tokens[:args.max_tokens], args.ctx)
    max_positions = max(args.ctx, 512)
    float_ppl = args.float_ppl
    if float_ppl is None:
        float_ppl = perplexity(build_model(weights, cfg.quant_spec("float", "none"), max_positions=max_positions),
                               eval_windows)["ppl"]
    rows = []
    for name in args.recipes:
        # every recipe starts from the preset's formats without the clip / weight-clip defaults, so each
        # row names all the techniques it uses
        spec = cfg.quant_spec(args.preset).paper_formats().replace(**RECIPES[name])
        t0 = time.perf_counter()
        model = build_model(weights, spec, calib_text=text, max_positions=max_positions,
                            cache_dir=default_cache_dir(), log=lambda m: print(m, file=sys.stderr, flush=True))
        t1 = time.perf_counter()
        res = perplexity(model, eval_windows)
        row = {"preset": args.preset, "recipe": name, "eval_text": " ".join(args.eval_text or ["pydoc topics"]), "fields": RECIPES[name], "ppl": round(res["ppl"], 3),
               "x_float": round(res["ppl"] / float_ppl, 3), "tokens": res["scored_tokens"],
               "build_s": round(t1 - t0, 1), "eval_s": round(time.perf_counter() - t1, 1)}
        if getattr(model, "rotation_training", None):
            row["rotation_training"] = model.rotation_training
        rows.append(row)
        print(json.dumps(row), flush=True)
        del model
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    print(f"\nfloat {float_ppl:.2f}; {rows[0]['tokens'] if rows else 0} scored tokens, ctx {args.ctx}\n")
    print("| recipe | perplexity | x float |\n|---|---|---|")
    for r in rows:
        print(f"| {r['recipe']} | {r['ppl']:.2f} | {r['x_float']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
