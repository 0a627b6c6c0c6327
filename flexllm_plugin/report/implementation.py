"""Vivado implementation reports of a flexllm project after place and route: utilization (device and per SLR)
and timing summary (WNS / TNS / WHS, clocks), plus the kernel clock v++ settled on.

Where they are (``find_implementation_reports``):

* U280 (``make xclbin``, v++ link with ``--temp_dir build/hw/_x_<kernel>``): v++ copies the reports of its
  Vivado run to ``<temp_dir>/reports/link/imp/``: ``impl_1_full_util_routed.rpt`` (the whole device, shell
  included), ``impl_1_hw_bb_locked_timing_summary_routed.rpt`` (timing of the routed design; older shells:
  ``impl_1_xilinx_*_timing_summary_routed.rpt``). When timing fails at the requested kernel clock, v++ lowers
  it and logs ``[VPL 60-732] Link warning: One or more timing paths failed timing targeting <f> MHz for
  kernel clock '<name>'. The frequency is being automatically changed to <f'> MHz`` (in
  ``<temp_dir>/link/vivado/vpl/runme.log`` / ``vivado.log`` and the v++ log).
* V80 (``make pdi``, AVED's Vivado project ``build/vivado/<kernel>/build/prj.xpr``): the impl_1 run's default
  reports ``prj.runs/impl_1/top_wrapper_utilization_placed.rpt`` and ``top_wrapper_timing_summary_routed.rpt``.

Formats: Vivado ``report_utilization`` tables (``| Site Type | Used | Fixed | Prohibited | Available | Util% |``
and, on multi-SLR parts, "SLR CLB Logic and Dedicated Block Utilization" with ``| Site Type | SLR0 | SLR1 | ...
| SLR0 % | ...``) and ``report_timing_summary`` ("Design Timing Summary": ``WNS(ns) TNS(ns) TNS Failing
Endpoints ... WHS(ns) ...``; "Clock Summary": ``Clock Waveform(ns) Period(ns) Frequency(MHz)``; "Intra Clock
Table"). See UG835 (report_utilization, report_timing_summary) and UG906 "Report Timing Summary".
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Iterable, List, Optional

# utilization row names -> the cost model's resource keys (UltraScale+ names first, then Versal's)
ROWS = {"lut": ("CLB LUTs",), "ff": ("CLB Registers", "Registers"), "bram36": ("Block RAM Tile",),
        "uram": ("URAM",), "dsp": ("DSPs", "DSP Slices", "DSP58s")}

SCALED_RE = re.compile(r"failed timing targeting <?([0-9.]+)>? MHz for kernel clock '([^']+)'\. The frequency is being "
                       r"automatically changed to <?([0-9.]+)>? MHz")


class ImplementationReportError(ValueError):
    pass


def _num(cell: str) -> Optional[float]:
    cell = cell.strip().lstrip("<")
    try:
        return float(cell)
    except ValueError:
        return None


def _table_rows(lines: List[str], start: int) -> List[List[str]]:
    """The ``| a | b |`` rows of the first +---+ table at or after line ``start`` (header row included)."""
    rows, in_table = [], False
    for line in lines[start:]:
        s = line.strip()
        if s.startswith("+") and s.endswith("+"):      # a rule: top, under the header, bottom
            in_table = True
            continue
        if in_table and s.startswith("|"):
            rows.append([c.strip() for c in s.strip("|").split("|")])
        elif in_table and rows:
            break
    return rows


def _section(lines: List[str], title: str) -> Optional[int]:
    """The heading line of a section (the title, optionally numbered, underlined with dashes; the table of
    contents lists the same title without the underline)."""
    for i, line in enumerate(lines[:-1]):
        if (line.strip() == title or re.match(r"^\s*\d+\.\s+" + re.escape(title) + r"\s*$", line)) and \
                lines[i + 1].strip().startswith("---"):
            return i
    return None


def read_utilization(path) -> Dict:
    """``report_utilization`` text -> ``{"device": {key: used}, "available": {key: n}, "slr": [{key: used}, ...],
    "file": path}`` (keys lut, ff, bram36, uram, dsp; a row missing from the report is left out)."""
    p = Path(path)
    lines = p.read_text(errors="replace").splitlines()
    device, available = {}, {}
    for i, line in enumerate(lines):
        s = line.strip()
        if not s.startswith("|"):
            continue
        cells = [c.strip() for c in s.strip("|").split("|")]
        if cells[0] in ("Site Type",) and "Used" in cells and "Available" in cells:
            used_col, avail_col = cells.index("Used"), cells.index("Available")
            for row in _table_rows(lines, i):
                for key, names in ROWS.items():
                    if row[0] in names and key not in device and len(row) > max(used_col, avail_col):
                        device[key] = _num(row[used_col])
                        available[key] = _num(row[avail_col])
    slr: List[Dict] = []
    at = _section(lines, "SLR CLB Logic and Dedicated Block Utilization")
    if at is not None:
        rows = _table_rows(lines, at)
        if rows and rows[0][0] == "Site Type":
            cols = [j for j, h in enumerate(rows[0]) if re.fullmatch(r"SLR\d+", h)]
            slr = [{} for _ in cols]
            for row in rows[1:]:
                for key, names in ROWS.items():
                    if row[0] in names:
                        for n, j in enumerate(cols):
                            slr[n].setdefault(key, _num(row[j]))
    if not device:
        raise ImplementationReportError(f"{p}: no utilization table (| Site Type | Used | ... | Available |): "
                                        "not a Vivado report_utilization file")
    return {"device": device, "available": available, "slr": slr, "file": str(p)}


def read_timing_summary(path) -> Dict:
    """``report_timing_summary`` text -> ``{"wns_ns", "tns_ns", "whs_ns", "ths_ns", "failing_endpoints",
    "clocks": {name: {"period_ns", "mhz", "wns_ns"}}, "met": bool, "file"}``."""
    p = Path(path)
    lines = p.read_text(errors="replace").splitlines()
    at = next((i for i, l in enumerate(lines) if l.strip() == "| Design Timing Summary"), None)
    if at is None:
        raise ImplementationReportError(f"{p}: no '| Design Timing Summary' section: not a Vivado "
                                        "report_timing_summary file")
    out: Dict = {"file": str(p), "clocks": {}}
    for j in range(at + 1, min(at + 15, len(lines))):
        head = lines[j].split()
        if head[:2] == ["WNS(ns)", "TNS(ns)"]:
            row = next((lines[k].split() for k in range(j + 2, min(j + 5, len(lines))) if lines[k].strip()), [])
            vals = [_num(v) for v in row]
            if len(vals) < 6:
                raise ImplementationReportError(f"{p}: Design Timing Summary has no value row")
            out.update(wns_ns=vals[0], tns_ns=vals[1], failing_endpoints=None if vals[2] is None else int(vals[2]),
                       whs_ns=vals[4], ths_ns=vals[5])
            break
    else:
        raise ImplementationReportError(f"{p}: Design Timing Summary has no WNS(ns) header")
    clk = next((i for i, l in enumerate(lines) if l.strip() == "| Clock Summary"), None)
    if clk is not None:
        for line in lines[clk + 1:]:
            if re.match(r"^\| [A-Za-z]", line.strip()):          # the next section's title
                break
            m = re.match(r"^\s*(\S+)\s+\{[^}]*\}\s+([0-9.]+)\s+([0-9.]+)\s*$", line)
            if m:
                out["clocks"][m.group(1)] = {"period_ns": float(m.group(2)), "mhz": float(m.group(3)), "wns_ns": None}
    intra = next((i for i, l in enumerate(lines) if l.strip() == "| Intra Clock Table"), None)
    if intra is not None:
        for line in lines[intra + 1:]:
            if re.match(r"^\| [A-Za-z]", line.strip()):
                break
            w = line.split()
            if len(w) >= 2 and w[0] in out["clocks"] and _num(w[1]) is not None:
                out["clocks"][w[0]]["wns_ns"] = _num(w[1])
    out["met"] = out["wns_ns"] is not None and out["wns_ns"] >= 0 and (out["whs_ns"] is None or out["whs_ns"] >= 0)
    return out


def scaled_kernel_clock(logs: Iterable[Path]) -> Optional[Dict]:
    """v++'s automatic kernel-clock scaling message in the link logs, if any."""
    for log in logs:
        if not log.is_file():
            continue
        for m in SCALED_RE.finditer(log.read_text(errors="replace")):
            return {"target_mhz": float(m.group(1)), "clock": m.group(2), "scaled_mhz": float(m.group(3)),
                    "file": str(log)}
    return None


