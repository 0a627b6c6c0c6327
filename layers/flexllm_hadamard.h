// flexllm_hadamard.h: fast Hadamard transform (online R4 rotation before down_proj).
//
// n = m * p with p = 2^log2_p and (m, p) = brevitas_models.hadamard.hadamard_factor(n); each row
// x is viewed as X[c][d] = x[c * p + d] (c < m, d < p). Operation order (== fast_hadamard_transform_np):
//   1. butterflies over d for half-widths h = 1, 2, 4, ..., p/2 (ascending):
//        (X[c][d], X[c][d + h]) <- (u + v, u - v)   for every d with (d & h) == 0
//   2. if m > 1: Y[a][d] = s(a,0) * X[0][d];  Y[a][d] = Y[a][d] + s(a,c) * X[c][d], c = 1 .. m-1
//      with s = small_hadamard(m) (+-1, passed as an m x m int8 table, row-major, stride m)
//   3. y = Y * scale,  scale = f32(1 / sqrt(double(n))) (hadamard_scale(n), computed offline)
//
// LANES per cycle (LANES a power of two; any n): the copy-in, every butterfly stage (LANES
// independent butterflies per cycle: each output of a stage is one fixed add or subtract of two
// outputs of the previous stage, so evaluating a stage's butterflies in any grouping is exact),
// the mix (LANES values of d per cycle, c ascending for each) and the scale. The result does not
// depend on LANES.
//
// Banks: the stages ping-pong between buf[0] and buf[1] (stage s reads buf[s & 1], writes
// buf[(s + 1) & 1]); each is partitioned cyclic by LANES (bank = index % LANES). A step handles the
// LANES pairs i0 .. i0 + LANES - 1 (i0 a multiple of LANES):
//   h >= LANES: the lo indices are LANES consecutive elements (one per bank) and lo + h hits the
//               same banks (h is a multiple of LANES): 2 reads per source bank, 2 writes per
//               destination bank;
//   h <  LANES: the pairs cover 2 * LANES consecutive elements: again 2 per bank.
// So every bank sees at most two accesses per cycle: true dual-port memories (BRAM / LUTRAM) suffice
// and a stage runs at II = 1 with no read/write conflicts (reads and writes are in different buffers).
// The mix reads buf[.][c * p + d .. + LANES - 1] and acc[d .. d + LANES - 1] (one per bank).
// Partitioning (declared by the caller): x and y cyclic by LANES.
#pragma once

#include <cmath>
#include <cstdint>

#include "flexllm_types.h"

namespace flexllm {

// f32(1 / sqrt(n)) computed in double and rounded once (host / offline constant).
inline float hadamard_scale(int n) { return (float)(1.0 / std::sqrt((double)n)); }

// +-1 times x, exact (including the sign of zero): s * x in fp32.
inline float signed_copy(int8_t s, float x) {
#pragma HLS INLINE
    return s > 0 ? x : -x;
}

// One row: y[0 .. n-1] = H x with n = m << log2_p (x is copied first, so y may alias x).
template <int MAX_N, int MAX_M, int LANES = 1>
void hadamard_transform(const float x[MAX_N], int m, int log2_p, const int8_t sign[MAX_M * MAX_M], float scale,
                        float y[MAX_N]) {
    constexpr int MAX_LOG2_P = log2_floor(MAX_N);
    (void)MAX_LOG2_P;  // loop tripcount only
    const int p = 1 << log2_p;
    const int n = m * p;
    const int half_n = n >> 1;
    float buf[2][MAX_N];
#pragma HLS ARRAY_PARTITION variable = buf complete dim = 1
#pragma HLS ARRAY_PARTITION variable = buf cyclic factor = LANES dim = 2
#pragma HLS BIND_STORAGE variable = buf type = ram_2p impl = bram

HADAMARD_COPY:
    for (int c = 0; c * LANES < n; ++c) {
#pragma HLS LOOP_TRIPCOUNT max = (MAX_N + LANES - 1) / LANES
#pragma HLS PIPELINE II = 1
    FLEXLLM_COUNT("hadamard_copy");
    HADAMARD_COPY_LANES:
        for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
            const int i = c * LANES + l;
            if (i < n) buf[0][i] = x[i];
        }
    }

