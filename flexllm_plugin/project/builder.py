"""``flexllm build CONFIG``: a U280 Vitis project from one model and one config.

Ordered steps (each a function below):

1. ``build_reference``   the calibrated Brevitas model and its bit-true golden model (all layers);
2. ``convert_stages``    export ONE decoder block per stage (prefill chunk, decode step) as QONNX, fuse it,
                         convert it with the hls4ml FlexLLM backend, supplying the per-layer parameters of
                         all N layers (temporal reuse; the backend proves every layer fits the block and
                         that layer 0 equals the converted block bit for bit);
3. ``plan_buffers``      HBM/DDR buffers: one weight image per weight port (HBM[0..BP-1]), fp32 parameter
                         image(s), KV cache, embedding table (DDR[0]), token/logit I/O (DDR[1]); budgets
                         checked (<= 32 HBM channels, <= 256 MB each);
4. ``write_project``     kernels, headers, weight files + manifest, tokenizer file, C-sim testbench, Vitis
                         HLS tcl, v++ link config, XRT host, Makefile, README -- into a temporary directory
                         renamed onto OutputDir at the end (a failed build leaves nothing half written).

The same inputs give a byte-identical project (no timestamps; deterministic ordering).
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np

from brevitas_models.progress import bar

from ..atomic_dir import atomic_directory
from ..config import ConfigError, FlexLLMConfig
from ..ui import tool_output
from .spec import (DDR_BANK_BYTES, HBM_CHANNEL_BYTES, HBM_CHANNELS, Buffer, Kernel, ProjectSpec,
                   kv_buffer, kv_port_bytes)

BUILD_INFO = "flexllm_build.json"
CONFIG_COPY = "flexllm_config.yaml"
DECODE_EXPORT_PAST = 3          # the decode graph is exported for one past length; any works


def _noop(msg):
    pass


# ---- 1. reference models ---------------------------------------------------------------------------
def build_reference(cfg: FlexLLMConfig, log: Callable = _noop):
    """(weights without their tensors: architecture, tokenizer and source; the calibrated model; its golden
    model)."""
    from brevitas_models.build import build_model, default_cache_dir
    from brevitas_models.golden import GoldenModel

    weights = cfg.load_weights()
    hmt_params = None
    if cfg["HMT"]["Enabled"]:
        from brevitas_models.hmt.backbone import hmt_backbone_weights
        from ..cli import _hmt_params
        hmt_params, _ = _hmt_params(cfg, weights, cfg.hmt_spec(), weights.arch.hidden_size, log)
        weights = hmt_backbone_weights(weights, hmt_params)
    spec = cfg.quant_spec()
    model = build_model(weights, spec, log=log, cache_dir=default_cache_dir())
    model.eval()
    final_norm = weights.state_dict.get("model.norm.weight") if hmt_params is not None else None
    # the calibrated model carries every parameter from here on: release the source's float tensors (a
    # full float32 copy of the model, 4.9 GB for Llama-3.2-1B) before the golden model is extracted
    weights = dataclasses.replace(weights, state_dict={})
    try:
        golden = GoldenModel.from_brevitas(model)
    except ValueError as e:
        raise ConfigError(f"Quantization.Preset {spec.name!r} cannot run on the FlexLLM hardware: {e}") from None
    if hmt_params is not None:
        from brevitas_models.hmt.hardware import hardware_params
        golden.hmt = hardware_params(hmt_params, model, final_norm)
    return weights, model, golden


HMT_MODELED_SEGMENTS = (4, 16, 64)     # long prompts priced in the project README (64: FlexLLM's maximum)
HMT_RECALL_LANES = 16      # fp32 products per cycle of the HMT recall unit (one 512-bit HBM word of W_q / W_k)


def hmt_description(cfg: FlexLLMConfig, golden) -> Optional[Dict]:
    """The HMT sizes of the project (spec.model["hmt"]) and its kernel constants; None without HMT."""
    if not cfg["HMT"]["Enabled"]:
        return None
    h = cfg.hmt_spec()
    hw = golden.hmt
    return {"segment_length": h.segment_length, "block": h.block, "summary_tokens": h.summary,
            "sensory_tokens": h.sensory_tokens, "slots": h.memory_slots, "hidden": golden.hidden_size,
            "recall_projection": hw.projects_recall,
            "recall_residual": hw.recall_residual, "lanes": HMT_RECALL_LANES, "offsets": hw.offsets(),
            "params_file": "weights/hmt_params.bin"}


def check_sizes(cfg: FlexLLMConfig, golden) -> None:
    """The limits between the config and the built model (the config-only ones ran in ``parse_config``,
    the header ones in ``preflight``; this re-checks against the model actually built)."""
    d = cfg["Decode"]
    if d["MaxContext"] > golden.max_positions:
        raise ConfigError(f"Decode.MaxContext {d['MaxContext']} exceeds the model's {golden.max_positions} positions")


# ---- 2. stage conversion ---------------------------------------------------------------------------
def stage_options(cfg: FlexLLMConfig, golden, stage: str) -> Dict:
    p, d = cfg["Prefill"], cfg["Decode"]
    ctx = int(d["MaxContext"])
    opts = {"MaxContext": ctx, "LayerParams": golden.layers, "WeightPorts": int(d["BP"]),
            "RopeTables": (golden.rope_cos[:ctx], golden.rope_sin[:ctx]),
            "HeadLanes": int(d["HP"]), "KeyLanes": int(d["KVParallel"]),
            "QuantLanes": int((p if stage == "prefill" else d)["QuantLanes"])}
    if stage == "prefill" and cfg["HMT"]["Enabled"]:
        opts["VectorRows"] = 2         # HMT: T and P_n as input rows, the last position's state out
    if stage == "prefill":
        opts.update({"TokenLanes": int(p["TP"]), "PrefillOutLanes": int(d["BP"]), "PrefillInLanes": int(p["WP"]),
                     "MacImpl": "MAC_DSP_PACK2" if p["DSPLanes"] else "MAC_LUT", "DSPLanes": int(p["DSPLanes"])})
    else:
        opts.update({"OutLanes": int(d["BP"]), "InLanes": int(d["WP"]),
                     "MacImpl": "MAC_DSP_PACK2" if d["DSPPacking"] else "MAC_LUT"})
    return opts


EXPORT_VOCAB_ROWS = 256         # vocabulary rows in the exported structure graphs (full tables from golden)


@dataclasses.dataclass(frozen=True)
class SavedModel:
    """A calibrated model as the torch.save file that holds exactly its state (the cache entry its reference
    state was copied from): any process restores it in a second, its parameters the file's pages (mmap),
    read only where used."""
    state_file: str
    arch: object
    spec: object
    max_positions: int

    @classmethod
    def of(cls, model, state_file) -> "SavedModel":
        return cls(str(state_file), model.arch, model.spec, int(model.rope_cos.shape[0]))

    def restore(self):
        import torch

        from brevitas_models.build import restore_model
        state = torch.load(self.state_file, weights_only=True, mmap=True)
        return restore_model(self.arch, self.spec, state, self.max_positions, assign=True)


def _export_inputs(cfg: FlexLLMConfig, weights, golden):
    from brevitas_models.text import encode, load_text

    tokens = encode(weights.tokenizer, load_text())
    tokens = tokens[tokens < min(EXPORT_VOCAB_ROWS, golden.vocab_size)]     # ids valid in the cut vocabulary
    return tokens, {"prefill": int(cfg["Prefill"]["ChunkTokens"]), "decode": DECODE_EXPORT_PAST}


def export_one_stage(model, stage: str, out_dir: Path, tokens, seq_len: int) -> str:
    """QONNX of ONE decoder block of ``stage``, with the embedding and LM head cut to their first
    EXPORT_VOCAB_ROWS rows (their full tensors come from the golden model)."""
    from brevitas_models.export import export_stage, vocab_view
    from brevitas_models.export_ops import keep_hadamard_constants

    if isinstance(model, SavedModel):
        model = model.restore()
    with keep_hadamard_constants():        # the model's layers share one R4 constant: built once
        return export_stage(vocab_view(model, EXPORT_VOCAB_ROWS), stage, out_dir, tokens, seq_len=seq_len,
                            layers=1)["onnx"]


EXPORT_PARALLEL_BLOCK_BYTES = 64 << 20    # a decoder block this big (float32) makes the second process pay off


def export_workers(arch) -> int:
    """Processes for the two stage exports: 2 when this process may run on two or more CPUs, one of them is
    idle (1-minute load average, this build included, at most CPUs - 0.5) and one decoder block is big
    enough that its export outweighs starting a Python process with torch (seconds of CPU). The output is
    the same either way."""
    h, d = arch.hidden_size, arch.head_dim
    block_bytes = 4 * h * (2 * arch.num_heads * d + 2 * arch.num_kv_heads * d + 3 * arch.intermediate_size)
    cpus = len(os.sched_getaffinity(0))
    idle = os.getloadavg()[0] <= cpus - 0.5
    return 2 if cpus >= 2 and idle and block_bytes >= EXPORT_PARALLEL_BLOCK_BYTES else 1


def export_stages(cfg: FlexLLMConfig, weights, model, golden, workdir: Path, log: Callable = _noop) -> Dict:
    """QONNX of ONE decoder block per stage (``export_one_stage``): small graphs whatever the model size.
    ``model``: the calibrated model, or a SavedModel -- then, with two CPUs and a big model
    (``export_workers``), the decode stage is exported by a second process (spawned: it restores the model
    from the file) while this one exports prefill."""
    from brevitas_models.export_ops import keep_hadamard_constants

    tokens, seq = _export_inputs(cfg, weights, golden)
    out = {}
    progress = bar(2, "QONNX export", "stages")
    t0 = time.perf_counter()
    if isinstance(model, SavedModel) and export_workers(model.arch) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            decode = pool.submit(export_one_stage, model, "decode", workdir / "decode", tokens, seq["decode"])
            out["prefill"] = export_one_stage(model, "prefill", workdir / "prefill", tokens, seq["prefill"])
            progress.update(1)
            out["decode"] = decode.result()
            progress.update(1)
        progress.close()
        log(f"prefill and decode: exported one decoder block each, in two processes, in "
            f"{time.perf_counter() - t0:.1f} s")
        return {s: out[s] for s in ("prefill", "decode")}
    if isinstance(model, SavedModel):
        model = model.restore()
    with keep_hadamard_constants():        # both stages use the same R4 constant: built once
        for stage in ("prefill", "decode"):
            t0 = time.perf_counter()
            out[stage] = export_one_stage(model, stage, workdir / stage, tokens, seq[stage])
            progress.update(1)
            log(f"{stage}: exported one decoder block in {time.perf_counter() - t0:.1f} s")
    progress.close()
    return out


def convert_stages(cfg: FlexLLMConfig, golden, graphs: Dict, workdir: Path, log: Callable = _noop) -> Dict:
    import hls4ml

    from ..backend.registration import ensure_registered
    from ..frontend import fuse_llama

    ensure_registered()
    name = cfg["ProjectName"]
    vocab = {"embed": golden.embed, "lm_head_w_int": golden.lm_head.w_int, "lm_head_w_scale": golden.lm_head.w_scale}
    pack_cache: Dict = {}          # both stages pack each weight matrix once
    out = {}
    progress = bar(len(graphs), "fusion + hls4ml conversion", "stages")
    for stage, onnx_path in graphs.items():
        t0 = time.perf_counter()
        fused = fuse_llama(onnx_path)
        fused.save(str(Path(onnx_path).parent / "fused.onnx"))      # kept in the project's qonnx/
        with tool_output():                                # hls4ml prints its topology on stdout
            hm = hls4ml.converters.convert_from_onnx_model(
                fused.model, output_dir=str(workdir / f"{stage}_hls4ml"), project_name=f"{name}_{stage}_stage",
                backend="FlexLLM", part=cfg["Part"], clock_period=cfg["ClockPeriod"],
                flexllm=dict(stage_options(cfg, golden, stage), VocabParams=vocab, PackCache=pack_cache))
        del fused
        out[stage] = hm
        progress.update(1)
        log(f"{stage}: fused and converted (temporal reuse over {golden.num_layers} layers) in "
            f"{time.perf_counter() - t0:.1f} s")
    progress.close()
    return out


# ---- 3. buffers ------------------------------------------------------------------------------------
def plan_buffers(cfg: FlexLLMConfig, golden, plans: Dict) -> Dict:
    """Images -> device buffers with memory banks. Returns {'buffers': [...], 'images': {name: array},
    'fmem' / 'lmem': {stage: buffer name}}."""
    pre, dec = plans["prefill"], plans["decode"]
    ports = pre.ports
    images, buffers, fmem = {}, [], {}
    # the shared images are built once, from the prefill plan (image_equals compares without building)
    for i in range(ports):
        if not pre.image_equals(dec, f"wmem_p{i}"):
            raise AssertionError(f"weight port {i}: prefill and decode images differ (planning is not stage-independent)")
        images[f"weights_p{i}"] = pre.image(f"wmem_p{i}")
    if not pre.image_equals(dec, "embed"):
        raise AssertionError("prefill and decode embedding images differ")
    images["embed"] = pre.image("embed")
    fmem, lmem = {}, {}
    for image, names in (("fmem", fmem), ("lmem", lmem)):
        if pre.image_equals(dec, image):
            images[image] = pre.image(image)
            names.update(prefill=image, decode=image)
        else:
            images[f"{image}_prefill"], images[f"{image}_decode"] = pre.image(image), dec.image(image)
            names.update(prefill=f"{image}_prefill", decode=f"{image}_decode")

    d = cfg["Decode"]
    hbm = 0
    for i in range(ports):
        buffers.append(Buffer(f"weights_p{i}", f"HBM[{hbm}]", int(images[f"weights_p{i}"].nbytes),
                              f"weights/weights_p{i}.bin"))
        hbm += 1
    for key in sorted(k for k in images if k.startswith(("fmem", "lmem"))):
        buffers.append(Buffer(key, f"HBM[{hbm}]", int(images[key].nbytes), f"weights/{key}.bin"))
        hbm += 1
    # the KV cache: K and V port buffers on the channels of the first 2 x KV_LANES weight ports
    from .spec import kv_lanes
    lanes = kv_lanes(int(d["KVParallel"]), ports)
    kv_bytes = kv_port_bytes(golden.num_layers, golden.num_kv_heads, int(d["MaxContext"]), golden.head_dim, lanes)
    for i in range(2 * lanes):
        buffers.append(Buffer(kv_buffer(i), f"HBM[{i}]", kv_bytes))
    buffers.append(Buffer("embed", "DDR[0]", int(images["embed"].nbytes), "weights/embed.bin"))
    prompt_rows = int(cfg["Prefill"]["MaxSeqLen"])
    if cfg["HMT"]["Enabled"]:
        # HMT: the parameter image and the ring of memories + keys beside the prefill's fp32 parameters
        images["hmt_params"] = golden.hmt.image()
        hmt_mem = next(b.memory for b in buffers if b.name == fmem["prefill"])
        buffers.append(Buffer("hmt_params", hmt_mem, int(images["hmt_params"].nbytes), "weights/hmt_params.bin"))
        h = cfg.hmt_spec()
        buffers.append(Buffer("hmt_ring", hmt_mem, 2 * h.memory_slots * golden.hidden_size * 4))
        prompt_rows += h.summary + 2              # one segment's summary rows and main rows
    vocab = golden.vocab_size
    io = [("prompt_tokens", 4 * prompt_rows), ("first_token", 64),
          ("prefill_logits", 4 * vocab), ("out_tokens", 4 * int(d["MaxNewTokens"])), ("decode_logits", 4 * vocab)]
    buffers += [Buffer(n, "DDR[1]", b) for n, b in io]
    for b in buffers:
        if b.file is not None:
            b.sha256 = hashlib.sha256(np.ascontiguousarray(images[b.name]).data).hexdigest()
    check_budgets(buffers)
    return {"buffers": buffers, "images": images, "fmem": fmem, "lmem": lmem}


def check_budgets(buffers) -> None:
    """At most 32 HBM pseudo-channels of 256 MB each; DDR banks of 16 GB; clear errors naming the bank."""
    totals: Dict[str, int] = {}
    for b in buffers:
        totals[b.memory] = totals.get(b.memory, 0) + b.bytes
    for mem, total in sorted(totals.items()):
        kind, idx = mem[:-1].split("[")
        idx = int(idx)
        if kind == "HBM":
            if idx >= HBM_CHANNELS:
                raise ConfigError(f"memory plan needs {mem}: the U280 has {HBM_CHANNELS} HBM channels "
                                  f"(HBM[0]..HBM[{HBM_CHANNELS - 1}]); reduce Decode.BP")
            if total > HBM_CHANNEL_BYTES:
                names = [b.name for b in buffers if b.memory == mem]
                raise ConfigError(f"{mem} holds {total / 2**20:.1f} MB ({', '.join(names)}): over the 256 MB of "
                                  "one HBM pseudo-channel; increase Decode.BP (weight ports)")
        elif total > DDR_BANK_BYTES:
            raise ConfigError(f"{mem} holds {total / 2**30:.2f} GB: over the 16 GB DDR4 bank")


# ---- estimates -------------------------------------------------------------------------------------
def cost_models(cfg: FlexLLMConfig, stages: Dict) -> Dict:
    """The cost model of each stage kernel (flexllm_plugin/cost) and their plain-data descriptions."""
    from ..cost.of_model import model_of_description, stage_description

    descs = {stage: dict(stage_description(hm), name=f"{cfg['ProjectName']}_{stage}") for stage, hm in stages.items()}
    return {"descriptions": descs, "models": {s: model_of_description(d, cfg["Board"]) for s, d in descs.items()}}


PCIE_GBPS = 10.0        # host -> card, PCIe Gen3 x16 as measured on Alveo cards (~10-12 GB/s)


def stage_switch_cost(buffers, decode_model) -> Dict:
    """Prefill and decode are separate xclbins: between them the host reads the KV cache back, loads the
    decode xclbin and uploads every decode buffer again (host/host.cpp)."""
    kv = sum(b.bytes for b in buffers if b.name.startswith("kv_p"))
    upload = sum(b.bytes for b in buffers if b.file is not None and not b.name.endswith("_prefill")) + kv
    return {"kv_cache_bytes": kv, "bytes_uploaded": upload,
            "upload_seconds": round((upload + kv) / (PCIE_GBPS * 1e9), 4),
            "note": "plus the decode xclbin's load (device programming, not modeled: seconds); paid once per "
                    f"prompt; the transfer at {PCIE_GBPS:g} GB/s (PCIe Gen3 x16)"}


def estimates(cfg: FlexLLMConfig, models: Dict, buffers=()) -> Dict:
    """Resources per kernel and SLR, decode tokens/s and prefill seconds from the cost model; raises
    ConfigError naming the resource and module when a kernel exceeds the board budget."""
    from ..cost.report import project_estimates

    est = project_estimates(models["prefill"], models["decode"], int(cfg["Prefill"]["MaxSeqLen"]),
                            int(cfg["Decode"]["MaxContext"]))
    est["stage_switch"] = stage_switch_cost(buffers, models["decode"])
    for name, k in est["kernels"].items():
        if k["over_budget"]:
            raise ConfigError(f"{k['over_budget']} (config {cfg.path or ''}: reduce the lanes of Prefill / Decode)")
    return est


# ---- tokenizer file --------------------------------------------------------------------------------
def _byte_level_alphabet() -> Dict[str, int]:
    """Inverse of the byte-level BPE alphabet (GPT-2 and Llama-3 style tokenizers): printable bytes map to
    themselves, the other 68 bytes to code points 256, 257, ... in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[chr(b)] = b
        else:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def token_bytes(tokenizer, vocab_size: int) -> list:
    """The raw bytes of every token id (byte-level BPE pieces mapped back to bytes; byte tokenizers:
    the byte itself; anything else: the UTF-8 of its decoded text)."""
    inverse = _byte_level_alphabet()
    convert = getattr(tokenizer, "convert_ids_to_tokens", None)
    out = []
    for i in range(vocab_size):
        if convert is None:
            out.append(bytes([i]) if i < 256 else b"")
            continue
        piece = convert(i)
        if piece is not None and piece and all(ch in inverse for ch in piece):
            out.append(bytes(inverse[ch] for ch in piece))
        else:
            out.append(tokenizer.decode([i]).encode("utf-8"))
    return out


