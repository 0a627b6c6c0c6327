"""Vitis HLS synthesis reports (``csynth.xml``) of a flexllm project, read into the dictionary hls4ml's
Vitis backend returns from ``build()`` (``hls4ml.report.parse_vivado_report``: ``CSynthesisReport`` with
``TargetClockPeriod``, ``EstimatedClockPeriod``, ``BestLatency``, ``WorstLatency``, ``IntervalMin``,
``IntervalMax``, the resources ``BRAM_18K``, ``DSP``, ``FF``, ``LUT``, ``URAM`` and their ``Available*``
counts, as text) plus a numeric view (``measured``) in the cost model's units (BRAM36 = BRAM_18K / 2).

Layout. hls4ml finds its reports through ``<dir>/project.tcl`` and ``<dir>/<project>_prj``. A flexllm
project has two kernels and no project.tcl: ``vitis_hls -f hls/<kernel>.tcl`` (``make hls``) writes
``hls/<kernel>_prj/sol/syn/report/<kernel>_csynth.xml``. :func:`find_csynth_reports` looks there (and
accepts a csynth.xml, a solution or HLS project directory directly).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, Optional

RESOURCE_TAGS = ("BRAM_18K", "DSP", "FF", "LUT", "URAM")


class ReportError(ValueError):
    pass


def _text(root, path: str) -> Optional[str]:
    node = root.find(path)
    return None if node is None or node.text is None else node.text.strip()


def _int(s: Optional[str]) -> Optional[int]:
    try:
        return int(s)
    except (TypeError, ValueError):
        return None                          # "undef": data-dependent trip counts


def read_csynth_xml(path) -> Dict:
    """One csynth.xml -> ``{"CSynthesisReport": {...hls4ml keys...}, "measured": {...}, "file": path}``."""
    p = Path(path)
    try:
        root = ET.parse(p).getroot()
    except (ET.ParseError, OSError) as e:
        raise ReportError(f"{p}: not a readable Vitis HLS csynth.xml ({e})") from None
    perf, area = root.find("./PerformanceEstimates"), root.find("./AreaEstimates")
    if perf is None or area is None or area.find("./Resources") is None:
        raise ReportError(f"{p}: no PerformanceEstimates / AreaEstimates/Resources (not a csynth.xml)")
    rep = {
        "TargetClockPeriod": _text(root, "./UserAssignments/TargetClockPeriod"),
        "EstimatedClockPeriod": _text(perf, "./SummaryOfTimingAnalysis/EstimatedClockPeriod"),
        "BestLatency": _text(perf, "./SummaryOfOverallLatency/Best-caseLatency"),
        "WorstLatency": _text(perf, "./SummaryOfOverallLatency/Worst-caseLatency"),
        "IntervalMin": _text(perf, "./SummaryOfOverallLatency/Interval-min"),
        "IntervalMax": _text(perf, "./SummaryOfOverallLatency/Interval-max"),
    }
    for child in area.find("./Resources"):
        rep["DSP" if child.tag == "DSP48E" else child.tag] = (child.text or "").strip()
    avail = area.find("./AvailableResources")
    for child in (avail if avail is not None else []):
        rep["Available" + ("DSP" if child.tag == "DSP48E" else child.tag)] = (child.text or "").strip()
    missing = [t for t in RESOURCE_TAGS if t not in rep]
    if missing:
        raise ReportError(f"{p}: AreaEstimates/Resources lacks {missing}")
    bram18 = _int(rep["BRAM_18K"])
    measured = {"dsp": _int(rep["DSP"]), "lut": _int(rep["LUT"]), "ff": _int(rep["FF"]),
                "bram36": None if bram18 is None else bram18 / 2, "uram": _int(rep["URAM"]),
                "best_latency_cycles": _int(rep["BestLatency"]), "worst_latency_cycles": _int(rep["WorstLatency"]),
                "estimated_clock_ns": float(rep["EstimatedClockPeriod"]) if rep["EstimatedClockPeriod"] else None,
                "top": _text(root, "./UserAssignments/TopModelName"), "part": _text(root, "./UserAssignments/Part")}
    return {"CSynthesisReport": rep, "measured": measured, "file": str(p)}


def csynth_path(where, kernel: Optional[str] = None) -> Optional[Path]:
    """The csynth.xml of a kernel given a file, a solution dir, an HLS project dir or a flexllm project."""
    p = Path(where)
    if p.is_file():
        return p
    candidates = []
    if kernel:
        candidates += [p / "hls" / f"{kernel}_prj" / "sol" / "syn" / "report" / f"{kernel}_csynth.xml",
                       p / "sol" / "syn" / "report" / f"{kernel}_csynth.xml",
                       p / "syn" / "report" / f"{kernel}_csynth.xml"]
    candidates += [p / "syn" / "report" / "csynth.xml", p / "sol" / "syn" / "report" / "csynth.xml"]
    if kernel:
        candidates.append(p / "hls" / f"{kernel}_prj" / "sol" / "syn" / "report" / "csynth.xml")
    return next((c for c in candidates if c.is_file()), None)


def find_csynth_reports(project_root, kernels) -> Dict[str, Dict]:
    """``{kernel: read_csynth_xml(...)}`` for each kernel of a project that has been synthesized."""
    out = {}
    for k in kernels:
        path = csynth_path(project_root, k)
        if path is not None:
            out[k] = read_csynth_xml(path)
    return out
