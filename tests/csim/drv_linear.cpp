// C-simulation driver for the linear engine (layers/flexllm_linear.h).
// Usage: drv_linear linear <output file> < inputs
// stdin: lanes_id, weight_bits, input_kind, n_tokens, d_in, d_out,
//        q [n][d_in] (u8 for uint4, i8 for int8), scale [n], zero [n],
//        packed weights [d_out][row_bytes], w_scale [d_out], wsum [d_out]
// out:   y [n][d_out] f32, acc [n][d_out] i32 (through linear and linear_int)
#include <string>

#include "csim_io.h"
#include "flexllm_linear.h"

using namespace flexllm;

namespace {

constexpr int MAX_T = 16;
constexpr int MAX_IN = 8192;
constexpr int MAX_OUT = 2048;

uint8_t q_u4[MAX_T][MAX_IN];
int8_t q_i8[MAX_T][MAX_IN];
float y[MAX_T][MAX_OUT];
int32_t acc[MAX_T][MAX_OUT];

// Lane configurations (TP, BP, WP); ids 1 and 2 divide none of the test sizes.
template <int ID>
struct lanes;
template <>
struct lanes<0> {
    static constexpr int tp = 1, bp = 4, wp = 16;  // decode-like
};
template <>
struct lanes<1> {
    static constexpr int tp = 3, bp = 5, wp = 7;
};
template <>
struct lanes<2> {
    static constexpr int tp = 4, bp = 6, wp = 10;  // prefill-like
};

template <int KIND>
typename input_code<KIND>::type (&codes())[MAX_T][MAX_IN];
template <>
uint8_t (&codes<INPUT_UINT4_ASYM>())[MAX_T][MAX_IN] { return q_u4; }
template <>
int8_t (&codes<INPUT_INT8_SYM>())[MAX_T][MAX_IN] { return q_i8; }

template <int ID, int BITS, int KIND>
void run(int n, int d_in, int d_out) {
    typedef linear_config<MAX_T, MAX_IN, MAX_OUT, lanes<ID>::tp, lanes<ID>::bp, lanes<ID>::wp, BITS, KIND> cfg;
    auto &q = codes<KIND>();
    csim::read_rows(q, n, d_in);
    std::vector<float> scale = csim::read_vec<float>(n), zero = csim::read_vec<float>(n);
    std::vector<uint8_t> w = csim::read_vec<uint8_t>((size_t)d_out * cfg::wfmt::row_bytes(d_in));
    std::vector<float> w_scale = csim::read_vec<float>(d_out), wsum = csim::read_vec<float>(d_out);
    float s_buf[MAX_T], z_buf[MAX_T];
    for (int t = 0; t < n; ++t) {
        s_buf[t] = scale[t];
        z_buf[t] = zero[t];
    }
    linear<cfg>(q, s_buf, z_buf, w.data(), w_scale.data(), wsum.data(), y, n, d_in, d_out);
    linear_int<cfg>(q, w.data(), acc, n, d_in, d_out);
    csim::write_rows(y, n, d_out);
    csim::write_rows(acc, n, d_out);
}

template <int ID>
void dispatch_bits_kind(int bits, int kind, int n, int d_in, int d_out) {
    if (bits == 4 && kind == INPUT_UINT4_ASYM) run<ID, 4, INPUT_UINT4_ASYM>(n, d_in, d_out);
    else if (bits == 4 && kind == INPUT_INT8_SYM) run<ID, 4, INPUT_INT8_SYM>(n, d_in, d_out);
    else if (bits == 8 && kind == INPUT_UINT4_ASYM) run<ID, 8, INPUT_UINT4_ASYM>(n, d_in, d_out);
    else if (bits == 8 && kind == INPUT_INT8_SYM) run<ID, 8, INPUT_INT8_SYM>(n, d_in, d_out);
    else csim::fail("linear: unsupported bits / kind");
}

}  // namespace

int main(int argc, char **argv) {
    csim::open_output(argc, argv);
    csim::require(std::string(argv[1]) == "linear", "unknown op");
    const int id = csim::read_int(), bits = csim::read_int(), kind = csim::read_int();
    const int n = csim::read_int(), d_in = csim::read_int(), d_out = csim::read_int();
    csim::require(n >= 1 && n <= MAX_T && d_in >= 1 && d_in <= MAX_IN && d_out >= 1 && d_out <= MAX_OUT,
                  "linear: size");
    if (id == 0) dispatch_bits_kind<0>(bits, kind, n, d_in, d_out);
    else if (id == 1) dispatch_bits_kind<1>(bits, kind, n, d_in, d_out);
    else if (id == 2) dispatch_bits_kind<2>(bits, kind, n, d_in, d_out);
    else csim::fail("linear: unknown lanes id");
    std::fclose(csim::out_file());
    return 0;
}
