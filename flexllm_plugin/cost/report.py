"""Project estimates from the cost model: resources per kernel (totals and per SLR) against the board,
decode tokens/s at several contexts, prefill seconds for several prompt lengths, at the configured clock
(``report/estimates.json`` and the project README's tables)."""

from __future__ import annotations

from typing import Dict, List

from .stage import StageModel

DECODE_CONTEXTS = (128, 512, 1024, 2048)
PREFILL_PROMPTS = (128, 512, 1024)
KEYS = ("dsp", "lut", "ff", "bram36", "uram")

WHAT = ("Cost model (flexllm_plugin/cost), not synthesis: cycles from the trip counts of the generated loops "
        "(held to the C simulation's counters by tests/test_cost_model.py) plus pipeline fills, handshakes and "
        "HBM at the measured {gbps} GB/s per pseudo-channel; the compute core runs one unit at a time, each "
        "linear call overlaps its weight streaming, MACs, epilogue and distributor. Resources from the "
        "unrolled operators and the buffers' storage at Vitis HLS operator costs (cost/resources.py). Decode: "
        "one whole token (embedding, all layers, LM head, greedy sampling) with the given number of keys in "
        "the KV cache; prefill: every chunk pass, the LM head once, sampling, the logits out.")


def project_estimates(prefill: StageModel, decode: StageModel, max_prompt: int, max_context: int) -> Dict:
    f = decode.clock_mhz * 1e6
    kernels = {}
    for kind, model in (("prefill", prefill), ("decode", decode)):
        rep = model.budget_report()
        kernels[model.name] = {"stage": kind, "resources": rep["device"], "utilization": rep["device_utilization"],
                               "slr": rep["slr"], "modules": rep["modules"], "device_budget": rep["device_budget"],
                               "over_budget": rep["over_budget"]}
    decode_tps, decode_ms = {}, {}
    for ctx in DECODE_CONTEXTS:
        if ctx > max_context:
            decode_tps[str(ctx)] = None
            continue
        cyc = decode.decode_token_cycles(ctx - 1)
        total = sum(cyc.values())
        decode_tps[str(ctx)] = round(f / total, 1)
        decode_ms[str(ctx)] = {k: round(v / f * 1e3, 4) for k, v in sorted(cyc.items())}
    prefill_s, prefill_ms = {}, {}
    for n in PREFILL_PROMPTS:
        if n > max_prompt:
            prefill_s[str(n)] = None
            continue
        cyc = prefill.prefill_cycles(n)
        prefill_s[str(n)] = round(sum(cyc.values()) / f, 4)
        prefill_ms[str(n)] = {k: round(v / f * 1e3, 3) for k, v in sorted(cyc.items())}
    return {"clock_MHz": round(decode.clock_mhz, 1), "board": decode.board.name,
            "hbm_GBps_per_channel": decode.board.hbm_channel_gbps,
            "budget": {"device_cap": decode.board.device_cap, "slr_cap": decode.board.slr_cap},
            "kernels": kernels,
            "decode_tokens_per_s": decode_tps, "decode_ms_per_token_by_unit": decode_ms,
            "prefill_seconds": prefill_s, "prefill_ms_by_unit": prefill_ms,
            "engine": {"prefill_MACs_per_cycle": prefill.engine.macs_per_cycle,
                       "decode_MACs_per_cycle": decode.engine.macs_per_cycle,
                       "decode_weight_ports": decode.engine.ports},
            "what": WHAT.format(gbps=decode.board.hbm_channel_gbps)}


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def markdown(est: Dict) -> List[str]:
    """The README tables of a project's estimates."""
    L = [est["what"], "", f"Board {est['board']}, kernel clock {est['clock_MHz']} MHz; budget: each resource at most "
         f"{_pct(est['budget']['device_cap'])} of the device and {_pct(est['budget']['slr_cap'])} of an SLR.", "",
         "### Resources per kernel (modeled)", "",
         "| kernel | " + " | ".join(k.upper() for k in KEYS) + " | within budget |",
         "|---|" + "---|" * (len(KEYS) + 1)]
    for name, k in est["kernels"].items():
        L.append(f"| `{name}` | " + " | ".join(f"{k['resources'][r]:,} ({_pct(k['utilization'][r])})" for r in KEYS)
                 + f" | {'yes' if not k['over_budget'] else 'NO: ' + k['over_budget']} |")
    L += ["", "### Per SLR (module placement of the model)", "",
          "| kernel | SLR | " + " | ".join(k.upper() for k in KEYS) + " | modules |", "|---|---|" + "---|" * (len(KEYS) + 1)]
    for name, k in est["kernels"].items():
        for i, s in enumerate(k["slr"]):
            L.append(f"| `{name}` | {i} | " + " | ".join(_pct(s["utilization"][r]) for r in KEYS)
                     + f" | {', '.join(s['modules'])} |")
    L += ["", "### Decode (whole token) and prefill", "", "| context (keys) | tokens/s |", "|---|---|"]
    L += [f"| {c} | {v if v is not None else 'beyond MaxContext'} |" for c, v in est["decode_tokens_per_s"].items()]
    L += ["", "| prompt tokens | prefill seconds |", "|---|---|"]
    L += [f"| {n} | {v if v is not None else 'beyond MaxSeqLen'} |" for n, v in est["prefill_seconds"].items()]
    sw = est.get("stage_switch")
    if sw:
        L += ["", f"Between prefill and decode (separate xclbins) the host moves {sw['kv_cache_bytes']:,} bytes of KV "
              f"cache and re-uploads {sw['bytes_uploaded']:,} bytes: {sw['upload_seconds']} s, {sw['note']}."]
    return L
