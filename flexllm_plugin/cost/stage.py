"""A kernel's cost: the stage pass composed from the unit models along the schedule, the kernel loops
around it, resources per module, a per-SLR placement, and the budget check.

Composition (what the generated code does, templates/stage_core.h):
* one pass = DATAFLOW of the reader tasks and the compute core; the core runs its unit calls one after the
  other (sequential regions add), each linear call is itself a DATAFLOW of readers -> MAC -> epilogue ->
  distributor (they overlap: the slowest sets the pace, the HBM rate included);
* decode: one pass per token + sampling; prefill: one pass per chunk (the tail only in the last) + sampling.
Iterations (``pass_iterations``) are exact trip counts of the pipelined loops and are held to the C
simulation's counters by tests/test_cost_model.py; cycles add fills, HBM rates and handshakes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .attention import AttentionUnit
from .buffers import buffer_layout, storage_impl
from .board import Board
from .elementwise import LOOP_FILL, ElementwiseUnits, Sampler
from .linear import LinearEngine
from .reduce import ceil_div
from .resources import KEYS, Resources, fifo, maxi_adapter, memory, total

PASS_OVERHEAD = 300        # DATAFLOW start of a pass: reader bursts' first words from HBM (~1 us)
KV_FIFO_DEPTH = 64         # backend/writer.py KV_FIFO_DEPTH: kv_in / kv_out streams
SCALE_LOAD = 6             # attention constants: 3 x heads + 3 x kv heads single-beat reads per layer


class BudgetError(ValueError):
    pass


@dataclass
class StageModel:
    name: str
    schedule: Dict                       # FlexLLM.Schedule of the stage (block / tail calls, widths)
    n_layers: int
    engine: LinearEngine
    attention: AttentionUnit
    units: ElementwiseUnits
    sampler: Sampler
    clock_mhz: float
    board: Board

    # ---- rates ------------------------------------------------------------------------------------
    @property
    def hbm_words_per_cycle(self) -> float:
        return self.board.hbm_channel_gbps * 1e9 / 64 / (self.clock_mhz * 1e6)

    # ---- one pass ---------------------------------------------------------------------------------
    def _calls(self, with_tail: bool):
        for _ in range(self.n_layers):
            for c in self.schedule["block"]:
                yield c, False
        if with_tail:
            for c in self.schedule["tail"]:
                yield c, True

    def pass_iterations(self, n_tokens: int, position: int, with_tail: bool) -> Counter:
        it = Counter(self.units.embedding(n_tokens, self.schedule["hidden"]))
        for c, tail in self._calls(with_tail):
            it.update(self._call_iterations(c, 1 if tail else n_tokens, position))
        return it

    def _call_iterations(self, c: Dict, rows: int, position: int) -> Counter:
        u = c["unit"]
        if u == "UNIT_RMSNORM":
            return self.units.rmsnorm(rows, c["d_in"])
        if u == "UNIT_QUANT":
            return self.units.quant(rows, c["d_in"])
        if u == "UNIT_LINEAR":
            return Counter(self.engine.iterations(rows, c["d_in"], c["d_out"], c.get("kind")))
        if u == "UNIT_ATTENTION":
            return self.attention.iterations(rows, position)
        if u == "UNIT_SWIGLU":
            return self.units.swiglu(rows, c["d_in"])
        return self.units.hadamard(rows)

    def pass_cycles(self, n_tokens: int, position: int, with_tail: bool) -> Dict[str, float]:
        """Cycles of one pass by unit (they add: the core runs one unit at a time)."""
        rate = self.hbm_words_per_cycle
        out = Counter({"embedding": n_tokens * self.schedule["hidden"] + LOOP_FILL, "pass": PASS_OVERHEAD})
        for c, tail in self._calls(with_tail):
            rows = 1 if tail else n_tokens
            u = c["unit"]
            if u == "UNIT_LINEAR":
                out["linear"] += self.engine.cycles(rows, c["d_in"], c["d_out"], rate, c.get("kind"))
            elif u == "UNIT_ATTENTION":
                out["attention"] += self.attention.cycles(rows, position, rate) + SCALE_LOAD * (
                    self.attention.heads + self.attention.kv_heads)
            else:
                it = self._call_iterations(c, rows, position)
                key = {"UNIT_RMSNORM": "rmsnorm", "UNIT_QUANT": "token_quant", "UNIT_SWIGLU": "swiglu"}.get(u, "hadamard")
                out[key] += sum(it.values()) + LOOP_FILL * self.units.invocations(it) * max(rows, 1)
        return dict(out)

    # ---- the kernels ------------------------------------------------------------------------------
    def decode_token_cycles(self, position: int) -> Dict[str, float]:
        c = Counter(self.pass_cycles(1, position, True))
        c["sampling"] += sum(self.sampler.greedy().values()) + LOOP_FILL
        return dict(c)

    def decode_iterations(self, first_position: int, n_steps: int) -> Counter:
        it = Counter()
        for s in range(n_steps):
            it.update(self.pass_iterations(1, first_position + s, True))
            it.update(self.sampler.greedy())
        return it

    def prefill_chunks(self, n_prompt: int):
        chunk = self.schedule["max_tokens"]
        return [(c, min(chunk, n_prompt - c), c + chunk >= n_prompt) for c in range(0, n_prompt, chunk)]

    def prefill_cycles(self, n_prompt: int) -> Dict[str, float]:
        out = Counter()
        for c, n, last in self.prefill_chunks(n_prompt):
            out.update(self.pass_cycles(n, c, last))
            out["chunk_ids"] += n + LOOP_FILL
        out["sampling"] += sum(self.sampler.greedy().values()) + LOOP_FILL
        out["logits_out"] += self.schedule["vocab"] + LOOP_FILL
        return dict(out)

    def prefill_iterations(self, n_prompt: int) -> Counter:
        it = Counter()
        for c, n, last in self.prefill_chunks(n_prompt):
            it.update(self.pass_iterations(n, c, last))
        it.update(self.sampler.greedy())
        return it

    # ---- resources --------------------------------------------------------------------------------
    def resources(self) -> Dict[str, Resources]:
        s = self.schedule
        t, w, row, v = s["max_tokens"], s["width"], s["row"], s["vocab"]
        tl, ol, il = self.engine.token_lanes, self.engine.out_lanes, self.engine.in_lanes
        ew = self.units.lanes
        out: Dict[str, Resources] = {}
        out.update(self.engine.resources())
        out.update(self.attention.resources())
        out.update(self.units.resources())
        out["sampler"] = self.sampler.resources()

        consts = {"MAX_TOKENS": t, "WIDTH": w, "ROW": row}
        hl = self.units.hadamard_lanes if s.get("hadamard_n") else 1
        for name, rows, cols, bits, factor, row_banks in buffer_layout(consts, tl, ol, il, ew, hl, self.units.quant_lanes):
            depth = ceil_div(rows, row_banks) * ceil_div(cols, factor)
            impl = storage_impl(depth * factor * bits // 8, factor * bits)
            out[f"buffer_{name}"] = memory(depth, factor * bits, banks=row_banks, impl=impl)
        depth = ceil_div(v, ol)       # logits: banked by OUT_LANES (the distributor and the argmax lanes)
        out["buffer_logits"] = memory(depth, 32, banks=ol, impl=storage_impl(depth * 4, 32))
        p, kvp = self.engine.ports, 2 * self.attention.kv_lanes
        # weight ports, lmem, fmem / embed, the KV ports (a read and a write argument each), logits / tokens
        out["m_axi"] = (maxi_adapter(512) * p + maxi_adapter(512) + maxi_adapter(32) * 2
                        + (maxi_adapter(512) + maxi_adapter(512, read=False, write=True)) * kvp
                        + maxi_adapter(32, read=False, write=True) * 2)
        out["kv_tasks"] = Resources(lut=150, ff=250) * (2 * kvp) + fifo(KV_FIFO_DEPTH, 512) * (2 * kvp)
        out["core_control"] = Resources(lut=6000, ff=8000)
        return out

    def place(self, res: Dict[str, Resources]) -> Tuple[Dict[int, List[str]], List[Resources]]:
        """Modules -> SLRs: largest first, each to the SLR whose fullest resource stays lowest (balanced
        placement; the HBM-facing modules (m_axi, readers, FIFOs, KV tasks) pinned to SLR0, next to the HBM),
        then repair moves: while an SLR is over its cap, move the module whose move lowers the fullest share
        of the two SLRs the most (deterministic; stops when no move helps). Returns the modules of each SLR
        and their summed resources."""
        cap = self.board.slr * self.board.slr_cap
        n = self.board.slrs
        used = [Resources() for _ in range(n)]
        placement = {i: [] for i in range(n)}
        pinned = ("m_axi", "linear_readers", "linear_fifos", "kv_tasks")

        def share(r: Resources) -> float:
            return max(getattr(r, k) / max(getattr(cap, k), 1) for k in KEYS)

        order = [m for m in pinned if m in res] + sorted((m for m in res if m not in pinned), key=lambda m: -share(res[m]))
        for m in order:
            i = 0 if m in pinned else min(range(n), key=lambda j: (share(used[j] + res[m]), j))
            used[i] = used[i] + res[m]
            placement[i].append(m)
        for _ in range(4 * len(res)):
            worst = max(range(n), key=lambda j: (share(used[j]), -j))
            if share(used[worst]) <= 1.0:
                break
            best = None
            for m in placement[worst]:
                if m in pinned:
                    continue
                for j in range(n):
                    if j == worst:
                        continue
                    after = max(share(used[worst] + res[m] * -1.0), share(used[j] + res[m]))
                    if after < share(used[worst]) - 1e-9 and (best is None or after < best[0]):
                        best = (after, m, j)
            if best is None:
                break
            _, m, j = best
            placement[worst].remove(m)
            placement[j].append(m)
            used[worst] = used[worst] + res[m] * -1.0
            used[j] = used[j] + res[m]
        return placement, used

    def budget_report(self) -> Dict:
        """Resources per module, device totals and the per-SLR placement against the board, plus
        ``over_budget``: the first cap exceeded (naming resource and module), or None."""
        res = self.resources()
        placement, used = self.place(res)
        dev = total(res.values())
        report = {"device": {k: int(round(getattr(dev, k))) for k in KEYS},
                  "device_budget": self.board.device.as_dict(),
                  "device_utilization": {k: round(getattr(dev, k) / getattr(self.board.device, k), 4) for k in KEYS},
                  "slr": [{"modules": placement[i], "resources": used[i].as_dict(),
                           "utilization": {k: round(getattr(used[i], k) / getattr(self.board.slr, k), 4) for k in KEYS}}
                          for i in range(self.board.slrs)],
                  "modules": {m: r.as_dict() for m, r in res.items()}}
        report["over_budget"] = self._over_budget(report, res)
        return report

    def _over_budget(self, rep: Dict, res: Dict[str, Resources]) -> Optional[str]:
        for k, u in rep["device_utilization"].items():
            if u > self.board.device_cap:
                big = max(res, key=lambda m: getattr(res[m], k))
                return (f"{self.name}: {k.upper()} at {100 * u:.1f} % of the {self.board.name} device (cap "
                        f"{100 * self.board.device_cap:.0f} %); largest module '{big}' uses {getattr(res[big], k):,.0f}")
        for i, slr in enumerate(rep["slr"]):
            for k, u in slr["utilization"].items():
                if u > self.board.slr_cap:
                    mods = [m for m in slr["modules"] if getattr(res[m], k) > 0]
                    big = max(mods, key=lambda m: getattr(res[m], k)) if mods else "?"
                    return (f"{self.name}: SLR{i} {k.upper()} at {100 * u:.1f} % (cap {100 * self.board.slr_cap:.0f} %); "
                            f"module '{big}' alone uses {getattr(res[big], k):,.0f}")
        return None

    def check_budget(self) -> None:
        """BudgetError naming the resource and the largest module where a cap is exceeded."""
        problem = self.budget_report()["over_budget"]
        if problem:
            raise BudgetError(problem)


def stage_model(name: str, schedule: Dict, n_layers: int, lanes: Dict, board: Board, clock_mhz: float) -> StageModel:
    """The model of one stage kernel from its schedule (FlexLLM.Schedule) and lane configuration."""
    s = schedule
    engine = LinearEngine(max_tokens=s["max_tokens"], max_in=s["width"], max_out=s["max_out"],
                          token_lanes=lanes["token_lanes"], out_lanes=lanes["out_lanes"], in_lanes=lanes["in_lanes"],
                          weight_bits=s["weight_bits"], input_kind=s["input_kind"], ports=lanes["ports"],
                          mac=lanes.get("mac", "MAC_LUT"), dsp_lanes=lanes.get("dsp_lanes", 0))
    att = AttentionUnit(max_ctx=lanes["max_context"], max_new=s["max_tokens"], head_dim=s["head_dim"],
                        heads=s["heads"], kv_heads=s["kv_heads"], head_lanes=lanes["head_lanes"],
                        key_lanes=lanes["key_lanes"], kv_lanes=lanes["kv_lanes"])
    units = ElementwiseUnits(lanes=lanes["element_lanes"], quant_lanes=lanes.get("quant_lanes", lanes["element_lanes"]),
                             input_kind=s["input_kind"],
                             hadamard_m=s.get("hadamard_m") or 1, hadamard_n=s.get("hadamard_n") or 0,
                             hadamard_lanes=lanes.get("hadamard_lanes", 1))
    sampler = Sampler(vocab=s["vocab"], lanes=lanes["out_lanes"])
    return StageModel(name, s, n_layers, engine, att, units, sampler, clock_mhz, board)
