"""Long-context perplexity table of HMT: `flexllm ppl CONFIG --long MODE` for the four modes (independent
segments, sensory tokens, HMT, full-context window), each preset and each backbone (``hmt``: the float
weights with the checkpoint's LoRA adapter merged, what every consumer builds from; ``original``: the
weights as loaded, to show what the adapter alone does to the baselines), one model build per preset and
backbone, the same scored tokens in every mode. Prints a markdown table and one JSON object (with the
fraction of the independent -> window gap that HMT closes).

    python benchmarks/hmt_long_ppl.py configs/smollm2_135m_hmt.yaml --quant float w4a8 --segments 16 \
        --backbones hmt original
    python benchmarks/hmt_long_ppl.py configs/smollm2_135m_hmt.yaml --quant flexllm-w4a4 --backbones original \
        --state ~/.cache/flexllm/flexllm-w4a4-<key>.pt          # a cached calibrated model of that backbone
"""

import argparse
import json
import sys
import time


def main(argv=None):
    from brevitas_models.build import build_model, default_cache_dir
    from brevitas_models.hmt.long_context import MODES, long_context_perplexity
    from brevitas_models.text import encode, load_text
    from flexllm_plugin.cli import _hmt_params
    from flexllm_plugin.config import load_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("--quant", nargs="+", default=["float"])
    ap.add_argument("--segments", type=int, default=16)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--backbones", nargs="+", default=["hmt"], choices=["hmt", "original"],
                    help="hmt: the checkpoint's LoRA adapter merged into the weights (default); original: as loaded")
    ap.add_argument("--state", default=None,
                    help="a calibrated model's state file (a ~/.cache/flexllm entry) for the single --quant preset "
                         "and --backbones choice, instead of building (calibrating) it")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    hmt = cfg.hmt_spec()
    weights = cfg.load_weights()
    text = load_text(None)
    tokens = encode(weights.tokenizer, text)
    from brevitas_models.hmt.backbone import hmt_backbone_weights
    params, checkpoint = (_hmt_params(cfg, weights, hmt, weights.arch.hidden_size, lambda m: None)
                          if "hmt" in args.modes or "hmt" in args.backbones else (None, None))
    if args.state and len(args.quant) * len(args.backbones) != 1:
        raise SystemExit("--state needs exactly one --quant preset and one --backbones choice")
    rows = {}
    for preset in args.quant:
        for which in args.backbones:
            backbone = hmt_backbone_weights(weights, params) if which == "hmt" else weights
            row = f"{preset} ({'merged' if backbone is not weights else 'original'} backbone)"
            c0 = time.process_time()
            if args.state:
                import torch
                from brevitas_models.build import restore_model
                model = restore_model(weights.arch, cfg.quant_spec(preset), torch.load(args.state, weights_only=True))
            else:
                model = build_model(backbone, cfg.quant_spec(preset), calib_text=text, cache_dir=default_cache_dir())
            rows[row] = {"build_cpu_seconds": round(time.process_time() - c0, 1)}
            for mode in args.modes:
                t0 = time.perf_counter()
                r = long_context_perplexity(model, hmt, tokens, args.segments, mode, params=params,
                                            final_norm_weight=weights.state_dict["model.norm.weight"])
                rows[row][mode] = {"ppl": round(r["ppl"], 3), "tokens": r["scored_tokens"],
                                   "seconds": round(time.perf_counter() - t0, 1)}
                print(f"{row} {mode}: {rows[row][mode]}", file=sys.stderr, flush=True)
            got = rows[row]
            if all(m in got for m in ("independent", "hmt", "window")):
                gap = got["independent"]["ppl"] - got["window"]["ppl"]
                got["hmt_gap_closed"] = round((got["independent"]["ppl"] - got["hmt"]["ppl"]) / gap, 3) if gap else None
    print("| preset | " + " | ".join(args.modes) + " | HMT gap closed |")
    print("|---|" + "---|" * (len(args.modes) + 1))
    for preset, got in rows.items():
        print(f"| {preset} | " + " | ".join(f"{got[m]['ppl']:.3f}" for m in args.modes)
              + f" | {got.get('hmt_gap_closed')} |")
    print(json.dumps({"config": args.config, "segment_length": hmt.segment_length, "block": hmt.block,
                      "sensory_tokens": hmt.sensory_tokens, "segments": args.segments, "checkpoint": checkpoint,
                      "results": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
