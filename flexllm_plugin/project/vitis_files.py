"""Vitis build files of a generated project, all derived from its :class:`ProjectSpec`.

``write_vitis_files(spec, root)`` writes, relative to the project root::

    hls/<kernel>.tcl     vitis_hls -f script per kernel: C-sim (optional), synthesis, export of the .xo
    vitis/link_<kernel>.cfg  v++ -l configuration of each kernel's own xclbin (prefill and decode are
                         separate bitstreams): its CU, one sp= per m_axi port, kernel clock
    host/host.cpp        XRT native-API host: load buffers, prefill, decode, print tokens/text/timings
    host/buffers.txt     the device buffers (name memory bytes file) that host reads and verifies
    Makefile             csim / hls / xo / xclbin / host / run / clean, TARGET=hw|hw_emu|sw_emu
    README.md            configuration, memory plan, estimates, how to build and run

Nothing here needs Vitis; ``check_memory``, ``validate_spec`` and ``check_kernel_sources`` are the
checks without it. Output is deterministic: the same spec gives byte-identical files.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Tuple

from .host import buffers_table, host_source, kernel_roles
from ..resources import data_dir
from .manifest_check import CHECK_HEADER, HEADER_NAME
from .spec import (DDR_BANK_BYTES, DDR_BANKS, HBM_CHANNEL_BYTES, HBM_CHANNELS, Kernel, ProjectSpec)

_MEMORY_RE = re.compile(r"^(HBM|DDR)\[(0|[1-9][0-9]*)\]$")
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_M_AXI_PRAGMA_RE = re.compile(r"^\s*#\s*pragma\s+HLS\s+INTERFACE\s+(.*)$", re.IGNORECASE)

# Ops whose fused implementations (Versal DSP58 floating point) would merge an fp32 multiply and add
# into one rounding step; the C simulation rounds each separately (-ffp-contract=off).
FUSED_FP_OPS = ("fmadd", "fmacc", "facc")


# ---------------------------------------------------------------------------------------------------
# checks

def parse_memory(memory: str) -> Tuple[str, int]:
    """``"HBM[3]"`` -> ``("HBM", 3)``; ValueError for anything that is not a U280 bank."""
    m = _MEMORY_RE.match(memory or "")
    if not m:
        raise ValueError(f"memory {memory!r} is not of the form HBM[n] or DDR[n]")
    kind, index = m.group(1), int(m.group(2))
    limit = HBM_CHANNELS if kind == "HBM" else DDR_BANKS
    if index >= limit:
        raise ValueError(f"memory {memory!r}: the U280 has {kind}[0..{limit - 1}]")
    return kind, index


def _mb(n: int) -> str:
    """Human-readable size: 512 B, 4.0 KiB, 1.5 MiB, 2.00 GiB."""
    if n < 2 ** 10:
        return f"{n} B"
    if n < 2 ** 20:
        return f"{n / 2 ** 10:.1f} KiB"
    if n < 2 ** 30:
        return f"{n / 2 ** 20:.1f} MiB"
    return f"{n / 2 ** 30:.2f} GiB"


def check_memory(spec: ProjectSpec) -> Dict[str, int]:
    """Sum the buffers per memory bank; ValueError if a bank is invalid or over-full (an HBM
    pseudo-channel holds 256 MB, a DDR bank 16 GB). Returns ``{bank: total bytes}`` in bank order."""
    totals: Dict[str, int] = {}
    for b in spec.buffers:
        parse_memory(b.memory)
        if b.bytes <= 0:
            raise ValueError(f"buffer {b.name!r} has {b.bytes} bytes")
        totals[b.memory] = totals.get(b.memory, 0) + int(b.bytes)
    hbm = [m for m in totals if m.startswith("HBM")]
    if len(hbm) > HBM_CHANNELS:
        raise ValueError(f"{len(hbm)} HBM channels used, the U280 has {HBM_CHANNELS}")
    for memory, total in totals.items():
        capacity = HBM_CHANNEL_BYTES if memory.startswith("HBM") else DDR_BANK_BYTES
        if total > capacity:
            names = ", ".join(b.name for b in spec.buffers if b.memory == memory)
            raise ValueError(f"memory bank {memory} is over-full: {total} bytes ({_mb(total)}) of "
                             f"{capacity} ({_mb(capacity)}), buffers: {names}")
    return dict(sorted(totals.items(), key=lambda kv: (kv[0][:3], parse_memory(kv[0])[1])))


def validate_spec(spec: ProjectSpec) -> None:
    """Consistency of the spec the Vitis files are generated from (raises ValueError)."""
    if not _IDENT_RE.match(spec.name):
        raise ValueError(f"project name {spec.name!r} is not a C identifier")
    if not spec.kernels:
        raise ValueError("the project has no kernels")
    names = [k.name for k in spec.kernels]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate kernel names: {names}")
    buffers = {}
    for b in spec.buffers:
        if b.name in buffers:
            raise ValueError(f"duplicate buffer {b.name!r}")
        if not _IDENT_RE.match(b.name):
            raise ValueError(f"buffer name {b.name!r} is not an identifier")
        buffers[b.name] = b
    used = set()
    for k in spec.kernels:
        if not _IDENT_RE.match(k.name):
            raise ValueError(f"kernel name {k.name!r} is not a C identifier")
        if k.clock_mhz <= 0:
            raise ValueError(f"kernel {k.name}: clock {k.clock_mhz} MHz")
        ports, bundles = set(), {}
        for p in k.ports:
            where = f"kernel {k.name}, port {p.name}"
            if not _IDENT_RE.match(p.name) or p.name in ports:
                raise ValueError(f"{where}: invalid or duplicate port name")
            ports.add(p.name)
            if p.kind == "scalar":
                continue
            if p.kind != "m_axi":
                raise ValueError(f"{where}: kind {p.kind!r} is neither m_axi nor scalar")
            if not (p.bundle and p.memory and p.buffer):
                raise ValueError(f"{where}: an m_axi port needs bundle, memory and buffer")
            if p.bundle in bundles:
                raise ValueError(f"{where}: bundle {p.bundle} already used by port {bundles[p.bundle]}"
                                 " (one bundle per port)")
            bundles[p.bundle] = p.name
            parse_memory(p.memory)
            if p.buffer not in buffers:
                raise ValueError(f"{where}: no buffer {p.buffer!r}")
            if buffers[p.buffer].memory != p.memory:
                raise ValueError(f"{where}: on {p.memory} but buffer {p.buffer} is on "
                                 f"{buffers[p.buffer].memory}")
            used.add(p.buffer)
    unused = [b.name for b in spec.buffers if b.name not in used]
    if unused:
        raise ValueError(f"buffers bound to no kernel port: {unused}")
    clocks = sorted({k.clock_mhz for k in spec.kernels})
    if len(clocks) != 1:
        # the U280 shell has one scalable kernel clock (clock 0) shared by every HLS kernel
        raise ValueError(f"kernels have different clocks {clocks} MHz; the U280 platform gives all "
                         "HLS kernels one kernel clock")
    check_memory(spec)


def parse_interface_pragmas(source: str) -> Dict[str, Dict[str, str]]:
    """``#pragma HLS INTERFACE`` lines of a kernel source -> ``{port: {"mode": m_axi|s_axilite, ...}}``."""
    out: Dict[str, Dict[str, str]] = {}
    for line in source.splitlines():
        m = _M_AXI_PRAGMA_RE.match(line)
        if not m:
            continue
        words = m.group(1).split()
        opts = {}
        mode = None
        for w in words:
            if "=" in w:
                key, value = w.split("=", 1)
                opts[key.lower()] = value
            elif mode is None:
                mode = w.lower()
        mode = opts.pop("mode", mode)
        port = opts.get("port")
        if port is None:
            continue
        opts["mode"] = mode
        out[port] = opts
    return out


