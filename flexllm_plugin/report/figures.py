"""The figures of ``flexllm report`` (matplotlib, Agg backend: no display needed). Each function takes plain
data / cost-model objects and writes one PNG; labelled axes with units, legends, titles."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

KEYS = ("dsp", "lut", "ff", "bram36", "uram")
CATEGORIES = (("linear engine", ("linear_",)), ("attention", ("attention_",)), ("buffers", ("buffer_",)),
              ("element-wise", ("rmsnorm", "token_quant", "swiglu", "hadamard", "embedding")),
              ("sampler", ("sampler",)), ("memory ports + control", ("m_axi", "core_control")))
COLORS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3")
DPI = 110


def category(module: str) -> str:
    for name, prefixes in CATEGORIES:
        if module.startswith(prefixes):
            return name
    return "other"


def resources_per_slr(report: Dict, kernel: str, board, path: Path) -> Path:
    """Stacked bars per resource, one panel per SLR: the modules the model places there (by category), as a
    share of the SLR, against the per-SLR cap and the whole SLR."""
    cats = [c for c, _ in CATEGORIES] + ["other"]
    n = len(report["slr"])
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.2), sharey=True)
    axes = list(axes) if n > 1 else [axes]
    slr_cap = board.slr
    top = 100.0
    for i, (ax, slr) in enumerate(zip(axes, report["slr"])):
        bottoms = [0.0] * len(KEYS)
        for ci, cat in enumerate(cats):
            vals = []
            for j, k in enumerate(KEYS):
                used = sum(report["modules"][m][k] for m in slr["modules"] if category(m) == cat)
                vals.append(100.0 * used / max(getattr(slr_cap, k), 1))
            if any(vals):
                ax.bar([k.upper() for k in KEYS], vals, bottom=bottoms, color=COLORS[ci % len(COLORS)],
                       label=cat)
                bottoms = [b + v for b, v in zip(bottoms, vals)]
        top = max(top, 105.0, max(bottoms) * 1.08)
        ax.axhline(100 * board.slr_cap, color="red", linestyle="--", linewidth=1.2,
                   label=f"SLR budget ({100 * board.slr_cap:.0f} %)")
        ax.axhline(100, color="black", linewidth=0.8, label="whole SLR")
        ax.set_title(f"SLR{i}")
        ax.set_xlabel("resource")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("share of one SLR (%)")
    for ax in axes:
        ax.set_ylim(0, top)
    seen = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    fig.legend(list(seen.values()), list(seen.keys()), loc="lower center", ncol=min(len(seen), 5), fontsize=8,
               frameon=False)
    fig.suptitle(f"{kernel}: modeled resources per SLR ({board.name}, module placement of the cost model)")
    fig.tight_layout(rect=(0, 0.1, 1, 0.95))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def decode_roofline(contexts: List[int], modeled: List[float], hbm: List[float], compute: List[float],
                    board_hbm: List[float], title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    ax.plot(contexts, modeled, "o-", color=COLORS[0], label="modeled (cost model)", markersize=3)
    ax.plot(contexts, hbm, "--", color=COLORS[3], label="HBM ceiling of the kernel's ports (weights + K/V)")
    ax.plot(contexts, board_hbm, ":", color=COLORS[5], label="HBM ceiling, every channel of the board")
    ax.plot(contexts, compute, "-.", color=COLORS[2], label="compute ceiling (MAC arrays)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("context (keys in the KV cache)")
    ax.set_ylabel("decode throughput (tokens/s)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def latency_breakdown(prefill_ms: Dict[str, float], decode_ms: Dict[str, float], prefill_label: str,
                      decode_label: str, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    for ax, data, label, unit in ((axes[0], prefill_ms, prefill_label, "ms"), (axes[1], decode_ms, decode_label, "ms")):
        items = sorted(((k, v) for k, v in data.items() if v > 0), key=lambda kv: kv[1])
        names, vals = [k for k, _ in items], [v for _, v in items]
        bars = ax.barh(names, vals, color=COLORS[0])
        total = sum(vals)
        for b, v in zip(bars, vals):
            ax.text(b.get_width(), b.get_y() + b.get_height() / 2, f" {v:.3g} ({100 * v / total:.0f} %)",
                    va="center", fontsize=7)
        ax.set_xlabel(f"time ({unit})")
        ax.set_title(f"{label}: {total:.3g} {unit}")
        ax.set_xlim(0, max(vals) * 1.35 if vals else 1)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_ylabel("unit / step")
    fig.suptitle("Modeled latency per unit (the compute core runs one unit at a time)")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def hbm_channels(channels: List[str], stored_mb: Dict[str, Dict[str, float]], capacity_mb: float,
                 read_ms: List[float], read_label: str, path: Path) -> Path:
    """Top: MB stored per HBM channel, stacked by buffer kind, against the channel capacity; bottom: the
    time to read what one decode token reads from each channel at its sustained rate."""
    kinds = sorted({k for d in stored_mb.values() for k in d})
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(7, 0.32 * len(channels) + 3), 6.4), sharex=True)
    # one bar per channel (log scale: stacking is not meaningful), coloured by what it mostly holds
    totals = [sum(stored_mb.get(c, {}).values()) for c in channels]
    for i, kind in enumerate(kinds):
        xs = [c for c in channels if stored_mb.get(c) and max(stored_mb[c], key=stored_mb[c].get) == kind]
        ax1.bar(xs, [sum(stored_mb[c].values()) for c in xs], color=COLORS[i % len(COLORS)], label=kind)
    ax1.axhline(capacity_mb, color="red", linestyle="--", linewidth=1.2, label=f"capacity ({capacity_mb:,.0f} MB)")
    ax1.set_yscale("log")
    low = min([t for t in totals if t > 0] or [1.0])
    ax1.set_ylim(low / 3, capacity_mb * 3)
    ax1.set_ylabel("stored (MB, log)")
    ax1.set_title("HBM channel usage")
    ax1.legend(fontsize=7, ncol=3)
    ax1.grid(axis="y", alpha=0.3)
    ax2.bar(channels, read_ms, color=COLORS[0])
    ax2.set_ylabel("read per token (ms)")
    ax2.set_xlabel("HBM pseudo-channel")
    ax2.set_title(read_label, fontsize=9)
    ax2.grid(axis="y", alpha=0.3)
    plt.setp(ax2.get_xticklabels(), rotation=90, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def pareto_fronts(dse: Dict, path: Path) -> Path:
    fr = dse["pareto"]
    best = dse["best"]["metrics"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    pts = dse.get("points", {})
    for ax, key, scale_x in ((axes[0], "decode", 100), (axes[1], "prefill", 100), (axes[2], "designs", 1)):
        if pts.get(key):
            ax.scatter([scale_x * x for x, _ in pts[key]], [y for _, y in pts[key]], s=6, color="0.7",
                       label="evaluated designs that fit")
    d = fr["decode_tokens_per_s_vs_utilization"]
    axes[0].step([100 * p["metrics"]["decode_utilization"] for p in d], [p["metrics"]["decode_tokens_per_s"] for p in d],
                 "o-", where="post", color=COLORS[0], markersize=3, label="Pareto front (decode kernel)")
    axes[0].set_xlabel("decode kernel: largest resource share (% of device)")
    axes[0].set_ylabel(f"decode (tokens/s at {dse['context']} keys)")
    p = fr["prefill_seconds_vs_utilization"]
    axes[1].step([100 * q["metrics"]["prefill_utilization"] for q in p], [q["metrics"]["prefill_seconds"] for q in p],
                 "o-", where="post", color=COLORS[1], markersize=3, label="Pareto front (prefill kernels timed)")
    axes[1].set_xlabel("prefill kernel: largest resource share (% of device)")
    axes[1].set_ylabel(f"prefill of {dse['prompt']} tokens (s)")
    pd = fr["prefill_vs_decode"]
    axes[2].plot([q["metrics"]["prefill_seconds"] for q in pd], [q["metrics"]["decode_tokens_per_s"] for q in pd],
                 "o-", color=COLORS[2], markersize=4, label="Pareto front (whole designs)")
    axes[2].set_xlabel(f"prefill of {dse['prompt']} tokens (s)")
    axes[2].set_ylabel(f"decode (tokens/s at {dse['context']} keys)")
    axes[0].plot([100 * max(dse["best"]["decode_kernel"]["utilization"].values())], [best["decode_tokens_per_s"]],
                 "*", color="red", markersize=12, label="chosen design")
    axes[1].plot([100 * max(dse["best"]["prefill_kernel"]["utilization"].values())], [best["prefill_seconds"]],
                 "*", color="red", markersize=12, label="chosen design")
    axes[2].plot([best["prefill_seconds"]], [best["decode_tokens_per_s"]], "*", color="red", markersize=12,
                 label="chosen design")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"flexllm dse on {dse['board']}: objective {dse['objective']} ({dse['mode']} search, "
                 f"{dse['space_size']:,} designs, {dse['search_seconds']} s)")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def modeled_vs_measured(rows: List[Dict], path: Path) -> Optional[Path]:
    """Grouped bars: modeled and csynth resources of each synthesized kernel (share of the device)."""
    if not rows:
        return None
    fig, axes = plt.subplots(1, len(rows), figsize=(6 * len(rows), 4.2), squeeze=False)
    for ax, r in zip(axes[0], rows):
        x = range(len(KEYS))
        ax.bar([i - 0.2 for i in x], [100 * r["modeled"][k] / r["device"][k] for k in KEYS], 0.4, label="modeled",
               color=COLORS[0])
        ax.bar([i + 0.2 for i in x], [100 * (r["measured"][k] or 0) / r["device"][k] for k in KEYS], 0.4,
               label="measured (csynth)", color=COLORS[1])
        ax.set_xticks(list(x), [k.upper() for k in KEYS])
        ax.set_xlabel("resource")
        ax.set_ylabel("share of the device (%)")
        ax.set_title(r["kernel"])
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
