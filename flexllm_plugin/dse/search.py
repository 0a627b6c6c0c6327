"""Design-space search over the FlexLLM knobs with the cost model as objective and the board as budget.

A design = the knob values of both kernels. Given the SHARED knobs ``s`` (BP, HP, KVParallel) the two
kernels are independent (separate xclbins, ``space.py``), so every objective below is optimal at
(s, best decode knobs for s, best prefill knobs for s). The search therefore:

1. evaluates the decode kernel for EVERY (s, decode knobs): one decode evaluation costs about 3 ms, and
   this also gives the exact decode Pareto front (tokens/s against the kernel's resource share);
2. for the prefill kernel (about 60 ms an evaluation at a 1,024-token prompt):
   * ``exhaustive`` (the default when the shared x prefill space has at most ``EXHAUSTIVE_PREFILL``
     points): every point;
   * ``local`` otherwise: the best prefill knobs for the most promising shared tuples (ranked by their
     best decode), then a steepest-descent local search over (s, prefill knobs) from those designs, moving
     one knob to an adjacent value or two knobs in opposite directions (trading lanes of one kind for
     another at the budget's edge), until no neighbour improves; then the best prefill knobs of the shared
     tuple reached (per chunk and TP the widest WP that fits) and on from there if they are better. For the decode objective the ranking
     continues until the best decode among the remaining tuples is worse than the best design found, so
     the decode optimum is exact; the prefill side rests on the local search.
Budgets that prune: a kernel over any cap (device, SLR, HBM channel count or capacity, clock) is
infeasible; its cycles are not computed. Everything is deterministic (ordered spaces, lexicographic
tie-breaks).
"""

from __future__ import annotations

import itertools
import time
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from .evaluate import Evaluator
from .space import DECODE_ONLY, KNOBS, PREFILL_ONLY, SHARED, Space

OBJECTIVES = ("decode", "prefill", "end-to-end")
EXHAUSTIVE_PREFILL = 400
START_TUPLES = 3
FRONT_SAMPLES = 16          # decode-front designs completed with a prefill design (local mode)
RANKED = 16                 # whole designs kept in the result, best first (the candidates of a sweep)
INF = float("inf")


def _points(space: Space, knobs) -> Iterable[Dict]:
    for values in itertools.product(*(space[k] for k in knobs)):
        yield dict(zip(knobs, values))


def score(objective: str, m: Dict) -> Tuple:
    """Lower is better; lexicographic tie-breaks (then the smaller design)."""
    if objective == "decode":
        return (-m["decode_tokens_per_s"], m["prefill_seconds"], m["utilization"])
    if objective == "prefill":
        return (m["prefill_seconds"], -m["decode_tokens_per_s"], m["utilization"])
    return (m["end_to_end_seconds"], m["utilization"])


def _decode_key(objective: str, res) -> Tuple:
    if objective == "end-to-end":
        return (res.metrics["decode_seconds"], res.utilization)
    return (-res.metrics["decode_tokens_per_s"], res.utilization)


def pareto(points: List[Dict], axes: Tuple[Tuple[str, str], ...]) -> List[Dict]:
    """Non-dominated points; ``axes`` = ((metric, "min"|"max"), ...). Sorted by the first axis."""
    def key(p):
        return tuple(p["metrics"][a] if d == "min" else -p["metrics"][a] for a, d in axes)
    pts = sorted(points, key=key)
    front: List[Dict] = []
    for p in pts:
        kp = key(p)
        if not any(all(a <= b for a, b in zip(key(q), kp)) and key(q) != kp for q in front) and \
                not any(key(q) == kp for q in front):
            front.append(p)
    return front


