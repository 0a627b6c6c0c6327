"""A built project is self-contained: verify / generate / make csim work from any directory with the
project alone (its tokenizer, reference model, weights), generate uses the project's sampling settings,
and the converted QONNX graphs are kept in qonnx/."""

import json
import os
import shutil
import subprocess

import pytest
import yaml

from flexllm_plugin.cli import main
from flexllm_plugin.resources import config_path

PROMPT = "Assert statements are a convenient way"


@pytest.fixture(scope="module")
def moved_project(tmp_path_factory):
    """tiny with top-k sampling, built from a relative hf: path, then moved elsewhere with its source deleted."""
    from flexllm_plugin.config import load_config
    from flexllm_plugin.project.builder import build_project
    from helpers import write_tiny_hf_dir

    root = tmp_path_factory.mktemp("sc")
    write_tiny_hf_dir(root / "hf")
    data = yaml.safe_load(config_path("tiny.yaml").read_text())
    data["Model"] = {"Source": "hf:hf"}                      # relative to the working directory
    data["Decode"].update({"Sampling": "top-k", "TopK": 5, "Temperature": 0.7})
    (root / "cfg.yaml").write_text(yaml.safe_dump(data))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        build_project(load_config("cfg.yaml"), root / "prj")
    finally:
        os.chdir(cwd)
    shutil.move(root / "prj", root / "elsewhere")
    shutil.rmtree(root / "hf")
    return root / "elsewhere"


@pytest.fixture
def no_source(monkeypatch):
    import brevitas_models.sources as sources

    def forbidden(*a, **k):
        raise AssertionError("the model source was loaded")
    monkeypatch.setattr(sources, "load_source", forbidden)


def test_project_keeps_its_qonnx_graphs_and_reference(moved_project):
    for stage in ("prefill", "decode"):
        for f in ("model.onnx", "fused.onnx", "reference.npz"):
            assert (moved_project / "qonnx" / stage / f).is_file(), (stage, f)
    assert (moved_project / "reference" / "calibrated.pt").is_file()
    assert (moved_project / "tokenizer" / "hf" / "tokenizer.json").is_file()
    sums = subprocess.run(["sha256sum", "-c", "--quiet", "weights/sha256sums.txt"], cwd=moved_project)
    assert sums.returncode == 0
    info = json.loads((moved_project / "flexllm_build.json").read_text())
    assert "qonnx" in info["entries"] and "reference" in info["entries"]


def test_verify_and_generate_from_another_directory(moved_project, tmp_path, monkeypatch, capsys, no_source):
    monkeypatch.chdir(tmp_path)
    assert main(["verify", str(moved_project), "--prompt", PROMPT, "--max-new-tokens", "6", "--json",
                 "--quiet"]) == 0
    v = json.loads(capsys.readouterr().out)
    assert v["match"], v
    # generate: the project's sampling (top-k 5, temperature 0.7); prints the text only
    assert main(["generate", str(moved_project), "--prompt", PROMPT, "--max-new-tokens", "6", "--json",
                 "--quiet"]) == 0
    g = json.loads(capsys.readouterr().out)
    assert (g["top_k"], g["temperature"]) == (5, 0.7)
    # temperature 0 = greedy: the tokens verify checked
    assert main(["generate", str(moved_project), "--prompt", PROMPT, "--max-new-tokens", "6", "--temperature",
                 "0", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert main(["generate", str(moved_project), "--prompt", PROMPT, "--max-new-tokens", "6", "--temperature",
                 "0", "--quiet", "--json"]) == 0
    g0 = json.loads(capsys.readouterr().out)
    assert g0["tokens"] == v["csim_tokens"] and g0["top_k"] == 1
    assert text == g0["text"] + "\n"


def test_bad_sampling_arguments_are_user_errors(moved_project, capsys):
    for argv, msg in ((["--temperature", "-1"], "--temperature must be a finite number >= 0"),
                      (["--temperature", "nan"], "--temperature must be a finite number >= 0"),
                      (["--top-k", "0"], "--top-k must be in 1..512")):
        assert main(["generate", str(moved_project), "--prompt", PROMPT, "--quiet", *argv]) == 2
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1


def test_make_csim_without_vitis(moved_project):
    env = {k: v for k, v in os.environ.items() if k not in ("XILINX_HLS", "XILINX_VITIS", "AP_TYPES")}
    r = subprocess.run(["make", "csim"], cwd=moved_project, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "-Icsim/ap_types" in r.stdout


def test_not_a_project_is_one_line(tmp_path, capsys):
    assert main(["verify", str(tmp_path), "--prompt", "x", "--quiet"]) == 2
    assert "not a flexllm project" in capsys.readouterr().err
