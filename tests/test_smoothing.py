"""Seam smoothing (brevitas_models/smoothing.py): float outputs unchanged, the smoothed activations are
what SmoothQuant's formula asks for, and the recipe reaches the quantized build."""

import pytest
import torch

from brevitas_models.smoothing import seam_maxima, smooth_seams, smoothing_scale
from tests.helpers import text_windows, tiny_float_model, tiny_model


def _logits(model, ids):
    with torch.no_grad():
        return model(ids)[0]


# the up -> down seam precedes R4, so it is smoothed on unrotated models only (see
# test_down_seam_refuses_a_rotated_model)
@pytest.mark.parametrize("alphas,rotated", [({"o_proj": 0.5}, False), ({"down_proj": 0.5}, False),
                                            ({"o_proj": 0.8, "down_proj": 0.3}, False),
                                            ({"qkv": 0.5, "gate_up": 0.6}, False), ({"o_proj": 0.5}, True),
                                            ({"qkv": 0.5, "gate_up": 0.6}, True)])
def test_smoothing_keeps_float_outputs(alphas, rotated):
    ref, smoothed = tiny_float_model(rotated), tiny_float_model(rotated)
    ids = text_windows(2, 64)
    scales = smooth_seams([smoothed], ref, ids, alphas.items())
    assert scales and all(torch.isfinite(s).all() for s in scales.values())
    assert any((s - 1).abs().max() > 1e-3 for s in scales.values()), "smoothing changed nothing"
    torch.testing.assert_close(_logits(smoothed, ids[:1]), _logits(ref, ids[:1]), rtol=1e-4, atol=1e-4)


def test_smoothed_activation_maxima_follow_the_formula():
    """After smoothing with alpha, channel j's max |x| is a_j / s_j with s from SmoothQuant's eq. 4."""
    ref, smoothed = tiny_float_model(), tiny_float_model()
    ids = text_windows(2, 64)
    before = seam_maxima(ref, ids)
    w_down = ref.layers[0].mlp.down_proj.weight.detach().double()
    s = smoothing_scale(before[(0, "down_proj")], w_down.abs().amax(0), 0.5)
    smooth_seams([smoothed], ref, ids, [("down_proj", 0.5)])
    after = seam_maxima(smoothed, ids)
    torch.testing.assert_close(after[(0, "down_proj")], before[(0, "down_proj")] / s, rtol=1e-4, atol=1e-6)
    # alpha 0.5 equalises a / s and w * s channel by channel (up to the geometric-mean normalisation)
    ratio = (before[(0, "down_proj")] / s) / (w_down.abs().amax(0) * s)
    torch.testing.assert_close(ratio / ratio[0], torch.ones_like(ratio), rtol=1e-6, atol=1e-9)


def test_down_seam_refuses_a_rotated_model():
    ref = tiny_float_model(True)
    with pytest.raises(RuntimeError, match="before the rotations"):
        smooth_seams([tiny_float_model(True)], ref, text_windows(1, 64), [("down_proj", 0.5)])


def test_smoothing_rejects_unknown_seams_and_alphas():
    from brevitas_models.quant_presets import quant_preset
    with pytest.raises(ValueError, match="unknown seam 'q_proj'"):
        quant_preset("flexllm-w4a4", seam_smoothing={"q_proj": 0.5})
    with pytest.raises(ValueError, match=r"SeamSmoothing.o_proj must be a number in \[0, 1\]"):
        quant_preset("flexllm-w4a4", seam_smoothing={"o_proj": 1.5})
    with pytest.raises(ValueError, match="needs a quantized preset"):
        quant_preset("float", seam_smoothing={"o_proj": 0.5})


def test_quantized_build_applies_the_smoothing():
    """The built w8a8 model (RTN weights, no calibration) carries the smoothed, rotated weights: its
    float-weight forward differs from the unsmoothed build's only by quantization."""
    plain = tiny_model("w8a8")
    smoothed = tiny_model("w8a8", seam_smoothing={"down_proj": 0.5, "qkv": 0.5})
    g = smoothed.layers[0].input_layernorm.weight.detach()
    assert smoothed.rotated and not torch.allclose(g, torch.ones_like(g)), "qkv seam not applied after rotation"
    a = plain.layers[0].mlp.up_proj.weight.detach()
    b = smoothed.layers[0].mlp.up_proj.weight.detach()
    assert not torch.allclose(a, b)
    ids = text_windows(1, 64)
    la, lb = _logits(plain, ids), _logits(smoothed, ids)
    assert (la.argmax(-1) == lb.argmax(-1)).float().mean() > 0.9
