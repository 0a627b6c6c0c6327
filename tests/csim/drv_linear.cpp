// C-simulation driver for the linear engine (layers/flexllm_linear.h).
// Usage: drv_linear linear <output file> < inputs
//        drv_linear schedule <output file> < inputs   (a per-call engine, INPUT_PER_CALL, below)
// stdin: lanes_id, ports, weight_bits, input_kind, n_tokens, d_in, d_out, w_off,
//        q [n][d_in] (u8 for uint4, i8 for int8), scale [n], zero [n],
//        packed weights [ports][slice_words * 64] (brevitas_models.packing.pack_weights_ports),
//        w_scale [d_out], wsum [d_out]
// out:   y [n][d_out] f32, acc [n][d_out] i32 (readers -> MAC -> epilogue -> collector, and the exact
//        accumulators; tests/csim/harness.h)
// Every port's memory holds w_off garbage words, the matrix slice, and one more garbage word, so a
// read outside the slice changes the result.
#include <string>

#include "csim_io.h"
#include "flexllm_linear.h"
#include "flexllm_token_quant.h"
#include "harness.h"

using namespace flexllm;

namespace {

constexpr int MAX_T = 16;
constexpr int MAX_IN = 8192;
constexpr int MAX_OUT = 2048;

uint8_t q_u4[MAX_T][MAX_IN];
int8_t q_i8[MAX_T][MAX_IN];
float y[MAX_T][MAX_OUT];
int32_t acc[MAX_T][MAX_OUT];

// Lane configurations (TP, BP, WP, PORTS); ids 1..3 divide none of the test sizes. The table is
// mirrored by LINEAR_LANES in tests/test_layers_csim.py.
template <int ID>
struct lanes;
template <>
struct lanes<0> {
    static constexpr int tp = 1, bp = 4, wp = 16, ports = 4;  // decode-like, one slot per port and block
};
template <>
struct lanes<1> {
    static constexpr int tp = 3, bp = 5, wp = 7, ports = 1;
};
template <>
struct lanes<2> {
    static constexpr int tp = 4, bp = 6, wp = 10, ports = 3;  // prefill-like, two slots per port
};
template <>
struct lanes<3> {
    static constexpr int tp = 2, bp = 6, wp = 33, ports = 2;  // three slots per port
};
// Decode engines (one token per call): the streaming form, weights straight into the lanes.
template <>
struct lanes<4> {
    static constexpr int tp = 1, bp = 4, wp = 48, ports = 4, max_t = 1, mac = MAC_LUT;
};
template <>
struct lanes<5> {
    static constexpr int tp = 1, bp = 6, wp = 128, ports = 6, max_t = 1, mac = MAC_DSP_PACK2;  // 2 products / DSP
};

// Prefill engine with DSP packing (the tiled form: output lanes 0..3 two per DSP48E2, 4..5 in fabric; stale
// padding lanes in the last block, odd port count)
template <>
struct lanes<6> {
    static constexpr int tp = 3, bp = 6, wp = 10, ports = 3;
};

// MAX_TOKENS, MAC implementation and DSP lanes of each id (id 6: output lanes 0..3 on DSPs, 4..5 in fabric)
template <int ID>
struct max_tokens_of {
    static constexpr int value = MAX_T;
    static constexpr int mac = MAC_LUT, dsp = 0;
};
template <>
struct max_tokens_of<4> {
    static constexpr int value = 1;
    static constexpr int mac = MAC_LUT, dsp = 0;
};
template <>
struct max_tokens_of<5> {
    static constexpr int value = 1;
    static constexpr int mac = MAC_DSP_PACK2, dsp = 6;
};
template <>
struct max_tokens_of<6> {
    static constexpr int value = MAX_T;
    static constexpr int mac = MAC_DSP_PACK2, dsp = 4;
};

template <int KIND>
typename input_code<KIND>::type (&codes())[MAX_T][MAX_IN];
template <>
uint8_t (&codes<INPUT_UINT4_ASYM>())[MAX_T][MAX_IN] { return q_u4; }
template <>
int8_t (&codes<INPUT_INT8_SYM>())[MAX_T][MAX_IN] { return q_i8; }

float x_rows[MAX_T][MAX_IN];

// A schedule of calls on ONE per-call engine (INPUT_PER_CALL, int4 weights) and ONE per-call quantizer, as a
// kernel's compute core runs them: per call the quantizer (the call's kind and clip ratio) then the engine
// (the call's kind: uint4 one pass, int8 two nibble passes). stdin: n_calls, then per call: kind, clip, n,
// d_in, d_out, w_off, x [n][d_in] f32, packed weights [ports][slice * 64], w_scale [d_out], wsum [d_out].
// out per call: codes [n][d_in] i8, scale [n], zero [n], y [n][d_out] f32, acc [n][d_out] i32.
// Every port's memory: w_off garbage words (bytes pattern ^ b), the slice read from stdin, one garbage word.
template <int P>
void read_weight_ports(std::vector<wide_word_t> mem[P], const wide_word_t *w[P], long long w_off, long long slice,
                       int pattern) {
    wide_word_t garbage = 0;
    for (int b = 0; b < WORD_BYTES; ++b) garbage.range(8 * b + 7, 8 * b) = pattern ^ b;
    for (int p = 0; p < P; ++p) {
        mem[p].assign((size_t)(w_off + slice + 1), garbage);
        csim::read_words(mem[p].data() + w_off, (size_t)slice);
        w[p] = mem[p].data();
    }
}

template <int ID>
void run_schedule() {
    constexpr int P = lanes<ID>::ports;
    constexpr int QL = 4;  // quantizer lanes
    typedef linear_config<max_tokens_of<ID>::value, MAX_IN, MAX_OUT, lanes<ID>::tp, lanes<ID>::bp, lanes<ID>::wp, 4,
                          INPUT_PER_CALL, P, max_tokens_of<ID>::mac, max_tokens_of<ID>::dsp>
        cfg;
    const int n_calls = csim::read_int();
    for (int call = 0; call < n_calls; ++call) {
        const int kind = csim::read_int();
        const float clip = csim::read_float();
        const int n = csim::read_int(), d_in = csim::read_int(), d_out = csim::read_int(), w_off = csim::read_int();
        csim::require(n >= 1 && n <= max_tokens_of<ID>::value && d_in >= 1 && d_in <= MAX_IN && d_out >= 1 &&
                          d_out <= MAX_OUT && w_off >= 0 && (kind == INPUT_UINT4_ASYM || kind == INPUT_INT8_SYM),
                      "schedule: call");
        csim::read_rows(x_rows, n, d_in);
        const long long slice = weight_slice_words(d_out, d_in, 4, P);
        std::vector<wide_word_t> mem[P];
        const wide_word_t *w[P];
        read_weight_ports<P>(mem, w, w_off, slice, 0x5A);
        std::vector<float> w_scale = csim::read_vec<float>(d_out), wsum = csim::read_vec<float>(d_out);
        static float s_buf[MAX_T], z_buf[MAX_T];
        quantize_tokens<MAX_T, MAX_IN, INPUT_PER_CALL, QL>(x_rows, n, d_in, q_i8, s_buf, z_buf, clip, kind);
        csim::run_linear<cfg, MAX_OUT>(q_i8, s_buf, z_buf, w, w_off, w_scale.data(), wsum.data(), y, n, d_in, d_out,
                                       kind);
        csim::run_linear_int<cfg, MAX_OUT>(q_i8, w, w_off, acc, n, d_in, d_out, kind);
        csim::write_rows(q_i8, n, d_in);
        csim::write(s_buf, (size_t)n);
        csim::write(z_buf, (size_t)n);
        csim::write_rows(y, n, d_out);
        csim::write_rows(acc, n, d_out);
    }
}

template <int ID, int BITS, int KIND>
void run(int n, int d_in, int d_out, int w_off) {
    constexpr int P = lanes<ID>::ports;
    typedef linear_config<max_tokens_of<ID>::value, MAX_IN, MAX_OUT, lanes<ID>::tp, lanes<ID>::bp, lanes<ID>::wp, BITS,
                          KIND, P, max_tokens_of<ID>::mac, max_tokens_of<ID>::dsp>
        cfg;
    auto &q = codes<KIND>();
    csim::read_rows(q, n, d_in);
    std::vector<float> scale = csim::read_vec<float>(n), zero = csim::read_vec<float>(n);
    const long long slice = weight_slice_words(d_out, d_in, BITS, P);
    std::vector<wide_word_t> mem[P];
    const wide_word_t *w[P];
    read_weight_ports<P>(mem, w, w_off, slice, 0xA5);
    std::vector<float> w_scale = csim::read_vec<float>(d_out), wsum = csim::read_vec<float>(d_out);
    float s_buf[MAX_T], z_buf[MAX_T];
    for (int t = 0; t < n; ++t) {
        s_buf[t] = scale[t];
        z_buf[t] = zero[t];
    }
    csim::run_linear<cfg, MAX_OUT>(q, s_buf, z_buf, w, w_off, w_scale.data(), wsum.data(), y, n, d_in, d_out);
    csim::run_linear_int<cfg, MAX_OUT>(q, w, w_off, acc, n, d_in, d_out);
    csim::write_rows(y, n, d_out);
    csim::write_rows(acc, n, d_out);
}

template <int ID>
void dispatch_bits_kind(int bits, int kind, int n, int d_in, int d_out, int w_off) {
    if (bits == 4 && kind == INPUT_UINT4_ASYM) run<ID, 4, INPUT_UINT4_ASYM>(n, d_in, d_out, w_off);
    else if (bits == 4 && kind == INPUT_INT8_SYM) run<ID, 4, INPUT_INT8_SYM>(n, d_in, d_out, w_off);
    else if (bits == 8 && kind == INPUT_UINT4_ASYM) run<ID, 8, INPUT_UINT4_ASYM>(n, d_in, d_out, w_off);
    else if (bits == 8 && kind == INPUT_INT8_SYM) run<ID, 8, INPUT_INT8_SYM>(n, d_in, d_out, w_off);
    else csim::fail("linear: unsupported bits / kind");
}

template <int ID>
void dispatch(int ports, int bits, int kind, int n, int d_in, int d_out, int w_off) {
    csim::require(ports == lanes<ID>::ports, "linear: ports differ from the lanes table");
    dispatch_bits_kind<ID>(bits, kind, n, d_in, d_out, w_off);
}

}  // namespace

