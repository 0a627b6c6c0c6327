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
    if args.long:
        return _long_perplexity(cfg, spec, args, log)
    weights = cfg.load_weights()
    return _perplexity(cfg, weights, spec, args.text, args.max_tokens, args.ctx, log,
                       calibration_text_path=args.calibration_text)


def _hmt_params(cfg, weights, hmt, hidden_size, log):
    """HMT.Checkpoint, else the cache entry `flexllm hmt-train CONFIG` (default settings) wrote."""
    from brevitas_models.build import default_cache_dir
    from brevitas_models.hmt.train import TrainSettings, checkpoint_key, load_checkpoint
    path = cfg["HMT"]["Checkpoint"]
    if path is None:
        cache_dir = default_cache_dir()
        tokens, _ = _hmt_training_tokens(weights, None)
        key = checkpoint_key(weights, hmt, tokens, TrainSettings())
        path = None if cache_dir is None else cache_dir / "hmt" / f"hmt-{key}.pt"
        if path is None or not path.is_file():
            raise ConfigError(f"HMT.Checkpoint{cfg._where()} is not set and no trained HMT parameters for this "
                              f"model and HMT section are cached: run `flexllm hmt-train {cfg.path}` first (or set "
                              "HMT.Checkpoint to the file it printed; `ppl --long` other than hmt also runs "
                              "with --backbone original)")
    log(f"HMT parameters from {path}")
    return load_checkpoint(path, hmt, hidden_size), str(path)


def _long_perplexity(cfg, spec, args, log) -> dict:
    from brevitas_models.build import build_model, default_cache_dir
    from brevitas_models.hmt.long_context import long_context_perplexity
    from brevitas_models.text import encode, load_text
    hmt = cfg.hmt_spec(zero_initial=args.hmt_zero_initial, memory_point=args.hmt_memory_point)
    text = load_text(args.text)
    weights = cfg.load_weights()
    tokens = encode(weights.tokenizer, text)
    need = args.segments * hmt.block
    calib = spec.calibration_tokens if spec.needs_calibration else 0
    if need + calib > tokens.numel():
        raise ConfigError(f"--segments {args.segments} x {hmt.block}-token blocks plus {calib} calibration tokens "
                          f"exceed the {tokens.numel()} tokens of the text")
    params, checkpoint = (None, None)
    if args.long == "hmt" or args.backbone == "hmt":
        params, checkpoint = _hmt_params(cfg, weights, hmt, weights.arch.hidden_size, log)
    from brevitas_models.hmt.backbone import hmt_backbone_weights
    backbone = weights if args.backbone == "original" else hmt_backbone_weights(weights, params)
    adapted = backbone is not weights
    if adapted:
        log("backbone: the float weights with the HMT checkpoint's LoRA adapter merged")
    t0 = time.perf_counter()
    model = build_model(backbone, spec, calib_text=text, log=log, cache_dir=default_cache_dir())
    t1 = time.perf_counter()
    result = long_context_perplexity(model, hmt, tokens, args.segments, args.long, params=params,
                                     final_norm_weight=weights.state_dict.get("model.norm.weight"),
                                     window=args.window)
    t2 = time.perf_counter()
    result.update({"long": result.pop("mode"), "tokens": result.pop("scored_tokens"), "quant": spec.name,
                   "rotation": spec.rotation, "gptq": spec.gptq, "source": weights.source,
                   "segment_length": hmt.segment_length, "sensory_tokens": hmt.sensory_tokens,
                   "summary_tokens": hmt.summary, "memory_slots": hmt.memory_slots,
                   "zero_initial": hmt.zero_initial, "memory_point": hmt.memory_point, "checkpoint": checkpoint,
                   "backbone": "merged LoRA adapter" if adapted else "original",
                   "build_seconds": round(t1 - t0, 2), "eval_seconds": round(t2 - t1, 2)})
    return result


def _hmt_training_tokens(weights, text_path):
    from brevitas_models.hmt.train import stdlib_docstring_text
    from brevitas_models.text import encode, load_text
    text = load_text(text_path) if text_path else stdlib_docstring_text()
    return encode(weights.tokenizer, text), (text_path or "Python standard library docstrings")


