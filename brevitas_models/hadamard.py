"""Hadamard rotations for LLM quantization (SpinQuant / QuaRot style).

Sizes that occur in practice are powers of two (16, 64, 2048, 8192) and
``m * 2^k`` with a small non-power-of-two Hadamard order ``m`` (576 = 36*16,
1536 = 12*128, 96 = 12*8, 160 = 20*8).

Conventions
-----------
* ``hadamard_factor(n) -> (m, p)`` with ``n = m * p``, ``p = 2^k`` as large as
  possible such that a Hadamard matrix of order ``m`` can be constructed here.
* ``hadamard_matrix(n) = kron(small_hadamard(m), sylvester(p)) / sqrt(n)``.
  Kronecker order: the **small factor is the outer (slow) index**, the
  power-of-two factor the inner (fast) index, i.e. for row/column indices
  ``i = a*p + b`` and ``j = c*p + d`` (``a, c < m``; ``b, d < p``)::

      H[i, j] = Hm[a, c] * Hp[b, d] / sqrt(n),   Hp[b, d] = (-1)^popcount(b & d)

  ``Hp`` (Sylvester, natural/Hadamard ordering) is symmetric; ``Hm`` in general
  is not, so ``H`` is orthonormal but not necessarily symmetric.
* ``fast_hadamard_transform(x)`` computes ``x @ hadamard_matrix(n).T`` along the
  last dimension (see its docstring for the exact float operation order).

Supported small orders ``m`` (``small_hadamard``) are built, not tabulated:

* 1, 2, 4: Sylvester;
* Paley I:  ``m = q + 1`` for a prime power ``q = 3 (mod 4)``
  (4, 8, 12, 20, 24, 28, 32, 44, 48, 60, 68, 72, 80, 84, 104, 108, ...);
* Paley II: ``m = 2(q + 1)`` for a prime power ``q = 1 (mod 4)``
  (12, 20, 28, 36, 52, 60, 76, 84, 100, 108, ...);
* Sylvester doubling: ``m = 2 m'`` for a supported ``m'`` (40, 56, 88, ...).

Prime powers ``q = p^e`` with ``e > 1`` (9, 25, 27, 49, 81, 121, ...) use
``GF(p^e)`` arithmetic with a brute-force-found monic irreducible polynomial.
Orders that need other constructions (e.g. 92, 116, 156, 172 -> Williamson
type) are not supported.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

__all__ = [
    "hadamard_factor",
    "small_hadamard",
    "sylvester_hadamard",
    "hadamard_matrix",
    "fast_hadamard_transform",
    "fast_hadamard_transform_np",
    "random_orthogonal",
]


# ----------------------------------------------------------------------------
# finite fields (only what the Paley constructions need)
# ----------------------------------------------------------------------------


def _prime_power(q: int) -> tuple[int, int] | None:
    """Return ``(p, e)`` with ``q == p**e`` and ``p`` prime, else ``None``."""
    if q < 2:
        return None
    p = next((d for d in range(2, math.isqrt(q) + 1) if q % d == 0), q)
    e = 0
    while q % p == 0:
        q //= p
        e += 1
    return (p, e) if q == 1 else None


def _poly_mulmod(a: tuple[int, ...], b: tuple[int, ...], mod: tuple[int, ...], p: int) -> tuple[int, ...]:
    """Multiply polynomials ``a*b mod (mod, p)``; coefficients low degree first, ``mod`` monic."""
    e = len(mod) - 1
    prod = [0] * (2 * e - 1)
    for i, ai in enumerate(a):
        if ai:
            for j, bj in enumerate(b):
                prod[i + j] = (prod[i + j] + ai * bj) % p
    for d in range(len(prod) - 1, e - 1, -1):  # reduce top-down
        c = prod[d]
        if c:
            for t in range(e + 1):
                prod[d - e + t] = (prod[d - e + t] - c * mod[t]) % p
    return tuple(prod[:e])


def _irreducible_poly(p: int, e: int) -> tuple[int, ...]:
    """Smallest (lexicographic) monic irreducible polynomial of degree ``e`` over GF(p)."""
    import itertools

    def has_small_factor(poly: tuple[int, ...]) -> bool:
        # Degree-e polynomial is reducible iff it has a monic factor of degree <= e // 2.
        for d in range(1, e // 2 + 1):
            for low in itertools.product(range(p), repeat=d):
                div = list(low) + [1]
                rem = list(poly)
                for top in range(len(rem) - 1, d - 1, -1):
                    c = rem[top]
                    if c:
                        for t in range(d + 1):
                            rem[top - d + t] = (rem[top - d + t] - c * div[t]) % p
                if not any(rem[:d]):
                    return True
        return False

    for low in itertools.product(range(p), repeat=e):
        poly = tuple(low) + (1,)
        if low[0] != 0 and not has_small_factor(poly):
            return poly
    raise AssertionError(f"no irreducible polynomial of degree {e} over GF({p})")  # pragma: no cover


def _quadratic_character_table(q: int) -> np.ndarray:
    """``chi[i, j] = chi(a_i - a_j)`` over GF(q) for some fixed enumeration ``a_0..a_{q-1}``.

    ``chi(0) = 0``, ``chi(square) = 1``, ``chi(non-square) = -1``.
    """
    pe = _prime_power(q)
    if pe is None:
        raise ValueError(f"{q} is not a prime power")
    p, e = pe
    if e == 1:
        elems = np.arange(q)
        squares = np.zeros(q, dtype=bool)
        squares[(elems[1:] ** 2) % q] = True
        chi = np.where(squares, 1, -1).astype(np.int8)
        chi[0] = 0
        diff = (elems[:, None] - elems[None, :]) % q
        return chi[diff]
    # GF(p^e): element index = sum c_t p^t for coefficient vector (c_0..c_{e-1}).
    mod = _irreducible_poly(p, e)
    coeffs = [tuple((i // p**t) % p for t in range(e)) for i in range(q)]
    index = {c: i for i, c in enumerate(coeffs)}
    chi = np.full(q, -1, dtype=np.int8)
    chi[0] = 0
    for c in coeffs[1:]:
        chi[index[_poly_mulmod(c, c, mod, p)]] = 1
    cvec = np.array(coeffs, dtype=np.int64)  # (q, e)
    diff = (cvec[:, None, :] - cvec[None, :, :]) % p  # (q, q, e)
    diff_idx = (diff * (p ** np.arange(e))).sum(-1)
    return chi[diff_idx]


def _paley1(q: int) -> np.ndarray:
    """Paley construction I, order q+1 (q = 3 mod 4): H = I + [[0, 1^T], [-1, Q]]."""
    Q = _quadratic_character_table(q).astype(np.int64)
    S = np.zeros((q + 1, q + 1), dtype=np.int64)
    S[0, 1:] = 1
    S[1:, 0] = -1
    S[1:, 1:] = Q
    return (np.eye(q + 1, dtype=np.int64) + S).astype(np.int8)


def _paley2(q: int) -> np.ndarray:
    """Paley construction II, order 2(q+1) (q = 1 mod 4).

    C = [[0, 1^T], [1, Q]] (symmetric conference matrix); each 0 entry becomes
    [[1, -1], [-1, -1]] and each +-1 entry becomes +-[[1, 1], [1, -1]].
    """
    Q = _quadratic_character_table(q).astype(np.int64)
    C = np.zeros((q + 1, q + 1), dtype=np.int64)
    C[0, 1:] = 1
    C[1:, 0] = 1
    C[1:, 1:] = Q
    zero_blk = np.array([[1, -1], [-1, -1]], dtype=np.int64)
    pm_blk = np.array([[1, 1], [1, -1]], dtype=np.int64)
    H = np.kron(C, pm_blk) + np.kron((C == 0).astype(np.int64), zero_blk)
    return H.astype(np.int8)


_H2 = np.array([[1, 1], [1, -1]], dtype=np.int8)


def _construct(m: int) -> np.ndarray | None:
    if m == 1:
        return np.ones((1, 1), dtype=np.int8)
    if m == 2:
        return _H2.copy()
    if m % 4:
        return None
    q = m - 1
    pe = _prime_power(q)
    if pe is not None and q % 4 == 3:
        return _paley1(q)
    q = m // 2 - 1
    pe = _prime_power(q)
    if pe is not None and q % 4 == 1:
        return _paley2(q)
    half = _construct_cached(m // 2)
    if half is not None:
        return np.kron(_H2, half).astype(np.int8)
    return None


@functools.lru_cache(maxsize=None)
def _construct_cached(m: int) -> np.ndarray | None:
    H = _construct(m)
    if H is not None:
        H.setflags(write=False)
    return H


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


@functools.lru_cache(maxsize=None)
def small_hadamard(m: int) -> np.ndarray:
    """Hadamard matrix of order ``m`` (int8, entries +-1, ``H @ H.T == m * I``).

    Powers of two use Sylvester (``kron(H2, ..., H2)``, natural ordering).  Other
    orders try, in this order: Paley I (``m - 1`` prime power = 3 mod 4), Paley II
    (``m/2 - 1`` prime power = 1 mod 4), Sylvester doubling ``kron(H2, H(m/2))``.
    The result is cached and read-only.  Raises ``ValueError`` if ``m`` is not
    constructible here.
    """
    m = int(m)
    if m < 1:
        raise ValueError(f"Hadamard order must be positive, got m={m}")
    if _is_power_of_two(m):
        H = sylvester_hadamard(m).astype(np.int8)
        H.setflags(write=False)
        return H
    H = _construct_cached(m)
    if H is None:
        raise ValueError(
            f"no Hadamard matrix construction available for order m={m} "
            "(supported: 1, 2, Paley I q+1 with prime power q=3 mod 4, Paley II 2(q+1) "
            "with prime power q=1 mod 4, and doublings of these)"
        )
    return H


def _supported_small(m: int) -> bool:
    if _is_power_of_two(m):
        return True
    return _construct_cached(m) is not None


def sylvester_hadamard(p: int) -> np.ndarray:
    """Unnormalized Sylvester Hadamard matrix of order ``p = 2^k`` (int8, not cached).

    ``H[b, d] = (-1)^popcount(b & d)`` = ``kron(H2, ..., H2)`` (natural ordering, symmetric).
    """
    if not _is_power_of_two(p):
        raise ValueError(f"Sylvester Hadamard order must be a power of two, got {p}")
    H = np.ones((1, 1), dtype=np.int8)
    while H.shape[0] < p:
        H = np.block([[H, H], [H, -H]])
    return H


# ----------------------------------------------------------------------------
# factorization and dense matrices
# ----------------------------------------------------------------------------


def hadamard_factor(n: int) -> tuple[int, int]:
    """Split ``n = m * 2^k`` with ``2^k`` as large as possible and ``m`` constructible.

    Returns ``(m, 2^k)``.  Powers of two give ``(1, n)``.  Examples:
    ``576 -> (36, 16)``, ``1536 -> (12, 128)``, ``96 -> (12, 8)``, ``160 -> (20, 8)``,
    ``112 -> (28, 4)``.  Raises ``ValueError`` (message contains ``n``) when no
    split works, e.g. ``n = 3``, ``6``, ``92``, ``184 = 92 * 2``.
    """
    n_int = int(n)
    if n_int != n or n_int < 1:
        raise ValueError(f"Hadamard size must be a positive integer, got n={n}")
    n = n_int
    k = (n & -n).bit_length() - 1  # 2-adic valuation
    for kk in range(k, -1, -1):
        m = n >> kk
        if _supported_small(m):
            return m, 1 << kk
    raise ValueError(
        f"no Hadamard matrix available for n={n}: odd part {n >> k} times any power of two "
        f"<= {1 << k} is not a constructible Hadamard order"
    )


def hadamard_matrix(n: int, dtype=np.float64) -> np.ndarray:
    """Orthonormal Hadamard matrix ``kron(small_hadamard(m), sylvester(2^k)) / sqrt(n)``.

    Kronecker order: the small order-``m`` factor is the outer (slow) index, the
    Sylvester ``2^k`` factor the inner (fast) index (``(m, 2^k) = hadamard_factor(n)``).
    ``H @ H.T == I``.  Returns a fresh array of ``dtype``.
    """
    m, p = hadamard_factor(n)
    Hm = small_hadamard(m).astype(np.float64)
    Hp = sylvester_hadamard(p).astype(np.float64)
    H = np.kron(Hm, Hp) if m > 1 else Hp
    H *= 1.0 / math.sqrt(n)
    return H.astype(dtype, copy=False)


# ----------------------------------------------------------------------------
# fast transform
# ----------------------------------------------------------------------------

_FHT_DOC = """
    Operation order (identical in the torch and numpy versions, so a C++ port
    doing the same float operations in the same order reproduces results
    bit-exactly in float32).  With ``(m, p) = hadamard_factor(n)`` and each row
    ``x`` (length ``n``) viewed as ``X[c, d] = x[c*p + d]`` (``c < m``, ``d < p``):

    1. FWHT over the inner ``p = 2^k`` index of every block row ``X[c, :]``,
       unnormalized, ``k`` stages with half-width ``h = 1, 2, 4, ..., p/2``
       (ascending).  In stage ``h``, for every ``d`` with ``d & h == 0``, the pair
       ``(d, d + h)`` is replaced simultaneously by::

           u = X[c, d];  v = X[c, d + h]
           X[c, d]     = u + v
           X[c, d + h] = u - v

    2. Small-factor mix (skipped if ``m == 1``), exact +-1 signs, sequential
       accumulation over ``c`` in ascending order::

           Y[a, d] = s(a, 0) * X[0, d]
           for c in 1 .. m-1:  Y[a, d] = Y[a, d] + s(a, c) * X[c, d]

       with ``s = small_hadamard(m)`` (multiplication by +-1 is exact, i.e. it
       is ``Y += X`` or ``Y -= X``).  This gives ``Y = Hm @ X``.

    3. Scale: ``y = Y * scale`` with ``scale = float(1 / sqrt(n))`` rounded once
       (from double) to the working dtype.

    Result: ``y = x @ hadamard_matrix(n).T`` (i.e. ``y = H x`` per row),
    ``y[a*p + b] = sum_{c,d} Hm[a,c] Hp[b,d] x[c*p + d] / sqrt(n)``.
    The inverse is ``x = y @ H`` (``H`` orthonormal); for ``m == 1`` ``H`` is
    symmetric, so the transform is an involution.
