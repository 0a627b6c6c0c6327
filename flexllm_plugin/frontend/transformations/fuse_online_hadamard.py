"""``MatMul(x, H)`` with ``H`` a constant equal to ``hadamard_constant(n)`` (the online R4 rotation) ->
``OnlineHadamard``. A MatMul with any other constant is left alone (then reported unsupported)."""

import numpy as np

from ._fusion import FusionTransformation

_REFERENCE = {}


def hadamard_reference(n: int):
    """``brevitas_models.export_ops.hadamard_constant(n)`` as numpy (``hadamard_matrix(n).T`` in float64,
    transposed, rounded to float32 once: the same computation), or None if ``n`` has no supported
    Hadamard construction."""
    if n not in _REFERENCE:
        try:
            from brevitas_models.hadamard import hadamard_matrix
            _REFERENCE[n] = np.ascontiguousarray(hadamard_matrix(n).T).astype(np.float32)
        except Exception:       # unsupported order (or brevitas_models unavailable)
            _REFERENCE[n] = None
    return _REFERENCE[n]


def _unit_magnitudes(a: np.ndarray, n: int) -> bool:
    """Every entry is +-1/sqrt(n) (to float32 precision)."""
    return bool(np.allclose(np.abs(a), 1.0 / np.sqrt(n), rtol=1e-6, atol=0))


def is_hadamard_constant(value) -> bool:
    """``value`` equals ``hadamard_reference(n)``, a matrix of +-1/sqrt(n) entries."""
    if value is None or value.ndim != 2 or value.shape[0] != value.shape[1] or value.dtype != np.float32:
        return False
    n = value.shape[0]
    # cheap pre-check before building the reference, on the first row (it rejects a square weight matrix at
    # once); the magnitudes of the other rows are checked on the reference, which ``value`` must equal
    if not _unit_magnitudes(value[:1], n):
        return False
    ref = hadamard_reference(n)
    return ref is not None and np.array_equal(value, ref) and _reference_magnitudes(n)


_REFERENCE_MAGNITUDES = {}


def _reference_magnitudes(n: int) -> bool:
    if n not in _REFERENCE_MAGNITUDES:
        _REFERENCE_MAGNITUDES[n] = _unit_magnitudes(hadamard_reference(n), n)
    return _REFERENCE_MAGNITUDES[n]


class FuseOnlineHadamard(FusionTransformation):
    def match(self, rw, node):
        idx = rw.idx
        if node.op_type != "MatMul" or node.domain != "":
            return
        x, mat = node.input
        value = idx.const(mat)
        if idx.is_const(x) or not is_hadamard_constant(value):
            return
        mat = rw.initializer_for(mat, value, mat)
        rw.replace([node], rw.make_node("OnlineHadamard", [x, mat], [node.output[0]], [node], n=int(value.shape[0])))