def cmd_hmt_train(args) -> dict:
    """Train the HMT memory parameters (T, P_0, W_q, W_k) around the frozen float model."""
    from brevitas_models.build import build_model, default_cache_dir
    from brevitas_models.hmt.train import TrainSettings, train_cached
    cfg = load_config(args.config)
    log = _log(args.quiet)
    hmt = cfg.hmt_spec(memory_point=args.hmt_memory_point)
    given = {"steps": args.steps, "segments": args.segments, "lr": args.lr, "seed": args.seed,
             "lora_rank": args.lora_rank, "lora_lr": args.lora_lr, "segment_length": (None if args.train_segment_length == 0 else args.train_segment_length),
             "lora_start": args.lora_start, "recall_init": args.recall_init,
             "lora_targets": None if args.lora_targets is None else tuple(args.lora_targets.split(","))}
    unset = {k for k, v in given.items() if v is None and not (k == "segment_length" and args.train_segment_length == 0)}
    settings = TrainSettings(**{k: v for k, v in given.items() if k not in unset})   # unset: TrainSettings defaults
    if args.text:
        from brevitas_models.text import load_text
        load_text(args.text)                      # a missing or empty file fails before the model loads
    weights = cfg.load_weights()
    tokens, text_name = _hmt_training_tokens(weights, args.text)
    t0 = time.perf_counter()
    model = build_model(weights, cfg.quant_spec("float", "none"), max_positions=max(512, hmt.segment_length),
                        log=log)
    log(f"training HMT (L {hmt.segment_length}, block {hmt.block}, k {hmt.sensory_tokens}, j {hmt.summary}) on "
        f"{tokens.numel()} tokens of {text_name}: {settings.steps} steps of {settings.segments} segments")
    params, info = train_cached(weights, model, hmt, tokens, settings, default_cache_dir(), log=log)
    losses = info.get("losses") or []
    head, tail = losses[:5], losses[-5:]
    return {"checkpoint": info["checkpoint"], "cached": info["cached"], "steps": settings.steps,
            "segments_per_step": settings.segments, "segment_length": hmt.segment_length, "block": hmt.block,
            "train_segment_length": settings.training_spec(hmt).segment_length,
            "train_block": settings.training_spec(hmt).block, "lora_start": settings.lora_start,
            "recall_init": settings.recall_init,
            "sensory_tokens": hmt.sensory_tokens, "summary_tokens": hmt.summary, "training_text": text_name,
            "lora_rank": settings.lora_rank, "lora_targets": list(settings.lora_targets) if settings.lora_rank else [],
            "training_tokens": int(tokens.numel()), "train_seconds": info.get("seconds"),
            "train_cpu_seconds": info.get("cpu_seconds"),
            "loss_first5": sum(head) / len(head) if head else None,
            "loss_last5": sum(tail) / len(tail) if tail else None, "source": weights.source,
            "seconds": round(time.perf_counter() - t0, 1)}


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


def _prompt_text(args) -> str:
    if args.prompt_file is None:
        return args.prompt
    try:
        return args.prompt_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--prompt-file {args.prompt_file}: {e}") from None


def cmd_verify(args) -> dict:
    from .project.verify import verify
    return verify(args.outdir, _prompt_text(args), args.max_new_tokens, log=_log(args.quiet))


def cmd_generate(args) -> dict:
    from .project.verify import generate
    return generate(args.outdir, _prompt_text(args), args.max_new_tokens, args.top_k, args.temperature, args.seed,
                    log=_log(args.quiet))


def cmd_dse(args) -> dict:
    from .dse.run import run_dse
    return run_dse(Path(args.config), board=args.board, objective=args.objective, prompt=args.prompt,
                   new_tokens=args.new, context=args.context, space=args.space, mode=args.mode, out=args.out,
                   log=_log(args.quiet), build_top=args.build_top or 0)


