"""Boards as data: resources (device and per SLR), HBM, clock (the cost model's budget).

U280 figures: AMD DS963 / UG1314 (xcu280-fsvh2892-2L-e: 9,024 DSP48E2, 1,303,680 LUT, 2,607,360 FF,
2,016 BRAM36, 960 URAM in 3 SLRs; 32 HBM2 pseudo-channels of 256 MB); per-SLR shares are the device
totals split evenly (SLR0 also hosts the HBM controllers and most of the shell: the 80 % per-SLR cap
covers it). HBM rate: the measured ~13.3 GB/s per pseudo-channel (Shuhai), not the 14.375 GB/s peak.
"""

from __future__ import annotations

from dataclasses import dataclass

from .resources import Resources


@dataclass(frozen=True)
class Board:
    name: str
    part: str
    platform: str
    device: Resources
    slrs: int
    hbm_channels: int
    hbm_channel_bytes: int
    hbm_channel_gbps: float          # measured sustained read rate of one pseudo-channel
    ddr_gbps: float
    device_cap: float = 0.75         # budget: share of the device per resource
    slr_cap: float = 0.80            # budget: share of one SLR per resource

    @property
    def slr(self) -> Resources:
        return self.device * (1.0 / self.slrs)


U280 = Board(
    name="u280", part="xcu280-fsvh2892-2L-e", platform="xilinx_u280_gen3x16_xdma_1_202211_1",
    device=Resources(dsp=9024, lut=1303680, ff=2607360, bram36=2016, uram=960), slrs=3,
    hbm_channels=32, hbm_channel_bytes=256 * 2 ** 20, hbm_channel_gbps=13.3, ddr_gbps=16.0,
)

BOARDS = {"u280": U280}
