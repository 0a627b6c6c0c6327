"""Learned R1/R2 rotation training (brevitas_models/learned_rotation.py) on the real model: seconds per Cayley
SGD step (wall and CPU, medians) and the training loss, for a few steps of a preset with Rotation: learned.

    python benchmarks/rotation_training.py [--preset flexllm-w4a4] [--steps 5] [--tokens 256] [--threads 1]

Prints one JSON line: per-step wall/CPU medians, the projected time of the configured Steps, peak RSS, and
the loss on the first training windows before and after the steps.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

import torch

from brevitas_models.build import calibration_windows
from brevitas_models.learned_rotation import learn_rotations
from brevitas_models.text import load_text
from flexllm_plugin.config import load_config
from flexllm_plugin.resources import config_path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(config_path("smollm2_135m_u280.yaml")))
    ap.add_argument("--preset", default="flexllm-w4a4")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1.5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    weights = cfg.load_weights()
    spec = cfg.quant_spec(args.preset).replace(
        rotation="learned", rotation_training={"Steps": args.steps, "LearningRate": args.lr, "Tokens": args.tokens})
    calib = calibration_windows(weights, spec, load_text())
    marks = []

    def log(msg):
        marks.append((time.perf_counter(), time.process_time(), msg))

    learned = learn_rotations(weights.state_dict, weights.arch, spec, calib, log=log)
    s = learned.stats
    row = {"preset": args.preset, "steps": args.steps, "tokens_per_step": args.tokens, "threads": args.threads,
           "train_wall_s": s["wall_s"], "train_cpu_s": s["cpu_s"],
           "per_step_wall_s": round(s["wall_s"] / args.steps, 2), "per_step_cpu_s": round(s["cpu_s"] / args.steps, 2),
           "losses_median_first_last": [round(statistics.median(learned.losses[:3]), 4),
                                        round(statistics.median(learned.losses[-3:]), 4)],
           "loss_before": s["loss_before"], "loss_after": s["loss_after"],
           "orthogonality_error": s["orthogonality_error"],
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