def cmd_report(args) -> dict:
    from .dse.sweep import collect_sweep, is_sweep
    if is_sweep(args.outdir):
        return collect_sweep(args.outdir)
    from .report.html import write_report
    return write_report(args.outdir, dse=args.dse, log=_log(args.quiet))


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
        sp.add_argument("--rotation", choices=["none", "hadamard", "learned"], default=None,
                        help="override the preset's rotation")
        sp.add_argument("--text", default=None, help="text file (default: CPython's pydoc topics)")

    sp = sub.add_parser("ppl", parents=[out_opts], help="perplexity of the (quantized) model on real text")
    model_opts(sp)
    sp.add_argument("--max-tokens", type=int, default=8192, help="tokens to score (default 8192)")
    sp.add_argument("--ctx", type=int, default=512, help="context window length in tokens (default 512)")
    sp.add_argument("--long", choices=["independent", "sensory", "hmt", "window"], default=None,
                    help="long-context perplexity over the config's HMT segments: blocks alone, with the "
                         "previous block's sensory tokens, with HMT memory, or with every preceding token up "
                         "to --window (the same tokens are scored in every mode)")
    sp.add_argument("--segments", type=int, default=16,
                    help="with --long: segments of the text (segment 0 is context only; default 16)")
    sp.add_argument("--window", type=int, default=None,
                    help="with --long window: context positions (default: the model's, at most 8192)")
    sp.add_argument("--hmt-zero-initial", action="store_true",
                    help="with --long hmt: FlexLLM testbench convention, zero P_0 and zero first sensory tokens")
    sp.add_argument("--hmt-memory-point", choices=["post_norm", "pre_norm"], default="post_norm",
                    help="with --long hmt: read S_n and M_n after the final norm (default) or before it")
    sp.add_argument("--backbone", choices=["hmt", "original"], default="hmt",
                    help="with --long: the backbone of the HMT checkpoint (its LoRA adapter merged into the "
                         "float weights before calibration; the default, in every mode) or the original weights")
    sp.add_argument("--calibration-text", default=None,
                    help="calibrate on the last CalibrationTokens tokens of this file instead of the end of "
                         "--text (then all of --text can be evaluated)")
    sp.set_defaults(func=cmd_ppl)

    sp = sub.add_parser("hmt-train", parents=[out_opts],
                        help="train the HMT memory parameters (T, P_0, W_q, W_k) and a LoRA adapter of the "
                             "backbone on CPU")
    # Unset options take brevitas_models.hmt.train.TrainSettings' defaults (the README's recipe; not imported
    # here so the CLI starts without torch).
    sp.add_argument("config", help="flexllm YAML config (its HMT section gives the sizes)")
    sp.add_argument("--text", default=None,
                    help="training text file (default: the Python standard library's docstrings, never the "
                         "evaluation text)")
    sp.add_argument("--steps", type=int, default=None, help="optimiser steps (default: TrainSettings.steps)")
    sp.add_argument("--segments", type=int, default=None,
                    help="segments per step, backpropagated through together (default: TrainSettings.segments)")
    sp.add_argument("--lr", type=float, default=None,
                    help="Adam learning rate of T, P_0, W_q, W_k (default: TrainSettings.lr; warm-up, then cosine decay)")
    sp.add_argument("--lora-rank", type=int, default=None,
                    help="rank of the LoRA adapter of the backbone, merged into its weights for every consumer "
                         "(default: TrainSettings.lora_rank; 0: backbone frozen, no adapter)")
    sp.add_argument("--lora-targets", default=None,
                    help="comma-separated projections of every decoder layer the adapter adapts "
                         "(default: TrainSettings.lora_targets)")
    sp.add_argument("--lora-lr", type=float, default=None,
                    help="Adam learning rate of the adapter (default: TrainSettings.lora_lr)")
    sp.add_argument("--recall-init", type=float, default=None,
                    help="W_q and W_k start at this times the identity (default: TrainSettings.recall_init, 1)")
    sp.add_argument("--lora-start", type=int, default=None,
                    help="step from which the adapter trains; before it only T, P_0, W_q, W_k "
                         "(default: TrainSettings.lora_start)")
    sp.add_argument("--train-segment-length", type=int, default=None,
                    help="main-pass length L of the training segments, at most HMT.SegmentLength (default: "
                         "TrainSettings.segment_length; 0: HMT.SegmentLength; the summary length keeps its fraction "
                         "of the block); evaluation always uses HMT.SegmentLength")
    sp.add_argument("--seed", type=int, default=None, help="seed of the initial state and the sampled windows (default 0)")
    sp.add_argument("--hmt-memory-point", choices=["post_norm", "pre_norm"], default="post_norm",
                    help="read S_n and M_n after the final norm (default, the method) or before it")
    sp.set_defaults(func=cmd_hmt_train)

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
        src = sp.add_mutually_exclusive_group(required=True)
        src.add_argument("--prompt", help="prompt text")
        src.add_argument("--prompt-file", type=Path, help="file holding the prompt text (UTF-8; long prompts of "
                         "an HMT project)")
        sp.add_argument("--max-new-tokens", type=int, default=32, help="tokens to generate (default 32)")
        if name == "generate":
            sp.add_argument("--top-k", type=int, default=None,
                            help="sample among the K most likely tokens (default: the project's Decode.Sampling/TopK)")
            sp.add_argument("--temperature", type=float, default=None,
                            help="softmax temperature; 0 = greedy (default: the project's Decode.Temperature)")
            sp.add_argument("--seed", type=int, default=1, help="random seed of top-k sampling (default 1)")
        sp.set_defaults(func=func)

    sp = sub.add_parser("dse", parents=[out_opts], help="design-space search: the fastest design that fits the board "
                        "(cost model), the Pareto fronts, the best config as YAML")
    sp.add_argument("config", help="flexllm YAML config (model, quantization, sizes; its knobs are searched)")
    sp.add_argument("--board", default=None, help="board name (u280, alveo-u280, v80, alveo-v80; default: the "
                    "config's Board)")
    sp.add_argument("--objective", choices=["decode", "prefill", "end-to-end"], default="end-to-end",
                    help="decode: tokens/s at --context keys; prefill: seconds for --prompt tokens; end-to-end: "
                         "prefill of --prompt tokens + decode of --new tokens (default)")
    sp.add_argument("--prompt", type=int, default=None, help="prompt tokens (default min(1024, Prefill.MaxSeqLen))")
    sp.add_argument("--new", type=int, default=None, help="generated tokens (default min(1024, Decode.MaxNewTokens))")
    sp.add_argument("--context", type=int, default=None, help="keys in the KV cache for the decode tokens/s "
                    "figure (default: --prompt)")
    sp.add_argument("--space", action="append", default=[], metavar="KNOB=V1,V2,...",
                    help="candidate values of a knob, e.g. Decode.BP=16,24,28 (repeatable; default: derived from "
                         "the model and board)")
    sp.add_argument("--mode", choices=["auto", "exhaustive", "local"], default="auto",
                    help="auto: exhaustive when the prefill space is small, else local search (default)")
    sp.add_argument("--out", type=Path, default=None,
                    help="write the best config here (YAML for flexllm build) and the result as <out>.dse.json; "
                         "with --build-top: the sweep directory")
    sp.add_argument("--build-top", type=int, default=None, metavar="K",
                    help="write the K best designs as configs under --out DIR with a Makefile that builds and "
                         "C-simulates each (make -j N; SUBMIT=\"srun ...\" for a batch scheduler); "
                         "flexllm report DIR collects the results")
    sp.set_defaults(func=cmd_dse)

    sp = sub.add_parser("report", parents=[out_opts], help="HTML report with figures of a built project "
                        "(resources, roofline, latency, HBM, Pareto front; csynth figures when present)")
    sp.add_argument("outdir", type=Path, help="a project directory written by flexllm build, or a sweep directory "
                    "written by flexllm dse --build-top (then: C-sim / synthesis / implementation per candidate)")
    sp.add_argument("--dse", type=Path, default=None, help="a *.dse.json of flexllm dse to plot (default: "
                    "OUTDIR/*.dse.json when present)")
    sp.set_defaults(func=cmd_report)

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
    for name in ("max_tokens", "ctx", "seq_len", "layers", "max_new_tokens", "prompt", "new", "context", "steps", "build_top",
                 "segments", "window"):
        value = getattr(args, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value <= 0:   # int options (verify --prompt is text)
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
