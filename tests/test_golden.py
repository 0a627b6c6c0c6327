"""Bit-true golden model: numerics primitives, trace contract, decode == prefill, agreement with
the Brevitas model (tiny random-weight preset)."""

import math

import numpy as np
import pytest
import torch

from brevitas_models.fp32 import (REDUCE_PARTIALS, accumulator_bits, exp32, int_matmul, quant_int8_sym, quant_static,
                                  quant_uint4_asym, rint, rmsnorm, rope, silu, softmax_masked, sum_partials)
from brevitas_models.golden import GoldenModel, KVCache

torch.set_num_threads(1)

F = np.float32


def f32(*v):
    return np.array(v, dtype=np.float32)


# ------------------------------------------------------------------------------ primitives (4)
def _sum_partials_loop(row):
    """The contract written out with float32 scalars: 128 sequential partials, then the tree."""
    p = [F(0)] * 128
    for k, v in enumerate(row):
        p[k % 128] = F(p[k % 128] + v)
    while len(p) > 1:
        p = [F(p[2 * i] + p[2 * i + 1]) for i in range(len(p) // 2)]
    return p[0]


def test_sum_partials_hand_cases():
    assert REDUCE_PARTIALS == 128
    assert sum_partials(f32(1, 2, 3, 4, 5)) == F(15)
    # tree order: partials [2^24, 1, 1, 1, 0, ...] -> (2^24 + 1 -> 2^24) + (1 + 1) = 2^24 + 2;
    # a sequential sum would give 2^24.
    assert sum_partials(f32(2 ** 24, 1, 1, 1)) == F(2 ** 24 + 2)
    # each partial is sequential: partial 0 gets 2^24, 1, 1 (k = 0, 128, 256) -> 2^24 twice rounded;
    # a pairwise (numpy) sum of the three would give 2^24 + 2.
    x = np.zeros(257, np.float32)
    x[[0, 128, 256]] = [2 ** 24, 1, 1]
    assert sum_partials(x) == F(2 ** 24)
    assert F(np.sum(x)) == F(2 ** 24 + 2)                 # why np.sum is never used
    # the last tree level joins partials 0..63 and 64..127: [2^24 at k = 0, 1 at k = 64 and 65] gives
    # 2^24 + (1 + 1) = 2^24 + 2, where a sequential sum over the partials would give 2^24.
    y = np.zeros(128, np.float32)
    y[[0, 64, 65]] = [2 ** 24, 1, 1]
    assert sum_partials(y) == F(2 ** 24 + 2)
    # zero padding / trailing zeros never change the result; axis handling; empty; -0 -> +0
    rng = np.random.default_rng(0)
    y = rng.standard_normal((3, 300)).astype(np.float32)
    padded = np.concatenate([y, np.zeros((3, 211), np.float32)], axis=1)
    assert np.array_equal(sum_partials(y).view(np.uint32), sum_partials(padded).view(np.uint32))
    assert np.array_equal(sum_partials(y.T, axis=0), sum_partials(y))
    assert sum_partials(np.zeros((0,), np.float32)) == 0
    for z in (sum_partials(f32(-0.0, -0.0)), sum_partials(np.full(300, -0.0, np.float32))):
        assert z == 0 and not np.signbit(z)
    # padding with +0 after a partial that holds an infinity or a large value is exact
    assert sum_partials(f32(np.inf, 1, -3)) == np.inf
    assert sum_partials(f32(-np.inf)) == -np.inf
    # the reference loop, written out, over lengths around the chunk boundaries
    for n in (1, 2, 127, 128, 129, 255, 256, 300, 1000):
        rows = np.stack([rng.standard_normal(n), rng.standard_normal(n) * 1e6,
                         np.where(rng.random(n) < 0.5, -0.0, 1e-3) * rng.standard_normal(n)]).astype(np.float32)
        got = sum_partials(rows)
        for r, row in enumerate(rows):
            assert got[r].view(np.uint32) == _sum_partials_loop(row).view(np.uint32), (n, r)
    assert sum_partials(y).dtype == np.float32


def test_exp32_hand_cases():
    assert exp32(f32(0.0))[0] == F(1.0) and exp32(f32(-0.0))[0] == F(1.0)
    assert exp32(f32(1.0))[0] == F(math.e)
    assert exp32(f32(-200.0))[0] == 0                     # underflow -> +0
    assert np.isinf(exp32(f32(100.0))[0])                 # overflow -> +inf
    assert exp32(f32(-np.inf))[0] == 0 and np.isinf(exp32(f32(np.inf))[0]) and np.isnan(exp32(f32(np.nan))[0])
    for v in (-103.0, -100.0, -90.0):                      # subnormal results are rounded once
        assert 0 < exp32(f32(v))[0] == F(math.exp(v))
    assert exp32(f32(-1.0)).dtype == np.float32


def test_exp32_accuracy():
    """The contract's binary32 exp against an independent reference, the correctly rounded exp (C's
    double exp rounded once to float), over the whole finite range: never more than 1 ulp apart."""
    xs = np.concatenate([np.linspace(-104, 88.72, 400001, dtype=np.float32),
                         np.random.default_rng(1).uniform(-1, 1, 20000).astype(np.float32)])
    with np.errstate(over="ignore"):
        ref = np.array([np.float32(math.exp(float(v))) for v in xs], dtype=np.float32)
    got = exp32(xs)
    ulp = np.abs(got.view(np.int32).astype(np.int64) - ref.view(np.int32).astype(np.int64))
    assert ulp.max() <= 1, xs[np.argmax(ulp)]
    assert (ulp == 0).mean() > 0.85


def test_rint_half_even():
    r = rint(f32(0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.4999998, 7.5))
    assert np.array_equal(r, f32(0, 2, 2, 0, -2, -2, 3, 8))


def test_quant_uint4_asym_hand_cases():
    # mn = -1, mx = 2, s = f32(3/15), inv = 1/s = 5.0f; (x - mn) * 5 = [0, 5, 7.5, 15] -> 7.5 ties to 8
    q, s, mn = quant_uint4_asym(f32(-1, 0, 0.5, 2)[None])
    assert q.dtype == np.uint8 and s.dtype == np.float32 and mn.dtype == np.float32
    assert q.tolist() == [[0, 5, 8, 15]]
    assert s[0] == F(F(3) / F(15)) and mn[0] == F(-1)
    # s = 1: ties 2.5 -> 2, 3.5 -> 4
    q, s, mn = quant_uint4_asym(f32(0, 2.5, 3.5, 15)[None])
    assert q.tolist() == [[0, 2, 4, 15]] and s[0] == 1 and mn[0] == 0
    # constant token (and subnormal range): s = 1, q = 0, zero = the constant
    q, s, mn = quant_uint4_asym(np.stack([np.full(8, 0.7, np.float32), np.zeros(8, np.float32),
                                          f32(0, 1e-44, 0, 0, 0, 0, 0, 0)]))
    assert q.max() == 0 and s.tolist() == [1, 1, 1] and mn[0] == F(0.7)
    # per-token: one scale and one zero per row
    x = np.random.default_rng(2).standard_normal((5, 3, 40)).astype(np.float32)
    q, s, mn = quant_uint4_asym(x)
    assert q.shape == x.shape and s.shape == (5, 3) and mn.shape == (5, 3)
    assert q.min() == 0 and q.max() == 15
    assert np.all(np.abs(q * s[..., None] + mn[..., None] - x) <= s[..., None] * 0.5001)


def test_quant_int8_sym_hand_cases():
    # a = 2, s = 2/128 = 1/64, inv = 64: [-128, 64, 0.5 -> 0, 127.36 -> 127]
    q, s = quant_int8_sym(f32(-2, 1, 2 ** -7, 1.99)[None])
    assert q.dtype == np.int8 and q.tolist() == [[-128, 64, 0, 127]] and s[0] == F(1 / 64)
    q, s = quant_int8_sym(f32(2, -1, 3 * 2 ** -7)[None])       # +max -> 128 clamps to 127; 1.5 -> 2
    assert q.tolist() == [[127, -64, 2]]
    q, s = quant_int8_sym(np.zeros((2, 6), np.float32))
    assert q.max() == 0 and q.min() == 0 and s.tolist() == [1, 1]


def test_quant_static_and_int_matmul_exact():
    assert quant_static(f32(0.5, 1.5, -300, 300), f32(1), -128, 127, np.int8).tolist() == [0, 2, -128, 127]
    assert quant_static(f32(-0.2, 0.5, 2.0), f32(255), 0, 255, np.uint8).tolist() == [0, 128, 255]
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (3, 5, 700)).astype(np.uint8)
    b = rng.integers(-128, 128, (3, 700, 9)).astype(np.int8)
    ref = np.matmul(a.astype(np.int64), b.astype(np.int64))
    assert np.array_equal(int_matmul(a, b, 700 * 255 * 128), ref)      # > 2^24: float64 path
    a4 = rng.integers(0, 16, (7, 2048)).astype(np.uint8)
    w4 = rng.integers(-7, 8, (2048, 11)).astype(np.int8)
    assert np.array_equal(int_matmul(a4, w4, 2048 * 15 * 7), a4.astype(np.int64) @ w4.astype(np.int64))
    with pytest.raises(OverflowError):
        int_matmul(a4, w4, 2 ** 54)
    assert accumulator_bits(2048 * 15 * 7) == 19          # log2(2048) + 8 as in the paper
    assert accumulator_bits(8192 * 15 * 7) == 21


def test_fp32_operators_hand_cases():
    w = f32(1, 2, 3, 4)
    assert np.array_equal(rmsnorm(f32(1, 1, 1, 1)[None], w, F(0)), w[None])
    assert np.array_equal(rmsnorm(f32(2, 2, -2, 2)[None], w, F(0)), f32(1, 2, -3, 4)[None])
    assert silu(f32(0))[0] == 0 and silu(f32(200))[0] == 200
    s = silu(f32(-200))[0]
    assert s == 0 and np.signbit(s)                        # exp32(200) = inf -> -200 / inf = -0
    p = softmax_masked(f32(0, 0, 5)[None], np.array([[True, True, False]]))
    assert p.tolist() == [[0.5, 0.5, 0.0]]
    x = f32(1, 2, 3, 4)[None]
    one, zero = np.ones((1, 4), np.float32), np.zeros((1, 4), np.float32)
    assert np.array_equal(rope(x, one, zero), x)
    assert np.array_equal(rope(x, zero, one), f32(-3, -4, 1, 2)[None])


# ------------------------------------------------------------------------------ models
@pytest.fixture(scope="module")
def weights():
    from brevitas_models.sources import load_source
    return load_source("preset:tiny")


def _build(weights, **changes):
    from brevitas_models.build import build_model
    from brevitas_models.quant_presets import quant_preset
    # the tiny preset's RoPE table has 256 positions: calibrate on 128-token windows
    spec = quant_preset("flexllm-w4a4", calibration_ctx=128, calibration_tokens=2048, **changes)
    return build_model(weights, spec)


@pytest.fixture(scope="module")
def models(weights):
    out = {}
    for kind in ("uint4_asym", "int8"):
        model = _build(weights, input_quant=kind)
        out[kind] = (model, GoldenModel.from_brevitas(model))
    # Quantization.InputQuantOverrides: uint4 inputs except down_proj and the LM head at int8
    model = _build(weights, input_quant="uint4_asym", input_quant_overrides={"down_proj": "int8", "lm_head": "int8"})
    out["overrides"] = (model, GoldenModel.from_brevitas(model))
    # Quantization.InputClipRatios: clipped uint4 ranges at three sites
    model = _build(weights, input_clip_ratios={"q_proj": 0.9, "gate_proj": 0.8, "lm_head": 0.95})
    out["clipped"] = (model, GoldenModel.from_brevitas(model))
    # Quantization.Rotation: learned (a few Cayley SGD steps): the learned R1/R2 are folded weights
    model = _build(weights, rotation="learned", rotation_training={"Steps": 3, "Tokens": 64})
    out["learned"] = (model, GoldenModel.from_brevitas(model))
    return out


@pytest.fixture(scope="module")
def eval_windows(weights):
    from brevitas_models.text import encode, load_text, windows
    tokens = encode(weights.tokenizer, load_text())
    return windows(tokens[:4 * 128], 128)


def test_from_brevitas_extracts_hardware_params(models):
    model, g = models["uint4_asym"]
    a = model.arch
    assert g.r4 and g.input_quant == "uint4_asym" and g.weight_bits == 4
    assert g.softmax_scale == 1 / math.sqrt(a.head_dim)
    for name, lp in g.linears():
        assert lp.w_int.dtype == np.int8 and lp.w_int.min() >= -7 and lp.w_int.max() <= 7
        assert lp.w_scale.dtype == np.float32 and lp.w_scale.shape == (lp.d_out,)
        assert np.array_equal(lp.wsum, lp.w_scale * lp.w_int.astype(np.int64).sum(1).astype(np.float32))
    for layer in g.layers:
        assert layer.s_q.shape == (a.num_heads,) and layer.s_p.shape == (a.num_heads,)
        assert layer.s_k.shape == (a.num_kv_heads,) and layer.s_v.shape == (a.num_kv_heads,)
        assert layer.c_q.dtype == np.float32
    unit = model.layers[1].mlp.down_proj
    assert np.array_equal(g.layers[1].down_proj.w_int, unit.linear.quant_weight().int().numpy())
    assert np.array_equal(g.rope_cos, model.rope_cos.numpy())
    bits = g.accumulator_bits()
    assert bits["layers.0.mlp.down_proj"] == accumulator_bits(a.intermediate_size * 15 * 7)
    assert bits["attention.scores"] == accumulator_bits(a.head_dim * 128 * 128)


# ------------------------------------------------------------------------------ trace contract (1)
@pytest.mark.parametrize("kind", ["uint4_asym", "int8"])
def test_trace_dtypes_ranges_and_arithmetic(models, eval_windows, kind):
    model, g = models[kind]
    a = model.arch
    ids = eval_windows[0, :24].numpy()
    L = ids.shape[0]
    logits, kv, tr = g.prefill(ids, trace=True)
    assert logits.dtype == np.float32 and logits.shape == (L, a.vocab_size)
    assert np.array_equal(tr["logits"], logits)
    for name, lp in g.linears():
        x_int, s = tr[name + ".x_int"], tr[name + ".x_scale"]
        assert lp.input_kind == kind
        if kind == "uint4_asym":
            assert x_int.dtype == np.uint8 and x_int.max() <= 15
            z = tr[name + ".x_zero"]
            assert z.dtype == np.float32 and z.shape == (L,)
        else:
            assert x_int.dtype == np.int8 and name + ".x_zero" not in tr
        assert x_int.shape == (L, lp.d_in)
        assert s.dtype == np.float32 and s.shape == (L,)           # one scale per token
        w_int = tr[name + ".w_int"]
        assert w_int.dtype == np.int8 and -7 <= w_int.min() and w_int.max() <= 7
        acc = tr[name + ".acc"]
        assert acc.dtype == np.int32 and acc.shape == (L, lp.d_out)
        # the integer core is exact and the output follows the documented formula
        assert np.array_equal(acc, x_int.astype(np.int64) @ w_int.astype(np.int64).T)
        y = (acc.astype(np.float32) * s[:, None]) * tr[name + ".w_scale"][None, :]
        if kind == "uint4_asym":
            y = y + tr[name + ".x_zero"][:, None] * tr[name + ".w_zsum"][None, :]
        assert np.array_equal(tr[name + ".y"], y)
    for i in range(a.num_layers):
        p = f"layers.{i}.self_attn."
        assert tr[p + "q_int"].dtype == np.int8 and tr[p + "q_int"].shape == (a.num_heads, L, a.head_dim)
        for t in ("k_int", "v_int"):
            assert tr[p + t].dtype == np.int8 and tr[p + t].shape == (a.num_kv_heads, L, a.head_dim)
        p_int = tr[p + "p_int"]
        assert p_int.dtype == np.uint8 and p_int.shape == (a.num_heads, L, L)
        assert not np.triu(p_int.astype(np.int64).sum(0), 1).any()  # causal: no weight on future keys
        assert p_int.max() > 200                                    # first query sees one key: p = 1
        assert tr[p + "scores_acc"].dtype == np.int32 and tr[p + "av_acc"].dtype == np.int32
        assert np.array_equal(kv.k[i], tr[p + "k_int"]) and np.array_equal(kv.v[i], tr[p + "v_int"])
        kh = np.arange(a.num_heads) // a.gqa_group
        sacc = np.einsum("htd,hud->htu", tr[p + "q_int"].astype(np.int64), tr[p + "k_int"][kh].astype(np.int64))
        assert np.array_equal(tr[p + "scores_acc"], sacc)
        av = np.einsum("htu,hud->htd", p_int.astype(np.int64), tr[p + "v_int"][kh].astype(np.int64))
        assert np.array_equal(tr[p + "av_acc"], av)
        if g.r4:
            from brevitas_models.hadamard import fast_hadamard_transform_np
            assert np.array_equal(tr[f"layers.{i}.mlp.hadamard"],
                                  fast_hadamard_transform_np(tr[f"layers.{i}.mlp.act"]))
            down = dict(g.linears())[f"layers.{i}.mlp.down_proj"]
            assert down.input_clip == model.spec.input_clip("down_proj")   # 0.9: the preset's default
            assert np.array_equal(tr[f"layers.{i}.mlp.down_proj.x_int"],
                                  quant_uint4_asym(tr[f"layers.{i}.mlp.hadamard"], down.input_clip)[0]
                                  if kind == "uint4_asym" else
                                  quant_int8_sym(tr[f"layers.{i}.mlp.hadamard"])[0])
    assert isinstance(kv, KVCache) and kv.length == L and kv.k[0].dtype == np.int8


# ------------------------------------------------------------------------------ decode == prefill (3)
@pytest.mark.parametrize("kind", ["uint4_asym", "int8"])
def test_decode_equals_prefill_bit_exact(models, eval_windows, kind):
    _, g = models[kind]
    ids = eval_windows[1, :20].numpy()
    full, kv_full, tr_full = g.prefill(ids, trace=True)
    _, kv, _ = g.prefill(ids[:9])
    for pos in range(9, len(ids)):
        logits, kv, tr = g.decode(int(ids[pos]), pos, kv, trace=True)
        assert logits.shape == (g.vocab_size,)
        assert np.array_equal(logits, full[pos]), f"decode logits differ from prefill row {pos}"
        for key in ("layers.1.self_attn.q_proj.x_int", "layers.1.self_attn.q_proj.x_scale",
                    "layers.1.mlp.down_proj.acc", "lm_head.acc"):
            assert np.array_equal(tr[key][0], tr_full[key][pos]), key
        assert np.array_equal(tr["layers.1.self_attn.p_int"][:, 0, :pos + 1],
                              tr_full["layers.1.self_attn.p_int"][:, pos, :pos + 1])
    for i in range(g.num_layers):
        assert np.array_equal(kv.k[i], kv_full.k[i]) and np.array_equal(kv.v[i], kv_full.v[i])
    with pytest.raises(ValueError, match="KV cache length"):
        g.decode(1, 3, kv)
    # generate = prefill + decode loop, greedy
    gen = g.generate(ids[:10], 4)
    assert gen[0] == int(np.argmax(full[9])) and len(gen) == 4


# ------------------------------------------------------------------------------ vs Brevitas (2)
class _BrevitasTrace:
    """Integer codes at every Brevitas quantization point (computed by Brevitas' own to_int)."""

    def __init__(self, model):
        self.codes = {}
        self.handles = []
        for name, unit in model.linears():
            if unit.input_quant.quant is not None:
                self._hook(unit.input_quant, unit.input_quant.quant, name + ".x_int",
                           lambda t: t[0])
        for name, hq in model.head_quants():
            key = name.replace("_quant", "_int")
            self._hook(hq, hq.quant, key, lambda t: t[0])

    def _hook(self, module, qid, key, squeeze):
        tq = qid.act_quant.fused_activation_quant_proxy.tensor_quant

        def hook(mod, args, out):
            x = args[0].detach()
            _, s, zp, bw = tq(x)
            self.codes[key] = squeeze(tq.int_quant.to_int(s, zp, bw, x).numpy())

        self.handles.append(module.register_forward_hook(hook))

    def close(self):
        for h in self.handles:
            h.remove()


def test_input_quant_overrides_reach_every_site(models, eval_windows):
    """Per-site input kinds: Brevitas units, golden linears and the golden trace's codes."""
    model, g = models["overrides"]
    kinds = {name: lp.input_kind for name, lp in g.linears()}
    for name, kind in kinds.items():
        site = name.split(".")[-1]
        want = "int8" if site in ("down_proj", "lm_head") else "uint4_asym"
        assert kind == want, name
    assert model.layers[0].mlp.down_proj.input_quant.kind == "int8"
    assert model.lm_head.input_quant.kind == "int8" and model.layers[0].self_attn.o_proj.input_quant.kind == "uint4_asym"
    _, _, tr = g.prefill(eval_windows[0, :16].numpy(), trace=True)
    assert tr["lm_head.x_int"].dtype == np.int8 and "lm_head.x_zero" not in tr
    assert tr["layers.1.mlp.down_proj.x_int"].dtype == np.int8
    assert tr["layers.1.mlp.gate_proj.x_int"].dtype == np.uint8 and tr["layers.1.mlp.gate_proj.x_int"].max() <= 15
    assert g.lm_head.acc_bound == g.lm_head.d_in * 128 * int(np.abs(g.lm_head.w_int).max())


def test_input_quant_overrides_are_validated():
    from brevitas_models.quant_presets import quant_preset
    with pytest.raises(ValueError, match="up_proj shares the input quantizer of gate_proj"):
        quant_preset("flexllm-w4a4", input_quant_overrides={"up_proj": "int8"})
    with pytest.raises(ValueError, match="unknown site 'mlp'"):
        quant_preset("flexllm-w4a4", input_quant_overrides={"mlp": "int8"})
    with pytest.raises(ValueError, match="lm_head must be one of"):
        quant_preset("flexllm-w4a4", input_quant_overrides={"lm_head": "int16"})
    spec = quant_preset("flexllm-w4a4", input_quant_overrides={"lm_head": "int8", "down_proj": "int8"})
    assert spec.input_quant_overrides == (("down_proj", "int8"), ("lm_head", "int8"))
    # a spec read back from JSON (lists) is the same spec
    from brevitas_models.quant_presets import QuantSpec
    import json
    assert QuantSpec(**json.loads(json.dumps(spec.to_dict()))) == spec


def test_input_clip_ratios_reach_every_site(models, eval_windows):
    model, g = models["clipped"]
    clips = {name.split(".")[-1]: lp.input_clip for name, lp in g.linears()}
    assert clips == {"q_proj": 0.9, "k_proj": 0.9, "v_proj": 0.9, "o_proj": 1.0, "gate_proj": 0.8,
                     "up_proj": 0.8, "down_proj": 1.0, "lm_head": 0.95}
    assert model.layers[0].mlp.gate_proj.input_quant.clip_ratio == 0.8
    _, _, tr = g.prefill(eval_windows[0, :16].numpy(), trace=True)
    x_int = tr["layers.0.mlp.gate_proj.x_int"]
    assert (x_int == 15).sum(axis=1).min() >= 1 and (x_int == 0).sum(axis=1).min() >= 1
    from brevitas_models.quant_presets import quant_preset
    with pytest.raises(ValueError, match="InputClipRatios.lm_head: clipping applies to uint4_asym"):
        quant_preset("flexllm-w4a4", input_clip_ratios={"lm_head": 0.9}, input_quant_overrides={"lm_head": "int8"})
    with pytest.raises(ValueError, match=r"InputClipRatios.q_proj must be a number in \(0, 1\]"):
        quant_preset("flexllm-w4a4", input_clip_ratios={"q_proj": 1.2})


@pytest.mark.parametrize("kind", ["uint4_asym", "int8", "overrides", "clipped", "learned"])
def test_agrees_with_brevitas(models, eval_windows, kind, capsys):
    from brevitas_models.evaluation import perplexity
    model, g = models[kind]
    ids = eval_windows[0].numpy()
    bt = _BrevitasTrace(model)
    with torch.no_grad():
        ref = model(torch.from_numpy(ids)[None])[0][0].numpy()
    bt.close()
    logits, _, tr = g.prefill(ids, trace=True)
    agree = {}
    for key, codes in bt.codes.items():
        mine = tr[key]
        assert mine.shape == codes.shape, key
        agree[key] = float((mine.astype(np.int64) == codes.astype(np.int64)).mean())
    first = "layers.0.self_attn.q_proj.x_int"
    assert agree[first] >= 0.99
    assert min(agree.values()) >= 0.99, agree
    corr = float(np.corrcoef(ref.ravel(), logits.ravel())[0, 1])
    rel = float(np.linalg.norm(ref - logits) / np.linalg.norm(ref))
    top1 = float((ref.argmax(-1) == logits.argmax(-1)).mean())
    assert corr > 0.999 and rel < 1e-2 and top1 >= 0.9
    ppl_g = g.perplexity(eval_windows)["ppl"]
    ppl_b = perplexity(model, eval_windows)["ppl"]
    assert abs(ppl_g / ppl_b - 1) < 0.02
    prompt = ids[:16]
    gen = g.generate(prompt, 12)
    cur, ref_gen = torch.from_numpy(prompt)[None], []
    with torch.no_grad():
        for _ in range(12):
            nxt = int(model(cur)[0][0, -1].argmax())
            ref_gen.append(nxt)
            cur = torch.cat([cur, torch.tensor([[nxt]])], dim=1)
    gen_agree = float(np.mean(np.array(gen) == np.array(ref_gen)))
    assert gen_agree >= 0.75
    with capsys.disabled():
        print(f"\n[golden vs brevitas, {kind}] code agreement min {min(agree.values()):.6f} "
              f"(first linear {agree[first]:.6f}); logits corr {corr:.9f} rel err {rel:.2e} "
              f"top1 {top1:.4f}; ppl golden {ppl_g:.3f} brevitas {ppl_b:.3f}; greedy agree {gen_agree:.2f}")


def test_teacher_forced_layers_agree_with_brevitas(models, eval_windows):
    """Each golden layer run on the Brevitas model's own layer input: the per-layer comparison the
    hardware team can use on deep models, where free-running W4A4 networks diverge chaotically."""
    model, g = models["uint4_asym"]
    ids = eval_windows[2].numpy()
    h_in = {}
    hooks = [layer.register_forward_pre_hook(
        lambda m, a, i=i: h_in.__setitem__(i, a[0].detach()[0].numpy().copy()))
        for i, layer in enumerate(model.layers)]
    hooks.append(model.norm.register_forward_pre_hook(
        lambda m, a: h_in.__setitem__("final", a[0].detach()[0].numpy().copy())))
    bt = _BrevitasTrace(model)
    with torch.no_grad():
        model(torch.from_numpy(ids)[None])
    bt.close()
    for h in hooks:
        h.remove()
    for i in range(g.num_layers):
        out, k_int, v_int, tr = g.layer_forward(i, h_in[i], trace=True)
        nxt = h_in[i + 1] if i + 1 < g.num_layers else h_in["final"]
        assert np.linalg.norm(out - nxt) / np.linalg.norm(nxt) < 1e-4
        for key, codes in bt.codes.items():
            if key.startswith(f"layers.{i}."):
                assert (tr[key].astype(np.int64) == codes.astype(np.int64)).mean() >= 0.999, key
    with pytest.raises(ValueError, match="KV cache length"):
        g.layer_forward(0, h_in[0], start=3)


# ------------------------------------------------------------------------------ errors (5)
def test_float_and_partial_presets_rejected(weights):
    from brevitas_models.build import build_model
    from brevitas_models.quant_presets import quant_preset
    with pytest.raises(ValueError, match="weight_bits is None"):
        GoldenModel.from_brevitas(build_model(weights, quant_preset("float")))
    with pytest.raises(ValueError, match="qkv_bits"):
        GoldenModel.from_brevitas(build_model(weights, quant_preset("w8a8")))
