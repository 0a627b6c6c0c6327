"""HMT wrapper (brevitas_models/hmt): pass layouts and lengths, the ring cache, the empty-slot mask, the
recall against an independent numpy reference, the rotated-backbone boundary, and HMT with memory and
sensory tokens off equal to independent segments (float and every quantization preset)."""

import math

import numpy as np
import pytest
import torch

from brevitas_models.hmt.memory import HMTParams, MemoryCache, recall
from brevitas_models.hmt.spec import HMTSpec
from brevitas_models.hmt.wrapper import HMTWrapper
from tests.helpers import text_tokens, tiny_float_model, tiny_model, tiny_weights

SPEC = HMTSpec(segment_length=40, sensory_tokens=6, memory_slots=2)      # block 32, summary 16


def _float_model(rotated: bool = False):
    return tiny_float_model(rotated)


def _params(d=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    p = HMTParams(d)
    with torch.no_grad():
        for t in p.parameters():
            t.copy_(torch.randn(t.shape, generator=g) * (0.05 if t.dim() == 1 else 0.2))
    return p


def _ids(segments, spec=SPEC):
    return text_tokens()[: segments * spec.block][None]


def _numpy_recall(s, keys, mems, filled, w_q):
    q = w_q.astype(np.float64) @ s.astype(np.float64)
    idx = np.flatnonzero(filled)
    sc = np.array([q @ keys[i] for i in idx]) / math.sqrt(len(s))
    p = np.exp(sc - sc.max())
    p /= p.sum()
    return sum(pi * mems[i] for pi, i in zip(p, idx))


def test_spec_sizes_and_errors():
    assert (SPEC.block, SPEC.summary) == (32, 16)
    hw = HMTSpec()
    assert (hw.segment_length, hw.block, hw.summary) == (1024, 990, 495)     # FlexLLM: 1 + 32 + 990 + 1
    with pytest.raises(ValueError, match="HMT.SegmentLength 10 leaves no room"):
        HMTSpec(segment_length=10, sensory_tokens=8)
    with pytest.raises(ValueError, match=r"HMT.SummaryTokens must be an integer in \[1, 32\]"):
        HMTSpec(segment_length=40, sensory_tokens=6, summary_tokens=33)


def test_recall_scale_multiplies_the_recalled_row():
    """HMT.RecallScale: P_n = s * mix (scalar) or v * mix (diagonal); s = 1 is the method's P_n = mix;
    segment 0's P_0 is not scaled; HMT.RecallResidual: P_n = P_0 + s * mix."""
    model = _float_model()
    ids = text_tokens()[:3 * SPEC.block][None]
    base = _params()
    runs = {}
    for kind, value in (("none", None), ("scalar", 1.0), ("scalar", 0.25), ("diagonal", None), ("residual", 0.25)):
        residual = kind == "residual"
        kind = "scalar" if residual else kind
        p = HMTParams(base.hidden_size, recall_scale=kind, recall_residual=residual)
        p.load_state_dict(base.state_dict(), strict=False)
        with torch.no_grad():
            if kind == "scalar":
                p.recall_scale.fill_(value)
            elif kind == "diagonal":
                p.recall_scale.copy_(torch.linspace(0.1, 0.5, base.hidden_size))
        rows = []
        wrapper = HMTWrapper(model, SPEC.replace(recall_scale=kind, recall_residual=residual), p)
        orig = wrapper.main_input
        wrapper.main_input = lambda block, memory, tail, trailing: (rows.append(memory.detach().clone()),
                                                                     orig(block, memory, tail, trailing))[1]
        with torch.no_grad():
            out = wrapper.run(ids)
        runs[("residual" if residual else kind, value)] = (rows, out)
    none_rows, none_out = runs[("none", None)]
    one_rows, one_out = runs[("scalar", 1.0)]
    assert all(torch.equal(a[2], b[2]) for a, b in zip(none_out, one_out))
    quarter = runs[("scalar", 0.25)][0]
    assert torch.equal(quarter[0], none_rows[0])                            # P_0 as learned
    torch.testing.assert_close(quarter[1], 0.25 * none_rows[1])             # same memories, same mix
    diag = runs[("diagonal", None)][0]
    torch.testing.assert_close(diag[1], torch.linspace(0.1, 0.5, base.hidden_size) * none_rows[1])
    res = runs[("residual", 0.25)][0]                                       # P_n = P_0 + s mix
    assert torch.equal(res[0], none_rows[0])
    torch.testing.assert_close(res[1], base.initial_memory.detach() + 0.25 * none_rows[1])
    with pytest.raises(ValueError, match="HMT.RecallScale must be one of"):
        HMTSpec(recall_scale="learned")
    with pytest.raises(ValueError, match="HMT.RecallResidual must be true or false"):
        HMTSpec(recall_residual="yes")


def test_pass_layouts_and_lengths():
    model = _float_model()
    params = _params()
    w = HMTWrapper(model, SPEC, params)
    ids = _ids(3)
    seen = []
    real = w.backbone

    def record(embeds):
        seen.append(embeds.detach().clone())
        return real(embeds)
    w.backbone = record
    with torch.no_grad():
        w.run(ids)
    blocks = ids.split(32, dim=1)
    emb = model.embed_tokens.weight.detach()
    b, j, k = 32, 16, 6
    # segment 0: main only, [P_0, block, P_0]; segments 1, 2: summary [T, block[:j], T] then main
    assert [e.shape[1] for e in seen] == [b + 2, j + 2, 1 + k + b + 1, j + 2, 1 + k + b]
    main0, sum1, main1, sum2, main2 = (e[0] for e in seen)
    assert torch.equal(main0[0], params.initial_memory.detach()) and torch.equal(main0[-1], main0[0])
    assert torch.equal(main0[1:-1], emb[blocks[0][0]])
    for summ, block in ((sum1, blocks[1]), (sum2, blocks[2])):
        assert torch.equal(summ[0], params.summary_token.detach()) and torch.equal(summ[-1], summ[0])
        assert torch.equal(summ[1:-1], emb[block[0, :j]])
    assert torch.equal(main1[1:1 + k], emb[blocks[0][0, -k:]])
    assert torch.equal(main1[1 + k:1 + k + b], emb[blocks[1][0]])
    assert torch.equal(main1[-1], main1[0]) and not torch.equal(main1[0], main0[0])
    assert torch.equal(main2[1:1 + k], emb[blocks[1][0, -k:]])         # last segment: no trailing P


def test_hardware_conventions_zero_first_segment():
    w = HMTWrapper(_float_model(), SPEC.replace(zero_initial=True), _params())
    layout = w.main_input(_ids(1), torch.zeros(1, 96), "zeros", trailing=True)
    assert layout.embeds.shape[1] == SPEC.segment_length
    assert layout.parts == ["memory"] + ["sensory"] * 6 + ["block"] * 32 + ["memory"]
    assert torch.count_nonzero(layout.embeds[0, :7]) == 0 and torch.count_nonzero(layout.embeds[0, -1]) == 0


def test_ring_cache_keeps_the_most_recent_memories():
    g = torch.Generator().manual_seed(1)
    w_k = torch.randn(8, 8, generator=g)
    cache = MemoryCache(3, 1, 8)
    mems = [torch.randn(1, 8, generator=g) for _ in range(5)]
    slots = [cache.push(m, w_k) for m in mems]
    assert slots == [0, 1, 2, 0, 1] and len(cache) == 3
    keys, stored, filled = cache.stacked()
    assert filled.all()
    assert [int(torch.nonzero((stored[0] == m).all(-1))[0]) for m in mems[2:]] == [2, 0, 1]
    for slot, m in ((0, mems[3]), (1, mems[4]), (2, mems[2])):
        np.testing.assert_allclose(keys[0, slot].numpy(), w_k.numpy() @ m[0].numpy(), rtol=1e-5, atol=1e-6)


def test_recall_matches_numpy_and_masks_empty_slots():
    g = torch.Generator().manual_seed(2)
    d, n = 16, 5
    w_q, w_k = torch.randn(d, d, generator=g), torch.randn(d, d, generator=g)
    cache = MemoryCache(n, 1, d)
    for _ in range(3):                                  # slots 3, 4 stay empty
        cache.push(torch.randn(1, d, generator=g), w_k)
    s = torch.randn(1, d, generator=g)
    keys, mems, filled = cache.stacked()
    assert filled.tolist() == [True, True, True, False, False]
    ref = _numpy_recall(s[0].numpy(), (mems[0].numpy() @ w_k.numpy().T), mems[0].numpy(), filled.numpy(),
                        w_q.numpy())
    got = cache.recall(s, w_q)
    np.testing.assert_allclose(got[0].numpy(), ref, rtol=1e-5, atol=1e-5)
    # whatever an empty slot holds does not change the result
    junk_keys, junk_mems = keys.clone(), mems.clone()
    junk_keys[:, 3:] = 1e3
    junk_mems[:, 3:] = -7.0
    torch.testing.assert_close(recall(s, junk_keys, junk_mems, filled, w_q), got)
    with pytest.raises(ValueError, match="at least one filled"):
        recall(s, keys, mems, torch.zeros(n, dtype=torch.bool), w_q)


@pytest.mark.parametrize("preset", ["float", "w8a8", "w4a8", "flexllm-w4a4"])
def test_no_memory_no_sensory_equals_independent_segments(preset):
    model = tiny_model(preset)
    w = HMTWrapper(model, SPEC.replace(sensory_tokens=0, memory=False))
    ids = _ids(3, w.spec)
    with torch.no_grad():
        out = w.run(ids)
        for (nll, count, logits), block in zip(out, ids.split(w.spec.block, dim=1)):
            ref, _ = model(block)
            torch.testing.assert_close(logits, ref, rtol=0, atol=0)
            ref_nll = torch.nn.functional.cross_entropy(ref[0, :-1], block[0, 1:], reduction="sum")
            assert abs(float(nll) - float(ref_nll)) < 1e-3 and count == block.numel() - 1


def test_sensory_only_equals_the_model_on_tail_plus_block():
    model = _float_model()
    w = HMTWrapper(model, SPEC.replace(memory=False))
    ids = _ids(2)
    with torch.no_grad():
        out = w.run(ids)
        ref, _ = model(ids[:, 32 - 6:64])
    torch.testing.assert_close(out[1][2], ref[:, 6:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("point", ["post_norm", "pre_norm"])
def test_rotated_backbone_gives_the_float_results(point):
    """The same HMT parameters on the float model and on its R1-rotated (norm-fused) copy: same logits."""
    spec = SPEC.replace(memory_point=point)
    params = _params()
    gamma = tiny_weights().state_dict["model.norm.weight"]
    ids = _ids(3)
    with torch.no_grad():
        ref = HMTWrapper(_float_model(), spec, params).run(ids)
        rot = HMTWrapper(_float_model(rotated=True), spec, params, final_norm_weight=gamma).run(ids)
    for (_, _, a), (_, _, b) in zip(ref, rot):
        assert float((a - b).abs().max() / a.abs().max()) < 1e-4


def test_rotated_backbone_needs_the_final_norm_weight():
    with pytest.raises(ValueError, match="final-norm weight"):
        HMTWrapper(_float_model(rotated=True), SPEC, _params())


def test_memory_carries_information_between_segments():
    """With memory on, segment 2's logits depend on segment 0 (through M_0 -> P_1 -> M_1 -> P_2),
    although segment 0 is outside segment 2's sensory window."""
    w = HMTWrapper(_float_model(), SPEC, _params())
    ids = _ids(3)
    other = ids.clone()
    other[:, :16] = (other[:, :16] + 7) % 256
    with torch.no_grad():
        a, b = w.run(ids)[2][2], w.run(other)[2][2]
        w_off = HMTWrapper(w.model, SPEC.replace(memory=False))
        c, d = w_off.run(ids)[2][2], w_off.run(other)[2][2]
    assert float((a - b).abs().max()) > 1e-4
    torch.testing.assert_close(c, d, rtol=0, atol=0)


@pytest.mark.parametrize("preset", ["w8a8", "w4a8", "flexllm-w4a4"])
def test_quantized_presets_run_hmt_close_to_float(preset):
    """Every preset runs the same (float-basis) HMT parameters; on the tiny model the quantized logits stay
    near the float ones (the 8-bit preset closer than the 4-bit ones)."""
    gamma = tiny_weights().state_dict["model.norm.weight"]
    params = _params()
    ids = _ids(3)
    with torch.no_grad():
        ref = HMTWrapper(tiny_model("float"), SPEC, params).run(ids)
        got = HMTWrapper(tiny_model(preset), SPEC, params, final_norm_weight=gamma).run(ids)
    for (_, _, a), (_, _, b) in zip(ref, got):
        err = float((a - b).abs().max() / a.abs().max())
        assert err < (0.03 if preset == "w8a8" else 0.3), err
