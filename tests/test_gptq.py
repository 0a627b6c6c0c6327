import pytest
import torch

import numpy as np

from brevitas_models.gptq import (CrossCovarianceAccumulator, HessianAccumulator, asymmetric_target,
                                gptq_quantize, rtn_quantize)

QMIN, QMAX = -8, 7  # 4-bit signed


def _max_scale(w: torch.Tensor, qmax: int = QMAX) -> torch.Tensor:
    return (w.abs().amax(dim=1) / qmax).clamp_min(1e-8)


def _on_grid(out: torch.Tensor, scale: torch.Tensor, qmin: int, qmax: int) -> bool:
    s = scale.reshape(-1, 1).to(torch.float32)
    q = torch.round(out / s)
    return (
        out.dtype == torch.float32
        and bool(torch.all(q >= qmin))
        and bool(torch.all(q <= qmax))
        and torch.equal(out, q.clamp(qmin, qmax) * s)
    )


def _correlated_problem(seed: int = 0, n: int = 2048, out_f: int = 64, in_f: int = 128):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, in_f, generator=g)
    A = torch.randn(in_f, in_f, generator=g) / in_f**0.5
    # Add a strong low-rank component -> strongly correlated input features.
    u = torch.randn(in_f, 8, generator=g)
    A = A + u @ torch.randn(8, in_f, generator=g)
    x = z @ A
    w = torch.randn(out_f, in_f, generator=g)
    return x, w


def test_hessian_accumulator_matches_direct():
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(3, 5, 16, generator=g)
    x2 = torch.randn(7, 16, generator=g)
    acc = HessianAccumulator(16)
    acc.add(x1)
    acc.add(x2)
    X = torch.cat([x1.reshape(-1, 16), x2]).double()
    assert acc.nsamples == 22
    H = acc.hessian
    assert H.dtype == torch.float64 and H.shape == (16, 16)
    assert torch.allclose(H, 2.0 / X.shape[0] * X.t() @ X, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError):
        acc.add(torch.randn(4, 15))


@pytest.mark.parametrize("act_order", [True, False])
@pytest.mark.parametrize("qmin,qmax", [(-8, 7), (-127, 127), (-2, 1)])
def test_output_on_integer_grid(act_order, qmin, qmax):
    x, w = _correlated_problem(seed=2, n=512, out_f=24, in_f=40)
    acc = HessianAccumulator(40)
    acc.add(x)
    scale = _max_scale(w, qmax) * 0.7  # force some clipping
    out = gptq_quantize(w, acc.hessian, scale, qmin, qmax, block_size=16, act_order=act_order)
    assert out.shape == w.shape
    assert _on_grid(out, scale, qmin, qmax)
    # [out, 1]-shaped scale gives the same result
    out2 = gptq_quantize(w, acc.hessian, scale.reshape(-1, 1), qmin, qmax, block_size=16,
                         act_order=act_order)
    assert torch.equal(out, out2)
    rtn = rtn_quantize(w, scale, qmin, qmax)
    assert _on_grid(rtn, scale, qmin, qmax)


@pytest.mark.parametrize("act_order", [True, False])
def test_gptq_beats_rtn_on_correlated_inputs(act_order):
    x, w = _correlated_problem(seed=0)
    acc = HessianAccumulator(w.shape[1])
    for chunk in x.split(256):
        acc.add(chunk)
    scale = _max_scale(w)
    q_gptq = gptq_quantize(w, acc.hessian, scale, QMIN, QMAX, block_size=32, act_order=act_order)
    q_rtn = rtn_quantize(w, scale, QMIN, QMAX)

    X = x.double()
    ref = X @ w.double().t()
    err_gptq = torch.linalg.norm(X @ q_gptq.double().t() - ref).item()
    err_rtn = torch.linalg.norm(X @ q_rtn.double().t() - ref).item()
    assert err_gptq < 0.8 * err_rtn, (err_gptq, err_rtn)


def test_block_size_does_not_change_result_much():
    x, w = _correlated_problem(seed=3, n=1024, out_f=16, in_f=64)
    acc = HessianAccumulator(64)
    acc.add(x)
    scale = _max_scale(w)
    a = gptq_quantize(w, acc.hessian, scale, QMIN, QMAX, block_size=7)
    b = gptq_quantize(w, acc.hessian, scale, QMIN, QMAX, block_size=128)
    # Lazy batching is mathematically equivalent; only float64 round-off may differ.
    assert (a != b).float().mean().item() < 0.01


@pytest.mark.parametrize("block_size", [5, 128])
def test_identity_hessian_equals_rtn(block_size):
    g = torch.Generator().manual_seed(4)
    w = torch.randn(32, 48, generator=g)
    scale = _max_scale(w) * 0.8
    H = torch.eye(48, dtype=torch.float64)
    out = gptq_quantize(w, H, scale, QMIN, QMAX, block_size=block_size, act_order=False)
    assert torch.equal(out, rtn_quantize(w, scale, QMIN, QMAX))


def test_dead_input_columns():
    x, w = _correlated_problem(seed=5, n=512, out_f=16, in_f=32)
    dead = [0, 7, 31]
    x[:, dead] = 0.0
    acc = HessianAccumulator(32)
    acc.add(x)
    assert torch.all(torch.diag(acc.hessian)[dead] == 0)
    scale = _max_scale(w)
    for act_order in (True, False):
        out = gptq_quantize(w, acc.hessian, scale, QMIN, QMAX, block_size=8, act_order=act_order)
        assert torch.all(torch.isfinite(out))
        assert torch.all(out[:, dead] == 0)
        assert _on_grid(out, scale, QMIN, QMAX)


