"""Design-space search (flexllm_plugin/dse) on the tiny model: every returned design fits every budget when
re-checked from its written config with a fresh cost model; the search finds the optimum of a brute force
over a small space; the same inputs give the same result; the knob-to-kernel split it relies on holds."""

import dataclasses
import itertools
import random

import pytest

from flexllm_plugin.config import load_config, parse_config
from flexllm_plugin.cost.board import BOARDS
from flexllm_plugin.cost.from_config import descriptions_of_config, models_of_config
from flexllm_plugin.dse.evaluate import Evaluator
from flexllm_plugin.dse.search import OBJECTIVES, Search, score
from flexllm_plugin.dse.space import DECODE_ONLY, KNOBS, PREFILL_ONLY, make_space
from flexllm_plugin.preflight import linear_weight_count, model_arch
from flexllm_plugin.project.spec import kv_row_bytes

PROMPT, NEW = 64, 32


@pytest.fixture(scope="module")
def tiny():
    cfg = load_config("configs/tiny.yaml")
    return cfg, model_arch(cfg), cfg.quant_spec()


@pytest.fixture
def half_board(monkeypatch):
    """A board with half the U280's logic (same HBM), so the budgets bind on the tiny model."""
    u = BOARDS["u280"]
    b = dataclasses.replace(u, name="u280-half", aliases=(), device=u.device * 0.5,
                            slr_resources=tuple(s * 0.5 for s in u.slr_resources))
    BOARDS._load()
    monkeypatch.setitem(BOARDS._by_name, "u280-half", b)
    return b