def check_kernel_sources(spec: ProjectSpec, root: Path) -> None:
    """Cross-check the kernel sources under ``root`` against the spec: every m_axi port of the spec has
    ``#pragma HLS INTERFACE m_axi port=<p> ... bundle=<bundle>``, every scalar an s_axilite pragma, and
    the source has no m_axi port the spec does not know (raises ValueError)."""
    for k in spec.kernels:
        path = Path(root) / k.source
        if not path.is_file():
            raise ValueError(f"kernel {k.name}: source {k.source} does not exist")
        pragmas = parse_interface_pragmas(path.read_text())
        for p in k.ports:
            got = pragmas.get(p.name)
            want = "m_axi" if p.kind == "m_axi" else "s_axilite"
            if got is None or got["mode"] != want:
                raise ValueError(f"kernel {k.name}: {k.source} has no '#pragma HLS INTERFACE {want} "
                                 f"port={p.name}'")
            if p.kind == "m_axi" and got.get("bundle") != p.bundle:
                raise ValueError(f"kernel {k.name}: port {p.name} is in bundle {got.get('bundle')} in "
                                 f"{k.source}, the spec says {p.bundle}")
        extra = sorted(set(n for n, o in pragmas.items() if o["mode"] == "m_axi")
                       - {p.name for p in k.ports if p.kind == "m_axi"})
        if extra:
            raise ValueError(f"kernel {k.name}: m_axi ports {extra} in {k.source} are not in the spec")
        if pragmas.get("return", {}).get("mode") != "s_axilite":
            raise ValueError(f"kernel {k.name}: {k.source} has no '#pragma HLS INTERFACE s_axilite "
                             "port=return'")


