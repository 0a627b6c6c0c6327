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


def test_ppl_calibration_text_calibrates_on_that_file_and_scores_the_other(tmp_path, capsys):
    """--calibration-text: the CLI's perplexity equals a model built (calibrated) on that file and scored
    on the first tokens of --text; and it differs from calibrating on the end of --text."""
    import torch
    from brevitas_models.build import build_model
    from brevitas_models.evaluation import perplexity
    from brevitas_models.text import encode, load_text, pydoc_topics_text, windows
    from flexllm_plugin.config import load_config

    topics = pydoc_topics_text()
    eval_file, calib_file = tmp_path / "eval.txt", tmp_path / "calib.txt"
    eval_file.write_text(topics[:1000])                    # too short to hold 512 calibration tokens too
    calib_file.write_text(topics[200000:201000])
    args = ["ppl", str(config_path("tiny.yaml")), "--text", str(eval_file), "--max-tokens", "768",
            "--ctx", "128", "--json", "--quiet"]
    assert main(args) == 2
    assert "calibration tokens exceed" in capsys.readouterr().err
    assert main(args + ["--calibration-text", str(calib_file)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["calibration_text"] == str(calib_file) and out["tokens"] == 6 * 127

    cfg = load_config(config_path("tiny.yaml"))
    weights = cfg.load_weights()
    spec = cfg.quant_spec()
    model = build_model(weights, spec, calib_text=load_text(str(calib_file)), max_positions=512)
    ref = perplexity(model, windows(encode(weights.tokenizer, topics[:1000])[:768], 128))
    assert out["ppl"] == pytest.approx(ref["ppl"], rel=1e-9)
    other = build_model(weights, spec, calib_text=topics[:1000] + topics[300000:301000], max_positions=512)
    assert perplexity(other, windows(encode(weights.tokenizer, topics[:1000])[:768], 128))["ppl"] != out["ppl"]


def test_ppl_calibration_text_too_short_is_a_clear_error(tmp_path, capsys):
    short = tmp_path / "short.txt"
    short.write_text("only a few words")
    assert main(["ppl", str(config_path("tiny.yaml")), "--max-tokens", "256", "--ctx", "128", "--quiet",
                 "--calibration-text", str(short)]) == 2
    err = capsys.readouterr().err
    assert "short.txt" in err and "512 calibration tokens" in err


def test_openmp_threads_sleep_when_the_cores_are_busy_unless_the_user_says_otherwise():
    """The wait policy chosen before torch loads libgomp: PASSIVE above the busy load, libgomp's default
    on an idle machine, and never over a value the user set (also in a fresh interpreter)."""
    import os
    import subprocess
    import sys

    from brevitas_models import BUSY_LOAD, openmp_wait_policy
    assert openmp_wait_policy({}, BUSY_LOAD + 0.5) == "PASSIVE"
    assert openmp_wait_policy({}, BUSY_LOAD - 0.5) is None
    assert openmp_wait_policy({"OMP_WAIT_POLICY": "ACTIVE"}, 8.0) is None
    code = "import flexllm_plugin, os; print(os.environ.get('OMP_WAIT_POLICY'))"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ACTIVE"
