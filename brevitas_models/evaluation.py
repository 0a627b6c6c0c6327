"""Perplexity over non-overlapping windows: every window scores its tokens 1..ctx-1 (so N windows of
512 tokens score N * 511 tokens), natural-log cross-entropy averaged over all scored tokens."""

from __future__ import annotations

import math
import warnings

import torch

warnings.filterwarnings("ignore", message="fast_hadamard_transform package not found")
import torch.nn.functional as F


@torch.no_grad()
def perplexity(model, token_windows: torch.Tensor, batch_size: int = 1) -> dict:
    """Brevitas' inference mode caches the quantized weights (same outputs, about 1.5x faster)."""
    from brevitas.export.inference import quant_inference_mode
    model.eval()
    with quant_inference_mode(model, cache_quant_weight=True):
        return _perplexity(model, token_windows, batch_size)


def _perplexity(model, token_windows, batch_size):
    from .progress import bar
    total_nll = 0.0
    count = 0
    progress = bar(token_windows.shape[0], "perplexity", "windows")
    for i in range(0, token_windows.shape[0], batch_size):
        batch = token_windows[i:i + batch_size]
        logits, _ = model(batch)
        nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).double(),
                              batch[:, 1:].reshape(-1), reduction="sum")
        total_nll += float(nll)
        count += batch[:, 1:].numel()
        progress.update(batch.shape[0])
        progress.set_postfix_str(f"ppl {math.exp(total_nll / count):.2f}")
    progress.close()
    return {"ppl": math.exp(total_nll / count), "scored_tokens": count}