def kernel_clock(timing: Dict, target_mhz: float) -> Optional[Dict]:
    """The clock of the timing report that drives the kernel: the one named like a kernel clock, else the one
    whose frequency is closest to the kernel's target; with the frequency its WNS allows."""
    clocks = timing.get("clocks") or {}
    if not clocks:
        return None
    named = [n for n in clocks if "kernel" in n.lower() or "usr_0" in n.lower()]
    pool = named or list(clocks)
    name = min(pool, key=lambda n: (abs(clocks[n]["mhz"] - target_mhz), n))
    c = clocks[name]
    wns = c["wns_ns"] if c["wns_ns"] is not None else timing.get("wns_ns")
    fmax = None if wns is None else min(c["mhz"], 1000.0 / (c["period_ns"] - wns)) if wns < 0 else c["mhz"]
    return {"name": name, "mhz": c["mhz"], "wns_ns": wns, "fmax_mhz": None if fmax is None else round(fmax, 2)}


def _first(paths: Iterable[Path]) -> Optional[Path]:
    return next((p for p in paths if p.is_file()), None)


def implementation_paths(project_root, kernel: str) -> Dict[str, Optional[Path]]:
    root = Path(project_root)
    cands = {"util": [], "timing": [], "logs": []}
    for target in ("hw", "hw_emu"):
        tmp = root / "build" / target / f"_x_{kernel}"
        imp = tmp / "reports" / "link" / "imp"
        cands["util"] += [imp / "impl_1_full_util_routed.rpt", imp / "impl_1_full_util_placed.rpt"]
        cands["timing"] += [imp / "impl_1_hw_bb_locked_timing_summary_routed.rpt",
                            imp / "impl_1_hw_bb_locked_timing_summary_postroute_physopted.rpt"]
        cands["timing"] += sorted(imp.glob("impl_1_*timing_summary_routed.rpt")) if imp.is_dir() else []
        cands["logs"] += [tmp / "link" / "vivado" / "vpl" / "runme.log", tmp / "link" / "vivado" / "vpl" / "vivado.log",
                          tmp / "logs" / "link" / "v++.log"]
    runs = root / "build" / "vivado" / kernel / "build" / "prj.runs" / "impl_1"
    cands["util"] += [runs / "top_wrapper_utilization_placed.rpt"]
    cands["timing"] += [runs / "top_wrapper_timing_summary_routed.rpt"]
    return {"util": _first(cands["util"]), "timing": _first(cands["timing"]), "logs": cands["logs"]}


def read_implementation(project_root, kernel: str, target_mhz: float = 300.0) -> Optional[Dict]:
    """Utilization, timing and clock of one kernel's implementation, or None when it has none."""
    paths = implementation_paths(project_root, kernel)
    if paths["util"] is None and paths["timing"] is None:
        return None
    out: Dict = {"utilization": read_utilization(paths["util"]) if paths["util"] else None,
                 "timing": read_timing_summary(paths["timing"]) if paths["timing"] else None}
    out["scaling"] = scaled_kernel_clock(paths["logs"])
    clock = kernel_clock(out["timing"], target_mhz) if out["timing"] else None
    out["kernel_clock"] = clock
    if out["scaling"]:
        out["achieved_mhz"] = out["scaling"]["scaled_mhz"]
    elif clock is not None and clock["fmax_mhz"] is not None:
        out["achieved_mhz"] = min(target_mhz, clock["fmax_mhz"])
    else:
        out["achieved_mhz"] = None
    return out


def find_implementation_reports(project_root, kernels, target_mhz: float = 300.0) -> Dict[str, Dict]:
    out = {}
    for k in kernels:
        r = read_implementation(project_root, k, target_mhz)
        if r is not None:
            out[k] = r
    return out
