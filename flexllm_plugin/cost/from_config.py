"""Stage descriptions straight from a config and the model's shape, without converting anything: what the
pass ``bind_units`` and the builder's stage options would produce for the Llama block (the cost model's
input for estimates and design-space search on full-size models). tests/test_cost_model.py holds this
to the descriptions of converted stages."""

from __future__ import annotations

from typing import Dict

from brevitas_models.hadamard import hadamard_factor

from ..project.spec import kv_lanes
from .of_model import model_of_description

DEFAULT_ELEMENT_LANES = 16
DEFAULT_HADAMARD_LANES = 64


def _call(unit, d_in, d_out=0):
    return {"unit": unit, "d_in": int(d_in), "d_out": int(d_out)}


def llama_schedule(arch, input_kind: str, weight_bits: int, r4: bool, max_tokens: int) -> Dict:
    d, f, v = arch.hidden_size, arch.intermediate_size, arch.vocab_size
    hd = arch.head_dim
    qd, kvd = arch.num_heads * hd, arch.num_kv_heads * hd
    block = [_call("UNIT_RMSNORM", d), _call("UNIT_QUANT", d), _call("UNIT_LINEAR", d, qd),
             _call("UNIT_LINEAR", d, kvd), _call("UNIT_LINEAR", d, kvd), _call("UNIT_ATTENTION", 0),
             _call("UNIT_QUANT", qd), _call("UNIT_LINEAR", qd, d), _call("UNIT_RMSNORM", d), _call("UNIT_QUANT", d),
             _call("UNIT_LINEAR", d, f), _call("UNIT_LINEAR", d, f), _call("UNIT_SWIGLU", f)]
    block += ([_call("UNIT_HADAMARD", f)] if r4 else []) + [_call("UNIT_QUANT", f), _call("UNIT_LINEAR", f, d)]
    tail = [_call("UNIT_RMSNORM", d), _call("UNIT_QUANT", d), _call("UNIT_LINEAR", d, v)]
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
    r4 = spec.rotation == "hadamard"
    out = {}
    for stage, tokens in (("prefill", int(cfg["Prefill"]["ChunkTokens"])), ("decode", 1)):
        out[stage] = {"name": f"{cfg['ProjectName']}_{stage}",
                      "schedule": llama_schedule(arch, spec.input_quant, spec.weight_bits, r4, tokens),
                      "n_layers": arch.num_layers, "lanes": stage_lanes_of_config(cfg, arch, stage, spec.weight_bits),
                      "clock_mhz": round(1e3 / float(cfg["ClockPeriod"]), 3)}
    return out


def models_of_config(cfg, arch, spec) -> Dict:
    return {s: model_of_description(d, cfg["Board"]) for s, d in descriptions_of_config(cfg, arch, spec).items()}