def test_all_zero_hessian_is_finite():
    w = torch.randn(4, 8)
    out = gptq_quantize(w, torch.zeros(8, 8), _max_scale(w), QMIN, QMAX)
    assert torch.all(torch.isfinite(out))
    assert torch.all(out == 0)


def test_input_validation():
    w = torch.randn(4, 8)
    H = torch.eye(8)
    with pytest.raises(ValueError):
        gptq_quantize(w, H, -torch.ones(4), QMIN, QMAX)
    with pytest.raises(ValueError):
        gptq_quantize(w, H, torch.ones(3), QMIN, QMAX)
    with pytest.raises(ValueError):
        gptq_quantize(w, torch.eye(7), torch.ones(4), QMIN, QMAX)
    with pytest.raises(ValueError):
        gptq_quantize(w, H, torch.ones(4), 3, -3)


def test_row_chunks_do_not_change_the_result():
    """Output channels are independent given the Hessian: any row chunking gives the same codes."""
    torch.manual_seed(5)
    X = torch.randn(256, 48, dtype=torch.float64) @ torch.randn(48, 48, dtype=torch.float64)
    acc = HessianAccumulator(48)
    acc.add(X)
    w = torch.randn(37, 48)
    scale = w.abs().amax(1) / 7
    whole = gptq_quantize(w, acc.hessian, scale, -7, 7, block_size=16, row_chunk=1000)
    for chunk in (1, 5, 36):
        assert torch.equal(gptq_quantize(w, acc.hessian, scale, -7, 7, block_size=16, row_chunk=chunk), whole)
    # and a stacked group equals its members quantized one by one (calibration stacks q/k/v, gate/up)
    top = gptq_quantize(w[:20], acc.hessian, scale[:20], -7, 7, block_size=16)
    assert torch.equal(whole[:20], top)


def _uint4_per_token(x: torch.Tensor) -> torch.Tensor:
    """Asymmetric 4-bit per-row fake quantization (the layer-input quantizer the asymmetric target is for)."""
    lo, hi = x.amin(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)
    s = ((hi - lo) / 15).clamp_min(1e-8)
    z = torch.round(-lo / s)
    return (torch.clamp(torch.round(x / s) + z, 0, 15) - z) * s


def test_cross_covariance_accumulator_matches_direct():
    x, _ = _correlated_problem(seed=3, n=600, in_f=24)
    xq = _uint4_per_token(x)
    acc = CrossCovarianceAccumulator(24)
    for a, b in zip(xq.split(128), x.split(128)):
        acc.add(a, b)
    X, XQ = x.double().numpy(), xq.double().numpy()
    np.testing.assert_allclose(acc.hessian.numpy(), 2 / len(X) * XQ.T @ XQ, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(acc.cross.numpy(), 2 / len(X) * XQ.T @ X, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="differ in shape"):
        acc.add(xq[:5], x[:4])


def test_asymmetric_target_is_the_ridge_least_squares_solution():
    """W* against numpy's least squares of the stacked system [Xq; sqrt(lam) I] V^T = [X W^T; sqrt(lam) W^T]."""
    x, w = _correlated_problem(seed=4, n=900, out_f=12, in_f=32)
    xq = _uint4_per_token(x)
    acc = CrossCovarianceAccumulator(32)
    acc.add(xq, x)
    damp = 0.01
    got = asymmetric_target(w, acc.hessian, acc.cross, damp=damp).numpy()
    X, XQ, W = x.double().numpy(), xq.double().numpy(), w.double().numpy()
    scale = 2 / len(X)                                  # H and A are 2/N-normalised; lam is relative to H
    lam = damp * np.mean(np.diag(scale * XQ.T @ XQ)) / scale
    lhs = np.vstack([XQ, np.sqrt(lam) * np.eye(32)])
    rhs = np.vstack([X @ W.T, np.sqrt(lam) * W.T])
    want = np.linalg.lstsq(lhs, rhs, rcond=None)[0].T
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-9)


def test_gptq_of_the_asymmetric_target_lowers_the_asymmetric_error():
    """GPTQ of W* under Hq has a lower ||X W^T - Xq Wq^T|| than GPTQ of W (the plain target), on a grid
    that covers both."""
    x, w = _correlated_problem(seed=5)
    xq = _uint4_per_token(x)
    acc = CrossCovarianceAccumulator(w.shape[1])
    for a, b in zip(xq.split(256), x.split(256)):
        acc.add(a, b)
    target = asymmetric_target(w, acc.hessian, acc.cross).float()
    scale = torch.maximum(_max_scale(w), _max_scale(target))
    plain = gptq_quantize(w, acc.hessian, scale, QMIN, QMAX)
    asym = gptq_quantize(target, acc.hessian, scale, QMIN, QMAX)
    ref = x.double() @ w.double().t()
    err = {name: torch.linalg.norm(xq.double() @ q.double().t() - ref).item()
           for name, q in (("plain", plain), ("asym", asym))}
    assert err["asym"] < 0.9 * err["plain"], err
