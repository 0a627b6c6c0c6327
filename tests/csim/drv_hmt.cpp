// C-simulation driver for layers/flexllm_memory_recall.h (HMT memory recall).
// Usage: drv_hmt <op> <output file> < inputs   (formats: tests/test_hmt_csim.py)
//   key:    lanes, shape, W_k[D*D], M[D]                                  -> key[D], counters
//   recall: lanes, shape, n, inv_sqrt_d, W_q[D*D], S[D], K[N*D], M[N*D]   -> P[D], counters
// shape 0: N = 4, D = 96 (the tiny model's hidden size); shape 1: N = 3, D = 40 (a ragged tail at
// every LANES > 8). Loop counters follow the outputs as "name count" text lines.
#define FLEXLLM_COUNTERS 1
#include <string>
#include <vector>

#include "csim_io.h"
#include "flexllm_memory_recall.h"

using namespace flexllm;

namespace {

template <int N, int D, int L>
void run_key() {
    std::vector<float> w = csim::read_vec<float>((size_t)D * D), m = csim::read_vec<float>(D);
    float key[D];
    reset_counters();
    memory_key<D, L>(w.data(), m.data(), key);
    csim::write(key, D);
}

template <int N, int D, int L>
void run_recall() {
    const int n = csim::read_int();
    const float inv_sqrt_d = csim::read_float();
    csim::require(n >= 1 && n <= N, "n out of range");
    std::vector<float> w = csim::read_vec<float>((size_t)D * D), s = csim::read_vec<float>(D);
    std::vector<float> keys = csim::read_vec<float>((size_t)N * D), mems = csim::read_vec<float>((size_t)N * D);
    float out[D];
    reset_counters();
    memory_recall<N, D, L>(w.data(), s.data(), keys.data(), mems.data(), n, inv_sqrt_d, out);
    csim::write(out, D);
}

template <int N, int D, int L>
void run(const std::string &op) {
    if (op == "key") run_key<N, D, L>();
    else if (op == "recall") run_recall<N, D, L>();
    else csim::fail("unknown op");
}

template <int N, int D>
void with_lanes(int lanes, const std::string &op) {
    switch (lanes) {
        case 1: run<N, D, 1>(op); break;
        case 4: run<N, D, 4>(op); break;
        case 16: run<N, D, 16>(op); break;
        default: csim::fail("unsupported LANES");
    }
}

}  // namespace

int main(int argc, char **argv) {
    csim::open_output(argc, argv);
    const std::string op = argv[1];
    const int lanes = csim::read_int();
    const int shape = csim::read_int();
    if (shape == 0) with_lanes<4, 96>(lanes, op);
    else if (shape == 1) with_lanes<3, 40>(lanes, op);
    else csim::fail("unknown shape");
    dump_counters(csim::out_file());
    return 0;
}
