"""Reproduces the README perplexity table: SmolLM2-135M on CPython's pydoc topics (first 8,192
tokens, ctx 512, i.e. 16 windows scoring 8,176 tokens), float / w8a8 / w4a8 / flexllm-w4a4, each
with its preset defaults and with the rotation toggled.

    python benchmarks/ppl_table.py [--config configs/smollm2_135m_u280.yaml] [--out ppl_table.json]

Prints one row per configuration as it finishes, then the markdown table. Calibration text is the
last CalibrationTokens tokens of the same file, disjoint from the evaluated tokens.
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

PRESETS = ["float", "w8a8", "w4a8", "flexllm-w4a4"]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(config_path("smollm2_135m_u280.yaml")))
    ap.add_argument("--max-tokens", type=int, default=8192)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--presets", nargs="*", default=PRESETS)
    ap.add_argument("--rotations", nargs="*", default=["none", "hadamard"])
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    ap.add_argument("--float-ppl", type=float, default=None,
                    help="float perplexity measured earlier (for the ratio column when float is not run)")
    args = ap.parse_args(argv)

    cfg = load_config(args.config)
    weights = cfg.load_weights()
    text = load_text()
    tokens = encode(weights.tokenizer, text)
    eval_windows = windows(tokens[:args.max_tokens], args.ctx)
    rows = []
    float_ppl = args.float_ppl
    for preset in args.presets:
        for rotation in args.rotations:
            spec = cfg.quant_spec(preset, rotation)
            t0 = time.perf_counter()
            model = build_model(weights, spec, calib_text=text, max_positions=max(args.ctx, 512),
                                cache_dir=default_cache_dir())
            t1 = time.perf_counter()
            res = perplexity(model, eval_windows)
            t2 = time.perf_counter()
            if preset == "float" and rotation == "none":
                float_ppl = res["ppl"]
            row = {"preset": preset, "rotation": rotation, "gptq": spec.gptq, "ppl": res["ppl"],
                   "ratio_to_float": res["ppl"] / float_ppl if float_ppl else None,
                   "tokens": res["scored_tokens"], "build_s": round(t1 - t0, 1), "eval_s": round(t2 - t1, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            del model
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    print("\n| preset | rotation | GPTQ | perplexity | x float |")
    print("|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['ratio_to_float']:.2f}" if r["ratio_to_float"] else "-"
        print(f"| {r['preset']} | {r['rotation']} | {'yes' if r['gptq'] else 'no'} | {r['ppl']:.2f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
