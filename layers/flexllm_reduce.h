// flexllm_reduce.h: row reductions of the numerics contract.
//
//   sum4     fp32 sum with 4 interleaved partial sums p[k % 4] (each a sequential add chain from +0),
//            result (p0 + p1) + (p2 + p3)            == brevitas_models.fp32.sum4
//   row_max, row_min, row_absmax                     exact (any order; zero signs: see f32_min)
//
// The 4 partial sums let a pipelined loop issue one fp32 add per cycle with a 4-cycle
// loop-carried distance, and the order is fixed, so the result is bit-exact.
#pragma once

#include "flexllm_math.h"
#include "flexllm_types.h"

namespace flexllm {

// Streaming form of sum4: add(k, v) for k = 0, 1, 2, ... in increasing order, then result().
struct sum4_accumulator {
    float p[4];

    sum4_accumulator() { reset(); }

    void reset() {
#pragma HLS INLINE
        p[0] = 0.0f;
        p[1] = 0.0f;
        p[2] = 0.0f;
        p[3] = 0.0f;
    }

    void add(int k, float v) {
#pragma HLS INLINE
        p[k & 3] = p[k & 3] + v;
    }

    float result() const {
#pragma HLS INLINE
        return (p[0] + p[1]) + (p[2] + p[3]);
    }
};

// sum4 of x[0 .. n-1] (n == 0 gives +0). One element per iteration; the loop-carried distance
// on each partial sum is 4 iterations.
template <int MAX_N>
float sum4(const float x[MAX_N], int n) {
    float p[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma HLS ARRAY_PARTITION variable = p complete
SUM4:
    for (int k = 0; k < n; ++k) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_N
#pragma HLS PIPELINE II = 1
#pragma HLS DEPENDENCE variable = p inter distance = 4 true
        p[k & 3] = p[k & 3] + x[k];
    }
    return (p[0] + p[1]) + (p[2] + p[3]);
}

// max_k x[k], n >= 1.
template <int MAX_N>
float row_max(const float x[MAX_N], int n) {
    float m = x[0];
ROW_MAX:
    for (int k = 1; k < n; ++k) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_N
#pragma HLS PIPELINE II = 1
        m = f32_max(m, x[k]);
    }
    return m;
}

// min_k x[k], n >= 1 (-0 counts as smaller than +0).
template <int MAX_N>
float row_min(const float x[MAX_N], int n) {
    float m = x[0];
ROW_MIN:
    for (int k = 1; k < n; ++k) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_N
#pragma HLS PIPELINE II = 1
        m = f32_min(m, x[k]);
    }
    return m;
}

// max_k |x[k]| (n == 0 gives +0).
template <int MAX_N>
float row_absmax(const float x[MAX_N], int n) {
    float m = 0.0f;
ROW_ABSMAX:
    for (int k = 0; k < n; ++k) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_N
#pragma HLS PIPELINE II = 1
        m = f32_max(m, f32_abs(x[k]));
    }
    return m;
}

}  // namespace flexllm
