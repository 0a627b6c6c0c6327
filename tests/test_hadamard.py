import functools
import math

import numpy as np
import pytest
import torch

from brevitas_models.hadamard import (
    fast_hadamard_transform,
    fast_hadamard_transform_np,
    hadamard_factor,
    hadamard_matrix,
    random_orthogonal,
    small_hadamard,
    sylvester_hadamard,
)

SUPPORTED_M = [1, 2, 4, 8, 12, 20, 24, 28, 36, 40, 44, 52, 56, 60, 68, 72, 76, 84, 100, 108]
DENSE_SIZES = [16, 64, 96, 160, 576, 1536, 2048]
FHT_SIZES = [16, 64, 96, 112, 160, 576, 1536, 2048]


@functools.lru_cache(maxsize=None)
def _dense(n):
    H = hadamard_matrix(n)
    H.setflags(write=False)
    return H


# ---------------------------------------------------------------- small factors


@pytest.mark.parametrize("m", SUPPORTED_M)
def test_small_hadamard_is_hadamard(m):
    H = small_hadamard(m)
    assert H.shape == (m, m)
    assert np.issubdtype(H.dtype, np.integer)
    assert set(np.unique(H).tolist()) <= {-1, 1}
    Hi = H.astype(np.int64)
    np.testing.assert_array_equal(Hi @ Hi.T, m * np.eye(m, dtype=np.int64))


def test_small_hadamard_cached_and_readonly():
    a = small_hadamard(36)
    assert a is small_hadamard(36)
    with pytest.raises(ValueError):
        a[0, 0] = -a[0, 0]


@pytest.mark.parametrize("m", [3, 6, 10, 92, 116])
def test_small_hadamard_unsupported(m):
    with pytest.raises(ValueError, match=str(m)):
        small_hadamard(m)


# ---------------------------------------------------------------- factorization


@pytest.mark.parametrize(
    "n, expected",
    [
        (16, (1, 16)),
        (64, (1, 64)),
        (2048, (1, 2048)),
        (8192, (1, 8192)),
        (96, (12, 8)),
        (160, (20, 8)),
        (576, (36, 16)),
        (1536, (12, 128)),
        (112, (28, 4)),  # 7 * 16: odd part 7 -> m = 28 (Paley I over GF(27))
        (208, (52, 4)),  # 13 * 16: m = 52 (Paley II over GF(25))
        (1, (1, 1)),
        (2, (1, 2)),
    ],
)
def test_hadamard_factor(n, expected):
    assert hadamard_factor(n) == expected


@pytest.mark.parametrize("n", [3, 6, 7, 92, 184, 0, -16])
def test_hadamard_factor_unsupported_mentions_n(n):
    with pytest.raises(ValueError, match=rf"n={n}\b"):
        hadamard_factor(n)


# ---------------------------------------------------------------- dense matrices


@pytest.mark.parametrize("n", DENSE_SIZES)
def test_hadamard_matrix_orthonormal(n):
    H = hadamard_matrix(n)
    assert H.shape == (n, n) and H.dtype == np.float64
    np.testing.assert_allclose(H @ H.T, np.eye(n), atol=1e-12)
    np.testing.assert_allclose(np.abs(H), 1 / math.sqrt(n), rtol=1e-14)


def test_hadamard_matrix_kron_order_and_dtype():
    H = hadamard_matrix(96, dtype=np.float32)
    assert H.dtype == np.float32
    ref = np.kron(small_hadamard(12).astype(np.float64), sylvester_hadamard(8).astype(np.float64))
    np.testing.assert_allclose(H, ref / math.sqrt(96), rtol=1e-7)
    # Sylvester entries (-1)^popcount(b & d).
    P = sylvester_hadamard(16)
    b, d = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
    pop = np.vectorize(lambda v: bin(v).count("1"))(b & d)
    np.testing.assert_array_equal(P, (-1) ** pop)


def test_8192_via_fht():
    n = 8192
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, n))
    y = fast_hadamard_transform_np(x)
    # Orthonormal: Gram matrix preserved.
    np.testing.assert_allclose(y @ y.T, x @ x.T, rtol=1e-10, atol=1e-9)
    # Columns of H from unit vectors match the Sylvester formula.
    cols = [0, 1, 777, 8191]
    E = np.zeros((len(cols), n))
    E[np.arange(len(cols)), cols] = 1.0
    HE = fast_hadamard_transform_np(E)  # row r = H[:, cols[r]]
    i = np.arange(n)
    for r, j in enumerate(cols):
        pop = np.array([bin(v).count("1") for v in (i & j)])
        np.testing.assert_allclose(HE[r], (-1.0) ** pop / math.sqrt(n), rtol=1e-14)
    # Involution for powers of two.
    np.testing.assert_allclose(fast_hadamard_transform_np(y), x, atol=1e-12)


# ---------------------------------------------------------------- fast transform


