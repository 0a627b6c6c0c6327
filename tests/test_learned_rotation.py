"""Learned R1/R2 rotations (brevitas_models/learned_rotation.py): the Cayley SGD step, the training forward
against the Brevitas model, folding, 0 steps == Hadamard, the loss decreasing, restore and config keys."""

import numpy as np
import pytest
import torch

from brevitas_models.build import build_model, restore_model
from brevitas_models.hadamard import random_orthogonal
from brevitas_models.learned_rotation import (RotatedForward, cayley_step, initial_rotations, learn_rotations,
                                              orthogonality_error, training_spec, training_windows)
from brevitas_models.model import LlamaModel
from brevitas_models.quant_presets import quant_preset
from brevitas_models.rotation import Rotation, rotate
from flexllm_plugin.config import ConfigError, parse_config
from tests.helpers import text_windows, tiny_float_model, tiny_spec, tiny_weights

torch.set_num_threads(1)


def _orthogonal(n, seed):
    return torch.from_numpy(np.asarray(random_orthogonal(n, seed), dtype=np.float64))


def test_cayley_step_is_the_cayley_transform_and_stays_orthogonal():
    n = 24
    r = _orthogonal(n, 1)
    g = torch.from_numpy(np.random.default_rng(2).standard_normal((n, n)))
    lr = 0.01
    new = cayley_step(r, g, lr)
    # independent reference: numpy, the formula of the module docstring (step not capped at this lr)
    rn, gn = r.numpy(), g.numpy()
    a = 0.5 * (gn @ rn.T - rn @ gn.T)
    assert np.allclose(a, -a.T)
    assert lr < 1.0 / np.abs(a).sum(axis=0).max()
    eye = np.eye(n)
    ref = np.linalg.inv(eye + 0.5 * lr * a) @ (eye - 0.5 * lr * a) @ rn
    assert np.allclose(new.numpy(), ref, atol=1e-12)
    # first order: R - lr (G - R G^T R) / 2
    assert np.abs(new.numpy() - (rn - 0.5 * lr * (gn - rn @ gn.T @ rn))).max() < 10 * lr ** 2 * np.abs(a).max() ** 2 * n
    # 200 large steps (the step is capped at 1/||A||_1): orthogonal to float64 rounding throughout
    for i in range(200):
        g = torch.from_numpy(np.random.default_rng(10 + i).standard_normal((n, n)))
        r = cayley_step(r, g, 1.5)
    assert orthogonality_error(r) < 1e-12


def test_cayley_sgd_descends_on_the_orthogonal_group():
    """Minimise ||R - T||^2 over orthogonal R (T orthogonal): the gradient is 2 (R - T); Cayley SGD reaches T."""
    n = 16
    target = _orthogonal(n, 3)
    r = _orthogonal(n, 4)
    if torch.linalg.det(r) * torch.linalg.det(target) < 0:       # same connected component as T
        r[:, 0] = -r[:, 0]
    errors = []
    for _ in range(300):
        errors.append(float((r - target).norm()))
        r = cayley_step(r, 2 * (r - target), 0.2)
    assert errors[-1] < 1e-6 * errors[0]
    assert all(b <= a + 1e-12 for a, b in zip(errors, errors[1:]))
    assert orthogonality_error(r) < 1e-12


def test_cayley_step_rejects_non_square():
    with pytest.raises(ValueError, match="square R"):
        cayley_step(torch.zeros(3, 4, dtype=torch.float64), torch.zeros(3, 4), 0.1)


def test_training_forward_equals_the_brevitas_model():
    """The training forward (rotations on activations, Brevitas input quantizers) at the Hadamard R1/R2 equals
    the Brevitas model with float weights, the same quantized inputs and the Hadamard rotation folded in."""
    w = tiny_weights()
    spec = tiny_spec("flexllm-w4a4", rotation="learned", rotation_training={"Steps": 1, "Tokens": 64})
    ids = text_windows(2, 128)
    ref = LlamaModel(w.arch, training_spec(spec), max_positions=128).eval()
    ref.load_hf_state_dict(w.state_dict)
    rotate(ref)
    fwd = RotatedForward(tiny_float_model(), spec, 128)
    init = initial_rotations(w.arch)
    with torch.no_grad():
        want = ref(ids)[0]
        got = fwd(ids, init.r1.float(), [m.float() for m in init.r2])
    assert (got - want).abs().max() < 1e-4 * want.abs().max()
    # gradients reach R1 and every R2 through the straight-through input quantizers
    r1 = init.r1.float().requires_grad_(True)
    r2 = [m.float().requires_grad_(True) for m in init.r2]
    fwd.loss(ids[:1], r1, r2).backward()
    assert r1.grad.abs().max() > 0 and all(m.grad.abs().max() > 0 for m in r2)


def test_zero_steps_is_the_hadamard_model_bit_for_bit():
    w = tiny_weights()
    had = build_model(w, tiny_spec("flexllm-w4a4"))
    learned = build_model(w, tiny_spec("flexllm-w4a4", rotation="learned",
                                       rotation_training={"Steps": 0, "Tokens": 64}))
    a, b = had.state_dict(), learned.state_dict()
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_learned_rotation_folding_keeps_the_float_model():
    """Fold learned R1/R2 (a few Cayley steps away from Hadamard) into the float model: outputs unchanged."""
    w = tiny_weights()
    spec = tiny_spec("flexllm-w4a4", rotation="learned", rotation_training={"Steps": 3, "Tokens": 64})
    learned = learn_rotations(w.state_dict, w.arch, spec, text_windows(4, 128))
    init = initial_rotations(w.arch)
    assert (learned.r1 - init.r1).abs().max() > 1e-3                       # it moved
    assert all(orthogonality_error(m) < 1e-12 for m in [learned.r1] + learned.r2)
    ids = text_windows(1, 128)
    plain = tiny_float_model()
    folded = tiny_float_model()
    rotate(folded, r1=learned.r1_rotation(), r2=learned.r2)
    with torch.no_grad():
        want, got = plain(ids)[0], folded(ids)[0]
    assert (got - want).abs().max() < 1e-4 * want.abs().max()


