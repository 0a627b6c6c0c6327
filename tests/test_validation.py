"""Validate first: every check that needs only the config, the checkpoint header and the board fails
`flexllm build` with exit 2 and one line naming the key (or file / tensor), in under 2 seconds, before any
model is loaded."""

import subprocess
import sys
import time

import pytest
import yaml

from flexllm_plugin.cli import main
from flexllm_plugin.resources import config_path

TINY_TEXT = config_path("tiny.yaml").read_text()


@pytest.fixture
def no_model(monkeypatch):
    import brevitas_models.build as build
    import brevitas_models.sources as sources

    def forbidden(*a, **k):
        raise AssertionError("a model was loaded")
    monkeypatch.setattr(build, "build_model", forbidden)
    monkeypatch.setattr(sources, "load_source", forbidden)


def _cfg(tmp_path, text=None, **sections):
    data = yaml.safe_load(TINY_TEXT)
    for sec, values in sections.items():
        if isinstance(values, dict):
            data.setdefault(sec, {}).update(values)
        else:
            data[sec] = values
    p = tmp_path / "cfg.yaml"
    p.write_text(text if text is not None else yaml.safe_dump(data))
    return p


BAD = [
    ({"Decode": {"Temperature": float("nan")}}, "Decode.Temperature in .*cfg.yaml must be a finite number, got nan"),
    ({"ClockPeriod": float("inf")}, "ClockPeriod in .*must be a finite number"),
    ({"Model": {"Source": "preset:tiny", "Architecture": {"rope_theta": float("nan")}}},
     "Model.Architecture.rope_theta .*finite"),
    ({"Part": "xcvu9p-flga2104-2L-e"}, "Part 'xcvu9p-flga2104-2L-e' .*is not the part of Board 'u280' "
                                       r"\(xcu280-fsvh2892-2L-e, platform xilinx_u280"),
    ({"HMT": {"Enabled": True}}, "HMT.SegmentLength 1024 .*exceeds Prefill.MaxSeqLen 64"),
    ({"HMT": {"Enabled": True, "SegmentLength": 48, "MemorySlots": 30000}}, "HMT.MemorySlots 30000 .*URAM budget"),
    ({"Decode": {"BP": 31}}, r"Decode.BP 31 .*31 weight ports \+ 2 parameter channels = 33 "
                             r"HBM channels, the U280 has 32; use Decode.BP <= 30"),
    ({"Decode": {"BP": 1}}, r"Decode.BP 1 .*at least 2 weight ports"),
    ({"Decode": {"BP": 33}}, r"Decode.BP .*must be an integer in \[1, 32\]"),
    ({"Prefill": {"MaxSeqLen": 200}}, "Prefill.MaxSeqLen 200 .*exceeds Decode.MaxContext 128"),
    ({"Prefill": {"ChunkTokens": 100}}, "Prefill.ChunkTokens 100 .*exceeds Prefill.MaxSeqLen 64"),
    ({"Decode": {"MaxNewTokens": 128}}, "Decode.MaxNewTokens 128 .*must be below Decode.MaxContext"),
    ({"ProjectName": "my-project"}, "ProjectName .*must be a C identifier"),
    ({"ProjectName": "1st"}, "ProjectName .*must be a C identifier"),
    ({"ProjectName": "int"}, "ProjectName .*keyword"),
    ({"Decode": {"Sampling": "top-k", "TopK": 1}}, "Decode.TopK 1 .*must be >= 2 with Sampling: top-k"),
    ({"Decode": {"TopK": 40}}, "Decode.TopK 40 .*no effect with Sampling: greedy"),
    ({"Decode": {"Sampling": "top-k", "TopK": 1000}}, r"Decode.TopK 1000 .*exceeds the vocabulary \(512 tokens\)"),
    ({"Decode": {"Temperature": 0}}, "Decode.Temperature .*positive finite number"),
    ({"Decode": {"MaxContext": 1024, "MaxNewTokens": 32}}, "Decode.MaxContext 1024 .*exceeds the model's 256 positions"),
    ({"Quantization": {"Preset": "float"}}, "Quantization.Preset 'float' .*cannot run on the FlexLLM hardware"),
    ({"Model": {"Source": "hf:does/not/exist"}}, "Model in .*Hugging Face model directory not found: does/not/exist"),
    ({"Model": {"Source": "preset:tiny", "Architecture": {"num_heads": 5}}}, r"Model.*num_heads"),
    ({"Decode": {"Bogus": 1}}, "unknown key 'Decode.Bogus'"),
]


