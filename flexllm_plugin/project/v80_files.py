"""AVED build files of a generated project for the AMD Alveo V80 (``Board: v80``).

AMD documents no Vitis platform (.xpfm) for the V80: its hardware is built with the AVED ("Alveo Versal
Example Design") Vivado flow, a block design (CIPS, NoC with the HBM controllers, DDR4 controllers, base
logic) into which user IP is added and connected through the NoC. The kernels are the same C++ as for the
U280 (the HLS sources are board-independent); what differs is how they are packaged and connected:

    hls/<kernel>.tcl        vitis_hls: C-sim (optional), synthesis, export as Vivado IP (Vivado IP flow,
                            ``export_design -format ip_catalog``) for the V80 part
    vivado/flexllm_bd.tcl   proc ``flexllm_add_<kernel>``: the kernel's IP in AVED's block design, every
                            m_axi port on the NoC port of its memory (HBM pseudo-channel or DDR window),
                            s_axi_control in the PCIe window, clock and reset from AVED's clk_usr_0
    vivado/build.tcl        ``vivado -mode batch -source vivado/build.tcl -tclargs <kernel>``: AVED's
                            create_design.tcl, the kernel added, AVED's build_design.tcl (synthesis,
                            implementation, device image)
    vivado/address_map.txt  buffer -> absolute device address, kernel -> control register base (the host's
                            view; AVED has no XRT, so no host program is generated)
    Makefile                csim / hls / pdi / clean
    README.md               configuration, memory plan, what is assumed and not checked, sources

Where each figure comes from is the ``memory_map`` section of ``boards/v80.yaml`` (cited there).
Nothing here runs Vivado; ``noc_connections`` and ``buffer_addresses`` are the checks without it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import yaml

from ..cost.board import Board
from .host import kernel_roles
from .spec import Kernel, ProjectSpec
from .vitis_files import FUSED_FP_OPS, _includes, _mb, _num, _period_ns, _table, _tcl_word, validate_spec

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates" / "v80"
ALIGN = 4096                    # buffers inside one memory start on 4 KB boundaries

SOURCES = [
    ("AVED V80 25.1 hardware design (part, block design, HBM / DDR NoC, clk_usr_0)",
     "https://github.com/Xilinx/AVED/tree/main/hw/amd_v80_gen5x8_25.1/src"),
    ("AVED xbtest customization: how user IP attaches to HBM_NMU ports, the DIMM and the PCIe window",
     "https://github.com/Xilinx/AVED/blob/main/hw/amd_v80_gen5x8_23.2_exdes_1/bd/customize_bd_xbtest.tcl"),
    ("AVED V80 NoC configuration (HBM_NMU, HNoC of SLR2 to the HBM)",
     "https://xilinx.github.io/AVED/amd_v80_gen5x8_24.1_20241002/AVED+V80+-+NoC+Configuration.html"),
    ("UG1399 Vitis HLS, Target Flow Overview (Vivado IP flow for HLS blocks in Vivado designs)",
     "https://docs.amd.com/r/en-US/ug1399-vitis-hls/Target-Flow-Overview"),
    ("UG1387 Versal methodology, Interfacing HLS Kernels to the NoC",
     "https://docs.amd.com/r/en-US/ug1387-acap-hardware-ip-platform-dev-methodology/Interfacing-HLS-Kernels-to-the-NoC"),
    ("PG313 Versal NoC, Integrated HBM Controller and Address Ranges",
     "https://docs.amd.com/r/en-US/pg313-network-on-chip/Integrated-HBM-Controller-and-Address-Ranges"),
]


class BoardMapError(ValueError):
    pass


def parse_memory(memory: str) -> Tuple[str, int]:
    """``"HBM[3]"`` -> ``("HBM", 3)``; the board's limits are checked by the callers."""
    m = re.match(r"^(HBM|DDR)\[(0|[1-9][0-9]*)\]$", memory or "")
    if not m:
        raise BoardMapError(f"memory {memory!r} is not of the form HBM[n] or DDR[n]")
    return m.group(1), int(m.group(2))


# ---------------------------------------------------------------------------------------------------
# the board's memory map

