// flexllm_residual.h: residual stream update h = h + a (one fp32 add per element), its out-of-place
// form, and the row copies that select the last token / hand the stream to the next layer.
//
// LANES elements per cycle (each element is independent). Partitioning (declared by the caller):
// every [MAX_T][MAX_D] / [MAX_D] array cyclic by LANES on the last dimension.
#pragma once

#include "flexllm_types.h"

namespace flexllm {

template <int MAX_T, int MAX_D, int LANES = 1>
void residual_add(float h[MAX_T][MAX_D], const float a[MAX_T][MAX_D], int n_tokens, int d) {
RESIDUAL_TOKENS:
    for (int t = 0; t < n_tokens; ++t) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_T
    RESIDUAL_ELEMENTS:
        for (int c = 0; c * LANES < d; ++c) {
#pragma HLS LOOP_TRIPCOUNT max = (MAX_D + LANES - 1) / LANES
#pragma HLS PIPELINE II = 1
        FLEXLLM_COUNT("residual_elements");
        RESIDUAL_LANES:
            for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
                const int k = c * LANES + l;
                if (k < d) h[t][k] = h[t][k] + a[t][k];
            }
        }
    }
}

// y = a + b (out of place; fp32 addition is commutative, so the order of a and b does not matter).
template <int MAX_T, int MAX_D, int LANES = 1>
void residual_sum(const float a[MAX_T][MAX_D], const float b[MAX_T][MAX_D], int n_tokens, int d,
                  float y[MAX_T][MAX_D]) {
RESIDUAL_SUM_TOKENS:
    for (int t = 0; t < n_tokens; ++t) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_T
    RESIDUAL_SUM_ELEMENTS:
        for (int c = 0; c * LANES < d; ++c) {
#pragma HLS LOOP_TRIPCOUNT max = (MAX_D + LANES - 1) / LANES
#pragma HLS PIPELINE II = 1
        FLEXLLM_COUNT("residual_sum_elements");
        RESIDUAL_SUM_LANES:
            for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
                const int k = c * LANES + l;
                if (k < d) y[t][k] = a[t][k] + b[t][k];
            }
        }
    }
}

// y = x[row][0 .. d-1] (e.g. the last token's hidden state before the final norm and the LM head).
template <int MAX_T, int MAX_D, int LANES = 1>
void copy_row(const float x[MAX_T][MAX_D], int row, int d, float y[MAX_D]) {
COPY_ROW:
    for (int c = 0; c * LANES < d; ++c) {
#pragma HLS LOOP_TRIPCOUNT max = (MAX_D + LANES - 1) / LANES
#pragma HLS PIPELINE II = 1
    FLEXLLM_COUNT("copy_row");
    COPY_ROW_LANES:
        for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
            const int k = c * LANES + l;
            if (k < d) y[k] = x[row][k];
        }
    }
}

// y[t] = x[t] for t < n_tokens (the residual stream handed from one decoder layer to the next).
template <int MAX_T, int MAX_D, int LANES = 1>
void copy_rows(const float x[MAX_T][MAX_D], int n_tokens, int d, float y[MAX_T][MAX_D]) {
COPY_ROWS_TOKENS:
    for (int t = 0; t < n_tokens; ++t) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_T
    COPY_ROWS_ELEMENTS:
        for (int c = 0; c * LANES < d; ++c) {
#pragma HLS LOOP_TRIPCOUNT max = (MAX_D + LANES - 1) / LANES
#pragma HLS PIPELINE II = 1
        FLEXLLM_COUNT("copy_rows_elements");
        COPY_ROWS_LANES:
            for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
                const int k = c * LANES + l;
                if (k < d) y[t][k] = x[t][k];
            }
        }
    }
}

}  // namespace flexllm