    // 1. Butterflies; within a stage the pairs are disjoint, so the updates are independent.
HADAMARD_STAGES:
    for (int s = 0; s < log2_p; ++s) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_LOG2_P
        const int h = 1 << s;
        const int src = s & 1;
    HADAMARD_PAIRS:
        for (int i0 = 0; i0 < half_n; i0 += LANES) {
#pragma HLS LOOP_TRIPCOUNT max = (MAX_N / 2 + LANES - 1) / LANES
#pragma HLS PIPELINE II = 1
#pragma HLS DEPENDENCE variable = buf inter false
        FLEXLLM_COUNT("hadamard_pairs");
        HADAMARD_PAIRS_LANES:
            for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
                const int i = i0 + l;
                if (i < half_n) {
                    const int c = i >> (log2_p - 1);           // block (p / 2 pairs per block)
                    const int j = i & ((p >> 1) - 1);           // pair index inside the block
                    const int d = ((j >> s) << (s + 1)) | (j & (h - 1));
                    const int lo = c * p + d;
                    const float u = buf[src][lo];
                    const float v = buf[src][lo + h];
                    buf[src ^ 1][lo] = u + v;
                    buf[src ^ 1][lo + h] = u - v;
                }
            }
        }
    }
    const int fin = log2_p & 1;  // buffer holding the last stage's output

    // 2./3. Small-factor mix, ascending c, then the scale.
    if (m == 1) {
    HADAMARD_SCALE:
        for (int c = 0; c * LANES < n; ++c) {
#pragma HLS LOOP_TRIPCOUNT max = (MAX_N + LANES - 1) / LANES
#pragma HLS PIPELINE II = 1
        FLEXLLM_COUNT("hadamard_scale");
        HADAMARD_SCALE_LANES:
            for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
                const int i = c * LANES + l;
                if (i < n) y[i] = buf[fin][i] * scale;
            }
        }
        return;
    }
    constexpr int MAX_P = MAX_N;
    float acc[MAX_P];
#pragma HLS ARRAY_PARTITION variable = acc cyclic factor = LANES
#pragma HLS BIND_STORAGE variable = acc type = ram_2p impl = bram
HADAMARD_MIX_OUT:
    for (int a = 0; a < m; ++a) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_M
    HADAMARD_MIX_IN:
        for (int c = 0; c < m; ++c) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_M
            const int8_t sac = sign[a * m + c];
        HADAMARD_MIX_ELEMENTS:
            for (int d0 = 0; d0 < p; d0 += LANES) {
#pragma HLS LOOP_TRIPCOUNT max = (MAX_N / MAX_M + LANES - 1) / LANES
#pragma HLS PIPELINE II = 1
            FLEXLLM_COUNT("hadamard_mix_elements");
            HADAMARD_MIX_LANES:
                for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
                    const int d = d0 + l;
                    if (d < p) {
                        const float term = signed_copy(sac, buf[fin][c * p + d]);
                        acc[d] = c == 0 ? term : acc[d] + term;
                    }
                }
            }
        }
    HADAMARD_MIX_SCALE:
        for (int d0 = 0; d0 < p; d0 += LANES) {
#pragma HLS LOOP_TRIPCOUNT max = (MAX_N / MAX_M + LANES - 1) / LANES
#pragma HLS PIPELINE II = 1
        FLEXLLM_COUNT("hadamard_mix_scale");
        HADAMARD_MIX_SCALE_LANES:
            for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
                const int d = d0 + l;
                if (d < p) y[a * p + d] = acc[d] * scale;
            }
        }
    }
}

// n_tokens rows of x [MAX_T][MAX_N] (y may alias x).
template <int MAX_T, int MAX_N, int MAX_M, int LANES = 1>
void hadamard_rows(const float x[MAX_T][MAX_N], int n_tokens, int m, int log2_p, const int8_t sign[MAX_M * MAX_M],
                   float scale, float y[MAX_T][MAX_N]) {
HADAMARD_TOKENS:
    for (int t = 0; t < n_tokens; ++t) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_T
        hadamard_transform<MAX_N, MAX_M, LANES>(x[t], m, log2_p, sign, scale, y[t]);
    }
}

}  // namespace flexllm
