"""A sweep over the best designs of a search, fanned out on make (``flexllm dse ... --build-top K --out DIR``).

``write_sweep`` writes, under DIR::

    sweep.json              the search result (as <out>.dse.json) and the candidates
    best.yaml               the best configuration (as ``flexllm dse --out``)
    cand<i>/config.yaml     the i-th best design as a flexllm config (i = 0: the best)
    cand<i>/candidate.json  its knobs and modeled figures
    Makefile                targets per candidate: project (flexllm build), csim (the project's make csim),
                            verify (C-sim against the golden model), hls (Vitis HLS); ``make -j N`` runs them
                            in parallel, ``SUBMIT="srun ..."`` hands every step to a batch scheduler

No process pool of ours: make schedules, the scheduler places. ``collect_sweep`` (``flexllm report DIR``)
reads what the steps left: each candidate's C-sim status and timings, the verification, the csynth and
implementation reports when present, next to its modeled figures.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Dict, List, Optional

import yaml

from ..config import ConfigError
from .render import SHORT

SWEEP_FILE = "sweep.json"
TEMPLATE = Path(__file__).resolve().parent.parent / "templates" / "sweep" / "Makefile"


def candidate_name(i: int) -> str:
    return f"cand{i}"


def _flexllm_command() -> str:
    """How the Makefile calls flexllm: this interpreter, so a virtualenv or PYTHONPATH carries over."""
    return f"{shlex.quote(sys.executable)} -m flexllm_plugin.cli"


def write_sweep(result: Dict, config_data, out: Path, k: int) -> Dict:
    """The ``k`` best designs of ``result`` (``ranked``) as configs and a Makefile under ``out``; ConfigError
    when ``out`` holds files that are not a previous sweep, or the search kept fewer than ``k`` designs."""
    out = Path(out)
    ranked = result.get("ranked") or []
    if k < 1:
        raise ConfigError(f"--build-top {k}: must be at least 1")
    if len(ranked) < k:
        raise ConfigError(f"--build-top {k}: the search kept {len(ranked)} feasible designs")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / SWEEP_FILE).is_file())):
        raise ConfigError(f"--out {out}: exists and is not a flexllm sweep directory (no {SWEEP_FILE}); "
                          "choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    candidates = []
    for i, d in enumerate(ranked[:k]):
        name = candidate_name(i)
        cdir = out / name
        cdir.mkdir(exist_ok=True)
        data = config_data(d["knobs"])
        data["OutputDir"] = str((cdir / "project").resolve())
        knobs = ", ".join(f"{n}={v}" for n, v in d["knobs"].items())
        m = d["metrics"]
        head = (f"# {name}: design {i + 1} of flexllm dse {result['config']} --board {result['board']} --objective "
                f"{result['objective']}\n# {knobs}\n# modeled: decode {m['decode_tokens_per_s']:.1f} tokens/s at "
                f"{result['context']} keys, prefill {m['prefill_seconds']:.3f} s, largest share "
                f"{100 * m['utilization']:.1f} %\n")
        (cdir / "config.yaml").write_text(head + yaml.safe_dump(data, sort_keys=False))
        entry = {"name": name, "rank": i, "knobs": d["knobs"], "metrics": m}
        (cdir / "candidate.json").write_text(json.dumps(entry, indent=1, default=float))
        candidates.append(entry)
    names = [c["name"] for c in candidates]
    text = TEMPLATE.read_text()
    for key, value in (("K", str(k)), ("CONFIG", str(result["config"])), ("BOARD", result["board"]),
                       ("OBJECTIVE", result["objective"]), ("FLEXLLM", _flexllm_command()),
                       ("CANDIDATES", " ".join(names)), ("FIRST", names[0])):
        text = text.replace(f"@{key}@", value)
    (out / "Makefile").write_text(text)
    sweep = dict(result, candidates=candidates)
    (out / SWEEP_FILE).write_text(json.dumps(sweep, indent=1, default=float))
    return {"sweep_dir": str(out), "candidates": names, "makefile": str(out / "Makefile")}


def is_sweep(path: Path) -> bool:
    return (Path(path) / SWEEP_FILE).is_file()


def _read_status(path: Path) -> Optional[int]:
    if not path.is_file():
        return None
    text = path.read_text().strip()
    if not text.lstrip("-").isdigit():
        raise ValueError(f"{path}: expected an exit status, got {text[:40]!r}")
    return int(text)


def _csim_timings(log: Path) -> Optional[Dict]:
    """The JSON line the project's test bench prints (prefill_ms, decode_ms, prompt/new tokens)."""
    if not log.is_file():
        return None
    for line in reversed(log.read_text(errors="replace").splitlines()):
        line = line.strip()
        if line.startswith("{") and "prefill_ms" in line:
            return json.loads(line)
    return None


