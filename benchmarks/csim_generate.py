"""C simulation speed of a built project: a real-text prompt of N tokens plus M new tokens through the
exact kernel sources (prefill kernel, then the decode kernel's on-chip token loop), timed side by side
with the PyTorch (Brevitas fake-quant) reference generating the same tokens with its KV cache, and the
bit-true numpy golden model. Prints one JSON object; medians over --repeats runs.

    python benchmarks/csim_generate.py build/smollm2_135m_u280 --prompt-tokens 32 --new-tokens 32
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch


def real_prompt_ids(tokenizer, n_tokens: int):
    """The first n_tokens token ids of a pydoc-topics passage (fed to the kernels as ids)."""
    from brevitas_models.text import pydoc_topics_text

    text = pydoc_topics_text()
    start = text.index("Assert statements")
    ids = tokenizer.encode(text[start:start + 20 * n_tokens], add_special_tokens=False)[:n_tokens]
    if len(ids) != n_tokens:
        raise RuntimeError("passage too short for the requested prompt length")
    return [int(i) for i in ids]


def torch_generate(model, prompt_ids, n_new):
    from brevitas_models.model import KVCache  # noqa: F401  (model returns its own cache type)

    with torch.no_grad():
        logits, kv = model(torch.tensor([prompt_ids]))
        tok = int(logits[0, -1].argmax())
        out = [tok]
        for _ in range(n_new - 1):
            logits, kv = model(torch.tensor([[tok]]), past=kv)
            tok = int(logits[0, -1].argmax())
            out.append(tok)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    from flexllm_plugin.project.reference import load_reference, load_tokenizer
    from flexllm_plugin.project.verify import (compile_testbench, golden_generate, load_project,
                                               run_testbench)

    info = load_project(args.outdir)
    model, golden = load_reference(args.outdir)          # the project alone: no model source needed
    ids = real_prompt_ids(load_tokenizer(args.outdir), args.prompt_tokens)
    t0 = time.perf_counter()
    exe = compile_testbench(args.outdir, info["project"]["name"])
    compile_s = time.perf_counter() - t0

    csim, ref, gold = [], [], []
    for _ in range(args.repeats):
        r = run_testbench(args.outdir, exe, ids, args.new_tokens)
        csim.append(r["seconds"])
        t0 = time.perf_counter()
        ref_tokens = torch_generate(model, ids, args.new_tokens)
        ref.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        g_tokens = golden_generate(golden, ids, args.new_tokens)[0]
        gold.append(time.perf_counter() - t0)
    print(json.dumps({
        "project": str(args.outdir), "prompt_tokens": len(ids), "new_tokens": args.new_tokens,
        "repeats": args.repeats, "torch_threads": torch.get_num_threads(),
        "csim_seconds_median": round(statistics.median(csim), 2),
        "csim_kernel_ms_last": r["timing"],
        "pytorch_reference_seconds_median": round(statistics.median(ref), 2),
        "golden_numpy_seconds_median": round(statistics.median(gold), 2),
        "testbench_compile_seconds": round(compile_s, 2),
        "csim_equals_golden": r["tokens"] == g_tokens,
        "pytorch_greedy_agreement": float(np.mean([a == b for a, b in zip(ref_tokens, g_tokens)])),
    }))


if __name__ == "__main__":
    sys.exit(main())
