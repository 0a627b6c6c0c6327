"""What people see: progress, the chatter of the tools underneath, and results as text.

* :func:`configure` sets the process-wide mode from ``--quiet`` / ``--debug`` (progress bars on unless
  quiet; Python warnings off when quiet, and Brevitas' "fast_hadamard_transform not found" always).
* :func:`tool_output` wraps calls into hls4ml: its stdout dump (topology, "Creating HLS model") is
  dropped, or sent to stderr with ``--debug``.
* :func:`render` turns a command's result dict into text (``--json`` prints the dict instead).
"""

from __future__ import annotations

import contextlib
import io
import sys
import warnings
from typing import Any, Dict

_MODE = {"quiet": False, "debug": False}


def configure(quiet: bool = False, debug: bool = False) -> None:
    from brevitas_models.progress import set_enabled

    _MODE.update(quiet=bool(quiet), debug=bool(debug))
    set_enabled(not quiet)
    warnings.filterwarnings("ignore", message=".*fast_hadamard_transform package not found.*")
    if quiet and not debug:
        warnings.simplefilter("ignore")


def quiet() -> bool:
    return _MODE["quiet"]


@contextlib.contextmanager
def tool_output():
    """Run third-party code whose stdout is progress chatter: dropped unless --debug (then stderr)."""
    target = sys.stderr if _MODE["debug"] else io.StringIO()
    with contextlib.redirect_stdout(target):
        yield


# ---- rendering -------------------------------------------------------------------------------------
def _mb(n: int) -> str:
    return f"{n / 2**20:.2f} MB" if n >= 2**20 else f"{n / 1024:.1f} kB" if n >= 1024 else f"{n} B"


def render(command: str, result: Dict[str, Any]) -> str:
    fn = _RENDERERS.get(command)
    if fn is None:
        return "\n".join(f"{k}: {v}" for k, v in result.items())
    return fn(result)


def _build(r):
    lines = [f"Project {r['name']} written to {r['output_dir']} in {r['seconds']['total']:.1f} s "
             f"(model {r['seconds']['model']:.1f} s, conversion {r['seconds']['convert']:.1f} s)", "",
             "Buffers:"]
    for name, b in r["buffers"].items():
        lines.append(f"  {name:<16} {b['memory']:<8} {_mb(b['bytes'])}")
    e = r["estimates"]
    lines += ["", f"Estimates (cost model at {e['clock_MHz']} MHz, not synthesis; {e['report']}):",
              "  decode tokens/s by context: " + ", ".join(f"{c}: {v if v is not None else '-'}"
                                                            for c, v in e["decode_tokens_per_s"].items()),
              "  prefill seconds by prompt:  " + ", ".join(f"{n}: {v if v is not None else '-'}"
                                                            for n, v in e["prefill_seconds"].items())]
    for name, k in e["kernels"].items():
        lines.append(f"  {name}: " + ", ".join(f"{key.upper()} {k['resources'][key]:,} ({100 * k['utilization'][key]:.0f} %)"
                                              for key in ("dsp", "lut", "ff", "bram36", "uram")))
    lines += ["",
              f"Next: flexllm verify {r['output_dir']} --prompt 'Hello'   (C simulation vs the golden model)",
              f"      make -C {r['output_dir']} csim | hls | "
              + ("pdi AVED_DIR=...   (V80, AVED flow)" if r.get("flow") == "aved" else "xclbin")]
    return "\n".join(lines)


def _verify(r):
    verdict = "MATCH" if r["match"] else "MISMATCH"
    lines = [f"{verdict}: C simulation vs golden model over {r['new_tokens']} new tokens "
             f"({r['prompt_tokens']} prompt tokens)",
             f"  tokens equal: {r['tokens_match']}   KV cache equal: {r['kv_cache_match']}   "
             f"max logit rel. error: {r['max_logit_rel_err']:.3g}"]
    if r["first_divergence"] is not None:
        lines.append(f"  first divergence at new token {r['first_divergence']}")
    if "segments" in r:          # HMT: the prompt as segments, every pushed memory compared
        mems = r["segment_memories_match"]
        lines.append(f"  HMT: {r['segments']} segments of {r['block']} tokens, memories equal: {sum(mems)}/{len(mems)}, "
                     f"KV cache of {r['kv_positions']} positions (the prompt is {r['prompt_to_compiled_context']}x "
                     "the compiled context)")
    else:
        lines += [f"  Brevitas agreement (teacher-forced greedy): {r['brevitas_agreement']:.3f}   "
                  f"noise floor (Brevitas vs itself, embeddings +-1 ulp): {r['brevitas_noise_floor']:.3f}"]
    if r.get("golden_brevitas_ppl_ratio") is not None:
        lines.append(f"  prompt perplexity: golden {r['golden_prompt_ppl']:.3f}, Brevitas {r['brevitas_prompt_ppl']:.3f} "
                     f"(ratio {r['golden_brevitas_ppl_ratio']:.4f})")
    lines += [
              f"  C simulation {r['csim_seconds']:.1f} s, golden {r['golden_seconds']:.1f} s, total {r['seconds']:.1f} s",
              "", "Generated text:", r["text"]]
    return "\n".join(lines)