def test_training_lowers_the_loss():
    w = tiny_weights()
    # the paper's formats (unclipped uint4 inputs): on this random-weight model the clipped default moves
    # the probe loss by less than its noise
    spec = tiny_spec("flexllm-w4a4", rotation="learned", rotation_training={"Steps": 30, "Tokens": 64},
                     input_clip_ratios=(), weight_clip_search=False)
    learned = learn_rotations(w.state_dict, w.arch, spec, text_windows(4, 128))
    s = learned.stats
    assert s["loss_after"] < s["loss_before"], s
    assert len(learned.losses) == 30 and s["orthogonality_error"] < 1e-12


def test_learned_model_restores_from_its_state():
    w = tiny_weights()
    spec = tiny_spec("flexllm-w4a4", rotation="learned", rotation_training={"Steps": 2, "Tokens": 64})
    model = build_model(w, spec)
    assert model.rotation_training["steps"] == 2
    again = restore_model(w.arch, spec, model.state_dict())
    assert all(layer.mlp.online_hadamard.enabled for layer in again.layers)
    ids = text_windows(1, 128)
    with torch.no_grad():
        assert torch.equal(model(ids)[0], again(ids)[0])


def test_training_windows_cut_the_calibration_tokens():
    calib = torch.arange(2 * 10).view(2, 10)
    assert training_windows(calib, 4).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [10, 11, 12, 13], [14, 15, 16, 17]]
    with pytest.raises(ValueError, match="Tokens"):
        training_windows(calib, 11)


BASE = {"Model": {"Source": "preset:tiny"}}


def _spec(**q):
    return parse_config({**BASE, "Quantization": q}).quant_spec()


def test_config_keys_and_errors():
    spec = _spec(Rotation="learned", RotationTraining={"Steps": 7, "LearningRate": 1, "Tokens": 64})
    assert spec.rotation == "learned" and spec.rotated
    assert dict(spec.rotation_training) == {"Steps": 7, "LearningRate": 1.0, "Tokens": 64}
    assert dict(_spec(Rotation="learned").rotation_training) == {"Steps": 100, "LearningRate": 1.5, "Tokens": 128}
    cases = [({"Rotation": "learned", "RotationTraining": {"Step": 3}}, r"RotationTraining: unknown key 'Step'"),
             ({"Rotation": "learned", "RotationTraining": {"Steps": -1}}, r"RotationTraining.Steps must be an integer"),
             ({"Rotation": "learned", "RotationTraining": {"Steps": 2.5}}, r"RotationTraining.Steps must be an integer"),
             ({"Rotation": "learned", "RotationTraining": {"LearningRate": 0}}, r"LearningRate must be a number > 0"),
             ({"Rotation": "learned", "RotationTraining": {"Tokens": 1}}, r"Tokens must be an integer >= 2"),
             ({"Rotation": "learned", "RotationTraining": {"Tokens": 1024}}, r"Tokens \(1024\) exceeds"),
             ({"Rotation": "hadamard", "RotationTraining": {"Steps": 3}}, r"RotationTraining needs Rotation: learned"),
             ({"Rotation": "learned", "SeamSmoothing": {"o_proj": 0.5}}, r"learned does not combine with SeamSmoothing")]
    for q, match in cases:
        with pytest.raises(ConfigError, match=match):
            _spec(**q)
    with pytest.raises(ConfigError, match=r"RotationTraining .*must be a mapping"):
        parse_config({**BASE, "Quantization": {"Rotation": "learned", "RotationTraining": [3]}})
    with pytest.raises(ConfigError, match=r"Rotation"):
        parse_config({**BASE, "Quantization": {"Rotation": "spin"}})
    with pytest.raises(ValueError, match=r"learned needs quantized linear inputs"):
        quant_preset("float", rotation="learned")


def test_rotate_checks_the_matrices():
    model = tiny_float_model()
    a = model.arch
    with pytest.raises(ValueError, match="R1 is"):
        rotate(model, r1=Rotation(torch.eye(a.hidden_size + 1, dtype=torch.float64), a.hidden_size + 1, False))
    with pytest.raises(ValueError, match="R2 must be"):
        rotate(tiny_float_model(), r2=[torch.eye(a.head_dim, dtype=torch.float64)])


def test_hmt_refuses_a_learned_rotation_backbone():
    from brevitas_models.hmt.basis import BackboneBasis
    model = build_model(tiny_weights(), tiny_spec("flexllm-w4a4", rotation="learned",
                                                  rotation_training={"Steps": 0, "Tokens": 64}))
    with pytest.raises(ValueError, match="learned rotations"):
        BackboneBasis(model, reads_states=False)


def test_learned_spec_survives_a_json_round_trip():
    import json
    from brevitas_models.quant_presets import QuantSpec
    for spec in (quant_preset("flexllm-w4a4", rotation="learned", rotation_training={"Steps": 5}),
                 quant_preset("flexllm-w4a4")):
        assert QuantSpec(**json.loads(json.dumps(spec.to_dict()))) == spec
