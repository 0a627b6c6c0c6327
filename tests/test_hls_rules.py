"""The HLS rule checker (flexllm_plugin/project/hls_rules.py): for each rule a small kernel that passes
every rule and one with exactly the defect the rule names; then the checker on a tiny project build."""

import json
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("clang.cindex")

from flexllm_plugin.project import hls_rules  # noqa: E402
from flexllm_plugin.project.hls_rules import Violation, check_kernel, check_project  # noqa: E402

# The generated kernels follow every rule: test_check_project_on_tiny_build requires no violation at all.
EXPECT_CLEAN = True

HEADER = """\
#pragma once
#include <cstdint>
#include <ap_int.h>
#include <hls_stream.h>

typedef ap_uint<512> word_t;
static const int N = 64;

template <int ROWS>
void linear_unit(const int x[16], int y[16]) {
    for (int i = 0; i < 16; ++i) y[i] = x[i] * ROWS;
}
"""


def kernel(tmp_path: Path, body: str) -> Path:
    """firmware/k.cpp (``#include "k.h"`` + body) with the tiny header next to it."""
    fw = tmp_path / "firmware"
    fw.mkdir(exist_ok=True)
    (fw / "k.h").write_text(HEADER)
    src = fw / "k.cpp"
    src.write_text('#include "k.h"\n' + textwrap.dedent(body))
    return src


def check(tmp_path: Path, body: str, engines=(), **kw):
    return check_kernel(kernel(tmp_path, body), "top", engine_functions=engines, **kw)


def line_of(src: Path, needle: str, nth: int = 0) -> int:
    lines = [i for i, text in enumerate(src.read_text().splitlines(), 1) if needle in text]
    return lines[nth]


def summary(violations):
    return sorted((v.rule, v.file, v.line) for v in violations)


# --- pragma parsing ----------------------------------------------------------------------------------

def test_pragma_parsing_accepts_spaces_and_any_case():
    p = hls_rules.parse_pragma("array_partition variable = w_tile Cyclic factor = CPW dim = 3")
    assert p.directive == "ARRAY_PARTITION" and "cyclic" in p.flags
    assert p.get("variable") == "w_tile" and p.get("factor") == "CPW" and p.get("dim") == "3"


# --- syntax ------------------------------------------------------------------------------------------

SYNTAX_GOOD = """
int top(int a) {
#pragma HLS INTERFACE s_axilite port=a
    int8_t b = (int8_t)a;
    ap_uint<12> c = a;
    return b + c.to_int();
}
"""


def test_syntax_good(tmp_path):
    assert check(tmp_path, SYNTAX_GOOD) == []


def test_syntax_error_is_reported(tmp_path):
    v = check(tmp_path, "int top(int a) {\n    return a + ;\n}\n")
    assert [(x.rule, x.file, x.line) for x in v] == [("syntax", "k.cpp", 3)]
    assert "expected expression" in v[0].message


def test_syntax_relevant_warning_is_reported(tmp_path):
    src = kernel(tmp_path, "int top(int a) {\n    int buf[a];\n    buf[0] = a;\n    return buf[0];\n}\n")
    v = check_kernel(src, "top", engine_functions=())
    assert summary(v) == [("syntax", "k.cpp", 3)]
    assert "variable length array" in v[0].message


def test_missing_top_function_is_reported(tmp_path):
    v = check_kernel(kernel(tmp_path, "int other(int a) { return a; }\n"), "top", engine_functions=())
    assert [x.rule for x in v] == ["syntax"] and "'top'" in v[0].message


# --- pointer-params ----------------------------------------------------------------------------------

POINTERS_GOOD = """
static int helper(const int *p, const int q[4]) {
    int s = 0;
    for (int i = 0; i < 4; ++i) s += p[i] * q[i];
    return s;
}
int top(int a) {
    int buf[4] = {a, a, a, a};
    return helper(buf, buf);
}
"""

