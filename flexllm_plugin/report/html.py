"""``flexllm report OUTDIR``: ``OUTDIR/report/index.html`` and its PNGs (see ``figures.py``)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Callable, Dict, Optional

import yaml

from ..cost.board import BOARDS
from ..cost.of_model import model_of_description
from ..project.spec import kv_row_bytes
from . import figures
from .csynth import find_csynth_reports
from .implementation import find_implementation_reports

WORD_BYTES = 64


class ReportInputError(ValueError):
    pass


def _project(outdir: Path) -> Dict:
    info = outdir / "flexllm_build.json"
    est = outdir / "report" / "estimates.json"
    if not info.is_file():
        raise ReportInputError(f"{outdir}: not a flexllm project ({info.name} missing; run flexllm build first)")
    if not est.is_file():
        raise ReportInputError(f"{est} missing: the project was written by an older flexllm; rebuild it")
    project = json.loads(info.read_text())["project"]
    estimates = json.loads(est.read_text())
    if "cost_model" not in estimates:
        raise ReportInputError(f"{est} has no cost_model descriptions; rebuild the project")
    return {"project": project, "estimates": estimates}


def _linear_macs(model) -> int:
    s = model.schedule
    block = sum(c["d_in"] * c["d_out"] for c in s["block"] if c["unit"] == "UNIT_LINEAR")
    tail = sum(c["d_in"] * c["d_out"] for c in s["tail"] if c["unit"] == "UNIT_LINEAR")
    return model.n_layers * block + tail


def _roofline(decode, board, project) -> Dict:
    m = project["model"]
    f = decode.clock_mhz * 1e6
    max_ctx = int(m["max_context"])
    contexts = sorted({c for c in (2 ** i for i in range(3, 20)) if c <= max_ctx} | {max_ctx})
    port_rate = min(board.hbm_channel_gbps * 1e9, WORD_BYTES * f)          # bytes/s of one 512-bit port
    weight_bytes = _linear_macs(decode) * m["weight_bits"] / 8
    row = kv_row_bytes(m["head_dim"])
    att = decode.attention
    attn_lanes = att.head_lanes * att.key_lanes * att.head_dim
    modeled, hbm, compute, board_hbm = [], [], [], []
    for c in contexts:
        modeled.append(f / sum(decode.decode_token_cycles(c - 1).values()))
        kv_one = m["num_layers"] * m["num_kv_heads"] * c * row             # K (or V) bytes read per token
        hbm.append(1.0 / max(weight_bytes / (decode.engine.ports * port_rate), kv_one / port_rate))
        board_hbm.append(board.hbm_channels * board.hbm_channel_gbps * 1e9 / (weight_bytes + 2 * kv_one))
        attn_macs = 2 * m["num_layers"] * m["num_heads"] * m["head_dim"] * c
        compute.append(1.0 / (_linear_macs(decode) / (decode.engine.macs_per_cycle * f) + attn_macs / (attn_lanes * f)))
    return {"contexts": contexts, "modeled": modeled, "hbm": hbm, "compute": compute, "board_hbm": board_hbm,
            "weight_bytes": weight_bytes, "port_GBps": port_rate / 1e9}


def _hbm(project, board, decode, context: int) -> Dict:
    m = project["model"]
    f = decode.clock_mhz * 1e6
    rate = min(board.hbm_channel_gbps * 1e9, WORD_BYTES * f)
    stored: Dict[str, Dict[str, float]] = {}
    read: Dict[str, float] = {}
    kv_one = m["num_layers"] * m["num_kv_heads"] * context * kv_row_bytes(m["head_dim"])
    for b in project["buffers"]:
        if not b["memory"].startswith("HBM"):
            continue
        kind = ("weights" if b["name"].startswith("weights") else "KV cache" if b["name"] in ("k_cache", "v_cache")
                else "parameters / embedding / I/O")
        stored.setdefault(b["memory"], {}).setdefault(kind, 0.0)
        stored[b["memory"]][kind] += b["bytes"] / 2 ** 20
        if kind == "weights" and not b["name"].endswith("_prefill"):
            read[b["memory"]] = read.get(b["memory"], 0.0) + b["bytes"]
        elif kind == "KV cache":
            read[b["memory"]] = read.get(b["memory"], 0.0) + kv_one
    channels = [f"HBM[{i}]" for i in range(board.hbm_channels)]
    return {"channels": channels, "stored": stored, "read_ms": [1e3 * read.get(c, 0.0) / rate for c in channels],
            "used": sorted(stored, key=lambda s: int(s[4:-1]))}


def _find_dse(outdir: Path, dse: Optional[Path]) -> Optional[Dict]:
    if dse is not None:
        if not Path(dse).is_file():
            raise ReportInputError(f"--dse {dse}: file not found")
        return json.loads(Path(dse).read_text())
    found = sorted(list(outdir.glob("*.dse.json")) + list((outdir / "report").glob("*.dse.json")))
    return json.loads(found[0].read_text()) if found else None


def write_report(outdir, dse: Optional[Path] = None, log: Callable[[str], None] = lambda s: None) -> Dict:
    outdir = Path(outdir)
    data = _project(outdir)
    project, est = data["project"], data["estimates"]
    board = BOARDS[est["board"]]
    models = {s: model_of_description(d, board.name) for s, d in est["cost_model"].items()}
    prefill, decode = models["prefill"], models["decode"]
    rdir = outdir / "report"
    rdir.mkdir(exist_ok=True)
    figs: Dict[str, str] = {}
    reports = {}
    for stage, model in models.items():
        reports[stage] = model.budget_report()
        figs[f"resources_{stage}"] = figures.resources_per_slr(reports[stage], model.name, board,
                                                               rdir / f"resources_{stage}.png").name
    roof = _roofline(decode, board, project)
    figs["roofline"] = figures.decode_roofline(
        roof["contexts"], roof["modeled"], roof["hbm"], roof["compute"], roof["board_hbm"],
        f"{decode.name}: decode roofline ({board.name}, {decode.clock_mhz:.0f} MHz, BP {decode.engine.ports}, "
        f"{decode.engine.macs_per_cycle} MAC/cycle)", rdir / "roofline_decode.png").name
    m = project["model"]
    prompt = min(1024, int(m["max_prompt"]))
    ctx = min(1024, int(m["max_context"]))
    f = decode.clock_mhz * 1e6
    pre_ms = {k: 1e3 * v / f for k, v in prefill.prefill_cycles(prompt).items()}
    dec_ms = {k: 1e3 * v / f for k, v in decode.decode_token_cycles(ctx - 1).items()}
    figs["latency"] = figures.latency_breakdown(pre_ms, dec_ms, f"prefill of {prompt} tokens",
                                                f"one decode token at {ctx} keys", rdir / "latency_breakdown.png").name
    hb = _hbm(project, board, decode, ctx)
    figs["hbm"] = figures.hbm_channels(hb["channels"], hb["stored"], board.hbm_channel_bytes / 2 ** 20, hb["read_ms"],
                                       f"time to read what one decode token reads (weights, K/V at {ctx} keys) at "
                                       f"{min(board.hbm_channel_gbps, WORD_BYTES * f / 1e9):.1f} GB/s per channel",
                                       rdir / "hbm_channels.png").name
    dse_result = _find_dse(outdir, dse)
    if dse_result is not None:
        figs["pareto"] = figures.pareto_fronts(dse_result, rdir / "pareto.png").name
    kernels = {s: models[s].name for s in models}
    measured = find_csynth_reports(outdir, kernels.values())
    rows = []
    for stage, name in kernels.items():
        if name in measured:
            rows.append({"kernel": name, "modeled": reports[stage]["device"], "device": reports[stage]["device_budget"],
                         "measured": measured[name]["measured"]})
    implemented = find_implementation_reports(outdir, kernels.values(), float(est["clock_MHz"]))
    for stage, name in kernels.items():
        u = (implemented.get(name) or {}).get("utilization")
        if u is not None and name not in measured:
            rows.append({"kernel": f"{name} (implemented)", "modeled": reports[stage]["device"],
                         "device": reports[stage]["device_budget"], "measured": u["device"]})
    mm = figures.modeled_vs_measured(rows, rdir / "modeled_vs_measured.png")
    if mm is not None:
        figs["modeled_vs_measured"] = mm.name
    index = rdir / "index.html"
    index.write_text(_html(project, est, board, reports, kernels, figs, roof, pre_ms, dec_ms, prompt, ctx, measured,
                           dse_result, implemented, models))
    log(f"report written to {index}")
    return {"index": str(index), "figures": {k: str(rdir / v) for k, v in figs.items()},
            "measured": sorted(measured), "dse": dse_result is not None,
            "implementation": {k: implementation_summary(r, reports[next(s for s in kernels if kernels[s] == k)],
                                                         models[next(s for s in kernels if kernels[s] == k)],
                                                         float(est["clock_MHz"]), ctx, prompt)
                               for k, r in implemented.items()}}


def implementation_summary(r: Dict, budget_report: Dict, model, target_mhz: float, ctx: int, prompt: int) -> Dict:
    """Measured (place and route) next to modeled for one kernel: resources per SLR, WNS, the clock reached,
    and the modeled speed at that clock (the cycle counts are the model's; only the clock is measured)."""
    t, u = r.get("timing") or {}, r.get("utilization") or {}
    mhz = r.get("achieved_mhz")
    f = model.clock_mhz * 1e6
    dec_s = sum(model.decode_token_cycles(ctx - 1).values()) / f
    pre_s = sum(model.prefill_cycles(prompt).values()) / f
    scale = (mhz / target_mhz) if mhz else None
    return {"wns_ns": t.get("wns_ns"), "whs_ns": t.get("whs_ns"), "timing_met": t.get("met"),
            "target_mhz": target_mhz, "achieved_mhz": mhz, "scaling": r.get("scaling"),
            "kernel_clock": r.get("kernel_clock"),
            "measured_device": u.get("device"), "measured_slr": u.get("slr"),
            "modeled_device": budget_report["device"], "modeled_slr": budget_report.get("slr"),
            "modeled_decode_tokens_per_s_at_target": round(1.0 / dec_s, 2),
            "modeled_decode_tokens_per_s_at_achieved": None if scale is None else round(scale / dec_s, 2),
            "modeled_prefill_seconds_at_target": round(pre_s, 5),
            "modeled_prefill_seconds_at_achieved": None if scale is None else round(pre_s / scale, 5),
            "files": {"utilization": u.get("file"), "timing": t.get("file")}}


def _implementation_html(implemented, reports, kernels, models, target_mhz, ctx, prompt) -> list:
    e = html.escape
    if not implemented:
        return ["<p class=note>No implementation report found (U280: build/hw/_x_&lt;kernel&gt;/reports/link/imp/"
                "impl_1_full_util_routed.rpt and impl_1_hw_bb_locked_timing_summary_routed.rpt after <code>make "
                "xclbin</code>; V80: build/vivado/&lt;kernel&gt;/build/prj.runs/impl_1/ after <code>make pdi</code>)."
                "</p>"]
    parts = ["<h2>Measured (place and route) next to modeled</h2>"]
    rows = []
    for stage, name in kernels.items():
        if name not in implemented:
            continue
        s = implementation_summary(implemented[name], reports[stage], models[stage], target_mhz, ctx, prompt)
        rows.append((name, s["wns_ns"], "met" if s["timing_met"] else "VIOLATED", s["target_mhz"],
                     s["achieved_mhz"] if s["achieved_mhz"] is not None else "-",
                     "v++ scaled" if s["scaling"] else "from WNS",
                     s["modeled_decode_tokens_per_s_at_target"], s["modeled_decode_tokens_per_s_at_achieved"],
                     s["modeled_prefill_seconds_at_target"], s["modeled_prefill_seconds_at_achieved"]))
        res_rows = []
        for key in figures.KEYS:
            meas = (s["measured_device"] or {}).get(key)
            slr = ", ".join("-" if x.get(key) is None else f"{x[key]:,.0f}" for x in (s["measured_slr"] or []))
            mod_slr = ", ".join(f"{x['resources'][key]:,.0f}" for x in (s["modeled_slr"] or []) if "resources" in x)
            res_rows.append((key.upper(), f"{s['modeled_device'][key]:,.0f}", "-" if meas is None else f"{meas:,.0f}",
                             mod_slr or "-", slr or "-"))
        parts.append(f"<h3>{e(name)}</h3>")
        parts.append(_table(["resource", "modeled (kernel)", "measured (whole device, shell included)",
                             "modeled per SLR", "measured per SLR"], res_rows))
    parts.insert(1, _table(["kernel", "WNS (ns)", "timing", "target MHz", "achieved MHz", "clock from",
                            f"modeled decode tok/s @{ctx} keys, target clock", "same, achieved clock",
                            f"modeled prefill s ({prompt} tokens), target clock", "same, achieved clock"], rows))
    return parts


def _table(head, rows) -> str:
    h = "".join(f"<th>{html.escape(str(x))}</th>" for x in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def _html(project, est, board, reports, kernels, figs, roof, pre_ms, dec_ms, prompt, ctx, measured, dse,
          implemented=None, models=None) -> str:
    e = html.escape
    keys = figures.KEYS
    parts = [f"<h1>flexllm report: {e(project['name'])}</h1>",
             f"<p>Board <b>{e(board.name)}</b> ({e(board.part)}, {e(board.platform)}), kernel clock "
             f"{est['clock_MHz']} MHz. Budget: {100 * board.device_cap:.0f} % of the device and "
             f"{100 * board.slr_cap:.0f} % of an SLR per resource; HBM {board.hbm_channels} channels of "
             f"{board.hbm_channel_bytes / 2 ** 20:,.0f} MB at {board.hbm_channel_gbps} GB/s sustained.</p>",
             f"<p class=note>{e(est['what'])}</p>"]
    if board.unverified:
        parts.append("<p class=note>Board figures not checked against AMD documents: "
                     + "; ".join(e(u) for u in board.unverified) + "</p>")
    parts.append("<h2>Modeled figures</h2>")
    parts.append(_table(["context (keys)", "decode tokens/s"], [(c, v if v is not None else "beyond MaxContext")
                                                               for c, v in est["decode_tokens_per_s"].items()]))
    parts.append(_table(["prompt tokens", "prefill seconds"], [(n, v if v is not None else "beyond MaxSeqLen")
                                                              for n, v in est["prefill_seconds"].items()]))
    parts.append("<h2>Resources per kernel</h2>")
    rows = []
    for stage, rep in reports.items():
        meas = measured.get(kernels[stage], {}).get("measured")
        for k in keys:
            rows.append((kernels[stage], k.upper(), f"{rep['device'][k]:,}", f"{100 * rep['device_utilization'][k]:.1f} %",
                         "-" if not meas or meas[k] is None else f"{meas[k]:,.0f}"))
    parts.append(_table(["kernel", "resource", "modeled", "modeled share", "measured (csynth)"], rows))
    for stage in reports:
        parts.append(f"<figure><img src='{figs['resources_' + stage]}'><figcaption>{e(kernels[stage])}: modules "
                     "placed per SLR by the cost model, stacked by kind, against the per-SLR budget.</figcaption></figure>")
    if "modeled_vs_measured" in figs:
        parts.append("<h2>Measured (Vitis HLS csynth) next to modeled</h2>")
        rows = []
        for name, r in measured.items():
            c = r["CSynthesisReport"]
            rows.append((name, c.get("TargetClockPeriod"), c.get("EstimatedClockPeriod"), c.get("BestLatency"),
                         c.get("WorstLatency"), r["file"]))
        parts.append(_table(["kernel", "target clock (ns)", "estimated clock (ns)", "best latency (cycles)",
                             "worst latency (cycles)", "report"], rows))
        parts.append(f"<figure><img src='{figs['modeled_vs_measured']}'><figcaption>Device share per resource: "
                     "cost model vs csynth.</figcaption></figure>")
    else:
        parts.append("<p class=note>No synthesis report found (hls/&lt;kernel&gt;_prj/sol/syn/report/"
                     "&lt;kernel&gt;_csynth.xml, written by <code>make hls</code>): figures are modeled only.</p>")
    parts += _implementation_html(implemented or {}, reports, kernels, models or {}, float(est["clock_MHz"]), ctx,
                                  prompt)
    parts.append("<h2>Decode roofline</h2>")
    parts.append(f"<figure><img src='{figs['roofline']}'><figcaption>Modeled tokens/s against the HBM ceiling of the "
                 f"kernel's ports ({roof['weight_bytes'] / 2 ** 20:,.1f} MB of weights per token over the weight ports, "
                 f"K and V on their channels, {roof['port_GBps']:.1f} GB/s per port) and the compute ceiling of its MAC "
                 "arrays (linear engine + attention lanes).</figcaption></figure>")
    parts.append("<h2>Latency per unit</h2>")
    parts.append(f"<figure><img src='{figs['latency']}'><figcaption>Prefill of {prompt} tokens and one decode token "
                 f"at {ctx} keys, by unit.</figcaption></figure>")
    parts.append("<h2>HBM channels</h2>")
    parts.append(f"<figure><img src='{figs['hbm']}'><figcaption>What each pseudo-channel stores and how long one "
                 "decode token's reads from it take.</figcaption></figure>")
    if dse is not None:
        b = dse["best"]
        parts.append("<h2>Design-space search</h2>")
        parts.append(f"<p>{e(dse['config'])} on {e(dse['board'])}, objective {e(dse['objective'])}, "
                     f"{dse['mode']} search over {dse['space_size']:,} designs in {dse['search_seconds']} s. Chosen: "
                     + ", ".join(f"{e(k)}={e(str(v))}" for k, v in b["knobs"].items())
                     + f"; decode {b['metrics']['decode_tokens_per_s']:.1f} tokens/s at {dse['context']} keys, "
                     f"prefill {b['metrics']['prefill_seconds']:.3f} s.</p>")
        parts.append(f"<figure><img src='{figs['pareto']}'><figcaption>Pareto fronts of the search; the star is "
                     "the chosen design.</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em} img{max-width:100%} "
             "table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ccc;padding:2px 8px;"
             "text-align:right} .note{color:#555;font-size:90%}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>flexllm report {e(project['name'])}</title>"
            f"<style>{style}</style></head><body>" + "\n".join(parts) + "</body></html>\n")
