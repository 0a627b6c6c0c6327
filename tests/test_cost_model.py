"""The cost model held to the code: the loop-iteration counters of the C simulation (every pipelined loop
of every module, layers/flexllm_counters.h) against the trip counts of the Python twins
(flexllm_plugin/cost), per module and for whole prefill / decode passes, on tiny stages with several lane
configurations (the SmolLM2 shapes: test_project_build's SmolLM2 test, through `verify`)."""

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch

from brevitas_models.export import export_stage
from flexllm_plugin.cost.attention import AttentionUnit
from flexllm_plugin.cost.board import U280
from flexllm_plugin.cost.linear import LinearEngine
from flexllm_plugin.cost.of_model import model_of_stage
from flexllm_plugin.cost.reduce import tree_steps
from helpers import text_tokens, tiny_model

TOLERANCE = 0.10          # the bound; the trip counts are in fact exact (checked below too)
LANES = {"default": {}, "odd": {"TokenLanes": 3, "PrefillOutLanes": 5, "PrefillInLanes": 7, "KeyLanes": 3,
                                "HeadLanes": 2, "ElementLanes": 4},
         "wide": {"OutLanes": 8, "InLanes": 32, "KeyLanes": 8, "HeadLanes": 3, "ElementLanes": 16}}


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return tiny_model("flexllm-w4a4")


def _stage(model, stage, seq_len, tmp, lanes):
    from flexllm_plugin.convert import convert_stage

    info = export_stage(model, stage, tmp / "qonnx", text_tokens()[:64], seq_len=seq_len, layers=2)
    hm = convert_stage(info["onnx"], tmp / "prj", project_name=f"cost_{stage}", **lanes)
    hm.compile()
    return info, hm


def _compare(counted: Counter, modeled: Counter, what: str):
    names = set(counted) | set(modeled)
    for name in sorted(names):
        c, m = counted.get(name, 0), modeled.get(name, 0)
        assert abs(c - m) <= TOLERANCE * max(c, 1), f"{what}: loop '{name}' counted {c}, modeled {m}"
    # the twins are exact trip counts: state it, so a drift shows up at once
    assert {k: v for k, v in counted.items() if v} == {k: v for k, v in modeled.items() if v}, what


@pytest.mark.parametrize("lanes", sorted(LANES))
@pytest.mark.parametrize("stage", ["prefill", "decode"])
def test_stage_pass_iterations_match_the_csim_counters(model, stage, lanes, tmp_path):
    from flexllm_plugin.backend.simulation import loop_counts

    seq_len = 8 if stage == "prefill" else 5
    info, hm = _stage(model, stage, seq_len, tmp_path, LANES[lanes])
    ref = np.load(info["reference"])
    loop_counts(hm)                                   # reset
    hm.predict([ref[n] for n in info["input_names"]])
    counted = Counter(loop_counts(hm))
    cost = model_of_stage(hm)
    n = seq_len if stage == "prefill" else 1
    position = 0 if stage == "prefill" else seq_len
    _compare(counted, cost.pass_iterations(n, position, True), f"{stage}/{lanes}")
    # per module: every counter belongs to one unit model
    cycles = cost.pass_cycles(n, position, True)
    assert cycles["linear"] > 0 and cycles["attention"] > 0 and cycles["rmsnorm"] > 0


def test_linear_engine_trip_counts_by_hand():
    """Hand-computed cases of the engine twin (decode streaming, prefill tiled)."""
    dec = LinearEngine(max_tokens=1, max_in=2048, max_out=2048, token_lanes=1, out_lanes=16, in_lanes=64,
                       weight_bits=4, input_kind="uint4_asym", ports=16)
    assert dec.streaming
    # 2048 x 2048 int4: 16 words per row, 128 rows per port, 2 sub-steps per word
    assert dec.iterations(1, 2048, 2048) == {"linear_read_slice": 16 * 128 * 16, "linear_read_params": 128 * 2,
                                             "linear_mac": 128 * 16 * 2, "linear_epilogue": 128,
                                             "linear_distribute": 128}
    pre = LinearEngine(max_tokens=32, max_in=96, max_out=96, token_lanes=4, out_lanes=4, in_lanes=8,
                       weight_bits=4, input_kind="uint4_asym", ports=4)
    # 3 blocks of 4 rows: load 1 word per block; MACs 8 token blocks x 12 input blocks per block
    assert pre.mac_steps(32, 96, 12) == 1 + 3 * 96
    # per-call engines: uint4 calls as on a uint4 engine, int8 calls two nibble passes on the MAC array only
    dec_pc, pre_pc = replace(dec, input_kind="mixed"), replace(pre, input_kind="mixed")
    assert dec_pc.iterations(1, 2048, 2048, "uint4_asym") == dec.iterations(1, 2048, 2048)
    assert dec_pc.iterations(1, 2048, 2048, "int8") == dict(dec.iterations(1, 2048, 2048), linear_mac=2 * 128 * 16 * 2)
    assert pre_pc.mac_steps(32, 96, 12, "int8") == 1 + 3 * 2 * 96
    assert pre_pc.mac_steps(32, 96, 12, "uint4_asym") == pre.mac_steps(32, 96, 12)


def test_attention_trip_counts_by_hand():
    att = AttentionUnit(max_ctx=64, max_new=1, head_dim=16, heads=6, kv_heads=2, head_lanes=2, key_lanes=4,
                        kv_lanes=2)
    it = att.iterations(1, 9)        # 10 keys, group 3 = head blocks of 2 + 1, per kv head
    assert it["attention_scores"] == 2 * 2 * 3 and it["attention_pv"] == 2 * 2 * 3
    assert it["softmax_exp"] == 2 * 2 * 3                        # one key step of all head lanes per cycle
    assert it["reduce_tree_steps"] == 2 * 2 * 2 * tree_steps(16)  # both lanes' trees per item, in one pass
    assert it["kv_read_port_rows"] == 2 * 2 * 9 and it["kv_load"] == 2 * 5    # 9 cached rows, 2 K + 2 V ports
    assert it["kv_send_row"] == it["kv_write_port_rows"] == 2 * 2 and it["rope_load"] == 2 * 1


def test_budget_check_names_the_module():
    from flexllm_plugin.cost.stage import BudgetError, stage_model

    sched = {"block": [{"unit": "UNIT_LINEAR", "d_in": 2048, "d_out": 2048}], "tail": [], "max_tokens": 64,
             "hidden": 2048, "width": 8192, "row": 2048, "vocab": 1000, "max_out": 8192, "weight_bits": 4,
             "input_kind": "uint4_asym", "heads": 32, "kv_heads": 8, "head_dim": 64}
    lanes = {"token_lanes": 64, "out_lanes": 64, "in_lanes": 64, "ports": 16, "head_lanes": 1, "key_lanes": 1,
             "kv_lanes": 1, "element_lanes": 1, "max_context": 2048}
    m = stage_model("too_big", sched, 16, lanes, U280, 300.0)
    with pytest.raises(BudgetError, match="LUT .*'linear_mac'"):        # 262,144 fabric MACs
        m.check_budget()
    fits = stage_model("fits", dict(sched, max_tokens=16), 16, dict(lanes, token_lanes=8, out_lanes=16, in_lanes=32),
                       U280, 300.0)
    fits.check_budget()
    assert fits.budget_report()["device_utilization"]["lut"] < 0.75
