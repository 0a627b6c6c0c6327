// flexllm_rmsnorm.h: RMSNorm of token rows.
//
//   ms = sum4(x[k] * x[k]) / f32(n);  r = 1 / sqrt(ms + eps);  y[k] = (x[k] * r) * w[k]
//
// == brevitas_models.fp32.rmsnorm.
#pragma once

#include "flexllm_math.h"
#include "flexllm_types.h"

namespace flexllm {

// One row of d elements (d >= 1). y may alias x.
template <int MAX_D>
void rmsnorm_row(const float x[MAX_D], const float w[MAX_D], float eps, int d, float y[MAX_D]) {
    float p[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma HLS ARRAY_PARTITION variable = p complete
RMSNORM_SQUARES:
    for (int k = 0; k < d; ++k) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_D
#pragma HLS PIPELINE II = 1
#pragma HLS DEPENDENCE variable = p inter distance = 4 true
        const float sq = x[k] * x[k];
        p[k & 3] = p[k & 3] + sq;
    }
    const float ms = ((p[0] + p[1]) + (p[2] + p[3])) / (float)d;
    const float r = 1.0f / f32_sqrt(ms + eps);
RMSNORM_SCALE:
    for (int k = 0; k < d; ++k) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_D
#pragma HLS PIPELINE II = 1
        y[k] = (x[k] * r) * w[k];
    }
}

// n_tokens rows of x [MAX_T][MAX_D].
template <int MAX_T, int MAX_D>
void rmsnorm(const float x[MAX_T][MAX_D], const float w[MAX_D], float eps, int n_tokens, int d,
             float y[MAX_T][MAX_D]) {
RMSNORM_TOKENS:
    for (int t = 0; t < n_tokens; ++t) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_T
        rmsnorm_row<MAX_D>(x[t], w, eps, d, y[t]);
    }
}

}  // namespace flexllm
