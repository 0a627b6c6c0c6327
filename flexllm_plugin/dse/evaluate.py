"""One candidate design through the cost model: its config, the budget of each kernel (resources per SLR
and device, HBM channels and their capacity, clock) and its modeled speed.

The two kernels are evaluated apart and cached by the knobs that shape each (``space.SHARED`` +
``DECODE_ONLY`` for decode, ``SHARED`` + ``PREFILL_ONLY`` for prefill), so a design costs at most one
evaluation of each kernel. Decode time over N new tokens after a P-token prompt is the trapezoid of the
per-token time at positions P and P + N - 1 (the per-token time is affine in the position up to the
rounding of the attention loops).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from ..config import ConfigError, FlexLLMConfig, cross_checks
from ..cost.from_config import models_of_config
from .memo import memoize_units
from .space import DECODE_ONLY, KNOBS, PREFILL_ONLY, SHARED

DECODE_KEY = SHARED + DECODE_ONLY
PREFILL_KEY = SHARED + PREFILL_ONLY


@dataclass
class KernelResult:
    feasible: bool
    reason: Optional[str] = None
    utilization: float = 0.0                       # largest device share of any resource
    device_utilization: Dict[str, float] = field(default_factory=dict)
    slr_utilization: list = field(default_factory=list)
    resources: Dict[str, int] = field(default_factory=dict)
    metrics: Dict[str, float] = field(default_factory=dict)


class Evaluator:
    def __init__(self, cfg: FlexLLMConfig, arch, spec, board, prompt: int, new_tokens: int, context: int):
        self.base = copy.deepcopy(cfg.data)
        self.base["Board"] = board.name
        self.base["Part"] = board.part
        self.arch, self.spec, self.board = arch, spec, board
        self.prompt, self.new_tokens, self.context = int(prompt), int(new_tokens), int(context)
        self.clock_mhz = 1e3 / float(self.base["ClockPeriod"])
        if self.clock_mhz > board.clock_mhz_max * 1.005:          # 3.33 ns is "300 MHz"
            raise ConfigError(f"ClockPeriod {self.base['ClockPeriod']} ns ({self.clock_mhz:.0f} MHz) exceeds the "
                              f"{board.name}'s kernel clock limit of {board.clock_mhz_max:.0f} MHz")
        self.decode_cache: Dict[Tuple, KernelResult] = {}
        self.prefill_cache: Dict[Tuple, KernelResult] = {}
        self.counts = {"decode": 0, "prefill": 0, "budget_only": 0}

    # ---- the candidate's config ------------------------------------------------------------------
    def config_data(self, point: Dict) -> Dict:
        data = copy.deepcopy(self.base)
        for knob, v in point.items():
            section, key = knob.split(".")
            data[section][key] = v
        return data

    def _problem(self, data: Dict) -> Optional[str]:
        """Why the config cannot be built (config cross-checks, HBM channel capacity), else None."""
        try:
            cross_checks(data)
        except ConfigError as e:
            return str(e)
        p = data["Prefill"]
        if p["TP"] > p["ChunkTokens"]:
            return f"Prefill.TP {p['TP']} above Prefill.ChunkTokens {p['ChunkTokens']} (lanes clamp to the chunk)"
        from ..preflight import linear_weight_count
        from ..project.spec import kv_lanes, kv_port_bytes
        a, b, d = self.arch, self.board, data["Decode"]
        per_port = linear_weight_count(a) * self.spec.weight_bits / 8 / d["BP"]
        kv = kv_port_bytes(a.num_layers, a.num_kv_heads, d["MaxContext"], a.head_dim, kv_lanes(d["KVParallel"], d["BP"]))
        if per_port + kv > b.hbm_channel_bytes:
            return (f"Decode.BP {d['BP']}: {per_port / 2 ** 20:.0f} MB of weights + {kv / 2 ** 20:.0f} MB of a KV "
                    f"buffer per channel, over one {b.hbm_channel_bytes / 2 ** 20:.0f} MB HBM channel")
        return None

    def _models(self, data: Dict):
        cfg = FlexLLMConfig(data)
        return {k: memoize_units(m) for k, m in models_of_config(cfg, self.arch, self.spec).items()}

    @staticmethod
    def _budget(model) -> KernelResult:
        rep = model.budget_report()
        util = rep["device_utilization"]
        return KernelResult(feasible=rep["over_budget"] is None, reason=rep["over_budget"],
                            utilization=max(util.values()), device_utilization=util,
                            slr_utilization=[s["utilization"] for s in rep["slr"]], resources=rep["device"])

    # ---- kernels ------------------------------------------------------------------------------------
    def decode(self, point: Dict) -> KernelResult:
        key = tuple(point[k] for k in DECODE_KEY)
        if key not in self.decode_cache:
            self.decode_cache[key] = self._decode(point)
        return self.decode_cache[key]

    def _decode(self, point: Dict) -> KernelResult:
        data = self.config_data(point)
        problem = self._problem(data)
        if problem:
            return KernelResult(False, problem)
        model = self._models(data)["decode"]
        res = self._budget(model)
        if not res.feasible:
            self.counts["budget_only"] += 1
            return res
        self.counts["decode"] += 1
        f = model.clock_mhz * 1e6

        def seconds(position):
            return sum(model.decode_token_cycles(position).values()) / f
        t_ctx = seconds(self.context - 1)
        t_first, t_last = seconds(self.prompt), seconds(self.prompt + self.new_tokens - 1)
        decode_s = self.new_tokens * (t_first + t_last) / 2
        res.metrics = {"decode_tokens_per_s": 1.0 / t_ctx, "decode_seconds": decode_s,
                       "decode_mean_tokens_per_s": self.new_tokens / decode_s}
        return res

    def prefill(self, point: Dict) -> KernelResult:
        key = tuple(point[k] for k in PREFILL_KEY)
        if key not in self.prefill_cache:
            self.prefill_cache[key] = self._prefill(point)
        return self.prefill_cache[key]

    def prefill_budget(self, point: Dict) -> KernelResult:
        """Feasibility only (cheap): the cached full result when there is one."""
        key = tuple(point[k] for k in PREFILL_KEY)
        if key in self.prefill_cache:
            return self.prefill_cache[key]
        data = self.config_data(point)
        problem = self._problem(data)
        if problem:
            self.prefill_cache[key] = KernelResult(False, problem)
            return self.prefill_cache[key]
        res = self._budget(self._models(data)["prefill"])
        if not res.feasible:
            self.prefill_cache[key] = res
            self.counts["budget_only"] += 1
        return res

    def _prefill(self, point: Dict) -> KernelResult:
        data = self.config_data(point)
        problem = self._problem(data)
        if problem:
            return KernelResult(False, problem)
        model = self._models(data)["prefill"]
        res = self._budget(model)
        if not res.feasible:
            self.counts["budget_only"] += 1
            return res
        self.counts["prefill"] += 1
        res.metrics = {"prefill_seconds": sum(model.prefill_cycles(self.prompt).values()) / (model.clock_mhz * 1e6)}
        return res

    # ---- a whole design -----------------------------------------------------------------------------
    def design(self, point: Dict) -> Dict:
        d, p = self.decode(point), self.prefill(point)
        ok = d.feasible and p.feasible
        out = {"knobs": {k: point[k] for k in KNOBS}, "feasible": ok,
               "reason": None if ok else (d.reason if not d.feasible else p.reason)}
        if ok:
            m = dict(d.metrics)
            m.update(p.metrics)
            m["end_to_end_seconds"] = m["prefill_seconds"] + m["decode_seconds"]
            m["utilization"] = max(d.utilization, p.utilization)
            out.update(metrics=m, decode_kernel={"utilization": d.device_utilization, "resources": d.resources,
                                                 "slr_utilization": d.slr_utilization},
                       prefill_kernel={"utilization": p.device_utilization, "resources": p.resources,
                                       "slr_utilization": p.slr_utilization})
        return out
