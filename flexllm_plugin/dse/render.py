"""Text of a ``flexllm dse`` result (``--json`` prints the dict instead)."""

from __future__ import annotations

from typing import Dict

from .space import KNOBS

SHORT = {"Decode.BP": "BP", "Decode.HP": "HP", "Decode.KVParallel": "KVP", "Decode.WP": "dWP",
         "Decode.DSPPacking": "pack", "Decode.QuantLanes": "dQL", "Prefill.ChunkTokens": "chunk", "Prefill.TP": "TP",
         "Prefill.WP": "pWP", "Prefill.QuantLanes": "pQL", "Prefill.DSPLanes": "pDSP"}


def _knobs(k: Dict) -> str:
    return " ".join(f"{SHORT[n]}={k[n]}" for n in KNOBS if n in k)


def render_dse(r: Dict) -> str:
    b, m = r["best"], r["best"]["metrics"]
    L = [f"flexllm dse: {r['config']} on {r['board']} ({r['clock_MHz']} MHz), objective {r['objective']}, "
         f"prompt {r['prompt']}, new {r['new_tokens']}, decode figure at {r['context']} keys",
         f"  space {r['space_size']:,} designs; {r['mode']} search in {r['search_seconds']} s "
         f"({r['evaluations']['decode_kernel']:,} decode kernels, {r['evaluations']['prefill_kernel_timed']:,} "
         f"prefill kernels timed)", "",
         f"Best: {_knobs(b['knobs'])}",
         f"  decode {m['decode_tokens_per_s']:.1f} tokens/s at {r['context']} keys "
         f"(mean {m['decode_mean_tokens_per_s']:.1f} over {r['new_tokens']} tokens), prefill {m['prefill_seconds']:.3f} s, "
         f"end to end {m['end_to_end_seconds']:.3f} s",
         f"  largest resource share {100 * m['utilization']:.1f} % (decode kernel: "
         + ", ".join(f"{k.upper()} {100 * v:.0f} %" for k, v in b["decode_kernel"]["utilization"].items())
         + "; prefill kernel: "
         + ", ".join(f"{k.upper()} {100 * v:.0f} %" for k, v in b["prefill_kernel"]["utilization"].items()) + ")", ""]
    L.append("Pareto front, prefill vs decode (designs evaluated whole):")
    L.append(f"  {'prefill s':>10} {'decode tok/s':>12} {'util %':>7}  knobs")
    for p in r["pareto"]["prefill_vs_decode"]:
        q = p["metrics"]
        L.append(f"  {q['prefill_seconds']:>10.3f} {q['decode_tokens_per_s']:>12.1f} {100 * q['utilization']:>7.1f}  "
                 f"{_knobs(p['knobs'])}")
    L.append("")
    L.append("Pareto front, decode tokens/s vs the decode kernel's largest resource share (exhaustive):")
    for p in r["pareto"]["decode_tokens_per_s_vs_utilization"]:
        q = p["metrics"]
        L.append(f"  {100 * q['decode_utilization']:>6.1f} % {q['decode_tokens_per_s']:>8.1f} tok/s  {_knobs(p['knobs'])}")
    L.append("")
    L.append("Pareto front, prefill seconds vs the prefill kernel's largest resource share (kernels timed):")
    for p in r["pareto"]["prefill_seconds_vs_utilization"]:
        q = p["metrics"]
        L.append(f"  {100 * q['prefill_utilization']:>6.1f} % {q['prefill_seconds']:>8.3f} s  {_knobs(p['knobs'])}")
    if r.get("board_unverified"):
        L += ["", f"Board {r['board']}: figures not checked against AMD documents ({r['board_file']}):"]
        L += [f"  - {u}" for u in r["board_unverified"]]
    if r.get("sweep"):
        sw = r["sweep"]
        L += ["", f"Sweep of the {len(sw['candidates'])} best designs written to {sw['sweep_dir']} "
                  f"({', '.join(sw['candidates'])}): make -C {sw['sweep_dir']} -j N csim [SUBMIT=\"srun ...\"], "
                  f"then flexllm report {sw['sweep_dir']}"]
    elif r.get("out"):
        L += ["", f"Best config written to {r['out']} (flexllm build {r['out']}); result in "
                  f"{r['out'].rsplit('.', 1)[0]}.dse.json"]
    return "\n".join(L)
