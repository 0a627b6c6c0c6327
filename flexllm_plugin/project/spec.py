"""The data that describes a generated accelerator project (kernels, ports, memories), independent of
how each file is written. The kernel writer fills it; the Vitis files (HLS tcl, v++ configs, host,
Makefile) are generated from it, and the checks without Vitis cross-check against it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

U280_PLATFORM = "xilinx_u280_gen3x16_xdma_1_202211_1"
U280_PART = "xcu280-fsvh2892-2L-e"
HBM_CHANNELS = 32                      # U280 HBM pseudo-channels
HBM_CHANNEL_BYTES = 256 * 1024 * 1024  # 256 MB each
HBM_CHANNEL_GBPS = 460 / 32            # U280 HBM2: 460 GB/s peak over 32 pseudo-channels
DDR_BANKS = 2                          # U280 DDR4 banks DDR[0], DDR[1]
DDR_BANK_BYTES = 16 * 1024 ** 3
WORD_BYTES = 64                        # one 512-bit word (flexllm::wide_word_t)


def kv_row_bytes(head_dim: int) -> int:
    """Bytes of one KV-cache row: head_dim int8 codes padded to whole 512-bit words
    (flexllm::kv_row_words, layers/flexllm_kv_cache.h)."""
    return WORD_BYTES * -(-int(head_dim) // WORD_BYTES)


DEFAULT_WEIGHT_PORTS = 2              # a stage converted without WeightPorts: one K and one V buffer beside them


def kv_lanes(key_lanes: int, ports: int) -> int:
    """KV_LANES: the KV cache's K ports (= V ports) on the weight ports' HBM channels, keys loaded per cycle:
    min(KeyLanes, WeightPorts // 2) (layers/flexllm_kv_cache.h)."""
    if ports < 2:
        raise ValueError(f"the KV cache needs at least 2 weight ports (one K, one V channel), got {ports}")
    return min(int(key_lanes), int(ports) // 2)


def kv_buffer(i: int) -> str:
    """Device buffer of KV port i (K for i < KV_LANES, else V), on weight port i's HBM channel."""
    return f"kv_p{i}"


def kv_port_bytes(n_layers: int, n_kv_heads: int, max_ctx: int, head_dim: int, kv_lanes: int) -> int:
    """Bytes of one KV port buffer: [layers][kv heads][ceil(max_ctx / kv_lanes) slots][row words]
    (flexllm::kv_port_words, layers/flexllm_kv_cache.h)."""
    slots = -(-int(max_ctx) // int(kv_lanes))
    return int(n_layers) * int(n_kv_heads) * slots * kv_row_bytes(head_dim)


@dataclass
class Port:
    """One argument of a kernel top function.

    kind: ``m_axi`` (pointer into device memory) or ``scalar`` (s_axilite register).
    For m_axi: ``bundle`` (the HLS m_axi bundle; one bundle per memory connection), ``memory``
    (``HBM[n]`` or ``DDR[n]``), ``buffer`` (the device buffer bound to it; several kernels may share one
    buffer, e.g. the KV cache), ``width_bits`` (data width of one beat: 8, 32, 256 or 512), ``ctype``
    (the C++ pointer element type) and ``direction`` (``in``, ``out``, ``inout``).
    """

    name: str
    kind: str
    ctype: str
    bundle: Optional[str] = None
    memory: Optional[str] = None
    buffer: Optional[str] = None
    width_bits: int = 32
    direction: str = "in"


@dataclass
class Buffer:
    """A device buffer: its memory bank, size, and the file it is initialised from (None: zeroed /
    written by a kernel or the host at run time)."""

    name: str
    memory: str
    bytes: int
    file: Optional[str] = None
    sha256: Optional[str] = None


@dataclass
class Kernel:
    name: str                 # top function name == kernel name in v++
    source: str               # path of the kernel .cpp relative to the project root
    ports: List[Port]
    clock_mhz: float
    includes: List[str] = field(default_factory=lambda: ["firmware", "firmware/flexllm"])


@dataclass
class ProjectSpec:
    name: str
    part: str
    platform: str
    kernels: List[Kernel]
    buffers: List[Buffer]
    model: Dict                # sizes, vocab, max context, max prompt, max new tokens, sampling, tokenizer info
    estimates: Dict = field(default_factory=dict)   # resource / latency estimates for the README

    def to_dict(self) -> Dict:
        return asdict(self)

    def buffer(self, name: str) -> Buffer:
        for b in self.buffers:
            if b.name == name:
                return b
        raise KeyError(f"no buffer {name!r} in project {self.name!r}")


# Boards: the FPGA part and the Vitis platform the project targets.
BOARDS = {"u280": {"part": U280_PART, "platform": U280_PLATFORM}}
