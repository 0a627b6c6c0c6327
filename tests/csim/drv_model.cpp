// C-simulation driver composing the layers/ modules into a whole Llama forward pass (embedding,
// decoder layers with KV cache, final norm, lm_head), checked against GoldenModel end to end.
// It doubles as the reference composition of the library for a kernel top function.
// Usage: drv_model model <output file> < inputs   (format: tests/test_layers_csim.py::_model_payload)
#include <string>

#include "csim_io.h"
#include "flexllm_activation.h"
#include "flexllm_attention.h"
#include "flexllm_embedding.h"
#include "flexllm_hadamard.h"
#include "flexllm_linear.h"
#include "harness.h"
#include "flexllm_residual.h"
#include "flexllm_rmsnorm.h"
#include "flexllm_token_quant.h"

using namespace flexllm;

namespace {

constexpr int MAX_T = 16;      // tokens per call
constexpr int W = 512;         // activation row buffer (>= hidden, heads * head_dim, ffn, vocab)
constexpr int MAX_CTX = 64;    // KV cache positions
constexpr int MAX_HD = 32;
constexpr int MAX_HEADS = 8;
constexpr int MAX_KV_HEADS = 4;
constexpr int MAX_LAYERS = 3;
constexpr int MAX_M = 32;      // Hadamard small factor
constexpr int PORTS = 3;       // weight ports of the linear engine (== MODEL_PORTS of the test)

// All linear weights share PORTS port memories (as the kernel's HBM images): every matrix's slices
// are appended at the same word offset w_off in every port.
std::vector<wide_word_t> wmem[PORTS];
const wide_word_t *wport[PORTS];

struct linear_params {
    long long w_off = 0;
    std::vector<float> scale, wsum;
    int d_in = 0, d_out = 0;
};

struct layer_params {
    std::vector<float> input_norm, post_norm;
    linear_params q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj;
    attention_scales<MAX_HEADS, MAX_KV_HEADS> scales;
};

struct model_params {
    int bits, kind, n_layers, hidden, n_heads, n_kv_heads, head_dim, ffn, vocab, n_pos, r4, max_ctx;
    float eps;
    std::vector<float> embed, cos_t, sin_t, final_norm;
    int had_m = 1, had_log2_p = 0;
    int8_t had_sign[MAX_M * MAX_M];
    float had_scale = 1.0f;
    linear_params lm_head;
    layer_params layers[MAX_LAYERS];
};

void read_linear(linear_params &p, int d_in, int d_out, int bits) {
    p.d_in = d_in;
    p.d_out = d_out;
    const long long slice = weight_slice_words(d_out, d_in, bits, PORTS);
    p.w_off = (long long)wmem[0].size();
    for (int i = 0; i < PORTS; ++i) {
        wmem[i].resize((size_t)(p.w_off + slice));
        csim::read_words(wmem[i].data() + p.w_off, (size_t)slice);
    }
    p.scale = csim::read_vec<float>(d_out);
    p.wsum = csim::read_vec<float>(d_out);
}

// Activation buffers [MAX_T][W].
float h[MAX_T][W], xn[MAX_T][W], qf[MAX_T][W], kf[MAX_T][W], vf[MAX_T][W], ao[MAX_T][W], tmp[MAX_T][W],
    gate[MAX_T][W], up[MAX_T][W], act[MAX_T][W];
float tok_scale[MAX_T], tok_zero[MAX_T];

template <int BITS, int KIND>
struct model_runner {
    typedef linear_config<MAX_T, W, W, 2, 6, 5, BITS, KIND, PORTS> lin;  // one engine for every linear
    typedef attention_config<MAX_CTX, MAX_T, MAX_HD, MAX_HEADS, MAX_KV_HEADS, W, 2, 2> att;
    typedef typename lin::code_t code_t;
    static code_t codes[MAX_T][W];

    static void quantize(const float x[MAX_T][W], int n, int d) {
        quantize_tokens<MAX_T, W, KIND>(x, n, d, codes, tok_scale, tok_zero);
    }