class Search:
    def __init__(self, ev: Evaluator, space: Space, objective: str, mode: str = "auto",
                 log: Callable[[str], None] = lambda s: None):
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if mode not in ("auto", "exhaustive", "local"):
            raise ValueError(f"mode must be auto, exhaustive or local, got {mode!r}")
        self.ev, self.space, self.objective, self.log = ev, space, objective, log
        n_prefill = space.size(SHARED + PREFILL_ONLY)
        self.mode = mode if mode != "auto" else ("exhaustive" if n_prefill <= EXHAUSTIVE_PREFILL else "local")
        self.best_decode: Dict[Tuple, Dict] = {}       # s -> best decode knobs (the objective's criterion)
        self.designs: Dict[Tuple, Dict] = {}           # full knob tuple -> design dict

    # ---- step 1: decode, all of it ----------------------------------------------------------------
    def _decode_phase(self) -> None:
        for s in _points(self.space, SHARED):
            best = None
            for dk in _points(self.space, DECODE_ONLY):
                pt = {**s, **dk}
                r = self.ev.decode(pt)
                if r.feasible and (best is None or _decode_key(self.objective, r) < best[0]):
                    best = (_decode_key(self.objective, r), dk)
            if best is not None:
                self.best_decode[tuple(s[k] for k in SHARED)] = best[1]

    # ---- designs ------------------------------------------------------------------------------------
    def _design(self, s: Tuple, p: Dict) -> Optional[Dict]:
        """The design of shared tuple s, its best decode knobs and prefill knobs p (None if s has none)."""
        if s not in self.best_decode:
            return None
        pt = {**dict(zip(SHARED, s)), **self.best_decode[s], **p}
        key = tuple(pt[k] for k in KNOBS)
        if key not in self.designs:
            self.designs[key] = self.ev.design(pt)
        return self.designs[key]

    def _value(self, d: Optional[Dict]) -> Tuple:
        if d is None or not d["feasible"]:
            return (INF,)
        return score(self.objective, d["metrics"])

    def _best_prefill_knobs(self, s: Tuple) -> Optional[Dict]:
        """For one shared tuple: per setting of the other prefill knobs the widest prefill MAC row (Prefill.WP)
        that fits (budget checks only), then the fastest of those (the modeled time falls as WP grows)."""
        sd = dict(zip(SHARED, s))
        best = None
        for other in _points(self.space, tuple(k for k in PREFILL_ONLY if k != "Prefill.WP")):
            for wp in sorted(self.space["Prefill.WP"], reverse=True):
                p = {**other, "Prefill.WP": wp}
                if self.ev.prefill_budget({**sd, **p}).feasible:
                    v = self._value(self._design(s, p))
                    if best is None or v < best[0]:
                        best = (v, p)
                    break
        return None if best is None or best[0] == (INF,) else best[1]

    def _neighbours(self, point: Dict) -> Iterable[Dict]:
        knobs = SHARED + PREFILL_ONLY
        idx = {k: self.space[k].index(point[k]) for k in knobs}
        for k in knobs:
            for step in (-1, 1):
                j = idx[k] + step
                if 0 <= j < len(self.space[k]):
                    yield {**point, k: self.space[k][j]}
        for a, b in itertools.permutations(knobs, 2):
            ja, jb = idx[a] + 1, idx[b] - 1
            if ja < len(self.space[a]) and jb >= 0:
                yield {**point, a: self.space[a][ja], b: self.space[b][jb]}

    def _local(self, start: Dict) -> None:
        cur = start
        cur_v = self._value(self._design(tuple(cur[k] for k in SHARED), {k: cur[k] for k in PREFILL_ONLY}))
        while True:
            best, best_v = None, cur_v
            for nb in self._neighbours(cur):
                s = tuple(nb[k] for k in SHARED)
                if s not in self.best_decode:
                    continue
                p = {k: nb[k] for k in PREFILL_ONLY}
                if not self.ev.prefill_budget({**dict(zip(SHARED, s)), **p}).feasible:
                    continue
                v = self._value(self._design(s, p))
                if v < best_v:
                    best, best_v = nb, v
            if best is None:
                # polish: the best prefill knobs of the tuple reached (per chunk and TP the widest WP that
                # fits) may lie beyond single moves; climb on from there when they are better
                sd = tuple(cur[k] for k in SHARED)
                p = self._best_prefill_knobs(sd)
                if p is None:
                    return
                v = self._value(self._design(sd, p))
                if not v < cur_v:
                    return
                best, best_v = {**dict(zip(SHARED, sd)), **p}, v
            cur, cur_v = best, best_v

    # ---- step 2 -----------------------------------------------------------------------------------
    def _prefill_phase(self) -> None:
        tuples = sorted(self.best_decode, key=lambda s: (
            _decode_key(self.objective, self.ev.decode({**dict(zip(SHARED, s)), **self.best_decode[s]})), s))
        if self.mode == "exhaustive":
            for s in tuples:
                for p in _points(self.space, PREFILL_ONLY):
                    if self.ev.prefill_budget({**dict(zip(SHARED, s)), **p}).feasible:
                        self._design(s, p)
            return
        starts = []
        incumbent = (INF,)
        for s in tuples:
            dk = _decode_key(self.objective, self.ev.decode({**dict(zip(SHARED, s)), **self.best_decode[s]}))
            if self.objective == "decode" and incumbent != (INF,) and dk[0] > incumbent[0]:
                break              # every remaining tuple decodes slower than the incumbent
            if self.objective != "decode" and len(starts) >= START_TUPLES:
                break
            p = self._best_prefill_knobs(s)
            if p is None:
                continue
            v = self._value(self._design(s, p))
            incumbent = min(incumbent, v)
            starts.append({**dict(zip(SHARED, s)), **p})
            if self.objective == "decode" and len(starts) >= START_TUPLES and dk[0] > incumbent[0]:
                break
        for st in starts[:START_TUPLES]:
            self._local(st)
        self._front_samples()

    def _front_samples(self) -> None:
        """Whole designs along the decode front (one prefill design per shared tuple on it: the incumbent's
        chunk and TP with the widest prefill MAC row that fits), so the prefill-vs-decode front shows the
        trade-off and not only the neighbourhood of the optimum."""
        feasible = [d for d in self.designs.values() if d["feasible"]]
        if not feasible:
            return
        inc = min(feasible, key=lambda d: score(self.objective, d["metrics"]))["knobs"]
        pts = [{"knobs": {k: key[i] for i, k in enumerate(SHARED + DECODE_ONLY)},
                "metrics": {"decode_tokens_per_s": r.metrics["decode_tokens_per_s"], "decode_utilization": r.utilization}}
               for key, r in self.ev.decode_cache.items() if r.feasible]
        seen = set()
        for p in pareto(pts, (("decode_utilization", "min"), ("decode_tokens_per_s", "max")))[-FRONT_SAMPLES:]:
            s = tuple(p["knobs"][k] for k in SHARED)
            if s in seen or s not in self.best_decode:
                continue
            seen.add(s)
            for wp in sorted(self.space["Prefill.WP"], reverse=True):
                pk = {**{k: inc[k] for k in PREFILL_ONLY}, "Prefill.WP": wp}
                if self.ev.prefill_budget({**dict(zip(SHARED, s)), **pk}).feasible:
                    self._design(s, pk)
                    break

    # ---- the whole search -------------------------------------------------------------------------
    def run(self) -> Dict:
        t0 = time.perf_counter()
        self._decode_phase()
        t1 = time.perf_counter()
        self.log(f"decode kernel: {len(self.ev.decode_cache)} designs in {t1 - t0:.1f} s, "
                 f"{len(self.best_decode)} shared tuples fit")
        self._prefill_phase()
        t2 = time.perf_counter()
        feasible = [d for d in self.designs.values() if d["feasible"]]
        self.log(f"prefill kernel ({self.mode}): {self.ev.counts['prefill']} evaluations in {t2 - t1:.1f} s; "
                 f"{len(feasible)} feasible designs")
        best = min(feasible, key=lambda d: (score(self.objective, d["metrics"]),
                                            tuple(str(d["knobs"][k]) for k in KNOBS)), default=None)
        decode_points = [{"knobs": {k: key[i] for i, k in enumerate(SHARED + DECODE_ONLY)},
                          "metrics": {"decode_tokens_per_s": r.metrics["decode_tokens_per_s"],
                                      "decode_utilization": r.utilization}}
                         for key, r in self.ev.decode_cache.items() if r.feasible]
        prefill_points = [{"knobs": {k: key[i] for i, k in enumerate(SHARED + PREFILL_ONLY)},
                           "metrics": {"prefill_seconds": r.metrics["prefill_seconds"],
                                       "prefill_utilization": r.utilization}}
                          for key, r in self.ev.prefill_cache.items() if r.feasible and r.metrics]
        ranked = sorted(feasible, key=lambda d: (score(self.objective, d["metrics"]),
                                                 tuple(str(d["knobs"][k]) for k in KNOBS)))[:RANKED]
        return {
            "objective": self.objective, "mode": self.mode, "best": best,
            "ranked": ranked,      # the best whole designs by the objective (flexllm dse --build-top K)
            "pareto": {
                "decode_tokens_per_s_vs_utilization": pareto(decode_points, (("decode_utilization", "min"),
                                                                             ("decode_tokens_per_s", "max"))),
                "prefill_seconds_vs_utilization": pareto(prefill_points, (("prefill_utilization", "min"),
                                                                          ("prefill_seconds", "min"))),
                "prefill_vs_decode": pareto(feasible, (("prefill_seconds", "min"), ("decode_tokens_per_s", "max"))),
            },
            "points": {   # every feasible evaluated point, for plots: [x, y] as on the fronts
                "decode": [[p["metrics"]["decode_utilization"], p["metrics"]["decode_tokens_per_s"]] for p in decode_points],
                "prefill": [[p["metrics"]["prefill_utilization"], p["metrics"]["prefill_seconds"]] for p in prefill_points],
                "designs": [[d["metrics"]["prefill_seconds"], d["metrics"]["decode_tokens_per_s"]] for d in feasible]},
            "evaluations": {"decode_kernel": len(self.ev.decode_cache), "prefill_kernel_timed": self.ev.counts["prefill"],
                            "budget_checks_over": self.ev.counts["budget_only"], "designs": len(self.designs)},
            "seconds": {"decode_phase": round(t1 - t0, 2), "prefill_phase": round(t2 - t1, 2),
                        "total": round(t2 - t0, 2)},
        }
