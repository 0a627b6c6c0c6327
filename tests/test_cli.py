"""The flexllm command line on the tiny config (real text, random weights)."""

import json
import subprocess
import sys

import pytest

from flexllm_plugin.cli import main
from flexllm_plugin.resources import config_path


def test_ppl_json_has_the_documented_fields(capsys):
    rc = main(["ppl", str(config_path("tiny.yaml")), "--max-tokens", "512", "--ctx", "128", "--json", "--quiet"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert {"ppl", "tokens", "ctx", "quant", "rotation"} <= set(out)
    assert out["tokens"] == 4 * 127 and out["ctx"] == 128
    assert out["quant"] == "flexllm-w4a4" and out["rotation"] == "hadamard"
    # A random byte-level model is near-uniform over its 512-entry vocabulary.
    assert 100 < out["ppl"] < 2000


def test_ppl_float_without_rotation(capsys):
    rc = main(["ppl", str(config_path("tiny.yaml")), "--quant", "float", "--rotation", "none",
               "--max-tokens", "256", "--ctx", "128", "--json", "--quiet"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["quant"] == "float" and out["rotation"] == "none" and out["tokens"] == 254


def test_errors_exit_2_with_the_reason(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("Model:\n  Source: preset:tiny\nDecode:\n  Bogus: 1\n")
    assert main(["ppl", str(bad), "--json"]) == 2
    assert "unknown key 'Decode.Bogus'" in capsys.readouterr().err
    assert main(["ppl", str(config_path("tiny.yaml")), "--ctx", "0"]) == 2
    assert "--ctx must be positive" in capsys.readouterr().err
    missing = tmp_path / "missing.txt"
    assert main(["ppl", str(config_path("tiny.yaml")), "--text", str(missing), "--quiet"]) == 2
    assert "missing.txt" in capsys.readouterr().err


def test_console_script_is_installed():
    out = subprocess.run(["flexllm", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "ppl" in out.stdout and "export" in out.stdout
