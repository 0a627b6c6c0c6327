"""Stage descriptions straight from a config and the model's shape, without converting anything: what the
pass ``bind_units`` and the builder's stage options would produce for the Llama block (the cost model's
input for estimates and design-space search on full-size models). tests/test_cost_model.py holds this
to the descriptions of converted stages."""

from __future__ import annotations

from typing import Dict

import numpy as np

from brevitas_models.hadamard import hadamard_factor

from ..project.spec import kv_lanes
from .of_model import model_of_description

DEFAULT_ELEMENT_LANES = 16
DEFAULT_HADAMARD_LANES = 64


def _call(unit, d_in, d_out=0, kind=None, clip=1.0):
    # clip as the binary32 value the kernel and the fused graph hold
    return {"unit": unit, "d_in": int(d_in), "d_out": int(d_out), "kind": kind, "clip": float(np.float32(clip))}


def engine_input_kind(kinds) -> str:
    """The ONE linear engine's input kind for linears reading ``kinds`` (bind_units.engine_input_kind)."""
    kinds = set(kinds)
    return kinds.pop() if len(kinds) == 1 else "mixed"


def llama_schedule(arch, spec, r4: bool, max_tokens: int) -> Dict:
    """The Llama block's schedule for a QuantSpec: per site the input kind (InputQuantOverrides) of the
    quantizer and linear calls, and the quantizer's clip ratio (InputClipRatios)."""
    d, f, v = arch.hidden_size, arch.intermediate_size, arch.vocab_size
    hd = arch.head_dim
    qd, kvd = arch.num_heads * hd, arch.num_kv_heads * hd

    def quant(site, n):
        return _call("UNIT_QUANT", n, 0, spec.input_kind(site), spec.input_clip(site))

    def linear(site, n_in, n_out):
        return _call("UNIT_LINEAR", n_in, n_out, spec.input_kind(site))

    block = [_call("UNIT_RMSNORM", d), quant("q_proj", d), linear("q_proj", d, qd),
             linear("q_proj", d, kvd), linear("q_proj", d, kvd), _call("UNIT_ATTENTION", 0),
             quant("o_proj", qd), linear("o_proj", qd, d), _call("UNIT_RMSNORM", d), quant("gate_proj", d),
             linear("gate_proj", d, f), linear("gate_proj", d, f), _call("UNIT_SWIGLU", f)]
    block += ([_call("UNIT_HADAMARD", f)] if r4 else []) + [quant("down_proj", f), linear("down_proj", f, d)]
    tail = [_call("UNIT_RMSNORM", d), quant("lm_head", d), linear("lm_head", d, v)]
    weight_bits = spec.weight_bits
    input_kind = engine_input_kind(c["kind"] for c in block + tail if c["unit"] == "UNIT_LINEAR")
    m = hadamard_factor(f)[0] if r4 else 0
    return {"block": block, "tail": tail, "max_tokens": int(max_tokens), "hidden": d, "width": max(d, f, qd),
            "row": qd, "vocab": v, "max_in": max(d, f, qd), "max_out": max(qd, d, f, v), "weight_bits": weight_bits,
            "input_kind": input_kind, "heads": arch.num_heads, "kv_heads": arch.num_kv_heads, "head_dim": hd,
            "hadamard_m": m, "hadamard_n": f if r4 else 0}


def stage_lanes_of_config(cfg, arch, stage: str, weight_bits: int) -> Dict:
    """The lanes the builder's stage options give the stage (builder.stage_options + the backend's rounding)."""
    p, d = cfg["Prefill"], cfg["Decode"]
    ports = int(d["BP"])
    cpw = 128 if weight_bits == 4 else 64
    if stage == "prefill":
        tl, ol, il = min(int(p["TP"]), int(p["ChunkTokens"])), int(d["BP"]), int(p["WP"])
    else:
        tl, ol, il = 1, int(d["BP"]), int(d["WP"])
    ol = -(-ol // ports) * ports
    group = arch.num_heads // arch.num_kv_heads
    return {"token_lanes": tl, "out_lanes": ol, "in_lanes": min(il, cpw), "ports": ports,
            "head_lanes": min(int(d["HP"]), group), "key_lanes": int(d["KVParallel"]),
            "kv_lanes": kv_lanes(int(d["KVParallel"]), ports),
            "element_lanes": DEFAULT_ELEMENT_LANES, "hadamard_lanes": DEFAULT_HADAMARD_LANES,
            "quant_lanes": int((p if stage == "prefill" else d)["QuantLanes"]),
            "mac": "MAC_DSP_PACK2" if (p["DSPLanes"] if stage == "prefill" else d["DSPPacking"]) else "MAC_LUT",
            "dsp_lanes": int(p["DSPLanes"]) if stage == "prefill" else (ol if d["DSPPacking"] else 0),
            "max_context": int(d["MaxContext"])}


def descriptions_of_config(cfg, arch, spec) -> Dict[str, Dict]:
    """{"prefill": desc, "decode": desc} of a FlexLLMConfig for a model of shape ``arch`` quantized by ``spec``."""
    r4 = spec.rotated
    out = {}
    for stage, tokens in (("prefill", int(cfg["Prefill"]["ChunkTokens"])), ("decode", 1)):
        out[stage] = {"name": f"{cfg['ProjectName']}_{stage}",
                      "schedule": llama_schedule(arch, spec, r4, tokens),
                      "n_layers": arch.num_layers, "lanes": stage_lanes_of_config(cfg, arch, stage, spec.weight_bits),
                      "clock_mhz": round(1e3 / float(cfg["ClockPeriod"]), 3)}
    return out


def models_of_config(cfg, arch, spec) -> Dict:
    return {s: model_of_description(d, cfg["Board"]) for s, d in descriptions_of_config(cfg, arch, spec).items()}
