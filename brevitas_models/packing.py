"""Packed integer weight layout of the FlexLLM HLS kernels (``layers/flexllm_weights.h``).

Packed rows (:func:`pack_weights`): row-major ``[d_out][row_bytes]`` uint8, rows contiguous:

* int8: ``row_bytes = d_in``; byte ``k`` is code ``k`` (two's complement).
* int4: ``row_bytes = ceil(d_in / 2)``; byte ``k // 2`` holds code ``k`` (``k`` even) in bits 3..0 and
  code ``k + 1`` in bits 7..4, both two's-complement nibbles; for odd ``d_in`` the last high nibble
  is 0.

Kernel layout (:func:`pack_weights_ports`): the linear engine reads 512-bit words (64 bytes, little
endian: byte 0 = bits 7..0) from ``ports`` weight ports. Every packed row is zero-padded to
``row_words(d_in, bits) = ceil(row_bytes / 64)`` words; row ``j`` goes to port ``j % ports`` at row
slot ``j // ports``; every port's slice has ``ceil(d_out / ports)`` slots (missing rows are zero), so
all slices are ``slice_words(d_out, d_in, bits, ports)`` words long and a matrix sits at the same
word offset in every port's memory image.
"""

from __future__ import annotations

import numpy as np

__all__ = ["pack_int4_rows", "unpack_int4_rows", "pack_weights", "unpack_weights", "packed_row_bytes",
           "WORD_BYTES", "row_words", "rows_per_port", "slice_words", "pack_weights_ports",
           "unpack_weights_ports"]

WORD_BYTES = 64                                     # one 512-bit word (flexllm::wide_word_t)

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
    return w.astype(np.int8, copy=False)            # in range: int8 holds every code (no wider copy)


def pack_int4_rows(w_int: np.ndarray) -> np.ndarray:
    """int4 codes ``[d_out, d_in]`` (values in [-8, 7]) -> uint8 ``[d_out, ceil(d_in / 2)]``."""
    w = _check(w_int, 4)
    d_out, d_in = w.shape
    nib = w.view(np.uint8) & np.uint8(0xF)          # two's-complement low nibble of each code
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


def _check_ports(ports: int) -> int:
    if isinstance(ports, bool) or not isinstance(ports, (int, np.integer)) or ports < 1:
        raise ValueError(f"ports must be an integer >= 1, got {ports!r}")
    return int(ports)


def row_words(d_in: int, bits: int) -> int:
    """512-bit words of one padded row (``flexllm::weight_row_words``)."""
    return -(-packed_row_bytes(d_in, bits) // WORD_BYTES)


def rows_per_port(d_out: int, ports: int) -> int:
    """Row slots of every port's slice: ``ceil(d_out / ports)`` (``flexllm::weight_rows_per_port``)."""
    return -(-int(d_out) // _check_ports(ports))


def slice_words(d_out: int, d_in: int, bits: int, ports: int) -> int:
    """Words of every port's slice of a ``d_out x d_in`` matrix (``flexllm::weight_slice_words``)."""
    return rows_per_port(d_out, ports) * row_words(d_in, bits)


def pack_weights_ports(w_int: np.ndarray, bits: int, ports: int) -> np.ndarray:
    """Integer weight codes ``[d_out, d_in]`` -> uint8 ``[ports, slice_words * 64]``: row ``j`` at slot
    ``j // ports`` of port ``j % ports``, every row padded to ``row_words`` 64-byte words."""
    ports = _check_ports(ports)
    rows = pack_weights(w_int, bits)
    d_out, rb = rows.shape
    rpp, rw = rows_per_port(d_out, ports), row_words(np.shape(w_int)[1], bits)
    padded = np.zeros((rpp * ports, rw * WORD_BYTES), dtype=np.uint8)
    padded[:d_out, :rb] = rows
    # padded row index = slot * ports + port  ->  [port][slot][bytes]
    return np.ascontiguousarray(padded.reshape(rpp, ports, rw * WORD_BYTES).transpose(1, 0, 2).reshape(ports, -1))


def unpack_weights_ports(packed: np.ndarray, d_out: int, d_in: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_weights_ports`: int8 codes ``[d_out, d_in]``."""
    b = np.asarray(packed, dtype=np.uint8)
    if b.ndim != 2:
        raise ValueError(f"packed weights must be [ports, bytes], got shape {b.shape}")
    ports = b.shape[0]
    rpp, rw = rows_per_port(d_out, ports), row_words(d_in, bits)
    if b.shape[1] != rpp * rw * WORD_BYTES:
        raise ValueError(f"packed weights: {b.shape[1]} bytes per port, expected {rpp * rw * WORD_BYTES}")
    rows = b.reshape(ports, rpp, rw * WORD_BYTES).transpose(1, 0, 2).reshape(rpp * ports, -1)[:d_out]
    return unpack_weights(rows[:, :packed_row_bytes(d_in, bits)], d_in, bits)


def param_block_words(out_lanes: int) -> int:
    """512-bit words of one parameter block of ``out_lanes`` rows (``linear_config::param_block_words``):
    ``out_lanes`` fp32 scales then ``out_lanes`` fp32 row sums, zero-padded to whole words."""
    return -(-2 * int(out_lanes) // 16)


def pack_linear_params(w_scale: np.ndarray, wsum: np.ndarray, out_lanes: int) -> np.ndarray:
    """Per-channel parameters of one linear -> float32 ``[blocks * block_words * 16]`` in the layout the
    engine's parameter reader streams (``flexllm::linear_read_params``): for every block of ``out_lanes``
    consecutive output rows, the rows' ``w_scale`` then their ``wsum`` (missing rows 0), padded with 0 to
    ``param_block_words(out_lanes)`` 512-bit words."""
    s = np.asarray(w_scale, dtype=np.float32).reshape(-1)
    z = np.asarray(wsum, dtype=np.float32).reshape(-1)
    if s.shape != z.shape:
        raise ValueError(f"w_scale {s.shape} and wsum {z.shape} differ")
    bp = int(out_lanes)
    blocks = -(-s.size // bp)
    out = np.zeros((blocks, param_block_words(bp) * 16), dtype=np.float32)
    pad = blocks * bp - s.size
    out[:, :bp] = np.concatenate([s, np.zeros(pad, np.float32)]).reshape(blocks, bp)
    out[:, bp:2 * bp] = np.concatenate([z, np.zeros(pad, np.float32)]).reshape(blocks, bp)
    return out.reshape(-1)