    static void apply(const linear_params &p, float y[MAX_T][W], int n) {
        csim::run_linear<lin, W>(codes, tok_scale, tok_zero, wport, p.w_off, p.scale.data(), p.wsum.data(), y, n, p.d_in,
                                 p.d_out);
    }

    static void layer(const model_params &m, int i, std::vector<wide_word_t> &k_cache, std::vector<wide_word_t> &v_cache,
                      const kv_cache_geometry &geo, int n, int position) {
        const layer_params &L = m.layers[i];
        const int d = m.hidden, qd = m.n_heads * m.head_dim;
        rmsnorm<MAX_T, W>(h, L.input_norm.data(), m.eps, n, d, xn);
        quantize(xn, n, d);  // shared by q, k, v
        apply(L.q_proj, qf, n);
        apply(L.k_proj, kf, n);
        apply(L.v_proj, vf, n);
        csim::run_attention<att>(qf, kf, vf, m.cos_t.data(), m.sin_t.data(), L.scales, k_cache, v_cache, geo, m.n_layers,
                                 i, ao, n, position, m.n_heads);  // with its KV reader / writer tasks
        quantize(ao, n, qd);
        apply(L.o_proj, tmp, n);
        residual_add<MAX_T, W>(h, tmp, n, d);
        rmsnorm<MAX_T, W>(h, L.post_norm.data(), m.eps, n, d, xn);
        quantize(xn, n, d);  // shared by gate, up
        apply(L.gate_proj, gate, n);
        apply(L.up_proj, up, n);
        silu_mul_rows<MAX_T, W>(gate, up, n, m.ffn, act);
        if (m.r4) hadamard_rows<MAX_T, W, MAX_M>(act, n, m.had_m, m.had_log2_p, m.had_sign, m.had_scale, act);
        quantize(act, n, m.ffn);
        apply(L.down_proj, tmp, n);
        residual_add<MAX_T, W>(h, tmp, n, d);
    }

    static void forward(const model_params &m, const int ids[MAX_T], int n, int position,
                        std::vector<wide_word_t> &k_cache, std::vector<wide_word_t> &v_cache, const kv_cache_geometry &geo,
                        float logits[MAX_T][W]) {
        embedding<MAX_T, W>(m.embed.data(), ids, n, m.hidden, h);
        for (int i = 0; i < m.n_layers; ++i) layer(m, i, k_cache, v_cache, geo, n, position);
        rmsnorm<MAX_T, W>(h, m.final_norm.data(), m.eps, n, m.hidden, xn);
        quantize(xn, n, m.hidden);
        apply(m.lm_head, logits, n);
    }
};

template <int BITS, int KIND>
typename model_runner<BITS, KIND>::code_t model_runner<BITS, KIND>::codes[MAX_T][W];

float logits[MAX_T][W];

}  // namespace

