"""Resource vectors and the unit costs every module model is built from.

Operator costs are approximations of Vitis HLS 2022.2 operator cores on UltraScale+ at 300 MHz (fp32 cores
with ``impl=fulldsp`` where a DSP variant exists, integer products as the HLS binder maps them); memories
follow the BRAM36 / URAM288 / LUTRAM geometries of the device. They are the model's inputs, stated once
here, to be replaced by csynth figures when a Vitis run exists (``flexllm report`` puts both side by side).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

KEYS = ("dsp", "lut", "ff", "bram36", "uram")


@dataclass(frozen=True)
class Resources:
    dsp: float = 0.0
    lut: float = 0.0
    ff: float = 0.0
    bram36: float = 0.0
    uram: float = 0.0

    def __add__(self, other: "Resources") -> "Resources":
        return Resources(*(getattr(self, k) + getattr(other, k) for k in KEYS))

    def __mul__(self, n: float) -> "Resources":
        return Resources(*(getattr(self, k) * n for k in KEYS))

    __rmul__ = __mul__

    def as_dict(self) -> dict:
        return {k: int(round(v)) for k, v in asdict(self).items()}


ZERO = Resources()


def total(items) -> Resources:
    out = ZERO
    for r in items:
        out = out + r
    return out


# ---- operators (one instance) ---------------------------------------------------------------------
FADD = Resources(dsp=2, lut=220, ff=350)          # fp32 add / sub
FMUL = Resources(dsp=3, lut=90, ff=160)           # fp32 multiply
FDIV = Resources(lut=800, ff=1400)                # fp32 divide (fabric)
FSQRT = Resources(lut=480, ff=820)                # fp32 square root (fabric)
FCMP = Resources(lut=70, ff=10)                   # fp32 compare + select (min / max)
EXP32 = FMUL * 7 + FADD * 6 + Resources(lut=260, ff=300)   # flexllm_math.h exp32: 7 fmul, 4 fadd +
                                                            # 2 in rint, exponent construction, range checks
ITOF = Resources(lut=110, ff=160)                 # integer -> fp32
ROUND = FADD * 2 + Resources(lut=40, ff=40)       # rint_even_arith: (|x| + 2^23) - 2^23, sign restored
INT8_MUL = Resources(dsp=1, lut=4, ff=20)         # int8 x int8 (x uint8) product on a DSP48E2
INT8_PACK2 = Resources(dsp=1, lut=44, ff=60)      # two 8-bit products sharing an operand on one DSP48E2: packing
                                                  # adder + the exact extraction of both (18-bit fields)
INT4_MAC_LUT = Resources(lut=24, ff=12)           # int4 x uint4 product + its share of the adder tree (fabric)
INT8_MAC_LUT = Resources(lut=70, ff=30)           # int4 x int8 product + adder tree share (fabric)
# Per-call engines (int8 calls as two nibble passes): the MAC stays INT4_MAC_LUT -- an int4 x uint4 product is
# already a signed 4 x 5-bit product, and a signed high nibble (-8..7) fits the same 5-bit operand -- plus:
NIBBLE_OPERAND = Resources(lut=2)                 # per activation operand (shared by a token lane's output lanes):
                                                  # low / high nibble select, zero / sign extension
NIBBLE_ACC_SHIFT = Resources(lut=8)               # per fabric accumulator: the high pass adds 16 x its partial sum
NIBBLE_ACC_SET = Resources(lut=48, ff=48)         # per DSP pair: a second 48-bit packed accumulator + its select
DSP_PACK2_MAC = Resources(dsp=0.5, lut=6, ff=10)  # one of the two products of a packed DSP48E2 (cascade adds)
ADDER_BIT = Resources(lut=1, ff=1)                # one bit of an integer adder / register


# ---- memories ---------------------------------------------------------------------------------------
BRAM36_SHAPES = ((512, 72), (1024, 36), (2048, 18), (4096, 9), (8192, 4), (16384, 2), (32768, 1))
URAM_DEPTH, URAM_WIDTH = 4096, 72


def bram36(depth: int, width_bits: int) -> int:
    """BRAM36 tiles of one bank of ``depth`` x ``width_bits`` (the best aspect ratio)."""
    if depth <= 0 or width_bits <= 0:
        return 0
    return min(-(-width_bits // w) * -(-depth // d) for d, w in BRAM36_SHAPES)


def uram(depth: int, width_bits: int) -> int:
    if depth <= 0 or width_bits <= 0:
        return 0
    return -(-width_bits // URAM_WIDTH) * -(-depth // URAM_DEPTH)


def lutram(depth: int, width_bits: int) -> int:
    """LUTs of a distributed-RAM bank (RAM64X1D: 64 entries x 1 bit per LUT, dual port)."""
    if depth <= 0 or width_bits <= 0:
        return 0
    return width_bits * -(-depth // 64)


def memory(depth: int, width_bits: int, banks: int = 1, impl: str = "auto") -> Resources:
    """``banks`` banks of ``depth`` x ``width_bits``: URAM, BRAM or LUTRAM (``auto``: LUTRAM up to 64 deep x
    any width or 1 Kbit, BRAM otherwise)."""
    if impl == "uram":
        return Resources(uram=uram(depth, width_bits) * banks)
    if impl == "lutram":
        return Resources(lut=lutram(depth, width_bits) * banks)
    if impl == "bram" or (impl == "auto" and depth * width_bits > 1024 and depth > 64):
        return Resources(bram36=bram36(depth, width_bits) * banks)
    return Resources(lut=lutram(depth, width_bits) * banks, ff=0)


def fifo(depth: int, width_bits: int) -> Resources:
    """An hls::stream FIFO: shift-register LUTs (SRL32) up to 128 deep, BRAM beyond."""
    if depth <= 128:
        return Resources(lut=width_bits * -(-depth // 32) + 30, ff=width_bits + 20)
    return Resources(bram36=bram36(depth, width_bits), lut=60, ff=width_bits)


def maxi_adapter(width_bits: int, read: bool = True, write: bool = False) -> Resources:
    """One m_axi port adapter (burst buffers, address generation) of the given data width."""
    scale = width_bits / 512
    per_dir = Resources(lut=900 * scale + 300, ff=1500 * scale + 400, bram36=2 if width_bits >= 256 else 0)
    return per_dir * (int(read) + int(write))


CONTROL = Resources(lut=120, ff=150)              # FSM + loop counters of one pipelined loop
