"""Wall time, CPU time and peak memory of `flexllm build CONFIG` (a fresh process per run, peak RSS of that
process and its children from getrusage), plus the HBM budget of the result. Prints one JSON object;
medians over --repeats runs. The calibrated-model cache (~/.cache/flexllm) is reported as cold/warm.

The resident set is also sampled from /proc (every --sample-s seconds, summed over the build process and
its descendants) and split into anonymous memory (RssAnon: what the build really allocates) and file-backed
pages (RssFile: mmap-ed files such as the cached model, which the kernel can drop under pressure); the
getrusage peak counts both.

    python benchmarks/build_time.py configs/llama32_1b_u280.yaml --out /tmp/llama1b
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

RSS_FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem")


def _children(pid: int) -> list:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(x) for x in f.read().split()]
    except OSError:
        return []
    return kids + [g for k in kids for g in _children(k)]


def _rss_kb(pid: int) -> dict:
    """{field: kB} of one process from /proc/PID/status ({} once it has exited)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in RSS_FIELDS:
                    out[key] = int(rest.split()[0])
    except OSError:
        return {}
    return out


class RssSampler(threading.Thread):
    """Peak of the summed RSS fields over a process tree, sampled until stop()."""

    def __init__(self, pid: int, period: float):
        super().__init__(daemon=True)
        self.pid, self.period = pid, period
        self.peak = {k: 0 for k in RSS_FIELDS}
        self.at_peak_total = {k: 0 for k in RSS_FIELDS}   # the fields at the moment VmRSS peaked
        self._done = threading.Event()

    def run(self):
        while not self._done.is_set():
            total = {k: 0 for k in RSS_FIELDS}
            for p in [self.pid] + _children(self.pid):
                for k, v in _rss_kb(p).items():
                    total[k] += v
            for k in RSS_FIELDS:
                self.peak[k] = max(self.peak[k], total[k])
            if total["VmRSS"] >= self.at_peak_total["VmRSS"]:
                self.at_peak_total = total
            self._done.wait(self.period)

    def stop(self):
        self._done.set()
        self.join()


def _gb(kb: int) -> float:
    return round(kb / 2**20, 2)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("--out", required=True)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--sample-s", type=float, default=0.1, help="period of the /proc RSS sampling")
    args = ap.parse_args(argv)
    runs = []
    for _ in range(args.repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "flexllm_plugin.cli", "build", args.config, "--out", args.out,
                                 "--json", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        sampler = RssSampler(proc.pid, args.sample_s)
        sampler.start()
        stdout, stderr = proc.communicate()
        sampler.stop()
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode:
            print(stderr[-3000:], file=sys.stderr)
            return proc.returncode
        summary = json.loads(stdout.strip().splitlines()[-1])
        runs.append({"wall_s": round(wall, 1),
                     "cpu_s": round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 1),
                     "user_s": round(after.ru_utime - before.ru_utime, 1),
                     "sys_s": round(after.ru_stime - before.ru_stime, 1),
                     "peak_rss_GB": _gb(max(after.ru_maxrss, before.ru_maxrss)),
                     "sampled_peak_GB": {k: _gb(v) for k, v in sampler.peak.items()},
                     "sampled_at_peak_rss_GB": {k: _gb(v) for k, v in sampler.at_peak_total.items()},
                     "phases_s": summary["seconds"],
                     "load_average": [round(x, 2) for x in os.getloadavg()]})
    summary_buffers = summary["buffers"]
    hbm = {}
    for b in summary_buffers.values():
        hbm[b["memory"]] = hbm.get(b["memory"], 0) + b["bytes"]
    print(json.dumps({
        "config": args.config, "runs": runs,
        "wall_s_median": statistics.median(r["wall_s"] for r in runs),
        "cpu_s_median": statistics.median(r["cpu_s"] for r in runs),
        "peak_rss_GB_max": max(r["peak_rss_GB"] for r in runs),
        "peak_rss_anon_GB_max": max(r["sampled_peak_GB"]["RssAnon"] for r in runs),
        "memory_MB": {k: round(v / 2**20, 2) for k, v in sorted(hbm.items())},
        "max_hbm_channel_MB": round(max(v for k, v in hbm.items() if k.startswith("HBM")) / 2**20, 2),
        "hbm_channels_used": sum(1 for k in hbm if k.startswith("HBM")),
        "estimates": summary["estimates"],
    }))


if __name__ == "__main__":
    sys.exit(main())