POINTERS_BAD = """
static int pp(int **p) { return **p; }
static int cpp(const int *const *p) { return **p; }
static int arr(const int *p[2]) { return *p[0] + *p[1]; }
template <class T>
int tmpl(T *const *p) { return (int)**p; }
int top(int a) {
    int buf[2] = {a, a};
    int *q = buf;
    const int *r[2] = {buf, buf};
    return pp(&q) + cpp(&q) + arr(r) + tmpl<int>(&q);
}
"""


def test_pointer_params_good(tmp_path):
    assert check(tmp_path, POINTERS_GOOD) == []


def test_pointer_params_bad(tmp_path):
    src = kernel(tmp_path, POINTERS_BAD)
    v = check_kernel(src, "top", engine_functions=())
    expected = [("pointer-params", "k.cpp", line_of(src, name))
                for name in ("int pp(", "int cpp(", "int arr(", "int tmpl(")]
    assert summary(v) == sorted(expected)
    assert any("an array of pointers" in x.message and "'p'" in x.message for x in v)


def test_pointer_to_pointer_on_the_top_function(tmp_path):
    body = """
    int top(int **x) {
    #pragma HLS INTERFACE m_axi port=x depth=4 max_read_burst_length=4 num_read_outstanding=4 \\
        max_write_burst_length=4 num_write_outstanding=4
        return **x;
    }
    """
    src = kernel(tmp_path, body)
    v = check_kernel(src, "top", engine_functions=())
    assert summary(v) == [("pointer-params", "k.cpp", line_of(src, "int top("))]


# --- bind-storage ------------------------------------------------------------------------------------

STORAGE_GOOD = """
template <int R>
int accumulate(int a) {
    static int big[R][64];
#pragma HLS BIND_STORAGE variable=big type=ram_2p impl=uram
    hls::stream<int> fifos[1024];
    int fifo_like[8192];
#pragma HLS STREAM variable=fifo_like depth=2
    int small[64];
    for (int i = 0; i < 64; ++i) small[i] = a + i;
    big[0][0] = small[3] + fifo_like[0];
    fifos[0].write(a);
    return big[0][0] + fifos[0].read();
}
template <int R>
int never_instantiated(int a) {
    int huge[R * 100000];
    huge[0] = a;
    return huge[0];
}
int top(int a) {
    return accumulate<100>(a) + accumulate<2>(a);
}
"""


def test_bind_storage_good(tmp_path):
    v = check(tmp_path, STORAGE_GOOD)
    assert v == []
    assert hls_rules.BIND_STORAGE_MIN_BYTES == 16 * 1024


def test_bind_storage_bad(tmp_path):
    body = """
    template <int R>
    int accumulate(int a) {
        static int big[R][64];
        big[0][0] = a;
        return big[0][0];
    }
    int other(int a) {
    #pragma HLS BIND_STORAGE variable=big type=ram_2p impl=uram
        return a;
    }
    int top(int a) {
        float local[4097];
        local[0] = a;
        return accumulate<100>(a) + accumulate<2>(a) + (int)local[0] + other(a);
    }
    """
    src = kernel(tmp_path, body)
    v = check_kernel(src, "top", engine_functions=())
    assert summary(v) == [("bind-storage", "k.cpp", line_of(src, "static int big")),
                          ("bind-storage", "k.cpp", line_of(src, "float local"))]
    big = next(x for x in v if "'big'" in x.message)
    assert "25600 bytes" in big.message            # the largest instantiation (R = 100)


# --- single-engine -----------------------------------------------------------------------------------

ENGINE_GOOD = """
static void layer(const int x[16], int y[16]) {
    linear_unit<4>(x, y);
}
static void not_reachable(const int x[16], int y[16]) {
    linear_unit<8>(x, y);
    linear_unit<4>(x, y);
}
int top(int a) {
    int x[16], y[16];
    for (int i = 0; i < 16; ++i) x[i] = a;
    for (int l = 0; l < 4; ++l) layer(x, y);
    return y[0];
}
"""


def test_single_engine_good(tmp_path):
    assert check(tmp_path, ENGINE_GOOD, engines=("linear_unit",)) == []


