"""Cost of layers/flexllm_linear.h + the distributor of flexllm_schedule.h: THE linear engine of a kernel.

Iterations are the trip counts of the pipelined loops (II = 1), per call, exactly as the loops compute
them (counter names = FLEXLLM_COUNT names); cycles add the HBM rate limit and pipeline fill;
resources follow the unrolled MAC array, the epilogue's OUT_LANES fp32 rescale lanes, the tile buffer
(tiled form) and the FIFOs.

Per-call engines (``input_kind`` ``mixed``, ``flexllm::INPUT_PER_CALL``): an int8 call runs two nibble passes
over the same weights, so its MAC steps double (decode: each word twice from the word register, the weight
stream read once; prefill: the tile's token x input steps once per nibble); uint4 calls cost what they cost on
a uint4 engine. The MACs are the int4 x uint4 ones (a nibble with a sign flag is the same 5-bit signed operand),
plus the nibble select per operand (NIBBLE_OPERAND), the x16 of the high pass per fabric accumulator
(NIBBLE_ACC_SHIFT) or a second accumulator set per DSP pair (NIBBLE_ACC_SET), and two accumulator sets per
lane in the streaming form; the epilogue keeps the zero-point path (uint4 calls).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

from .reduce import ceil_div
from .resources import (CONTROL, DSP_PACK2_MAC, FADD, FMUL, INT4_MAC_LUT, INT8_MAC_LUT, ITOF, NIBBLE_ACC_SET,
                        NIBBLE_ACC_SHIFT, NIBBLE_OPERAND, Resources, fifo, memory)

WORD_BYTES = 64
MAC_FILL = 12          # MAC pipeline depth (unpack, products, adder tree, accumulate)
EPILOGUE_FILL = 24     # itof + 2 fmul + fadd
DISTRIBUTE_FILL = 8    # fadd of the residual destination
CALL_OVERHEAD = 20     # DATAFLOW start / done handshakes of one call


def row_words(d_in: int, bits: int) -> int:
    return ceil_div(ceil_div(d_in, 2) if bits == 4 else d_in, WORD_BYTES)


@dataclass(frozen=True)
class LinearEngine:
    max_tokens: int
    max_in: int
    max_out: int
    token_lanes: int
    out_lanes: int
    in_lanes: int
    weight_bits: int
    input_kind: str          # "uint4_asym" | "int8" | "mixed" (the kind comes with each call)
    ports: int
    mac: str = "MAC_LUT"     # "MAC_LUT" | "MAC_DSP_PACK2"
    dsp_lanes: int = 0       # MAC_DSP_PACK2: output lanes on DSPs (two per DSP48E2), the rest in fabric

    @property
    def codes_per_word(self) -> int:
        return 128 if self.weight_bits == 4 else 64

    @property
    def streaming(self) -> bool:
        return self.max_tokens == 1 and self.token_lanes == 1 and self.out_lanes == self.ports

    @property
    def word_steps(self) -> int:
        return ceil_div(self.codes_per_word, self.in_lanes)

    @property
    def param_block_words(self) -> int:
        return ceil_div(2 * self.out_lanes, 16)

    @property
    def macs_per_cycle(self) -> int:
        return (self.ports if self.streaming else self.token_lanes * self.out_lanes) * self.in_lanes

    def passes(self, kind=None) -> int:
        """Nibble passes of a call of input kind ``kind`` (None: the engine's kind): 2 for int8 calls on a
        per-call engine, else 1."""
        return 2 if self.input_kind == "mixed" and kind == "int8" else 1

    # ---- trip counts ------------------------------------------------------------------------------
    def slice_words(self, d_in: int, d_out: int) -> int:
        """Words of one port's slice (linear_read_slice iterations per port)."""
        return ceil_div(d_out, self.ports) * row_words(d_in, self.weight_bits)

    def mac_steps(self, n_tokens: int, d_in: int, d_out: int, kind=None) -> int:
        rw = row_words(d_in, self.weight_bits)
        rpp = ceil_div(d_out, self.ports)
        passes = self.passes(kind)
        if self.streaming:
            return rpp * rw * self.word_steps * passes
        pl = self.out_lanes // self.ports
        ob = ceil_div(d_out, self.out_lanes)
        mac = ceil_div(n_tokens, self.token_lanes) * ceil_div(d_in, self.in_lanes) * passes
        steps = 0
        for it in range(ob + 1):
            load = min(pl, rpp - it * pl) * rw if it < ob else 0
            steps += max(load, mac if it > 0 else 0)
        return steps

    def tile_steps(self, n_tokens: int, d_out: int) -> int:
        """Epilogue / distributor iterations: one token row of a tile per cycle."""
        return ceil_div(d_out, self.out_lanes) * ceil_div(n_tokens, self.token_lanes) * self.token_lanes

    def iterations(self, n_tokens: int, d_in: int, d_out: int, kind=None) -> Dict[str, int]:
        """Trip counts of one call; ``kind``: the call's input kind (per-call engines)."""
        tiles = self.tile_steps(n_tokens, d_out)
        return {"linear_read_slice": self.ports * self.slice_words(d_in, d_out),
                "linear_read_params": ceil_div(d_out, self.out_lanes) * self.param_block_words,
                "linear_mac": self.mac_steps(n_tokens, d_in, d_out, kind),
                "linear_epilogue": tiles, "linear_distribute": tiles}

    # ---- time ---------------------------------------------------------------------------------------
    def cycles(self, n_tokens: int, d_in: int, d_out: int, words_per_cycle: float, kind=None) -> float:
        """One call: the DATAFLOW of readers (HBM-rate bound: ``words_per_cycle`` 512-bit words per cycle
        and port), MAC array, epilogue and distributor overlap; the slowest sets the pace."""
        it = self.iterations(n_tokens, d_in, d_out, kind)
        stream = self.slice_words(d_in, d_out) / min(1.0, words_per_cycle)
        body = max(stream, it["linear_mac"], it["linear_epilogue"])
        return body + MAC_FILL + EPILOGUE_FILL + DISTRIBUTE_FILL + CALL_OVERHEAD

    # ---- resources ----------------------------------------------------------------------------------
    def resources(self) -> Dict[str, Resources]:
        lanes_out = self.ports if self.streaming else self.out_lanes
        rows = 1 if self.streaming else self.token_lanes
        dsp_lanes = (lanes_out if self.streaming else min(self.dsp_lanes or lanes_out, lanes_out)) \
            if self.mac == "MAC_DSP_PACK2" else 0
        mixed = self.input_kind == "mixed"
        fabric = INT4_MAC_LUT if (self.weight_bits == 4 and self.input_kind in ("uint4_asym", "mixed")) else INT8_MAC_LUT
        acc_bits = 32
        acc_sets = 2 if (mixed and self.streaming) else 1     # streaming: both nibble sums live per row
        nibbles = Resources()
        if mixed:
            nibbles = (NIBBLE_OPERAND * (rows * self.in_lanes) + NIBBLE_ACC_SET * (rows * dsp_lanes // 2)
                       + (NIBBLE_ACC_SHIFT * (rows * (lanes_out - dsp_lanes)) if not self.streaming else Resources()))
        out = {"linear_mac": (DSP_PACK2_MAC * (rows * dsp_lanes * self.in_lanes)
                              + fabric * (rows * (lanes_out - dsp_lanes) * self.in_lanes)
                              + Resources(lut=acc_bits * lanes_out, ff=acc_bits * lanes_out) * (rows * acc_sets)
                              + nibbles + CONTROL)}
        if not self.streaming:
            # double-buffered tile: 2 x BP rows x tile_in codes, banks cyclic by codes_per_word
            depth = ceil_div(row_words(self.max_in, self.weight_bits) * self.codes_per_word, self.codes_per_word)
            out["linear_tile"] = memory(depth, self.weight_bits, banks=2 * self.out_lanes * self.codes_per_word)
        # epilogue: OUT_LANES x (itof, fmul, fmul[, fmul, fadd]) ; distributor: OUT_LANES fadd (residual)
        per_lane = ITOF + FMUL * 2 + ((FMUL + FADD) if self.input_kind in ("uint4_asym", "mixed") else Resources())
        out["linear_epilogue"] = per_lane * self.out_lanes + CONTROL
        out["linear_distribute"] = FADD * self.out_lanes + Resources(lut=40 * self.out_lanes) + CONTROL
        out["linear_fifos"] = (fifo(64, 512) * self.ports + fifo(2, self.token_lanes * self.out_lanes * 32) * 2
                               + fifo(4, 2 * self.out_lanes * 32))
        out["linear_readers"] = Resources(lut=150, ff=250) * (self.ports + 1)
        return out
