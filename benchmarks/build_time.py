"""Wall time and peak memory of `flexllm build CONFIG` (a fresh process per run, peak RSS of that
process and its children from getrusage), plus the HBM budget of the result. Prints one JSON object;
medians over --repeats runs. The calibrated-model cache (~/.cache/flexllm) is reported as cold/warm.

    python benchmarks/build_time.py configs/llama32_1b_u280.yaml --out /tmp/llama1b
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("--out", required=True)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args(argv)
    runs = []
    for _ in range(args.repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "flexllm_plugin.cli", "build", args.config, "--out", args.out,
                            "--json", "--quiet"], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if r.returncode:
            print(r.stderr[-3000:], file=sys.stderr)
            return r.returncode
        summary = json.loads(r.stdout.strip().splitlines()[-1])
        runs.append({"wall_s": round(wall, 1), "peak_rss_GB": round(max(peak_kb, before) / 2**20, 2),
                     "phases_s": summary["seconds"]})
    summary_buffers = summary["buffers"]
    hbm = {}
    for b in summary_buffers.values():
        hbm[b["memory"]] = hbm.get(b["memory"], 0) + b["bytes"]
    print(json.dumps({
        "config": args.config, "runs": runs,
        "wall_s_median": statistics.median(r["wall_s"] for r in runs),
        "peak_rss_GB_max": max(r["peak_rss_GB"] for r in runs),
        "memory_MB": {k: round(v / 2**20, 2) for k, v in sorted(hbm.items())},
        "max_hbm_channel_MB": round(max(v for k, v in hbm.items() if k.startswith("HBM")) / 2**20, 2),
        "hbm_channels_used": sum(1 for k in hbm if k.startswith("HBM")),
        "estimates": summary["estimates"],
    }))


if __name__ == "__main__":
    sys.exit(main())
