// flexllm_sampling.h: next-token selection from fp32 logits.
//
// greedy_argmax: index of the largest logit, lowest index on ties (== numpy.argmax).
// sample_top_k (== brevitas_models.sampling.sample_top_k, bit-exact):
//   1. keep the k' = min(k, n) largest logits, ordered by (logit descending, index ascending);
//   2. w[i] = exp32((l[i] - l[0]) * inv_temperature)                     fp32, i < k'
//   3. c[i] = c[i-1] + w[i], c[-1] = +0                                  sequential fp32
//   4. state = xorshift32(state) (x ^= x << 13; x ^= x >> 17; x ^= x << 5, state != 0);
//      u = f32(state >> 8) * 2^-24 in [0, 1);  target = u * c[k'-1]
//   5. choose the first i with c[i] > target (i = k'-1 if none); return its vocabulary index.
// Logits must be finite or -inf (no NaN).
#pragma once

#include <cstdint>

#include "flexllm_counters.h"
#include "flexllm_math.h"
#include "flexllm_types.h"

namespace flexllm {

inline uint32_t xorshift32_next(uint32_t x) {
#pragma HLS INLINE
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return x;
}

// Top 24 bits of the state as a float in [0, 1) (exact).
inline float uniform_from_state(uint32_t x) {
#pragma HLS INLINE
    return (float)(x >> 8) * F32_TWO_M24;
}

// argmax over logits[0 .. n-1] (n >= 1), lowest index on ties. LANES logits per cycle (logits banked
// cyclic by LANES): lane l keeps the best of indices l, l + LANES, ... (first strictly larger wins, so
// its lowest index on ties); the lanes are combined at the end by value, then lowest index: exact.
template <int MAX_V, int LANES = 1>
int greedy_argmax(const float logits[MAX_V], int n) {
    float best[LANES];
    int best_i[LANES];
#pragma HLS ARRAY_PARTITION variable = best complete
#pragma HLS ARRAY_PARTITION variable = best_i complete
    for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
        best[l] = logits[0];
        best_i[l] = 0;
    }
    constexpr int MAX_STEPS = ceil_div(MAX_V, LANES);
    (void)MAX_STEPS;  // loop tripcount only
ARGMAX:
    for (int c = 0; c < ceil_div(n, LANES); ++c) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_STEPS
#pragma HLS PIPELINE II = 1
        FLEXLLM_COUNT("greedy_argmax");
        for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
            const int i = c * LANES + l;
            if (i < n) {
                const float v = logits[i];
                if (v > best[l]) {
                    best[l] = v;
                    best_i[l] = i;
                }
            }
        }
    }
    float b = best[0];
    int bi = best_i[0];
    for (int l = 1; l < LANES; ++l) {
#pragma HLS UNROLL
        if (best[l] > b || (best[l] == b && best_i[l] < bi)) {
            b = best[l];
            bi = best_i[l];
        }
    }
    return bi;
}

// Streaming top-k insert: value/index hold the best `filled` entries seen so far (value descending,
// index ascending), at most MAX_K; one insert per cycle (a compare per slot and a shift).
// Indices arrive in increasing order, so an equal value goes after the existing ones.
template <int MAX_K>
void top_k_insert(float value[MAX_K], int index[MAX_K], int &filled, float l, int i) {
#pragma HLS INLINE
    bool keep[MAX_K];  // slot r keeps its entry (it ranks before the new one)
    for (int r = 0; r < MAX_K; ++r) {
#pragma HLS UNROLL
        keep[r] = r < filled && value[r] >= l;
    }
    for (int r = MAX_K - 1; r >= 0; --r) {
#pragma HLS UNROLL
        if (!keep[r]) {
            if (r == 0 || keep[r - 1]) {
                value[r] = l;
                index[r] = i;
            } else {
                value[r] = value[r - 1];
                index[r] = index[r - 1];
            }
        }
    }
    if (filled < MAX_K) ++filled;
}

// Top-k sampling over logits[0 .. n-1] (1 <= k; k is clamped to MAX_K and n). Advances state.
template <int MAX_V, int MAX_K>
int sample_top_k(const float logits[MAX_V], int n, int k, float inv_temperature, uint32_t &state) {
    float top_value[MAX_K];
    int top_index[MAX_K];
#pragma HLS ARRAY_PARTITION variable = top_value complete
#pragma HLS ARRAY_PARTITION variable = top_index complete
    for (int r = 0; r < MAX_K; ++r) {
#pragma HLS UNROLL
        top_value[r] = -INFINITY;
        top_index[r] = 0;
    }
    int filled = 0;
TOPK_SCAN:
    for (int i = 0; i < n; ++i) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_V
#pragma HLS PIPELINE II = 1
        FLEXLLM_COUNT("top_k_scan");
        top_k_insert<MAX_K>(top_value, top_index, filled, logits[i], i);
    }
    int kk = k < MAX_K ? k : MAX_K;
    if (kk > filled) kk = filled;
    if (kk < 1) kk = 1;

    float cum[MAX_K];
    float c = 0.0f;
    const float l0 = top_value[0];
TOPK_WEIGHTS:
    for (int r = 0; r < MAX_K; ++r) {
#pragma HLS PIPELINE II = 1
        FLEXLLM_COUNT("topk_weights");
        if (r < kk) {
            c = c + exp32((top_value[r] - l0) * inv_temperature);
            cum[r] = c;
        }
    }
    state = xorshift32_next(state);
    const float target = uniform_from_state(state) * c;
    int chosen = kk - 1;
TOPK_PICK:
    for (int r = MAX_K - 1; r >= 0; --r) {
#pragma HLS UNROLL
        if (r < kk && cum[r] > target) chosen = r;  // smallest such r wins
    }
    return top_index[chosen];
}

}  // namespace flexllm