def _rel_err(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


@pytest.mark.parametrize("n", FHT_SIZES)
@pytest.mark.parametrize("batch", [(), (3,), (2, 5)])
def test_fht_matches_dense(n, batch):
    H = _dense(n)
    rng = np.random.default_rng(n + len(batch))
    x64 = rng.standard_normal(batch + (n,))
    ref = x64 @ H.T

    y = fast_hadamard_transform(torch.from_numpy(x64))
    assert y.dtype == torch.float64 and y.shape == x64.shape
    np.testing.assert_allclose(y.numpy(), ref, rtol=0, atol=1e-12 * max(1.0, np.abs(ref).max()))
    assert _rel_err(y.numpy(), ref) < 1e-12
    y_np = fast_hadamard_transform_np(x64)
    assert y_np.dtype == np.float64
    assert _rel_err(y_np, ref) < 1e-12

    x32 = x64.astype(np.float32)
    ref32 = x32.astype(np.float64) @ H.T
    y32 = fast_hadamard_transform(torch.from_numpy(x32))
    assert y32.dtype == torch.float32
    assert _rel_err(y32.numpy(), ref32) < 1e-5
    y32_np = fast_hadamard_transform_np(x32)
    assert y32_np.dtype == np.float32
    assert _rel_err(y32_np, ref32) < 1e-5
    # Same operation order in torch and numpy -> bit-identical float32 results.
    np.testing.assert_array_equal(y32.numpy(), y32_np)


def _reference_fht_scalar(x, dtype):
    """Scalar loop implementing the documented operation order (what a C++ port does)."""
    n = len(x)
    m, p = hadamard_factor(n)
    X = [[dtype(x[c * p + d]) for d in range(p)] for c in range(m)]
    h = 1
    while h < p:
        for c in range(m):
            for d in range(p):
                if d & h == 0:
                    u, v = X[c][d], X[c][d + h]
                    X[c][d], X[c][d + h] = dtype(u + v), dtype(u - v)
        h *= 2
    if m > 1:
        s = small_hadamard(m)
        Y = [[None] * p for _ in range(m)]
        for a in range(m):
            for d in range(p):
                acc = X[0][d] if s[a, 0] > 0 else -X[0][d]
                for c in range(1, m):
                    acc = dtype(acc + X[c][d]) if s[a, c] > 0 else dtype(acc - X[c][d])
                Y[a][d] = acc
        X = Y
    scale = dtype(1.0 / math.sqrt(n))
    return np.array([dtype(X[c][d] * scale) for c in range(m) for d in range(p)], dtype=dtype)


@pytest.mark.parametrize("n", [16, 96, 160])
def test_fht_bit_exact_documented_order(n):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(n).astype(np.float32)
    ref = _reference_fht_scalar(x, np.float32)
    np.testing.assert_array_equal(fast_hadamard_transform_np(x), ref)
    np.testing.assert_array_equal(fast_hadamard_transform(torch.from_numpy(x)).numpy(), ref)


@pytest.mark.parametrize("n", [64, 96, 576, 1536])
def test_fht_inverse(n):
    H = _dense(n)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, n))
    y = fast_hadamard_transform(torch.from_numpy(x)).numpy()
    # y = x @ H.T  =>  x = y @ H
    np.testing.assert_allclose(y @ H, x, atol=1e-12)
    # Transforming with H.T (dense) also undoes it: (x @ H) is the inverse transform.
    np.testing.assert_allclose(fast_hadamard_transform_np(x @ H), x, atol=1e-12)
    if hadamard_factor(n)[0] == 1:  # symmetric Sylvester -> involution
        np.testing.assert_allclose(fast_hadamard_transform_np(y), x, atol=1e-12)


def test_fht_noncontiguous_and_errors():
    x = torch.randn(96, 5, dtype=torch.float64).T  # non-contiguous (5, 96)
    np.testing.assert_allclose(
        fast_hadamard_transform(x).numpy(), x.numpy() @ hadamard_matrix(96).T, atol=1e-12
    )
    with pytest.raises(TypeError):
        fast_hadamard_transform(torch.ones(16, dtype=torch.int32))
    with pytest.raises(TypeError):
        fast_hadamard_transform_np(np.ones(16, dtype=np.int64))
    with pytest.raises(ValueError, match="n=92"):
        fast_hadamard_transform(torch.zeros(2, 92))
    with pytest.raises(ValueError, match="n=3"):
        fast_hadamard_transform_np(np.zeros(3))


# ---------------------------------------------------------------- random orthogonal


def test_random_orthogonal():
    Q = random_orthogonal(64, seed=3)
    assert Q.shape == (64, 64) and Q.dtype == np.float64
    np.testing.assert_allclose(Q @ Q.T, np.eye(64), atol=1e-12)
    np.testing.assert_array_equal(Q, random_orthogonal(64, seed=3))
    assert not np.allclose(Q, random_orthogonal(64, seed=4))


@pytest.mark.parametrize("n", [64, 256, 2048])
def test_fast_rotation_equals_dense_product(n):
    """Power-of-two rotations use the fast transform; they equal the dense products to float64 rounding."""
    import torch

    from brevitas_models.rotation import Rotation

    rot = Rotation.hadamard(n)
    assert rot.fast
    h = torch.from_numpy(hadamard_matrix(n).astype(np.float64))
    w = torch.from_numpy(np.random.default_rng(n).standard_normal((37, n)))
    wt = torch.from_numpy(np.random.default_rng(n + 1).standard_normal((n, 5)))
    assert torch.allclose(rot.right(w), w @ h, rtol=0, atol=1e-12)
    assert torch.allclose(rot.right_t(w), w @ h.T, rtol=0, atol=1e-12)
    assert torch.allclose(rot.left_t(wt), h.T @ wt, rtol=0, atol=1e-12)
    assert not Rotation.hadamard(96).fast          # 12 * 8: dense, rotated weights unchanged
