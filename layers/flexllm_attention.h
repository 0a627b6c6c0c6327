// flexllm_attention.h: causal GQA attention of one layer over the int8 KV cache.
//
// For new tokens t = 0 .. n_tokens-1 at absolute positions P(t) = position + t (the cache holds
// positions < position), query head h, kv head kh = h / group, d = head_dim:
//   k_int[kh, P] = clamp(rint(rope(k)[i] * inv_k[kh]), -128, 127)  -> KV cache (and v_int likewise,
//   v_int[kh, P] = clamp(rint(v[i] * inv_v[kh]), -128, 127)            without RoPE)
//   q_int[h, t]  = clamp(rint(rope(q)[i] * c_q[h]), -128, 127)
//   acc_s[u]     = sum_i q_int[i] * k_int[u][i]                      exact, keys u <= P(t)
//   s[u]         = f32(acc_s[u]) * qk[h]
//   m = max_u s[u];  e[u] = exp32(s[u] - m);  sum = sum_partials(e[0 .. P(t)]);  p[u] = e[u] / sum
//   p_int[u]     = clamp(rint(p[u] * inv_p[h]), 0, 255)               uint8 (flexllm_softmax.h values)
//   acc_v[i]     = sum_{u <= P(t)} p_int[u] * v_int[u][i]             exact
//   out[t][h * d + i] = f32(acc_v[i]) * pv[h]
// == brevitas_models.golden.GoldenModel._attention after the q/k/v projections
// (fp32.rope, quant_static, int_matmul, softmax_masked).
//
// Activation rows (q, k, v, out) are [MAX_NEW][ROW] with head h at columns h * d .. h * d + d - 1
// (the q/k/v projection output layout), so they can be the linear engine's output buffers.
//
// Schedule: a DATAFLOW task graph of four stages joined by FIFOs (attention_pipeline), every stage
// walking the kv heads and, per kv head, the query items (token t, block of HEAD_LANES query heads of its
// group) in the same order:
//   attention_kv_stage       per kv head: the cached K / V rows from the KV reader tasks (KV_LANES keys per
//                            cycle, flexllm_kv_cache.h), then the new rows (RoPE, int8, packed once: to the
//                            KV writer tasks and on), into the K and V lane FIFOs
//   attention_scores_stage   q quantisation, SCORES (int8 dot products; K rows from the FIFOs on first use,
//                            kept on chip for the kv head's later items) and the per-lane maxima
//   attention_softmax_stage  exp32(s - m) and its sum_partials per head lane (the max is known when the
//                            item's last score arrives; the score FIFO holds whole items)
//   attention_pv_stage       p_int = quant(e / sum) on the fly, P x V (exact integer), the output rows
// each query stage at KEY_LANES keys x HEAD_LANES heads per cycle: item i+1's scores overlap item i's
// softmax and item i-1's P x V, and kv head kh+1 loads meanwhile.
#pragma once

#include <cstdint>

#include "ap_int.h"
#include "flexllm_accumulator.h"
#include "flexllm_counters.h"
#include "flexllm_kv_cache.h"
#include "flexllm_math.h"
#include "flexllm_rope.h"
#include "flexllm_softmax.h"
#include "flexllm_token_quant.h"
#include "flexllm_types.h"
#include "hls_stream.h"

