"""Layer calibration with cached sub-block inputs gives exactly the model of the straightforward
recipe it replaced: every GPTQ group and every static-threshold pass re-running the whole layer forward
(``DecoderLayer.forward``) on the previous layers' outputs, implemented here independently."""

import pytest
import torch

from brevitas_models.calibration import calibrate, init_weight_scales, weight_grid
from brevitas_models.gptq import CrossCovarianceAccumulator, HessianAccumulator, asymmetric_target, gptq_quantize
from brevitas_models.model import LlamaModel, causal_mask
from brevitas_models.rotation import rotate
from helpers import text_windows, tiny_float_model, tiny_spec, tiny_weights


class _Stop(Exception):
    pass


def _layer_inputs(layer, module, hidden, cos, sin, mask):
    """The inputs reaching ``module`` when the whole layer runs on every batch (forward aborted there)."""
    got = []

    def hook(mod, args):
        got.append(args[0].detach())
        raise _Stop

    handle = module.register_forward_pre_hook(hook)
    try:
        for h in hidden:
            try:
                layer(h, cos, sin, mask)
            except _Stop:
                pass
    finally:
        handle.remove()
    return got


def _gptq_reference(units, inputs, targets=None):
    acc = HessianAccumulator(units[0].linear.in_features)
    for x in inputs:
        acc.add(x)
    if targets is not None:
        acc = CrossCovarianceAccumulator(units[0].linear.in_features)
        for xq, x in zip(inputs, targets):
            acc.add(xq, x)
        for unit in units:
            unit.weight.copy_(asymmetric_target(unit.weight, acc.hessian, acc.cross).float())
            unit.linear.weight_quant.tensor_quant.scaling_impl.value.copy_(
                unit.weight.abs().amax(dim=1, keepdim=True).clamp(min=1e-12))
    for unit in units:
        scale, qmin, qmax = weight_grid(unit)
        unit.weight.copy_(gptq_quantize(unit.weight.detach(), acc.hessian, scale, qmin, qmax))


def reference_calibrate(model, windows, batch_size=2, target="quantized"):
    """``target``: GPTQ towards "quantized" (plain), "unquantized" (each linear's input before its quantizer,
    hooked at the quantizer) or "float" inputs (hooked in a separate float model of the same rotated weights)."""
    model.eval()
    init_weight_scales(model)
    n, ctx = windows.shape
    cos, sin = model.rope(0, ctx)
    mask = causal_mask(ctx, 0)
    float_model = tiny_float_model(rotated=True) if target == "float" else None
    with torch.no_grad():
        hidden = [model.embed_tokens(windows[i:i + batch_size]) for i in range(0, n, batch_size)]
        float_hidden = list(hidden)
        for li, layer in enumerate(model.layers):
            at, mlp = layer.self_attn, layer.mlp

            def targets(unit, li=li):
                """The GPTQ target inputs of the group whose quantized input ``unit`` reads (None: plain)."""
                if target == "quantized":
                    return None
                if target == "unquantized":
                    return _layer_inputs(layer, unit.input_quant, hidden, cos, sin, mask)
                f_layer = float_model.layers[li]
                f_unit = {id(u): fu for u, fu in zip(
                    (at.q_proj, at.o_proj, mlp.gate_proj, mlp.down_proj),
                    (f_layer.self_attn.q_proj, f_layer.self_attn.o_proj, f_layer.mlp.gate_proj,
                     f_layer.mlp.down_proj))}[id(unit)]
                return _layer_inputs(f_layer, f_unit.linear, float_hidden, cos, sin, mask)

            _gptq_reference([at.q_proj, at.k_proj, at.v_proj],
                            _layer_inputs(layer, at.q_proj.linear, hidden, cos, sin, mask), targets(at.q_proj))
            for group in ((at.q_quant, at.k_quant, at.v_quant), (at.p_quant,)):
                group = [hq for hq in group if hq.quant is not None]
                for hq in group:
                    hq.observed_max.zero_()
                    hq.observing = True
                for h in hidden:
                    layer(h, cos, sin, mask)
                for hq in group:
                    hq.set_threshold(hq.observed_max)
                    hq.observing = False
            _gptq_reference([at.o_proj], _layer_inputs(layer, at.o_proj.linear, hidden, cos, sin, mask),
                            targets(at.o_proj))
            _gptq_reference([mlp.gate_proj, mlp.up_proj],
                            _layer_inputs(layer, mlp.gate_proj.linear, hidden, cos, sin, mask), targets(mlp.gate_proj))
            _gptq_reference([mlp.down_proj], _layer_inputs(layer, mlp.down_proj.linear, hidden, cos, sin, mask),
                            targets(mlp.down_proj))
            hidden = [layer(h, cos, sin, mask)[0] for h in hidden]
            if float_model is not None:
                float_hidden = [float_model.layers[li](h, cos, sin, mask)[0] for h in float_hidden]
        inputs = []
        for h in hidden:
            inputs.append(model.lm_head.input_quant(model.norm(h)))
        lm_targets = {"quantized": None, "unquantized": [model.norm(h) for h in hidden],
                      "float": [float_model.norm(h) for h in float_hidden] if float_model else None}[target]
        _gptq_reference([model.lm_head], inputs, lm_targets)


