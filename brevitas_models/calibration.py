"""Layer-by-layer calibration on real text: GPTQ weight rounding and static per-head thresholds.

One sequential pass over the decoder layers (the hidden states of the calibration windows are
carried from layer to layer, so every layer is calibrated on the outputs of the already-quantized
layers before it). Within a layer the order follows the data flow:

1. GPTQ of q/k/v (they share one quantized input, hence one Hessian),
2. static thresholds of Q, K, V (one pass) and then of the softmax output P (a second pass, with Q
   and K quantized): max |x| per head over the calibration set,
3. GPTQ of o_proj, then gate/up (shared Hessian), then down_proj,
4. the layer's outputs become the next layer's inputs.

The LM head is GPTQ-rounded last, on the final-norm outputs. Without GPTQ the weights are rounded to
nearest by the Brevitas weight quantizer itself. Runs on CPU; memory is one layer's activations.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, List, Optional

import torch
import torch.nn.functional as F

from .gptq import HessianAccumulator, gptq_quantize
from .model import LlamaModel, QuantLinearUnit, causal_mask
from .progress import bar


def init_weight_scales(model: LlamaModel) -> None:
    """Initialise every per-channel weight scale from the current (possibly rotated) float weights."""
    with torch.no_grad():
        for _, unit in model.linears():
            if unit.linear.weight_quant.is_quant_enabled:
                unit.linear.quant_weight()


def weight_grid(unit: QuantLinearUnit):
    """(scale [out], qmin, qmax) of a unit's Brevitas weight quantizer."""
    qw = unit.linear.quant_weight()
    bits = int(qw.bit_width.item())
    qmax = 2 ** (bits - 1) - 1
    qmin = -qmax if unit.linear.weight_quant.is_narrow_range else -qmax - 1
    return qw.scale.detach().view(-1), qmin, qmax


class _Captured(Exception):
    """Raised by a capture hook to skip the rest of a forward pass once the needed tensor is recorded."""


@contextmanager
def _stop_at(module: torch.nn.Module, keep: Optional[list] = None):
    """Abort a forward pass when it reaches ``module``; its (first) input goes to ``keep`` if given."""

    def hook(mod, args):
        if keep is not None:
            keep.append(args[0].detach())
        raise _Captured

    handle = module.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _run_until(fn: Callable[[], None]) -> None:
    try:
        fn()
    except _Captured:
        pass


CLIP_GRID = tuple(round(1.0 - 0.01 * i, 2) for i in range(0, 41))      # 1.00, 0.99, .., 0.60