namespace flexllm {

// MAX_CTX       max keys (cache + new) per (layer, kv head); MAX_NEW max tokens per call
// MAX_HD        max head_dim; MAX_HEADS / MAX_KV_HEADS max query / kv heads
// ROW           row length of the q/k/v/out activation buffers (>= MAX_HEADS * MAX_HD)
// HEAD_LANES    query heads of one GQA group processed in parallel (HP)
// KEY_LANES     keys scored / accumulated per pipelined step (KV parallelism)
// KV_LANES      K ports (= V ports) of the KV cache: cached keys loaded per cycle (<= KEY_LANES)
template <int MAX_CTX, int MAX_NEW, int MAX_HD, int MAX_HEADS, int MAX_KV_HEADS, int ROW, int HEAD_LANES,
          int KEY_LANES, int OUT_ROW = ROW, int KV_LANES = KEY_LANES>
struct attention_config {
    static constexpr int max_ctx = MAX_CTX;
    static constexpr int max_new = MAX_NEW;
    static constexpr int max_hd = MAX_HD;
    static constexpr int max_heads = MAX_HEADS;
    static constexpr int max_kv_heads = MAX_KV_HEADS;
    static constexpr int row = ROW;
    static constexpr int head_lanes = HEAD_LANES;
    static constexpr int key_lanes = KEY_LANES;
    static constexpr int out_row = OUT_ROW;
    static constexpr int kv_lanes = KV_LANES;
    static constexpr int kv_ports = 2 * KV_LANES;
    // lanes of the head-vector loops (q quantisation, output rows): 16
    static constexpr int softmax_lanes = 16;
    // the softmax's exp lanes are HEAD_LANES x KEY_LANES (one key step of all lanes per cycle); each head
    // lane's sum_partials gets KEY_LANES consecutive keys per cycle: KEY_LANES <= 16 keeps the loop-carried
    // distance 128 / KEY_LANES >= 8 (flexllm_reduce.h)
    static constexpr int max_key_steps = ceil_div(MAX_CTX, KEY_LANES);
    static constexpr int fifo_steps = 2 * max_key_steps;  // score / exp FIFOs: two whole items
    static constexpr int lane_rows = ceil_div(MAX_CTX, KEY_LANES) + 1;  // K / V lane FIFOs: a whole kv head
    static constexpr int rope_rows = 2 * MAX_NEW;  // RoPE rows of the new tokens: two kv heads
    static constexpr int row_words = kv_row_words(MAX_HD);  // 512-bit words per K/V row
    // |acc_s| <= d * 128 * 128; |acc_v| <= T * 255 * 128
    typedef dot_accumulator<MAX_HD, 128, 128> score_acc_info;
    typedef dot_accumulator<MAX_CTX, 255, 128> av_acc_info;
    typedef typename score_acc_info::type score_acc_t;
    typedef typename av_acc_info::type av_acc_t;
    static_assert(ROW >= MAX_HEADS * MAX_HD, "ROW must hold all query heads");
    static_assert(OUT_ROW >= MAX_HEADS * MAX_HD, "OUT_ROW must hold all query heads");
    static_assert(HEAD_LANES >= 1 && KEY_LANES >= 1, "lanes must be >= 1");
    static_assert(KEY_LANES <= 16, "KEY_LANES <= 16: the softmax sums' loop-carried distance 128 / KEY_LANES >= 8");
    static_assert(KV_LANES >= 1 && KV_LANES <= KEY_LANES,
                  "KV_LANES keys per load cycle must hit distinct K/V buffer banks (<= KEY_LANES)");
    static_assert(MAX_HD % 2 == 0, "head_dim must be even (RoPE)");
};

// Static per-head constants (brevitas_models.golden.LayerParams): c_q, inv_k, inv_v, qk_scale,
// inv_p, pv_scale.
template <int MAX_HEADS, int MAX_KV_HEADS>
struct attention_scales {
    float c_q[MAX_HEADS];       // f32(f64(1/sqrt(d)) / f64(s_q[h]))
    float inv_k[MAX_KV_HEADS];  // 1 / s_k[kh]
    float inv_v[MAX_KV_HEADS];  // 1 / s_v[kh]
    float qk[MAX_HEADS];        // s_q[h] * s_k[h / group]
    float inv_p[MAX_HEADS];     // 1 / s_p[h]
    float pv[MAX_HEADS];        // s_p[h] * s_v[h / group]
};

// One key step of the pipeline: KEY_LANES keys x HEAD_LANES query heads (scores, then exponentials).
template <class CFG>
struct attention_step {
    float v[CFG::head_lanes][CFG::key_lanes];
};

// One value per head lane of an item (maxima, sums).
template <class CFG>
struct attention_lanes {
    float v[CFG::head_lanes];
};

// The query heads of item (kh, hb): heads[hl] = kh * group + hb * HL + hl, active when inside the group.
template <int HL>
inline void attention_item_heads(int kh, int hb, int group, int heads[HL], bool active[HL]) {
#pragma HLS INLINE
    for (int hl = 0; hl < HL; ++hl) {
#pragma HLS UNROLL
        const int g = hb * HL + hl;
        active[hl] = g < group;
        heads[hl] = kh * group + (active[hl] ? g : 0);
    }
}

// ---- two 8-bit products per DSP48E2 (the shared-operand packing of AMD WP486) ----------------------------
// One 27 x 18-bit multiply computes ((a1 << 18) + a0) * b = (a1 * b) << 18 + a0 * b for 9-bit signed a0, a1
// (int8 or uint8) and int8 b. |a0 * b| <= 255 * 128 < 2^17, so the low product is the sign-extended
// bits [17:0] and the high one (p - low) >> 18: both exact. The HEAD_LANES query heads of an item share
// every K code (scores) and every V code (P x V), so head lanes 2j and 2j+1 share one DSP.
static const int INT8_PACK_SHIFT = 18;

inline void int8_pack2_mul(int a0, int a1, int b, int &p0, int &p1) {
#pragma HLS INLINE
    const ap_int<27> packed = ((ap_int<27>)a1 << INT8_PACK_SHIFT) + (ap_int<27>)a0;
    const ap_int<45> p = packed * (ap_int<18>)b;
    const ap_int<INT8_PACK_SHIFT> low = p.range(INT8_PACK_SHIFT - 1, 0);
    p0 = low.to_int();
    p1 = (int)((p - (ap_int<45>)low) >> INT8_PACK_SHIFT).to_int();
}

// Products a[l] * b for the HL lanes of a shared operand b: lanes 2j, 2j+1 packed into one multiply (an odd
// last lane alone).
template <int HL>
inline void int8_lane_products(const int a[HL], int b, int prod[HL]) {
#pragma HLS INLINE
    for (int l = 0; l + 1 < HL; l += 2) {
#pragma HLS UNROLL
        int8_pack2_mul(a[l], a[l + 1], b, prod[l], prod[l + 1]);
    }
    if (HL % 2) prod[HL - 1] = a[HL - 1] * b;
}

// RoPE (optional) + static int8 quantization of head slice [col, col + hd) of an activation row:
// one copy pass, then one fused rotate + quantize pass (rope_apply's arithmetic, flexllm_rope.h), LANES
// elements per cycle each.
template <int MAX_HD, int ROW, int LANES>
void attention_quant_head(const float row[ROW], int col, const float cos_row[MAX_HD], const float sin_row[MAX_HD],
                          bool apply_rope, float mult, int hd, int8_t out[MAX_HD]) {
    float x[MAX_HD];
#pragma HLS ARRAY_PARTITION variable = x cyclic factor = LANES
    const int half = hd >> 1;
HEAD_COPY:
    for (int c = 0; c * LANES < hd; ++c) {
#pragma HLS LOOP_TRIPCOUNT max = (MAX_HD + LANES - 1) / LANES
#pragma HLS PIPELINE II = 1
        FLEXLLM_COUNT("attention_head_copy");
        for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
            const int i = c * LANES + l;
            if (i < hd) x[i] = row[col + i];
        }
    }
HEAD_QUANT:
    for (int c = 0; c * LANES < hd; ++c) {
#pragma HLS LOOP_TRIPCOUNT max = (MAX_HD + LANES - 1) / LANES
#pragma HLS PIPELINE II = 1
        FLEXLLM_COUNT("attention_head_quant");
        for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
            const int i = c * LANES + l;
            if (i < hd) {
                const float y = apply_rope ? rope_element<MAX_HD>(x, cos_row, sin_row, i, half) : x[i];
                out[i] = (int8_t)quant_static(y, mult, -128, 127);
            }
        }
    }
}

