// C-simulation driver for the attention engine (layers/flexllm_attention.h).
// Usage: drv_attention attention <output file> < inputs
// stdin: lanes_id, n_tokens, position, n_heads, n_kv_heads, head_dim, max_ctx, n_layers, layer, n_pos,
//        cos [n_pos][hd], sin [n_pos][hd], c_q [H], inv_k [KVH], inv_v [KVH], qk [H], inv_p [H], pv [H],
//        q [n][H*hd], k [n][KVH*hd], v [n][KVH*hd], k_cache, v_cache [n_layers][KVH][max_ctx][hd] (i8)
// out:   out [n][H*hd] f32, k_cache, v_cache (after the call)
#include <string>

#include "csim_io.h"
#include "flexllm_attention.h"
#include "harness.h"

using namespace flexllm;

namespace {

constexpr int MAX_CTX = 256;
constexpr int MAX_NEW = 16;
constexpr int MAX_HD = 128;
constexpr int MAX_HEADS = 16;
constexpr int MAX_KV_HEADS = 8;
constexpr int ROW = MAX_HEADS * MAX_HD;

float q[MAX_NEW][ROW], k[MAX_NEW][ROW], v[MAX_NEW][ROW], out[MAX_NEW][ROW];

// (HEAD_LANES, KEY_LANES, KV_LANES): KV_LANES < KEY_LANES in id 1 (fewer KV ports than key lanes)
template <int ID>
struct lanes;
template <>
struct lanes<0> {
    static constexpr int hp = 1, kp = 1, kv = 1;
};
template <>
struct lanes<1> {
    static constexpr int hp = 2, kp = 3, kv = 2;
};
template <>
struct lanes<2> {
    static constexpr int hp = 4, kp = 4, kv = 4;
};

template <int ID>
void run(int n, int position, int n_heads, const kv_cache_geometry &geo, int n_layers, int layer, const std::vector<float> &cos_t,
         const std::vector<float> &sin_t, const attention_scales<MAX_HEADS, MAX_KV_HEADS> &sc,
         std::vector<int8_t> &k_cache, std::vector<int8_t> &v_cache) {
    typedef attention_config<MAX_CTX, MAX_NEW, MAX_HD, MAX_HEADS, MAX_KV_HEADS, ROW, lanes<ID>::hp, lanes<ID>::kp, ROW,
                             lanes<ID>::kv> cfg;
    const size_t rows = k_cache.size() / geo.head_dim;
    std::vector<wide_word_t> kw = csim::kv_to_words(k_cache, rows, geo.head_dim);
    std::vector<wide_word_t> vw = csim::kv_to_words(v_cache, rows, geo.head_dim);
    csim::run_attention<cfg>(q, k, v, cos_t.data(), sin_t.data(), sc, kw, vw, geo, n_layers, layer, out, n, position,
                             n_heads);
    csim::kv_from_words(kw, rows, geo.head_dim, k_cache);
    csim::kv_from_words(vw, rows, geo.head_dim, v_cache);
}

}  // namespace

int main(int argc, char **argv) {
    csim::open_output(argc, argv);
    csim::require(std::string(argv[1]) == "attention", "unknown op");
    const int id = csim::read_int(), n = csim::read_int(), position = csim::read_int();
    const int n_heads = csim::read_int();
    kv_cache_geometry geo;
    geo.n_kv_heads = csim::read_int();
    geo.head_dim = csim::read_int();
    geo.max_ctx = csim::read_int();
    const int n_layers = csim::read_int(), layer = csim::read_int(), n_pos = csim::read_int();
    const int hd = geo.head_dim, kvh = geo.n_kv_heads;
    csim::require(n >= 1 && n <= MAX_NEW && n_heads <= MAX_HEADS && kvh <= MAX_KV_HEADS && hd <= MAX_HD &&
                      position + n <= MAX_CTX && position + n <= geo.max_ctx && position + n <= n_pos,
                  "attention: size");
    std::vector<float> cos_t = csim::read_vec<float>((size_t)n_pos * hd);
    std::vector<float> sin_t = csim::read_vec<float>((size_t)n_pos * hd);
    static attention_scales<MAX_HEADS, MAX_KV_HEADS> sc;
    csim::read(sc.c_q, n_heads);
    csim::read(sc.inv_k, kvh);
    csim::read(sc.inv_v, kvh);
    csim::read(sc.qk, n_heads);
    csim::read(sc.inv_p, n_heads);
    csim::read(sc.pv, n_heads);
    csim::read_rows(q, n, n_heads * hd);
    csim::read_rows(k, n, kvh * hd);
    csim::read_rows(v, n, kvh * hd);
    const size_t cache_n = (size_t)n_layers * kvh * geo.max_ctx * hd;
    std::vector<int8_t> k_cache = csim::read_vec<int8_t>(cache_n);
    std::vector<int8_t> v_cache = csim::read_vec<int8_t>(cache_n);
    if (id == 0) run<0>(n, position, n_heads, geo, n_layers, layer, cos_t, sin_t, sc, k_cache, v_cache);
    else if (id == 1) run<1>(n, position, n_heads, geo, n_layers, layer, cos_t, sin_t, sc, k_cache, v_cache);
    else if (id == 2) run<2>(n, position, n_heads, geo, n_layers, layer, cos_t, sin_t, sc, k_cache, v_cache);
    else csim::fail("attention: unknown lanes id");
    csim::write_rows(out, n, n_heads * hd);
    csim::write(k_cache.data(), cache_n);
    csim::write(v_cache.data(), cache_n);
    std::fclose(csim::out_file());
    return 0;
}
