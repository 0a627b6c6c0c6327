// flexllm_rmsnorm.h: RMSNorm of token rows.
//
//   ms = sum_partials(x[k] * x[k]) / f32(n);  r = 1 / sqrt(ms + eps);  y[k] = (x[k] * r) * w[k]
//
// == brevitas_models.fp32.rmsnorm. LANES elements per cycle in both passes (squares into the 128
// partials of flexllm_reduce.h, then the scale); the result does not depend on LANES.
// Partitioning (declared by the caller): x, w, y cyclic by LANES (last dimension).
#pragma once

#include "flexllm_math.h"
#include "flexllm_reduce.h"
#include "flexllm_types.h"

namespace flexllm {

// One row of d elements (d >= 1). y may alias x.
template <int MAX_D, int LANES = 1>
void rmsnorm_row(const float x[MAX_D], const float w[MAX_D], float eps, int d, float y[MAX_D]) {
    constexpr int D = reduce_lanes_check<LANES>::distance;  // loop-carried distance on p
    constexpr int B = reduce_lanes_check<LANES>::banks;     // banks of p (cyclic)
    float p[REDUCE_PARTIALS];
#pragma HLS ARRAY_PARTITION variable = p cyclic factor = B
RMSNORM_RESET:
    for (int r = 0; r < REDUCE_PARTIALS; ++r) {
#pragma HLS UNROLL factor = B
        p[r] = 0.0f;
    }
RMSNORM_SQUARES:
    for (int c = 0; c * LANES < d; ++c) {
#pragma HLS LOOP_TRIPCOUNT max = (MAX_D + LANES - 1) / LANES
#pragma HLS PIPELINE II = 1
#pragma HLS DEPENDENCE variable = p inter distance = D true
    FLEXLLM_COUNT("rmsnorm_squares");
    RMSNORM_SQUARES_LANES:
        for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
            const int k = c * LANES + l;
            if (k < d) {
                const float sq = x[k] * x[k];
                const int r = k & (REDUCE_PARTIALS - 1);
                p[r] = p[r] + sq;
            }
        }
    }
    (void)D;
    (void)B;
    const float ms = reduce_partials_tree<LANES>(p) / (float)d;
    const float r = 1.0f / f32_sqrt(ms + eps);
RMSNORM_SCALE:
    for (int c = 0; c * LANES < d; ++c) {
#pragma HLS LOOP_TRIPCOUNT max = (MAX_D + LANES - 1) / LANES
#pragma HLS PIPELINE II = 1
    FLEXLLM_COUNT("rmsnorm_scale");
    RMSNORM_SCALE_LANES:
        for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
            const int k = c * LANES + l;
            if (k < d) y[k] = (x[k] * r) * w[k];
        }
    }
}

// n_tokens rows of x [MAX_T][MAX_D].
template <int MAX_T, int MAX_D, int LANES = 1>
void rmsnorm(const float x[MAX_T][MAX_D], const float w[MAX_D], float eps, int n_tokens, int d,
             float y[MAX_T][MAX_D]) {
RMSNORM_TOKENS:
    for (int t = 0; t < n_tokens; ++t) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_T
        rmsnorm_row<MAX_D, LANES>(x[t], w, eps, d, y[t]);
    }
}

}  // namespace flexllm