@dataclass(frozen=True)
class MemoryMap:
    hbm_noc: str
    hbm_base: int
    pc_bytes: int
    ports_per_pc: int
    hbm_nmu_ports: int
    hbm_channels: int
    ddr_noc: str
    ddr_base: int
    ddr_segment_bytes: int
    ddr_window_bytes: int
    ddr_windows: int
    ddr_mc_ports: Tuple[str, ...]
    control_aperture: int
    control_aperture_bytes: int
    kernel_base: int
    kernel_range: int
    clock_pin: str
    reset_pin: str
    interconnect_reset_pin: str
    clock_wizard: str
    clock_mhz: float

    def resources(self) -> List[str]:
        """Every memory resource of the board as the project names them."""
        return [f"HBM[{i}]" for i in range(self.hbm_channels)] + [f"DDR[{i}]" for i in range(self.ddr_windows)]


def memory_map(board: Board) -> MemoryMap:
    """The ``memory_map`` section of the board file; BoardMapError naming the file and key when missing."""
    path = Path(board.source_file)
    try:
        d = yaml.safe_load(path.read_text())["memory_map"]
        h, r, c, k = d["hbm"], d["ddr"], d["control"], d["clock"]
        return MemoryMap(
            hbm_noc=str(h["noc_cell"]), hbm_base=int(h["base_address"]), pc_bytes=int(h["pseudo_channel_bytes"]),
            ports_per_pc=int(h["ports_per_pseudo_channel"]), hbm_nmu_ports=int(h["hbm_nmu_ports"]),
            hbm_channels=board.hbm_channels, ddr_noc=str(r["noc_cell"]), ddr_base=int(r["base_address"]),
            ddr_segment_bytes=int(r["segment_bytes"]), ddr_window_bytes=int(r["window_bytes"]),
            ddr_windows=int(r["windows"]), ddr_mc_ports=tuple(str(p) for p in r["mc_ports"]),
            control_aperture=int(c["aperture"]), control_aperture_bytes=int(c["aperture_bytes"]),
            kernel_base=int(c["kernel_base"]), kernel_range=int(c["kernel_range"]), clock_pin=str(k["pin"]),
            reset_pin=str(k["reset"]), interconnect_reset_pin=str(k["interconnect_reset"]),
            clock_wizard=str(k["wizard"]), clock_mhz=float(k["mhz"]))
    except (KeyError, TypeError, OSError) as e:
        raise BoardMapError(f"board file {path}: memory_map is missing or malformed ({e!r}); it is needed to "
                            f"generate an AVED project for {board.name}") from None


# ---------------------------------------------------------------------------------------------------
# connections and addresses

@dataclass(frozen=True)
class NocConnection:
    """One m_axi port of a kernel on the NoC: the slave interface of ``noc`` it connects to (``intf``), the
    NoC connection (``target``: an HBM port ``HBM<mc>_PORT<p>`` or a DDR controller port ``MC_<n>``), the
    address segment it may reach (``segment``, ``offset``, ``range``)."""
    port: str
    bundle: str
    memory: str
    noc: str
    intf: str
    kind: str           # "hbm_nmu" (HBMxx_AXI) or "nmu" (Sxx_AXI: a PL NoC master unit)
    target: str
    segment: str
    offset: int
    range: int


def _hbm_index(memory: str, mm: MemoryMap) -> int:
    kind, i = parse_memory(memory)
    if kind != "HBM" or i >= mm.hbm_channels:
        raise BoardMapError(f"memory {memory!r} is not an HBM pseudo-channel of the board (HBM[0..{mm.hbm_channels - 1}])")
    return i