// One K or V row (512-bit words) and one token's RoPE table rows, as FIFO elements.
template <class CFG>
struct attention_kv_row {
    wide_word_t w[CFG::row_words];
};

template <class CFG>
struct attention_rope_rows {
    float cos[CFG::max_hd];
    float sin[CFG::max_hd];
};

// The FIFO element <-> the stages' partitioned table rows (wiring: the element is one aggregated word).
template <class CFG>
inline void attention_rope_pack(const float cos_row[CFG::max_hd], const float sin_row[CFG::max_hd],
                                attention_rope_rows<CFG> &rows) {
#pragma HLS INLINE
    for (int i = 0; i < CFG::max_hd; ++i) {
#pragma HLS UNROLL
        rows.cos[i] = cos_row[i];
        rows.sin[i] = sin_row[i];
    }
}

template <class CFG>
inline void attention_rope_unpack(const attention_rope_rows<CFG> &rows, float cos_row[CFG::max_hd],
                                  float sin_row[CFG::max_hd]) {
#pragma HLS INLINE
    for (int i = 0; i < CFG::max_hd; ++i) {
#pragma HLS UNROLL
        cos_row[i] = rows.cos[i];
        sin_row[i] = rows.sin[i];
    }
}

// Stage 0 (per kv head): the cached K / V rows from the KV reader tasks (KV_LANES keys per cycle, at the
// HBM rate of the K / V ports), then the new rows (RoPE + static int8, packed once: to the KV writer
// tasks and to the pipeline). Key u goes to lane FIFO u % KEY_LANES of K and of V, in increasing u; the
// token's RoPE rows go on to the scores stage.
template <class CFG>
void attention_kv_stage(const float k[CFG::max_new][CFG::row], const float v[CFG::max_new][CFG::row],
                        const float *rope_cos, const float *rope_sin, const float inv_k[CFG::max_kv_heads],
                        const float inv_v[CFG::max_kv_heads], hls::stream<wide_word_t> kv_in[CFG::kv_ports],
                        hls::stream<wide_word_t> kv_out[CFG::kv_ports], int n_kv_heads, int hd, int n_tokens,
                        int position, hls::stream<attention_kv_row<CFG> > k_rows[CFG::key_lanes],
                        hls::stream<attention_kv_row<CFG> > v_rows[CFG::key_lanes],
                        hls::stream<attention_rope_rows<CFG> > &rope_rows) {
    constexpr int MAX_HD = CFG::max_hd, KL = CFG::key_lanes, C = CFG::kv_lanes, RW = CFG::row_words;
    constexpr int VL = CFG::softmax_lanes;
    constexpr int MAX_LOAD_STEPS = ceil_div(CFG::max_ctx, C) * RW;
    (void)MAX_LOAD_STEPS;  // loop tripcount only
    const int rw = kv_row_words(hd);
    float cos_row[MAX_HD], sin_row[MAX_HD];
#pragma HLS ARRAY_PARTITION variable = cos_row cyclic factor = VL
#pragma HLS ARRAY_PARTITION variable = sin_row cyclic factor = VL
    int8_t row_codes[MAX_HD];
    attention_kv_row<CFG> k_acc[C], v_acc[C];
#pragma HLS ARRAY_PARTITION variable = k_acc complete dim = 0
#pragma HLS ARRAY_PARTITION variable = v_acc complete dim = 0
KV_HEADS:
    for (int kh = 0; kh < n_kv_heads; ++kh) {
#pragma HLS LOOP_TRIPCOUNT max = CFG::max_kv_heads
        // Cached keys / values (positions < position): key s * C + j from K port j and V port C + j.
        const int load_steps = ceil_div(position, C) * rw;
        int ls = 0, lwd = 0;
    KV_LOAD:
        for (int e = 0; e < load_steps; ++e) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_LOAD_STEPS
#pragma HLS PIPELINE II = 1
            FLEXLLM_COUNT("kv_load");
            for (int j = 0; j < C; ++j) {
#pragma HLS UNROLL
                const int u = ls * C + j;
                if (u < position) {
                    k_acc[j].w[lwd] = kv_in[j].read();
                    v_acc[j].w[lwd] = kv_in[C + j].read();
                    if (lwd == rw - 1) {
                        for (int f = 0; f < KL; ++f) {
#pragma HLS UNROLL
                            if (f == u % KL) {
                                k_rows[f].write(k_acc[j]);
                                v_rows[f].write(v_acc[j]);
                            }
                        }
                    }
                }
            }
            if (++lwd == rw) {
                lwd = 0;
                ++ls;
            }
        }
    NEW_KV:
        for (int t = 0; t < n_tokens; ++t) {
#pragma HLS LOOP_TRIPCOUNT max = CFG::max_new
            const int pos = position + t;
            const int port = pos % C;  // K port `port`, V port C + port
            rope_load_tables<MAX_HD, VL>(rope_cos, rope_sin, pos, hd, cos_row, sin_row);
            attention_rope_rows<CFG> rope;
            attention_rope_pack<CFG>(cos_row, sin_row, rope);
            rope_rows.write(rope);
            attention_kv_row<CFG> krow, vrow;
            attention_quant_head<MAX_HD, CFG::row, VL>(k[t], kh * hd, cos_row, sin_row, true, inv_k[kh], hd, row_codes);
            kv_pack_row<MAX_HD, RW>(row_codes, hd, krow.w);  // packed once: to the cache and to the pipeline
            attention_quant_head<MAX_HD, CFG::row, VL>(v[t], kh * hd, cos_row, sin_row, false, inv_v[kh], hd, row_codes);
            kv_pack_row<MAX_HD, RW>(row_codes, hd, vrow.w);
        KV_SEND_ROW:
            for (int e = 0; e < 2 * rw; ++e) {
#pragma HLS LOOP_TRIPCOUNT max = 2 * RW
#pragma HLS PIPELINE II = 1
                FLEXLLM_COUNT("kv_send_row");
                const bool is_v = e >= rw;
                const int wd = is_v ? e - rw : e;
                const wide_word_t word = is_v ? vrow.w[wd] : krow.w[wd];
                for (int p = 0; p < C; ++p) {
#pragma HLS UNROLL
                    if (p == port) {
                        if (is_v) kv_out[C + p].write(word);
                        else kv_out[p].write(word);
                    }
                }
            }
            for (int f = 0; f < KL; ++f) {
#pragma HLS UNROLL
                if (f == pos % KL) {
                    k_rows[f].write(krow);
                    v_rows[f].write(vrow);
                }
            }
        }
    }
}