@torch.no_grad()
def search_weight_clip(unit: QuantLinearUnit, hessian_diag: torch.Tensor, grid=CLIP_GRID) -> torch.Tensor:
    """Per output channel, the clip ratio r of the grid whose round-to-nearest weights (threshold
    r * max|w|) have the least input-weighted error sum_k H_kk (w_k - q_k)^2; sets the unit's weight
    threshold to r * max|w| and returns r [out]."""
    w = unit.weight.detach().to(torch.float64)
    _, qmin, qmax = weight_grid(unit)
    amax = w.abs().amax(dim=1).clamp(min=1e-12)
    d = hessian_diag.to(torch.float64).clamp(min=0)[None, :]
    best_err = torch.full((w.shape[0],), float("inf"), dtype=torch.float64)
    best_r = torch.ones(w.shape[0], dtype=torch.float64)
    for r in grid:
        s = (amax * r / qmax)[:, None]
        err = (((torch.clamp(torch.round(w / s), qmin, qmax) * s - w) ** 2) * d).sum(dim=1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_r = torch.where(better, torch.full_like(best_r, r), best_r)
    value = unit.linear.weight_quant.tensor_quant.scaling_impl.value        # the threshold max|w|, [out, 1]
    value.copy_((amax * best_r).to(value.dtype).view_as(value))
    return best_r


def _gptq(units: List[QuantLinearUnit], inputs: List[torch.Tensor], weight_clip: bool = False) -> None:
    """GPTQ-round the weights of ``units`` (which share one quantized input) on ``inputs``; with
    ``weight_clip`` the per-channel scales are first chosen by :func:`search_weight_clip`."""
    acc = HessianAccumulator(units[0].linear.in_features)
    for x in inputs:
        acc.add(x)
    if weight_clip:
        for unit in units:
            search_weight_clip(unit, torch.diag(acc.hessian))
    # The units' rows are independent given the shared Hessian: one GPTQ call on the stacked weights
    # (one Cholesky inverse per group).
    grids = [weight_grid(unit) for unit in units]
    if len({(qmin, qmax) for _, qmin, qmax in grids}) != 1:
        raise ValueError("units sharing an input must have the same weight bit width")
    _, qmin, qmax = grids[0]
    new = gptq_quantize(torch.cat([unit.weight.detach() for unit in units]), acc.hessian,
                        torch.cat([scale for scale, _, _ in grids]), qmin, qmax)
    with torch.no_grad():
        for unit, part in zip(units, torch.split(new, [unit.weight.shape[0] for unit in units])):
            unit.weight.copy_(part)


def _observe(heads, run: Callable[[], None]) -> None:
    """Set the static per-head thresholds of ``heads`` to max |x| over what ``run`` feeds them."""
    heads = [hq for hq in heads if hq.quant is not None]
    if not heads:
        return
    for hq in heads:
        hq.observed_max.zero_()
        hq.observing = True
    try:
        run()
    finally:
        for hq in heads:
            hq.observing = False
    for hq in heads:
        hq.set_threshold(hq.observed_max)


def calibrate_layer(layer, hidden: List[torch.Tensor], cos, sin, mask, gptq: bool,
                    weight_clip: bool = False) -> List[torch.Tensor]:
    """Calibrate one decoder layer in place on its inputs ``hidden`` (a list of [B, L, hidden] batches)
    and return its outputs. Every sub-block input is computed once and kept (the residual stream, the
    quantized q/k/v, o_proj, gate/up and down_proj inputs) instead of re-running the layer per GPTQ group;
    the arithmetic is the layer's own (the same modules in the same order as ``DecoderLayer.forward``)."""
    at, mlp = layer.self_attn, layer.mlp
    x1 = [layer.input_layernorm(h) for h in hidden]
    if gptq:
        _gptq([at.q_proj, at.k_proj, at.v_proj], [at.q_proj.input_quant(x) for x in x1], weight_clip)

    def attention_until(module, keep=None):
        def run():
            for x in x1:
                with _stop_at(module, keep):
                    _run_until(lambda: at(x, cos, sin, mask))
        return run

    # Q, K, V do not depend on each other's quantization: observe them in one pass (stopped before the
    # scores' softmax output is quantized); P in a second pass, after Q and K are quantized.
    _observe((at.q_quant, at.k_quant, at.v_quant), attention_until(at.p_quant))
    _observe((at.p_quant,), attention_until(at.o_proj))
    o_in: List[torch.Tensor] = []
    attention_until(at.o_proj.linear, o_in)()            # the quantized o_proj input
    if gptq:
        _gptq([at.o_proj], o_in, weight_clip)
    h2 = [h + at.o_proj.linear(o) for h, o in zip(hidden, o_in)]
    del o_in, x1
    gu_in = [mlp.gate_proj.input_quant(layer.post_attention_layernorm(h)) for h in h2]
    if gptq:
        _gptq([mlp.gate_proj, mlp.up_proj], gu_in, weight_clip)
    d_in = [mlp.down_proj.input_quant(mlp.online_hadamard(F.silu(mlp.gate_proj.linear(x)) * mlp.up_proj.linear(x)))
            for x in gu_in]
    del gu_in
    if gptq:
        _gptq([mlp.down_proj], d_in, weight_clip)
    return [h + mlp.down_proj.linear(d) for h, d in zip(h2, d_in)]


def calibrate(model: LlamaModel, windows: torch.Tensor, gptq: bool, batch_size: int = 2,
              log: Optional[Callable[[str], None]] = None, threads: Optional[int] = 2,
              weight_clip: bool = False) -> None:
    """Calibrate ``model`` in place on token windows [N, ctx] of real text (``threads``: torch intra-op
    threads while calibrating, None to leave the setting alone; ``weight_clip``: search the weight
    scales before GPTQ)."""
    log = log or (lambda msg: None)
    model.eval()
    init_weight_scales(model)
    n, ctx = windows.shape
    cos, sin = model.rope(0, ctx)
    mask = causal_mask(ctx, 0)
    saved_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            hidden = [model.embed_tokens(windows[i:i + batch_size]) for i in range(0, n, batch_size)]
            n_layers = len(model.layers)
            progress = bar(n_layers + (1 if gptq else 0), "calibration" + (" (GPTQ)" if gptq else ""), "layers")
            t_start = time.perf_counter()
            for li, layer in enumerate(model.layers):
                t0 = time.perf_counter()
                hidden = calibrate_layer(layer, hidden, cos, sin, mask, gptq, weight_clip)
                progress.update(1)
                now = time.perf_counter()
                left = (now - t_start) / (li + 1) * (n_layers - li - 1)
                log(f"calibrated layer {li + 1} of {n_layers} in {now - t0:.1f} s (about {left:.0f} s left)")
            if gptq:
                _gptq([model.lm_head], [model.lm_head.input_quant(model.norm(h)) for h in hidden], weight_clip)
                progress.update(1)
            progress.close()
    finally:
        torch.set_num_threads(saved_threads)