# ---------------------------------------------------------------------------------------------------
# small helpers

def _num(x: float, digits: int = 3) -> str:
    """Shortest decimal of x rounded to ``digits`` places (3.3333 -> "3.333", 300.0 -> "300")."""
    s = f"{x:.{digits}f}".rstrip("0").rstrip(".")
    return s if s not in ("", "-0") else "0"


def _period_ns(mhz: float) -> str:
    return _num(1000.0 / mhz)


def _instance(kernel: Kernel) -> str:
    return f"{kernel.name}_1"


def _includes(spec: ProjectSpec) -> List[str]:
    seen: List[str] = []
    for k in spec.kernels:
        for inc in k.includes:
            if inc not in seen:
                seen.append(inc)
    return seen


def _tcl_word(s: str) -> str:
    """A Tcl word for a path: bare if it has no special characters, else braced."""
    return s if re.match(r"^[A-Za-z0-9_./+:\-]+$", s) else "{" + s + "}"


# ---------------------------------------------------------------------------------------------------
# hls/<kernel>.tcl

def hls_tcl(spec: ProjectSpec, kernel: Kernel) -> str:
    others = [k for k in spec.kernels if k is not kernel]
    inc = " ".join(f"-I$ROOT/{d}" for d in kernel.includes)
    lines = [
        f"# {kernel.name}: Vitis HLS script of the {spec.name} kernel {kernel.name} (generated by flexllm;",
        "# do not edit). Run from anywhere: vitis_hls -f hls/" + kernel.name + ".tcl",
        "# Steps: the words of $FLEXLLM_HLS_STEPS among csim, synth, export (default \"synth export\").",
        "# The .xo goes to build/xo/" + kernel.name + ".xo; the HLS project to hls/" + kernel.name + "_prj.",
        "",
        "set ROOT [file normalize [file join [file dirname [info script]] ..]]",
        "cd $ROOT",
        "set steps {synth export}",
        "if {[info exists ::env(FLEXLLM_HLS_STEPS)]} { set steps $::env(FLEXLLM_HLS_STEPS) }",
        "foreach step $steps {",
        "    if {[lsearch -exact {csim synth export} $step] < 0} {",
        "        error \"unknown step '$step' in FLEXLLM_HLS_STEPS\"",
        "    }",
        "}",
        "# absolute include paths: C simulation compiles in the solution's csim/build directory",
        f"set CFLAGS \"-std=c++14 {inc}\"",
        "",
        f"open_project -reset hls/{kernel.name}_prj",
        f"set_top {kernel.name}",
        f"add_files -cflags $CFLAGS {_tcl_word(kernel.source)}",
        "if {[lsearch -exact $steps csim] >= 0} {",
        "    # test bench: the C-sim driver and the other kernels it calls",
        "    add_files -tb -cflags $CFLAGS csim/testbench.cpp",
    ]
    lines += [f"    add_files -tb -cflags $CFLAGS {_tcl_word(k.source)}" for k in others]
    lines += [
        "}",
        "open_solution -flow_target vitis sol",
        f"set_part {{{spec.part}}}",
        f"create_clock -period {_period_ns(kernel.clock_mhz)} -name default",
        "config_interface -m_axi_alignment_byte_size 64 -m_axi_max_widen_bitwidth 512",
        "# fp32 numerics as in the C simulation: no fused multiply-add / accumulate operators, every",
        "# multiply and add rounds separately (these fused operators exist on Versal; on the U280's",
        "# UltraScale+ fabric they are not inferred, the lines make the requirement explicit).",
    ]
    lines += [f"config_op {op} -impl none" for op in FUSED_FP_OPS]
    lines += [
        "",
        "if {[lsearch -exact $steps csim] >= 0} {",
        "    # the test bench gets the project root as argv[1]",
        "    csim_design -O -argv $ROOT",
        "}",
        "if {[lsearch -exact $steps synth] >= 0} {",
        "    csynth_design",
        "}",
        "if {[lsearch -exact $steps export] >= 0} {",
        "    file mkdir [file join $ROOT build xo]",
        f"    export_design -format xo -output [file join $ROOT build xo {kernel.name}.xo]",
        "}",
        "exit",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# vitis/link.cfg

def link_cfg(spec: ProjectSpec, kernel: Kernel) -> str:
    """The v++ link configuration of ``kernel``'s xclbin. Prefill and decode are separate bitstreams: each
    kernel is sized to the whole device (its cost model, report/estimates.json), and the host switches
    xclbins between the stages, carrying the KV cache over."""
    mhz = kernel.clock_mhz
    est = spec.estimates.get("kernels", {}).get(kernel.name, {})
    lines = [
        f"# {kernel.name}: v++ link configuration of its own xclbin (generated by flexllm; do not edit)",
        f"# v++ -l -t hw --config vitis/link_{kernel.name}.cfg -o {kernel.name}.xclbin build/xo/{kernel.name}.xo",
        f"platform={spec.platform}",
        "# U280 shells have scalable kernel clocks: clock 0 drives the HLS kernels",
        f"kernel_frequency=0:{_num(mhz)}",
        "",
        "[connectivity]",
        f"nk={kernel.name}:1:{_instance(kernel)}",
        f"# {_instance(kernel)}: one memory connection per m_axi port",
    ]
    lines += [f"sp={_instance(kernel)}.{p.name}:{p.memory}" for p in kernel.ports if p.kind == "m_axi"]
    if est.get("slr"):
        lines += ["", "# The kernel spans the SLRs (its modules, as the cost model places them; floorplan them with",
                  "# Vivado pblocks or RapidStream for 300 MHz; the HBM-facing readers sit in SLR0):"]
        lines += [f"#   SLR{i}: {', '.join(slr['modules'])}" for i, slr in enumerate(est["slr"])]
    lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Makefile

def makefile(spec: ProjectSpec) -> str:
    ks = spec.kernels
    srcs = " ".join(k.source for k in ks)
    inc = " ".join(f"-I{d}" for d in _includes(spec))
    # Vitis' headers when a Vitis environment is set up, else the copy the build put in csim/ap_types
    ap_types = spec.model.get("ap_types") or "$(if $(XILINX_HLS),$(XILINX_HLS)/include,csim/ap_types)"
    hdr_globs = " ".join(f"{d}/*.h" for d in _includes(spec))
    L = [
        f"# {spec.name}: build of the FlexLLM U280 accelerator (generated by flexllm; do not edit)",
        "#   make csim                      g++ C simulation of csim/testbench.cpp with the kernel sources",
        "#   make hls                       vitis_hls: synthesis + export of every kernel (build/xo/*.xo)",
        "#   make xo                        the kernels' .xo for TARGET (sw_emu: v++ -c)",
        "#   make xclbin TARGET=hw          v++ -l: build/$(TARGET)/" + spec.name + ".xclbin",
        "#   make host                      the XRT host program build/host",
        "#   make run TOKENS=\"1 2 3\"        run on the card (or emulation with TARGET=hw_emu|sw_emu)",
        "",
        "TARGET ?= hw",
        f"PLATFORM := {spec.platform}",
        "XILINX_XRT ?= /opt/xilinx/xrt",
        f"AP_TYPES ?= {ap_types}",
        "CXX ?= g++",
        "VITIS_HLS ?= vitis_hls",
        "VPP ?= v++",
        "BUILD := build",
        f"NAME := {spec.name}",
        f"KERNELS := {' '.join(k.name for k in ks)}",
        f"KERNEL_SRCS := {srcs}",
        f"HEADERS := $(wildcard {hdr_globs})",
        f"INCLUDES := {inc}",
        "CSIM_FLAGS := -std=c++17 -O2 -ffp-contract=off -fno-fast-math",
        "HOST_CXXFLAGS ?= -std=c++17 -O2 -Wall",
        "CSIM_ARGS ?= $(CURDIR)",
        "TOKENS ?= 1",
        "RUN_ARGS ?=",
        "",
        "ifeq ($(filter $(TARGET),hw hw_emu sw_emu),)",
        "$(error TARGET must be hw, hw_emu or sw_emu, not '$(TARGET)')",
        "endif",
        "",
        "HLS_XOS := " + " ".join(f"$(BUILD)/xo/{k.name}.xo" for k in ks),
        "SWEMU_XOS := " + " ".join(f"$(BUILD)/sw_emu/{k.name}.xo" for k in ks),
        "ifeq ($(TARGET),sw_emu)",
        "XOS := $(SWEMU_XOS)",
        "else",
        "XOS := $(HLS_XOS)",
        "endif",
        *[f"XCLBIN_{role.upper()} := $(BUILD)/$(TARGET)/{k.name}.xclbin" for role, k in kernel_roles(spec).items()],
        "XCLBINS := $(XCLBIN_PREFILL) $(XCLBIN_DECODE)",
        "HOST := $(BUILD)/host",
        "",
        ".PHONY: all csim hls xo xclbin host run clean",
        "all: xclbin host",
        "",
        "# ---- C simulation (no Vitis needed: ap_types headers from AP_TYPES) ----",
        "$(BUILD)/csim/testbench: csim/testbench.cpp $(KERNEL_SRCS) $(HEADERS)",
        "\tmkdir -p $(dir $@)",
        "\t$(CXX) $(CSIM_FLAGS) $(INCLUDES) -I$(AP_TYPES) -o $@ csim/testbench.cpp $(KERNEL_SRCS)",
        "",
        "csim: $(BUILD)/csim/testbench",
        "\t./$(BUILD)/csim/testbench $(CSIM_ARGS)",
        "",
        "# ---- Vitis HLS: synthesis and .xo export per kernel ----",
    ]
    for k in ks:
        L += [f"$(BUILD)/xo/{k.name}.xo: hls/{k.name}.tcl {k.source} $(HEADERS)",
              f"\tFLEXLLM_HLS_STEPS=\"synth export\" $(VITIS_HLS) -f hls/{k.name}.tcl", ""]
    L += ["hls: $(HLS_XOS)", "",
          "# sw_emu kernels are compiled by v++ -c from the C++ sources (kernel_flags: the C++ standard",
          "# of the kernel sources, as -std=c++14 in the HLS scripts: the Vitis HLS front end)"]
    for k in ks:
        kinc = " ".join(f"-I{d}" for d in k.includes)
        L += [f"$(BUILD)/sw_emu/{k.name}.xo: {k.source} $(HEADERS)",
              "\tmkdir -p $(dir $@)",
              f"\t$(VPP) -c -t sw_emu --platform $(PLATFORM) -k {k.name} {kinc} "
              f"--advanced.prop kernel.{k.name}.kernel_flags=\"-std=c++14\" "
              f"--temp_dir $(BUILD)/sw_emu/_x -o $@ {k.source}", ""]
    L += [
        "xo: $(XOS)",
        "",
        "# ---- v++ link: one xclbin per kernel (prefill, decode: separate bitstreams) ----",
    ]
    for k in ks:
        xo = f"$(BUILD)/$(if $(filter sw_emu,$(TARGET)),sw_emu,xo)/{k.name}.xo"
        L += [f"$(BUILD)/$(TARGET)/{k.name}.xclbin: {xo} vitis/link_{k.name}.cfg",
              "\tmkdir -p $(dir $@)",
              f"\t$(VPP) -l -t $(TARGET) --config vitis/link_{k.name}.cfg --temp_dir $(BUILD)/$(TARGET)/_x_{k.name} "
              f"-o $@ {xo}", ""]
    L += [
        "xclbin: $(XCLBINS)",
        "",
        "# ---- host ----",
        "$(HOST): host/host.cpp",
        "\tmkdir -p $(dir $@)",
        "\t$(CXX) $(HOST_CXXFLAGS) -I$(XILINX_XRT)/include -o $@ host/host.cpp "
        "-L$(XILINX_XRT)/lib -lxrt_coreutil -pthread",
        "",
        "host: $(HOST)",
        "",
        "# ---- run: host <xclbin> <project dir> --tokens ... ----",
        "run: $(XCLBINS) $(HOST)",
        "ifeq ($(TARGET),hw)",
        "\t./$(HOST) $(XCLBIN_PREFILL) $(XCLBIN_DECODE) . --tokens \"$(TOKENS)\" $(RUN_ARGS)",
        "else",
        "\temconfigutil --platform $(PLATFORM) --od $(BUILD)/$(TARGET)",
        "\tXCL_EMULATION_MODE=$(TARGET) EMCONFIG_PATH=$(BUILD)/$(TARGET) ./$(HOST) $(XCLBIN_PREFILL) $(XCLBIN_DECODE) . "
        "--tokens \"$(TOKENS)\" $(RUN_ARGS)",
        "endif",
        "",
        "clean:",
        "\trm -rf $(BUILD) " + " ".join(f"hls/{k.name}_prj" for k in ks)
        + " .Xil _x *.log *.jou .run",
        "",
    ]
    return "\n".join(L)


# ---------------------------------------------------------------------------------------------------
# README.md

def _cell(v) -> str:
    if isinstance(v, float):
        return _num(v, 4) if abs(v) >= 1e-3 or v == 0 else f"{v:.3e}"
    if v is None:
        return "-"
    if isinstance(v, (list, tuple)):
        return ", ".join(_cell(x) for x in v)
    return str(v).replace("|", "\\|").replace("\n", " ")


def _flatten(d: Dict, prefix: str = "") -> Dict[str, object]:
    out: Dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _table(header: List[str], rows: List[List[object]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def estimates_tables(estimates: Dict) -> List[str]:
    """Scalars as one quantity/value table; dict values (e.g. per kernel) as one table with a row per
    key and a column per inner key (nested deeper: dotted column names)."""
    if not estimates:
        return ["No estimates in the spec."]
    scalars = [[k, v] for k, v in estimates.items() if not isinstance(v, dict)]
    groups = {k: _flatten(v) for k, v in estimates.items() if isinstance(v, dict)}
    lines: List[str] = []
    if groups:
        cols: List[str] = []
        for flat in groups.values():
            cols += [c for c in flat if c not in cols]
        lines += _table([""] + cols, [[k] + [flat.get(c) for c in cols] for k, flat in groups.items()])
    if scalars:
        if lines:
            lines.append("")
        lines += _table(["quantity", "value"], scalars)
    return lines


def _hmt_section(spec: ProjectSpec) -> List[str]:
    """HMT: how a long prompt runs, and its modeled prefill time against full attention (cost model)."""
    h = spec.model.get("hmt")
    if not h:
        return []
    L = ["## HMT: long prompts with a bounded KV cache", "",
         f"The prompt is cut into blocks of {h['block']} tokens; each block is one run of the prefill kernel: the "
         f"summary pass [T, first {h['summary_tokens']} tokens, T] (from the second block on), the memory recall "
         f"over the ring of the last {h['slots']} memories (fp32, `flexllm/flexllm_memory_recall.h`; W_q, W_k "
         "streamed from `hmt_params`), the main pass [P_n, "
         f"{h['sensory_tokens']} sensory tokens, block, P_n] of at most {h['segment_length']} rows, and the key of the "
         "new memory (ring `hmt_ring`, slot n mod N). Decode continues from the last block's KV cache, so the KV "
         f"cache never holds more than {h['segment_length']} + new-token positions whatever the prompt length "
         "(the host and `flexllm verify --prompt-file` drive the segments, `host/flexllm_hmt_host.h`).", ""]
    rows = spec.estimates.get("hmt_long_prompt") or []
    if rows:
        L += ["Modeled prefill of a long prompt (cost model, not a measurement; the HMT column is an upper bound: "
              "every pass is priced with its LM head):", ""]
        L += _table(["segments", "prompt tokens", "HMT prefill s", "of which recall s", "full attention s",
                     "HMT speed-up", "KV positions HMT / full"],
                    [[r["segments"], r["prompt_tokens"], r["hmt_s"], r["hmt_recall_s"], r["full_attention_s"],
                      f"{r['speedup']}x", f"{r['kv_positions_hmt']} / {r['kv_positions_full']}"] for r in rows])
        L.append("")
    return L


def readme(spec: ProjectSpec) -> str:
    roles = kernel_roles(spec)
    totals = check_memory(spec)
    mhz = spec.kernels[0].clock_mhz
    L = [f"# {spec.name}: FlexLLM accelerator for the AMD Alveo U280", "",
         "Generated by `flexllm build` (do not edit; regenerate instead). "
         f"Kernels {', '.join('`' + k.name + '`' for k in spec.kernels)}, each in its own xclbin (the host "
         "switches bitstreams between prefill and decode and carries the KV cache over), "
         f"part `{spec.part}`, platform `{spec.platform}`, kernel clock {_num(mhz)} MHz.", "",
         "## Model and configuration", ""]
    L += _table(["parameter", "value"], [[k, v] for k, v in _flatten(spec.model).items()])
    L += ["", "## Kernels and ports", ""]
    for k in spec.kernels:
        role = "prefill" if k is roles["prefill"] else "decode" if k is roles["decode"] else "kernel"
        L += [f"### `{k.name}` ({role}, `{k.source}`, CU `{_instance(k)}`)", ""]
        rows = []
        for p in k.ports:
            if p.kind == "m_axi":
                b = spec.buffer(p.buffer)
                rows.append([p.name, f"`{p.ctype}*`", p.direction, p.bundle, p.memory, p.buffer, b.bytes,
                             _mb(b.bytes)])
            else:
                rows.append([p.name, f"`{p.ctype}`", "in", "s_axilite", "-", "-", "-", "-"])
        L += _table(["port", "type", "dir", "bundle", "memory", "buffer", "bytes", "size"], rows)
        L.append("")
    L += _hmt_section(spec)
    L += ["## Device buffers and memory banks", "",
          "One `xrt::bo` per buffer; kernels that name the same buffer share it (same bank, same bo).", ""]
    L += _table(["buffer", "memory", "bytes", "size", "initialised from"],
                [[b.name, b.memory, b.bytes, _mb(b.bytes), b.file or "zeros / outputs"]
                 for b in spec.buffers])
    L += [""]
    rows = []
    for memory, total in totals.items():
        capacity = HBM_CHANNEL_BYTES if memory.startswith("HBM") else DDR_BANK_BYTES
        rows.append([memory, ", ".join(b.name for b in spec.buffers if b.memory == memory), total,
                     _mb(total), f"{100.0 * total / capacity:.1f} %"])
    L += _table(["bank", "buffers", "bytes", "size", "of bank"], rows)
    L += ["", "## Estimates", ""]
    if "kernels" in spec.estimates:
        from ..cost.report import markdown
        L += markdown(spec.estimates)
    else:
        L += estimates_tables(spec.estimates)
    prefill, decode = roles["prefill"].name, roles["decode"].name
    L += ["", "## Build and run", "",
          "Needs Vitis / Vitis HLS 2022.2 or newer and XRT (`source <Vitis>/settings64.sh`, "
          "`source /opt/xilinx/xrt/setup.sh`).", "",
          "```sh",
          "make csim                       # C simulation with g++ (no Vitis needed: csim/ap_types)",
          "make hls                        # vitis_hls -f hls/<kernel>.tcl -> build/xo/*.xo",
          "make xclbin TARGET=hw           # v++ -l --config vitis/link_<kernel>.cfg: one xclbin per kernel (hours)",
          "make host                       # build/host (XRT native API)",
          "make run TOKENS=\"1 2 3\" RUN_ARGS=\"--max-new-tokens 16\"",
          "```", "",
          "`TARGET=hw_emu` or `TARGET=sw_emu` build and run in emulation. The host can also be run directly:", "",
          "```sh",
          f"build/host build/hw/{prefill}.xclbin build/hw/{decode}.xclbin . --tokens \"1 2 3\" [--max-new-tokens N]",
          f"build/host build/hw/{prefill}.xclbin build/hw/{decode}.xclbin . --tokens-file prompt.txt [--top-k K]",
          "```", "",
          f"The host loads the buffers listed in `host/buffers.txt` (sizes are checked), runs `{prefill}` on "
          f"the prompt (at most {spec.model.get('max_prompt')} tokens), reads the KV cache back, loads the "
          f"decode xclbin and runs `{decode}` for the remaining new tokens with the KV cache restored, and "
          "prints the tokens, the decoded text and the timings (load, xclbin switch, prefill ms, decode ms, "
          "tokens/s).",
          "A single `vitis_hls` step can be run by hand: "
          "`FLEXLLM_HLS_STEPS=csim vitis_hls -f hls/<kernel>.tcl` (steps: csim synth export).", ""]
    return "\n".join(L)


# ---------------------------------------------------------------------------------------------------

def vitis_files(spec: ProjectSpec) -> Dict[str, str]:
    """All generated files, ``{relative path: text}`` in writing order."""
    validate_spec(spec)
    files: Dict[str, str] = {}
    for k in spec.kernels:
        files[f"hls/{k.name}.tcl"] = hls_tcl(spec, k)
    for k in spec.kernels:
        files[f"vitis/link_{k.name}.cfg"] = link_cfg(spec, k)
    files["host/host.cpp"] = host_source(spec)
    files[f"host/{HEADER_NAME}"] = CHECK_HEADER
    files["host/flexllm_hmt_host.h"] = (data_dir("layers") / "flexllm_hmt_host.h").read_text()
    files["host/buffers.txt"] = buffers_table(spec)
    files["Makefile"] = makefile(spec)
    files["README.md"] = readme(spec)
    return files


def write_vitis_files(spec: ProjectSpec, root: Path) -> List[str]:
    """Write the Vitis build files of ``spec`` under ``root``; returns the relative paths written."""
    root = Path(root)
    written = []
    for rel, text in vitis_files(spec).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        written.append(rel)
    return written


__all__ = ["check_memory", "validate_spec", "check_kernel_sources", "parse_interface_pragmas",
           "parse_memory", "write_vitis_files", "vitis_files", "hls_tcl", "link_cfg", "makefile",
           "readme", "FUSED_FP_OPS"]