// Row u of the kv head's K (or V) rows for one key lane: from the lane's FIFO on first use (u in
// [loaded, n_keys): the rows arrive in increasing u), kept in buf for the later items; from buf afterwards.
template <class CFG>
inline void attention_key_row(int u, int loaded, int n_keys, hls::stream<attention_kv_row<CFG> > &lane_rows,
                              wide_word_t buf[CFG::max_ctx][CFG::row_words], attention_kv_row<CFG> &row) {
#pragma HLS INLINE
    const int ub = u < CFG::max_ctx ? u : 0;
    if (u >= loaded && u < n_keys) {
        row = lane_rows.read();
        for (int wd = 0; wd < CFG::row_words; ++wd) {
#pragma HLS UNROLL
            buf[ub][wd] = row.w[wd];
        }
    } else {
        for (int wd = 0; wd < CFG::row_words; ++wd) {
#pragma HLS UNROLL
            row.w[wd] = buf[ub][wd];
        }
    }
}

// Stage 1 of the query pipeline: per item, the HEAD_LANES query heads quantised (RoPE, static int8), then
// SCORES: KEY_LANES keys x HEAD_LANES heads of exact int8 dot products per cycle, scaled to fp32, streamed
// one key step per cycle, and the per-lane maxima (combined over the key lanes at the end). The K rows
// arrive in the lane FIFOs as the item first needs them (key lane kl reads K FIFO kl) and are kept in
// k_buf for the later items of the kv head.
template <class CFG>
void attention_scores_stage(const float q[CFG::max_new][CFG::row], const float c_q[CFG::max_heads],
                            const float qk[CFG::max_heads], hls::stream<attention_kv_row<CFG> > k_rows[CFG::key_lanes],
                            hls::stream<attention_rope_rows<CFG> > &rope_rows, int n_kv_heads, int hd, int group,
                            int n_tokens, int position, hls::stream<attention_step<CFG> > &score_out,
                            hls::stream<attention_lanes<CFG> > &max_out) {
    typedef typename CFG::score_acc_t score_acc_t;
    constexpr int MAX_HD = CFG::max_hd, HL = CFG::head_lanes, KL = CFG::key_lanes, VL = CFG::softmax_lanes;
    constexpr int MAX_HEAD_BLOCKS = ceil_div(CFG::max_heads, HL);
    (void)MAX_HEAD_BLOCKS;  // loop tripcount only
    const int head_blocks = ceil_div(group, HL);
    // The K rows of one kv head as 512-bit words, KEY_LANES rows per cycle.
    static wide_word_t k_buf[CFG::max_ctx][CFG::row_words];
#pragma HLS ARRAY_PARTITION variable = k_buf cyclic factor = KL dim = 1
#pragma HLS BIND_STORAGE variable = k_buf type = ram_2p impl = uram
    float cos_row[MAX_HD], sin_row[MAX_HD];
#pragma HLS ARRAY_PARTITION variable = cos_row cyclic factor = VL
#pragma HLS ARRAY_PARTITION variable = sin_row cyclic factor = VL
    int8_t q_int[HL][MAX_HD];
#pragma HLS ARRAY_PARTITION variable = q_int complete dim = 0
    float m_lane[HL][KL];
#pragma HLS ARRAY_PARTITION variable = m_lane complete dim = 0
SCORES_KV_HEADS:
    for (int kh = 0; kh < n_kv_heads; ++kh) {
#pragma HLS LOOP_TRIPCOUNT max = CFG::max_kv_heads
        int loaded = 0;  // keys of this kv head in k_buf
    SCORES_TOKENS:
        for (int t = 0; t < n_tokens; ++t) {
#pragma HLS LOOP_TRIPCOUNT max = CFG::max_new
            const int n_keys = position + t + 1;  // causal: keys 0 .. P(t)
            const int key_steps = ceil_div(n_keys, KL);
            attention_rope_unpack<CFG>(rope_rows.read(), cos_row, sin_row);
        SCORES_HEAD_BLOCKS:
            for (int hb = 0; hb < head_blocks; ++hb) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_HEAD_BLOCKS
                int heads[HL];
                bool active[HL];
                attention_item_heads<HL>(kh, hb, group, heads, active);
                for (int hl = 0; hl < HL; ++hl) {
                    for (int kl = 0; kl < KL; ++kl) {
#pragma HLS UNROLL
                        m_lane[hl][kl] = -INFINITY;
                    }
                    if (active[hl]) {
                        attention_quant_head<MAX_HD, CFG::row, VL>(q[t], heads[hl] * hd, cos_row, sin_row, true,
                                                               c_q[heads[hl]], hd, q_int[hl]);
                    }
                }
            SCORES:
                for (int ks = 0; ks < key_steps; ++ks) {
#pragma HLS LOOP_TRIPCOUNT max = CFG::max_key_steps
#pragma HLS PIPELINE II = 1
                    FLEXLLM_COUNT("attention_scores");
                    attention_step<CFG> step;
                    for (int kl = 0; kl < KL; ++kl) {
#pragma HLS UNROLL
                        const int u = ks * KL + kl;
                        attention_kv_row<CFG> krow;
                        attention_key_row<CFG>(u, loaded, n_keys, k_rows[kl], k_buf, krow);
                        score_acc_t acc[HL];
#pragma HLS ARRAY_PARTITION variable = acc complete
                        for (int hl = 0; hl < HL; ++hl) {
#pragma HLS UNROLL
                            acc[hl] = 0;
                        }
                        for (int i = 0; i < MAX_HD; ++i) {
#pragma HLS UNROLL
                            int a[HL], prod[HL];
                            for (int hl = 0; hl < HL; ++hl) {
#pragma HLS UNROLL
                                a[hl] = q_int[hl][i];
                            }
                            int8_lane_products<HL>(a, (int)kv_code(krow.w[i / WORD_BYTES], i), prod);
                            for (int hl = 0; hl < HL; ++hl) {
#pragma HLS UNROLL
                                if (i < hd) acc[hl] += (ap_int<16>)prod[hl];
                            }
                        }
                        for (int hl = 0; hl < HL; ++hl) {
#pragma HLS UNROLL
                            const float sv = acc_to_f32(acc[hl]) * qk[heads[hl]];
                            step.v[hl][kl] = sv;
                            if (u < n_keys && active[hl]) m_lane[hl][kl] = f32_max(m_lane[hl][kl], sv);
                        }
                    }
                    score_out.write(step);
                }
                if (n_keys > loaded) loaded = n_keys;
                attention_lanes<CFG> m;
                for (int hl = 0; hl < HL; ++hl) {
#pragma HLS UNROLL
                    m.v[hl] = combine_max<KL>(m_lane[hl]);
                }
                max_out.write(m);
            }
        }
    }
}

