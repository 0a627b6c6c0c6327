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


def test_run_main_job_on_tiny(tmp_path, capsys):
    rc = main(["run", str(config_path("tiny.yaml")), "--max-tokens", "256", "--ctx", "128",
               "--out", str(tmp_path / "qonnx"), "--json", "--quiet"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["float"]["quant"] == "float" and out["quantized"]["quant"] == "flexllm-w4a4"
    assert abs(out["ppl_ratio"] - out["quantized"]["ppl"] / out["float"]["ppl"]) < 1e-12
    for stage in ("prefill", "decode"):
        assert (tmp_path / "qonnx" / stage / "model.onnx").is_file()
        assert (tmp_path / "qonnx" / stage / "reference.npz").is_file()


def test_export_command_writes_the_stage(tmp_path, capsys):
    import numpy as np
    import onnx
    rc = main(["export", str(config_path("tiny.yaml")), "--stage", "decode", "--seq-len", "8",
               "--out", str(tmp_path / "d"), "--json", "--quiet"])
    assert rc == 0
    graph = onnx.load(str(tmp_path / "d" / "model.onnx")).graph
    ref = np.load(tmp_path / "d" / "reference.npz")
    names = [i.name for i in graph.input] + [o.name for o in graph.output]
    assert sorted(ref.files) == sorted(names)
    assert ref["past_key_0"].shape[2] == 8
