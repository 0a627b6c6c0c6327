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
              f"      make -C {r['output_dir']} csim | hls | xclbin"]
    return "\n".join(lines)


def _verify(r):
    verdict = "MATCH" if r["match"] else "MISMATCH"
    lines = [f"{verdict}: C simulation vs golden model over {r['new_tokens']} new tokens "
             f"({r['prompt_tokens']} prompt tokens)",
             f"  tokens equal: {r['tokens_match']}   KV cache equal: {r['kv_cache_match']}   "
             f"max logit rel. error: {r['max_logit_rel_err']:.3g}"]
    if r["first_divergence"] is not None:
        lines.append(f"  first divergence at new token {r['first_divergence']}")
    lines += [f"  Brevitas agreement (teacher-forced greedy): {r['brevitas_agreement']:.3f}   "
              f"noise floor (Brevitas vs itself, embeddings +-1 ulp): {r['brevitas_noise_floor']:.3f}",
              ]
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
    return (f"perplexity {r['ppl']:.3f} over {r['tokens']} tokens (ctx {r['ctx']}; {r['quant']}, rotation "
            f"{r['rotation']}, GPTQ {r.get('gptq')}; model {r.get('build_seconds', 0):.1f} s, evaluation "
            f"{r.get('eval_seconds', 0):.1f} s)")


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


_RENDERERS = {"build": _build, "verify": _verify, "generate": _generate, "ppl": _ppl, "export": _export,
              "run": _run, "cache": _cache}
