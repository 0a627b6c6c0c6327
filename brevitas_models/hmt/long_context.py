"""Long-context perplexity: the same tokens scored with four ways of carrying context across segments.

The text's first ``segments`` blocks of ``B = L - 2 - k`` tokens are the input. Segments 1..N-1 are
scored (tokens 1..B-1 of each block, natural-log cross-entropy averaged over all of them); segment 0
only builds context. Modes:

* ``independent``: each block alone (``[block]``);
* ``sensory``: the previous block's last k tokens before it (``[k sensory, block]``);
* ``hmt``: HMT with memory (``[P_n, k sensory, block, P_n]``, trained parameters);
* ``window``: the backbone with every preceding token up to ``window`` positions (the reference: the
  model's full context).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from .spec import HMTSpec
from .wrapper import HMTWrapper

MODES = ("independent", "sensory", "hmt", "window")


def mode_spec(spec: HMTSpec, mode: str) -> HMTSpec:
    """The HMTSpec of a mode, with the same segment block as ``spec``."""
    if mode == "independent":
        return spec.replace(memory=False, sensory_tokens=0, segment_length=spec.segment_length - spec.sensory_tokens)
    if mode == "sensory":
        return spec.replace(memory=False)
    if mode == "hmt":
        return spec.replace(memory=True)
    raise ValueError(f"no HMTSpec for mode {mode!r}")


def _window_nll(model, ids: torch.Tensor, block: int, window: int):
    """(nll, count) of tokens 1..B-1 of blocks 1..N-1 with all preceding tokens up to ``window`` positions."""
    from ..model import append_kv
    n = ids.shape[1] // block
    nll, count = 0.0, 0
    if ids.shape[1] <= window:
        past = None
        for i in range(n):                      # one causal pass in block-sized chunks over the KV cache
            chunk = ids[:, i * block:(i + 1) * block]
            logits, presents = model(chunk, past)
            past = append_kv(past, presents)
            if i:
                nll += float(F.cross_entropy(logits[0, :-1].double(), chunk[0, 1:], reduction="sum"))
                count += block - 1
        return nll, count
    for i in range(1, n):
        end = (i + 1) * block
        ctx = ids[:, max(0, end - window):end]
        logits, _ = model(ctx)
        nll += float(F.cross_entropy(logits[0, -block:-1].double(), ctx[0, -block + 1:], reduction="sum"))
        count += block - 1
    return nll, count


@torch.no_grad()
def long_context_perplexity(model, spec: HMTSpec, tokens: torch.Tensor, segments: int, mode: str,
                            params=None, final_norm_weight: Optional[torch.Tensor] = None,
                            window: Optional[int] = None) -> dict:
    """Perplexity of segments 1..N-1 of ``tokens`` (1-D) in one mode (see the module docstring)."""
    from brevitas.export.inference import quant_inference_mode
    if mode not in MODES:
        raise ValueError(f"--long must be one of {MODES}, got {mode!r}")
    if segments < 2:
        raise ValueError(f"--segments must be >= 2 (segment 0 is context only), got {segments}")
    block = spec.block
    need = segments * block
    if tokens.numel() < need:
        raise ValueError(f"{segments} segments of {block} tokens need {need} tokens, the text has {tokens.numel()}")
    ids = tokens[:need][None]
    model.eval()
    with quant_inference_mode(model, cache_quant_weight=True):
        if mode == "window":
            window = window or model.rope_cos.shape[0]
            nll, count = _window_nll(model, ids, block, window)
        else:
            wrapper = HMTWrapper(model, mode_spec(spec, mode), params if mode == "hmt" else None,
                                 final_norm_weight=final_norm_weight)
            out = wrapper.run(ids)[1:]
            nll = sum(float(o[0]) for o in out)
            count = sum(o[1] for o in out)
    return {"mode": mode, "ppl": math.exp(nll / count), "scored_tokens": count, "segments": segments,
            "block": block, "window": window if mode == "window" else None}