int main(int argc, char **argv) {
    csim::open_output(argc, argv);
    csim::require(std::string(argv[1]) == "model", "unknown op");
    static model_params m;
    m.bits = csim::read_int();
    m.kind = csim::read_int();
    csim::require(csim::read_int() == PORTS, "model: weight ports");
    m.n_layers = csim::read_int();
    m.hidden = csim::read_int();
    m.n_heads = csim::read_int();
    m.n_kv_heads = csim::read_int();
    m.head_dim = csim::read_int();
    m.ffn = csim::read_int();
    m.vocab = csim::read_int();
    m.n_pos = csim::read_int();
    m.r4 = csim::read_int();
    m.max_ctx = csim::read_int();
    m.eps = csim::read_float();
    const int qd = m.n_heads * m.head_dim, kvd = m.n_kv_heads * m.head_dim;
    csim::require(m.n_layers <= MAX_LAYERS && m.hidden <= W && qd <= W && m.ffn <= W && m.vocab <= W &&
                      m.head_dim <= MAX_HD && m.n_heads <= MAX_HEADS && m.n_kv_heads <= MAX_KV_HEADS &&
                      m.max_ctx <= MAX_CTX,
                  "model: size");
    m.embed = csim::read_vec<float>((size_t)m.vocab * m.hidden);
    m.cos_t = csim::read_vec<float>((size_t)m.n_pos * m.head_dim);
    m.sin_t = csim::read_vec<float>((size_t)m.n_pos * m.head_dim);
    if (m.r4) {
        m.had_m = csim::read_int();
        m.had_log2_p = csim::read_int();
        csim::require(m.had_m <= MAX_M && (m.had_m << m.had_log2_p) == m.ffn, "model: hadamard size");
        csim::read(m.had_sign, (size_t)m.had_m * m.had_m);
        m.had_scale = csim::read_float();
    }
    m.final_norm = csim::read_vec<float>(m.hidden);
    read_linear(m.lm_head, m.hidden, m.vocab, m.bits);
    for (int i = 0; i < m.n_layers; ++i) {
        layer_params &L = m.layers[i];
        L.input_norm = csim::read_vec<float>(m.hidden);
        L.post_norm = csim::read_vec<float>(m.hidden);
        read_linear(L.q_proj, m.hidden, qd, m.bits);
        read_linear(L.k_proj, m.hidden, kvd, m.bits);
        read_linear(L.v_proj, m.hidden, kvd, m.bits);
        read_linear(L.o_proj, qd, m.hidden, m.bits);
        read_linear(L.gate_proj, m.hidden, m.ffn, m.bits);
        read_linear(L.up_proj, m.hidden, m.ffn, m.bits);
        read_linear(L.down_proj, m.ffn, m.hidden, m.bits);
        csim::read(L.scales.c_q, m.n_heads);
        csim::read(L.scales.inv_k, m.n_kv_heads);
        csim::read(L.scales.inv_v, m.n_kv_heads);
        csim::read(L.scales.qk, m.n_heads);
        csim::read(L.scales.inv_p, m.n_heads);
        csim::read(L.scales.pv, m.n_heads);
    }
    for (int i = 0; i < PORTS; ++i) wport[i] = wmem[i].data();  // after the last append
    kv_cache_geometry geo;
    geo.n_kv_heads = m.n_kv_heads;
    geo.max_ctx = m.max_ctx;
    geo.head_dim = m.head_dim;
    const size_t cache_n = (size_t)m.n_layers * m.n_kv_heads * m.max_ctx * m.head_dim;
    std::vector<int8_t> k_cache(cache_n, 0), v_cache(cache_n, 0);
    const size_t cache_rows = cache_n / m.head_dim;
    std::vector<wide_word_t> k_words = csim::kv_to_words(k_cache, cache_rows, m.head_dim);
    std::vector<wide_word_t> v_words = csim::kv_to_words(v_cache, cache_rows, m.head_dim);

    // Calls: prefill / chunked prefill / decode steps, all through the same engines.
    const int n_calls = csim::read_int();
    for (int c = 0; c < n_calls; ++c) {
        const int n = csim::read_int(), position = csim::read_int();
        csim::require(n >= 1 && n <= MAX_T && position + n <= m.max_ctx && position + n <= m.n_pos, "model: call");
        int ids[MAX_T];
        csim::read(ids, n);
        if (m.bits == 4 && m.kind == INPUT_UINT4_ASYM)
            model_runner<4, INPUT_UINT4_ASYM>::forward(m, ids, n, position, k_words, v_words, geo, logits);
        else if (m.bits == 4 && m.kind == INPUT_INT8_SYM)
            model_runner<4, INPUT_INT8_SYM>::forward(m, ids, n, position, k_words, v_words, geo, logits);
        else if (m.bits == 8 && m.kind == INPUT_INT8_SYM)
            model_runner<8, INPUT_INT8_SYM>::forward(m, ids, n, position, k_words, v_words, geo, logits);
        else
            csim::fail("model: unsupported bits / kind");
        csim::write_rows(logits, n, m.vocab);
    }
    csim::kv_from_words(k_words, cache_rows, m.head_dim, k_cache);
    csim::kv_from_words(v_words, cache_rows, m.head_dim, v_cache);
    csim::write(k_cache.data(), cache_n);
    csim::write(v_cache.data(), cache_n);
    std::fclose(csim::out_file());
    return 0;
}