// Stage 2: per item, exp32(s - m) of the valid keys (HEAD_LANES x KEY_LANES per cycle; masked keys give
// +0) and each head lane's sum_partials (key u into partial u % 128, in increasing u: the contract's sum
// whatever the lanes), the fixed trees of all head lanes in one pass, streamed on with the sums.
template <class CFG>
void attention_softmax_stage(int n_kv_heads, int group, int n_tokens, int position,
                             hls::stream<attention_step<CFG> > &score_in, hls::stream<attention_lanes<CFG> > &max_in,
                             hls::stream<attention_step<CFG> > &exp_out, hls::stream<attention_lanes<CFG> > &sum_out) {
    constexpr int HL = CFG::head_lanes, KL = CFG::key_lanes;
    constexpr int MAX_HEAD_BLOCKS = ceil_div(CFG::max_heads, HL);
    (void)MAX_HEAD_BLOCKS;  // loop tripcount only
    constexpr int PB = 32;  // banks of the partials: KL <= 16 consecutive (accumulation), 16 lanes x 2 (tree)
    constexpr int D = REDUCE_PARTIALS / KL;  // loop-carried distance of a partial (>= 8)
    (void)D, (void)PB;  // pragma arguments only
    const int head_blocks = ceil_div(group, HL);
    float partials[HL][REDUCE_PARTIALS];
#pragma HLS ARRAY_PARTITION variable = partials complete dim = 1
#pragma HLS ARRAY_PARTITION variable = partials cyclic factor = PB dim = 2
SOFTMAX_ITEMS:
    for (int item = 0; item < n_kv_heads * n_tokens * head_blocks; ++item) {
#pragma HLS LOOP_TRIPCOUNT max = CFG::max_kv_heads * CFG::max_new * MAX_HEAD_BLOCKS
        const int hb = item % head_blocks;
        const int t = (item / head_blocks) % n_tokens;
        const int kh = item / (head_blocks * n_tokens);
        const int n_keys = position + t + 1;
        const int key_steps = ceil_div(n_keys, KL);
        int heads[HL];
        bool active[HL];
        attention_item_heads<HL>(kh, hb, group, heads, active);
        const attention_lanes<CFG> m = max_in.read();
        for (int hl = 0; hl < HL; ++hl) {
#pragma HLS UNROLL
            for (int r = 0; r < REDUCE_PARTIALS; ++r) {
#pragma HLS UNROLL factor = PB
                partials[hl][r] = 0.0f;
            }
        }
    SOFTMAX_EXP:
        for (int ks = 0; ks < key_steps; ++ks) {
#pragma HLS LOOP_TRIPCOUNT max = CFG::max_key_steps
#pragma HLS PIPELINE II = 1
#pragma HLS DEPENDENCE variable = partials inter distance = D true
            FLEXLLM_COUNT("softmax_exp");
            const attention_step<CFG> s = score_in.read();
            attention_step<CFG> e;
            for (int hl = 0; hl < HL; ++hl) {
#pragma HLS UNROLL
                for (int kl = 0; kl < KL; ++kl) {
#pragma HLS UNROLL
                    const int u = ks * KL + kl;
                    const bool valid = u < n_keys && active[hl];
                    const float ev = valid ? exp32(s.v[hl][kl] - m.v[hl]) : 0.0f;
                    e.v[hl][kl] = ev;
                    if (valid) {
                        const int r = u & (REDUCE_PARTIALS - 1);
                        partials[hl][r] = partials[hl][r] + ev;
                    }
                }
            }
            exp_out.write(e);
        }
        attention_lanes<CFG> sum;
        reduce_partials_tree_sets<HL, 16>(partials, sum.v);  // every head lane's fixed tree, one pass
        for (int hl = 0; hl < HL; ++hl) {
#pragma HLS UNROLL
            if (!active[hl]) sum.v[hl] = 1.0f;  // unused lanes (their exponentials are all +0)
        }
        sum_out.write(sum);
    }
}

