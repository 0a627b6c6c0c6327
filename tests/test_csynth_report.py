"""The csynth.xml reader against hls4ml's own report parser (the layout hls4ml expects, built here around
the same file), and its errors."""

import pytest

from csynth_xml import HLS_APP, csynth_xml
from flexllm_plugin.report.csynth import ReportError, csynth_path, find_csynth_reports, read_csynth_xml


def _hls4ml_layout(tmp_path, top, xml):
    """hls4ml's Vitis layout: <dir>/project.tcl, <dir>/<top>_prj/hls.app, <sol>/syn/report/<top>_csynth.xml."""
    (tmp_path / "project.tcl").write_text(f'set project_name "{top}"\nset backend "vitis"\n')
    prj = tmp_path / f"{top}_prj"
    rep = prj / "sol" / "syn" / "report"
    rep.mkdir(parents=True)
    (prj / "hls.app").write_text(HLS_APP.format(top=top))
    (rep / f"{top}_csynth.xml").write_text(xml)
    return rep / f"{top}_csynth.xml"


@pytest.mark.parametrize("worst", ["undef", 98765])
def test_reader_matches_hls4ml_parser(tmp_path, worst):
    from hls4ml.report import parse_vivado_report
    xml = csynth_xml(top="tiny_decode", worst=worst)
    path = _hls4ml_layout(tmp_path, "tiny_decode", xml)
    ours = read_csynth_xml(path)
    theirs = parse_vivado_report(str(tmp_path))["CSynthesisReport"]
    assert ours["CSynthesisReport"] == theirs
    m = ours["measured"]
    assert (m["dsp"], m["lut"], m["ff"], m["bram36"], m["uram"]) == (3100, 290000, 400000, 125, 128)
    assert m["best_latency_cycles"] == 1234
    assert m["worst_latency_cycles"] == (None if worst == "undef" else worst)
    assert m["estimated_clock_ns"] == pytest.approx(2.431) and m["top"] == "tiny_decode"


def test_finds_reports_of_a_flexllm_project(tmp_path):
    rep = tmp_path / "hls" / "k1_prj" / "sol" / "syn" / "report"
    rep.mkdir(parents=True)
    (rep / "k1_csynth.xml").write_text(csynth_xml(top="k1", dsp=7))
    found = find_csynth_reports(tmp_path, ["k1", "k2"])
    assert list(found) == ["k1"] and found["k1"]["measured"]["dsp"] == 7
    assert csynth_path(rep / "k1_csynth.xml") == rep / "k1_csynth.xml"


def test_not_a_csynth_report(tmp_path):
    bad = tmp_path / "x.xml"
    bad.write_text("<profile><UserAssignments/></profile>")
    with pytest.raises(ReportError, match="not a csynth.xml"):
        read_csynth_xml(bad)
    bad.write_text("not xml")
    with pytest.raises(ReportError, match="not a readable Vitis HLS csynth.xml"):
        read_csynth_xml(bad)
