"""The faster forms of calibration and project-build steps give exactly what the straightforward forms
they replaced give (each compared with an independent, plain implementation written here)."""

import numpy as np
import pytest
import torch
from torch import nn

from brevitas_models.calibration import (CLIP_GRID, frozen_weights, init_weight_scales, search_weight_clip,
                                         weight_grid)
from brevitas_models.gptq import HessianAccumulator, gptq_quantize
from brevitas_models.model import LlamaModel, no_random_init
from brevitas_models.rotation import rotate
from helpers import text_windows, tiny_spec, tiny_weights


def _fresh(preset="flexllm-w4a4"):
    w = tiny_weights()
    m = LlamaModel(w.arch, tiny_spec(preset), max_positions=512)
    m.eval()
    m.load_hf_state_dict(w.state_dict)
    rotate(m)
    init_weight_scales(m)
    return m


def test_weight_grid_is_the_scale_brevitas_quantizes_with():
    """weight_grid reads the scale without fake-quantizing the weight: equal to quant_weight()'s scale,
    and the codes round(w / scale) clamped to [qmin, qmax] reproduce quant_weight() exactly."""
    m = _fresh()
    for name, unit in m.linears():
        scale, qmin, qmax = weight_grid(unit)
        qw = unit.linear.quant_weight()
        assert torch.equal(scale, qw.scale.detach().view(-1)), name
        assert (qmin, qmax) == (-7, 7), name                       # 4-bit narrow range
        s = scale[:, None]
        assert torch.equal(torch.clamp(torch.round(unit.weight / s), qmin, qmax) * s, qw.value), name


@pytest.mark.parametrize("block", [None, 1000, 64 * 5])
@pytest.mark.parametrize("preset", ["flexllm-w4a4", "w8a8"])
def test_golden_weight_codes_equal_the_brevitas_quant_tensor_codes(preset, block, monkeypatch):
    """weight_codes (the quantizer's own scale / zero point / to_int steps, a block of rows at a time) gives
    the int8 codes, scale and bit width that quant_weight().int() gives through the fake-quantized weight,
    for every linear; blocks of 1000 elements (ragged: not a multiple of any row length) and of a few rows
    included."""
    import brevitas_models.golden as golden
    from brevitas_models.golden import weight_codes

    if block is not None:
        monkeypatch.setattr(golden, "TO_INT_BLOCK_ELEMENTS", block)
    m = _fresh(preset)
    for name, unit in list(m.linears()) + [("lm_head", m.lm_head)]:
        w_int, scale, zero_point, bits = weight_codes(unit.linear)
        with torch.no_grad():
            qw = unit.linear.quant_weight()
            ref = qw.int()
        assert ref.dtype == torch.int8 and np.array_equal(w_int, ref.numpy()), name
        assert np.array_equal(scale, qw.scale.numpy().astype(np.float32).reshape(-1)), name
        assert np.array_equal(zero_point, qw.zero_point.numpy()), name
        assert bits == int(qw.bit_width.item()), name


def test_frozen_weights_give_the_brevitas_forward_and_restore_it():
    m = _fresh()
    units = [unit for _, unit in m.linears()]
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(2, 5, u.linear.in_features, generator=g) for u in units]
    want = [u.linear(x) for u, x in zip(units, xs)]
    with torch.no_grad(), frozen_weights(*units):
        got = [u.linear(x) for u, x in zip(units, xs)]
        again = [u.linear(x) for u, x in zip(units, xs)]
    for w_, a, b in zip(want, got, again):
        assert torch.equal(w_, a) and torch.equal(w_, b)
    assert all("quant_weight" not in vars(u.linear) for u in units)   # the method is Brevitas' again
    # after the block a weight change is seen again (nothing stays cached)
    with torch.no_grad():
        units[0].weight.mul_(0.5)
    assert not torch.equal(units[0].linear(xs[0]), want[0])


