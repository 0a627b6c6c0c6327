"""flexllm build / verify / generate end to end on the tiny config (U280 project, C simulation of the
exact kernel sources against the golden model), plus the build's error handling and determinism."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flexllm_plugin.config import ConfigError, load_config
from flexllm_plugin.resources import config_path

PROMPT = "Assert statements are a convenient way to insert"   # 48 byte tokens (tiny: MaxSeqLen 64)


def _tree_digest(root: Path) -> dict:
    """sha256 of every generated file (run products -- build/, csim/out/ -- excluded)."""
    def generated(p):
        parts = p.relative_to(root).parts
        return "build" not in parts and parts[:2] != ("csim", "out")
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and generated(p)}


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory):
    from flexllm_plugin.project.builder import build_project

    out = tmp_path_factory.mktemp("prj") / "tiny"
    summary = build_project(load_config(config_path("tiny.yaml")), out)
    return out, summary


def test_build_writes_a_complete_u280_project(tiny_project):
    out, summary = tiny_project
    for rel in ("firmware/tiny_prefill.cpp", "firmware/tiny_decode.cpp", "hls/tiny_prefill.tcl",
                "hls/tiny_decode.tcl", "vitis/link_tiny_prefill.cfg", "vitis/link_tiny_decode.cfg", "host/host.cpp", "Makefile", "README.md",
                "csim/testbench.cpp", "weights/manifest.json", "tokenizer/tokens.bin", "flexllm_build.json"):
        assert (out / rel).is_file(), rel
    decode = (out / "firmware" / "tiny_decode.cpp").read_text()
    core = (out / "firmware" / "tiny_decode_stage_core.h").read_text()
    # temporal reuse: ONE call site per unit, the schedule walks BLOCK x N_LAYERS then TAIL; the token
    # loop is on chip around the DATAFLOW stage pass
    assert core.count("flexllm::attention<") == 1 and core.count("flexllm::linear_mac<ENGINE>") == 1
    assert "BLOCK_STEPS = N_LAYERS * BLOCK_CALLS" in core and "weight_reader<3>(w3" in core
    assert "DECODE_TOKENS:" in decode and "stage_pass(ids, 1, position + s, true" in decode
    assert "sample_token(step_logits" in decode
    pre_cfg = (out / "vitis" / "link_tiny_prefill.cfg").read_text()
    dec_cfg = (out / "vitis" / "link_tiny_decode.cfg").read_text()
    assert "platform=xilinx_u280_gen3x16_xdma_1_202211_1" in pre_cfg and "nk=tiny_prefill:1:tiny_prefill_1" in pre_cfg
    assert "sp=tiny_decode_1.w3:HBM[3]" in dec_cfg and "sp=tiny_prefill_1.kv0:HBM[0]" in pre_cfg
    assert "sp=tiny_prefill_1.kvw3:HBM[3]" in pre_cfg      # KV port 3 (V) on weight port 3's channel
    assert "tiny_decode" not in pre_cfg.split("[connectivity]")[1]      # one kernel per xclbin
    assert summary["buffers"]["embed"]["memory"] == "DDR[0]"
    manifest = json.loads((out / "weights" / "manifest.json").read_text())
    assert manifest["weight_ports"] == 4
    assert any(k.startswith("decode:") and "[1]" in k for k in manifest["tensors"])     # layer 1 of 2


def test_verify_matches_the_golden_model(tiny_project):
    from flexllm_plugin.project.verify import verify

    out, _ = tiny_project
    r = verify(out, PROMPT, 12)
    assert r["match"] and r["tokens_match"] and r["kv_cache_match"]
    assert r["first_divergence"] is None and r["max_logit_rel_err"] == 0.0
    assert r["csim_tokens"] == r["reference_tokens"] and len(r["csim_tokens"]) == 12
    assert r["brevitas_agreement"] >= 0.9
    assert set(r) >= {"match", "reference_tokens", "csim_tokens", "first_divergence", "max_logit_rel_err",
                      "brevitas_tokens", "brevitas_agreement", "seconds", "cycles", "brevitas_noise_floor",
                      "golden_prompt_ppl", "brevitas_prompt_ppl", "golden_brevitas_ppl_ratio"}
    assert 0.0 <= r["brevitas_noise_floor"] <= 1.0
    assert r["golden_brevitas_ppl_ratio"] == pytest.approx(r["golden_prompt_ppl"] / r["brevitas_prompt_ppl"])
    assert abs(r["golden_brevitas_ppl_ratio"] - 1.0) < 0.02
    _assert_cycles_held_to_the_code(r)


def _assert_cycles_held_to_the_code(r):
    """The cost model's cycles of the whole prefill and of a decode token against the C simulation's loop
    counters (issue bound 10 %; the trip counts are exact, so no loop may differ at all)."""
    for stage in ("prefill", "decode"):
        c = r["cycles"][stage]
        assert abs(c["counted"] - c["modeled"]) <= 0.10 * c["counted"], (stage, c)
        assert c["loops_differing"] == {}, (stage, c["loops_differing"])


def test_cli_generate_and_verify_errors(tiny_project):
    out, _ = tiny_project
    r = subprocess.run([sys.executable, "-m", "flexllm_plugin.cli", "generate", str(out), "--prompt", PROMPT,
                        "--max-new-tokens", "4", "--json"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    gen = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(gen["tokens"]) == 4 and isinstance(gen["text"], str)
    # more new tokens than compiled (tiny: MaxNewTokens 32), prompt above the prefill maximum (64)
    for argv, msg in ((["--prompt", PROMPT, "--max-new-tokens", "33"], "MaxNewTokens"),
                      (["--prompt", "x" * 100, "--max-new-tokens", "4"], "longer than the prefill maximum")):
        r = subprocess.run([sys.executable, "-m", "flexllm_plugin.cli", "verify", str(out), *argv],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 2 and msg in r.stderr, r.stderr
    # context above the compiled maximum
    from flexllm_plugin.project.verify import ProjectError, _check_request
    with pytest.raises(ProjectError, match="MaxContext = 128"):
        _check_request({"max_prompt": 100, "max_new_tokens": 64, "max_context": 128}, 100, 40)


def test_testbench_default_run_and_make_csim(tiny_project):
    """`make csim` (what a Vitis user runs first) builds and runs the testbench with its defaults."""
    import hls4ml

    out, _ = tiny_project
    ap = Path(hls4ml.__file__).parent / "templates" / "vivado" / "ap_types"
    r = subprocess.run(["make", "csim", f"AP_TYPES={ap}"], cwd=out, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    tokens = np.fromfile(out / "csim" / "out" / "tokens.bin", dtype=np.int32)
    assert tokens.size == 8 and np.all((tokens >= 0) & (tokens < 512))


def test_same_inputs_give_a_byte_identical_project(tiny_project, tmp_path):
    from flexllm_plugin.project.builder import build_project

    out, _ = tiny_project
    again = tmp_path / "tiny"
    build_project(load_config(config_path("tiny.yaml")), again)
    assert _tree_digest(again) == _tree_digest(out)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_cache_hit_exports_from_the_cache_entry_to_the_same_project(tiny_project, tmp_path, monkeypatch, workers):
    """With the calibrated-model cache on, the second build loads the entry (mmap), copies it as the
    reference state and exports the stages from it -- in this process, or the decode stage in a second
    (spawned) process -- and writes the same bytes as the build without a cache."""
    import flexllm_plugin.project.builder as builder

    out, _ = tiny_project
    monkeypatch.setenv("FLEXLLM_CACHE", str(tmp_path / "cache"))
    builder.build_project(load_config(config_path("tiny.yaml")), tmp_path / "cold")     # fills the cache
    monkeypatch.setattr(builder, "export_workers", lambda arch: workers)
    restored = []
    monkeypatch.setattr(builder.SavedModel, "restore",
                        lambda self, _f=builder.SavedModel.restore: restored.append(1) or _f(self))
    builder.build_project(load_config(config_path("tiny.yaml")), tmp_path / "hit")
    assert len(restored) == 1          # in this process: once (both stages, or prefill beside the decode process)
    assert _tree_digest(tmp_path / "hit") == _tree_digest(tmp_path / "cold") == _tree_digest(out)


def _tiny_cfg(tmp_path, **sections):
    import yaml

    data = yaml.safe_load(config_path("tiny.yaml").read_text())
    for sec, values in sections.items():
        data.setdefault(sec, {}).update(values)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path)


def test_too_many_hbm_channels_fails_cleanly(tmp_path):
    """31 weight ports + 2 parameter channels > 32 HBM channels: a clear error when the config is loaded."""
    with pytest.raises(ConfigError, match=r"Decode.BP 31 .*= 33 HBM channels, the U280 has 32"):
        _tiny_cfg(tmp_path, Decode={"BP": 31})
    assert [p.name for p in tmp_path.iterdir()] == ["cfg.yaml"]


def test_budget_checks_name_the_bank():
    from flexllm_plugin.project.builder import check_budgets
    from flexllm_plugin.project.spec import Buffer

    with pytest.raises(ConfigError, match=r"HBM\[3\] holds 300.0 MB \(weights_p3\)"):
        check_budgets([Buffer("weights_p3", "HBM[3]", 300 * 2 ** 20)])
    check_budgets([Buffer("weights_p3", "HBM[3]", 256 * 2 ** 20)])


def test_bad_config_values_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match="Decode.BP"):
        _tiny_cfg(tmp_path, Decode={"BP": 40})
    with pytest.raises(ConfigError, match="Prefill.Chunk"):
        _tiny_cfg(tmp_path, Prefill={"ChunkSize": 4})
    from flexllm_plugin.project.builder import build_project
    cfg = _tiny_cfg(tmp_path, Decode={"MaxContext": 100000})
    with pytest.raises(ConfigError, match="MaxContext"):
        build_project(cfg, tmp_path / "prj")


@pytest.mark.slow
@pytest.mark.ci
def test_smollm2_two_layers_build_and_verify(tmp_path):
    """The real model's weights and tokenizer (SmolLM2-135M, first 2 of 30 layers, RTN weights for speed)
    through build + verify: C simulation equal to the golden model token for token, KV cache included."""
    import yaml

    from flexllm_plugin.project.builder import build_project
    from flexllm_plugin.project.verify import verify

    data = yaml.safe_load(config_path("smollm2_135m_u280.yaml").read_text())
    data["Model"]["Architecture"] = {"num_layers": 2}
    data["Quantization"].update({"GPTQ": False, "CalibrationTokens": 512, "CalibrationContext": 256})
    data["Prefill"].update({"MaxSeqLen": 64, "ChunkTokens": 8})
    data["Decode"].update({"MaxContext": 128, "MaxNewTokens": 16, "BP": 4})
    path = tmp_path / "smollm2_2l.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "prj"
    build_project(load_config(path), out)
    r = verify(out, "Assert statements are a convenient way to insert debugging assertions into a program:", 8)
    assert r["match"], r
    _assert_cycles_held_to_the_code(r)
    from flexllm_plugin.project.hls_rules import check_project

    violations = check_project(out)          # the HLS rules on the SmolLM2-shaped kernels
    assert violations and all(v == [] for v in violations.values()), violations
    assert r["prompt_tokens"] > 8           # several prefill chunks


def test_cost_model_of_a_config_equals_the_converted_stages(tiny_project):
    """The estimates of a config without building (cost/from_config.py: what a DSE evaluates) describe
    exactly the kernels a build generates: same schedule, sizes and lanes as the converted stages."""
    from flexllm_plugin.cost.from_config import descriptions_of_config
    from flexllm_plugin.preflight import model_arch

    out, _ = tiny_project
    built = json.loads((out / "flexllm_build.json").read_text())["project"]["estimates"]["cost_model"]
    cfg = load_config(config_path("tiny.yaml"))
    derived = descriptions_of_config(cfg, model_arch(cfg), cfg.quant_spec())
    keep = ("unit", "d_in", "d_out")
    for stage in ("prefill", "decode"):
        b, d = built[stage], derived[stage]
        for part in ("block", "tail"):
            calls = [{k: c[k] for k in keep if k in c} for c in b["schedule"][part]]
            assert [{k: c[k] for k in keep} for c in d["schedule"][part]] == [
                dict(c, d_in=c["d_in"] if c["unit"] != "UNIT_ATTENTION" else 0) for c in calls], (stage, part)
        for key in ("max_tokens", "hidden", "width", "row", "vocab", "max_out", "weight_bits", "input_kind",
                    "heads", "kv_heads", "head_dim", "hadamard_m", "hadamard_n"):
            assert b["schedule"][key] == d["schedule"][key], (stage, key)
        assert b["lanes"] == d["lanes"] and b["n_layers"] == d["n_layers"], stage
    est = json.loads((out / "report" / "estimates.json").read_text())
    assert set(est["decode_tokens_per_s"]) == {"128", "512", "1024", "2048"}
    assert set(est["prefill_seconds"]) == {"128", "512", "1024"}
    for k in est["kernels"].values():
        assert k["over_budget"] is None and len(k["slr"]) == 3


def test_testbench_refuses_a_tampered_weight_file(tiny_project):
    """The C-simulation testbench checks weights/sha256sums.txt before it loads anything (as the host does)."""
    from flexllm_plugin.project.verify import ProjectError, compile_testbench, run_testbench

    out, _ = tiny_project
    exe = compile_testbench(out, "tiny")
    path = out / "weights" / "weights_p1.bin"
    good = path.read_bytes()
    try:
        path.write_bytes(good[:100] + bytes([good[100] ^ 0x10]) + good[101:])
        with pytest.raises(ProjectError, match="weights_p1.bin: sha256 differs"):
            run_testbench(out, exe, [1, 2, 3], 2)
    finally:
        path.write_bytes(good)