// Stage 3: per item, P x V with the softmax's normalisation and uint8 quantisation fused
// (p_int = quant(e / sum, inv_p), HEAD_LANES x KEY_LANES per cycle; exact integer accumulation), then
// the output rows out[t][h * d + i] = f32(acc_v) * pv[h], 16 lanes per cycle. The V rows arrive like the
// K rows of stage 1 (lane FIFOs, kept in v_buf for the later items).
template <class CFG>
void attention_pv_stage(const float inv_p[CFG::max_heads], const float pv[CFG::max_heads],
                        hls::stream<attention_kv_row<CFG> > v_rows[CFG::key_lanes], int n_kv_heads, int hd, int group,
                        int n_tokens, int position, hls::stream<attention_step<CFG> > &exp_in,
                        hls::stream<attention_lanes<CFG> > &sum_in, float out[CFG::max_new][CFG::out_row]) {
    typedef typename CFG::av_acc_t av_acc_t;
    constexpr int MAX_HD = CFG::max_hd, HL = CFG::head_lanes, KL = CFG::key_lanes, VL = CFG::softmax_lanes;
    constexpr int MAX_HEAD_BLOCKS = ceil_div(CFG::max_heads, HL);
    (void)MAX_HEAD_BLOCKS;  // loop tripcount only
    const int head_blocks = ceil_div(group, HL);
    static wide_word_t v_buf[CFG::max_ctx][CFG::row_words];
#pragma HLS ARRAY_PARTITION variable = v_buf cyclic factor = KL dim = 1
#pragma HLS BIND_STORAGE variable = v_buf type = ram_2p impl = uram
    av_acc_t acc_v[HL][MAX_HD];
#pragma HLS ARRAY_PARTITION variable = acc_v complete dim = 0
PV_KV_HEADS:
    for (int kh = 0; kh < n_kv_heads; ++kh) {
#pragma HLS LOOP_TRIPCOUNT max = CFG::max_kv_heads
        int loaded = 0;  // keys of this kv head in v_buf
    PV_TOKENS:
        for (int t = 0; t < n_tokens; ++t) {
#pragma HLS LOOP_TRIPCOUNT max = CFG::max_new
            const int n_keys = position + t + 1;
            const int key_steps = ceil_div(n_keys, KL);
        PV_HEAD_BLOCKS:
            for (int hb = 0; hb < head_blocks; ++hb) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_HEAD_BLOCKS
                int heads[HL];
                bool active[HL];
                attention_item_heads<HL>(kh, hb, group, heads, active);
                const attention_lanes<CFG> sum = sum_in.read();
                for (int hl = 0; hl < HL; ++hl) {
#pragma HLS UNROLL
                    for (int i = 0; i < MAX_HD; ++i) {
#pragma HLS UNROLL
                        acc_v[hl][i] = 0;
                    }
                }
            PV:
                for (int ks = 0; ks < key_steps; ++ks) {
#pragma HLS LOOP_TRIPCOUNT max = CFG::max_key_steps
#pragma HLS PIPELINE II = 1
                    FLEXLLM_COUNT("attention_pv");
                    const attention_step<CFG> e = exp_in.read();
                    attention_kv_row<CFG> vrow[KL];
#pragma HLS ARRAY_PARTITION variable = vrow complete dim = 0
                    for (int kl = 0; kl < KL; ++kl) {
#pragma HLS UNROLL
                        attention_key_row<CFG>(ks * KL + kl, loaded, n_keys, v_rows[kl], v_buf, vrow[kl]);
                    }
                    uint8_t p_code[HL][KL];
#pragma HLS ARRAY_PARTITION variable = p_code complete dim = 0
                    for (int hl = 0; hl < HL; ++hl) {
#pragma HLS UNROLL
                        for (int kl = 0; kl < KL; ++kl) {
#pragma HLS UNROLL
                            const int u = ks * KL + kl;
                            const bool valid = u < n_keys && active[hl];
                            const float p = e.v[hl][kl] / sum.v[hl];
                            p_code[hl][kl] = valid ? (uint8_t)quant_static(p, inv_p[heads[hl]], 0, 255) : (uint8_t)0;
                        }
                    }
                    for (int i = 0; i < MAX_HD; ++i) {
#pragma HLS UNROLL
                        av_acc_t part[HL];
#pragma HLS ARRAY_PARTITION variable = part complete
                        for (int hl = 0; hl < HL; ++hl) {
#pragma HLS UNROLL
                            part[hl] = 0;
                        }
                        for (int kl = 0; kl < KL; ++kl) {
#pragma HLS UNROLL
                            int a[HL], prod[HL];
                            for (int hl = 0; hl < HL; ++hl) {
#pragma HLS UNROLL
                                a[hl] = p_code[hl][kl];
                            }
                            int8_lane_products<HL>(a, (int)kv_code(vrow[kl].w[i / WORD_BYTES], i), prod);
                            for (int hl = 0; hl < HL; ++hl) {
#pragma HLS UNROLL
                                if (i < hd) part[hl] += (ap_int<17>)prod[hl];
                            }
                        }
                        for (int hl = 0; hl < HL; ++hl) {
#pragma HLS UNROLL
                            acc_v[hl][i] += part[hl];
                        }
                    }
                }
                if (n_keys > loaded) loaded = n_keys;
            WRITE_OUT:
                for (int hl = 0; hl < HL; ++hl) {
                    if (!active[hl]) continue;
                    for (int c = 0; c * VL < hd; ++c) {
#pragma HLS LOOP_TRIPCOUNT max = (MAX_HD + VL - 1) / VL
#pragma HLS PIPELINE II = 1
                        FLEXLLM_COUNT("attention_write_out");
                        for (int l = 0; l < VL; ++l) {
#pragma HLS UNROLL
                            const int i = c * VL + l;
                            if (i < hd) out[t][heads[hl] * hd + i] = acc_to_f32(acc_v[hl][i]) * pv[heads[hl]];
                        }
                    }
                }
            }
        }
    }
}

