"""Where the time of a cold calibration goes: CPU and wall seconds per phase (rotation, forward passes,
Hessian accumulation, weight-clip search, GPTQ solve, static scale calibration), cache off.

    OMP_NUM_THREADS=1 python benchmarks/calibration_phases.py [--config C] [--preset flexllm-w4a4] [--layers N]
        [--repeat 1] [--threads N] [--profile out.prof] [--save state.pt]

The phases are measured by wrapping the functions of ``brevitas_models`` that implement them (nested
calls count once, in the outermost phase); "forward passes" is the rest of ``calibrate``. CPU seconds are
``time.process_time`` (every thread of the process), so with one torch thread they are the work and the
wall seconds add the wait for a core. Prints one JSON line per run and a table of medians. Works on any
checkout that has these functions (run it with ``PYTHONPATH`` at another checkout to compare).
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import json
import statistics
import sys
import time
from collections import defaultdict

import torch

import brevitas_models
import brevitas_models.build as build_mod
import brevitas_models.calibration as calib_mod
import brevitas_models.gptq as gptq_mod
from brevitas_models.text import load_text
from flexllm_plugin.config import load_config
from flexllm_plugin.resources import config_path

# (module, attribute, phase): the functions each phase consists of (missing ones are skipped)
PHASES = (
    (build_mod, "rotate", "rotation"),
    (build_mod, "smooth_model_seams", "rotation"),
    (build_mod, "init_weight_scales", "weight scale init"),
    (calib_mod, "init_weight_scales", "weight scale init"),
    (calib_mod, "HessianAccumulator", None),            # its add() is wrapped below
    (calib_mod, "search_weight_clip", "weight-clip search"),
    (calib_mod, "gptq_quantize", "GPTQ solve"),
    (calib_mod, "_observe", "static scales (Q/K/V/P passes)"),
    (build_mod, "calibrate", "calibrate (total)"),
)
SUB_PHASES = ((gptq_mod, "_upper_cholesky_of_inverse", "GPTQ: Cholesky inverse"),)


class PhaseClock:
    def __init__(self):
        self.cpu = defaultdict(float)
        self.wall = defaultdict(float)
        self.depth = 0

    def wrap(self, fn, phase, nested_ok=False):
        clock = self

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            outer = phase == "calibrate (total)"
            if clock.depth and not (outer or nested_ok):
                return fn(*args, **kwargs)
            c0, w0 = time.process_time(), time.perf_counter()
            if not (outer or nested_ok):
                clock.depth += 1
            try:
                return fn(*args, **kwargs)
            finally:
                if not (outer or nested_ok):
                    clock.depth -= 1
                clock.cpu[phase] += time.process_time() - c0
                clock.wall[phase] += time.perf_counter() - w0
        return timed


def instrument(clock: PhaseClock):
    saved = []
    for mod, attr, phase in PHASES + SUB_PHASES:
        if not hasattr(mod, attr):
            continue
        fn = getattr(mod, attr)
        saved.append((mod, attr, fn))
        if attr == "HessianAccumulator":
            saved.append((fn, "add", fn.add))
            fn.add = clock.wrap(fn.add, "Hessian accumulation")
            continue
        setattr(mod, attr, clock.wrap(fn, phase, nested_ok=(mod, attr, phase) in SUB_PHASES))
    return saved


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(config_path("smollm2_135m_u280.yaml")))
    ap.add_argument("--preset", default=None, help="default: the config's preset")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--layers", type=int, default=None, help="only the first N decoder layers")
    ap.add_argument("--profile", default=None, help="also write a cProfile of the last run here")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads of calibrate() (default: the code's own choice)")
    ap.add_argument("--save", default=None, help="torch.save the calibrated state_dict of the last run here "
                    "(to compare two checkouts bit for bit)")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    if args.layers is not None:
        arch = dict(cfg["Model"]["Architecture"] or {})
        arch["num_layers"] = args.layers
        cfg.data["Model"]["Architecture"] = arch
    weights = cfg.load_weights()
    spec = cfg.quant_spec(args.preset) if args.preset else cfg.quant_spec()
    text = load_text()
    runs = []
    for i in range(args.repeat):
        clock = PhaseClock()
        saved = []
        if args.threads is not None:
            saved.append((build_mod, "calibrate", build_mod.calibrate))
            build_mod.calibrate = functools.partial(build_mod.calibrate, threads=args.threads)
        saved += instrument(clock)
        prof = cProfile.Profile() if args.profile and i == args.repeat - 1 else None
        try:
            c0, w0 = time.process_time(), time.perf_counter()
            if prof:
                prof.enable()
            model = build_mod.build_model(weights, spec, calib_text=text, max_positions=512, cache_dir=None)
            if prof:
                prof.disable()
                prof.dump_stats(args.profile)
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        finally:
            for obj, attr, fn in reversed(saved):
                setattr(obj, attr, fn)
        if args.save and i == args.repeat - 1:
            torch.save(model.state_dict(), args.save)
        del model
        inner = [p for p in clock.cpu if p not in ("calibrate (total)", "rotation", "GPTQ: Cholesky inverse")]
        phases = {p: {"cpu_s": round(clock.cpu[p], 2), "wall_s": round(clock.wall[p], 2)} for p in clock.cpu}
        if "calibrate (total)" in clock.cpu:
            phases["forward passes (rest of calibrate)"] = {
                "cpu_s": round(clock.cpu["calibrate (total)"] - sum(clock.cpu[p] for p in inner), 2),
                "wall_s": round(clock.wall["calibrate (total)"] - sum(clock.wall[p] for p in inner), 2)}
        phases["build_model (total)"] = {"cpu_s": round(cpu, 2), "wall_s": round(wall, 2)}
        runs.append(phases)
        print(json.dumps({"run": i, "preset": spec.name, "layers": weights.arch.num_layers, "threads": args.threads,
                          "code": brevitas_models.__file__, "phases": phases}), flush=True)
    print(f"cold calibration of {spec.name} ({weights.arch.num_layers} layers, {spec.calibration_tokens} tokens), "
          f"medians over {len(runs)} run(s):")
    print(f"{'phase':40s} {'CPU s':>9s} {'wall s':>9s}")
    for p in runs[-1]:
        cpu = statistics.median(r.get(p, {"cpu_s": 0})["cpu_s"] for r in runs)
        wall = statistics.median(r.get(p, {"wall_s": 0})["wall_s"] for r in runs)
        print(f"{p:40s} {cpu:9.1f} {wall:9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
