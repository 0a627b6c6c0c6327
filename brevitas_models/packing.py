"""Packed integer weight layout of the FlexLLM HLS kernels (``layers/flexllm_weights.h``).

Row-major ``[d_out][row_bytes]`` uint8, rows contiguous:

* int8: ``row_bytes = d_in``; byte ``k`` is code ``k`` (two's complement).
* int4: ``row_bytes = ceil(d_in / 2)``; byte ``k // 2`` holds code ``k`` (``k`` even) in bits 3..0 and
  code ``k + 1`` in bits 7..4, both two's-complement nibbles; for odd ``d_in`` the last high nibble
  is 0.
"""

from __future__ import annotations

import numpy as np

__all__ = ["pack_int4_rows", "unpack_int4_rows", "pack_weights", "unpack_weights", "packed_row_bytes"]

_RANGE = {4: (-8, 7), 8: (-128, 127)}


def packed_row_bytes(d_in: int, bits: int) -> int:
    """Bytes of one packed row."""
    if bits not in _RANGE:
        raise ValueError(f"packed weights are 4 or 8 bits, got {bits}")
    return (d_in + 1) // 2 if bits == 4 else d_in


def _check(w_int: np.ndarray, bits: int) -> np.ndarray:
    w = np.asarray(w_int)
    if w.ndim != 2:
        raise ValueError(f"weights must be [d_out, d_in], got shape {w.shape}")
    if not np.issubdtype(w.dtype, np.integer):
        raise TypeError(f"weights must be integer codes, got {w.dtype}")
    lo, hi = _RANGE[bits]
    if w.size and (w.min() < lo or w.max() > hi):
        raise ValueError(f"weight codes outside int{bits} [{lo}, {hi}]")
    return w.astype(np.int64)


def pack_int4_rows(w_int: np.ndarray) -> np.ndarray:
    """int4 codes ``[d_out, d_in]`` (values in [-8, 7]) -> uint8 ``[d_out, ceil(d_in / 2)]``."""
    w = _check(w_int, 4)
    d_out, d_in = w.shape
    nib = (w & 0xF).astype(np.uint8)
    if d_in % 2:
        nib = np.concatenate([nib, np.zeros((d_out, 1), dtype=np.uint8)], axis=1)
    return np.ascontiguousarray(nib[:, 0::2] | (nib[:, 1::2] << 4))


def unpack_int4_rows(packed: np.ndarray, d_in: int) -> np.ndarray:
    """Inverse of :func:`pack_int4_rows`: int8 ``[d_out, d_in]``."""
    b = np.asarray(packed, dtype=np.uint8)
    nib = np.stack([b & 0xF, b >> 4], axis=-1).reshape(b.shape[0], -1)[:, :d_in].astype(np.int16)
    return np.where(nib >= 8, nib - 16, nib).astype(np.int8)


def pack_weights(w_int: np.ndarray, bits: int) -> np.ndarray:
    """Integer weight codes ``[d_out, d_in]`` -> packed uint8 ``[d_out, packed_row_bytes(d_in, bits)]``."""
    if bits == 4:
        return pack_int4_rows(w_int)
    packed_row_bytes(1, bits)                      # validates bits
    w = _check(w_int, bits)
    return np.ascontiguousarray(w.astype(np.int8).view(np.uint8))


def unpack_weights(packed: np.ndarray, d_in: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_weights`: int8 codes ``[d_out, d_in]``."""
    if bits == 4:
        return unpack_int4_rows(packed, d_in)
    packed_row_bytes(d_in, bits)
    return np.ascontiguousarray(np.asarray(packed, dtype=np.uint8)[:, :d_in].view(np.int8))
