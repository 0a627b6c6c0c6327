"""Cold calibration time of a preset (rotation, GPTQ, static scales) on the real model, cache off.

    python benchmarks/calibration_time.py [--config configs/smollm2_135m_u280.yaml] [--preset flexllm-w4a4]
        [--repeat 1] [--layers N]

Prints one JSON line per run and the median; the figure is wall time of ``build_model`` without the
weight loading (target for SmolLM2 flexllm-w4a4: <= 60 s on the 2-core machine). Run it with
``PYTHONPATH`` pointing at another checkout to time that checkout's calibration with the same script.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import brevitas_models
from brevitas_models.build import build_model
from brevitas_models.text import load_text
from flexllm_plugin.config import load_config
from flexllm_plugin.resources import config_path


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(config_path("smollm2_135m_u280.yaml")))
    ap.add_argument("--preset", default="flexllm-w4a4")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--layers", type=int, default=None, help="only the first N decoder layers")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    if args.layers is not None:
        arch = dict(cfg["Model"]["Architecture"] or {})
        arch["num_layers"] = args.layers
        cfg.data["Model"]["Architecture"] = arch
    weights = cfg.load_weights()
    spec = cfg.quant_spec(args.preset)
    text = load_text()
    times = []
    for i in range(args.repeat):
        t0 = time.perf_counter()
        build_model(weights, spec, calib_text=text, max_positions=512, cache_dir=None)
        times.append(time.perf_counter() - t0)
        print(json.dumps({"run": i, "seconds": round(times[-1], 1), "preset": spec.name,
                          "layers": weights.arch.num_layers, "code": brevitas_models.__file__}), flush=True)
    print(f"cold calibration of {spec.name} ({weights.arch.num_layers} layers, {spec.calibration_tokens} "
          f"tokens): median {statistics.median(times):.1f} s over {len(times)} run(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
