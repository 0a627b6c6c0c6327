"""HMT training (brevitas_models/hmt/train.py): a few steps lower the loss of the tiny model, gradients
reach all four parameters and the LoRA adapter through the recurrence, checkpoints (with and without an
adapter) round-trip, are cached on their inputs and are checked against the HMT sizes and their format."""

import pytest
import torch

from brevitas_models.hmt.backbone import LoRAAdapter, adapter_applied, adapter_shapes
from brevitas_models.hmt.memory import HMTParams
from brevitas_models.hmt.spec import HMTSpec
from brevitas_models.hmt.train import (TRAINING_TEXTS, TrainSettings, initial_params, load_checkpoint,
                                       save_checkpoint, train, train_cached)
from brevitas_models.hmt.wrapper import HMTWrapper
from tests.helpers import text_tokens, tiny_model, tiny_weights

SPEC = HMTSpec(segment_length=40, sensory_tokens=6, memory_slots=4)


def _loss(model, params, ids):
    with torch.no_grad():
        out = HMTWrapper(model, SPEC, params).run(ids)
    return float(sum(o[0] for o in out) / sum(o[1] for o in out))


def test_a_few_steps_lower_the_loss():
    model = tiny_model("float")
    tokens = text_tokens()[5000:5000 + 3 * SPEC.block]          # one window: every step sees it
    before = _loss(model, initial_params(model), tokens[None])
    result = train(model, SPEC, tokens, TrainSettings(steps=6, segments=3, lr=2e-2))
    after = _loss(model, result["params"], tokens[None])
    assert after < before - 0.05, (before, after)
    assert len(result["losses"]) == 6 and result["losses"][-1] < result["losses"][0]
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("recall_scale", ["none", "diagonal"])
def test_gradient_reaches_every_memory_parameter(recall_scale):
    model = tiny_model("float")
    spec = SPEC.replace(recall_scale=recall_scale)
    params = initial_params(model, TrainSettings(lora_targets=("q_proj", "v_proj", "down_proj")), spec)
    with torch.no_grad():
        for pair in (p for layer in params.adapter.layers for p in layer.values()):
            pair.b.normal_(0, 0.01)                 # past the B = 0 start, so A gets a gradient too
    with adapter_applied(model, params.adapter):
        out = HMTWrapper(model, spec, params).run(text_tokens()[:3 * SPEC.block][None])
    (sum(o[0] for o in out)).backward()
    names = [n for n, _ in params.named_parameters()]
    assert "adapter.layers.0.q_proj.a" in names and "adapter.layers.1.down_proj.b" in names
    assert ("recall_scale" in names) == (recall_scale != "none")
    assert ("recall_scale" in [n for n, p in zip(names, params.parameters()) if any(p is q for q in
                                                                                params.memory_parameters())]
            ) == (recall_scale != "none")
    for name, p in params.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_training_without_adapter_leaves_the_backbone_alone():
    model = tiny_model("float")
    tokens = text_tokens()[:3 * SPEC.block]
    result = train(model, SPEC, tokens, TrainSettings(steps=1, segments=3, lora_rank=0))
    assert result["params"].adapter is None
    with pytest.raises(ValueError, match="--lora-targets must be a non-empty subset"):
        TrainSettings(lora_targets=("qkv",))
    with pytest.raises(ValueError, match="--lora-rank must be an integer >= 0"):
        TrainSettings(lora_rank=-1)


def test_recall_init_scales_the_starting_projections():
    """--recall-init c: W_q and W_k start at c I (identity by default), so the first recalls' softmax over
    post-norm states is not saturated; a bad value is named."""
    model = tiny_model("float")
    assert torch.equal(initial_params(model, TrainSettings()).w_q.detach(), torch.eye(96))
    p = initial_params(model, TrainSettings(recall_init=0.3))
    assert torch.equal(p.w_q.detach(), 0.3 * torch.eye(96)) and torch.equal(p.w_k.detach(), 0.3 * torch.eye(96))
    with pytest.raises(ValueError, match="--recall-init must be a number > 0, got 0"):
        TrainSettings(recall_init=0)


def test_learning_rate_schedule():
    s = TrainSettings(steps=10, warmup=2)
    rates = [s.rate(i) for i in range(10)]
    assert rates[0] < rates[1] < rates[2] == 1.0
    assert all(a >= b for a, b in zip(rates[2:], rates[3:])) and abs(rates[-1] - 0.1) < 1e-12


@pytest.mark.parametrize("adapter", [False, True])
def test_checkpoint_round_trip_and_checks(tmp_path, adapter):
    arch = tiny_weights().arch
    params = HMTParams(96, adapter=LoRAAdapter(arch.num_layers, adapter_shapes(arch, ["q_proj", "o_proj"]), 4, 8.0)
                       if adapter else None)
    with torch.no_grad():
        for p in params.parameters():
            p.add_(torch.randn(p.shape))
    path = tmp_path / "hmt.pt"
    save_checkpoint(path, params, SPEC, {"steps": 1})
    loaded = load_checkpoint(path, SPEC, 96)
    assert [n for n, _ in loaded.named_parameters()] == [n for n, _ in params.named_parameters()]
    for (n, a), (_, b) in zip(params.named_parameters(), loaded.named_parameters()):
        assert torch.equal(a, b), n
    if adapter:
        assert (loaded.adapter.rank, loaded.adapter.scale, loaded.adapter.targets) == (4, 2.0, ("q_proj", "o_proj"))
    with pytest.raises(ValueError, match="trained with segment_length = 40, the config asks for 48"):
        load_checkpoint(path, SPEC.replace(segment_length=48), 96)
    with pytest.raises(ValueError, match="hidden size 96, the model 64"):
        load_checkpoint(path, SPEC, 64)
    with pytest.raises(FileNotFoundError, match="HMT checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt", SPEC, 96)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read"):
        load_checkpoint(tmp_path / "bad.pt", SPEC, 96)
    old = torch.load(path, weights_only=True)
    old["format"] = 1
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="has format 1, this flexllm reads format 2 .*train it again"):
        load_checkpoint(tmp_path / "old.pt", SPEC, 96)