def tokenizer_file(tokenizer, vocab_size: int) -> bytes:
    parts = [np.uint32(vocab_size).tobytes()]
    for b in token_bytes(tokenizer, vocab_size):
        parts += [np.uint32(len(b)).tobytes(), b]
    return b"".join(parts)


# ---- 4. project files ------------------------------------------------------------------------------
def write_project(cfg: FlexLLMConfig, weights, golden, stages: Dict, planned: Dict, root: Path,
                  workdir: Optional[Path] = None) -> ProjectSpec:
    costs = cost_models(cfg, stages)
    from ..backend.memory import ALIGN_BYTES
    from ..resources import data_dir
    from .kernels import decode_kernel, decode_ports, prefill_kernel, prefill_ports, stage_headers
    from ..cost.board import BOARDS
    from .testbench import testbench_source
    from .vitis_files import write_vitis_files

    name = cfg["ProjectName"]
    d, p = cfg["Decode"], cfg["Prefill"]
    fw = root / "firmware"
    (fw / "flexllm").mkdir(parents=True)
    for header in sorted(data_dir("layers").glob("*.h")):
        shutil.copyfile(header, fw / "flexllm" / header.name)
    ports = int(d["BP"])
    hmt = hmt_description(cfg, golden)
    kernel_hmt = None
    if hmt:                  # the recall's call: QONNX memory graph -> hls4ml FlexMemoryRecall -> its template
        from .hmt_recall import kernel_recall_call
        kernel_hmt = dict(hmt, recall_call=kernel_recall_call(golden.hmt, hmt["slots"], workdir))
    kernels = []
    for stage, make, port_fn in (("prefill", prefill_kernel, prefill_ports), ("decode", decode_kernel, decode_ports)):
        hm = stages[stage]
        for fname, text in stage_headers(hm):
            (fw / fname).write_text(text)
        src = f"firmware/{name}_{stage}.cpp"
        sizes = {b.name: b.bytes for b in planned["buffers"]}
        extra = {"hmt": kernel_hmt} if stage == "prefill" and hmt else {}
        (root / src).write_text(make(hm, f"{name}_{stage}", planned["fmem"][stage], planned["lmem"][stage], sizes,
                                     **extra))
        n_kv = sum(1 for b in planned["buffers"] if b.name.startswith("kv_p"))
        kernel_ports = port_fn(ports, n_kv, planned["fmem"][stage], planned["lmem"][stage],
                               **({"hmt": True} if extra else {}))
        mem_of = {b.name: b.memory for b in planned["buffers"]}
        for port in kernel_ports:
            if port.kind == "m_axi":
                port.memory = mem_of[port.buffer]
        kernels.append(Kernel(f"{name}_{stage}", src, kernel_ports, round(1e3 / float(cfg["ClockPeriod"]), 3)))

    wdir = root / "weights"
    wdir.mkdir()
    manifest = {"alignment_bytes": ALIGN_BYTES, "weight_ports": ports, "buffers": {}, "tensors": {}}
    for b in planned["buffers"]:
        if b.file is not None:
            planned["images"][b.name].tofile(root / b.file)
            manifest["buffers"][b.name] = {"file": b.file, "memory": b.memory, "bytes": b.bytes,
                                           "dtype": str(planned["images"][b.name].dtype), "sha256": b.sha256}
    for stage, hm in stages.items():
        plan = hm.config.config["FlexLLM"]["MemoryPlan"]
        image_to_buffer = {f"wmem_p{i}": f"weights_p{i}" for i in range(ports)}
        image_to_buffer.update({"embed": "embed", "fmem": planned["fmem"][stage], "lmem": planned["lmem"][stage]})
        for tname, t in sorted(plan.tensors.items()):
            entry = dict(t, buffer=image_to_buffer[t["image"]])
            manifest["tensors"][f"{stage}:{tname}"] = entry
    (wdir / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    (root / "tokenizer").mkdir()
    (root / "tokenizer" / "tokens.bin").write_bytes(tokenizer_file(weights.tokenizer, golden.vocab_size))

    eos = getattr(weights.tokenizer, "eos_token_id", None)
    spec = ProjectSpec(
        name=name, part=cfg["Part"], platform=BOARDS[cfg["Board"]].platform, kernels=kernels, buffers=planned["buffers"],
        model={"vocab_size": golden.vocab_size, "hidden_size": golden.hidden_size, "num_layers": golden.num_layers,
               "num_heads": golden.num_heads, "num_kv_heads": golden.num_kv_heads, "head_dim": golden.head_dim,
               "intermediate_size": golden.intermediate_size, "quant_preset": cfg["Quantization"]["Preset"],
               "input_quant": golden.input_quant, "weight_bits": golden.weight_bits,
               "max_prompt": int(p["MaxSeqLen"]), "prefill_chunk": int(p["ChunkTokens"]),
               "max_context": int(d["MaxContext"]), "max_new_tokens": int(d["MaxNewTokens"]),
               "eos_token_id": int(eos) if isinstance(eos, (int, np.integer)) else None,
               "sampling": "top_k" if d["Sampling"] == "top-k" else "greedy", "top_k": int(d["TopK"]),
               "temperature": float(d["Temperature"]), "tokenizer_file": "tokenizer/tokens.bin",
               "clock_mhz": round(1e3 / float(cfg["ClockPeriod"]), 3),
               "lanes": {"prefill": {"TP": int(p["TP"]), "WP": int(p["WP"]), "ports": ports},
                         "decode": {"BP": ports, "WP": int(d["WP"]), "HP": int(d["HP"]),
                                    "KVParallel": int(d["KVParallel"])}}} | ({"hmt": hmt} if hmt else {}),
        estimates=estimates(cfg, costs["models"], planned["buffers"]))
    spec.estimates["cost_model"] = costs["descriptions"]
    if hmt:
        from ..cost.memory_recall import hmt_long_prompt
        spec.estimates["hmt_long_prompt"] = hmt_long_prompt(
            costs["models"]["prefill"], hmt["segment_length"], hmt["block"], hmt["summary_tokens"], hmt["hidden"],
            hmt["slots"], hmt["lanes"], HMT_MODELED_SEGMENTS)
    (root / "report").mkdir()
    (root / "report" / "estimates.json").write_text(json.dumps(spec.estimates, indent=1, sort_keys=True))
    (root / "csim").mkdir()
    from brevitas_models.text import default_prompt_text
    prompt_ids = list(weights.tokenizer.encode(default_prompt_text(), add_special_tokens=False))[:int(p["MaxSeqLen"])]
    (root / "csim" / "prompt.txt").write_text(" ".join(str(int(t)) for t in prompt_ids) + "\n")
    from .manifest_check import CHECK_HEADER, HEADER_NAME
    (root / "csim" / HEADER_NAME).write_text(CHECK_HEADER)
    (root / "csim" / "testbench.cpp").write_text(
        testbench_source(spec, kernels[0].ports, kernels[1].ports))
    board = BOARDS[cfg["Board"]]
    if board.flow == "aved":                 # the V80: Vivado IP + AVED block design (project/v80_files.py)
        from .v80_files import write_v80_files
        write_v80_files(spec, root, board)
    else:
        write_vitis_files(spec, root)
    return spec


def _file_data(path) -> Optional[Dict]:
    from ..config import load_config
    try:
        return load_config(path).data
    except (ConfigError, OSError):
        return None


def build_project(cfg: FlexLLMConfig, out_dir: Optional[Path] = None, log: Callable = _noop,
                  force: bool = False) -> Dict:
    """Steps 1-4; returns a summary dict (timings, buffers, estimates). Every check that needs only the
    config, the checkpoint header and the board (``preflight``), and the output directory's, runs first."""
    from ..preflight import preflight
    from .manifest_check import write_sha256sums
    from .reference import save_ap_types, save_graphs, save_reference, save_tokenizer

    t_start = time.perf_counter()
    out = Path(out_dir or cfg.output_dir).resolve()
    preflight(cfg)
    with atomic_directory(out, marker=BUILD_INFO, force=force) as tmp, \
            tempfile.TemporaryDirectory(prefix="flexllm_build_") as work:
        weights, model, golden = build_reference(cfg, log)
        check_sizes(cfg, golden)
        if save_reference(tmp, weights, model):     # verify / generate need only the project
            # its state file holds the model: the exports restore it from there, touching only the pages of
            # the block they export (the golden model carries every parameter from here on)
            model = SavedModel.of(model, model.state_file)
            gc.collect()
        t_model = time.perf_counter()
        graphs = export_stages(cfg, weights, model, golden, Path(work), log)
        del model                  # the golden model carries every parameter from here on
        gc.collect()
        stages = convert_stages(cfg, golden, graphs, Path(work), log)
        t_convert = time.perf_counter()
        plans = {s: hm.config.config["FlexLLM"]["MemoryPlan"] for s, hm in stages.items()}
        planned = plan_buffers(cfg, golden, plans)
        spec = write_project(cfg, weights, golden, stages, planned, tmp, Path(work))
        save_tokenizer(tmp, weights.tokenizer)
        write_sha256sums(tmp, planned["buffers"])    # `sha256sum -c`, flexllm::check_sha256sums
        save_graphs(tmp, Path(work))
        save_ap_types(tmp)
        if cfg.path is not None and _file_data(cfg.path) == cfg.data:
            shutil.copyfile(cfg.path, tmp / CONFIG_COPY)     # the user's file, comments included
        else:
            import yaml
            (tmp / CONFIG_COPY).write_text(yaml.safe_dump(cfg.data, sort_keys=True))
        entries = sorted({p.name for p in tmp.iterdir()} | {BUILD_INFO})
        info = {"project": spec.to_dict(), "config": CONFIG_COPY, "entries": entries}
        (tmp / BUILD_INFO).write_text(json.dumps(info, indent=1, sort_keys=True, default=str))
    t_end = time.perf_counter()
    from ..cost.board import BOARDS
    board = BOARDS[cfg["Board"]]
    return {"output_dir": str(out), "name": spec.name, "board": board.name, "flow": board.flow,
            "buffers": {b.name: {"memory": b.memory, "bytes": b.bytes} for b in spec.buffers},
            "estimates": {"decode_tokens_per_s": spec.estimates["decode_tokens_per_s"],
                          "prefill_seconds": spec.estimates["prefill_seconds"], "clock_MHz": spec.estimates["clock_MHz"],
                          "kernels": {n: {"resources": k["resources"], "utilization": k["utilization"]}
                                      for n, k in spec.estimates["kernels"].items()},
                          "report": "report/estimates.json"},
            "seconds": {"model": round(t_model - t_start, 2), "convert": round(t_convert - t_model, 2),
                        "total": round(t_end - t_start, 2)}}
