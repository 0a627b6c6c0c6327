"""The activation buffers of a kernel's compute core: their layout (shared by the writer's pragmas and
the cost model) and the storage a bank of a given size is bound to."""

from __future__ import annotations

import math


def storage_impl(bank_bytes: int, width_bits: int) -> str:
    """Memory of one bank of an activation buffer: LUTRAM up to 64 entries, URAM from 32 KB, BRAM between
    (the same rule as the cost model, flexllm_plugin/cost/stage.py)."""
    depth = bank_bytes * 8 // max(width_bits, 1)
    return "lutram" if depth <= 64 else "uram" if bank_bytes >= 32768 else "bram"


def buffer_layout(c: dict, tl: int, ol: int, il: int, ew: int, hl: int, ql: int):
    """(name, rows, columns, bits, column reshape factor, row banks) of every activation buffer of the
    compute core (the writer's pragmas and the cost model use this one table). Lanes that meet at a buffer:
    the distributor (ol), the element-wise units (ew), the Hadamard unit (hl), the quantizer (ql, reads x and
    writes codes), the engine's input lanes (il, reads codes)."""
    t, w, row = c["MAX_TOKENS"], c["WIDTH"], c["ROW"]
    return [("h", t, w, 32, math.lcm(ol, ew), 1), ("gate", t, w, 32, math.lcm(ol, ew), 1),
            ("up", t, w, 32, math.lcm(ol, ew), 1), ("x", t, w, 32, math.lcm(ew, hl, ql), 1),
            ("q", t, row, 32, ol, 1), ("k", t, row, 32, ol, 1), ("v", t, row, 32, ol, 1),
            ("codes", t, w, 8, math.lcm(il, ql), tl)]
