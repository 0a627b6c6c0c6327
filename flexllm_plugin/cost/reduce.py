"""Cost of layers/flexllm_reduce.h: the sum_partials tree and the one-pass row min/max / absmax."""

from __future__ import annotations

from .resources import FADD, FCMP, Resources, memory

REDUCE_PARTIALS = 128


def ceil_div(a: int, b: int) -> int:
    return -(-int(a) // int(b))


def tree_steps(lanes: int) -> int:
    """REDUCE_TREE_STEPS iterations of reduce_partials_tree<LANES>: levels 128 -> 1, ceil(h / LANES) each."""
    w, steps = REDUCE_PARTIALS, 0
    while w > 1:
        steps += ceil_div(w // 2, lanes)
        w //= 2
    return steps


def partials_resources(lanes: int) -> Resources:
    """LANES fp32 adders on the 128 partial sums (banked 2 x LANES) + the tree's LANES adders (shared)."""
    return FADD * lanes + memory(REDUCE_PARTIALS // (2 * lanes), 32, banks=2 * lanes)


def minmax_resources(lanes: int) -> Resources:
    return FCMP * (2 * lanes)
