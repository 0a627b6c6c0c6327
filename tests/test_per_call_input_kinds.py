"""Quantization.InputQuantOverrides and InputClipRatios in hardware: `flexllm build` of the tiny model with
int8 inputs at down_proj and the LM head and clipped uint4 inputs at q_proj and gate_proj, with DSP packing in
both engines, then `flexllm verify` (C simulation of the exact kernel sources against the golden model,
loop counters against the cost model). ONE per-call engine per stage (INPUT_PER_CALL) takes each call's kind
from the schedule; the quantizer takes each call's kind and clip ratio."""

import json
import re

import pytest
import yaml

from flexllm_plugin.config import load_config
from flexllm_plugin.resources import config_path

OVERRIDES = {"down_proj": "int8", "lm_head": "int8"}
CLIPS = {"q_proj": 0.9, "gate_proj": 0.85}
PROMPT = "Assert statements are a convenient way"


@pytest.fixture(scope="module")
def per_call_project(tmp_path_factory):
    from flexllm_plugin.project.builder import build_project

    root = tmp_path_factory.mktemp("per_call")
    data = yaml.safe_load(config_path("tiny.yaml").read_text())
    data["Quantization"].update({"InputQuantOverrides": OVERRIDES, "InputClipRatios": CLIPS})
    data["Decode"]["DSPPacking"] = True          # nibbles on packed DSPs (streaming form)
    data["Prefill"]["DSPLanes"] = 2              # ... and in the tiled form (lanes 0..1 packed, 2..3 fabric)
    path = root / "tiny_per_call.yaml"
    path.write_text(yaml.safe_dump(data))
    out = root / "prj"
    build_project(load_config(path), out)
    return out, path


def _table_rows(text: str, name: str):
    body = text.split(f"unit_call {name}[")[1].split("};")[0]
    return [line.strip() for line in body.splitlines()[1:] if line.strip().startswith("{")]


def test_one_per_call_engine_and_per_call_rows(per_call_project):
    out, _ = per_call_project
    for stage in ("prefill", "decode"):
        params = (out / "firmware" / f"tiny_{stage}_stage_parameters.h").read_text()
        core = (out / "firmware" / f"tiny_{stage}_stage_core.h").read_text()
        assert re.search(r"linear_config<[^;]*flexllm::INPUT_PER_CALL, WEIGHT_PORTS, flexllm::MAC_DSP_PACK2", params)
        assert core.count("flexllm::linear_mac<ENGINE>") == 1 and "typedef flexllm::linear_config" not in core
        rows = _table_rows(params, "BLOCK") + _table_rows(params, "TAIL")
        linears = [r for r in rows if r.startswith("{flexllm::UNIT_LINEAR")]
        quants = [r for r in rows if r.startswith("{flexllm::UNIT_QUANT")]
        kinds = [r.split(", ")[9] for r in linears]
        # q, k, v, o, gate, up uint4; down_proj and the LM head int8
        assert kinds == ["flexllm::INPUT_UINT4_ASYM"] * 6 + ["flexllm::INPUT_INT8_SYM"] * 2, kinds
        clips = [float(r.split(", ")[10].rstrip("f}")) for r in quants]
        assert clips == pytest.approx([0.9, 1.0, 0.85, 1.0, 1.0]), clips


def test_verify_matches_and_counters_equal_the_model(per_call_project):
    from flexllm_plugin.project.verify import verify

    out, _ = per_call_project
    r = verify(out, PROMPT, 6)
    assert r["match"] and r["tokens_match"] and r["kv_cache_match"], r
    assert r["first_divergence"] is None and r["max_logit_rel_err"] == 0.0
    for stage in ("prefill", "decode"):
        c = r["cycles"][stage]
        assert c["loops_differing"] == {} and c["counted"] == c["modeled"], (stage, c)


def test_cost_model_of_the_config_prices_each_call(per_call_project):
    """from_config (what estimates / DSE evaluate) gives the converted stages' schedule, per-call kinds and
    clip ratios included, and the int8 calls cost their second nibble pass on the MAC array only."""
    from flexllm_plugin.cost.from_config import descriptions_of_config, models_of_config
    from flexllm_plugin.preflight import model_arch

    out, path = per_call_project
    built = json.loads((out / "flexllm_build.json").read_text())["project"]["estimates"]["cost_model"]
    cfg = load_config(path)
    spec, arch = cfg.quant_spec(), model_arch(cfg)
    derived = descriptions_of_config(cfg, arch, spec)
    keep = ("unit", "d_in", "d_out", "kind", "clip")
    for stage in ("prefill", "decode"):
        for part in ("block", "tail"):
            b = [{k: c[k] for k in keep} for c in built[stage]["schedule"][part]]
            b = [dict(c, d_in=c["d_in"] if c["unit"] != "UNIT_ATTENTION" else 0) for c in b]
            assert [{k: c[k] for k in keep} for c in derived[stage]["schedule"][part]] == b, (stage, part)
        assert built[stage]["schedule"]["input_kind"] == derived[stage]["schedule"]["input_kind"] == "mixed"
    dec = models_of_config(cfg, arch, spec)["decode"]
    eng = dec.engine
    f, d = arch.intermediate_size, arch.hidden_size
    one, two = eng.iterations(1, f, d, "uint4_asym"), eng.iterations(1, f, d, "int8")
    assert two["linear_mac"] == 2 * one["linear_mac"]
    assert {k: v for k, v in two.items() if k != "linear_mac"} == {k: v for k, v in one.items() if k != "linear_mac"}


def test_hls_rules_hold_on_the_per_call_kernels(per_call_project):
    pytest.importorskip("clang.cindex")
    from flexllm_plugin.project.hls_rules import check_project

    out, _ = per_call_project
    result = check_project(out)
    assert len(result) == 2 and all(v == [] for v in result.values()), result


@pytest.mark.slow
def test_smollm2_two_layers_per_call_build_and_verify(tmp_path):
    """The real model (SmolLM2-135M, first 2 of 30 layers, RTN weights for speed) with the best measured W4A4
    recipe's exceptions: int8 down_proj / LM head inputs, 0.9 clip on the uint4 sites; C simulation equal to
    the golden model token for token, KV cache included, counters equal to the model."""
    from flexllm_plugin.project.builder import build_project
    from flexllm_plugin.project.verify import verify

    data = yaml.safe_load(config_path("smollm2_135m_u280.yaml").read_text())
    data["Model"]["Architecture"] = {"num_layers": 2}
    data["Quantization"].update({"GPTQ": False, "CalibrationTokens": 512, "CalibrationContext": 256,
                                 "InputQuantOverrides": OVERRIDES,
                                 "InputClipRatios": {"q_proj": 0.9, "o_proj": 0.9, "gate_proj": 0.9}})
    data["Prefill"].update({"MaxSeqLen": 64, "ChunkTokens": 8})
    data["Decode"].update({"MaxContext": 128, "MaxNewTokens": 16, "BP": 4})
    path = tmp_path / "smollm2_2l_per_call.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "prj"
    build_project(load_config(path), out)
    r = verify(out, "Assert statements are a convenient way to insert debugging assertions into a program:", 8)
    assert r["match"] and r["tokens_match"] and r["kv_cache_match"] and r["max_logit_rel_err"] == 0.0, r
    for stage in ("prefill", "decode"):
        assert r["cycles"][stage]["loops_differing"] == {}, r["cycles"][stage]