def test_single_engine_two_instantiations_and_call_sites(tmp_path):
    body = """
    namespace eng {
    static void attention_part(const int x[16], int y[16]) { linear_unit<8>(x, y); }
    }
    int top(int a) {
        int x[16], y[16];
        for (int i = 0; i < 16; ++i) x[i] = a;
        linear_unit<4>(x, y);
        eng::attention_part(x, y);
        return y[0];
    }
    """
    src = kernel(tmp_path, body)
    v = check_kernel(src, "top", engine_functions=("linear_unit",))
    assert [x.rule for x in v] == ["single-engine", "single-engine"]
    inst, sites = v
    assert "2 instantiations" in inst.message and "linear_unit<4>, linear_unit<8>" in inst.message
    assert "2 call sites" in sites.message
    for needle in ("linear_unit<8>", "linear_unit<4>"):
        assert f"k.cpp:{line_of(src, needle)}" in sites.message


def test_single_engine_one_instantiation_two_call_sites(tmp_path):
    body = ENGINE_GOOD.replace("linear_unit<4>(x, y);\n}", "linear_unit<4>(x, y);\n    linear_unit<4>(y, y);\n}", 1)
    v = check(tmp_path, body, engines=("linear_unit",))
    assert [x.rule for x in v] == ["single-engine"] and "2 call sites" in v[0].message


def test_single_engine_missing(tmp_path):
    v = check(tmp_path, SYNTAX_GOOD, engines=("linear_unit",))
    assert [x.rule for x in v] == ["single-engine"] and "no call" in v[0].message


# --- partition-factor --------------------------------------------------------------------------------

PARTITION = """
constexpr int FACT = {fact};
template <int F>
int tsum(int a) {{
    int t[64];
#pragma HLS ARRAY_PARTITION variable=t cyclic factor=F dim=1
    for (int i = 0; i < 64; ++i) t[i] = a + i;
    int s = 0;
    for (int j = 0; j < 64; j += 8) {{
#pragma HLS PIPELINE II=1
        for (int k = 0; k < 8; ++k) {{
#pragma HLS UNROLL
            s += t[j + k];
        }}
    }}
    return s;
}}
int top(int a) {{
    int buf[4][64];
#pragma HLS ARRAY_PARTITION variable = buf cyclic factor = FACT dim = 2
    int blk[64];
#pragma HLS ARRAY_PARTITION variable=blk block factor={block} dim=1
    for (int r = 0; r < 4; ++r)
        for (int i = 0; i < 64; ++i) buf[r][i] = a + i;
    for (int i = 0; i < 64; ++i) blk[i] = a - i;
    int s = 0;
    for (int j = 0; j < 64; j += 8) {{
#pragma HLS PIPELINE II=1
        for (int k = 0; k < 8; ++k) {{
#pragma HLS UNROLL
            const int idx = j + k;
            s += buf[1][idx];
        }}
        for (int k = 0; k < 16; ++k) {{
#pragma HLS UNROLL factor=8
            s += blk[k];
        }}
    }}
    return s + tsum<{tfact}>(a);
}}
"""


def test_partition_factor_good(tmp_path):
    # cyclic: 8 consecutive accesses on 4 (resp. 8) banks = 2 (1) per dual-port bank;
    # block: 32 blocks of 2 elements, at most 2 of the 8 accesses per bank
    assert check(tmp_path, PARTITION.format(fact=4, block=32, tfact=8)) == []


def test_partition_factor_bad(tmp_path):
    src = kernel(tmp_path, PARTITION.format(fact=2, block=4, tfact=1))
    v = check_kernel(src, "top", engine_functions=())
    assert summary(v) == sorted([("partition-factor", "k.cpp", line_of(src, "s += buf[1][idx]")),
                                 ("partition-factor", "k.cpp", line_of(src, "s += blk[k]")),
                                 ("partition-factor", "k.cpp", line_of(src, "s += t[j + k]"))])
    messages = {x.line: x.message for x in v}
    assert "cyclic factor=2" in messages[line_of(src, "s += buf[1][idx]")]
    assert "4 accesses per dual-port bank" in messages[line_of(src, "s += buf[1][idx]")]
    assert "block factor=4" in messages[line_of(src, "s += blk[k]")]          # 8 of 8 in one block of 16
    assert "cyclic factor=1" in messages[line_of(src, "s += t[j + k]")]        # template argument F = 1


