// flexllm_reduce.h: row reductions of the numerics contract.
//
//   sum_partials   fp32 sum with REDUCE_PARTIALS = 128 interleaved partial sums, then a fixed tree:
//                    p[r] = +0 (r < 128);  for k = 0 .. n-1 (increasing): p[k % 128] = p[k % 128] + x[k]
//                    q = p;  repeatedly q[i] = q[2i] + q[2i+1]  (128 -> 64 -> ... -> 1);  result q[0]
//                  == brevitas_models.fp32.sum_partials (appending +0 elements never changes it)
//   row_min, row_max, row_min_max, row_absmax   exact, any order (zero signs: see f32_min / f32_max)
//
// Hardware meaning of the LANES template parameter (LANES divides 128, LANES <= 16, so it is one of
// 1, 2, 4, 8, 16): LANES elements per cycle; lane l of cycle c adds element k = c*LANES + l into
// partial k % 128. The LANES partials touched in one cycle are distinct, and each partial is updated
// every 128 / LANES >= 8 cycles, so the loop-carried distance (DEPENDENCE ... distance = 128/LANES)
// covers the fp32 adder latency and the accumulation holds II = 1. The result does not depend on
// LANES: the partial of element k is k % 128 and each partial sees its elements in increasing k.
// The 127-add tree at the end is a short fixed pipeline (LANES adds per cycle per level, 7 levels).
//
// Storage: p[128] is partitioned cyclic by 2*LANES (banks b = r % (2*LANES), depth 128/(2*LANES):
// registers / LUTRAM). Accumulation: LANES consecutive partials per cycle = LANES distinct banks,
// one read + one write each. Tree level, step i0 (multiple of LANES): reads q[2*i0 .. 2*i0 + 2*LANES-1]
// (one per bank), writes q[i0 .. i0 + LANES-1] (one per bank): at most 2 accesses per bank per cycle
// (dual port). The in-place tree is exact: q[i] is written only after q[2i'] = q[i] (i' = i/2 <= i)
// was read.
//
// min / max: per-lane running values combined at the end. f32_min / f32_max implement the min / max
// of the total order -inf < ... < -0 < +0 < ... < +inf (no NaN by contract), so the result is the
// same for every LANES and every element order.
#pragma once

#include "flexllm_math.h"
#include "flexllm_types.h"

namespace flexllm {

static const int REDUCE_PARTIALS = 128;

template <int LANES>
struct reduce_lanes_check {
    static_assert(LANES >= 1 && LANES <= 16 && (REDUCE_PARTIALS % LANES) == 0,
                  "LANES must divide 128 and be <= 16 (loop-carried distance 128/LANES >= 8)");
    static const int distance = REDUCE_PARTIALS / LANES;
    static const int banks = 2 * LANES;
};

// The fixed pairwise tree over p[0 .. 127] (in place; p is destroyed). LANES adds per cycle.
template <int LANES = 1>
float reduce_partials_tree(float p[REDUCE_PARTIALS]) {
#pragma HLS INLINE
REDUCE_TREE_LEVELS:
    for (int w = REDUCE_PARTIALS; w > 1; w >>= 1) {
        const int h = w >> 1;
    REDUCE_TREE_STEPS:
        for (int i0 = 0; i0 < h; i0 += LANES) {
#pragma HLS LOOP_TRIPCOUNT max = REDUCE_PARTIALS / 2 / LANES
#pragma HLS PIPELINE II = 1
#pragma HLS DEPENDENCE variable = p inter false
        FLEXLLM_COUNT("reduce_tree_steps");
        REDUCE_TREE_LANES:
            for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
                const int i = i0 + l;
                if (i < h) p[i] = p[2 * i] + p[2 * i + 1];
            }
        }
    }
    return p[0];
}

