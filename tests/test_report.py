"""flexllm report on the tiny project: every figure is written (valid PNGs) and linked from index.html; the
Pareto figure appears with a flexllm dse result, measured csynth figures next to the modeled ones when a
synthesis report is present; the figures' numbers are the cost model's."""

import json
import struct

import pytest

from csynth_xml import csynth_xml

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory):
    from flexllm_plugin.cli import main
    out = tmp_path_factory.mktemp("tiny") / "prj"
    assert main(["build", "configs/tiny.yaml", "--out", str(out), "--quiet"]) == 0
    return out


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG, path
    return struct.unpack(">II", data[16:24])


def test_report_renders_every_figure(tiny_project):
    from flexllm_plugin.report.html import write_report
    res = write_report(tiny_project)
    assert set(res["figures"]) == {"resources_prefill", "resources_decode", "roofline", "latency", "hbm"}
    html = (tiny_project / "report" / "index.html").read_text()
    for path in res["figures"].values():
        from pathlib import Path
        w, h = _png_size(Path(path))
        assert w >= 600 and h >= 300
        assert f"src='{Path(path).name}'" in html
    assert "No synthesis report found" in html
    est = json.loads((tiny_project / "report" / "estimates.json").read_text())
    for ctx, tps in est["decode_tokens_per_s"].items():       # the table is the build's estimates
        if tps is not None:
            assert f"<td>{ctx}</td><td>{tps}</td>" in html


def test_roofline_points_are_the_cost_model(tiny_project):
    from flexllm_plugin.cost.of_model import model_of_description
    from flexllm_plugin.cost.board import BOARDS
    from flexllm_plugin.report.html import _roofline
    est = json.loads((tiny_project / "report" / "estimates.json").read_text())
    project = json.loads((tiny_project / "flexllm_build.json").read_text())["project"]
    dec = model_of_description(est["cost_model"]["decode"], est["board"])
    roof = _roofline(dec, BOARDS[est["board"]], project)
    for c, t in zip(roof["contexts"], roof["modeled"]):
        if str(c) in est["decode_tokens_per_s"]:
            assert t == pytest.approx(est["decode_tokens_per_s"][str(c)], rel=1e-3)
        assert t <= roof["hbm"][roof["contexts"].index(c)] and t <= roof["compute"][roof["contexts"].index(c)]


def test_report_with_dse_result_and_csynth(tiny_project, tmp_path):
    from flexllm_plugin.cli import main
    from flexllm_plugin.report.html import write_report
    best = tmp_path / "best.yaml"
    assert main(["dse", "configs/tiny.yaml", "--quiet", "--objective", "decode", "--space", "Decode.BP=2,4",
                 "--space", "Prefill.TP=4", "--space", "Prefill.ChunkTokens=16", "--out", str(best)]) == 0
    rep = tiny_project / "hls" / "tiny_decode_prj" / "sol" / "syn" / "report"
    rep.mkdir(parents=True)
    (rep / "tiny_decode_csynth.xml").write_text(csynth_xml(top="tiny_decode", dsp=2999, lut=123456))
    res = write_report(tiny_project, dse=best.with_suffix(".dse.json"))
    assert {"pareto", "modeled_vs_measured"} <= set(res["figures"])
    assert res["measured"] == ["tiny_decode"]
    html = (tiny_project / "report" / "index.html").read_text()
    assert "<td>2,999</td>" in html and "<td>123,456</td>" in html
    assert "Design-space search" in html
    from pathlib import Path
    for name in ("pareto", "modeled_vs_measured"):
        _png_size(Path(res["figures"][name]))


def test_report_of_a_directory_that_is_not_a_project(tmp_path):
    from flexllm_plugin.cli import main
    assert main(["report", str(tmp_path)]) == 2


@pytest.mark.slow
def test_report_renders_on_smollm2(tmp_path):
    """The real model's project (SmolLM2-135M, 30 layers; ~2 min with a cached calibration)."""
    from pathlib import Path
    from flexllm_plugin.cli import main
    from flexllm_plugin.report.html import write_report
    out = tmp_path / "smol"
    assert main(["build", "configs/smollm2_135m_u280.yaml", "--out", str(out), "--quiet"]) == 0
    res = write_report(out)
    assert set(res["figures"]) == {"resources_prefill", "resources_decode", "roofline", "latency", "hbm"}
    for path in res["figures"].values():
        w, h = _png_size(Path(path))
        assert w >= 600 and h >= 300


def test_report_shows_implementation_next_to_modeled(tiny_project):
    """After `make xclbin` (fixture reports in v++'s layout): measured utilization, WNS and the scaled kernel
    clock next to the modeled figures; the modeled speed at the achieved clock is the model's cycles at it."""
    import shutil
    from pathlib import Path

    from flexllm_plugin.report.html import write_report
    fix = Path(__file__).resolve().parent / "fixtures" / "implementation"
    tmp = tiny_project / "build" / "hw" / "_x_tiny_decode"
    (tmp / "reports" / "link" / "imp").mkdir(parents=True)
    (tmp / "link" / "vivado" / "vpl").mkdir(parents=True)
    for f in ("impl_1_full_util_routed.rpt", "impl_1_hw_bb_locked_timing_summary_routed.rpt"):
        shutil.copy(fix / f, tmp / "reports" / "link" / "imp")
    shutil.copy(fix / "runme.log", tmp / "link" / "vivado" / "vpl")
    try:
        res = write_report(tiny_project)
    finally:
        shutil.rmtree(tiny_project / "build" / "hw")
    imp = res["implementation"]
    assert list(imp) == ["tiny_decode"]
    d = imp["tiny_decode"]
    assert d["achieved_mhz"] == 262.5 and d["wns_ns"] == -0.475 and d["timing_met"] is False
    assert d["measured_device"]["lut"] == 612345
    ratio = d["modeled_decode_tokens_per_s_at_achieved"] / d["modeled_decode_tokens_per_s_at_target"]
    assert ratio == pytest.approx(262.5 / d["target_mhz"], rel=1e-3)
    html = (tiny_project / "report" / "index.html").read_text()
    assert "Measured (place and route) next to modeled" in html and "612,345" in html and "262.5" in html