// The attention unit's task graph (DATAFLOW): the KV stage feeds the three query stages; every channel is a
// FIFO that flows forward. The K / V lane FIFOs hold a whole kv head, so the KV stage loads kv head kh+1
// while the query stages work on kh; the score / exp FIFOs hold two whole items.
template <class CFG>
void attention_pipeline(const float q[CFG::max_new][CFG::row], const float k[CFG::max_new][CFG::row],
                        const float v[CFG::max_new][CFG::row], const float *rope_cos, const float *rope_sin,
                        const float c_q[CFG::max_heads], const float inv_k[CFG::max_kv_heads],
                        const float inv_v[CFG::max_kv_heads], const float qk[CFG::max_heads],
                        const float inv_p[CFG::max_heads], const float pv[CFG::max_heads],
                        hls::stream<wide_word_t> kv_in[CFG::kv_ports], hls::stream<wide_word_t> kv_out[CFG::kv_ports],
                        int n_kv_heads, int hd, int group, float out[CFG::max_new][CFG::out_row], int n_tokens,
                        int position) {
#pragma HLS DATAFLOW
    hls::stream<attention_kv_row<CFG> > k_rows[CFG::key_lanes], v_rows[CFG::key_lanes];
#pragma HLS STREAM variable = k_rows depth = CFG::lane_rows
#pragma HLS STREAM variable = v_rows depth = CFG::lane_rows
#pragma HLS BIND_STORAGE variable = k_rows type = fifo impl = uram
#pragma HLS BIND_STORAGE variable = v_rows type = fifo impl = uram
    hls::stream<attention_rope_rows<CFG> > rope_rows("attention_rope_rows");
#pragma HLS STREAM variable = rope_rows depth = CFG::rope_rows
    hls::stream<attention_step<CFG> > scores("attention_scores");
    hls::stream<attention_step<CFG> > exps("attention_exps");
    hls::stream<attention_lanes<CFG> > maxima("attention_maxima"), sums("attention_sums");
#pragma HLS STREAM variable = scores depth = CFG::fifo_steps
#pragma HLS STREAM variable = exps depth = CFG::fifo_steps
#pragma HLS STREAM variable = maxima depth = 4
#pragma HLS STREAM variable = sums depth = 4
    attention_kv_stage<CFG>(k, v, rope_cos, rope_sin, inv_k, inv_v, kv_in, kv_out, n_kv_heads, hd, n_tokens, position,
                            k_rows, v_rows, rope_rows);
    attention_scores_stage<CFG>(q, c_q, qk, k_rows, rope_rows, n_kv_heads, hd, group, n_tokens, position, scores, maxima);
    attention_softmax_stage<CFG>(n_kv_heads, group, n_tokens, position, scores, maxima, exps, sums);
    attention_pv_stage<CFG>(inv_p, pv, v_rows, n_kv_heads, hd, group, n_tokens, position, exps, sums, out);
}

