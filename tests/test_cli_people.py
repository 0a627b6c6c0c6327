"""The CLI talks to people: text by default, --json for machines, --version, help for every argument,
progress with counts, and --quiet silences hls4ml and Brevitas too."""

import json
import subprocess
import sys

import pytest

from flexllm_plugin.cli import build_parser, main
from flexllm_plugin.resources import config_path

TINY = str(config_path("tiny.yaml"))


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("flexllm 0.")


def test_every_argument_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, sp in sub.choices.items():
        for action in sp._actions:
            assert action.help, f"flexllm {name} {action.option_strings or action.dest} has no help text"


def test_ppl_prints_text_by_default_and_json_on_request(capsys):
    assert main(["ppl", TINY, "--max-tokens", "256", "--ctx", "128", "--quant", "w8a8", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("perplexity ") and "over 254 tokens" in out
    assert main(["ppl", TINY, "--max-tokens", "256", "--ctx", "128", "--quant", "w8a8", "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] == 254


def test_progress_bar_with_counts_and_time_left(capsys):
    assert main(["ppl", TINY, "--max-tokens", "256", "--ctx", "128"]) == 0
    err = capsys.readouterr().err
    assert "calibration (GPTQ): 3/3 layers" in err and "perplexity: 2/2 windows" in err
    assert "<00:00" in err                                       # elapsed<remaining
    assert "calibrated layer 2 of 2" in err


def test_build_quiet_is_silent_and_text_summary(tmp_path):
    """hls4ml's topology dump and Brevitas' warnings do not reach the terminal with --quiet."""
    r = subprocess.run([sys.executable, "-m", "flexllm_plugin.cli", "build", TINY, "--out", str(tmp_path / "p"),
                        "--quiet"], capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "FLEXLLM_CACHE": "off"})
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert "Topology" not in r.stdout and "Layer name" not in r.stdout
    assert r.stdout.startswith("Project tiny written to ") and "HBM[0]" in r.stdout