int main(int argc, char **argv) {
    csim::open_output(argc, argv);
    if (std::string(argv[1]) == "schedule") {
        const int id = csim::read_int();
        if (id == 2) run_schedule<2>();        // prefill-like tiled engine, fabric MACs
        else if (id == 4) run_schedule<4>();   // decode streaming engine, fabric MACs
        else if (id == 5) run_schedule<5>();   // decode streaming engine, DSP-packed nibbles
        else if (id == 6) run_schedule<6>();   // tiled engine, DSP-packed nibbles on lanes 0..3
        else csim::fail("schedule: lanes id");
        std::fclose(csim::out_file());
        return 0;
    }
    csim::require(std::string(argv[1]) == "linear", "unknown op");
    const int id = csim::read_int(), ports = csim::read_int(), bits = csim::read_int(), kind = csim::read_int();
    const int n = csim::read_int(), d_in = csim::read_int(), d_out = csim::read_int(), w_off = csim::read_int();
    csim::require(n >= 1 && n <= MAX_T && d_in >= 1 && d_in <= MAX_IN && d_out >= 1 && d_out <= MAX_OUT && w_off >= 0,
                  "linear: size");
    if (id == 0) dispatch<0>(ports, bits, kind, n, d_in, d_out, w_off);
    else if (id == 1) dispatch<1>(ports, bits, kind, n, d_in, d_out, w_off);
    else if (id == 2) dispatch<2>(ports, bits, kind, n, d_in, d_out, w_off);
    else if (id == 3) dispatch<3>(ports, bits, kind, n, d_in, d_out, w_off);
    else if (id == 4) dispatch<4>(ports, bits, kind, n, d_in, d_out, w_off);
    else if (id == 5) {
        csim::require(ports == 6 && bits == 4 && kind == INPUT_UINT4_ASYM, "linear: DSP packing is int4 x uint4");
        run<5, 4, INPUT_UINT4_ASYM>(n, d_in, d_out, w_off);
    } else if (id == 6) {
        csim::require(ports == 3 && bits == 4 && kind == INPUT_UINT4_ASYM, "linear: DSP packing is int4 x uint4");
        run<6, 4, INPUT_UINT4_ASYM>(n, d_in, d_out, w_off);
    }
    else csim::fail("linear: unknown lanes id");
    std::fclose(csim::out_file());
    return 0;
}
