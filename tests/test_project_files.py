"""The Vitis build files of a project (flexllm_plugin/project/vitis_files.py, host.py), checked without
Vitis or XRT:

* every ``hls/<kernel>.tcl`` runs under ``tclsh`` with stub procs for the Vitis HLS commands it may
  use (each records its call and checks its options; ``add_files`` fails on a missing file; any other
  command fails through ``unknown``);
* ``vitis/link_<kernel>.cfg`` (one xclbin per kernel) is parsed and cross-checked against the kernels' ``#pragma HLS INTERFACE m_axi``
  lines: one ``sp=`` per m_axi port, existing CUs and ports, U280 bank names;
* ``host/host.cpp`` compiles (``-fsyntax-only``) against the declaration-only XRT stub in
  ``tests/xrt_stub/``, and - built by the generated Makefile against the stub's fake runtime - runs end
  to end: buffers loaded and shared, scalar arguments, EOS, detokenisation, input validation;
* the Makefile's ``csim`` target builds and runs a test bench with g++ and the hls4ml ap_types;
* bank capacities (``check_memory``), spec consistency, determinism.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from flexllm_plugin.project.spec import HBM_CHANNEL_BYTES, Buffer, Kernel, Port, ProjectSpec
from flexllm_plugin.project.vitis_files import (FUSED_FP_OPS, check_kernel_sources, check_memory,
                                                parse_interface_pragmas, parse_memory, validate_spec,
                                                vitis_files, write_vitis_files)

HERE = Path(__file__).resolve().parent
XRT_STUB = HERE / "xrt_stub"
CXX = os.environ.get("CXX", "g++")
NAME = "tiny"
P = 3                                     # weight ports
VOCAB = 16

pytestmark = pytest.mark.skipif(shutil.which(CXX) is None or shutil.which("tclsh") is None
                                or shutil.which("make") is None, reason="needs g++, tclsh and make")


# ------------------------------------------------------------------------------------------------
# a small two-kernel project, by hand

def _weights():
    return [Port(f"w{i}", "m_axi", "ap_uint<512>", bundle=f"gmem_w{i}", memory=f"HBM[{i}]",
                 buffer=f"weights_p{i}", width_bits=512) for i in range(P)]


def _shared_ports(fmem: str, fmem_mem: str):
    return [Port("fmem", "m_axi", "float", bundle="gmem_fmem", memory=fmem_mem, buffer=fmem),
            Port("embed", "m_axi", "float", bundle="gmem_embed", memory="DDR[0]", buffer="embed"),
            Port("k_cache", "m_axi", "int8_t", bundle="gmem_k", memory="HBM[5]", buffer="k_cache",
                 width_bits=512, direction="inout"),
            Port("v_cache", "m_axi", "int8_t", bundle="gmem_v", memory="HBM[6]", buffer="v_cache",
                 width_bits=512, direction="inout")]


SAMPLING = [Port("top_k", "scalar", "int"), Port("inv_temperature", "scalar", "float"),
            Port("seed", "scalar", "unsigned")]


def make_spec(**model_over) -> ProjectSpec:
    prefill = Kernel(f"{NAME}_prefill", f"firmware/{NAME}_prefill.cpp", clock_mhz=300.0, ports=[
        Port("tokens", "m_axi", "int32_t", bundle="gmem_tokens", memory="DDR[1]", buffer="tokens"),
        Port("n_tokens", "scalar", "int"),
        *_weights(), *_shared_ports("fmem_prefill", "HBM[3]"),
        Port("logits", "m_axi", "float", bundle="gmem_logits", memory="DDR[1]", buffer="logits",
             direction="out"),
        Port("next_token", "m_axi", "int32_t", bundle="gmem_next", memory="DDR[1]", buffer="next_token",
             direction="out"),
        *SAMPLING])
    decode = Kernel(f"{NAME}_decode", f"firmware/{NAME}_decode.cpp", clock_mhz=300.0, ports=[
        Port("first_token", "scalar", "int"), Port("position", "scalar", "int"),
        Port("n_new", "scalar", "int"),
        *_weights(), *_shared_ports("fmem_decode", "HBM[4]"),
        Port("out_tokens", "m_axi", "int32_t", bundle="gmem_out", memory="DDR[1]", buffer="out_tokens",
             direction="out"),
        Port("logits", "m_axi", "float", bundle="gmem_logits", memory="DDR[1]", buffer="logits",
             direction="out"),
        *SAMPLING])
    buffers = [Buffer(f"weights_p{i}", f"HBM[{i}]", 4096 + 64 * i, f"weights/weights_p{i}.bin")
               for i in range(P)]
    buffers += [Buffer("fmem_prefill", "HBM[3]", 256, "weights/fmem_prefill.bin"),
                Buffer("fmem_decode", "HBM[4]", 320, "weights/fmem_decode.bin"),
                Buffer("embed", "DDR[0]", VOCAB * 8 * 4, "weights/embed.bin"),
                Buffer("k_cache", "HBM[5]", 2048), Buffer("v_cache", "HBM[6]", 2048),
                Buffer("tokens", "DDR[1]", 8 * 4), Buffer("logits", "DDR[1]", VOCAB * 4),
                Buffer("next_token", "DDR[1]", 64), Buffer("out_tokens", "DDR[1]", 8 * 4)]
    model = {"hidden": 96, "layers": 2, "heads": 6, "kv_heads": 2, "quant_preset": "flexllm-w4a4",
             "lanes": {"prefill_tp": 4, "decode_bp": 4}, "vocab_size": VOCAB, "max_prompt": 8,
             "max_context": 12, "max_new_tokens": 6, "eos_token_id": 2, "sampling": "top_k", "top_k": 4,
             "temperature": 0.8, "tokenizer_file": "tokenizer/tokens.bin", "clock_mhz": 300.0}
    model.update(model_over)
    estimates = {"prefill": {"LUT": 120000, "DSP": 640, "latency_ms": 1.5},
                 "decode": {"LUT": 90000, "DSP": 512, "latency_ms": 0.25},
                 "tokens_per_s": 4000.0}
    return ProjectSpec(NAME, "xcu280-fsvh2892-2L-e", "xilinx_u280_gen3x16_xdma_1_202211_1",
                       [prefill, decode], buffers, model, estimates)


def _signature(k: Kernel) -> str:
    args = [f"{p.ctype}* {p.name}" if p.kind == "m_axi" else f"{p.ctype} {p.name}" for p in k.ports]
    return f"void {k.name}({', '.join(args)})"


def _kernel_source(k: Kernel) -> str:
    lines = ["#include <ap_int.h>", "#include <cstdint>", f'#include "{NAME}_kernels.h"', "",
             _signature(k) + " {"]
    for p in k.ports:
        if p.kind == "m_axi":
            lines.append(f"#pragma HLS INTERFACE m_axi port={p.name} offset=slave bundle={p.bundle}")
        else:
            lines.append(f"#pragma HLS INTERFACE s_axilite port={p.name}")
    lines.append("#pragma HLS INTERFACE s_axilite port=return")
    if k.name.endswith("_prefill"):
        lines.append("    next_token[0] = tokens[n_tokens - 1] + top_k;")
    else:
        lines.append("    for (int i = 0; i < n_new; ++i) out_tokens[i] = first_token + position + i;")
    lines += ["}", ""]
    return "\n".join(lines)


def write_fake_project(spec: ProjectSpec, root: Path) -> None:
    """Kernel sources with the interface pragmas, a C-sim test bench, buffer files, tokenizer."""
    (root / "firmware" / "flexllm").mkdir(parents=True)
    (root / "firmware" / f"{NAME}_kernels.h").write_text(
        "#pragma once\n#include <ap_int.h>\n#include <cstdint>\n"
        + "".join(_signature(k) + ";\n" for k in spec.kernels))
    for k in spec.kernels:
        (root / k.source).write_text(_kernel_source(k))
    (root / "csim").mkdir()
    (root / "csim" / "testbench.cpp").write_text(r'''#include <cstdio>
#include "tiny_kernels.h"
int main(int argc, char** argv) {
    int32_t tokens[3] = {1, 2, 3}, next = -1, out[4];
    static ap_uint<512> w[4];
    static float f[64];
    static int8_t k[64], v[64];
    tiny_prefill(tokens, 3, w, w, w, f, f, k, v, f, &next, 4, 1.0f, 7u);
    tiny_decode(next, 3, 4, w, w, w, f, f, k, v, out, f, 4, 1.0f, 7u);
    std::printf("csim root=%s next=%d out=%d %d %d %d\n", argc > 1 ? argv[1] : "-", next, out[0], out[1],
                out[2], out[3]);
    return next == 7 ? 0 : 1;
}
''')
    for b in spec.buffers:
        if b.file:
            path = root / b.file
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(bytes((i * 7 + len(b.name)) & 0xFF for i in range(b.bytes)))
            b.sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    from flexllm_plugin.project.manifest_check import write_sha256sums
    write_sha256sums(root, spec.buffers)         # as flexllm build does: the host checks it before running
    tok = root / spec.model["tokenizer_file"]
    tok.parent.mkdir(parents=True, exist_ok=True)
    data = struct.pack("<I", VOCAB)
    for i in range(VOCAB):
        piece = f"t{i}".encode()
        data += struct.pack("<I", len(piece)) + piece
    tok.write_bytes(data)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    spec = make_spec()
    root = tmp_path_factory.mktemp("prj")
    write_fake_project(spec, root)
    written = write_vitis_files(spec, root)
    return spec, root, written


# ------------------------------------------------------------------------------------------------
# files, determinism

def test_files_written_and_deterministic(project, tmp_path):
    spec, root, written = project
    assert written == [f"hls/{NAME}_prefill.tcl", f"hls/{NAME}_decode.tcl", f"vitis/link_{NAME}_prefill.cfg",
                       f"vitis/link_{NAME}_decode.cfg",
                       "host/host.cpp", "host/flexllm_manifest_check.h", "host/flexllm_hmt_host.h", "host/buffers.txt",
                       "Makefile", "README.md"]
    again = write_vitis_files(make_spec(), tmp_path)
    assert again == written
    for rel in written:
        assert (root / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel
    assert vitis_files(make_spec()) == vitis_files(make_spec())


def test_buffers_txt(project):
    spec, root, _ = project
    rows = [line.split() for line in (root / "host/buffers.txt").read_text().splitlines()
            if not line.startswith("#")]
    assert rows == [[b.name, b.memory, str(b.bytes), b.file or "-"] for b in spec.buffers]


def test_readme(project):
    spec, root, _ = project
    text = (root / "README.md").read_text()
    assert "| prefill | 120000 | 640 | 1.5 |" in text          # estimates, one row per kernel
    assert "| tokens_per_s | 4000 |" in text
    assert "| lanes.prefill_tp | 4 |" in text                  # nested model keys flattened
    assert "| HBM[0] | weights_p0 | 4096 | 4.0 KiB | 0.0 % |" in text   # memory plan per bank
    assert "| embed | DDR[0] | 512 | 512 B | weights/embed.bin |" in text
    assert "| DDR[1] | tokens, logits, next_token, out_tokens |" in text
    assert "make xclbin TARGET=hw" in text


# ------------------------------------------------------------------------------------------------
# hls/<kernel>.tcl under tclsh with stub Vitis HLS commands

TCL_STUBS = r'''
# Stub Vitis HLS commands: record every call, check options against the documented ones.
set ::calls {}
proc record {name argl} { lappend ::calls [concat [list $name] $argl] }
# parse "-opt value" / "-flag" options; returns {opts positional}
proc parse_opts {cmd argl valued flags} {
    set opts [dict create]
    set pos {}
    for {set i 0} {$i < [llength $argl]} {incr i} {
        set a [lindex $argl $i]
        if {[string index $a 0] eq "-"} {
            if {[lsearch -exact $valued $a] >= 0} {
                incr i
                if {$i >= [llength $argl]} { error "$cmd: option $a needs a value" }
                dict set opts $a [lindex $argl $i]
            } elseif {[lsearch -exact $flags $a] >= 0} {
                dict set opts $a 1
            } else {
                error "$cmd: unknown option $a"
            }
        } else {
            lappend pos $a
        }
    }
    return [list $opts $pos]
}
proc npos {cmd pos n} { if {[llength $pos] != $n} { error "$cmd: expected $n arguments, got '$pos'" } }
proc pow2 {cmd v} {
    if {![string is integer -strict $v] || $v <= 0 || ($v & ($v - 1))} { error "$cmd: $v is not a power of 2" }
}

proc open_project {args} {
    lassign [parse_opts open_project $args {} {-reset -upgrade}] o pos; npos open_project $pos 1
    record open_project $args
}
proc set_top {args} { npos set_top $args 1; record set_top $args }
proc add_files {args} {
    lassign [parse_opts add_files $args {-cflags -csimflags -blackbox} {-tb}] o pos
    if {![llength $pos]} { error "add_files: no files" }
    foreach f $pos { if {![file exists $f]} { error "add_files: no file '$f' (cwd [pwd])" } }
    record add_files $args
}
proc open_solution {args} {
    lassign [parse_opts open_solution $args {-flow_target} {-reset}] o pos; npos open_solution $pos 1
    if {[dict exists $o -flow_target] && [lsearch -exact {vitis vivado} [dict get $o -flow_target]] < 0} {
        error "open_solution: bad -flow_target" }
    record open_solution $args
}
proc set_part {args} { npos set_part $args 1; record set_part $args }
proc create_clock {args} {
    lassign [parse_opts create_clock $args {-period -name} {}] o pos; npos create_clock $pos 0
    if {![string is double -strict [dict get $o -period]]} { error "create_clock: bad period" }
    record create_clock $args
}
proc config_interface {args} {
    lassign [parse_opts config_interface $args {-m_axi_alignment_byte_size -m_axi_max_widen_bitwidth
        -m_axi_latency -m_axi_max_read_burst_length -m_axi_max_write_burst_length -default_slave_interface
        -m_axi_offset -m_axi_num_read_outstanding -m_axi_num_write_outstanding} {-m_axi_addr64}] o pos
    npos config_interface $pos 0
    foreach k {-m_axi_alignment_byte_size -m_axi_max_widen_bitwidth} {
        if {[dict exists $o $k]} { pow2 config_interface [dict get $o $k] } }
    record config_interface $args
}
proc config_op {args} {
    lassign [parse_opts config_op $args {-impl -latency -precision} {}] o pos; npos config_op $pos 1
    set ops {mul add sub fadd fsub fdiv fexp flog fmul frsqrt frecip fsqrt dadd dsub ddiv dexp dlog dmul
             drsqrt drecip dsqrt hadd hsub hdiv hmul hsqrt facc fmacc fmadd}
    if {[lsearch -exact $ops [lindex $pos 0]] < 0} { error "config_op: unknown op [lindex $pos 0]" }
    set impls {dsp fabric meddsp fulldsp maxdsp primitivedsp auto none all}
    if {[dict exists $o -impl] && [lsearch -exact $impls [dict get $o -impl]] < 0} { error "config_op: bad -impl" }
    record config_op $args
}
proc csim_design {args} {
    lassign [parse_opts csim_design $args {-argv -ldflags -mflags} {-O -clean -setup -profile}] o pos
    npos csim_design $pos 0
    record csim_design $args
}
proc csynth_design {args} { npos csynth_design $args 0; record csynth_design $args }
proc export_design {args} {
    lassign [parse_opts export_design $args {-format -output -rtl -flow -description -display_name
        -library -vendor -version -ipname -taxonomy} {}] o pos
    npos export_design $pos 0
    if {[lsearch -exact {ip_catalog xo syn_dcp sysgen} [dict get $o -format]] < 0} { error "export_design: bad -format" }
    set out [dict get $o -output]
    if {[file pathtype $out] ne "absolute" || ![file isdirectory [file dirname $out]]} {
        error "export_design: -output $out is not absolute or its directory does not exist" }
    record export_design $args
}
rename exit __real_exit
proc exit {{code 0}} {
    foreach c $::calls { puts [join $c "\t"] }
    puts "pwd\t[pwd]"
    __real_exit $code
}
rename unknown __real_unknown
proc unknown {args} { puts stderr "unknown command: [lindex $args 0]"; __real_exit 3 }

source [lindex $argv 0]
puts stderr "the script did not call exit"
__real_exit 4
'''


def run_tcl(tmp_path, script: Path, steps=None):
    driver = tmp_path / "driver.tcl"
    driver.write_text(TCL_STUBS)
    env = dict(os.environ)
    env.pop("FLEXLLM_HLS_STEPS", None)
    if steps is not None:
        env["FLEXLLM_HLS_STEPS"] = steps
    # run from elsewhere: the script must find the project root itself
    return subprocess.run(["tclsh", str(driver), str(script)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=30)


def _calls(stdout: str):
    return [line.split("\t") for line in stdout.splitlines()]


@pytest.mark.parametrize("kernel", [0, 1])
def test_hls_tcl_under_tclsh(project, tmp_path, kernel):
    spec, root, _ = project
    k = spec.kernels[kernel]
    other = spec.kernels[1 - kernel]
    r = run_tcl(tmp_path, root / "hls" / f"{k.name}.tcl", steps="csim synth export")
    assert r.returncode == 0, r.stderr
    calls = _calls(r.stdout)
    names = [c[0] for c in calls]
    assert names == ["open_project", "set_top", "add_files", "add_files", "add_files", "open_solution",
                     "set_part", "create_clock", "config_interface"] + ["config_op"] * len(FUSED_FP_OPS) + \
        ["csim_design", "csynth_design", "export_design", "pwd"]
    by = {}
    for c in calls:
        by.setdefault(c[0], []).append(c[1:])
    assert by["pwd"] == [[str(root)]]
    assert by["open_project"] == [["-reset", f"hls/{k.name}_prj"]]
    assert by["set_top"] == [[k.name]]
    design, tb, tb_other = by["add_files"]
    assert design[-1] == k.source and "-tb" not in design
    cflags = design[design.index("-cflags") + 1].split()
    assert cflags == ["-std=c++14", f"-I{root}/firmware", f"-I{root}/firmware/flexllm"]
    assert tb[0] == "-tb" and tb[-1] == "csim/testbench.cpp"
    assert tb_other[0] == "-tb" and tb_other[-1] == other.source
    assert by["open_solution"] == [["-flow_target", "vitis", "sol"]]
    assert by["set_part"] == [[spec.part]]
    assert by["create_clock"] == [["-period", "3.333", "-name", "default"]]
    assert by["config_interface"] == [["-m_axi_alignment_byte_size", "64", "-m_axi_max_widen_bitwidth", "512"]]
    assert sorted(by["config_op"]) == sorted([op, "-impl", "none"] for op in FUSED_FP_OPS)
    assert by["csim_design"] == [["-O", "-argv", str(root)]]
    assert by["export_design"] == [["-format", "xo", "-output", str(root / "build" / "xo" / f"{k.name}.xo")]]


def test_hls_tcl_default_steps(project, tmp_path):
    spec, root, _ = project
    r = run_tcl(tmp_path, root / "hls" / f"{NAME}_decode.tcl")
    assert r.returncode == 0, r.stderr
    names = [c[0] for c in _calls(r.stdout)]
    assert "csim_design" not in names and names.count("add_files") == 1     # no test bench
    assert names[-3:] == ["csynth_design", "export_design", "pwd"]
    r = run_tcl(tmp_path, root / "hls" / f"{NAME}_decode.tcl", steps="synth bogus")
    assert r.returncode != 0 and "unknown step 'bogus'" in r.stderr


def test_tcl_stubs_catch_errors(project, tmp_path):
    """The stub harness itself: unknown commands and missing files fail."""
    _, root, _ = project
    bad = root / "hls" / "bad_unknown.tcl"
    bad.write_text("set_top x\nconfig_unknown_thing -x 1\nexit\n")
    r = run_tcl(tmp_path, bad)
    assert r.returncode == 3 and "unknown command: config_unknown_thing" in r.stderr
    bad.write_text("add_files firmware/missing.cpp\nexit\n")
    r = run_tcl(tmp_path, bad)
    assert r.returncode != 0 and "no file 'firmware/missing.cpp'" in r.stderr
    bad.write_text("config_op fmadd -impl nonsense\nexit\n")
    assert run_tcl(tmp_path, bad).returncode != 0
    bad.unlink()


# ------------------------------------------------------------------------------------------------
# vitis/link.cfg against the kernel sources

def parse_cfg(text: str):
    sections = {"": []}
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections.setdefault(current, [])
            continue
        key, _, value = line.partition("=")
        assert _ == "=", f"not key=value: {raw!r}"
        sections[current].append((key.strip(), value.strip()))
    return sections


def test_link_cfg(project):
    """One v++ link configuration per kernel (prefill and decode are separate xclbins)."""
    spec, root, _ = project
    for k in spec.kernels:
        cfg = parse_cfg((root / "vitis" / f"link_{k.name}.cfg").read_text())
        assert set(cfg) == {"", "connectivity"}
        assert cfg[""] == [("platform", "xilinx_u280_gen3x16_xdma_1_202211_1"), ("kernel_frequency", "0:300")]
        nk = [v for key, v in cfg["connectivity"] if key == "nk"]
        assert nk == [f"{k.name}:1:{k.name}_1"]
        pragmas = parse_interface_pragmas((root / k.source).read_text())
        m_axi = {p for p, o in pragmas.items() if o["mode"] == "m_axi"}
        assert m_axi == {p.name for p in k.ports if p.kind == "m_axi"}
        seen = {}
        for key, value in cfg["connectivity"]:
            if key != "sp":
                assert key == "nk", key
                continue
            target, memory = value.split(":")
            inst, port = target.split(".")
            assert inst == f"{k.name}_1", f"sp for another CU {inst}"
            assert port in m_axi, f"{port} is not an m_axi port of {k.name}"
            kind, index = parse_memory(memory)          # HBM[0..31] / DDR[0..1]
            assert (kind == "HBM" and 0 <= index < 32) or (kind == "DDR" and index in (0, 1))
            assert port not in seen, f"two sp for {inst}.{port}"
            seen[port] = memory
        assert set(seen) == m_axi
        # every port on the bank of its buffer (the same bank in both xclbins: the host carries the KV over)
        for p in k.ports:
            if p.kind == "m_axi":
                assert seen[p.name] == spec.buffer(p.buffer).memory


def test_check_kernel_sources(project, tmp_path):
    spec, root, _ = project
    check_kernel_sources(spec, root)
    src = (root / spec.kernels[1].source).read_text()
    (tmp_path / "firmware").mkdir()
    shutil.copy(root / spec.kernels[0].source, tmp_path / spec.kernels[0].source)
    (tmp_path / spec.kernels[1].source).write_text(src.replace("bundle=gmem_k\n", "bundle=gmem_kk\n"))
    with pytest.raises(ValueError, match="port k_cache is in bundle gmem_kk"):
        check_kernel_sources(spec, tmp_path)
    (tmp_path / spec.kernels[1].source).write_text(
        src.replace("#pragma HLS INTERFACE m_axi port=out_tokens", "// nothing"))
    with pytest.raises(ValueError, match="m_axi port=out_tokens"):
        check_kernel_sources(spec, tmp_path)


# ------------------------------------------------------------------------------------------------
# memory plan and spec checks

def test_check_memory():
    spec = make_spec()
    totals = check_memory(spec)
    assert totals["HBM[0]"] == 4096 and totals["DDR[1]"] == 8 * 4 + VOCAB * 4 + 64 + 8 * 4
    assert list(totals)[:3] == ["DDR[0]", "DDR[1]", "HBM[0]"]
    over = make_spec()
    over.buffers.append(Buffer("extra", "HBM[1]", HBM_CHANNEL_BYTES - 4096))
    with pytest.raises(ValueError, match=r"HBM\[1\] is over-full: 268435520 bytes"):
        check_memory(over)
    for bad in ("HBM[32]", "DDR[2]", "PLRAM[0]", "HBM0", "HBM[01]"):
        s = make_spec()
        s.buffers[0].memory = bad
        with pytest.raises(ValueError):
            check_memory(s)


def test_validate_spec_errors(tmp_path):
    s = make_spec()
    s.kernels[0].ports[2].memory = "HBM[9]"             # w0 not on its buffer's bank
    with pytest.raises(ValueError, match="buffer weights_p0 is on HBM"):
        validate_spec(s)
    s = make_spec()
    s.kernels[1].ports[4].bundle = "gmem_w0"            # w1 in w0's bundle
    with pytest.raises(ValueError, match="one bundle per port"):
        validate_spec(s)
    s = make_spec()
    s.buffers.append(Buffer("orphan", "HBM[9]", 64))
    with pytest.raises(ValueError, match="orphan"):
        write_vitis_files(s, tmp_path)
    s = make_spec()
    s.kernels[1].clock_mhz = 250.0
    with pytest.raises(ValueError, match="different clocks"):
        validate_spec(s)
    s = make_spec()
    s.kernels[1].ports.append(Port("mystery", "scalar", "int"))
    with pytest.raises(ValueError, match="mystery"):
        vitis_files(s)
    with pytest.raises(ValueError, match="max_prompt"):
        vitis_files(make_spec(max_prompt=None))
    assert not (tmp_path / "Makefile").exists()         # nothing written on error


# ------------------------------------------------------------------------------------------------
# host: syntax against the XRT stub, then built by the Makefile and run on the fake runtime

@pytest.fixture(scope="module")
def host_build(project, tmp_path_factory):
    """The host's -fsyntax-only check against the stub headers and, concurrently, the stub runtime
    (libxrt_coreutil.a); then build/host by `make host` with XILINX_XRT pointing at both."""
    _, root, _ = project
    xrt = tmp_path_factory.mktemp("xrt")
    (xrt / "include").symlink_to(XRT_STUB)
    (xrt / "lib").mkdir()
    obj = xrt / "xrt_stub.o"
    syntax = subprocess.Popen([CXX, "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror",
                               f"-I{XRT_STUB}", str(root / "host" / "host.cpp")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stub = subprocess.Popen([CXX, "-std=c++17", "-O0", "-c", f"-I{XRT_STUB}",
                             str(XRT_STUB / "xrt_stub.cpp"), "-o", str(obj)])
    syntax_out = syntax.communicate(timeout=60)[0]
    assert stub.wait(timeout=60) == 0
    subprocess.run(["ar", "rcs", str(xrt / "lib" / "libxrt_coreutil.a"), str(obj)], check=True)
    make = subprocess.run(["make", "host", f"XILINX_XRT={xrt}", "HOST_CXXFLAGS=-std=c++17 -O0 -Wall"],
                          cwd=root, capture_output=True, text=True, timeout=120)
    for stage in ("prefill", "decode"):
        (root / f"fake_{stage}.xclbin").write_bytes(b"xclbin2\0")
    return syntax.returncode, syntax_out, make, xrt


def test_host_syntax(host_build):
    """g++ -std=c++17 -fsyntax-only -Wall -Wextra -Werror host/host.cpp -Itests/xrt_stub"""
    rc, out, _, _ = host_build
    assert rc == 0, out


@pytest.fixture(scope="module")
def host_bin(project, host_build):
    _, root, _ = project
    _, _, make, xrt = host_build
    assert make.returncode == 0, make.stdout + make.stderr
    assert f"-I{xrt}/include" in make.stdout and f"-L{xrt}/lib -lxrt_coreutil -pthread" in make.stdout
    return root / "build" / "host"


def run_host(root, host, *args, writes="", log=None):
    env = dict(os.environ, XRT_STUB_WRITES=writes)
    if log is not None:
        env["XRT_STUB_LOG"] = str(log)
    return subprocess.run([str(host), str(root / "fake_prefill.xclbin"), str(root / "fake_decode.xclbin"), str(root),
                           *args], env=env,
                          capture_output=True, text=True, timeout=30)


def test_host_runs_on_fake_runtime(project, host_bin, tmp_path):
    spec, root, _ = project
    pre, dec = spec.kernels
    arg = {k.name: {p.name: i for i, p in enumerate(k.ports)} for k in spec.kernels}
    # prefill "samples" 5, decode produces 6 7 2(EOS) 9
    writes = (f"{pre.name}:{arg[pre.name]['next_token']}:5;"
              f"{dec.name}:{arg[dec.name]['out_tokens']}:6,7,2,9")
    log = tmp_path / "xrt.log"
    r = run_host(root, host_bin, "--tokens", "1, 3 4", "--max-new-tokens", "5", "--seed", "11",
                 writes=writes, log=log)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "prompt tokens (3): 1 3 4" in out
    assert "generated tokens (4): 5 6 7 2" in out              # stops at EOS
    assert "prompt text: t1t3t4" in out and "generated text: t5t6t7\n" in out
    assert "prefill: " in out and "decode: " in out and "tokens/s" in out

    lines = [line.split() for line in log.read_text().splitlines()]
    kernel_id = {l[1]: int(l[2]) for l in lines if l[0] == "kernel"}
    assert kernel_id == {pre.name: 0, dec.name: 1}
    # two xclbins: prefill's loaded first, decode's after the prefill run
    loads = [n for n, l in enumerate(lines) if l[0] == "load_xclbin"]
    starts = [n for n, l in enumerate(lines) if l[0] == "start"]
    assert [lines[n][1].rsplit("/", 1)[-1] for n in loads] == ["fake_prefill.xclbin", "fake_decode.xclbin"]
    assert loads[0] < starts[0] < loads[1] < starts[1]
    # each stage: one bo per buffer its kernel uses, in that kernel's argument's memory group, uploaded whole
    bidx = {b.name: i for i, b in enumerate(spec.buffers)}
    bos = [l for l in lines if l[0] == "bo"]
    stage_bos = {}
    for k, lo, hi in ((pre, loads[0], loads[1]), (dec, loads[1], len(lines))):
        used = [(bidx[p.buffer], a) for a, p in enumerate(k.ports) if p.kind == "m_axi"]
        mine = [l for l in lines[lo:hi] if l[0] == "bo"]
        assert len(mine) == len(used)
        for (bi, a), l in zip(sorted(used), mine):
            assert l[2:] == ["size", str(spec.buffers[bi].bytes), "group", str(1000 * kernel_id[k.name] + a)]
        stage_bos[k.name] = {bi: l[1] for (bi, _), l in zip(sorted(used), mine)}
        start = next(n for n in starts if n > lo)
        for bi, bo_id in stage_bos[k.name].items():
            assert ["sync", bo_id, "0", str(spec.buffers[bi].bytes), "0"] in lines[lo:start]
    assert len(bos) == sum(len(v) for v in stage_bos.values())
    # the KV cache is read back after prefill, before the decode xclbin is loaded
    kv = bidx[pre.ports[arg[pre.name]["k_cache"]].buffer]
    assert ["sync", stage_bos[pre.name][kv], "1", str(spec.buffers[kv].bytes), "0"] in lines[starts[0]:loads[1]]
    # arguments: every m_axi argument bound to its stage's bo of the buffer; scalars by value
    args = {}
    for l in lines:
        if l[0] == "set_arg":
            args[(l[1], int(l[2]))] = l[3:]
    for k in spec.kernels:
        for a, p in enumerate(k.ports):
            if p.kind == "m_axi":
                assert args[(k.name, a)] == ["bo", stage_bos[k.name][bidx[p.buffer]]]
    used = [{p.buffer for p in k.ports if p.kind == "m_axi"} for k in (pre, dec)]
    carried = sum(b.bytes for b in spec.buffers if b.name in used[0] & used[1] and not b.file)
    assert carried >= 2 * spec.buffers[kv].bytes
    assert "switch: " in out and f"{carried} bytes of KV cache carried over" in out

    def scalar(k, name):
        kind, size, hexv = args[(k, arg[k][name])]
        assert kind == "scalar" and size == "4"
        return bytes.fromhex(hexv)

    i32 = lambda v: struct.pack("<i", v)  # noqa: E731
    assert scalar(pre.name, "n_tokens") == i32(3)
    assert scalar(pre.name, "top_k") == i32(4) and scalar(dec.name, "top_k") == i32(4)
    assert scalar(pre.name, "inv_temperature") == struct.pack("<f", 1 / 0.8)
    assert scalar(pre.name, "seed") == struct.pack("<I", 11)
    assert scalar(dec.name, "first_token") == i32(5)
    assert scalar(dec.name, "position") == i32(3)
    assert scalar(dec.name, "n_new") == i32(4)
    assert [l[1] for l in lines if l[0] == "start"] == [pre.name, dec.name]


def test_host_eos_first_and_logits(project, host_bin, tmp_path):
    spec, root, _ = project
    pre = spec.kernels[0]
    arg = {p.name: i for i, p in enumerate(pre.ports)}
    logits = tmp_path / "logits.bin"
    r = run_host(root, host_bin, "--tokens", "1", "--logits-out", str(logits),
                 writes=f"{pre.name}:{arg['next_token']}:2;{pre.name}:{arg['logits']}:1,2,3")
    assert r.returncode == 0, r.stderr
    assert "generated tokens (1): 2" in r.stdout and "decode: 0.000 ms (0 tokens" in r.stdout
    assert logits.read_bytes()[:12] == struct.pack("<3i", 1, 2, 3) and logits.stat().st_size == VOCAB * 4


@pytest.mark.parametrize("args, message", [
    (["--tokens", "1 2 3 4 5 6 7 8 9"], "more than max_prompt = 8"),
    (["--tokens", "1", "--max-new-tokens", "7"], "outside [1, 6]"),
    (["--tokens", "1 2 3 4 5 6 7 8", "--max-new-tokens", "6"], "position 8 + n_new 5 = 13 exceeds max_context = 12"),
    (["--tokens", "1 16"], "outside the vocabulary"),
    (["--tokens", "1 x"], "bad token id"),
    (["--tokens", ""], "the prompt is empty"),
    ([], "no prompt"),
    (["--tokens", "1", "--temperature", "0"], "--temperature must be > 0"),
    (["--tokens", "1", "--frobnicate"], "unknown option --frobnicate"),
])
def test_host_rejects_bad_input(project, host_bin, args, message):
    _, root, _ = project
    r = run_host(root, host_bin, *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert "usage: host" in r.stderr


def test_host_checks_buffer_files(project, host_bin, tmp_path):
    spec, root, _ = project
    path = root / "weights" / "fmem_decode.bin"
    good = path.read_bytes()
    try:
        path.write_bytes(good[:-4])
        r = run_host(root, host_bin, "--tokens", "1")
        assert r.returncode == 1 and "fmem_decode.bin has 316 bytes, the buffer 320" in r.stderr
    finally:
        path.write_bytes(good)
    try:                                                 # same size, one byte changed: the sha256 check
        path.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
        r = run_host(root, host_bin, "--tokens", "1")
        assert r.returncode == 1 and "fmem_decode.bin" in r.stderr and "sha256" in r.stderr.lower(), r.stderr
    finally:
        path.write_bytes(good)
    listing = root / "host" / "buffers.txt"
    text = listing.read_text()
    try:
        listing.write_text(text.replace("k_cache HBM[5] 2048", "k_cache HBM[5] 4096"))
        r = run_host(root, host_bin, "--tokens", "1")
        assert r.returncode == 1 and "does not match this host's buffer k_cache" in r.stderr
    finally:
        listing.write_text(text)


# ------------------------------------------------------------------------------------------------
# Makefile

def test_makefile_csim(project, tmp_path):
    """`make csim`: test bench and both kernel sources built with the contract's flags against
    AP_TYPES (here a one-line ap_int.h found only through -I$(AP_TYPES)), run with the root as argv[1]."""
    _, root, _ = project
    ap_types = tmp_path / "ap_types"
    ap_types.mkdir()
    (ap_types / "ap_int.h").write_text("#pragma once\ntemplate <int W> struct ap_uint { unsigned char b[W / 8]; };\n")
    r = subprocess.run(["make", "csim", f"AP_TYPES={ap_types}"], cwd=root, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "-ffp-contract=off -fno-fast-math" in r.stdout
    assert f"csim root={root} next=7 out=10 11 12 13" in r.stdout


def _dry(root, *args):
    r = subprocess.run(["make", "-n", "-B", *args], cwd=root, capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout + r.stderr


def test_makefile_vitis_targets(project):
    spec, root, _ = project
    rc, out = _dry(root, "xclbin", "TARGET=hw")
    assert rc == 0, out
    for k in spec.kernels:
        assert f'FLEXLLM_HLS_STEPS="synth export" vitis_hls -f hls/{k.name}.tcl' in out
    for k in spec.kernels:
        assert (f"v++ -l -t hw --config vitis/link_{k.name}.cfg --temp_dir build/hw/_x_{k.name} -o "
                f"build/hw/{k.name}.xclbin build/xo/{k.name}.xo") in out
    rc, out = _dry(root, "xo", "TARGET=sw_emu")
    assert rc == 0, out
    assert (f"v++ -c -t sw_emu --platform {spec.platform} -k {NAME}_decode -Ifirmware -Ifirmware/flexllm "
            f'--advanced.prop kernel.{NAME}_decode.kernel_flags="-std=c++14" '
            f"--temp_dir build/sw_emu/_x -o build/sw_emu/{NAME}_decode.xo firmware/{NAME}_decode.cpp") in out
    rc, out = _dry(root, "run", "TARGET=hw_emu", "TOKENS=1 2")
    assert rc == 0, out
    assert "emconfigutil --platform" in out
    assert (f"XCL_EMULATION_MODE=hw_emu EMCONFIG_PATH=build/hw_emu ./build/host build/hw_emu/{NAME}_prefill.xclbin "
            f'build/hw_emu/{NAME}_decode.xclbin . --tokens "1 2"') in out
    rc, out = _dry(root, "hls", "TARGET=bogus")
    assert rc != 0 and "TARGET must be hw, hw_emu or sw_emu" in out
    rc, out = _dry(root, "clean")
    assert rc == 0 and f"hls/{NAME}_prefill_prj" in out and "rm -rf build" in out
