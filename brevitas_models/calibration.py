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
from typing import Callable, Iterable, List, Optional

import torch

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
    """Raised by a capture hook to skip the rest of a forward pass once the input is recorded."""


@contextmanager
def _capture_inputs(units: Iterable[QuantLinearUnit], acc: HessianAccumulator):
    """Feed the input that reaches the first unit's matmul (after its input quantizer) to acc, then
    abort the forward (nothing after this point is needed)."""
    first = next(iter(units))

    def hook(mod, args):
        acc.add(args[0].detach())
        raise _Captured

    handle = first.linear.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _gptq_group(units: List[QuantLinearUnit], run: Callable[[], None], log) -> None:
    acc = HessianAccumulator(units[0].linear.in_features)
    with _capture_inputs(units, acc):
        run()
    for unit in units:
        scale, qmin, qmax = weight_grid(unit)
        new = gptq_quantize(unit.weight.detach(), acc.hessian, scale, qmin, qmax)
        with torch.no_grad():
            unit.weight.copy_(new)


def calibrate(model: LlamaModel, windows: torch.Tensor, gptq: bool, batch_size: int = 2,
              log: Optional[Callable[[str], None]] = None) -> None:
    """Calibrate ``model`` in place on token windows [N, ctx] of real text."""
    log = log or (lambda msg: None)
    model.eval()
    init_weight_scales(model)
    n, ctx = windows.shape
    cos, sin = model.rope(0, ctx)
    mask = causal_mask(ctx, 0)
    with torch.no_grad():
        hidden = [model.embed_tokens(windows[i:i + batch_size]) for i in range(0, n, batch_size)]
        n_layers = len(model.layers)
        progress = bar(n_layers + (1 if gptq else 0), "calibration" + (" (GPTQ)" if gptq else ""), "layers")
        t_start = time.perf_counter()
        for li, layer in enumerate(model.layers):
            t0 = time.perf_counter()
            at, mlp = layer.self_attn, layer.mlp

            def run_layer():
                for h in hidden:
                    try:
                        layer(h, cos, sin, mask)
                    except _Captured:
                        pass

            if gptq:
                _gptq_group([at.q_proj, at.k_proj, at.v_proj], run_layer, log)
            # Q, K, V do not depend on each other's quantization: observe them in one pass; P is
            # observed in a second pass, after Q and K are quantized.
            for group in ((at.q_quant, at.k_quant, at.v_quant), (at.p_quant,)):
                heads = [hq for hq in group if hq.quant is not None]
                if not heads:
                    continue
                for hq in heads:
                    hq.observed_max.zero_()
                    hq.observing = True
                run_layer()
                for hq in heads:
                    hq.set_threshold(hq.observed_max)
                    hq.observing = False
            if gptq:
                _gptq_group([at.o_proj], run_layer, log)
                _gptq_group([mlp.gate_proj, mlp.up_proj], run_layer, log)
                _gptq_group([mlp.down_proj], run_layer, log)
            hidden = [layer(h, cos, sin, mask)[0] for h in hidden]
            progress.update(1)
            now = time.perf_counter()
            left = (now - t_start) / (li + 1) * (n_layers - li - 1)
            log(f"calibrated layer {li + 1} of {n_layers} in {now - t0:.1f} s (about {left:.0f} s left)")
        if gptq:
            normed = [model.norm(h) for h in hidden]
            _gptq_group([model.lm_head], lambda: _run_all(model.lm_head, normed), log)
            progress.update(1)
        progress.close()


def _run_all(module, inputs) -> None:
    for x in inputs:
        try:
            module(x)
        except _Captured:
            pass