def collect_sweep(sweep_dir: Path) -> Dict:
    """Every candidate's modeled figures next to what its steps measured; writes ``sweep_report.json``."""
    from ..report.csynth import find_csynth_reports
    from ..report.implementation import find_implementation_reports

    sweep_dir = Path(sweep_dir)
    sweep = json.loads((sweep_dir / SWEEP_FILE).read_text())
    rows: List[Dict] = []
    for c in sweep["candidates"]:
        cdir = sweep_dir / c["name"]
        project = cdir / "project"
        row = {"name": c["name"], "rank": c["rank"], "knobs": c["knobs"],
               "modeled": {k: c["metrics"][k] for k in ("decode_tokens_per_s", "prefill_seconds",
                                                        "end_to_end_seconds", "utilization")},
               "project": (project / "flexllm_build.json").is_file(),
               "csim_status": _read_status(cdir / "csim.status"), "csim": _csim_timings(cdir / "csim.log"),
               "hls_status": _read_status(cdir / "hls.status")}
        verify = cdir / "verify.json"
        row["verify"] = ({k: v for k, v in json.loads(verify.read_text()).items()
                          if k in ("match", "tokens_match", "kv_cache_match", "max_logit_rel_err", "first_divergence")}
                         if verify.is_file() else None)
        if row["project"]:
            kernels = [k["name"] for k in json.loads((project / "flexllm_build.json").read_text())["project"]["kernels"]]
            row["csynth"] = {k: r["measured"] for k, r in find_csynth_reports(project, kernels).items()}
            row["implementation"] = find_implementation_reports(project, kernels)
        else:
            row["csynth"], row["implementation"] = {}, {}
        rows.append(row)
    report = {"sweep_dir": str(sweep_dir), "config": sweep["config"], "board": sweep["board"],
              "objective": sweep["objective"], "candidates": rows}
    (sweep_dir / "sweep_report.json").write_text(json.dumps(report, indent=1, default=float))
    (sweep_dir / "sweep_report.md").write_text(render_sweep(report))
    return report


def render_sweep(report: Dict) -> str:
    def st(s):
        return "-" if s is None else ("pass" if s == 0 else f"FAIL ({s})")
    L = [f"# flexllm sweep: {report['config']} on {report['board']}, objective {report['objective']}", "",
         "| candidate | knobs | modeled decode tok/s | modeled prefill s | share % | csim | C-sim prefill ms "
         "(simulation time) | verify | csynth LUT / DSP (kernels) | implementation WNS ns / MHz |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["candidates"]:
        m = r["modeled"]
        csim_ms = r["csim"]["prefill_ms"] if r["csim"] else "-"
        ver = "-" if r["verify"] is None else ("match" if r["verify"].get("match") else "MISMATCH")
        syn = "; ".join(f"{k}: {v['lut']} / {v['dsp']}" for k, v in r["csynth"].items()) or "-"
        imp = "; ".join(f"{k}: {v['timing'].get('wns_ns')} / {v.get('achieved_mhz') or '-'}"
                        for k, v in r["implementation"].items() if v.get("timing")) or "-"
        knobs = " ".join(f"{SHORT.get(n, n)}={v}" for n, v in r["knobs"].items())
        L.append(f"| {r['name']} | {knobs} | {m['decode_tokens_per_s']:.1f} | {m['prefill_seconds']:.4f} | "
                 f"{100 * m['utilization']:.1f} | {st(r['csim_status'])} | {csim_ms} | {ver} | {syn} | {imp} |")
    L.append("")
    return "\n".join(L)
