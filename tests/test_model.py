"""Model structure: rotation invariance, decode == prefill, presets give the documented integer formats."""

import pytest
import torch

from brevitas_models.model import append_kv
from brevitas_models.quant_presets import INPUT_SITES, quant_preset
from tests.helpers import text_windows, tiny_float_model, tiny_model, tiny_spec, tiny_weights


def _float_model(rotated: bool = False):
    return tiny_float_model(rotated)


def _rel(a, b):
    return float((a - b).detach().abs().max() / b.detach().abs().max())


def test_rotation_keeps_float_outputs():
    ids = text_windows(2, 64)
    with torch.no_grad():
        ref, ref_kv = _float_model(False)(ids)
        rot_model = _float_model(True)
        rot, _ = rot_model(ids)
    assert rot_model.layers[0].mlp.online_hadamard.enabled
    assert torch.all(rot_model.layers[0].input_layernorm.weight == 1)
    assert _rel(rot, ref) < 1e-4


def test_rotation_changes_the_weights():
    a, b = _float_model(False), _float_model(True)
    wa, wb = a.layers[0].self_attn.q_proj.weight, b.layers[0].self_attn.q_proj.weight
    assert _rel(wa, wb) > 0.1


@pytest.mark.parametrize("preset", ["float", "flexllm-w4a4"])
def test_decode_with_kv_cache_equals_full_forward(preset):
    m = tiny_model(preset) if preset != "float" else _float_model(False)
    ids = text_windows(1, 24)
    with torch.no_grad():
        full, _ = m(ids)
        logits, kv = m(ids[:, :20])
        for t in range(20, 24):
            step, new = m(ids[:, t:t + 1], kv)
            kv = append_kv(kv, new)
            assert _rel(step[:, 0], full[:, t]) < 1e-5
    assert kv[0][0].shape[2] == 24


def _record(module, store, key):
    return module.register_forward_hook(lambda mod, inp, out: store.setdefault(key, out.detach()))


def _grid_ints(value, scale, zero=0.0):
    q = value / scale + zero
    assert torch.allclose(q, torch.round(q), atol=1e-3), "values are not on the quantization grid"
    return torch.round(q)


@pytest.mark.parametrize("clip", [0.9, 1.0])
def test_flexllm_w4a4_integer_formats(clip):
    # 0.9: the preset's default clip ratio at every uint4 site; 1.0: the paper's exact min / max
    m = tiny_model("flexllm-w4a4", **({} if clip == 0.9 else {"input_clip_ratios": {}}))
    assert m.spec.input_clip("q_proj") == clip
    at = m.layers[1].self_attn
    seen = {}
    hooks = [_record(at.q_proj.input_quant, seen, "x"), _record(at.k_quant, seen, "k"),
             _record(at.v_quant, seen, "v"), _record(at.q_quant, seen, "q"), _record(at.p_quant, seen, "p")]
    ids = text_windows(1, 32)
    x_in = {}
    hooks.append(at.q_proj.input_quant.register_forward_pre_hook(lambda mod, a: x_in.setdefault("x", a[0])))
    with torch.no_grad():
        m(ids)
    for h in hooks:
        h.remove()
    # int4 symmetric per-output-channel weights: integers in [-7, 7], one scale per row.
    for name, unit in m.linears():
        qw = unit.linear.quant_weight()
        ints = qw.int()
        assert int(qw.bit_width) == 4 and ints.min() >= -7 and ints.max() <= 7, name
        assert qw.scale.shape == (unit.weight.shape[0], 1), name
    # uint4 asymmetric per-token inputs on the range [r min, r max]: scale r (max-min)/15 and zero
    # -r min/scale, one pair per token; values outside the range clamp to 0..15.
    x, xq = x_in["x"], seen["x"]
    mn, mx = clip * x.amin(-1, keepdim=True), clip * x.amax(-1, keepdim=True)
    s = (mx - mn) / 15
    q = _grid_ints(xq - mn, s)
    assert q.min() >= 0 and q.max() <= 15 and q.max() == 15 and q.min() == 0
    assert torch.equal(torch.unique(q).to(torch.int64), torch.arange(16))
    assert torch.allclose(xq, q * s + mn, atol=1e-5)
    # int8 static per-head Q/K/V: one scale per head, values on the grid, within [-128, 127].
    for key, hq in (("q", at.q_quant), ("k", at.k_quant), ("v", at.v_quant)):
        scale = hq.scale()
        assert scale.numel() == hq.num_heads and torch.all(scale > 0)
        ints = _grid_ints(seen[key], scale.view(1, -1, 1, 1))
        assert ints.min() >= -128 and ints.max() <= 127
        assert len(torch.unique(ints)) > 32, key  # a real spread, not a collapsed range
    # uint8 static per-head softmax output.
    ints = _grid_ints(seen["p"], at.p_quant.scale().view(1, -1, 1, 1))
    assert ints.min() >= 0 and ints.max() <= 255 and ints.max() == 255


