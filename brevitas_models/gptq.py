"""CPU implementation of GPTQ (Frantar et al., 2022) with fixed per-output-channel scales.

GPTQ rounds the weights of a linear layer one input column at a time and
redistributes the rounding error of each column onto the not-yet-quantized
columns, using the inverse of the layer-input Hessian ``H = 2/N * sum x x^T``.
This gives a much lower output error ``||X W_q^T - X W^T||`` than plain
round-to-nearest (RTN) when the layer inputs are correlated.

Here the quantization grid is fixed in advance: every output channel ``j`` has a
positive scale ``scale[j]`` and the quantized weights are ``scale[j] * q`` with
integer ``q`` in ``[qmin, qmax]`` (symmetric integer quantization when
``qmin = -qmax`` or ``qmin = -qmax - 1``).  Only the rounding is optimized.

All internal computation is done in float64; the returned weight is float32 and
computed as ``q_int.float32 * scale.float32`` so that it lies exactly on the
float32 grid.
"""

from __future__ import annotations

import torch

__all__ = ["HessianAccumulator", "CrossCovarianceAccumulator", "asymmetric_target", "gptq_quantize",
           "rtn_quantize"]


class HessianAccumulator:
    """Accumulates ``H = 2/N * sum x x^T`` over calibration inputs of one linear layer.

    The running average is kept in float64.  Every row of the flattened input
    (all leading dimensions collapsed, i.e. every token) counts as one sample.
    """

    def __init__(self, in_features: int):
        if int(in_features) <= 0:
            raise ValueError(f"in_features must be positive, got {in_features}")
        self.in_features = int(in_features)
        self._hessian = torch.zeros(self.in_features, self.in_features, dtype=torch.float64)
        self.nsamples: int = 0

    @torch.no_grad()
    def add(self, x: torch.Tensor) -> None:
        """Add a batch of layer inputs ``x`` of shape ``[..., in_features]``."""
        x = self._rows(x)
        self._step(((self._hessian, x, x),))

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as float64 rows ``[tokens, in_features]``."""
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"expected last dim {self.in_features}, got input of shape {tuple(x.shape)}"
            )
        return x.detach().reshape(-1, self.in_features).to(device="cpu", dtype=torch.float64)

    def _step(self, updates) -> None:
        """Running means over the samples: ``M_new = n/total * M_old + 2/total * a^T b`` for every
        ``(M, a, b)`` of ``updates`` (the same rows)."""
        m = updates[0][1].shape[0]
        if m == 0:
            return
        n = self.nsamples
        total = n + m
        for mat, a, b in updates:
            mat.mul_(n / total)
            mat.addmm_(a.t(), b, alpha=2.0 / total)
        self.nsamples = total

    @property
    def hessian(self) -> torch.Tensor:
        """The accumulated Hessian, ``[in_features, in_features]`` float64."""
        return self._hessian


class CrossCovarianceAccumulator(HessianAccumulator):
    """Accumulates ``H = 2/N * sum xq xq^T`` and ``A = 2/N * sum xq x^T`` over pairs of a linear layer's
    quantized input ``xq`` (what the layer sees) and the same input before its quantizer ``x`` (what the
    weights were trained on): the statistics of the asymmetric objective ``||X W^T - Xq Wq^T||`` of
    :func:`asymmetric_target`. Running means in float64, as :class:`HessianAccumulator`."""

    def __init__(self, in_features: int):
        super().__init__(in_features)
        self._cross = torch.zeros(self.in_features, self.in_features, dtype=torch.float64)

    @torch.no_grad()
    def add(self, xq: torch.Tensor, x: torch.Tensor) -> None:
        if tuple(xq.shape) != tuple(x.shape):
            raise ValueError(f"quantized input {tuple(xq.shape)} and input {tuple(x.shape)} differ in shape")
        xq, x = self._rows(xq), self._rows(x)
        self._step(((self._hessian, xq, xq), (self._cross, xq, x)))

    @property
    def cross(self) -> torch.Tensor:
        """``A = 2/N * sum xq x^T`` ([in, in], float64; rows index the quantized input)."""
        return self._cross


@torch.no_grad()
def asymmetric_target(weight: torch.Tensor, hessian: torch.Tensor, cross: torch.Tensor,
                      damp: float = 0.01) -> torch.Tensor:
    """The weight ``W*`` that best maps the quantized inputs onto the outputs of the unquantized ones,
    ``argmin_V ||X W^T - Xq V^T||^2 + lam ||V - W||^2`` with ``lam = damp * mean(diag(H))`` (the ridge pulls
    towards ``W``, GPTQ's own damping)::

        W* = W (A^T + lam I) (H + lam I)^-1,   H = 2/N Xq^T Xq,  A = 2/N Xq^T X

    Because ``||X W^T - Xq V^T||^2 = const + tr((V - W*) H (V - W*)^T)`` (undamped), GPTQ of ``W*`` under
    ``H`` minimises the asymmetric objective: the weights also compensate the input quantization error
    they will see (asymmetric calibration, as GPTAQ, Li et al. 2025). float64 in, float64 out."""
    w = weight.detach().to(torch.float64)
    h = hessian.detach().to(torch.float64)
    a = cross.detach().to(torch.float64)
    n = h.shape[0]
    if tuple(h.shape) != (n, n) or tuple(a.shape) != (n, n) or w.shape[1] != n:
        raise ValueError(f"weight {tuple(w.shape)}, hessian {tuple(h.shape)} and cross {tuple(a.shape)} "
                         f"do not agree")
    mean_diag = torch.mean(torch.diag(h)).item()
    lam = float(damp) * (mean_diag if mean_diag > 0 else 1.0)
    eye = torch.eye(n, dtype=torch.float64)
    # W* (H + lam I) = W (A^T + lam I)  <=>  (H + lam I) W*^T = (A + lam I) W^T  (H symmetric)
    rhs = (a + lam * eye) @ w.t()
    chol = torch.linalg.cholesky(0.5 * (h + h.t()) + lam * eye)
    return torch.cholesky_solve(rhs, chol).t().contiguous()


def _check_scale(scale: torch.Tensor, out_features: int) -> torch.Tensor:
    scale = torch.as_tensor(scale)
    if scale.numel() != out_features or scale.dim() not in (1, 2) or (
        scale.dim() == 2 and scale.shape[1] != 1
    ):
        raise ValueError(
            f"scale must have shape [{out_features}] or [{out_features}, 1], got {tuple(scale.shape)}"
        )
    scale = scale.reshape(out_features, 1)
    if not torch.all(torch.isfinite(scale)) or not torch.all(scale > 0):
        raise ValueError("scale must be finite and strictly positive")
    return scale


def _check_range(qmin: int, qmax: int) -> None:
    if int(qmin) != qmin or int(qmax) != qmax:
        raise ValueError(f"qmin/qmax must be integers, got {qmin}, {qmax}")
    if qmin > qmax:
        raise ValueError(f"qmin ({qmin}) must be <= qmax ({qmax})")


def _quant_int(w: torch.Tensor, scale: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """Integer codes (as float64) of ``w`` (float64) for float64 ``scale``; round-half-to-even."""
    return torch.clamp(torch.round(w / scale), qmin, qmax)


def _dequant(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Dequantize integer codes exactly on the float32 grid."""
    return q.to(torch.float32) * scale.to(torch.float32)


@torch.no_grad()
def rtn_quantize(weight: torch.Tensor, scale: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """Round-to-nearest quantization with fixed per-output-channel scales.

    Returns a float32 tensor of the same shape as ``weight`` whose entries are
    ``scale[j] * q`` with integer ``q`` in ``[qmin, qmax]``.
    """
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D [out, in], got shape {tuple(weight.shape)}")
    _check_range(qmin, qmax)
    scale = _check_scale(scale, weight.shape[0]).to(device="cpu")
    w = weight.detach().to(device="cpu", dtype=torch.float64)
    q = _quant_int(w, scale.to(torch.float64), qmin, qmax)
    return _dequant(q, scale)


def _upper_cholesky_of_inverse(H: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of ``(H + damp*mean(diag(H))*I)^-1``.

    If the factorization fails (H not positive definite even after damping),
    the damping is increased tenfold until it succeeds.
    """
    n = H.shape[0]
    mean_diag = torch.mean(torch.diag(H)).item()
    if not mean_diag > 0:
        mean_diag = 1.0
    eye = torch.eye(n, dtype=H.dtype)
    rel = float(damp)
    for _ in range(12):
        Hd = H + (rel * mean_diag) * eye
        L, info = torch.linalg.cholesky_ex(Hd)
        if int(info) == 0:
            Hinv = torch.cholesky_inverse(L)
            U, info2 = torch.linalg.cholesky_ex(Hinv, upper=True)
            if int(info2) == 0 and torch.all(torch.isfinite(U)):
                return U
        rel = max(rel * 10.0, 1e-6)
    raise RuntimeError("GPTQ: Hessian is not positive definite even after heavy damping")


def _gptq_rows(WT: torch.Tensor, Hinv: torch.Tensor, sv: torch.Tensor, qmin: int, qmax: int,
               block_size: int) -> torch.Tensor:
    """GPTQ of the rows held (transposed) in ``WT`` [cols, rows], which it overwrites; returns their
    integer codes [cols, rows]. Every step writes into preallocated rows (``out=`` and in-place forms of
    ``q = clamp(round(w / s))``, ``err = (w - q s) / d``): the same float64 operations, no temporaries."""
    cols = WT.shape[0]
    QT = torch.empty_like(WT)
    Err1 = torch.empty(min(block_size, cols), WT.shape[1], dtype=WT.dtype)
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        count = i2 - i1

        W1 = WT[i1:i2]                  # updated in place
        E1 = Err1[:count]
        Hinv1 = Hinv[i1:i2, i1:i2]
        diag = Hinv1.diagonal().tolist()

        for i in range(count):
            w, q, err = W1[i], QT[i1 + i], E1[i]
            torch.div(w, sv, out=q).round_().clamp_(qmin, qmax)
            torch.sub(w, torch.mul(q, sv, out=err), out=err).div_(diag[i])
            # Update the remaining columns of this block (column i itself is done).
            if i + 1 < count:
                W1[i + 1:].addr_(Hinv1[i, i + 1:], err, alpha=-1.0)   # in place: no [count, rows] temporary

        # Lazy batch update of all columns after this block.
        if i2 < cols:
            WT[i2:] -= Hinv[i1:i2, i2:].t() @ E1
    return QT


@torch.no_grad()
def gptq_quantize(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    scale: torch.Tensor,
    qmin: int,
    qmax: int,
    block_size: int = 128,
    damp: float = 0.01,
    act_order: bool = True,
    row_chunk: int = 2048,
) -> torch.Tensor:
    """GPTQ rounding of ``weight`` onto a fixed per-output-channel integer grid.

    Args:
        weight: ``[out, in]`` float weight.
        hessian: ``[in, in]`` Hessian of the layer inputs (e.g. ``HessianAccumulator.hessian``).
        scale: ``[out]`` or ``[out, 1]`` positive per-output-channel scale (kept fixed).
        qmin, qmax: integer range of the codes.
        block_size: number of columns per lazy-update block.
        damp: relative dampening; ``damp * mean(diag(H))`` is added to the diagonal.
        act_order: quantize columns in order of descending ``diag(H)``.
        row_chunk: output channels processed together (independent of each other; only speed changes).

    Returns:
        float32 tensor of the same shape as ``weight`` whose every entry is
        ``scale[j] * q`` with integer ``q`` in ``[qmin, qmax]``.
    """
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D [out, in], got shape {tuple(weight.shape)}")
    rows, cols = weight.shape
    if tuple(hessian.shape) != (cols, cols):
        raise ValueError(f"hessian must have shape [{cols}, {cols}], got {tuple(hessian.shape)}")
    if int(block_size) <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    if damp < 0:
        raise ValueError(f"damp must be non-negative, got {damp}")
    _check_range(qmin, qmax)
    block_size = int(block_size)

    scale = _check_scale(scale, rows).to(device="cpu")
    s = scale.to(torch.float64)  # [rows, 1]

    W = weight.detach().to(device="cpu", dtype=torch.float64).clone()
    H = hessian.detach().to(device="cpu", dtype=torch.float64).clone()
    if not torch.all(torch.isfinite(W)):
        raise ValueError("weight contains non-finite values")
    if not torch.all(torch.isfinite(H)):
        raise ValueError("hessian contains non-finite values")
    H = 0.5 * (H + H.t())  # enforce symmetry

    # Dead inputs: never active during calibration -> weight irrelevant, set to 0.
    dead = torch.diag(H) == 0
    if torch.any(dead):
        idx = torch.nonzero(dead, as_tuple=True)[0]
        H[idx, idx] = 1.0
        W[:, idx] = 0.0

    perm = None
    if act_order:
        perm = torch.argsort(torch.diag(H), descending=True, stable=True)
        W = W[:, perm]
        H = H[perm][:, perm]

    Hinv = _upper_cholesky_of_inverse(H, damp)
    del H

    # Rows (output channels) are independent given Hinv: process them in chunks small enough that one
    # block of the chunk stays in cache during the column-by-column updates (the LM head has tens of
    # thousands of rows). Work on transposed copies so that every column of a chunk is a contiguous row.
    QT = torch.empty(cols, rows, dtype=torch.float64)          # integer codes (float64 storage)
    row_chunk = max(1, int(row_chunk))
    for r0 in range(0, rows, row_chunk):
        r1 = min(r0 + row_chunk, rows)
        QT[:, r0:r1] = _gptq_rows(W[r0:r1].t().contiguous(), Hinv, s.view(-1)[r0:r1], qmin, qmax, block_size)
    del W

    Q = QT.t()
    if perm is not None:
        invperm = torch.argsort(perm)
        Q = Q[:, invperm]

    return _dequant(Q, scale)