def reference(cfg, arch, spec, board, knobs):
    """Independent of the search: the design's config validated from scratch, a fresh (unmemoized) cost
    model, every budget, and its figures; None when it does not fit."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in cfg.data.items()}
    data["Board"], data["Part"] = board.name, board.part
    for knob, v in knobs.items():
        s, k = knob.split(".")
        data[s][k] = v
    try:
        c = parse_config(data)
    except ValueError:
        return None
    d = c["Decode"]
    if c["Prefill"]["TP"] > c["Prefill"]["ChunkTokens"]:
        return None
    if linear_weight_count(arch) * spec.weight_bits / 8 / d["BP"] > board.hbm_channel_bytes:
        return None
    if arch.num_layers * arch.num_kv_heads * d["MaxContext"] * kv_row_bytes(arch.head_dim) > board.hbm_channel_bytes:
        return None
    models = models_of_config(c, arch, spec)
    reps = {k: m.budget_report() for k, m in models.items()}
    if any(r["over_budget"] for r in reps.values()):
        return None
    f = models["decode"].clock_mhz * 1e6
    dec = models["decode"]
    t = lambda pos: sum(dec.decode_token_cycles(pos).values()) / f  # noqa: E731
    decode_s = NEW * (t(PROMPT) + t(PROMPT + NEW - 1)) / 2
    prefill_s = sum(models["prefill"].prefill_cycles(PROMPT).values()) / f
    util = max(max(r["device_utilization"].values()) for r in reps.values())
    return {"decode_tokens_per_s": 1 / t(PROMPT - 1), "prefill_seconds": prefill_s, "decode_seconds": decode_s,
            "end_to_end_seconds": prefill_s + decode_s, "utilization": util, "reports": reps}


def assert_fits(cfg, arch, spec, board, design):
    ref = reference(cfg, arch, spec, board, design["knobs"])
    assert ref is not None, f"returned design {design['knobs']} does not fit the {board.name}"
    for name, rep in ref["reports"].items():
        for k, u in rep["device_utilization"].items():
            assert u <= board.device_cap, (name, k, u)
        for slr in rep["slr"]:
            for k, u in slr["utilization"].items():
                assert within_slr_cap(u, board), (name, k, u)
    assert design["knobs"]["Decode.BP"] + 4 <= board.hbm_channels
    for key in ("decode_tokens_per_s", "prefill_seconds", "end_to_end_seconds"):
        assert design["metrics"][key] == pytest.approx(ref[key], rel=1e-12), key


def within_slr_cap(u, board):
    return u <= board.slr_cap + 1e-9


SMALL = {"Decode.BP": [2, 4], "Decode.HP": [1, 3], "Decode.KVParallel": [4, 16], "Decode.WP": [8, 32],
         "Decode.DSPPacking": [False, True], "Prefill.ChunkTokens": [16, 32], "Prefill.TP": [4, 16],
         "Prefill.WP": [8, 32], "Decode.QuantLanes": [16, 64], "Prefill.QuantLanes": [32], "Prefill.DSPLanes": [0, 2]}


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_finds_the_brute_force_optimum_on_a_small_space(tiny, half_board, objective):
    cfg, arch, spec = tiny
    space = make_space(SMALL)
    best_ref, n_fit = None, 0
    for values in itertools.product(*(space[k] for k in KNOBS)):
        knobs = dict(zip(KNOBS, values))
        ref = reference(cfg, arch, spec, half_board, knobs)
        if ref is None:
            continue
        n_fit += 1
        v = score(objective, ref)
        best_ref = v if best_ref is None or v < best_ref else best_ref
    assert 0 < n_fit < space.size()             # the budget binds: some designs do not fit
    for mode in ("exhaustive", "local"):
        ev = Evaluator(cfg, arch, spec, half_board, PROMPT, NEW, PROMPT)
        res = Search(ev, space, objective, mode).run()
        assert res["mode"] == mode
        got = score(objective, res["best"]["metrics"])
        assert got[:2] == pytest.approx(best_ref[:2], rel=1e-12), (mode, res["best"]["knobs"])
        assert_fits(cfg, arch, spec, half_board, res["best"])


@pytest.mark.parametrize("seed", range(4))
def test_no_returned_design_exceeds_a_budget_on_random_spaces(tiny, half_board, seed):
    cfg, arch, spec = tiny
    rng = random.Random(seed)
    pool = {"Decode.BP": [1, 2, 3, 4, 6, 8, 12, 16, 28], "Decode.HP": [1, 3], "Decode.KVParallel": [2, 4, 8, 16],
            "Decode.WP": [8, 16, 32, 64, 128], "Decode.DSPPacking": [False, True],
            "Prefill.ChunkTokens": [8, 16, 32, 64], "Prefill.TP": [2, 4, 8, 16, 32],
            "Prefill.WP": [8, 16, 32, 64, 128], "Decode.QuantLanes": [16, 32, 64], "Prefill.QuantLanes": [16, 64],
            "Prefill.DSPLanes": [0, 2, 4]}
    # random candidate values per knob, plus the smallest (so that something fits and the search has work)
    space = make_space({k: rng.sample(v, min(len(v), rng.randint(1, 3))) + [v[1] if k == "Decode.BP" else v[0]]
                        for k, v in pool.items()})
    board = half_board if seed % 2 else BOARDS["u280"]
    ev = Evaluator(cfg, arch, spec, board, PROMPT, NEW, PROMPT)
    res = Search(ev, space, rng.choice(OBJECTIVES), rng.choice(["exhaustive", "local"])).run()
    assert res["best"] is not None, "the smallest design fits"
    returned = [res["best"]] + res["pareto"]["prefill_vs_decode"]
    for d in returned:
        assert_fits(cfg, arch, spec, board, d)
    for p in res["pareto"]["decode_tokens_per_s_vs_utilization"]:   # decode-kernel designs: decode budget
        knobs = dict(p["knobs"], **{k: space[k][0] for k in PREFILL_ONLY})
        data = ev.config_data(knobs)
        data["Prefill"]["TP"] = min(data["Prefill"]["TP"], data["Prefill"]["ChunkTokens"])
        m = models_of_config(parse_config(data), arch, spec)["decode"]
        assert m.budget_report()["over_budget"] is None


def test_deterministic(tiny, half_board):
    cfg, arch, spec = tiny
    runs = []
    for _ in range(2):
        ev = Evaluator(cfg, arch, spec, half_board, PROMPT, NEW, PROMPT)
        res = Search(ev, make_space(SMALL), "end-to-end", "local").run()
        res.pop("seconds")
        runs.append(res)
    assert runs[0] == runs[1]


def test_knob_to_kernel_split_holds(tiny):
    """The search caches each kernel by the knobs that shape it: a decode-only knob must not change the
    prefill kernel's description, nor a prefill-only knob the decode kernel's."""
    cfg, arch, spec = tiny
    base = descriptions_of_config(cfg, arch, spec)
    changes = {"Decode.WP": 32, "Decode.DSPPacking": True, "Prefill.ChunkTokens": 16, "Prefill.TP": 2, "Prefill.WP": 16}
    for knob, v in changes.items():
        data = {k: (dict(x) if isinstance(x, dict) else x) for k, x in cfg.data.items()}
        s, k = knob.split(".")
        data[s][k] = v
        other = descriptions_of_config(parse_config(data), arch, spec)
        untouched = "prefill" if knob in DECODE_ONLY else "decode"
        assert other[untouched] == base[untouched], knob
        assert other["prefill" if untouched == "decode" else "decode"] != base["prefill" if untouched == "decode" else "decode"], knob


def test_dse_cli_writes_a_buildable_config(tmp_path):
    from flexllm_plugin.cli import main
    out = tmp_path / "best.yaml"
    rc = main(["dse", "configs/tiny.yaml", "--board", "alveo-u280", "--objective", "decode", "--quiet",
               "--space", "Decode.BP=2,4", "--space", "Prefill.TP=4", "--space", "Prefill.WP=8",
               "--space", "Prefill.ChunkTokens=16", "--out", str(out)])
    assert rc == 0
    cfg = load_config(out)                       # valid config, the searched knobs in it
    assert cfg["Decode"]["BP"] in (2, 4) and cfg["Prefill"]["TP"] == 4
    assert out.with_suffix(".dse.json").is_file()


def test_dse_cli_bad_space_is_a_user_error(capsys):
    from flexllm_plugin.cli import main
    assert main(["dse", "configs/tiny.yaml", "--space", "Decode.XX=1"]) == 2
    assert "unknown knob 'Decode.XX'" in capsys.readouterr().err


def test_space_offers_dsp_packing_when_any_site_is_uint4(tiny):
    """int8 inputs with a uint4 site (a per-call engine: int8 calls as 4-bit nibbles) may pack two int4 x
    uint4 products per DSP, as preflight allows; all-int8 inputs may not."""
    from flexllm_plugin.dse.space import default_space
    cfg, arch, _ = tiny
    board = BOARDS["u280"]
    mixed = cfg.quant_spec("w4a8").replace(input_quant_overrides={"gate_proj": "uint4_asym"})
    all8 = cfg.quant_spec("w4a8")
    assert max(default_space(cfg, arch, mixed, board)["Prefill.DSPLanes"]) > 0
    assert tuple(default_space(cfg, arch, all8, board)["Prefill.DSPLanes"]) == (0,)