def _fresh(preset):
    w = tiny_weights()
    spec = tiny_spec(preset)
    torch.manual_seed(w.arch.seed)
    m = LlamaModel(w.arch, spec, max_positions=512)
    m.eval()
    m.load_hf_state_dict(w.state_dict)
    rotate(m)
    return m


@pytest.mark.parametrize("preset", ["flexllm-w4a4", "w4a8"])
def test_calibration_equals_the_rerun_every_pass_recipe(preset):
    windows = text_windows(4, 128)
    fast, ref = _fresh(preset), _fresh(preset)
    calibrate(fast, windows, gptq=True, threads=None)
    reference_calibrate(ref, windows)
    a, b = fast.state_dict(), ref.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # and calibration did something: GPTQ moved weights off round-to-nearest, thresholds were set
    assert not torch.equal(a["layers.0.mlp.down_proj.linear.weight"], _fresh(preset).state_dict()[
        "layers.0.mlp.down_proj.linear.weight"])


@pytest.mark.parametrize("target", ["unquantized", "float"])
def test_gptq_targets_equal_the_rerun_every_pass_recipe(target):
    """GPTQ towards the unquantized or the float model's inputs: the same model as the straightforward recipe
    with the targets hooked at each quantizer's input or in a separate float model."""
    windows = text_windows(4, 128)
    fast, ref = _fresh("flexllm-w4a4"), _fresh("flexllm-w4a4")
    calibrate(fast, windows, gptq=True, threads=None, target=target)
    reference_calibrate(ref, windows, target=target)
    a, b = fast.state_dict(), ref.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    plain = _fresh("flexllm-w4a4")
    calibrate(plain, windows, gptq=True, threads=None)
    assert not torch.equal(a["layers.1.mlp.down_proj.linear.weight"], plain.state_dict()[
        "layers.1.mlp.down_proj.linear.weight"])


def test_calibration_restores_the_thread_setting():
    before = torch.get_num_threads()
    calibrate(_fresh("flexllm-w4a4"), text_windows(2, 128), gptq=False, threads=2)
    assert torch.get_num_threads() == before


def test_weight_clip_search_picks_the_least_weighted_error_ratio_per_channel():
    """Against a numpy brute force over the same grid: per output channel the ratio with the least
    sum_k d_k (w_k - rtn_k)^2, and the unit's Brevitas weight scale is then r * max|w| / 7."""
    import numpy as np
    from brevitas_models.calibration import CLIP_GRID, search_weight_clip

    model = _fresh("flexllm-w4a4")
    unit = model.layers[0].mlp.down_proj
    init_weight_scales(model)
    rng = np.random.default_rng(0)
    d = rng.random(unit.linear.in_features) ** 4 * 10          # uneven input energies
    w = unit.weight.detach().double().numpy()
    amax = np.abs(w).max(axis=1)
    errs = []
    for r in CLIP_GRID:
        s = (amax * r / 7)[:, None]
        errs.append((((np.clip(np.round(w / s), -7, 7) * s - w) ** 2) * d[None]).sum(axis=1))
    errs = np.stack(errs)                                       # [grid, out]
    want = np.array(CLIP_GRID)[errs.argmin(axis=0)]
    with torch.no_grad():
        got = search_weight_clip(unit, torch.from_numpy(d)).numpy()
    assert np.array_equal(got, want)
    assert (got < 1.0).any()                                    # clipping chosen somewhere
    scale = unit.linear.quant_weight().scale.detach().double().view(-1).numpy()
    np.testing.assert_allclose(scale, amax * want / 7, rtol=1e-6)


def test_weight_clip_search_lowers_the_layer_output_error_of_gptq():
    """GPTQ with searched scales vs with max|w| scales: smaller ||X (W_q - W)^T|| on the calibration inputs."""
    windows = text_windows(4, 128)
    errors = {}
    for clip in (False, True):
        m = _fresh("w4a8")
        float_w = m.layers[0].mlp.down_proj.weight.detach().clone()
        got = []
        h = m.layers[0].mlp.down_proj.linear.register_forward_pre_hook(lambda mod, a: got.append(a[0].detach()))
        calibrate(m, windows, gptq=True, threads=None, weight_clip=clip)
        h.remove()
        x = torch.cat([g.reshape(-1, g.shape[-1]) for g in got[:2]])   # the calibration inputs of layer 0's down_proj
        wq = m.layers[0].mlp.down_proj.linear.quant_weight().value.detach()
        errors[clip] = float(torch.linalg.norm(x @ (wq - float_w).T))
    assert errors[True] < errors[False]
