// flexllm_counters.h: loop-iteration counters of the C simulation (the cost model's ground truth).
//
// FLEXLLM_COUNT("name") inside a pipelined loop body counts one iteration of that loop under the
// name. Counters exist only when FLEXLLM_COUNTERS is defined and __SYNTHESIS__ is not (Vitis HLS never
// sees them); flexllm's testbench builds define it and dump the totals (flexllm::dump_counters), and
// a test holds the Python cost model (flexllm_plugin/cost/) to these counts.
#pragma once

#if defined(FLEXLLM_COUNTERS) && !defined(__SYNTHESIS__)
#include <cstdio>
#include <map>
#include <string>

namespace flexllm {

inline std::map<std::string, long long> &loop_counters() {
    static std::map<std::string, long long> counters;
    return counters;
}

// The counter of `name` (std::map nodes never move, so a call site may keep the reference).
inline long long &loop_counter(const char *name) { return loop_counters()[name]; }

inline void reset_counters() {
    for (auto &kv : loop_counters()) kv.second = 0;
}

// One "name count" line per counter, sorted by name.
inline void dump_counters(std::FILE *f) {
    for (const auto &kv : loop_counters()) std::fprintf(f, "%s %lld\n", kv.first.c_str(), kv.second);
}

}  // namespace flexllm

#define FLEXLLM_COUNT(name)                                                     \
    do {                                                                        \
        static long long &flexllm_counter_ = ::flexllm::loop_counter(name);     \
        ++flexllm_counter_;                                                     \
    } while (0)
#else
#define FLEXLLM_COUNT(name) ((void)0)
#endif