def test_accesses_per_bank():
    per_bank, Stride = hls_rules._accesses_per_bank, hls_rules.Stride
    assert per_bank("cyclic", 8, 4, 64, Stride(False), None) == 2
    assert per_bank("cyclic", 9, 4, 64, Stride(False), None) == 3
    assert per_bank("block", 8, 4, 64, Stride(True, 0), 0) == 8          # 8 indices in one block of 16
    assert per_bank("block", 4, 16, 64, Stride(True, 2), 0) == 2         # 2, 3 | 4, 5 in blocks of 4
    assert per_bank("block", 8, 4, 64, Stride(False), 0) is None          # start unknown: not proven


def test_partition_factor_strided_is_skipped(tmp_path):
    body = PARTITION.format(fact=2, block=4, tfact=1).replace("for (int k = 0; k < 16; ++k)",
                                                             "for (int k = 0; k < 16; k += 2)")
    body = body.replace("s += t[j + k]", "s += t[2 * k]")
    src = kernel(tmp_path, body)
    v = check_kernel(src, "top", engine_functions=())     # only the unit-stride access of buf remains
    assert summary(v) == [("partition-factor", "k.cpp", line_of(src, "s += buf[1][idx]"))]


def test_partition_factor_unresolved_is_skipped(tmp_path):
    body = PARTITION.format(fact=2, block=4, tfact=8).replace("factor = FACT", "factor = UNKNOWN_NAME")
    body = body.replace("block factor=4", "block factor=UNKNOWN_NAME")
    v = check(tmp_path, body)
    assert v == []


# --- m-axi-ports -------------------------------------------------------------------------------------

MAXI_GOOD = """
void top(const word_t *w0, const ap_uint<256> *k_cache, float *out, int n) {
#pragma HLS INTERFACE m_axi port=w0 offset=slave bundle=gmem0 depth=64 max_read_burst_length=64 num_read_outstanding=16
#pragma HLS INTERFACE m_axi port=k_cache offset=slave bundle=gmem1 depth=64 max_read_burst_length=64 num_read_outstanding=16
#pragma HLS INTERFACE mode=m_axi port=out offset=slave bundle=gmem2 depth=64 \\
    max_read_burst_length=16 num_read_outstanding=4 max_write_burst_length=16 num_write_outstanding=4
#pragma HLS INTERFACE s_axilite port=n
    for (int i = 0; i < 64; ++i)
        out[i] = (float)(w0[i].range(7, 0).to_int() + k_cache[i].range(7, 0).to_int() + n);
}
"""


def test_maxi_ports_good(tmp_path):
    assert check(tmp_path, MAXI_GOOD) == []


def test_maxi_ports_direction_from_the_spec(tmp_path):
    # a write-only port needs only the write options (direction given, as check_project does)
    body = MAXI_GOOD.replace(" max_read_burst_length=16 num_read_outstanding=4 max_write", " max_write")
    assert check(tmp_path, body, port_directions={"out": "out"}) == []
    v = check(tmp_path, body)       # without the spec a non-const pointer is read-write
    assert [x.rule for x in v] == ["m-axi-ports"]
    assert "'out' (inout) lacks max_read_burst_length, num_read_outstanding" in v[0].message


def test_maxi_ports_bad(tmp_path):
    body = """
    void top(const int8_t *kv0, const word_t *w0, float *out) {
    #pragma HLS INTERFACE m_axi port=kv0 offset=slave bundle=gmem0 depth=64 max_read_burst_length=64 num_read_outstanding=16
    #pragma HLS INTERFACE m_axi port=w0 offset=slave bundle=gmem1 depth=64
        for (int i = 0; i < 64; ++i) out[i] = (float)(w0[i].range(7, 0).to_int() + kv0[i]);
    }
    """
    src = kernel(tmp_path, body)
    v = check_kernel(src, "top", engine_functions=())
    assert summary(v) == sorted([("m-axi-ports", "k.cpp", line_of(src, "port=kv0")),
                                 ("m-axi-ports", "k.cpp", line_of(src, "port=w0")),
                                 ("m-axi-ports", "k.cpp", line_of(src, "void top("))])
    text = " | ".join(x.message for x in v)
    assert "'kv0' is 8 bits wide" in text
    assert "'w0' (in) lacks max_read_burst_length, num_read_outstanding" in text
    assert "pointer port 'out'" in text


