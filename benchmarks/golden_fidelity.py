"""How faithful the golden model is to the Brevitas model it was extracted from, on real text long enough
for perplexity to average out the model's chaos (issue 11's fidelity targets: golden/Brevitas perplexity
within 2 %, greedy agreement >= 90 % or at the Brevitas noise floor).

    python benchmarks/golden_fidelity.py build/smollm2_135m_u280 [--windows 4] [--ctx 256] [--json]
    python benchmarks/golden_fidelity.py --preset flexllm-w4a4 [--input-quant int8] [--config CONFIG]

The models come from a built project's reference model, or (``--preset``) are built (or loaded from
``~/.cache/flexllm``) from the config with that preset, calibrated as ``flexllm build`` does.

For each window of the README protocol's text (pydoc topics, windows taken from the start: the scored part,
never the calibration tokens), teacher-forced on the text itself:

* perplexity of tokens 2..ctx under the golden (the integer model the kernels compute), under Brevitas, and
  under Brevitas with every embedding entry moved by one float32 ulp (``verify``'s noise floor);
* greedy (top-1) agreement golden vs Brevitas, and Brevitas vs its 1-ulp-perturbed self, per position.

The ppl ratios are quoted against 1.0; the noise-floor row shows how far two equally valid evaluations of
the same fake-quantized model drift apart, so a golden/Brevitas gap inside it is all that can be asked.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from brevitas_models.build import build_model, default_cache_dir
from brevitas_models.golden import GoldenModel
from brevitas_models.quant_presets import quant_preset
from brevitas_models.text import encode, load_text
from flexllm_plugin.config import load_config
from flexllm_plugin.project.reference import load_reference, load_tokenizer
from flexllm_plugin.project.verify import perturbed_embeddings, prompt_perplexity
from flexllm_plugin.resources import config_path


def brevitas_logits(model, ids) -> np.ndarray:
    with torch.no_grad():
        logits, _ = model(torch.tensor([list(ids)], dtype=torch.long))
    return logits[0].double().numpy()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("project", nargs="?", help="a built flexllm project directory (its reference model is used)")
    ap.add_argument("--preset", help="instead of a project: build this preset from --config")
    ap.add_argument("--config", default=str(config_path("smollm2_135m_u280.yaml")))
    ap.add_argument("--input-quant", choices=["int8", "uint4_asym"],
                    help="with --preset: override InputQuant (e.g. flexllm-w4a4 with int8 inputs, a far less "
                         "chaotic model that the golden still covers)")
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if (args.project is None) == (args.preset is None):
        raise SystemExit("give a project directory or --preset, not both")
    if args.project:
        outdir = Path(args.project)
        model, golden = load_reference(outdir)
        tokenizer = load_tokenizer(outdir)
        source = {"project": str(outdir),
                  "preset": json.loads((outdir / "flexllm_build.json").read_text()).get("quant_preset")}
    else:
        cfg = load_config(args.config)
        weights = cfg.load_weights()
        spec = quant_preset(args.preset, **({"input_quant": args.input_quant} if args.input_quant else {}))
        model = build_model(weights, spec, max_positions=max(args.ctx, 512),
                            cache_dir=default_cache_dir())
        golden = GoldenModel.from_brevitas(model)
        tokenizer = weights.tokenizer
        source = {"config": args.config, "preset": args.preset, "input_quant": spec.input_quant}
    tokens = encode(tokenizer, load_text()).tolist()
    if len(tokens) < args.windows * args.ctx:
        raise SystemExit(f"the text has {len(tokens)} tokens, fewer than {args.windows} x {args.ctx}")
    nll = {"golden": [], "brevitas": [], "brevitas_1ulp": []}
    agree_gb, agree_bb, per_window = [], [], []
    t0 = time.perf_counter()
    for w in range(args.windows):
        ids = tokens[w * args.ctx:(w + 1) * args.ctx]
        g, _, _ = golden.prefill(np.asarray(ids))
        g = np.asarray(g, dtype=np.float64).reshape(len(ids), -1)
        b = brevitas_logits(model, ids)
        with perturbed_embeddings(model):
            bn = brevitas_logits(model, ids)
        for key, lg in (("golden", g), ("brevitas", b), ("brevitas_1ulp", bn)):
            nll[key].append(np.log(prompt_perplexity(lg, ids)) * (len(ids) - 1))
        per_window.append({"golden_brevitas": round(float(np.exp((nll["golden"][-1] - nll["brevitas"][-1])
                                                                 / (len(ids) - 1))), 4),
                           "noise_floor": round(float(np.exp((nll["brevitas_1ulp"][-1] - nll["brevitas"][-1])
                                                             / (len(ids) - 1))), 4)})
        agree_gb.append(np.mean(g[:-1].argmax(1) == b[:-1].argmax(1)))
        agree_bb.append(np.mean(bn[:-1].argmax(1) == b[:-1].argmax(1)))
    scored = args.windows * (args.ctx - 1)
    ppl = {k: float(np.exp(sum(v) / scored)) for k, v in nll.items()}
    out = {**source, "windows": args.windows, "ctx": args.ctx, "scored_tokens": scored,
           "ppl": {k: round(v, 4) for k, v in ppl.items()},
           "golden_brevitas_ppl_ratio": round(ppl["golden"] / ppl["brevitas"], 4),
           "noise_floor_ppl_ratio": round(ppl["brevitas_1ulp"] / ppl["brevitas"], 4),
           "golden_brevitas_agreement": round(float(np.mean(agree_gb)), 4),
           "brevitas_noise_floor_agreement": round(float(np.mean(agree_bb)), 4),
           "per_window_ppl_ratios": per_window, "seconds": round(time.perf_counter() - t0, 1)}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{out['scored_tokens']} scored tokens ({args.windows} windows of {args.ctx}), {out['seconds']} s")
        print("| comparison | perplexity ratio | greedy agreement |\n|---|---|---|")
        print(f"| golden vs Brevitas | {out['golden_brevitas_ppl_ratio']:.4f} | {out['golden_brevitas_agreement']:.3f} |")
        print(f"| Brevitas 1-ulp vs Brevitas (noise floor) | {out['noise_floor_ppl_ratio']:.4f} | "
              f"{out['brevitas_noise_floor_agreement']:.3f} |")
        print(f"perplexities: {out['ppl']}")
        print("per window (golden / Brevitas, 1-ulp Brevitas / Brevitas):",
              ", ".join(f"{w['golden_brevitas']:.3f}/{w['noise_floor']:.3f}" for w in per_window))
    return 0


if __name__ == "__main__":
    sys.exit(main())
