// flexllm_softmax.h: softmax over the valid prefix of a score row, and its uint8 quantization.
//
//   m = max_{u < n} x[u];  e[u] = exp32(x[u] - m);  sum = sum_partials(e[0 .. n-1]);  p[u] = e[u] / sum
//   p_int[u] = clamp(rint(p[u] * inv_p), 0, 255)
//
// == brevitas_models.fp32.softmax_masked with valid = (u < n) (masked entries are exactly 0 and,
// being trailing zeros, do not change sum_partials), then quant_static(p, inv_p, 0, 255).
//
// LANES elements per cycle (LANES divides 128, <= 16): the exp + sum pass (the 128 partial sums of
// flexllm_reduce.h, loop-carried distance 128/LANES), then the normalise pass (fused with the uint8
// quantization in softmax_quant_prefix: same values). Results do not depend on LANES.
// Partitioning (declared by the caller): x and p_int cyclic by LANES.
// exp32: the contract's binary32 exponential (flexllm_math.h), the same operations in hardware.
#pragma once

#include <cstdint>

#include "flexllm_math.h"
#include "flexllm_reduce.h"
#include "flexllm_token_quant.h"
#include "flexllm_types.h"

namespace flexllm {

// In place: x[0 .. n-1] <- e = exp32(x - m); returns sum_partials(e).
template <int MAX_N, int LANES = 1>
float softmax_exp_sum(float x[MAX_N], int n, float m) {
    constexpr int D = reduce_lanes_check<LANES>::distance;  // loop-carried distance on p
    constexpr int B = reduce_lanes_check<LANES>::banks;     // banks of p (cyclic)
    float p[REDUCE_PARTIALS];
#pragma HLS ARRAY_PARTITION variable = p cyclic factor = B
SOFTMAX_RESET:
    for (int r = 0; r < REDUCE_PARTIALS; ++r) {
#pragma HLS UNROLL factor = B
        p[r] = 0.0f;
    }
SOFTMAX_EXP:
    for (int c = 0; c * LANES < n; ++c) {
#pragma HLS LOOP_TRIPCOUNT max = (MAX_N + LANES - 1) / LANES
#pragma HLS PIPELINE II = 1
#pragma HLS DEPENDENCE variable = p inter distance = D true
    FLEXLLM_COUNT("softmax_exp");
    SOFTMAX_EXP_LANES:
        for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
            const int u = c * LANES + l;
            if (u < n) {
                const float e = exp32(x[u] - m);
                x[u] = e;
                const int r = u & (REDUCE_PARTIALS - 1);
                p[r] = p[r] + e;
            }
        }
    }
    (void)D;
    (void)B;
    return reduce_partials_tree<LANES>(p);
}

// In place: x[0 .. n-1] (n >= 1) <- p, given m = max_{u < n} x[u] (exact, e.g. tracked while the
// scores are produced).
template <int MAX_N, int LANES = 1>
void softmax_prefix_with_max(float x[MAX_N], int n, float m) {
    const float sum = softmax_exp_sum<MAX_N, LANES>(x, n, m);
SOFTMAX_NORMALIZE:
    for (int c = 0; c * LANES < n; ++c) {
#pragma HLS LOOP_TRIPCOUNT max = (MAX_N + LANES - 1) / LANES
#pragma HLS PIPELINE II = 1
    FLEXLLM_COUNT("softmax_normalize");
    SOFTMAX_NORMALIZE_LANES:
        for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
            const int u = c * LANES + l;
            if (u < n) x[u] = x[u] / sum;
        }
    }
}

// In place: x[0 .. n-1] <- softmax (computes the maximum first, LANES per cycle).
template <int MAX_N, int LANES = 1>
void softmax_prefix(float x[MAX_N], int n) {
    softmax_prefix_with_max<MAX_N, LANES>(x, n, row_max<MAX_N, LANES>(x, n));
}

// x[0 .. n-1] <- p (in place) and p_int[0 .. n-1] <- clamp(rint(p * inv_p), 0, 255).
template <int MAX_N, int LANES = 1>
void softmax_quant_prefix(float x[MAX_N], int n, float m, float inv_p, uint8_t p_int[MAX_N]) {
    const float sum = softmax_exp_sum<MAX_N, LANES>(x, n, m);
SOFTMAX_NORMALIZE_QUANT:
    for (int c = 0; c * LANES < n; ++c) {
#pragma HLS LOOP_TRIPCOUNT max = (MAX_N + LANES - 1) / LANES
#pragma HLS PIPELINE II = 1
    FLEXLLM_COUNT("softmax_normalize_quant");
    SOFTMAX_NORMALIZE_QUANT_LANES:
        for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
            const int u = c * LANES + l;
            if (u < n) {
                const float p = x[u] / sum;
                x[u] = p;
                p_int[u] = (uint8_t)quant_static(p, inv_p, 0, 255);
            }
        }
    }
}

}  // namespace flexllm