def test_recall_scale_checkpoints(tmp_path):
    """A checkpoint carries its recall scale (HMT.RecallScale, a trained field); a checkpoint from before the
    key (no recall_scale field) loads as "none"; a mismatch names the field."""
    spec = SPEC.replace(recall_scale="scalar")
    params = HMTParams(96, recall_scale="scalar")
    with torch.no_grad():
        params.recall_scale.fill_(0.123)
    save_checkpoint(tmp_path / "s.pt", params, spec, {})
    loaded = load_checkpoint(tmp_path / "s.pt", spec, 96)
    assert float(loaded.recall_scale.detach()) == pytest.approx(0.123) and loaded.recall_scale.shape == ()
    with pytest.raises(ValueError, match="trained with recall_scale = 'scalar', the config asks for 'diagonal'"):
        load_checkpoint(tmp_path / "s.pt", SPEC.replace(recall_scale="diagonal"), 96)
    save_checkpoint(tmp_path / "n.pt", HMTParams(96), SPEC, {})
    old = torch.load(tmp_path / "n.pt", weights_only=True)
    del old["hmt"]["recall_scale"], old["hmt"]["recall_residual"]
    torch.save(old, tmp_path / "old.pt")
    loaded = load_checkpoint(tmp_path / "old.pt", SPEC, 96)
    assert loaded.recall_scale is None and not loaded.recall_residual
    with pytest.raises(ValueError, match="trained with recall_residual = False, the config asks for True"):
        load_checkpoint(tmp_path / "old.pt", SPEC.replace(recall_residual=True), 96)
    with pytest.raises(ValueError, match="trained with recall_scale = 'none', the config asks for 'scalar'"):
        load_checkpoint(tmp_path / "old.pt", spec, 96)
    with pytest.raises(ValueError, match="HMT.RecallScale must be one of"):
        HMTParams(96, recall_scale="learned")


def test_cached_training_is_reused(tmp_path):
    model = tiny_model("float")
    tokens = text_tokens()[:4 * SPEC.block]
    settings = TrainSettings(steps=2, segments=2)
    p1, info1 = train_cached(tiny_weights(), model, SPEC, tokens, settings, tmp_path)
    p2, info2 = train_cached(tiny_weights(), model, SPEC, tokens, settings, tmp_path)
    assert not info1["cached"] and info2["cached"] and info1["checkpoint"] == info2["checkpoint"]
    assert torch.equal(p1.w_q, p2.w_q)
    _, info3 = train_cached(tiny_weights(), model, SPEC, tokens[1:], settings, tmp_path)
    assert info3["checkpoint"] != info1["checkpoint"]


@pytest.mark.parametrize("source", ["docstrings", "sources"])
def test_training_text_is_not_the_evaluation_text(source):
    from brevitas_models.text import pydoc_topics_text
    train_text = TRAINING_TEXTS[source](200_000)
    assert len(train_text) == 200_000
    ev = pydoc_topics_text()
    probes = [ev[i:i + 200] for i in range(0, len(ev) - 200, 10_000)]
    assert len(probes) > 40 and not any(p in train_text for p in probes)


def test_training_segment_length_keeps_the_summary_fraction():
    spec = HMTSpec(segment_length=256, sensory_tokens=32, memory_slots=64)          # block 222, j 111
    short = TrainSettings(segment_length=128).training_spec(spec)
    assert (short.segment_length, short.block, short.summary, short.sensory_tokens) == (128, 94, 47, 32)
    assert TrainSettings().training_spec(spec) == short                  # the default: at most 128 positions
    assert TrainSettings(segment_length=None).training_spec(spec) is spec
    assert TrainSettings(segment_length=512).training_spec(spec) is spec
    with pytest.raises(ValueError, match="--train-segment-length 30: HMT.SegmentLength 30 leaves no room"):
        TrainSettings(segment_length=30).training_spec(spec)
    with pytest.raises(ValueError, match="--train-segment-length must be an integer >= 3"):
        TrainSettings(segment_length=2)


def test_shorter_training_segments_and_delayed_adapter(tmp_path):
    model = tiny_model("float")
    tokens = text_tokens()[:6 * SPEC.block]
    settings = TrainSettings(steps=2, segments=3, segment_length=30, lora_start=2)   # adapter frozen throughout
    result = train(model, SPEC, tokens, settings)
    params = result["params"]
    start = initial_params(model, settings)
    assert all(float(pair.b.detach().abs().max()) == 0 for layer in params.adapter.layers for pair in layer.values())
    assert not torch.equal(params.w_q, start.w_q) and not torch.equal(params.summary_token, start.summary_token)
    _, info = train_cached(tiny_weights(), model, SPEC, tokens, settings, tmp_path)
    assert (info["train_segment_length"], info["train_summary_tokens"], info["lora_start"]) == (30, 11, 2)
    load_checkpoint(info["checkpoint"], SPEC, model.arch.hidden_size)       # evaluated at SPEC's own L
    with pytest.raises(ValueError, match="--lora-start must be an integer >= 0"):
        TrainSettings(lora_start=-1)
