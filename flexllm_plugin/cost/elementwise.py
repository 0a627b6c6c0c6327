"""Cost of the element-wise units (layers/flexllm_rmsnorm.h, flexllm_token_quant.h, flexllm_activation.h,
flexllm_hadamard.h, flexllm_embedding.h, flexllm_sampling.h), EW_LANES elements per cycle each."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .reduce import ceil_div, minmax_resources, partials_resources, tree_steps
from .resources import CONTROL, EXP32, FADD, FCMP, FDIV, FMUL, FSQRT, ROUND, Resources, memory

LOOP_FILL = 12


@dataclass(frozen=True)
class ElementwiseUnits:
    lanes: int
    quant_lanes: int              # the per-token quantizer's lanes (QUANT_LANES)
    input_kind: str               # quantizer kind: "uint4_asym" | "int8" | "mixed" (the kind comes with each call)
    hadamard_m: int = 1           # online Hadamard n = m * 2^k (0: none)
    hadamard_n: int = 0
    hadamard_lanes: int = 1

    def rmsnorm(self, rows: int, d: int) -> Counter:
        L = self.lanes
        return Counter({"rmsnorm_squares": rows * ceil_div(d, L), "reduce_tree_steps": rows * tree_steps(L),
                        "rmsnorm_scale": rows * ceil_div(d, L)})

    def quant(self, rows: int, d: int) -> Counter:
        L = self.quant_lanes
        if self.input_kind == "mixed":         # quantize_row_per_call: one min/max pass, one code loop, either kind
            return Counter({"row_min_max": rows * ceil_div(d, L), "quant_codes": rows * ceil_div(d, L)})
        if self.input_kind == "uint4_asym":
            return Counter({"row_min_max": rows * ceil_div(d, L), "quant_uint4": rows * ceil_div(d, L)})
        return Counter({"row_absmax": rows * ceil_div(d, L), "quant_int8": rows * ceil_div(d, L)})

    def swiglu(self, rows: int, d: int) -> Counter:
        return Counter({"silu_elements": rows * ceil_div(d, self.lanes)})

    def hadamard(self, rows: int) -> Counter:
        L, n, m = self.hadamard_lanes, self.hadamard_n, self.hadamard_m
        p = n // m
        log2_p = p.bit_length() - 1
        c = Counter({"hadamard_copy": rows * ceil_div(n, L), "hadamard_pairs": rows * log2_p * ceil_div(n // 2, L)})
        if m == 1:
            c["hadamard_scale"] = rows * ceil_div(n, L)
        else:
            c["hadamard_mix_elements"] = rows * m * m * ceil_div(p, L)
            c["hadamard_mix_scale"] = rows * m * ceil_div(p, L)
        return c

    @staticmethod
    def embedding(n_tokens: int, hidden: int) -> Counter:
        return Counter({"embedding_row": n_tokens * hidden})

    @staticmethod
    def invocations(counter: Counter) -> int:
        """Loop starts of one unit call (each costs LOOP_FILL cycles of pipeline fill)."""
        return sum(1 for v in counter.values() if v)

    def resources(self) -> dict:
        L = self.lanes
        out = {
            "rmsnorm": FMUL * L + partials_resources(L) + FMUL * (2 * L) + FDIV + FSQRT + FADD + CONTROL * 3,
            # per lane: x - off, * inv, round (+ the int8 / uint4 bound select of a per-call quantizer); per row:
            # the clip ratio's two products, the scale's divide and 1 / s
            "token_quant": (minmax_resources(self.quant_lanes) + (FADD + FMUL + ROUND) * self.quant_lanes + FDIV * 2 + FADD
                            + (FMUL * 2 if self.input_kind in ("uint4_asym", "mixed") else Resources())
                            + (Resources(lut=24 * self.quant_lanes) if self.input_kind == "mixed" else Resources())
                            + CONTROL * 2),
            "swiglu": (EXP32 + FADD + FDIV + FMUL + FMUL) * L + CONTROL,
            "embedding": CONTROL,
        }
        if self.hadamard_n:
            n = self.hadamard_n
            H = self.hadamard_lanes
            out["hadamard"] = (FADD * 3 + FMUL) * H + memory(ceil_div(n, H), 32, banks=2 * H) + CONTROL * 4
        return out


@dataclass(frozen=True)
class Sampler:
    vocab: int
    lanes: int
    max_top_k: int = 64

    def greedy(self) -> Counter:
        return Counter({"greedy_argmax": ceil_div(self.vocab, self.lanes)})

    def top_k(self) -> Counter:
        return Counter({"top_k_scan": self.vocab, "topk_weights": self.max_top_k})

    def resources(self) -> Resources:
        return (FCMP * self.lanes + FCMP * self.max_top_k + Resources(lut=60 * self.max_top_k, ff=64 * self.max_top_k)
                + EXP32 + FADD + CONTROL * 3)