def noc_connections(kernel: Kernel, mm: MemoryMap) -> List[NocConnection]:
    """The NoC connection of every m_axi port of ``kernel``. HBM[n] is pseudo-channel n % 2 of HBM controller
    n // 2, reached through HBM<mc>_PORT<2 (n % 2) + j>; the ports of one pseudo-channel take its NoC ports in
    turn. The first ``hbm_nmu_ports`` HBM ports use the HBM_NMU slaves (HBMxx_AXI), further ones PL NoC master
    units (a new Sxx_AXI of the NoC each) with the same connection. DDR[i] goes to the DIMM's controller
    through a PL NoC master unit on MC_2 / MC_3 in turn. BoardMapError naming the port for any memory that is
    not a resource of the board."""
    out: List[NocConnection] = []
    used_on_pc: Dict[int, int] = {}
    hbm_nmu, nmu_ddr = 0, 0
    for p in kernel.ports:
        if p.kind != "m_axi":
            continue
        try:
            kind, idx = parse_memory(p.memory)
        except BoardMapError as e:
            raise BoardMapError(f"kernel {kernel.name}, port {p.name}: {e}") from None
        if kind == "HBM":
            if idx >= mm.hbm_channels:
                raise BoardMapError(f"kernel {kernel.name}, port {p.name}: {p.memory} is not a pseudo-channel of "
                                    f"the board (HBM[0..{mm.hbm_channels - 1}])")
            mc, pc = divmod(idx, 2)
            j = used_on_pc.get(idx, 0)
            used_on_pc[idx] = j + 1
            target = f"HBM{mc}_PORT{2 * pc + j % mm.ports_per_pc}"
            if hbm_nmu < mm.hbm_nmu_ports:
                intf, how = f"HBM{hbm_nmu:02d}_AXI", "hbm_nmu"
                hbm_nmu += 1
            else:                # a PL NoC master unit: its S<xx>_AXI index is the NoC's NUM_SI at build time
                intf, how = "", "nmu"
            out.append(NocConnection(p.name, p.bundle, p.memory, mm.hbm_noc, intf, how, target,
                                     f"HBM{mc}_PC{pc}", mm.hbm_base + idx * mm.pc_bytes, mm.pc_bytes))
        else:
            if idx >= mm.ddr_windows:
                raise BoardMapError(f"kernel {kernel.name}, port {p.name}: {p.memory} is not a DDR window of the "
                                    f"board (DDR[0..{mm.ddr_windows - 1}])")
            out.append(NocConnection(p.name, p.bundle, p.memory, mm.ddr_noc, "", "nmu",
                                     mm.ddr_mc_ports[nmu_ddr % len(mm.ddr_mc_ports)], "DDR_CH2", mm.ddr_base,
                                     mm.ddr_segment_bytes))
            nmu_ddr += 1
    return out


