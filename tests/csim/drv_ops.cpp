// C-simulation driver for the element-wise / row modules of layers/ (one op per invocation).
// Usage: drv_ops <op> <output file> < inputs   (formats: tests/test_layers_csim.py)
#include <cstring>
#include <string>

#include "csim_io.h"
#include "harness.h"
#include "flexllm_activation.h"
#include "flexllm_attention.h"
#include "flexllm_embedding.h"
#include "flexllm_hadamard.h"
#include "flexllm_kv_cache.h"
#include "flexllm_kv_host.h"
#include "flexllm_math.h"
#include "flexllm_reduce.h"
#include "flexllm_residual.h"
#include "flexllm_rmsnorm.h"
#include "flexllm_rope.h"
#include "flexllm_sampling.h"
#include "flexllm_softmax.h"
#include "flexllm_token_quant.h"
#include "flexllm_weights.h"

using namespace flexllm;

namespace {

constexpr int MAX_T = 16;
constexpr int MAX_D = 8192;
constexpr int MAX_M = 64;
constexpr int MAX_HD = 128;
constexpr int MAX_V = 8192;
constexpr int MAX_K = 64;
constexpr int MAX_CTX = 256;

float xa[MAX_T][MAX_D], xb[MAX_T][MAX_D], xc[MAX_T][MAX_D];
uint8_t qu[MAX_T][MAX_D];
int8_t qi[MAX_T][MAX_D];
float row_a[MAX_D];

// Runs FN<L>() for the run-time lane count L (the LANES template parameter of the element-wise
// modules; LANES divides 128 and is <= 16).
#define WITH_LANES(lanes, FN)                      \
    switch (lanes) {                               \
        case 1: FN<1>(); break;                    \
        case 2: FN<2>(); break;                    \
        case 4: FN<4>(); break;                    \
        case 8: FN<8>(); break;                    \
        case 16: FN<16>(); break;                  \
        default: csim::fail("unsupported LANES"); \
    }

// lanes, rows, n, x[rows][n] -> per row: sum_partials, streaming sum (add), streaming sum
// (add_lanes), row_min, row_max, row_min_max (min, max), row_absmax (f32 each)
template <int L>
void reduce_rows(int rows, int n) {
    for (int r = 0; r < rows; ++r) {
        csim::write1(sum_partials<MAX_D, L>(xa[r], n));
        sum_partials_accumulator<L> acc;  // streaming forms must agree
        for (int k = 0; k < n; ++k) acc.add(k, xa[r][k]);
        csim::write1(acc.result());
        acc.reset();
        for (int c = 0; c * L < n; ++c) acc.add_lanes(c, &xa[r][c * L], n);
        csim::write1(acc.result());
        csim::write1(n ? row_min<MAX_D, L>(xa[r], n) : 0.0f);
        csim::write1(n ? row_max<MAX_D, L>(xa[r], n) : 0.0f);
        float mn = 0.0f, mx = 0.0f;
        if (n) row_min_max<MAX_D, L>(xa[r], n, mn, mx);
        csim::write1(mn);
        csim::write1(mx);
        csim::write1(row_absmax<MAX_D, L>(xa[r], n));
    }
}

int g_lanes, g_rows, g_n, g_kind;

template <int L>
void reduce_l() { reduce_rows<L>(g_rows, g_n); }

void op_reduce() {
    g_lanes = csim::read_int();
    const int rows = csim::read_int(), n = csim::read_int();
    csim::require(rows <= MAX_T && n <= MAX_D, "reduce: size");
    csim::read_rows(xa, rows, n);
    g_rows = rows;
    g_n = n;
    WITH_LANES(g_lanes, reduce_l)
}

// n, x[n] -> rint_even, rint_even_arith, exp32, silu (f32 each)
void op_scalar() {
    const int n = csim::read_int();
    std::vector<float> x = csim::read_vec<float>(n);
    for (int i = 0; i < n; ++i) csim::write1(rint_even(x[i]));
    for (int i = 0; i < n; ++i) csim::write1(rint_even_arith(x[i]));
    for (int i = 0; i < n; ++i) csim::write1(exp32(x[i]));
    for (int i = 0; i < n; ++i) csim::write1(silu(x[i]));
}

// lanes, kind, rows, d, x -> codes [rows][d] (u8 / i8), scale [rows], zero [rows]
// (token_quant_clip: lanes, kind, rows, d, clip, x -> the same with the uint4 range clipped)
float g_clip = 1.0f;

template <int L>
void token_quant_l() {
    const int rows = g_rows, d = g_n;
    float s[MAX_T], z[MAX_T];
    if (g_kind == INPUT_UINT4_ASYM) {
        if (g_clip == 1.0f)
            quantize_tokens<MAX_T, MAX_D, INPUT_UINT4_ASYM, L>(xa, rows, d, qu, s, z);   // the default argument
        else
            quantize_tokens<MAX_T, MAX_D, INPUT_UINT4_ASYM, L>(xa, rows, d, qu, s, z, g_clip);
        csim::write_rows(qu, rows, d);
    } else {
        quantize_tokens<MAX_T, MAX_D, INPUT_INT8_SYM, L>(xa, rows, d, qi, s, z);
        csim::write_rows(qi, rows, d);
    }
    csim::write(s, rows);
    csim::write(z, rows);
}

void op_token_quant(bool with_clip) {
    g_lanes = csim::read_int();
    g_kind = csim::read_int();
    g_rows = csim::read_int();
    g_n = csim::read_int();
    g_clip = with_clip ? csim::read_float() : 1.0f;
    csim::require(g_rows <= MAX_T && g_n <= MAX_D && g_n >= 1, "token_quant: size");
    csim::read_rows(xa, g_rows, g_n);
    WITH_LANES(g_lanes, token_quant_l)
}

// lanes, n, mult, lo, hi, x[n] -> int32 codes (scalar form) and the same through quant_static_row (int32)
float g_mult;
int g_lo, g_hi;

template <int L>
void quant_static_l() {
    static int32_t codes[MAX_D];
    quant_static_row<MAX_D, int32_t, L>(row_a, g_n, g_mult, g_lo, g_hi, codes);
    csim::write(codes, g_n);
}

void op_quant_static() {
    g_lanes = csim::read_int();
    const int n = csim::read_int();
    const float mult = csim::read_float();
    const int lo = csim::read_int(), hi = csim::read_int();
    csim::require(n <= MAX_D, "quant_static: size");
    csim::read(row_a, n);
    for (int i = 0; i < n; ++i) csim::write1((int32_t)quant_static(row_a[i], mult, lo, hi));
    g_n = n;
    g_mult = mult;
    g_lo = lo;
    g_hi = hi;
    WITH_LANES(g_lanes, quant_static_l)
}

// lanes, rows, d, eps, x, w -> y
float g_eps;

template <int L>
void rmsnorm_l() {
    rmsnorm<MAX_T, MAX_D, L>(xa, row_a, g_eps, g_rows, g_n, xb);
    csim::write_rows(xb, g_rows, g_n);
}

void op_rmsnorm() {
    g_lanes = csim::read_int();
    g_rows = csim::read_int();
    g_n = csim::read_int();
    g_eps = csim::read_float();
    csim::require(g_rows <= MAX_T && g_n <= MAX_D, "rmsnorm: size");
    csim::read_rows(xa, g_rows, g_n);
    csim::read(row_a, g_n);
    WITH_LANES(g_lanes, rmsnorm_l)
}

// lanes, rows, n_valid [rows], inv_p, x [rows][n_valid[r]] (ragged) -> per row: p via softmax_prefix,
// p via softmax_quant_prefix (max from row_max), p_int (u8), p via softmax_prefix_with_max
template <int L>
void softmax_row_l() {
    static uint8_t codes[MAX_D];
    const int n = g_n;
    for (int u = 0; u < n; ++u) xa[0][u] = row_a[u];
    for (int u = 0; u < n; ++u) xa[1][u] = row_a[u];
    softmax_prefix<MAX_D, L>(xa[0], n);
    csim::write(xa[0], n);
    const float m = row_max<MAX_D, L>(row_a, n);
    softmax_quant_prefix<MAX_D, L>(row_a, n, m, g_mult, codes);
    csim::write(row_a, n);
    csim::write(codes, n);
    softmax_prefix_with_max<MAX_D, L>(xa[1], n, m);
    csim::write(xa[1], n);
}

void op_softmax() {
    g_lanes = csim::read_int();
    const int rows = csim::read_int();
    std::vector<int32_t> n_valid = csim::read_vec<int32_t>(rows);
    g_mult = csim::read_float();
    for (int r = 0; r < rows; ++r) {
        g_n = n_valid[r];
        csim::require(g_n >= 1 && g_n <= MAX_D, "softmax: size");
        csim::read(row_a, g_n);
        WITH_LANES(g_lanes, softmax_row_l)
    }
}

// lanes, n_pos, hd, rows, cos [n_pos][hd], sin, pos [rows], x [rows][hd] -> y [rows][hd] via rope_at,
// and via rope_load_tables + rope_apply
const float *g_cos, *g_sin;
int g_pos;

template <int L>
void rope_l() {
    float x[MAX_HD], y[MAX_HD], c[MAX_HD], s[MAX_HD];
    csim::read(x, g_n);
    rope_at<MAX_HD, L>(x, g_cos, g_sin, g_pos, g_n, y);
    csim::write(y, g_n);
    rope_load_tables<MAX_HD, L>(g_cos, g_sin, g_pos, g_n, c, s);
    rope_apply<MAX_HD, L>(x, c, s, g_n, y);
    csim::write(y, g_n);
}

void op_rope() {
    g_lanes = csim::read_int();
    const int n_pos = csim::read_int(), hd = csim::read_int(), rows = csim::read_int();
    csim::require(hd <= MAX_HD && rows <= MAX_T, "rope: size");
    std::vector<float> cos_t = csim::read_vec<float>((size_t)n_pos * hd);
    std::vector<float> sin_t = csim::read_vec<float>((size_t)n_pos * hd);
    std::vector<int32_t> pos = csim::read_vec<int32_t>(rows);
    g_cos = cos_t.data();
    g_sin = sin_t.data();
    g_n = hd;
    for (int r = 0; r < rows; ++r) {
        g_pos = pos[r];
        WITH_LANES(g_lanes, rope_l)
    }
}

// lanes, rows, d, gate, up -> silu_mul, residual_sum, copy_row (last row of gate), copy_rows,
// residual_add
template <int L>
void silu_residual_l() {
    const int rows = g_rows, d = g_n;
    silu_mul_rows<MAX_T, MAX_D, L>(xa, xb, rows, d, xc);
    csim::write_rows(xc, rows, d);
    residual_sum<MAX_T, MAX_D, L>(xa, xb, rows, d, xc);
    csim::write_rows(xc, rows, d);
    copy_row<MAX_T, MAX_D, L>(xa, rows - 1, d, row_a);
    csim::write(row_a, d);
    copy_rows<MAX_T, MAX_D, L>(xb, rows, d, xc);
    csim::write_rows(xc, rows, d);
    residual_add<MAX_T, MAX_D, L>(xa, xb, rows, d);
    csim::write_rows(xa, rows, d);
}

void op_silu_residual() {
    g_lanes = csim::read_int();
    g_rows = csim::read_int();
    g_n = csim::read_int();
    csim::require(g_rows <= MAX_T && g_n <= MAX_D, "silu: size");
    csim::read_rows(xa, g_rows, g_n);
    csim::read_rows(xb, g_rows, g_n);
    WITH_LANES(g_lanes, silu_residual_l)
}

// vocab, d, table [vocab][d], n, ids [n] -> x [n][d]
void op_embedding() {
    const int vocab = csim::read_int(), d = csim::read_int();
    std::vector<float> table = csim::read_vec<float>((size_t)vocab * d);
    const int n = csim::read_int();
    csim::require(n <= MAX_T && d <= MAX_D, "embedding: size");
    int ids[MAX_T];
    csim::read(ids, n);
    embedding<MAX_T, MAX_D>(table.data(), ids, n, d, xa);
    csim::write_rows(xa, n, d);
}

// lanes, rows, m, log2_p, sign [m][m] int8, scale, x [rows][n] -> y [rows][n] (and in place, must agree)
int8_t g_sign[MAX_M * MAX_M];
int g_m, g_log2_p;
float g_scale;

template <int L>
void hadamard_l() {
    const int n = g_m << g_log2_p;
    hadamard_rows<MAX_T, MAX_D, MAX_M, L>(xa, g_rows, g_m, g_log2_p, g_sign, g_scale, xb);
    csim::write_rows(xb, g_rows, n);
    hadamard_rows<MAX_T, MAX_D, MAX_M, L>(xa, g_rows, g_m, g_log2_p, g_sign, g_scale, xa);
    csim::write_rows(xa, g_rows, n);
}

void op_hadamard() {
    g_lanes = csim::read_int();
    g_rows = csim::read_int();
    g_m = csim::read_int();
    g_log2_p = csim::read_int();
    const int n = g_m << g_log2_p;
    csim::require(g_rows <= MAX_T && n <= MAX_D && g_m <= MAX_M, "hadamard: size");
    csim::read(g_sign, (size_t)g_m * g_m);
    g_scale = csim::read_float();
    csim::require(g_scale == hadamard_scale(n), "hadamard: scale differs from hadamard_scale(n)");
    csim::read_rows(xa, g_rows, n);
    WITH_LANES(g_lanes, hadamard_l)
}

// n, k, inv_t, state, logits [n] -> argmax (i32), top-k index (i32), new state (u32)
void op_sampling() {
    const int n = csim::read_int(), k = csim::read_int();
    const float inv_t = csim::read_float();
    uint32_t state = csim::read1<uint32_t>();
    csim::require(n <= MAX_V, "sampling: size");
    csim::read(row_a, n);
    csim::write1((int32_t)greedy_argmax<MAX_V>(row_a, n));
    const int idx = sample_top_k<MAX_V, MAX_K>(row_a, n, k, inv_t, state);
    csim::write1((int32_t)idx);
    csim::write1(state);
}

// state, count -> count x (state u32, uniform f32)
void op_xorshift() {
    uint32_t state = csim::read1<uint32_t>();
    const int count = csim::read_int();
    for (int i = 0; i < count; ++i) {
        state = xorshift32_next(state);
        csim::write1(state);
        csim::write1(uniform_from_state(state));
    }
}

// bits, ports, d_out, d_in, w_off, packed [ports][slice_words * 64] (pack_weights_ports)
//   -> codes [d_out][d_in] via unpack_weight_row, then via weight_code
// Each port's memory holds w_off garbage words before the slice.
template <int BITS, int PORTS>
void unpack_all(int d_out, int d_in, int w_off) {
    const long long slice = weight_slice_words(d_out, d_in, BITS, PORTS);
    std::vector<wide_word_t> mem[PORTS];
    const wide_word_t *w[PORTS];
    for (int p = 0; p < PORTS; ++p) {
        mem[p].assign((size_t)(w_off + slice), wide_word_t(-1));
        csim::read_words(mem[p].data() + w_off, (size_t)slice);
        w[p] = mem[p].data();
    }
    for (int j = 0; j < d_out; ++j) {
        csim::unpack_weight_row<BITS, PORTS, MAX_D>(w, w_off, j, d_in, qi[0]);
        csim::write(qi[0], d_in);
    }
    for (int j = 0; j < d_out; ++j)
        for (int k = 0; k < d_in; ++k) csim::write1(csim::weight_code<BITS, PORTS>(w, w_off, j, k, d_in));
}

template <int BITS>
void unpack_ports(int ports, int d_out, int d_in, int w_off) {
    if (ports == 1) unpack_all<BITS, 1>(d_out, d_in, w_off);
    else if (ports == 2) unpack_all<BITS, 2>(d_out, d_in, w_off);
    else if (ports == 3) unpack_all<BITS, 3>(d_out, d_in, w_off);
    else if (ports == 4) unpack_all<BITS, 4>(d_out, d_in, w_off);
    else csim::fail("weights: ports");
}

void op_weights() {
    const int bits = csim::read_int(), ports = csim::read_int(), d_out = csim::read_int(), d_in = csim::read_int();
    const int w_off = csim::read_int();
    csim::require(d_in <= MAX_D && w_off >= 0, "weights: size");
    if (bits == 4)
        unpack_ports<4>(ports, d_out, d_in, w_off);
    else
        unpack_ports<8>(ports, d_out, d_in, w_off);
}

// n_layers, n_kv_heads, max_ctx, hd, lanes C, cache [n_layers][kvh][max_ctx][hd] (i8) as K and V,
// then (layer, kv_head, position, n_new, rows [n_new][hd]) -> the cache after writing the new rows (as K and
// as V) through the 2C KV port buffers with kv_write_port_rows, then the rows u < position + n_new of
// (layer, kv_head) read back through kv_read_port_rows (key u from K port u % C, checked equal to V port
// C + u % C) and decoded with kv_code
void op_kv_cache() {
    kv_cache_geometry g;
    const int n_layers = csim::read_int();
    g.n_kv_heads = csim::read_int();
    g.max_ctx = csim::read_int();
    g.head_dim = csim::read_int();
    g.lanes = csim::read_int();
    csim::require(g.head_dim <= MAX_HD && g.max_ctx <= MAX_CTX && g.lanes >= 1 && g.lanes <= 8, "kv_cache: size");
    std::vector<int8_t> cache = csim::read_vec<int8_t>((size_t)n_layers * g.n_kv_heads * g.max_ctx * g.head_dim);
    const size_t rows = cache.size() / g.head_dim;
    std::vector<wide_word_t> words = csim::kv_to_words(cache, rows, g.head_dim);
    const int P = 2 * g.lanes;
    std::vector<wide_word_t> ports[16];
    for (int p = 0; p < P; ++p) {
        ports[p].assign(kv_port_words(g, n_layers), 0);
        kv_port_from_logical(words.data(), words.data(), g, n_layers, p, ports[p].data());
    }
    const int layer = csim::read_int(), kh = csim::read_int(), position = csim::read_int(), n_new = csim::read_int();
    constexpr int RW = kv_row_words(MAX_HD);
    hls::stream<wide_word_t> to_port[16];
    for (int t = 0; t < n_new; ++t) {
        int8_t row[MAX_HD];
        csim::read(row, g.head_dim);
        wide_word_t packed[RW];
        kv_pack_row<MAX_HD, RW>(row, g.head_dim, packed);
        const int lane = (position + t) % g.lanes;
        for (int wd = 0; wd < kv_row_words(g.head_dim); ++wd) {
            to_port[lane].write(packed[wd]);
            to_port[g.lanes + lane].write(packed[wd]);
        }
    }
    for (int p = 0; p < P; ++p) {
        kv_write_port_rows<MAX_CTX, RW>(ports[p].data(), g, layer, kh, p, position, n_new, to_port[p]);
        csim::require(to_port[p].empty(), "kv_write_port_rows: words left");
    }
    std::vector<wide_word_t> k_after(words.size()), v_after(words.size());
    for (int p = 0; p < P; ++p) kv_logical_from_port(ports[p].data(), g, n_layers, p, k_after.data(), v_after.data());
    csim::kv_from_words(k_after, rows, g.head_dim, cache);
    csim::write(cache.data(), cache.size());
    const int n_rows = position + n_new;
    hls::stream<wide_word_t> from_port[16];
    for (int p = 0; p < P; ++p) kv_read_port_rows<MAX_CTX, RW>(ports[p].data(), g, layer, kh, p, n_rows, from_port[p]);
    for (int u = 0; u < n_rows; ++u) {
        wide_word_t kw[RW], vw[RW];
        for (int wd = 0; wd < kv_row_words(g.head_dim); ++wd) {
            kw[wd] = from_port[u % g.lanes].read();
            vw[wd] = from_port[g.lanes + u % g.lanes].read();
        }
        int8_t row[MAX_HD];
        for (int i = 0; i < g.head_dim; ++i) {
            row[i] = kv_code(kw[i / WORD_BYTES], i);
            csim::require(kv_code(vw[i / WORD_BYTES], i) == row[i], "kv_read_port_rows: V differs");
        }
        csim::write(row, g.head_dim);
    }
    for (int p = 0; p < P; ++p) csim::require(from_port[p].empty(), "kv_read_port_rows: words left");
}

// no input -> (checked, mismatches) over every a0, a1 in [-128, 255] and b in [-128, 127]: int8_pack2_mul
// (flexllm_attention.h) against the plain products
void op_int8_pack2() {
    long long checked = 0, bad = 0;
    for (int a0 = -128; a0 <= 255; ++a0)
        for (int a1 = -128; a1 <= 255; ++a1)
            for (int b = -128; b <= 127; ++b) {
                int p0, p1;
                int8_pack2_mul(a0, a1, b, p0, p1);
                bad += (p0 != a0 * b) + (p1 != a1 * b);
                ++checked;
            }
    const long long out[2] = {checked, bad};
    csim::write(out, 2);
}

// no input -> (checked, mismatches) of the linear engine's DSP packing (flexllm_linear.h dsp_pack2_*) for every
// MAC operand x in [-8, 15] (uint4 codes and the signed high nibbles of int8 codes) and int4 w_a, w_b in [-8, 7]:
// (1) every packed product equals (x w_a) << 21 + x w_b and unpacks to (x w_a, x w_b); (2) the extraction of
// every accumulator (S_a << 21) + S_b with S_b over its whole range |S_b| <= 8192 x 120 (8192 products of at
// most |15 x -8|) and S_a at the range's ends and around zero, and S_a over its whole range with S_b at its
// ends; (3) 8192 accumulated copies of each extreme product, through the engine's own adder type.
void op_dsp_pack2() {
    long long checked = 0, bad = 0;
    for (int x = -8; x <= 15; ++x)
        for (int wa = -8; wa <= 7; ++wa)
            for (int wb = -8; wb <= 7; ++wb) {
                const dsp_acc_t p = dsp_pack2_product(x, wa, wb);
                int a = 0, b = 0;
                dsp_pack2_unpack(p, a, b);
                const long long expect = (long long)(x * wa) * (1LL << DSP_PACK_SHIFT) + x * wb;
                bad += (p.to_int64() != expect) + (a != x * wa) + (b != x * wb);
                ++checked;
            }
    const int lim = 8192 * 120;
    const int ends[] = {-lim, -lim + 1, -1, 0, 1, lim - 1, lim};
    for (int e : ends)
        for (int v = -lim; v <= lim; ++v) {
            for (int swap = 0; swap < 2; ++swap) {
                const int sa = swap ? v : e, sb = swap ? e : v;
                const dsp_acc_t acc = (dsp_acc_t)sa * (dsp_acc_t)(1LL << DSP_PACK_SHIFT) + (dsp_acc_t)sb;
                int a = 0, b = 0;
                dsp_pack2_unpack(acc, a, b);
                bad += (a != sa) + (b != sb);
                ++checked;
            }
        }
    const int xs[] = {-8, 15}, ws[] = {-8, 7};
    for (int x : xs)
        for (int wa : ws)
            for (int wb : ws) {
                dsp_acc_t acc = 0;
                for (int i = 0; i < 8192; ++i) acc = acc + dsp_pack2_product(x, wa, wb);
                int a = 0, b = 0;
                dsp_pack2_unpack(acc, a, b);
                bad += (a != 8192 * x * wa) + (b != 8192 * x * wb);
                ++checked;
            }
    const long long out[2] = {checked, bad};
    csim::write(out, 2);
}

}  // namespace

int main(int argc, char **argv) {
    csim::open_output(argc, argv);
    const std::string op = argv[1];
    if (op == "reduce") op_reduce();
    else if (op == "scalar") op_scalar();
    else if (op == "token_quant") op_token_quant(false);
    else if (op == "token_quant_clip") op_token_quant(true);
    else if (op == "quant_static") op_quant_static();
    else if (op == "rmsnorm") op_rmsnorm();
    else if (op == "softmax") op_softmax();
    else if (op == "rope") op_rope();
    else if (op == "silu_residual") op_silu_residual();
    else if (op == "embedding") op_embedding();
    else if (op == "hadamard") op_hadamard();
    else if (op == "sampling") op_sampling();
    else if (op == "xorshift") op_xorshift();
    else if (op == "weights") op_weights();
    else if (op == "kv_cache") op_kv_cache();
    else if (op == "int8_pack2") op_int8_pack2();
    else if (op == "dsp_pack2") op_dsp_pack2();
    else csim::fail("unknown op");
    std::fclose(csim::out_file());
    return 0;
}
