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
//   p_int[u]     = clamp(rint(p[u] * inv_p[h]), 0, 255)               uint8 (flexllm_softmax.h)
//   acc_v[i]     = sum_{u <= P(t)} p_int[u] * v_int[u][i]             exact
//   out[t][h * d + i] = f32(acc_v[i]) * pv[h]
// == brevitas_models.golden.GoldenModel._attention after the q/k/v projections
// (fp32.rope, quant_static, int_matmul, softmax_masked).
//
// Activation rows (q, k, v, out) are [MAX_NEW][ROW] with head h at columns h * d .. h * d + d - 1
// (the q/k/v projection output layout), so they can be the linear engine's output buffers.
//
// Schedule: per kv head, the cached rows (positions < position) are read into on-chip buffers with
// one burst each for K and V, the new rows are computed, appended and written back; then the
// group's query heads are processed HEAD_LANES at a time (sharing every K/V buffer read): scores and
// P x V with KEY_LANES keys per pipelined step for all lanes, the softmax lane after lane.
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

namespace flexllm {

// MAX_CTX       max keys (cache + new) per (layer, kv head); MAX_NEW max tokens per call
// MAX_HD        max head_dim; MAX_HEADS / MAX_KV_HEADS max query / kv heads
// ROW           row length of the q/k/v/out activation buffers (>= MAX_HEADS * MAX_HD)
// HEAD_LANES    query heads of one GQA group processed in parallel (HP)
// KEY_LANES     keys scored / accumulated per pipelined step (KV parallelism)
template <int MAX_CTX, int MAX_NEW, int MAX_HD, int MAX_HEADS, int MAX_KV_HEADS, int ROW, int HEAD_LANES,
          int KEY_LANES, int OUT_ROW = ROW>
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
    // softmax and head-vector lanes: 16, the most the reduction contract allows (flexllm_reduce.h); the
    // score rows are banked by lcm(KEY_LANES, 16) so both the key lanes and the softmax lanes hit
    // distinct banks
    static constexpr int softmax_lanes = 16;
    static constexpr int score_banks = KEY_LANES * 16 / gcd_int(KEY_LANES, 16);
    static constexpr int row_words = kv_row_words(MAX_HD);  // 512-bit words per K/V row
    // |acc_s| <= d * 128 * 128; |acc_v| <= T * 255 * 128
    typedef dot_accumulator<MAX_HD, 128, 128> score_acc_info;
    typedef dot_accumulator<MAX_CTX, 255, 128> av_acc_info;
    typedef typename score_acc_info::type score_acc_t;
    typedef typename av_acc_info::type av_acc_t;
    static_assert(ROW >= MAX_HEADS * MAX_HD, "ROW must hold all query heads");
    static_assert(OUT_ROW >= MAX_HEADS * MAX_HD, "OUT_ROW must hold all query heads");
    static_assert(HEAD_LANES >= 1 && KEY_LANES >= 1, "lanes must be >= 1");
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

// One layer of attention for n_tokens new tokens (prefill: n_tokens > 1, decode: n_tokens = 1).
//   q [.][ROW] (n_heads * d columns), k, v [.][ROW] (n_kv_heads * d columns): projection outputs
//   rope_cos, rope_sin: [max_positions][d] tables; k_cache, v_cache: flexllm_kv_cache.h layout (512-bit)
//   out [.][OUT_ROW]: attention output (n_heads * d columns), the o_proj input
// Requires position + n_tokens <= min(MAX_CTX, geo.max_ctx), n_heads % geo.n_kv_heads == 0.
//
// Parallelism (bounded by the two knobs): SCORES and PV each run HEAD_LANES x KEY_LANES x head_dim
// int8 MACs per cycle (HEAD_LANES query heads of one GQA group share each K/V row read); the K/V rows
// of one kv head sit on chip as 512-bit words (no partitioning of the code dimension), banked cyclic
// by KEY_LANES so KEY_LANES rows are read per cycle. The score maximum is kept per (head lane, key
// lane) and combined at the end of the pass (max is exact in any order, flexllm_math.h f32_max).
// Cost model: flexllm_plugin/cost/attention.py.
template <class CFG>
void attention(const float q[CFG::max_new][CFG::row], const float k[CFG::max_new][CFG::row],
               const float v[CFG::max_new][CFG::row], const float *rope_cos, const float *rope_sin,
               const attention_scales<CFG::max_heads, CFG::max_kv_heads> &sc, wide_word_t *k_cache,
               wide_word_t *v_cache, const kv_cache_geometry &geo, int layer, float out[CFG::max_new][CFG::out_row],
               int n_tokens, int position, int n_heads) {
    typedef typename CFG::score_acc_t score_acc_t;
    typedef typename CFG::av_acc_t av_acc_t;
    constexpr int MAX_HD = CFG::max_hd;
    constexpr int MAX_CTX = CFG::max_ctx;
    constexpr int HL = CFG::head_lanes;
    constexpr int KL = CFG::key_lanes;
    constexpr int RW = CFG::row_words;
    constexpr int VL = CFG::softmax_lanes;  // lanes of the head-vector loops (quantize, output)
    constexpr int SB = CFG::score_banks;
    (void)SB;  // partition factor only
    constexpr int MAX_KEY_STEPS = ceil_div(MAX_CTX, KL);
    constexpr int MAX_HEAD_BLOCKS = ceil_div(CFG::max_heads, HL);
    (void)MAX_KEY_STEPS, (void)MAX_HEAD_BLOCKS;  // loop tripcounts only

    const int hd = geo.head_dim;
    const int n_kv_heads = geo.n_kv_heads;
    const int group = n_heads / n_kv_heads;
    const int head_blocks = ceil_div(group, HL);

    // On-chip K/V rows of one kv head as 512-bit words, KEY_LANES rows readable per cycle.
    static wide_word_t k_buf[MAX_CTX][RW];
    static wide_word_t v_buf[MAX_CTX][RW];
#pragma HLS ARRAY_PARTITION variable = k_buf cyclic factor = KL dim = 1
#pragma HLS ARRAY_PARTITION variable = v_buf cyclic factor = KL dim = 1
#pragma HLS BIND_STORAGE variable = k_buf type = ram_2p impl = uram
#pragma HLS BIND_STORAGE variable = v_buf type = ram_2p impl = uram
    static float scores[HL][MAX_CTX];
    static uint8_t p_int[HL][MAX_CTX];
#pragma HLS ARRAY_PARTITION variable = scores complete dim = 1
#pragma HLS ARRAY_PARTITION variable = scores cyclic factor = SB dim = 2
#pragma HLS ARRAY_PARTITION variable = p_int complete dim = 1
#pragma HLS ARRAY_PARTITION variable = p_int cyclic factor = SB dim = 2
#pragma HLS BIND_STORAGE variable = scores type = ram_2p impl = bram
    float cos_row[MAX_HD], sin_row[MAX_HD];
#pragma HLS ARRAY_PARTITION variable = cos_row cyclic factor = VL
#pragma HLS ARRAY_PARTITION variable = sin_row cyclic factor = VL
    int8_t q_int[HL][MAX_HD];
#pragma HLS ARRAY_PARTITION variable = q_int complete dim = 0
    int8_t row_codes[MAX_HD];
    av_acc_t acc_v[HL][MAX_HD];
#pragma HLS ARRAY_PARTITION variable = acc_v complete dim = 0
    float m_lane[HL][KL];
#pragma HLS ARRAY_PARTITION variable = m_lane complete dim = 0

KV_HEADS:
    for (int kh = 0; kh < n_kv_heads; ++kh) {
#pragma HLS LOOP_TRIPCOUNT max = CFG::max_kv_heads
        // Cached keys / values (positions < position), then the new entries.
        kv_read_rows_pair<MAX_CTX, RW>(k_cache, v_cache, geo, layer, kh, position, k_buf, v_buf);
    NEW_KV:
        for (int t = 0; t < n_tokens; ++t) {
#pragma HLS LOOP_TRIPCOUNT max = CFG::max_new
            const int pos = position + t;
            rope_load_tables<MAX_HD, VL>(rope_cos, rope_sin, pos, hd, cos_row, sin_row);
            attention_quant_head<MAX_HD, CFG::row, VL>(k[t], kh * hd, cos_row, sin_row, true, sc.inv_k[kh], hd, row_codes);
            kv_pack_row<MAX_HD, RW>(row_codes, hd, k_buf[pos]);      // packed once: on chip and to the cache
            kv_write_row<RW>(k_cache, geo, layer, kh, pos, k_buf[pos]);
            attention_quant_head<MAX_HD, CFG::row, VL>(v[t], kh * hd, cos_row, sin_row, false, sc.inv_v[kh], hd, row_codes);
            kv_pack_row<MAX_HD, RW>(row_codes, hd, v_buf[pos]);
            kv_write_row<RW>(v_cache, geo, layer, kh, pos, v_buf[pos]);
        }

    QUERY_TOKENS:
        for (int t = 0; t < n_tokens; ++t) {
#pragma HLS LOOP_TRIPCOUNT max = CFG::max_new
            const int n_keys = position + t + 1;  // causal: keys 0 .. P(t)
            const int key_steps = ceil_div(n_keys, KL);
            rope_load_tables<MAX_HD, VL>(rope_cos, rope_sin, position + t, hd, cos_row, sin_row);
        HEAD_BLOCKS:
            for (int hb = 0; hb < head_blocks; ++hb) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_HEAD_BLOCKS
                int heads[HL];
                bool active[HL];
                for (int hl = 0; hl < HL; ++hl) {
                    const int g = hb * HL + hl;
                    active[hl] = g < group;
                    heads[hl] = kh * group + (active[hl] ? g : 0);
                    for (int kl = 0; kl < KL; ++kl) {
#pragma HLS UNROLL
                        m_lane[hl][kl] = -INFINITY;
                    }
                    if (active[hl]) {
                        attention_quant_head<MAX_HD, CFG::row, VL>(q[t], heads[hl] * hd, cos_row, sin_row, true,
                                                               sc.c_q[heads[hl]], hd, q_int[hl]);
                    }
                }
                // Scores (exact integer dot products) and their per-lane maxima.
            SCORES:
                for (int ks = 0; ks < key_steps; ++ks) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_KEY_STEPS
#pragma HLS PIPELINE II = 1
                    FLEXLLM_COUNT("attention_scores");
                    for (int kl = 0; kl < KL; ++kl) {
#pragma HLS UNROLL
                        const int u = ks * KL + kl;
                        wide_word_t krow[RW];
#pragma HLS ARRAY_PARTITION variable = krow complete
                        for (int wd = 0; wd < RW; ++wd) {
#pragma HLS UNROLL
                            krow[wd] = k_buf[u < MAX_CTX ? u : 0][wd];
                        }
                        for (int hl = 0; hl < HL; ++hl) {
#pragma HLS UNROLL
                            if (u < n_keys && active[hl]) {
                                score_acc_t acc = 0;
                                for (int i = 0; i < MAX_HD; ++i) {
#pragma HLS UNROLL
                                    if (i < hd) acc += (ap_int<16>)((int)q_int[hl][i] * (int)kv_code(krow[i / WORD_BYTES], i));
                                }
                                const float s = acc_to_f32(acc) * sc.qk[heads[hl]];
                                scores[hl][u] = s;
                                m_lane[hl][kl] = f32_max(m_lane[hl][kl], s);
                            }
                        }
                    }
                }
                // Softmax of the valid keys and its uint8 codes, one head lane after the other.
            SOFTMAX_LANES:
                for (int hl = 0; hl < HL; ++hl) {
                    if (active[hl]) {
                        float m = m_lane[hl][0];
                        for (int kl = 1; kl < KL; ++kl) {
#pragma HLS UNROLL
                            m = f32_max(m, m_lane[hl][kl]);
                        }
                        softmax_quant_prefix<MAX_CTX, CFG::softmax_lanes>(scores[hl], n_keys, m, sc.inv_p[heads[hl]], p_int[hl]);
                    }
                }
                // P x V (exact integer) and the output scale.
                for (int hl = 0; hl < HL; ++hl) {
#pragma HLS UNROLL
                    for (int i = 0; i < MAX_HD; ++i) {
#pragma HLS UNROLL
                        acc_v[hl][i] = 0;
                    }
                }
            PV:
                for (int ks = 0; ks < key_steps; ++ks) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_KEY_STEPS
#pragma HLS PIPELINE II = 1
                    FLEXLLM_COUNT("attention_pv");
                    wide_word_t vrow[KL][RW];
#pragma HLS ARRAY_PARTITION variable = vrow complete dim = 0
                    for (int kl = 0; kl < KL; ++kl) {
#pragma HLS UNROLL
                        const int u = ks * KL + kl;
                        for (int wd = 0; wd < RW; ++wd) {
#pragma HLS UNROLL
                            vrow[kl][wd] = v_buf[u < MAX_CTX ? u : 0][wd];
                        }
                    }
                    for (int hl = 0; hl < HL; ++hl) {
#pragma HLS UNROLL
                        for (int i = 0; i < MAX_HD; ++i) {
#pragma HLS UNROLL
                            av_acc_t part = 0;
                            for (int kl = 0; kl < KL; ++kl) {
#pragma HLS UNROLL
                                const int u = ks * KL + kl;
                                if (u < n_keys && i < hd && active[hl]) {
                                    part += (ap_int<17>)((int)p_int[hl][u] * (int)kv_code(vrow[kl][i / WORD_BYTES], i));
                                }
                            }
                            acc_v[hl][i] += part;
                        }
                    }
                }
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
                            if (i < hd) out[t][heads[hl] * hd + i] = acc_to_f32(acc_v[hl][i]) * sc.pv[heads[hl]];
                        }
                    }
                }
            }
        }
    }
}

}  // namespace flexllm
