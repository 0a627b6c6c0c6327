"""The V80 project (Board: v80, AVED flow; flexllm_plugin/project/v80_files.py), checked without Vitis or
Vivado: the same model and config built for the U280 and the V80 give byte-identical kernels, test bench and
weights; the V80 files name the V80 part and AVED base design; every m_axi port of each kernel (read from
the kernel source's pragmas) is connected to exactly one NoC port of the memory the project's plan gives it,
and that NoC port and address segment exist on the board (recomputed here from boards/v80.yaml); the HLS
script and the block-design script run under tclsh with stub AMD commands; the buffers' addresses stay inside
their memories without overlapping; the generated Makefile's C simulation runs."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from flexllm_plugin.config import ConfigError, load_config, parse_config
from flexllm_plugin.cost.board import BOARDS
from flexllm_plugin.project.spec import Kernel, Port
from flexllm_plugin.project.v80_files import BoardMapError, memory_map, noc_connections
from flexllm_plugin.project.vitis_files import parse_interface_pragmas
from flexllm_plugin.resources import config_path

HERE = Path(__file__).resolve().parent
V80 = BOARDS["v80"]
BOARD_YAML = yaml.safe_load(Path(V80.source_file).read_text())

pytestmark = pytest.mark.skipif(shutil.which("tclsh") is None or shutil.which("make") is None
                                or shutil.which("g++") is None, reason="needs tclsh, make and g++")


def _tiny_cfg(tmp_path: Path, board: str):
    data = yaml.safe_load(config_path("tiny.yaml").read_text())
    data["Board"] = board
    data["Part"] = BOARDS[board].part
    path = tmp_path / f"tiny_{board}.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path)


@pytest.fixture(scope="module")
def projects(tmp_path_factory):
    from flexllm_plugin.project.builder import build_project
    tmp = tmp_path_factory.mktemp("v80")
    out = {}
    for board in ("u280", "v80"):
        out[board] = Path(build_project(_tiny_cfg(tmp, board), tmp / board)["output_dir"])
    return out


def _digest(root: Path, sub: str):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((root / sub).rglob("*")) if p.is_file()}


def _spec(root: Path):
    import json
    return json.loads((root / "flexllm_build.json").read_text())["project"]


def test_kernels_are_board_independent_and_each_board_gets_its_own_build_files(projects):
    u, v = projects["u280"], projects["v80"]
    for sub in ("firmware", "weights", "csim", "tokenizer"):
        assert _digest(u, sub) == _digest(v, sub), sub
    assert (u / "vitis").is_dir() and (u / "host" / "host.cpp").is_file() and not (u / "vivado").exists()
    assert (v / "vivado" / "flexllm_bd.tcl").is_file() and not (v / "vitis").exists() and not (v / "host").exists()
    assert "platform=xilinx_u280_gen3x16_xdma_1_202211_1" in (u / "vitis" / "link_tiny_decode.cfg").read_text()
    spec = _spec(v)
    assert spec["part"] == "xcv80-lsva4737-2MHP-e-S" == BOARD_YAML["part"]
    assert spec["platform"] == BOARD_YAML["platform"]
    readme = (v / "README.md").read_text()
    assert "Assumed, not checked here" in readme and "https://github.com/Xilinx/AVED" in readme
    for k in spec["kernels"]:
        tcl = (v / "hls" / f"{k['name']}.tcl").read_text()
        assert "set_part {xcv80-lsva4737-2MHP-e-S}" in tcl and "-flow_target vivado" in tcl
        assert "export_design -format ip_catalog" in tcl


def _expected_target(memory: str):
    """(NoC instance, allowed connections, segment, offset, range) of a memory, from the board file."""
    mm = BOARD_YAML["memory_map"]
    kind, idx = re.match(r"^(HBM|DDR)\[(\d+)\]$", memory).groups()
    idx = int(idx)
    if kind == "HBM":
        h = mm["hbm"]
        assert idx < BOARD_YAML["hbm"]["channels"]
        mc, pc = divmod(idx, 2)
        ports = {f"HBM{mc}_PORT{2 * pc + j}" for j in range(h["ports_per_pseudo_channel"])}
        return h["noc_cell"], ports, f"HBM{mc}_PC{pc}", h["base_address"] + idx * h["pseudo_channel_bytes"], \
            h["pseudo_channel_bytes"]
    d = mm["ddr"]
    assert idx < d["windows"]
    return d["noc_cell"], set(d["mc_ports"]), "C?_DDR_CH2", d["base_address"], d["segment_bytes"]


def test_every_m_axi_port_is_connected_to_its_memory_on_the_board(projects):
    root = projects["v80"]
    spec = _spec(root)
    bd = (root / "vivado" / "flexllm_bd.tcl").read_text()
    procs = dict(re.findall(r"proc flexllm_add_(\w+) \{\} \{\n(.*?)\n\}", bd, re.S))
    assert set(procs) == {k["name"] for k in spec["kernels"]}
    for k in spec["kernels"]:
        pragmas = parse_interface_pragmas((root / k["source"]).read_text())
        m_axi = {opts["bundle"]: port for port, opts in pragmas.items() if opts["mode"] == "m_axi"}
        memory = {p["name"]: p["memory"] for p in k["ports"] if p["kind"] == "m_axi"}
        assert set(m_axi.values()) == set(memory)
        seen, hbm_intfs = [], []
        for line in procs[k["name"]].splitlines():
            words = line.split(";#")[0].split()
            if not words or not words[0].startswith("flexllm_connect_") or words[0] == "flexllm_connect_control":
                continue
            if words[0] == "flexllm_connect_hbm_nmu":
                pin, intf, target, segment, offset, rng = words[1:7]
                noc = BOARD_YAML["memory_map"]["hbm"]["noc_cell"]
                hbm_intfs.append(intf)
            else:
                assert words[0] == "flexllm_connect_nmu"
                noc, pin, target, segment, offset, rng = words[1:7]
            cell, intf_pin = pin.split("/")
            assert cell == f"{k['name']}_1" and intf_pin.startswith("m_axi_")
            port = m_axi[intf_pin[len("m_axi_"):]]
            want_noc, targets, want_seg, want_off, want_rng = _expected_target(memory[port])
            assert (noc, segment, int(offset, 16), int(rng, 16)) == (want_noc, want_seg, want_off, want_rng), port
            assert target in targets, (port, target)
            seen.append(port)
        assert sorted(seen) == sorted(memory), "every m_axi port exactly once"
        assert hbm_intfs == [f"HBM{i:02d}_AXI" for i in range(len(hbm_intfs))]
        assert len(hbm_intfs) <= BOARD_YAML["memory_map"]["hbm"]["hbm_nmu_ports"]


def test_buffer_addresses_stay_inside_their_memory(projects):
    root = projects["v80"]
    spec = _spec(root)
    sizes = {b["name"]: (b["memory"], b["bytes"]) for b in spec["buffers"]}
    mm = BOARD_YAML["memory_map"]
    spans = []
    for line in (root / "vivado" / "address_map.txt").read_text().splitlines():
        if not line.startswith("buffer "):
            continue
        _, name, memory, addr, nbytes, _file = line.split()
        assert (memory, int(nbytes)) == sizes.pop(name)
        kind, idx = re.match(r"^(HBM|DDR)\[(\d+)\]$", memory).groups()
        if kind == "HBM":
            lo = mm["hbm"]["base_address"] + int(idx) * mm["hbm"]["pseudo_channel_bytes"]
            hi = lo + mm["hbm"]["pseudo_channel_bytes"]
        else:
            lo = mm["ddr"]["base_address"] + int(idx) * mm["ddr"]["window_bytes"]
            hi = lo + mm["ddr"]["window_bytes"]
        a = int(addr, 16)
        assert lo <= a and a + int(nbytes) <= hi and a % 4096 == 0, name
        spans.append((a, a + int(nbytes), name))
    assert not sizes, f"buffers missing from the address map: {sorted(sizes)}"
    spans.sort()
    for (a0, a1, n0), (b0, _, n1) in zip(spans, spans[1:]):
        assert a1 <= b0, f"{n0} overlaps {n1}"


def test_hls_script_runs_under_tclsh(projects, tmp_path):
    from test_project_files import _calls, run_tcl
    root = projects["v80"]
    for k in _spec(root)["kernels"]:
        r = run_tcl(tmp_path, root / "hls" / f"{k['name']}.tcl", steps="csim synth export")
        assert r.returncode == 0, r.stderr
        calls = {c[0]: c[1:] for c in _calls(r.stdout)}
        assert calls["set_part"] == ["xcv80-lsva4737-2MHP-e-S"]
        assert calls["open_solution"] == ["-flow_target", "vivado", "sol"]
        assert calls["export_design"][:2] == ["-format", "ip_catalog"]


# Stub Vivado block-design commands: objects are names, properties a dict; connections and addresses are
# recorded. Enough to run the generated procs against the part of AVED's design they touch.
BD_STUBS = r'''
array set ::prop {}
set ::log {}
proc _key {p o} { return "$p|$o" }
proc get_bd_cells {args} { return [lindex $args end] }
proc get_bd_pins {args} { return [lindex $args end] }
proc get_bd_intf_pins {args} { return [lindex $args end] }
proc get_bd_addr_spaces {args} { return [lindex $args end] }
proc get_bd_addr_segs {args} { return [lindex $args end] }
proc get_property {p o} {
    if {![info exists ::prop([_key $p $o])]} { error "get_property: $p of $o not set" }
    return $::prop([_key $p $o])
}
proc set_property {args} {
    if {[lindex $args 0] eq "-dict"} {
        foreach {p v} [lindex $args 1] { set ::prop([_key $p [lindex $args 2]]) $v }
    } else { set ::prop([_key [lindex $args 0] [lindex $args 2]]) [lindex $args 1] }
}
proc create_bd_cell {args} { lappend ::log [list cell [lindex $args end]]; return [lindex $args end] }
proc connect_bd_net {a b} { lappend ::log [list net $a $b] }
proc connect_bd_intf_net {a b} { lappend ::log [list intf $a $b] }
proc assign_bd_address {args} { lappend ::log [list addr {*}$args] }
proc validate_bd_design {} {}
proc save_bd_design {} {}
proc unknown {args} { puts stderr "unknown command: [lindex $args 0]"; exit 3 }
# the properties of AVED 25.1's design the procs read
set ::prop([_key CONFIG.CLKOUT_REQUESTED_OUT_FREQUENCY /clock_reset/usr_clk_wiz]) {300,500}
set ::prop([_key CONFIG.NUM_CLKS /axi_noc_cips]) 5
set ::prop([_key CONFIG.NUM_CLKS /axi_noc_mc_ddr4_1]) 1
set ::prop([_key CONFIG.NUM_HBM_BLI /axi_noc_cips]) 0
set ::prop([_key CONFIG.NUM_MI /axi_noc_cips]) 1
set ::prop([_key CONFIG.NUM_SI /axi_noc_mc_ddr4_1]) 0
set ::prop([_key CONFIG.NUM_SI /axi_noc_cips]) 4
set ::prop([_key CONFIG.CONNECTIONS /axi_noc_cips/S00_AXI]) {M00_AXI {read_bw {5}}}
set ::prop([_key CONFIG.CONNECTIONS /axi_noc_cips/S01_AXI]) {M00_AXI {read_bw {5}}}
source [lindex $argv 0]
[lindex $argv 1]
foreach e $::log { puts [join $e "\t"] }
puts "NUM_HBM_BLI\t$::prop([_key CONFIG.NUM_HBM_BLI /axi_noc_cips])"
'''


def test_block_design_script_runs_under_tclsh(projects, tmp_path):
    root = projects["v80"]
    driver = tmp_path / "bd_driver.tcl"
    driver.write_text(BD_STUBS)
    for k in _spec(root)["kernels"]:
        r = subprocess.run(["tclsh", str(driver), str(root / "vivado" / "flexllm_bd.tcl"), f"flexllm_add_{k['name']}"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        lines = [ln.split("\t") for ln in r.stdout.splitlines()]
        n_hbm = sum(1 for p in k["ports"] if p["kind"] == "m_axi" and p["memory"].startswith("HBM"))
        assert ["NUM_HBM_BLI", str(n_hbm)] in lines
        intf = [ln for ln in lines if ln[0] == "intf"]
        m_axi = [p for p in k["ports"] if p["kind"] == "m_axi"]
        assert sorted(ln[1] for ln in intf if "/m_axi_" in ln[1]) == sorted(f"{k['name']}_1/m_axi_{p['bundle']}"
                                                                            for p in m_axi)
        assert [k["name"] + "_1/s_axi_control"] == [ln[2] for ln in intf if ln[2].endswith("s_axi_control")]
        assert ["net", "/clock_reset/clk_usr_0", f"{k['name']}_1/ap_clk"] in lines


def test_make_csim_of_the_v80_project(projects):
    r = subprocess.run(["make", "-s", "csim"], cwd=projects["v80"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert '"new_tokens"' in r.stdout


def test_a_port_on_a_memory_the_board_lacks_is_refused_by_name():
    mm = memory_map(V80)
    k = Kernel("k", "k.cpp", [Port("w0", "m_axi", "ap_uint<512>", bundle="gmem_w0", memory="HBM[32]", buffer="b")],
               300.0)
    with pytest.raises(BoardMapError, match="port w0: HBM\\[32\\]"):
        noc_connections(k, mm)
    k.ports[0].memory = "DDR[2]"
    with pytest.raises(BoardMapError, match="port w0: DDR\\[2\\]"):
        noc_connections(k, mm)


def test_a_board_without_project_generation_is_refused_before_any_work(monkeypatch):
    import dataclasses

    from flexllm_plugin.preflight import preflight
    data = {"Model": {"Source": "preset:tiny"}, "Board": "v80", "Prefill": {"MaxSeqLen": 64, "ChunkTokens": 16},
            "Decode": {"MaxContext": 128, "MaxNewTokens": 32, "BP": 4}}
    cfg = parse_config(data, "t.yaml")
    modeled_only = dataclasses.replace(V80, project_generation=False)
    monkeypatch.setitem(BOARDS._load(), "v80", modeled_only)
    with pytest.raises(ConfigError, match="project_generation: false"):
        preflight(cfg)


def test_ports_beyond_the_hbm_nmu_slaves_use_pl_noc_masters_on_the_same_pseudo_channel():
    mm = memory_map(V80)
    n = mm.hbm_nmu_ports + 6
    k = Kernel("k", "k.cpp", [Port(f"p{i}", "m_axi", "ap_uint<512>", bundle=f"gmem_p{i}", memory=f"HBM[{i % 32}]",
                                   buffer=f"b{i}") for i in range(n)], 300.0)
    conns = noc_connections(k, mm)
    assert [c.kind for c in conns] == ["hbm_nmu"] * mm.hbm_nmu_ports + ["nmu"] * 6
    assert [c.intf for c in conns[:mm.hbm_nmu_ports]] == [f"HBM{i:02d}_AXI" for i in range(mm.hbm_nmu_ports)]
    for i, c in enumerate(conns):
        ch = i % 32
        mc, pc = divmod(ch, 2)
        assert c.target in (f"HBM{mc}_PORT{2 * pc}", f"HBM{mc}_PORT{2 * pc + 1}")
        assert (c.segment, c.offset) == (f"HBM{mc}_PC{pc}", mm.hbm_base + ch * mm.pc_bytes)