// One layer of attention for n_tokens new tokens (prefill: n_tokens > 1, decode: n_tokens = 1).
//   q [.][ROW] (n_heads * d columns), k, v [.][ROW] (n_kv_heads * d columns): projection outputs
//   rope_cos, rope_sin: [max_positions][d] tables
//   kv_in[p]:  the cached rows of KV port p (p < KV_LANES: K, else V) as its reader task streams them
//   kv_out[p]: the new rows KV port p holds, to its writer task (flexllm_kv_cache.h)
//   out [.][OUT_ROW]: attention output (n_heads * d columns), the o_proj input
// Requires position + n_tokens <= min(MAX_CTX, geo.max_ctx), n_heads % geo.n_kv_heads == 0.
//
// Parallelism (bounded by the two knobs): SCORES and PV each run HEAD_LANES x KEY_LANES x head_dim
// int8 MACs per cycle (HEAD_LANES query heads of one GQA group share each K/V row read; two head lanes per
// DSP48E2, int8_pack2_mul), the softmax
// HEAD_LANES x KEY_LANES exponentials; the KV stage and the three query stages run concurrently
// (attention_pipeline: kv head kh+1 loads while kh's items are scored, exponentiated, multiplied). The K/V
// rows of one kv head sit on chip as 512-bit words (no partitioning of the code dimension), banked cyclic
// by KEY_LANES so KEY_LANES rows are read per cycle. The softmax's normalisation and uint8 quantisation
// run inside PV, so no pass over the probabilities is left. The score maximum is kept per (head lane, key
// lane) and combined at the end of the item (max is exact in any order, flexllm_math.h f32_max).
// Cost model: flexllm_plugin/cost/attention.py.
template <class CFG>
void attention(const float q[CFG::max_new][CFG::row], const float k[CFG::max_new][CFG::row],
               const float v[CFG::max_new][CFG::row], const float *rope_cos, const float *rope_sin,
               const attention_scales<CFG::max_heads, CFG::max_kv_heads> &sc, hls::stream<wide_word_t> kv_in[CFG::kv_ports],
               hls::stream<wide_word_t> kv_out[CFG::kv_ports], const kv_cache_geometry &geo,
               float out[CFG::max_new][CFG::out_row], int n_tokens, int position, int n_heads) {
    // the scales' arrays go to the stages that use them (one reader per array in the DATAFLOW region)
    attention_pipeline<CFG>(q, k, v, rope_cos, rope_sin, sc.c_q, sc.inv_k, sc.inv_v, sc.qk, sc.inv_p, sc.pv, kv_in,
                            kv_out, geo.n_kv_heads, geo.head_dim, n_heads / geo.n_kv_heads, out, n_tokens, position);
}

}  // namespace flexllm
