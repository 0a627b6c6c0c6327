"""The backbone of an HMT checkpoint (brevitas_models/hmt/backbone.py): the LoRA adapter merged into the float
weights (hmt_backbone_weights) gives what the unmerged adapter gives during training (forward hooks), on the
float model and through the rotation of a quantized preset; only the targeted tensors change; a calibrated
model of the original weights is never reused for the merged ones."""

import pytest
import torch

from brevitas_models.build import build_model
from brevitas_models.hmt.backbone import LoRAAdapter, adapter_applied, adapter_shapes, hmt_backbone_weights
from brevitas_models.hmt.memory import HMTParams
from brevitas_models.hmt.spec import HMTSpec
from brevitas_models.hmt.wrapper import HMTWrapper
from brevitas_models.quant_presets import quant_preset
from tests.helpers import text_tokens, tiny_float_model, tiny_spec, tiny_weights

SPEC = HMTSpec(segment_length=40, sensory_tokens=6, memory_slots=2)
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "down_proj")


def _params(targets=TARGETS, seed=0):
    """HMT parameters with a LoRA adapter whose B is random too (a trained adapter, not the zero start)."""
    arch = tiny_weights().arch
    adapter = LoRAAdapter(arch.num_layers, adapter_shapes(arch, targets), rank=4, alpha=8.0, seed=seed)
    p = HMTParams(arch.hidden_size, adapter=adapter)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in p.named_parameters():
            scale = 0.05 if t.dim() == 1 else (0.2 if name in ("w_q", "w_k") else 0.1)
            t.copy_(torch.randn(t.shape, generator=g) * scale)
    return p


def _ids(segments=3):
    return text_tokens()[: segments * SPEC.block][None]


def test_merged_weights_equal_the_unmerged_adapter():
    params = _params()
    ids = _ids()
    base = tiny_float_model()
    with torch.no_grad():
        with adapter_applied(base, params.adapter):
            ref = HMTWrapper(base, SPEC, params).run(ids)
        plain = HMTWrapper(base, SPEC, params).run(ids)       # hooks removed again
        merged = build_model(hmt_backbone_weights(tiny_weights(), params), quant_preset("float"))
        got = HMTWrapper(merged, SPEC, params).run(ids)
    for (_, _, a), (_, _, b), (_, _, c) in zip(ref, got, plain):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * float(a.abs().max()))
        assert float((c - a).abs().max()) > 1e-2 * float(a.abs().max())     # the adapter matters


def test_merged_weights_through_the_rotation():
    """A rotated (R1/R2, norm-fused) float build of the merged weights gives the float adapter's logits: the
    merge happens before any preset's rotation and calibration."""
    params = _params()
    ids = _ids()
    gamma = tiny_weights().state_dict["model.norm.weight"]
    base = tiny_float_model()
    merged = hmt_backbone_weights(tiny_weights(), params)
    rotated = build_model(merged, quant_preset("float", rotation="hadamard"))
    assert rotated.rotated
    with torch.no_grad():
        with adapter_applied(base, params.adapter):
            ref = HMTWrapper(base, SPEC, params).run(ids)
        got = HMTWrapper(rotated, SPEC, params, final_norm_weight=gamma).run(ids)
    for (_, _, a), (_, _, b) in zip(ref, got):
        assert float((a - b).abs().max() / a.abs().max()) < 1e-4


def test_only_the_targeted_tensors_change():
    weights = tiny_weights()
    assert hmt_backbone_weights(weights, None) is weights
    assert hmt_backbone_weights(weights, HMTParams(weights.arch.hidden_size)) is weights
    params = _params(("q_proj", "v_proj"))
    merged = hmt_backbone_weights(weights, params)
    changed = {n for n in weights.state_dict if merged.state_dict[n] is not weights.state_dict[n]}
    assert changed == {f"model.layers.{i}.self_attn.{t}.weight" for i in range(weights.arch.num_layers)
                       for t in ("q_proj", "v_proj")}
    name = "model.layers.1.self_attn.v_proj.weight"
    pair = params.adapter.layers[1]["v_proj"]
    want = weights.state_dict[name].double() + (pair.b.double() @ pair.a.double()) * (8.0 / 4)
    torch.testing.assert_close(merged.state_dict[name].double(), want, rtol=0, atol=1e-6)
    assert merged.state_dict[name].dtype == weights.state_dict[name].dtype


def test_adapter_mismatches_are_named():
    weights = tiny_weights()
    arch = weights.arch
    short = HMTParams(arch.hidden_size, adapter=LoRAAdapter(arch.num_layers + 1, adapter_shapes(arch, ["q_proj"]),
                                                            2, 4.0))
    with pytest.raises(ValueError, match=f"adapter has {arch.num_layers + 1} decoder layers, the model "
                                         f"{arch.num_layers}"):
        hmt_backbone_weights(weights, short)
    wide = HMTParams(arch.hidden_size, adapter=LoRAAdapter(arch.num_layers, {"q_proj": (arch.q_size + 1,
                                                                                       arch.hidden_size)}, 2, 4.0))
    with pytest.raises(ValueError, match=r"adapter of model.layers.0.self_attn.q_proj.weight is \("):
        hmt_backbone_weights(weights, wide)
    with pytest.raises(ValueError, match="LoRA targets must be a non-empty subset"):
        adapter_shapes(arch, ["qkv"])
    with pytest.raises(ValueError, match="float, unrotated backbone only"):
        with adapter_applied(tiny_float_model(rotated=True), _params().adapter):
            pass


def test_calibrated_model_of_the_original_weights_is_not_reused(tmp_path):
    """build_model's cache key hashes every weight tensor: the merged backbone calibrates anew."""
    weights = tiny_weights()
    spec = tiny_spec("flexllm-w4a4")
    build_model(weights, spec, cache_dir=tmp_path)
    first = set(tmp_path.glob("*.pt"))
    merged = build_model(hmt_backbone_weights(weights, _params()), spec, cache_dir=tmp_path)
    second = set(tmp_path.glob("*.pt"))
    assert len(first) == 1 and len(second) == 2
    again = build_model(hmt_backbone_weights(weights, _params()), spec, cache_dir=tmp_path)
    assert set(tmp_path.glob("*.pt")) == second
    for (n, a), (_, b) in zip(merged.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), n