def buffer_addresses(spec: ProjectSpec, mm: MemoryMap) -> Dict[str, Tuple[int, int]]:
    """``{buffer: (absolute device address, bytes)}``: buffers packed in plan order inside their memory
    (pseudo-channel or DDR window), 4 KB aligned; BoardMapError when a memory overflows."""
    cursor: Dict[str, int] = {}
    out: Dict[str, Tuple[int, int]] = {}
    for b in spec.buffers:
        kind, idx = parse_memory(b.memory)
        if kind == "HBM":
            _hbm_index(b.memory, mm)
            base, size = mm.hbm_base + idx * mm.pc_bytes, mm.pc_bytes
        else:
            if idx >= mm.ddr_windows:
                raise BoardMapError(f"buffer {b.name}: {b.memory} is not a DDR window of the board")
            base, size = mm.ddr_base + idx * mm.ddr_window_bytes, mm.ddr_window_bytes
        at = cursor.get(b.memory, 0)
        if at + b.bytes > size:
            raise BoardMapError(f"buffer {b.name} ({_mb(b.bytes)}) does not fit in {b.memory} ({_mb(size)}, "
                                f"{_mb(at)} already used)")
        out[b.name] = (base + at, int(b.bytes))
        cursor[b.memory] = at + -(-int(b.bytes) // ALIGN) * ALIGN
    return out


# ---------------------------------------------------------------------------------------------------
# templates

def _fill(template: str, **values: str) -> str:
    """``@NAME@`` placeholders of a template file (Tcl and make use ``$``); every one must be given."""
    text = (TEMPLATE_DIR / template).read_text()
    for k, v in values.items():
        text = text.replace(f"@{k}@", v)
    if "@" in text.replace("@@", ""):
        left = sorted(set(re.findall(r"@([A-Z_]+)@", text)))
        if left:
            raise KeyError(f"template {template}: placeholders not filled: {left}")
    return text


def _hex(x: int) -> str:
    return f"0x{x:012X}"


def _vlnv(kernel: Kernel) -> str:
    return f"flexllm.org:hls:{kernel.name}:1.0"


# ---------------------------------------------------------------------------------------------------
# hls/<kernel>.tcl (Vivado IP flow)

def hls_ip_tcl(spec: ProjectSpec, kernel: Kernel) -> str:
    others = [k for k in spec.kernels if k is not kernel]
    return _fill("hls_ip.tcl", KERNEL=kernel.name, PROJECT=spec.name, PART=spec.part,
                 SOURCE=_tcl_word(kernel.source), PERIOD=_period_ns(kernel.clock_mhz),
                 INCLUDES=" ".join(f"-I$ROOT/{d}" for d in kernel.includes),
                 TB_OTHERS="\n".join(f"    add_files -tb -cflags $CFLAGS {_tcl_word(k.source)}" for k in others),
                 CONFIG_OPS="\n".join(f"config_op {op} -impl none" for op in FUSED_FP_OPS),
                 VLNV=_vlnv(kernel))


# ---------------------------------------------------------------------------------------------------
# vivado/flexllm_bd.tcl

def bd_tcl(spec: ProjectSpec, mm: MemoryMap) -> str:
    procs = []
    for i, k in enumerate(spec.kernels):
        conns = noc_connections(k, mm)
        cell = f"{k.name}_1"
        L = [f"# {k.name}: {sum(1 for c in conns if c.memory.startswith('HBM'))} HBM and "
             f"{sum(1 for c in conns if c.memory.startswith('DDR'))} DDR m_axi ports",
             f"proc flexllm_add_{k.name} {{}} {{",
             f"    set cell [create_bd_cell -type ip -vlnv {_vlnv(k)} {cell}]",
             f"    connect_bd_net [get_bd_pins {mm.clock_pin}] [get_bd_pins {cell}/ap_clk]",
             f"    connect_bd_net [get_bd_pins {mm.reset_pin}] [get_bd_pins {cell}/ap_rst_n]",
             "    # the kernel clock: AVED's user clock 0 (usr_clk_wiz output 0), also clocking the NoC ports",
             f"    flexllm_set_user_clock {_num(k.clock_mhz)}",
             f"    flexllm_noc_clock {mm.hbm_noc}",
             f"    flexllm_noc_clock {mm.ddr_noc}",
             "    # control registers: a SmartConnect behind a new NoC master in the PCIe window",
             f"    flexllm_connect_control {cell} {_hex(mm.kernel_base + i * mm.kernel_range)} {_hex(mm.kernel_range)}",
             "    # every m_axi port on the NoC port of its memory (port memory NoC-interface connection segment)"]
        for c in conns:
            intf = f"m_axi_{c.bundle}"
            if c.noc == mm.hbm_noc and c.kind == "hbm_nmu":
                L.append(f"    flexllm_connect_hbm_nmu {cell}/{intf} {c.intf} {c.target} {c.segment} "
                         f"{_hex(c.offset)} {_hex(c.range)}   ;# {c.port} -> {c.memory}")
            elif c.noc == mm.hbm_noc:
                L.append(f"    flexllm_connect_nmu {mm.hbm_noc} {cell}/{intf} {c.target} {c.segment} "
                         f"{_hex(c.offset)} {_hex(c.range)}   ;# {c.port} -> {c.memory}")
            else:
                L.append(f"    flexllm_connect_nmu {mm.ddr_noc} {cell}/{intf} {c.target} C?_DDR_CH2 "
                         f"{_hex(c.offset)} {_hex(c.range)}   ;# {c.port} -> {c.memory}")
        L += ["    validate_bd_design", "    save_bd_design", "}", ""]
        procs.append("\n".join(L))
    return _fill("flexllm_bd.tcl", PROJECT=spec.name, HBM_NOC=mm.hbm_noc, CLOCK_PIN=mm.clock_pin,
                 IC_RESET_PIN=mm.interconnect_reset_pin, WIZARD=mm.clock_wizard,
                 APERTURE=_hex(mm.control_aperture), APERTURE_BYTES=_hex(mm.control_aperture_bytes),
                 KERNEL_PROCS="\n".join(procs))


def build_tcl(spec: ProjectSpec) -> str:
    return _fill("build.tcl", PROJECT=spec.name, KERNELS=" ".join(k.name for k in spec.kernels),
                 IP_REPOS=" ".join(f"hls/{k.name}_prj/sol/impl/ip" for k in spec.kernels))


# ---------------------------------------------------------------------------------------------------
# vivado/address_map.txt

def address_map(spec: ProjectSpec, mm: MemoryMap) -> str:
    addrs = buffer_addresses(spec, mm)
    L = [f"# {spec.name}: device addresses of the buffers and kernel registers on the V80 (AVED); generated by",
         "# flexllm from boards/v80.yaml memory_map. buffer <name> <memory> <address> <bytes> <file>;",
         "# kernel <name> <s_axi_control base> <range>; the kernels' pointer arguments take these addresses."]
    for b in spec.buffers:
        a, n = addrs[b.name]
        L.append(f"buffer {b.name} {b.memory} {_hex(a)} {n} {b.file or '-'}")
    for i, k in enumerate(spec.kernels):
        L.append(f"kernel {k.name} {_hex(mm.kernel_base + i * mm.kernel_range)} {_hex(mm.kernel_range)}")
    return "\n".join(L) + "\n"


# ---------------------------------------------------------------------------------------------------
# Makefile

def makefile(spec: ProjectSpec) -> str:
    ks = spec.kernels
    ap_types = spec.model.get("ap_types") or "$(if $(XILINX_HLS),$(XILINX_HLS)/include,csim/ap_types)"
    ip_rules = "\n".join(
        f"$(BUILD)/ip/{k.name}.done: hls/{k.name}.tcl {k.source} $(HEADERS)\n"
        f"\tFLEXLLM_HLS_STEPS=\"synth export\" $(VITIS_HLS) -f hls/{k.name}.tcl\n"
        f"\tmkdir -p $(dir $@) && touch $@\n" for k in ks)
    pdi_rules = "\n".join(
        f"$(BUILD)/vivado/{k.name}/done: $(BUILD)/ip/{k.name}.done vivado/build.tcl vivado/flexllm_bd.tcl\n"
        f"\t@test -n \"$(AVED_DIR)\" || {{ echo \"make pdi needs AVED_DIR=<AVED checkout>/hw/amd_v80_gen5x8_25.1\"; exit 2; }}\n"
        f"\tmkdir -p $(dir $@)\n"
        f"\tcd $(dir $@) && $(VIVADO) -mode batch -source $(CURDIR)/vivado/build.tcl -tclargs {k.name} $(AVED_DIR)\n"
        f"\ttouch $@\n" for k in ks)
    return _fill("Makefile", PROJECT=spec.name, PART=spec.part, PLATFORM=spec.platform, AP_TYPES=ap_types,
                 KERNELS=" ".join(k.name for k in ks), KERNEL_SRCS=" ".join(k.source for k in ks),
                 HEADERS=" ".join(f"{d}/*.h" for d in _includes(spec)),
                 INCLUDES=" ".join(f"-I{d}" for d in _includes(spec)),
                 IP_DONE=" ".join(f"$(BUILD)/ip/{k.name}.done" for k in ks),
                 PDI_DONE=" ".join(f"$(BUILD)/vivado/{k.name}/done" for k in ks),
                 IP_RULES=ip_rules, PDI_RULES=pdi_rules,
                 CLEAN=" ".join(f"hls/{k.name}_prj" for k in ks))


# ---------------------------------------------------------------------------------------------------
# README.md

def readme(spec: ProjectSpec, board: Board, mm: MemoryMap) -> str:
    roles = kernel_roles(spec)
    addrs = buffer_addresses(spec, mm)
    mhz = spec.kernels[0].clock_mhz
    L = [f"# {spec.name}: FlexLLM accelerator for the AMD Alveo V80 (AVED flow)", "",
         "Generated by `flexllm build` (do not edit; regenerate instead). Kernels "
         f"{', '.join('`' + k.name + '`' for k in spec.kernels)} (the same C++ as for the U280), part "
         f"`{spec.part}`, AVED base design `{spec.platform}`, kernel clock {_num(mhz)} MHz.", "",
         "**Nothing in this directory except `make csim` was run by flexllm**: no Vitis HLS, Vivado or V80 was "
         "available where it was generated. The files follow AMD's documented AVED flow as far as it is "
         "documented; what is assumed is listed below.", "",
         "## Flow", "",
         "AMD documents no Vitis platform (.xpfm) for the V80, so there is no `v++ --link`: each kernel is "
         "synthesized by Vitis HLS in the Vivado IP flow (`open_solution -flow_target vivado`, "
         "`export_design -format ip_catalog`), added to AVED's block design and connected through the NoC, and "
         "the AVED scripts build the device image. Prefill and decode are separate designs (as the U280's "
         "separate xclbins): each kernel is sized to the whole device.", "",
         "```sh",
         "make csim                          # g++ C simulation (no AMD tools needed)",
         "make hls                           # vitis_hls -f hls/<kernel>.tcl -> hls/<kernel>_prj/sol/impl/ip",
         "make pdi AVED_DIR=<AVED>/hw/amd_v80_gen5x8_25.1   # Vivado: AVED base + kernel, synthesis, implementation",
         "```", "",
         "`vivado/build.tcl <kernel> <AVED hw dir>` sources AVED's `src/create_design.tcl` (project and base "
         "block design), adds the kernel with `vivado/flexllm_bd.tcl`, then AVED's `src/build_design.tcl` "
         "(synthesis, implementation, `write_device_image`). The AVED deployment steps (FPT image, `ami_tool`) "
         "are AVED's own.", "",
         "## Memory connectivity", "",
         f"HBM[n] is pseudo-channel n % 2 of HBM controller n // 2 of `{mm.hbm_noc}` (1 GB each from "
         f"{_hex(mm.hbm_base)}), reached through NoC port HBM<n//2>_PORT<2(n%2)+j>; the first {mm.hbm_nmu_ports} HBM "
         f"m_axi ports of a kernel use the HBM_NMU slaves (HBMxx_AXI), further ones PL NoC master units. "
         f"DDR[0] and DDR[1] are the two 16 GB halves of the 32 GB DDR4 DIMM (`{mm.ddr_noc}`, from "
         f"{_hex(mm.ddr_base)}), reached on controller ports {', '.join(mm.ddr_mc_ports)}. The project's memory "
         "plan is the U280's (256 MB per channel), which fits the V80's 1 GB pseudo-channels.", ""]
    for k in spec.kernels:
        role = "prefill" if k is roles["prefill"] else "decode"
        L += [f"### `{k.name}` ({role})", ""]
        L += _table(["port", "bundle (IP interface m_axi_<bundle>)", "memory", "NoC slave", "connection",
                     "address segment"],
                    [[c.port, c.bundle, c.memory, f"{c.noc}/{c.intf}" if c.intf else f"{c.noc}/S<next>_AXI",
                      c.target, f"{c.segment} {_hex(c.offset)} +{_mb(c.range)}"] for c in noc_connections(k, mm)])
        L.append("")
    L += ["## Device buffers", "", "Addresses as in `vivado/address_map.txt` (the kernels' pointer arguments).", ""]
    L += _table(["buffer", "memory", "address", "bytes", "size", "initialised from"],
                [[b.name, b.memory, _hex(addrs[b.name][0]), b.bytes, _mb(b.bytes), b.file or "zeros / outputs"]
                 for b in spec.buffers])
    L += ["", "## Estimates", ""]
    if "kernels" in spec.estimates:
        from ..cost.report import markdown
        L += markdown(spec.estimates)
    L += ["", "## Host", "",
          "AVED has no XRT: `host/host.cpp` of the U280 project does not apply and no V80 host program is "
          "generated. A host must write the buffers of `vivado/address_map.txt` into HBM / DDR (over PCIe: AVED's "
          "AMI driver and the CPM's DMA), write the pointer and scalar arguments into each kernel's s_axi_control "
          "registers (Vitis HLS register map: `hls/<kernel>_prj/sol/impl/ip/drivers/*/src/x*_hw.h`), start it "
          "with ap_start and poll ap_done; between prefill and decode it programs the other device image and "
          "keeps the KV-cache buffers (they stay in HBM only if the HBM is not re-initialised by the load).", "",
          "## Assumed, not checked here", ""]
    L += [f"- {u}" for u in board.unverified]
    L += ["- the HLS IP's interface names (`m_axi_<bundle>`, `s_axi_control`, `ap_clk`, `ap_rst_n`) are "
          "Vitis HLS's Vivado IP flow defaults",
          "- timing closure at the kernel clock and the NoC's bandwidth per connection (the NoC compiler runs "
          "in Vivado)", "",
          "## Sources", ""]
    L += [f"- {what}: <{url}>" for what, url in SOURCES]
    L.append("")
    return "\n".join(L)


# ---------------------------------------------------------------------------------------------------

def v80_files(spec: ProjectSpec, board: Board) -> Dict[str, str]:
    """All generated AVED build files, ``{relative path: text}`` in writing order."""
    validate_spec(spec)
    mm = memory_map(board)
    for k in spec.kernels:
        noc_connections(k, mm)           # every port on a resource of the board, before writing anything
    buffer_addresses(spec, mm)
    files: Dict[str, str] = {}
    for k in spec.kernels:
        files[f"hls/{k.name}.tcl"] = hls_ip_tcl(spec, k)
    files["vivado/flexllm_bd.tcl"] = bd_tcl(spec, mm)
    files["vivado/build.tcl"] = build_tcl(spec)
    files["vivado/address_map.txt"] = address_map(spec, mm)
    files["Makefile"] = makefile(spec)
    files["README.md"] = readme(spec, board, mm)
    return files


def write_v80_files(spec: ProjectSpec, root: Path, board: Board) -> List[str]:
    root = Path(root)
    written = []
    for rel, text in v80_files(spec, board).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        written.append(rel)
    return written


__all__ = ["MemoryMap", "NocConnection", "BoardMapError", "memory_map", "noc_connections", "buffer_addresses",
           "v80_files", "write_v80_files", "SOURCES"]