@pytest.mark.parametrize("sections,match", BAD, ids=[m.split(" ")[0] for _, m in BAD])
def test_bad_value_fails_fast_without_a_model(tmp_path, no_model, capsys, sections, match):
    import re

    path = _cfg(tmp_path, **sections)
    t0 = time.perf_counter()
    rc = main(["build", str(path), "--out", str(tmp_path / "prj"), "--quiet"])
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert rc == 2, err
    assert elapsed < 2.0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flexllm: error: "), err
    assert re.search(match, lines[0]), lines[0]
    assert not (tmp_path / "prj").exists()


def test_duplicate_yaml_sections_and_keys_are_errors(tmp_path, no_model, capsys):
    text = TINY_TEXT + "\nDecode:\n  BP: 8\n"
    assert main(["build", str(_cfg(tmp_path, text)), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "duplicate key 'Decode' at line" in err and "cfg.yaml" in err
    text = TINY_TEXT.replace("  BP: 4\n", "  BP: 4\n  BP: 8\n")
    assert main(["build", str(_cfg(tmp_path, text)), "--quiet"]) == 2
    assert "duplicate key 'BP'" in capsys.readouterr().err


def test_temperature_nan_yaml_spelling(tmp_path, no_model, capsys):
    text = TINY_TEXT.replace("  KVParallel: 8\n", "  KVParallel: 8\n  Temperature: .nan\n")
    assert main(["build", str(_cfg(tmp_path, text)), "--quiet"]) == 2
    assert "Decode.Temperature" in capsys.readouterr().err


def test_invalid_yaml_is_one_line(tmp_path, capsys):
    assert main(["build", str(_cfg(tmp_path, "Model: [unclosed\n")), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "is not valid YAML: line" in err


def test_console_error_is_one_line_and_debug_shows_the_traceback(tmp_path):
    path = _cfg(tmp_path, Decode={"BP": 31})
    cmd = [sys.executable, "-m", "flexllm_plugin.cli", "build", str(path), "--out", str(tmp_path / "p")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "Decode.BP 31" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(cmd + ["--debug"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" in r.stderr and "Decode.BP 31" in r.stderr


def test_hf_header_is_read_without_the_weights(tmp_path, no_model, capsys):
    """An hf: source: MaxContext is checked against config.json's max_position_embeddings, no weights read."""
    from helpers import write_tiny_hf_dir

    hf = write_tiny_hf_dir(tmp_path / "hf")
    (hf / "model.safetensors").write_bytes(b"not read")
    path = _cfg(tmp_path, Model={"Source": f"hf:{hf}"}, Decode={"MaxContext": 512})
    assert main(["build", str(path), "--quiet"]) == 2
    assert "Decode.MaxContext 512" in capsys.readouterr().err


def test_nan_weight_names_the_tensor_and_the_file(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from brevitas_models.sources import load_source
    from helpers import write_tiny_hf_dir

    hf = write_tiny_hf_dir(tmp_path / "hf")
    sd = load_file(hf / "model.safetensors")
    sd["model.layers.1.mlp.down_proj.weight"][3, 5] = float("nan")
    save_file(sd, hf / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"model.safetensors: tensor 'model.layers.1.mlp.down_proj.weight' "
                                         r"contains 1 NaN/Inf value"):
        load_source(f"hf:{hf}")