# --- loop-tripcount ----------------------------------------------------------------------------------

TRIPCOUNT_GOOD = """
template <int M>
struct Acc {
    int v[M];
    int sum(int n) const {
        int s = 0;
        for (int i = 0; i < M; ++i) s += v[i];
        return s + n;
    }
};
template <int M>
int bounded(int a) {
    int s = a;
    for (int i = 0; i < M; ++i) s += i;
    return s;
}
int top(int n) {
    int s = 0;
    for (int i = 0; i < n; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=64
        s += i;
        for (int j = 0; j < N; ++j) s += j;
    }
    for (int k = 16; k > 0; --k) s ^= k;
    Acc<4> acc = {{1, 2, 3, 4}};
    return s + bounded<8>(n) + acc.sum(n);
}
"""


def test_loop_tripcount_good(tmp_path):
    assert check(tmp_path, TRIPCOUNT_GOOD) == []


def test_loop_tripcount_bad(tmp_path):
    body = """
    int top(int n) {
        int s = 0;
        for (int i = 0; i < N; ++i) {
    #pragma HLS LOOP_TRIPCOUNT max=64
            for (int j = 0; j < n; ++j) s += j;
        }
        while (n > 0) {
            s += n;
            --n;
        }
        return s;
    }
    """
    src = kernel(tmp_path, body)
    v = check_kernel(src, "top", engine_functions=())
    assert summary(v) == sorted([("loop-tripcount", "k.cpp", line_of(src, "for (int j")),
                                 ("loop-tripcount", "k.cpp", line_of(src, "while (n > 0)"))])
    assert "(j < n)" in next(x.message for x in v if "for loop" in x.message)


# --- the tiny project ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
    from flexllm_plugin.config import load_config
    from flexllm_plugin.project.builder import build_project
    from flexllm_plugin.resources import config_path

    out = tmp_path_factory.mktemp("rules") / "tiny"
    build_project(load_config(config_path("tiny.yaml")), out)
    return out


def test_check_project_on_tiny_build(tiny_build):
    kernels = [k["name"] for k in json.loads((tiny_build / "flexllm_build.json").read_text())["project"]["kernels"]]
    result = check_project(tiny_build)
    assert sorted(result) == sorted(kernels) and len(kernels) == 2
    for name, violations in result.items():
        assert all(isinstance(v, Violation) and v.rule in hls_rules.RULES for v in violations)
        # the checker itself works: the kernel parses (include paths, C++14)
        assert not [v for v in violations if v.rule == "syntax"], violations
        if EXPECT_CLEAN:
            assert violations == [], "\n".join(map(str, violations))


@pytest.mark.slow
def test_rules_on_llama32_1b_shaped_kernels(tmp_path):
    """The full-size kernels (Llama-3.2-1B shape, one decoder layer of random weights: the kernel sources
    depend on the shapes and lanes only) follow every rule. Slow: the 128,256-token vocabulary."""
    import yaml

    from flexllm_plugin.config import load_config
    from flexllm_plugin.project.builder import build_project
    from flexllm_plugin.resources import config_path

    data = yaml.safe_load(config_path("llama32_1b_u280.yaml").read_text())
    data["Model"]["Architecture"] = {"seed": 0, "num_layers": 1}
    data["Quantization"].update({"CalibrationTokens": 256, "CalibrationContext": 128})
    path = tmp_path / "llama_1l.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "prj"
    build_project(load_config(path), out)
    violations = hls_rules.check_project(out)
    assert violations and all(v == [] for v in violations.values()), violations