@pytest.mark.parametrize("preset,bits,lo,hi", [("w8a8", 8, -128, 127), ("w4a8", 4, -128, 127)])
def test_int8_input_presets(preset, bits, lo, hi):
    m = tiny_model(preset)
    unit = m.layers[0].mlp.down_proj
    seen = {}
    pre = unit.input_quant.register_forward_pre_hook(lambda mod, a: seen.setdefault("x", a[0]))
    hook = _record(unit.input_quant, seen, "xq")
    with torch.no_grad():
        m(text_windows(1, 32))
    pre.remove(), hook.remove()
    qw = unit.linear.quant_weight()
    assert int(qw.bit_width) == bits and qw.int().abs().max() <= 2 ** (bits - 1) - 1
    s = seen["x"].abs().amax(-1, keepdim=True) / 128  # Brevitas' per-row convention: max / 128
    q = _grid_ints(seen["xq"], s)
    assert q.min() >= lo and q.max() <= hi and q.min() == -128
    assert m.layers[0].self_attn.k_quant.quant is None  # attention stays float in these presets


def test_preset_defaults_are_the_documented_recipes():
    p = quant_preset("flexllm-w4a4")
    assert (p.weight_bits, p.input_quant, p.qkv_bits, p.softmax_bits) == (4, "uint4_asym", 8, 8)
    # the paper's formats plus the two measured techniques that keep them (README perplexity table)
    assert p.weight_clip_search and p.gptq and p.rotation == "hadamard" and p.gptq_target == "quantized"
    assert dict(p.input_clip_ratios) == {site: 0.9 for site in INPUT_SITES}
    w4a8 = quant_preset("w4a8")
    assert (w4a8.weight_clip_search, w4a8.gptq_target, w4a8.input_clip_ratios) == (True, "unquantized", ())
    assert p.paper_formats() == p.replace(input_clip_ratios=(), weight_clip_search=False, gptq_target="quantized")
    # preset defaults step aside when the user changes what they depend on ...
    for name in ("flexllm-w4a4", "w4a8"):
        no_gptq = quant_preset(name, gptq=False)
        assert not no_gptq.weight_clip_search and no_gptq.gptq_target == "quantized"
    with pytest.raises(ValueError, match="GPTQTarget: float needs GPTQ"):
        quant_preset("w4a8", gptq=False, gptq_target="float")
    with pytest.raises(ValueError, match="GPTQTarget must be one of"):
        quant_preset("w4a8", gptq_target="fp16")
    over = quant_preset("flexllm-w4a4", input_quant_overrides={"down_proj": "int8", "lm_head": "int8"})
    assert dict(over.input_clip_ratios) == {"q_proj": 0.9, "o_proj": 0.9, "gate_proj": 0.9}
    assert quant_preset("flexllm-w4a4", input_quant="int8").input_clip_ratios == ()
    assert quant_preset("flexllm-w4a4", input_clip_ratios={}).input_clip_ratios == ()
    # ... but what the user names explicitly is validated as given
    with pytest.raises(ValueError, match="WeightClipSearch needs GPTQ"):
        quant_preset("flexllm-w4a4", gptq=False, weight_clip_search=True)
    with pytest.raises(ValueError, match="InputClipRatios.down_proj"):
        quant_preset("flexllm-w4a4", input_quant_overrides={"down_proj": "int8"}, input_clip_ratios={"down_proj": 0.9})
    assert quant_preset("w8a8").weight_bits == 8 and quant_preset("w4a8").input_quant == "int8"
    assert quant_preset("float").is_float
    with pytest.raises(ValueError, match="unknown quantization preset 'w3'"):
        quant_preset("w3")
    with pytest.raises(ValueError, match="rotation"):
        quant_preset("float", rotation="spin")


def test_calibrated_model_cache_restores_the_exact_model(tmp_path):
    from brevitas_models.build import build_model
    spec = tiny_spec("flexllm-w4a4")
    first = build_model(tiny_weights(), spec, cache_dir=tmp_path)
    files = list(tmp_path.glob("flexllm-w4a4-*.pt"))
    assert len(files) == 1
    second = build_model(tiny_weights(), spec, cache_dir=tmp_path)
    assert second.rotated and second.layers[0].mlp.online_hadamard.enabled
    ids = text_windows(1, 32)
    with torch.no_grad():
        assert torch.equal(first(ids)[0], second(ids)[0])
    # A different recipe is a different cache entry.
    build_model(tiny_weights(), tiny_spec("flexllm-w4a4", gptq=False), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.pt"))) == 2


def test_uint4_asym_uses_the_true_min_for_one_signed_tokens():
    """Scale (max - min)/15 and zero = min also when a token is all positive or all negative."""
    import brevitas.nn as qnn
    from brevitas_models.quantizers import Uint4PerTokenDynamicAsym
    q = qnn.QuantIdentity(act_quant=Uint4PerTokenDynamicAsym, return_quant_tensor=True)
    x = torch.tensor([[[1.0, 2.0, 4.0, 16.0], [-3.0, 1.0, 2.0, 0.5], [-5.0, -4.0, -2.0, -1.0]]])
    y = q(x)
    mn, mx = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)
    s = (mx - mn) / 15
    assert torch.allclose(y.scale, s)
    assert torch.allclose(y.value, torch.clamp(torch.round((x - mn) / s), 0, 15) * s + mn, atol=1e-6)
    assert torch.allclose(y.value[0, 0], x[0, 0])  # 1, 2, 4, 16 lie on the grid 1 + k