// The fixed tree over the partials of LANE_SETS rows at once (p[s] for s < LANE_SETS, each destroyed):
// level by level, LANES adds per cycle walking the rows one after the other, so each level is ONE
// pipelined loop of LANE_SETS x (w / 2 / LANES) steps (one pipeline fill per level, not per row). Each row's
// result is the same fixed tree as reduce_partials_tree.
template <int LANE_SETS, int LANES = 1>
void reduce_partials_tree_sets(float p[LANE_SETS][REDUCE_PARTIALS], float result[LANE_SETS]) {
#pragma HLS INLINE
REDUCE_SETS_LEVELS:
    for (int w = REDUCE_PARTIALS; w > 1; w >>= 1) {
        const int h = w >> 1;
        const int per_set = (h + LANES - 1) / LANES;
    REDUCE_SETS_STEPS:
        for (int e = 0; e < LANE_SETS * per_set; ++e) {
#pragma HLS LOOP_TRIPCOUNT max = LANE_SETS * REDUCE_PARTIALS / 2 / LANES
#pragma HLS PIPELINE II = 1
#pragma HLS DEPENDENCE variable = p inter false
            FLEXLLM_COUNT("reduce_tree_steps");
            const int set = e / per_set;
            const int i0 = (e - set * per_set) * LANES;
        REDUCE_SETS_LANES:
            for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
                const int i = i0 + l;
                if (i < h) p[set][i] = p[set][2 * i] + p[set][2 * i + 1];
            }
        }
    }
    for (int set = 0; set < LANE_SETS; ++set) {
#pragma HLS UNROLL
        result[set] = p[set][0];
    }
}

// Streaming form: reset(), add(k, v) for k = 0, 1, 2, ... in increasing order (any k may be skipped
// if its element is +0), then result(). add_lanes(c, v, n) adds the elements k = c*LANES + l < n of
// cycle c. The caller partitions p cyclic by 2*LANES (see the header comment).
template <int LANES = 1>
struct sum_partials_accumulator {
    float p[REDUCE_PARTIALS];

    sum_partials_accumulator() { reset(); }

    void reset() {
#pragma HLS INLINE
        constexpr int B = reduce_lanes_check<LANES>::banks;
        (void)B;
    SUM_PARTIALS_RESET:
        for (int r = 0; r < REDUCE_PARTIALS; ++r) {
#pragma HLS UNROLL factor = B
            p[r] = 0.0f;
        }
    }

    void add(int k, float v) {
#pragma HLS INLINE
        const int r = k & (REDUCE_PARTIALS - 1);
        p[r] = p[r] + v;
    }

    void add_lanes(int c, const float v[LANES], int n) {
#pragma HLS INLINE
    SUM_PARTIALS_ADD_LANES:
        for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
            const int k = c * LANES + l;
            if (k < n) add(k, v[l]);
        }
    }

    // Leaves the accumulator unusable until reset() (the tree runs in place).
    float result() {
#pragma HLS INLINE
        return reduce_partials_tree<LANES>(p);
    }
};

// sum_partials of x[0 .. n-1] (n == 0 gives +0). x partitioned cyclic by LANES (caller).
template <int MAX_N, int LANES = 1>
float sum_partials(const float x[MAX_N], int n) {
    constexpr int D = reduce_lanes_check<LANES>::distance;  // loop-carried distance on p
    constexpr int B = reduce_lanes_check<LANES>::banks;     // banks of p (cyclic)
    float p[REDUCE_PARTIALS];
#pragma HLS ARRAY_PARTITION variable = p cyclic factor = B
SUM_PARTIALS_RESET:
    for (int r = 0; r < REDUCE_PARTIALS; ++r) {
#pragma HLS UNROLL factor = B
        p[r] = 0.0f;
    }
SUM_PARTIALS:
    for (int c = 0; c * LANES < n; ++c) {
#pragma HLS LOOP_TRIPCOUNT max = (MAX_N + LANES - 1) / LANES
#pragma HLS PIPELINE II = 1
#pragma HLS DEPENDENCE variable = p inter distance = D true
    FLEXLLM_COUNT("sum_partials");
    SUM_PARTIALS_LANES:
        for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
            const int k = c * LANES + l;
            if (k < n) {
                const int r = k & (REDUCE_PARTIALS - 1);
                p[r] = p[r] + x[k];
            }
        }
    }
    (void)D;
    (void)B;
    return reduce_partials_tree<LANES>(p);
}

