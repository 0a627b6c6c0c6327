"""hm.build() of a FlexLLM stage (hls4ml's build verb): a clear error without Vitis, the HLS script run and
its csynth report returned as hls4ml's Vitis backend returns it (a stand-in vitis_hls on PATH writes the
report where Vitis HLS does)."""

import os
import stat

import pytest

from csynth_xml import csynth_xml


class _Config:
    def __init__(self, out, name):
        self.out, self.name = str(out), name

    def get_output_dir(self):
        return self.out

    def get_project_name(self):
        return self.name

    def get_config_value(self, key):
        return {"ClockPeriod": 3.33, "Part": "xcu280-fsvh2892-2L-e"}[key]


class _Stage:
    """What build() reads of a converted stage: its hls4ml config (output dir, name, clock, part)."""
    def __init__(self, out, name):
        self.config = _Config(out, name)


@pytest.fixture
def backend():
    import hls4ml  # noqa: F401
    from hls4ml.backends import get_backend
    from flexllm_plugin.backend.registration import ensure_registered
    ensure_registered()
    return get_backend("FlexLLM")


@pytest.fixture
def stage(tmp_path):
    (tmp_path / "firmware").mkdir()
    (tmp_path / "firmware" / "k_decode.cpp").write_text("// kernel\n")
    return _Stage(tmp_path, "k_decode")


def test_build_without_vitis_says_what_to_install(backend, stage, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(RuntimeError, match=r"`vitis_hls` is not on PATH\. Install AMD Vitis"):
        backend.build(stage)                         # hls4ml's defaults: csim=True, synth=True
    assert not (tmp_path / "firmware" / "k_decode-None.so").exists()   # failed before any step


def test_build_options_not_available_are_named(backend, stage):
    with pytest.raises(ValueError, match=r"build\(cosim=True\): not available"):
        backend.build(stage, csim=False, cosim=True)


def test_build_runs_the_stage_script_and_returns_hls4ml_report(backend, stage, tmp_path, monkeypatch):
    from hls4ml.report import parse_vivado_report
    from csynth_xml import HLS_APP

    bindir = tmp_path / "bin"
    bindir.mkdir()
    xml = csynth_xml(top="k_decode", dsp=4242)
    (tmp_path / "expected.xml").write_text(xml)
    fake = bindir / "vitis_hls"
    # stand-in for vitis_hls -f hls/k_decode.tcl: records its steps, writes the report where Vitis HLS does
    fake.write_text("#!/bin/sh\n"
                    "echo \"$FLEXLLM_HLS_STEPS|$1|$2\" > ran.txt\n"
                    "mkdir -p hls/k_decode_prj/sol/syn/report\n"
                    "cp expected.xml hls/k_decode_prj/sol/syn/report/k_decode_csynth.xml\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    rep = backend.build(stage, csim=False, synth=True, export=True, log_to_stdout=False)
    assert (tmp_path / "ran.txt").read_text().strip() == "synth export|-f|hls/k_decode.tcl"
    tcl = (tmp_path / "hls" / "k_decode.tcl").read_text()
    assert "set_top k_decode" in tcl and "csynth_design" in tcl and "export_design -format xo" in tcl
    # the same dictionary hls4ml's parser gives for this report in its own layout
    ref = tmp_path / "ref"
    (ref / "k_decode_prj" / "sol" / "syn" / "report").mkdir(parents=True)
    (ref / "project.tcl").write_text('set project_name "k_decode"\nset backend "vitis"\n')
    (ref / "k_decode_prj" / "hls.app").write_text(HLS_APP.format(top="k_decode"))
    (ref / "k_decode_prj" / "sol" / "syn" / "report" / "k_decode_csynth.xml").write_text(xml)
    assert rep["CSynthesisReport"] == parse_vivado_report(str(ref))["CSynthesisReport"]
    assert rep["measured"]["dsp"] == 4242


def test_build_failure_is_reported(backend, stage, tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "vitis_hls"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(RuntimeError, match="Vitis HLS failed for k_decode .*exit 3"):
        backend.build(stage, csim=False, log_to_stdout=False)
