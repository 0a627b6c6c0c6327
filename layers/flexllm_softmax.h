// flexllm_softmax.h: softmax over the valid prefix of a score row, and its uint8 quantization.
//
//   m = max_{u < n} x[u];  e[u] = exp32(x[u] - m);  sum = sum4(e[0 .. n-1]);  p[u] = e[u] / sum
//   p_int[u] = clamp(rint(p[u] * inv_p), 0, 255)
//
// == brevitas_models.fp32.softmax_masked with valid = (u < n) (masked entries are exactly 0 and,
// being trailing zeros, do not change sum4), then quant_static(p, inv_p, 0, 255).
#pragma once

#include <cstdint>

#include "flexllm_math.h"
#include "flexllm_reduce.h"
#include "flexllm_token_quant.h"
#include "flexllm_types.h"

namespace flexllm {

// In place: x[0 .. n-1] (n >= 1) <- p, given m = max_{u < n} x[u] (exact, e.g. tracked while the
// scores are produced).
template <int MAX_N>
void softmax_prefix_with_max(float x[MAX_N], int n, float m) {
    float p[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma HLS ARRAY_PARTITION variable = p complete
SOFTMAX_EXP:
    for (int u = 0; u < n; ++u) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_N
#pragma HLS PIPELINE II = 1
#pragma HLS DEPENDENCE variable = p inter distance = 4 true
        const float e = exp32(x[u] - m);
        x[u] = e;
        p[u & 3] = p[u & 3] + e;
    }
    const float sum = (p[0] + p[1]) + (p[2] + p[3]);
SOFTMAX_NORMALIZE:
    for (int u = 0; u < n; ++u) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_N
#pragma HLS PIPELINE II = 1
        x[u] = x[u] / sum;
    }
}

// In place: x[0 .. n-1] <- softmax (computes the maximum first).
template <int MAX_N>
void softmax_prefix(float x[MAX_N], int n) {
    softmax_prefix_with_max<MAX_N>(x, n, row_max<MAX_N>(x, n));
}

// x[0 .. n-1] <- p (in place) and p_int[0 .. n-1] <- clamp(rint(p * inv_p), 0, 255).
template <int MAX_N>
void softmax_quant_prefix(float x[MAX_N], int n, float m, float inv_p, uint8_t p_int[MAX_N]) {
    softmax_prefix_with_max<MAX_N>(x, n, m);
SOFTMAX_QUANT:
    for (int u = 0; u < n; ++u) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_N
#pragma HLS PIPELINE II = 1
        p_int[u] = (uint8_t)quant_static(x[u], inv_p, 0, 255);
    }
}

}  // namespace flexllm
