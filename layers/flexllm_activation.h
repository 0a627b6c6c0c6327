// flexllm_activation.h: gated SiLU of the MLP.
//
//   silu(g) = g / (1 + exp32(-g));  act = silu(g) * u      (exp32(-g) = inf gives -0)
//
// == brevitas_models.fp32.silu(g) * u. LANES elements per cycle (each element is independent).
// Partitioning (declared by the caller): gate, up, act cyclic by LANES on the last dimension.
#pragma once

#include "flexllm_math.h"
#include "flexllm_types.h"

namespace flexllm {

inline float silu(float g) {
#pragma HLS INLINE
    return g / (1.0f + exp32(-g));
}

inline float silu_mul(float g, float u) {
#pragma HLS INLINE
    return silu(g) * u;
}

// act[t][k] = silu(gate[t][k]) * up[t][k] for t < n_tokens, k < d.
template <int MAX_T, int MAX_D, int LANES = 1>
void silu_mul_rows(const float gate[MAX_T][MAX_D], const float up[MAX_T][MAX_D], int n_tokens, int d,
                   float act[MAX_T][MAX_D]) {
SILU_TOKENS:
    for (int t = 0; t < n_tokens; ++t) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_T
    SILU_ELEMENTS:
        for (int c = 0; c * LANES < d; ++c) {
#pragma HLS LOOP_TRIPCOUNT max = (MAX_D + LANES - 1) / LANES
#pragma HLS PIPELINE II = 1
        FLEXLLM_COUNT("silu_elements");
        SILU_LANES:
            for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
                const int k = c * LANES + l;
                if (k < d) act[t][k] = silu_mul(gate[t][k], up[t][k]);
            }
        }
    }
}

}  // namespace flexllm
