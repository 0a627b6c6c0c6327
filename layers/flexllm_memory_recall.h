// flexllm_memory_recall.h: HMT memory recall on one time-multiplexed fp32 GEMV unit.
//
//   gemv:    y[o] = sum_partials(W[o, 0..D_IN-1] * x)                  (fp32 products, 128 partials)
//   key:     k = gemv(W_k, M)                                          (once per memory, kept in its slot)
//   recall:  q = gemv(W_q, S);  s[i] = sum_partials(q * k_i) * inv_sqrt_d  (i < n filled slots)
//            p = softmax over s[0 .. n-1]  (flexllm_softmax.h: max, exp32, sum_partials, divide)
//            P[c] = (((+0 + p[0] M_0[c]) + p[1] M_1[c]) + ...) + p[n-1] M_{n-1}[c]
//
// == brevitas_models.hmt.golden_recall (gemv, memory_key, memory_recall) bit for bit: binary32, round
// to nearest even, no FMA contraction (-ffp-contract=off in C simulation; the kernels use separate
// fmul / fadd cores). Slots fill in order (memory t -> slot t mod N), so the filled slots are the
// prefix 0 .. n-1 with n = min(pushed, N); unfilled slots are never read (the mask of the method).
//
// LANES products per cycle (LANES divides 128, <= 16: the loop-carried distance of the partial sums,
// flexllm_reduce.h); results do not depend on LANES. W is read row-major, LANES consecutive weights
// per cycle (streamed from HBM in the kernel: one 512-bit word carries 16 fp32 weights).
// Partitioning (declared by the caller): x, keys, memories and W cyclic by LANES.
#pragma once

#include "flexllm_counters.h"
#include "flexllm_reduce.h"
#include "flexllm_softmax.h"

namespace flexllm {

// sum_partials(a[0 .. D-1] * b[0 .. D-1]), LANES products per cycle (the partial sums and tree of
// flexllm_reduce.h).
template <int D, int LANES = 1>
float memory_dot(const float a[D], const float b[D]) {
    constexpr int DIST = reduce_lanes_check<LANES>::distance;  // loop-carried distance on p
    constexpr int B = reduce_lanes_check<LANES>::banks;        // banks of p (cyclic)
    float p[REDUCE_PARTIALS];
#pragma HLS ARRAY_PARTITION variable = p cyclic factor = B
MEMORY_DOT_RESET:
    for (int r = 0; r < REDUCE_PARTIALS; ++r) {
#pragma HLS UNROLL factor = B
        p[r] = 0.0f;
    }
MEMORY_DOT:
    for (int c = 0; c * LANES < D; ++c) {
#pragma HLS LOOP_TRIPCOUNT max = (D + LANES - 1) / LANES
#pragma HLS PIPELINE II = 1
#pragma HLS DEPENDENCE variable = p inter distance = DIST true
        FLEXLLM_COUNT("memory_dot");
    MEMORY_DOT_LANES:
        for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
            const int k = c * LANES + l;
            if (k < D) {
                const float prod = a[k] * b[k];
                const int r = k & (REDUCE_PARTIALS - 1);
                p[r] = p[r] + prod;
            }
        }
    }
    (void)DIST;
    (void)B;
    return reduce_partials_tree<LANES>(p);
}

// y = W x for W [D_OUT x D_IN] row-major: one dot product per output row.
template <int D_OUT, int D_IN, int LANES = 1>
void memory_gemv(const float w[D_OUT * D_IN], const float x[D_IN], float y[D_OUT]) {
MEMORY_GEMV_ROWS:
    for (int o = 0; o < D_OUT; ++o) {
        y[o] = memory_dot<D_IN, LANES>(&w[o * D_IN], x);
    }
}

// The key of a new memory: key = W_k M (computed once, stored beside the memory in its slot).
template <int D, int LANES = 1>
void memory_key(const float w_k[D * D], const float memory[D], float key[D]) {
    memory_gemv<D, D, LANES>(w_k, memory, key);
}

// P = recall(S) over the filled slots 0 .. n-1 (1 <= n <= N) of keys / memories [N x D] row-major.
template <int N, int D, int LANES = 1>
void memory_recall(const float w_q[D * D], const float summary[D], const float keys[N * D],
                   const float memories[N * D], int n, float inv_sqrt_d, float out[D]) {
    float q[D];
#pragma HLS ARRAY_PARTITION variable = q cyclic factor = LANES
    memory_gemv<D, D, LANES>(w_q, summary, q);
    float scores[N];
MEMORY_SCORES:
    for (int i = 0; i < n; ++i) {
#pragma HLS LOOP_TRIPCOUNT max = N
        scores[i] = memory_dot<D, LANES>(q, &keys[i * D]) * inv_sqrt_d;
    }
    softmax_prefix<N, 1>(scores, n);
MEMORY_MIX_RESET:
    for (int c = 0; c < D; ++c) {
#pragma HLS UNROLL factor = LANES
        out[c] = 0.0f;
    }
MEMORY_MIX_SLOTS:
    for (int i = 0; i < n; ++i) {
#pragma HLS LOOP_TRIPCOUNT max = N
        const float p = scores[i];
    MEMORY_MIX:
        for (int c0 = 0; c0 < D; c0 += LANES) {
#pragma HLS PIPELINE II = 1
            FLEXLLM_COUNT("memory_mix");
        MEMORY_MIX_LANES:
            for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
                const int c = c0 + l;
                if (c < D) out[c] = out[c] + p * memories[i * D + c];
            }
        }
    }
}

}  // namespace flexllm
