"""Boards as data: resources (device and per SLR), HBM, clock, the budget caps (the cost model's budget).

Each board is a YAML file in ``flexllm_plugin/boards/`` (``u280.yaml``, ``v80.yaml``) that cites the AMD
documents its figures come from and lists what could not be checked. :func:`load_board` reads one into a
:class:`Board`; :data:`BOARDS` maps every accepted name (short ``u280`` and hls4ml's ``alveo-u280``) to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Tuple

import yaml

from .resources import KEYS, Resources

BOARD_DIR = Path(__file__).resolve().parent.parent / "boards"


class BoardError(ValueError):
    pass


@dataclass(frozen=True)
class Board:
    name: str
    part: str
    platform: str
    device: Resources
    slrs: int
    hbm_channels: int
    hbm_channel_bytes: int
    hbm_channel_gbps: float          # sustained read rate of one pseudo-channel (the model's rate)
    ddr_gbps: float
    device_cap: float = 0.75         # budget: share of the device per resource
    slr_cap: float = 0.80            # budget: share of one SLR per resource
    slr_resources: Tuple[Resources, ...] = ()
    hbm_channel_peak_gbps: float = 0.0
    clock_mhz_max: float = 300.0
    clock_mhz_target: float = 300.0
    family: str = ""
    flow: str = "vitis"
    project_generation: bool = True
    aliases: Tuple[str, ...] = ()
    unverified: Tuple[str, ...] = ()
    source_file: str = field(default="", compare=False)

    @property
    def slr(self) -> Resources:
        """One SLR's resources (the smallest SLR per resource when they differ)."""
        if not self.slr_resources:
            return self.device * (1.0 / self.slrs)
        return Resources(*(min(getattr(s, k) for s in self.slr_resources) for k in KEYS))

    @property
    def hbm_gbps(self) -> float:
        return self.hbm_channels * self.hbm_channel_gbps


def _resources(d, where: str) -> Resources:
    if not isinstance(d, dict) or set(d) != set(KEYS):
        raise BoardError(f"{where} must map exactly {list(KEYS)}, got {d!r}")
    return Resources(**{k: float(d[k]) for k in KEYS})


def load_board(path) -> Board:
    """A :class:`Board` from a board YAML file; BoardError naming the file and key when it is malformed or
    inconsistent (SLRs not adding up to the device, figures differing from the cited ones)."""
    p = Path(path)
    try:
        d = yaml.safe_load(p.read_text())
        res, hbm, budget, clock = d["resources"], d["hbm"], d["budget"], d["clock_mhz"]
        device = _resources(res["device"], f"{p}: resources.device")
        slrs = tuple(_resources(s, f"{p}: resources.slrs[{i}]") for i, s in enumerate(res["slrs"]))
        board = Board(
            name=str(d["name"]), part=str(d["part"]), platform=str(d["platform"]), device=device,
            slrs=len(slrs), hbm_channels=int(hbm["channels"]), hbm_channel_bytes=int(hbm["channel_bytes"]),
            hbm_channel_gbps=float(hbm["channel_sustained_gbps"]), ddr_gbps=float(d["ddr"]["gbps"]),
            device_cap=float(budget["device_cap"]), slr_cap=float(budget["slr_cap"]), slr_resources=slrs,
            hbm_channel_peak_gbps=float(hbm["channel_peak_gbps"]), clock_mhz_max=float(clock["max"]),
            clock_mhz_target=float(clock["target"]), family=str(d["family"]), flow=str(d["flow"]),
            project_generation=bool(d["project_generation"]), aliases=tuple(d.get("aliases") or ()),
            unverified=tuple(d.get("unverified") or ()), source_file=str(p))
    except (KeyError, TypeError) as e:
        raise BoardError(f"board file {p}: missing or malformed key {e}") from None
    problems = board_problems(board, d.get("cited") or {})
    if problems:
        raise BoardError(f"board file {p}: " + "; ".join(problems))
    return board


def board_problems(b: Board, cited: Dict) -> List[str]:
    """Inconsistencies of a board with itself and with the figures its sources print (``cited``)."""
    out = []
    summed = Resources()
    for s in b.slr_resources:
        summed = summed + s
    for k in KEYS:
        if abs(getattr(summed, k) - getattr(b.device, k)) > 0.5:
            out.append(f"resources.slrs add up to {k} {getattr(summed, k):.0f}, device has {getattr(b.device, k):.0f}")
    if "device" in cited and _resources(cited["device"], "cited.device") != b.device:
        out.append(f"resources.device {b.device.as_dict()} differs from cited.device {cited['device']}")
    if "slrs" in cited and int(cited["slrs"]) != b.slrs:
        out.append(f"{b.slrs} SLRs listed, the source cites {cited['slrs']}")
    if "hbm_total_bytes" in cited and b.hbm_channels * b.hbm_channel_bytes != int(cited["hbm_total_bytes"]):
        out.append(f"HBM {b.hbm_channels} x {b.hbm_channel_bytes} bytes != cited {cited['hbm_total_bytes']}")
    if "hbm_total_peak_gbps" in cited and abs(b.hbm_channels * b.hbm_channel_peak_gbps
                                              - float(cited["hbm_total_peak_gbps"])) > 1e-6:
        out.append(f"HBM {b.hbm_channels} x {b.hbm_channel_peak_gbps} GB/s != cited {cited['hbm_total_peak_gbps']} GB/s")
    if b.hbm_channel_gbps > b.hbm_channel_peak_gbps:
        out.append("hbm.channel_sustained_gbps exceeds channel_peak_gbps")
    if not (0 < b.device_cap <= 1 and 0 < b.slr_cap <= 1):
        out.append("budget caps must be in (0, 1]")
    return out


class _Boards(Mapping):
    """Board name or alias -> Board, read from the board files on first use."""

    def __init__(self, directory: Path):
        self._dir = directory
        self._by_name: Dict[str, Board] = {}

    def _load(self) -> Dict[str, Board]:
        if not self._by_name:
            for f in sorted(self._dir.glob("*.yaml")):
                b = load_board(f)
                for n in (b.name,) + b.aliases:
                    self._by_name[n] = b
        return self._by_name

    def __getitem__(self, name: str) -> Board:
        boards = self._load()
        if name not in boards:
            raise BoardError(f"unknown board {name!r}; known: {self.canonical_names()} (aliases "
                             f"{sorted(n for n in boards if n not in self.canonical_names())})")
        return boards[name]

    def __contains__(self, name) -> bool:
        return name in self._load()

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())

    def canonical_names(self) -> List[str]:
        return sorted({b.name for b in self._load().values()})


BOARDS = _Boards(BOARD_DIR)


def canonical_board_name(name: str) -> str:
    """``alveo-u280`` -> ``u280``; BoardError for an unknown name."""
    return BOARDS[name].name


def __getattr__(name):          # ``from .board import U280`` keeps working
    if name == "U280":
        return BOARDS["u280"]
    raise AttributeError(name)
