"""``flexllm`` command line: perplexity, per-stage QONNX export, and the main job (``run``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from typing import List, Optional

from .config import ConfigError, load_config


def _log(quiet: bool):
    def log(msg: str):
        if quiet:
            return
        from brevitas_models.progress import enabled
        if enabled():            # do not break a progress bar's line
            from tqdm import tqdm
            tqdm.write(f"[flexllm] {msg}", file=sys.stderr)
        else:
            print(f"[flexllm] {msg}", file=sys.stderr, flush=True)
    return log


def _perplexity(cfg, weights, spec, text_path, max_tokens, ctx, log, calibration_text_path=None):
    """Perplexity of the first ``max_tokens`` tokens of the text. Calibration uses the last
    CalibrationTokens tokens of ``calibration_text_path`` if given, else of the same text (then the two
    parts must not overlap)."""
    import torch
    from brevitas_models.build import build_model, default_cache_dir
    from brevitas_models.evaluation import perplexity
    from brevitas_models.text import encode, load_text, windows
    text = load_text(text_path)
    calib_text = text if calibration_text_path is None else load_text(calibration_text_path)
    tokens = encode(weights.tokenizer, text)
    calib = spec.calibration_tokens if spec.needs_calibration else 0
    if calibration_text_path is None:
        if max_tokens + calib > tokens.numel():
            raise ConfigError(f"--max-tokens {max_tokens} plus {calib} calibration tokens exceed the "
                              f"{tokens.numel()} tokens of the text")
    else:
        if max_tokens > tokens.numel():
            raise ConfigError(f"--max-tokens {max_tokens} exceeds the {tokens.numel()} tokens of the text "
                              f"{text_path or '(pydoc topics)'}")
        n_calib = encode(weights.tokenizer, calib_text).numel() if calib else 0
        if calib > n_calib:
            raise ConfigError(f"--calibration-text {calibration_text_path}: {n_calib} tokens, fewer than the "
                              f"{calib} calibration tokens (Quantization.CalibrationTokens)")
    t0 = time.perf_counter()
    model = build_model(weights, spec, calib_text=calib_text, max_positions=max(ctx, 512), log=log,
                        cache_dir=default_cache_dir())
    t1 = time.perf_counter()
    with torch.no_grad():
        result = perplexity(model, windows(tokens[:max_tokens], ctx))
    t2 = time.perf_counter()
    return {
        "ppl": result["ppl"], "tokens": result["scored_tokens"], "ctx": ctx, "quant": spec.name,
        "rotation": spec.rotation, "gptq": spec.gptq, "source": weights.source,
        "calibration_tokens": calib,
        "calibration_text": (None if not calib else str(calibration_text_path) if calibration_text_path
                             else "end of the evaluated text"),
        "build_seconds": round(t1 - t0, 2), "eval_seconds": round(t2 - t1, 2),
    }


def cmd_ppl(args) -> dict:
    cfg = load_config(args.config)
    log = _log(args.quiet)
    spec = cfg.quant_spec(args.quant, args.rotation)
    weights = cfg.load_weights()
    return _perplexity(cfg, weights, spec, args.text, args.max_tokens, args.ctx, log,
                       calibration_text_path=args.calibration_text)


def cmd_export(args) -> dict:
    from brevitas_models.build import build_model, default_cache_dir
    from brevitas_models.export import export_stage
    from brevitas_models.text import encode, load_text
    cfg = load_config(args.config)
    log = _log(args.quiet)
    spec = cfg.quant_spec(args.quant, args.rotation)
    arch_over = dict(cfg["Model"]["Architecture"] or {})
    if args.layers is not None:
        arch_over["num_layers"] = args.layers
        cfg.data["Model"]["Architecture"] = arch_over
    weights = cfg.load_weights()
    t0 = time.perf_counter()
    model = build_model(weights, spec, log=log, cache_dir=default_cache_dir())
    t1 = time.perf_counter()
    tokens = encode(weights.tokenizer, load_text(args.text))
    info = export_stage(model, args.stage, args.out, tokens, seq_len=args.seq_len)
    info = dict(info)
    info.update({"stage": args.stage, "quant": spec.name, "rotation": spec.rotation,
                 "build_seconds": round(t1 - t0, 2), "out": str(args.out)})
    return info


def cmd_run(args) -> dict:
    """The main job: float and quantized perplexity, then both QONNX stages."""
    from brevitas_models.build import build_model, default_cache_dir
    from brevitas_models.export import export_stage
    from brevitas_models.text import encode, load_text
    cfg = load_config(args.config)
    log = _log(args.quiet)
    weights = cfg.load_weights()
    spec = cfg.quant_spec()
    float_spec = cfg.quant_spec("float", "none")
    log(f"perplexity of the float model ({weights.source})")
    ppl_float = _perplexity(cfg, weights, float_spec, None, args.max_tokens, args.ctx, log)
    log(f"perplexity of {spec.name} (rotation {spec.rotation}, GPTQ {spec.gptq})")
    ppl_quant = _perplexity(cfg, weights, spec, None, args.max_tokens, args.ctx, log)
    out = Path(args.out) if args.out else cfg.output_dir / "qonnx"
    model = build_model(weights, spec, log=log, cache_dir=default_cache_dir())
    tokens = encode(weights.tokenizer, load_text(None))
    exports = {}
    for stage in ("prefill", "decode"):
        log(f"exporting the {stage} stage to {out / stage}")
        exports[stage] = export_stage(model, stage, out / stage, tokens)
    return {"float": ppl_float, "quantized": ppl_quant,
            "ppl_ratio": ppl_quant["ppl"] / ppl_float["ppl"], "export": exports}


def cmd_build(args) -> dict:
    from .project.builder import build_project
    cfg = load_config(args.config)
    if args.layers is not None:
        arch_over = dict(cfg["Model"]["Architecture"] or {})
        arch_over["num_layers"] = args.layers
        cfg.data["Model"]["Architecture"] = arch_over
    return build_project(cfg, args.out, log=_log(args.quiet), force=args.force)


def cmd_verify(args) -> dict:
    from .project.verify import verify
    return verify(args.outdir, args.prompt, args.max_new_tokens, log=_log(args.quiet))


def cmd_generate(args) -> dict:
    from .project.verify import generate
    return generate(args.outdir, args.prompt, args.max_new_tokens, args.top_k, args.temperature, args.seed,
                    log=_log(args.quiet))


def cmd_cache(args) -> dict:
    from brevitas_models.build import cache_entries, clear_cache, default_cache_dir
    cache_dir = default_cache_dir()
    if args.action == "clear":
        return {"cache_dir": str(cache_dir) if cache_dir else None, "removed": clear_cache(cache_dir)}
    return {"cache_dir": str(cache_dir) if cache_dir else None, "entries": cache_entries(cache_dir)}


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("flexllm")
    except Exception:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flexllm", description="FlexLLM: Brevitas Llama -> QONNX -> U280 Vitis project",
                                epilog="User errors exit with status 2 and one line naming the key, file or tensor.")
    p.add_argument("--version", action="version", version=f"flexllm {_version()}", help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    out_opts = argparse.ArgumentParser(add_help=False)
    out_opts.add_argument("--json", action="store_true", help="print one JSON object (for machines) instead of text")
    out_opts.add_argument("--quiet", action="store_true",
                          help="no progress bars or messages on stderr (also silences hls4ml and Brevitas)")
    out_opts.add_argument("--debug", action="store_true",
                          help="show tracebacks and the output of hls4ml / the compilers")

    def model_opts(sp):
        sp.add_argument("config", help="flexllm YAML config (see README: Config format)")
        sp.add_argument("--quant", choices=["float", "w8a8", "w4a8", "flexllm-w4a4"], default=None,
                        help="quantization preset (default: the config's Quantization.Preset)")
        sp.add_argument("--rotation", choices=["none", "hadamard"], default=None,
                        help="override the preset's rotation")
        sp.add_argument("--text", default=None, help="text file (default: CPython's pydoc topics)")

    sp = sub.add_parser("ppl", parents=[out_opts], help="perplexity of the (quantized) model on real text")
    model_opts(sp)
    sp.add_argument("--max-tokens", type=int, default=8192, help="tokens to score (default 8192)")
    sp.add_argument("--ctx", type=int, default=512, help="context window length in tokens (default 512)")
    sp.add_argument("--calibration-text", default=None,
                    help="calibrate on the last CalibrationTokens tokens of this file instead of the end of "
                         "--text (then all of --text can be evaluated)")
    sp.set_defaults(func=cmd_ppl)

    sp = sub.add_parser("export", parents=[out_opts], help="export one stage as QONNX + reference.npz")
    model_opts(sp)
    sp.add_argument("--stage", choices=["prefill", "decode"], required=True, help="which stage graph to export")
    sp.add_argument("--seq-len", type=int, default=None, help="prefill length L / decode past length P")
    sp.add_argument("--layers", type=int, default=None, help="export only the first N decoder layers")
    sp.add_argument("--out", required=True, type=Path, help="directory for model.onnx and reference.npz")
    sp.set_defaults(func=cmd_export)

    sp = sub.add_parser("run", parents=[out_opts], help="main job: float vs quantized perplexity, export both stages")
    sp.add_argument("config", help="flexllm YAML config")
    sp.add_argument("--max-tokens", type=int, default=8192, help="tokens to score (default 8192)")
    sp.add_argument("--ctx", type=int, default=512, help="context window length in tokens (default 512)")
    sp.add_argument("--out", default=None, help="export directory (default: OutputDir/qonnx)")
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("build", parents=[out_opts],
                        help="generate the U280 Vitis project (kernels, weights, host, build files)")
    sp.add_argument("config", help="flexllm YAML config")
    sp.add_argument("--out", default=None, type=Path,
                    help="output directory (default: the config's OutputDir); must be missing, empty or a "
                         "previous flexllm project")
    sp.add_argument("--force", action="store_true",
                    help="also write into a non-empty directory that is not a flexllm project (its files are "
                         "kept; a name clash is still an error)")
    sp.add_argument("--layers", type=int, default=None, help="build only the first N decoder layers")
    sp.set_defaults(func=cmd_build)

    for name, func, helptext in (("verify", cmd_verify, "C-simulate a built project against the golden model"),
                                 ("generate", cmd_generate, "print the text the C simulation generates")):
        sp = sub.add_parser(name, parents=[out_opts], help=helptext)
        sp.add_argument("outdir", type=Path, help="a project directory written by flexllm build")
        sp.add_argument("--prompt", required=True, help="prompt text")
        sp.add_argument("--max-new-tokens", type=int, default=32, help="tokens to generate (default 32)")
        if name == "generate":
            sp.add_argument("--top-k", type=int, default=None,
                            help="sample among the K most likely tokens (default: the project's Decode.Sampling/TopK)")
            sp.add_argument("--temperature", type=float, default=None,
                            help="softmax temperature; 0 = greedy (default: the project's Decode.Temperature)")
            sp.add_argument("--seed", type=int, default=1, help="random seed of top-k sampling (default 1)")
        sp.set_defaults(func=func)

    sp = sub.add_parser("cache", parents=[out_opts], help="list or clear the calibrated-model cache "
                        "($FLEXLLM_CACHE, default ~/.cache/flexllm)")
    sp.add_argument("action", choices=["list", "clear"], help="list the cached models, or remove them")
    sp.set_defaults(func=cmd_cache)
    return p


USER_ERRORS = (ConfigError, FileNotFoundError, ValueError, PermissionError, NotADirectoryError, IsADirectoryError)


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror and e.filename:
        return f"{e.filename}: {e.strerror}"
    lines = str(e).strip().splitlines() or [type(e).__name__]
    more = " (run with --debug for the full message)" if len(lines) > 1 else ""
    return lines[0] + more


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("max_tokens", "ctx", "seq_len", "layers", "max_new_tokens"):
        value = getattr(args, name, None)
        if value is not None and value <= 0:
            print(f"flexllm: error: --{name.replace('_', '-')} must be positive, got {value}", file=sys.stderr)
            return 2
    from .ui import configure, render
    configure(quiet=args.quiet, debug=args.debug)
    try:
        result = args.func(args)
    except USER_ERRORS as e:
        if args.debug:
            traceback.print_exc()
        print(f"flexllm: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("flexllm: interrupted", file=sys.stderr)
        return 130
    except Exception as e:     # a bug, not a user error: one line unless --debug
        if args.debug:
            traceback.print_exc()
        print(f"flexllm: internal error: {type(e).__name__}: {_one_line(e)}"
              f"{'' if args.debug else ' (run with --debug for the traceback)'}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, default=float))
    else:
        print(render(args.command, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