def _clip_reference(w, d, qmin, qmax):
    """The whole-matrix search: every ratio of the grid on every channel at once, first minimum wins."""
    amax = w.abs().amax(dim=1).clamp(min=1e-12)
    best_err = torch.full((w.shape[0],), float("inf"), dtype=torch.float64)
    best_r = torch.ones(w.shape[0], dtype=torch.float64)
    for r in CLIP_GRID:
        s = (amax * r / qmax)[:, None]
        err = (((torch.clamp(torch.round(w / s), qmin, qmax) * s - w) ** 2) * d[None, :]).sum(dim=1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_r = torch.where(better, torch.full_like(best_r, r), best_r)
    return best_r


@pytest.mark.parametrize("row_chunk", [1, 5, 64, 100000])
def test_weight_clip_search_in_row_chunks_equals_the_whole_matrix_search(row_chunk):
    m = _fresh()
    unit = m.layers[0].mlp.gate_proj
    g = torch.Generator().manual_seed(1)
    d = torch.rand(unit.linear.in_features, generator=g, dtype=torch.float64) ** 4 * 10
    want = _clip_reference(unit.weight.detach().double(), d, -7, 7)
    with torch.no_grad():
        got = search_weight_clip(unit, d, row_chunk=row_chunk)
    assert torch.equal(got, want)
    assert (got < 1).any()


def _gptq_textbook(w, H, scale, qmin, qmax, block_size=128, damp=0.01):
    """GPTQ as in the paper's reference code (act order, lazy block updates, one row of W per output
    channel, temporaries everywhere); float64."""
    W = w.double().clone()
    H = H.double().clone()
    H = 0.5 * (H + H.t())
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    perm = torch.argsort(torch.diag(H), descending=True, stable=True)
    W, H = W[:, perm], H[perm][:, perm]
    H = H + damp * torch.mean(torch.diag(H)) * torch.eye(H.shape[0], dtype=H.dtype)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    s = scale.double().view(-1)
    Q = torch.zeros_like(W)
    cols = W.shape[1]
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            col = W1[:, i]
            q = torch.clamp(torch.round(col / s), qmin, qmax)
            Q[:, i1 + i] = q
            err = (col - q * s) / Hinv[i1 + i, i1 + i]
            W1[:, i + 1:] -= err[:, None] * Hinv[i1 + i, i1 + i + 1:i2][None, :]
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return Q[:, torch.argsort(perm)].float() * scale.float().view(-1, 1)


def test_gptq_equals_the_textbook_algorithm():
    """Rounding decisions equal to the plain column loop (codes may only differ where float64 rounding of
    the error propagation differs, which these sizes do not reach)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(512, 48, generator=g) @ torch.randn(48, 48, generator=g)
    w = torch.randn(40, 48, generator=g)
    acc = HessianAccumulator(48)
    acc.add(x)
    scale = (w.abs().amax(dim=1) / 7).clamp_min(1e-8)
    got = gptq_quantize(w, acc.hessian, scale, -7, 7, block_size=16)
    want = _gptq_textbook(w, acc.hessian, scale, -7, 7, block_size=16)
    codes_got, codes_want = torch.round(got / scale[:, None]), torch.round(want / scale[:, None])
    assert (codes_got != codes_want).float().mean() < 0.01
    assert torch.allclose(got, want, atol=float(scale.max()) + 1e-6)


def test_no_random_init_draws_nothing_and_restores_torch_init():
    before = (nn.init.kaiming_uniform_, nn.init.uniform_, nn.init.normal_)
    torch.manual_seed(0)
    with no_random_init():
        nn.Linear(8, 4)
        nn.Embedding(10, 4)
    drawn_after = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(3), drawn_after)                   # the RNG was not advanced
    assert (nn.init.kaiming_uniform_, nn.init.uniform_, nn.init.normal_) == before


def test_restored_model_without_random_init_equals_the_saved_one(tmp_path):
    from brevitas_models.build import build_model, restore_model
    w = tiny_weights()
    spec = tiny_spec("flexllm-w4a4")
    model = build_model(w, spec, max_positions=512)
    state = model.state_dict()
    back = restore_model(w.arch, spec, state, 512)
    for k, v in back.state_dict().items():
        assert torch.equal(v, state[k]), k
    ids = text_windows(1, 32)
    with torch.no_grad():
        assert torch.equal(back(ids)[0], model(ids)[0])


def test_packing_and_finalize_from_int8_equal_the_int64_forms():
    """pack_int4_rows / LinearParams.finalize work on the int8 codes directly; the results equal the
    int64 arithmetic they replaced (nibbles of the int64 codes, int64 row sums, max |code|)."""
    from brevitas_models.golden import LinearParams
    from brevitas_models.packing import pack_int4_rows, pack_weights

    rng = np.random.default_rng(0)
    for d_in in (1, 6, 7):
        w = rng.integers(-8, 8, (9, d_in)).astype(np.int8)
        w64 = w.astype(np.int64)
        nib = (w64 & 0xF).astype(np.uint8)
        if d_in % 2:
            nib = np.concatenate([nib, np.zeros((9, 1), np.uint8)], axis=1)
        want = nib[:, 0::2] | (nib[:, 1::2] << 4)
        assert np.array_equal(pack_int4_rows(w), want)
        assert np.array_equal(pack_int4_rows(w64), want)              # wider integer input, same bytes
        assert np.array_equal(pack_weights(w64, 8), w.view(np.uint8))
    w = rng.integers(-7, 8, (5, 33)).astype(np.int8)
    lp = LinearParams("x", w, np.ones(5, np.float32), 4).finalize("uint4_asym")
    assert np.array_equal(lp.w_rowsum, w.astype(np.int64).sum(axis=1).astype(np.int32))
    assert lp.acc_bound == 33 * 15 * int(np.abs(w.astype(np.int64)).max())