"""


def fast_hadamard_transform(x: torch.Tensor) -> torch.Tensor:
    """``x @ hadamard_matrix(n).T`` along the last dim in O(n log n + n m), any batch dims.

    Works for floating dtypes (float32 / float64 / half types); computed in
    ``x.dtype`` on ``x.device``.  Raises ``ValueError`` if ``n`` is unsupported
    and ``TypeError`` for non-floating input.
    """
    if not torch.is_floating_point(x):
        raise TypeError(f"fast_hadamard_transform needs a floating tensor, got {x.dtype}")
    n = x.shape[-1]
    m, p = hadamard_factor(n)
    batch = x.shape[:-1]
    X = x.reshape(-1, m, p)
    h = 1
    while h < p:
        Xv = X.reshape(X.shape[0], m, p // (2 * h), 2, h)
        u = Xv[..., 0, :]
        v = Xv[..., 1, :]
        X = torch.stack((u + v, u - v), dim=-2).reshape(X.shape[0], m, p)
        h *= 2
    if m > 1:
        s = torch.from_numpy(small_hadamard(m).astype(np.int64)).to(device=x.device, dtype=x.dtype)
        # s: (m_out, m_in); Y[:, a, :] accumulates s[a, c] * X[:, c, :] for c ascending.
        Y = s[:, 0:1] * X[:, 0:1, :]
        for c in range(1, m):
            Y = Y + s[:, c : c + 1] * X[:, c : c + 1, :]
        X = Y
    scale = torch.tensor(1.0 / math.sqrt(n), dtype=torch.float64).to(x.dtype)
    X = X * scale.to(x.device)
    return X.reshape(*batch, n)


def fast_hadamard_transform_np(x: np.ndarray) -> np.ndarray:
    """Numpy twin of :func:`fast_hadamard_transform` (same semantics, same op order).

    Computed in ``x.dtype`` (must be floating); returns a new array.
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"fast_hadamard_transform_np needs a floating array, got {x.dtype}")
    dt = x.dtype
    n = x.shape[-1]
    m, p = hadamard_factor(n)
    batch = x.shape[:-1]
    X = x.reshape(-1, m, p).copy()
    h = 1
    while h < p:
        Xv = X.reshape(X.shape[0], m, p // (2 * h), 2, h)
        u = Xv[..., 0, :]
        v = Xv[..., 1, :]
        X = np.stack((u + v, u - v), axis=-2).reshape(X.shape[0], m, p)
        h *= 2
    if m > 1:
        s = small_hadamard(m).astype(dt)
        Y = s[:, 0:1] * X[:, 0:1, :]
        for c in range(1, m):
            Y = Y + s[:, c : c + 1] * X[:, c : c + 1, :]
        X = Y
    X = X * np.asarray(1.0 / math.sqrt(n), dtype=np.float64).astype(dt)
    assert X.dtype == dt
    return X.reshape(*batch, n)


fast_hadamard_transform.__doc__ += _FHT_DOC
fast_hadamard_transform_np.__doc__ += _FHT_DOC


# ----------------------------------------------------------------------------
# random orthogonal
# ----------------------------------------------------------------------------


def random_orthogonal(n: int, seed: int) -> np.ndarray:
    """Seeded random orthogonal ``n x n`` matrix (float64), for offline rotations only.

    ``Q, R = qr(G)`` of a standard Gaussian ``G`` drawn with
    ``np.random.default_rng(seed)``; columns of ``Q`` are multiplied by
    ``sign(diag(R))`` (0 -> +1) so the result is Haar-distributed and unique.
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"random_orthogonal needs n >= 1, got n={n}")
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((n, n))
    Q, R = np.linalg.qr(G)
    d = np.sign(np.diag(R))
    d[d == 0] = 1.0
    return Q * d[None, :]
