"""Vivado implementation reports (flexllm_plugin/report/implementation.py) on fixtures written in the formats
Vivado and v++ print (tests/fixtures/implementation/README.md says where each format comes from): totals and
per-SLR utilization, whose SLR columns must add up to the device column; the design and per-clock slack; the
kernel clock v++ scaled to, or the one the kernel clock's WNS allows; where the files are for both boards."""

import shutil
from pathlib import Path

import pytest

from flexllm_plugin.report.implementation import (ImplementationReportError, find_implementation_reports,
                                                  kernel_clock, read_timing_summary, read_utilization,
                                                  scaled_kernel_clock)

FIX = Path(__file__).resolve().parent / "fixtures" / "implementation"
UTIL = FIX / "impl_1_full_util_routed.rpt"
TIMING = FIX / "impl_1_hw_bb_locked_timing_summary_routed.rpt"
LOG = FIX / "runme.log"


def _rows(path, title):
    """Independent reading of a fixture table: {site type: [cells]} of the table after ``title``."""
    lines = path.read_text().splitlines()
    start = next(i for i, l in enumerate(lines) if l.strip() == title and lines[i + 1].startswith("---"))
    out = {}
    for l in lines[start:]:
        if l.startswith("| ") and "Site Type" not in l:
            cells = [c.strip() for c in l.strip().strip("|").split("|")]
            out.setdefault(cells[0], cells[1:])
        elif out and not l.startswith(("|", "+")):
            break
    return out


def test_utilization_totals_and_slrs():
    u = read_utilization(UTIL)
    names = {"lut": "CLB LUTs", "ff": "CLB Registers", "bram36": "Block RAM Tile", "uram": "URAM", "dsp": "DSPs"}
    logic = {**_rows(UTIL, "1. CLB Logic"), **_rows(UTIL, "3. BLOCKRAM"), **_rows(UTIL, "4. ARITHMETIC")}
    slr = _rows(UTIL, "14. SLR CLB Logic and Dedicated Block Utilization")
    assert len(u["slr"]) == 3
    for key, name in names.items():
        assert u["device"][key] == float(logic[name][0])
        assert u["available"][key] == float(logic[name][3])
        assert [s[key] for s in u["slr"]] == [float(x) for x in slr[name][:3]]
        assert sum(s[key] for s in u["slr"]) == pytest.approx(u["device"][key])    # the report is consistent


def test_timing_summary_and_kernel_clock():
    t = read_timing_summary(TIMING)
    assert (t["wns_ns"], t["tns_ns"], t["whs_ns"], t["failing_endpoints"]) == (-0.475, -812.344, 0.010, 4211)
    assert t["met"] is False
    assert set(t["clocks"]) == {"clk_kernel_00", "clk_kernel2_00", "pcie_refclk", "hbm_aclk"}
    assert t["clocks"]["clk_kernel_00"] == {"period_ns": 3.333, "mhz": 300.0, "wns_ns": -0.475}
    c = kernel_clock(t, 300.0)
    assert c["name"] == "clk_kernel_00"
    assert c["fmax_mhz"] == pytest.approx(1000.0 / (3.333 + 0.475), abs=0.01)


def test_vpp_scaled_clock_from_the_link_log():
    s = scaled_kernel_clock([LOG])
    assert (s["target_mhz"], s["clock"], s["scaled_mhz"]) == (300.0, "clk_kernel_00", 262.5)


@pytest.mark.parametrize("board", ["u280", "v80"])
def test_reports_are_found_where_each_flow_writes_them(tmp_path, board):
    k = "tiny_decode"
    if board == "u280":
        imp = tmp_path / "build" / "hw" / f"_x_{k}" / "reports" / "link" / "imp"
        imp.mkdir(parents=True)
        shutil.copy(UTIL, imp)
        shutil.copy(TIMING, imp)
        vpl = tmp_path / "build" / "hw" / f"_x_{k}" / "link" / "vivado" / "vpl"
        vpl.mkdir(parents=True)
        shutil.copy(LOG, vpl)
    else:
        runs = tmp_path / "build" / "vivado" / k / "build" / "prj.runs" / "impl_1"
        runs.mkdir(parents=True)
        shutil.copy(UTIL, runs / "top_wrapper_utilization_placed.rpt")
        shutil.copy(TIMING, runs / "top_wrapper_timing_summary_routed.rpt")
    found = find_implementation_reports(tmp_path, [k, "tiny_prefill"], 300.0)
    assert list(found) == [k]
    r = found[k]
    assert r["utilization"]["device"]["dsp"] == 2310 and r["timing"]["wns_ns"] == -0.475
    # v++ scaled the U280 clock (its log says so); the V80 flow has no such log: the clock its WNS allows
    assert r["achieved_mhz"] == pytest.approx(262.5 if board == "u280" else 1000.0 / 3.808, abs=0.01)


def test_a_file_that_is_not_a_report_is_named(tmp_path):
    bad = tmp_path / "x.rpt"
    bad.write_text("hello\n")
    with pytest.raises(ImplementationReportError, match="x.rpt: no utilization table"):
        read_utilization(bad)
    with pytest.raises(ImplementationReportError, match="x.rpt: no '\\| Design Timing Summary'"):
        read_timing_summary(bad)