// Combination of per-lane running values (exact: f32_min / f32_max are order independent).
template <int LANES>
float combine_min(const float m[LANES]) {
#pragma HLS INLINE
    float r = m[0];
COMBINE_MIN:
    for (int l = 1; l < LANES; ++l) {
#pragma HLS UNROLL
        r = f32_min(r, m[l]);
    }
    return r;
}

template <int LANES>
float combine_max(const float m[LANES]) {
#pragma HLS INLINE
    float r = m[0];
COMBINE_MAX:
    for (int l = 1; l < LANES; ++l) {
#pragma HLS UNROLL
        r = f32_max(r, m[l]);
    }
    return r;
}

// min_k x[k] and max_k x[k] in ONE pass, n >= 1 (-0 counts as smaller than +0). Lanes start at
// +inf / -inf (neutral for f32_min / f32_max, also when x holds +-inf). x cyclic by LANES.
template <int MAX_N, int LANES = 1>
void row_min_max(const float x[MAX_N], int n, float &mn, float &mx) {
    float lmin[LANES], lmax[LANES];
#pragma HLS ARRAY_PARTITION variable = lmin complete
#pragma HLS ARRAY_PARTITION variable = lmax complete
ROW_MIN_MAX_INIT:
    for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
        lmin[l] = INFINITY;
        lmax[l] = -INFINITY;
    }
ROW_MIN_MAX:
    for (int c = 0; c * LANES < n; ++c) {
#pragma HLS LOOP_TRIPCOUNT max = (MAX_N + LANES - 1) / LANES
#pragma HLS PIPELINE II = 1
    FLEXLLM_COUNT("row_min_max");
    ROW_MIN_MAX_LANES:
        for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
            const int k = c * LANES + l;
            if (k < n) {
                lmin[l] = f32_min(lmin[l], x[k]);
                lmax[l] = f32_max(lmax[l], x[k]);
            }
        }
    }
    mn = combine_min<LANES>(lmin);
    mx = combine_max<LANES>(lmax);
}

// max_k x[k], n >= 1.
template <int MAX_N, int LANES = 1>
float row_max(const float x[MAX_N], int n) {
    float mn, mx;
    row_min_max<MAX_N, LANES>(x, n, mn, mx);
    (void)mn;
    return mx;
}

// min_k x[k], n >= 1 (-0 counts as smaller than +0).
template <int MAX_N, int LANES = 1>
float row_min(const float x[MAX_N], int n) {
    float mn, mx;
    row_min_max<MAX_N, LANES>(x, n, mn, mx);
    (void)mx;
    return mn;
}

// max_k |x[k]| (n == 0 gives +0). Lanes start at +0; x cyclic by LANES.
template <int MAX_N, int LANES = 1>
float row_absmax(const float x[MAX_N], int n) {
    float lmax[LANES];
#pragma HLS ARRAY_PARTITION variable = lmax complete
ROW_ABSMAX_INIT:
    for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
        lmax[l] = 0.0f;
    }
ROW_ABSMAX:
    for (int c = 0; c * LANES < n; ++c) {
#pragma HLS LOOP_TRIPCOUNT max = (MAX_N + LANES - 1) / LANES
#pragma HLS PIPELINE II = 1
    FLEXLLM_COUNT("row_absmax");
    ROW_ABSMAX_LANES:
        for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
            const int k = c * LANES + l;
            if (k < n) lmax[l] = f32_max(lmax[l], f32_abs(x[k]));
        }
    }
    return combine_max<LANES>(lmax);
}

}  // namespace flexllm