def _generate(r):
    return r["text"]


def _ppl(r):
    if "long" in r:
        extra = f", window {r['window']}" if r.get("window") else ""
        return (f"perplexity {r['ppl']:.3f} over {r['tokens']} tokens of segments 2..{r['segments']} "
                f"({r['long']}; segment length {r['segment_length']}, block {r['block']}, sensory "
                f"{r['sensory_tokens']}{extra}; {r['quant']}, backbone {r.get('backbone', 'original')}; model "
                f"{r['build_seconds']:.1f} s, evaluation "
                f"{r['eval_seconds']:.1f} s)")
    return (f"perplexity {r['ppl']:.3f} over {r['tokens']} tokens (ctx {r['ctx']}; {r['quant']}, rotation "
            f"{r['rotation']}, GPTQ {r.get('gptq')}; model {r.get('build_seconds', 0):.1f} s, evaluation "
            f"{r.get('eval_seconds', 0):.1f} s)")


def _hmt_train(r):
    how = "loaded from the cache" if r["cached"] else f"trained in {r['train_seconds']:.0f} s"
    if r.get("train_cpu_seconds") is not None:
        how += f" ({r['train_cpu_seconds']:.0f} s of CPU)"
    lora = (f", LoRA r {r['lora_rank']} on {'/'.join(r['lora_targets'])}" if r.get("lora_rank") else
            ", backbone frozen")
    loss = (f"; loss {r['loss_first5']:.3f} (first 5 steps) -> {r['loss_last5']:.3f} (last 5)"
            if r.get("loss_first5") is not None else "")
    return (f"HMT parameters {how}: {r['steps']} steps of {r['segments_per_step']} segments (L {r['segment_length']}, "
            f"block {r['block']}{lora}) on {r['training_tokens']} tokens of {r['training_text']}{loss}\n"
            f"checkpoint: {r['checkpoint']}")


def _export(r):
    return f"{r['stage']} stage ({r['quant']}, rotation {r['rotation']}) exported to {r['out']}"


def _run(r):
    lines = ["float:     " + _ppl(r["float"]), "quantized: " + _ppl(r["quantized"]),
             f"ratio quantized / float: {r['ppl_ratio']:.3f}"]
    for stage, info in r["export"].items():
        lines.append(f"{stage} stage: {info.get('onnx', info)}")
    return "\n".join(lines)


def _cache(r):
    if "removed" in r:
        return f"removed {r['removed']} cached model(s) from {r['cache_dir']}"
    if r["cache_dir"] is None:
        return "the calibrated-model cache is off (FLEXLLM_CACHE=off)"
    if not r["entries"]:
        return f"no cached calibrated models in {r['cache_dir']}"
    lines = [f"{len(r['entries'])} cached calibrated model(s) in {r['cache_dir']} "
             f"({_mb(sum(e['bytes'] for e in r['entries']))}):"]
    for e in r["entries"]:
        lines.append(f"  {e['file'].rsplit('/', 1)[-1]}  {_mb(e['bytes'])}  {e.get('source', '?')}  "
                     f"{e.get('layers', '?')} layers")
    return "\n".join(lines)


def _dse(r):
    from .dse.render import render_dse
    return render_dse(r)


def _report(r):
    if "candidates" in r and "sweep_dir" in r:              # flexllm report SWEEP_DIR
        from .dse.sweep import render_sweep
        return render_sweep(r) + f"\n(written to {r['sweep_dir']}/sweep_report.json and sweep_report.md)"
    lines = [f"Report written to {r['index']}"]
    lines += [f"  {name}: {path}" for name, path in r["figures"].items()]
    if r.get("measured"):
        lines.append(f"  measured (csynth) next to modeled for: {', '.join(r['measured'])}")
    for k, d in (r.get("implementation") or {}).items():
        lines.append(f"  {k}: implemented, WNS {d['wns_ns']} ns, kernel clock {d['achieved_mhz']} MHz "
                     f"(target {d['target_mhz']}); modeled decode {d['modeled_decode_tokens_per_s_at_achieved']} "
                     "tokens/s at that clock")
    return "\n".join(lines)


_RENDERERS = {"dse": _dse, "report": _report, "build": _build, "verify": _verify, "generate": _generate, "ppl": _ppl,
              "export": _export, "run": _run, "cache": _cache, "hmt-train": _hmt_train}
