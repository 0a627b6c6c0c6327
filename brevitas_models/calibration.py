"""Layer-by-layer calibration on real text: GPTQ weight rounding and static per-head thresholds.

One sequential pass over the decoder layers (the hidden states of the calibration windows are
carried from layer to layer, so every layer is calibrated on the outputs of the already-quantized
layers before it). Within a layer the order follows the data flow:

1. GPTQ of q/k/v (they share one quantized input, hence one Hessian),
2. static thresholds of Q, K, V and then of the softmax output P (computed from the quantized Q and
   K): max |x| per head over the calibration set,
3. GPTQ of o_proj, then gate/up (shared Hessian), then down_proj,
4. the layer's outputs become the next layer's inputs.

The LM head is GPTQ-rounded last, on the final-norm outputs. Without GPTQ the weights are rounded to
nearest by the Brevitas weight quantizer itself. Runs on CPU; memory is one layer's activations (the
stage outputs of every calibration window, the softmax outputs included).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, List, Optional

import torch
import torch.nn.functional as F

from brevitas.graph.calibrate import quantization_status_manager

from .gptq import CrossCovarianceAccumulator, HessianAccumulator, asymmetric_target, gptq_quantize
from .quant_presets import GPTQ_TARGETS
from .model import LlamaModel, QuantLinearUnit, causal_mask
from .progress import bar


def init_weight_scales(model: LlamaModel) -> None:
    """Initialise every per-channel weight scale from the current (possibly rotated) float weights."""
    with torch.no_grad():
        for _, unit in model.linears():
            if unit.linear.weight_quant.is_quant_enabled:
                unit.linear.quant_weight()


def weight_grid(unit: QuantLinearUnit):
    """(scale [out], qmin, qmax) of a unit's Brevitas weight quantizer: its scale and bit-width modules,
    called as ``quant_weight()`` calls them, without fake-quantizing the whole weight (the LM head has
    tens of millions of entries)."""
    tq = unit.linear.weight_quant.tensor_quant
    bit_width = tq.msb_clamp_bit_width_impl()
    scale = tq.scaling_impl(unit.weight, tq.int_scaling_impl(bit_width))
    bits = int(bit_width.item())
    qmax = 2 ** (bits - 1) - 1
    qmin = -qmax if unit.linear.weight_quant.is_narrow_range else -qmax - 1
    return scale.detach().view(-1), qmin, qmax


@contextmanager
def frozen_weights(*units: QuantLinearUnit):
    """Within the block each unit's linear reuses one fake-quantized weight instead of quantizing its
    weight again at every call (Brevitas' ``forward`` computes ``F.linear(x, quant_weight().value)``; the
    result is the same tensor). The weights must not change inside the block."""
    linears = [u.linear for u in units if u.linear.weight_quant.is_quant_enabled]
    for lin in linears:
        cached = lin.quant_weight()
        lin.quant_weight = lambda *args, _cached=cached, **kwargs: _cached
    try:
        yield
    finally:
        for lin in linears:
            del lin.quant_weight


CLIP_GRID = tuple(round(1.0 - 0.01 * i, 2) for i in range(0, 41))      # 1.00, 0.99, .., 0.60


CLIP_ROW_CHUNK = 64            # output channels per step of the clip search: its temporaries stay in cache


@contextmanager
def _one_thread():
    """torch on one intra-op thread inside the block. The clip search is many small element-wise steps:
    on a loaded 2-core machine two OpenMP threads made it 3-30x slower (spinning), on an idle one they
    would save at most half of it. Its results do not depend on the thread count."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@torch.no_grad()
def search_weight_clip(unit: QuantLinearUnit, hessian_diag: torch.Tensor, grid=CLIP_GRID,
                       row_chunk: int = CLIP_ROW_CHUNK) -> torch.Tensor:
    """Per output channel, the clip ratio r of the grid whose round-to-nearest weights (threshold
    r * max|w|) have the least input-weighted error sum_k H_kk (w_k - q_k)^2 (the first of equal ones);
    sets the unit's weight threshold to r * max|w| and returns r [out].

    Channels are independent: they are searched ``row_chunk`` at a time with one reused buffer, each
    error computed by the same float64 operations as the whole-matrix expression
    ``((clamp(round(w / s)) * s - w) ** 2 * d).sum(1)``, so the choice does not depend on the chunking."""
    w = unit.weight.detach().to(torch.float64)
    _, qmin, qmax = weight_grid(unit)
    amax = w.abs().amax(dim=1).clamp(min=1e-12)
    d = hessian_diag.to(torch.float64).clamp(min=0)[None, :]
    out_features = w.shape[0]
    best_err = torch.full((out_features,), float("inf"), dtype=torch.float64)
    best_r = torch.ones(out_features, dtype=torch.float64)
    row_chunk = max(1, int(row_chunk))
    buf = torch.empty(min(row_chunk, out_features), w.shape[1], dtype=torch.float64)
    with _one_thread():
        _search_rows(w, amax, d, best_err, best_r, buf, grid, qmin, qmax, row_chunk)
    set_weight_threshold(unit, amax * best_r)
    return best_r


def set_weight_threshold(unit: QuantLinearUnit, threshold: torch.Tensor) -> None:
    """Set the per-output-channel threshold of the unit's Brevitas weight quantizer (its scale is
    threshold / qmax): the parameter the weight-clip search and the GPTQ target write."""
    value = unit.linear.weight_quant.tensor_quant.scaling_impl.value        # [out, 1]
    value.copy_(threshold.to(value.dtype).view_as(value))


def _search_rows(w, amax, d, best_err, best_r, buf, grid, qmin, qmax, row_chunk) -> None:
    """The loop of :func:`search_weight_clip`: updates ``best_err`` / ``best_r`` in place."""
    out_features = w.shape[0]
    for r0 in range(0, out_features, row_chunk):
        r1 = min(r0 + row_chunk, out_features)
        wc, t = w[r0:r1], buf[:r1 - r0]
        amax_c, err_c, r_c = amax[r0:r1], best_err[r0:r1], best_r[r0:r1]
        for r in grid:
            s = (amax_c * r / qmax)[:, None]
            torch.div(wc, s, out=t)
            t.round_().clamp_(qmin, qmax).mul_(s).sub_(wc)
            t.mul_(t).mul_(d)
            err = t.sum(dim=1)
            better = err < err_c
            err_c.copy_(torch.where(better, err, err_c))
            r_c.masked_fill_(better, r)


def _gptq(units: List[QuantLinearUnit], inputs: List[torch.Tensor], weight_clip: bool = False,
          targets: Optional[List[torch.Tensor]] = None) -> None:
    """GPTQ-round the weights of ``units`` (which share one quantized input) on ``inputs``; with
    ``weight_clip`` the per-channel scales are first chosen by :func:`search_weight_clip`. With ``targets``
    (per batch, the inputs whose float outputs GPTQ should reproduce: the same inputs before their
    quantizer, or the float model's) the weights are first moved to :func:`~.gptq.asymmetric_target`
    (the weights that best map the quantized inputs onto the targets' outputs) and their thresholds
    re-set to its max |w|."""
    if targets is None:
        acc = HessianAccumulator(units[0].linear.in_features)
        for x in inputs:
            acc.add(x)
    else:
        acc = CrossCovarianceAccumulator(units[0].linear.in_features)
        for xq, x in zip(inputs, targets, strict=True):
            acc.add(xq, x)
        with torch.no_grad():
            for unit in units:
                unit.weight.copy_(asymmetric_target(unit.weight, acc.hessian, acc.cross).to(unit.weight.dtype))
                if unit.linear.weight_quant.is_quant_enabled:
                    set_weight_threshold(unit, unit.weight.detach().abs().amax(dim=1).clamp(min=1e-12))
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


def _observe(heads, inputs) -> None:
    """Set the static per-head thresholds of ``heads`` (HeadQuant modules) to max |x| over ``inputs``
    (one list of batches per head, in the order of ``heads``)."""
    for hq, xs in zip(heads, inputs):
        if hq.quant is None:
            continue
        hq.observed_max.zero_()
        hq.observing = True
        try:
            for x in xs:
                hq(x)
        finally:
            hq.observing = False
        hq.set_threshold(hq.observed_max)




def float_site_inputs(layer, hidden: List[torch.Tensor], cos, sin, mask):
    """The float layer on the float residual stream ``hidden``: the inputs of its four GPTQ groups
    (q/k/v, o_proj, gate/up, down_proj; each a list over the batches) and its outputs. Every quantizer of
    the layer is off (Brevitas' ``quantization_status_manager``), so these are the stages of
    ``DecoderLayer.forward`` on the current float weights: call it before any GPTQ of the layer."""
    at, mlp = layer.self_attn, layer.mlp
    sites = {"q_proj": [], "o_proj": [], "gate_proj": [], "down_proj": []}
    out = []
    with quantization_status_manager(layer, disable_act_quant=True, disable_weight_quant=True):
        for h in hidden:
            x = layer.input_layernorm(h)
            q, k, v = at.project(x, cos, sin)
            k, v = at.keys(k, v)
            o = at.mix(at.probabilities(q, k, mask), v)
            h2 = h + at.o_proj.linear(o)
            g = layer.post_attention_layernorm(h2)
            d = mlp.online_hadamard(F.silu(mlp.gate_proj.linear(g)) * mlp.up_proj.linear(g))
            out.append(h2 + mlp.down_proj.linear(d))
            for site, t in zip(sites, (x, o, g, d)):
                sites[site].append(t)
    return sites, out


def calibrate_layer(layer, hidden: List[torch.Tensor], cos, sin, mask, gptq: bool,
                    weight_clip: bool = False, target: str = "quantized",
                    float_hidden: Optional[List[torch.Tensor]] = None):
    """Calibrate one decoder layer in place on its inputs ``hidden`` (a list of [B, L, hidden] batches)
    and return its outputs, and with ``target`` "float" also the float layer's outputs on ``float_hidden``
    (else None).

    Each stage of the layer runs once per batch and its outputs are kept for the next stage (the
    residual stream, the quantized q/k/v input, q/k/v before and after their quantizers, the softmax
    output, the o_proj, gate/up and down_proj inputs), instead of re-running the layer per GPTQ group
    and per threshold pass. The arithmetic is the layer's own: the stages are the methods
    ``DecoderLayer.forward`` is made of, called in its order; quantized weights are computed once per
    stage (:func:`frozen_weights`) after their GPTQ.

    ``target``: what GPTQ of each group aims at (:func:`_gptq`): "quantized", the layer's outputs on its
    quantized inputs (plain GPTQ); "unquantized", the outputs on the same inputs before their quantizer;
    "float", the float model's outputs (its inputs from :func:`float_site_inputs` on ``float_hidden``, the
    float residual stream), so that the weights also absorb the error of every layer before."""
    if target not in GPTQ_TARGETS:
        raise ValueError(f"GPTQ target must be one of {GPTQ_TARGETS}, got {target!r}")
    if (target == "float") != (float_hidden is not None):
        raise ValueError("float_hidden goes with target 'float' (and only with it)")
    at, mlp = layer.self_attn, layer.mlp
    float_sites, float_out = (float_site_inputs(layer, float_hidden, cos, sin, mask) if target == "float"
                              else (None, None))

    def quantized(site, quant, xs):
        """[quant(x) for x in xs] and the GPTQ target's inputs of the site (None for plain GPTQ)."""
        if not gptq or target == "quantized":
            return [quant(x) for x in xs], None
        if target == "float":
            return [quant(x) for x in xs], float_sites.pop(site)
        xs = list(xs)
        return [quant(x) for x in xs], xs

    xq, x = quantized("q_proj", at.q_proj.input_quant, (layer.input_layernorm(h) for h in hidden))
    if gptq:
        _gptq([at.q_proj, at.k_proj, at.v_proj], xq, weight_clip, x)
    del x
    with frozen_weights(at.q_proj, at.k_proj, at.v_proj):
        qkv = [at.project(x, cos, sin) for x in xq]
    del xq
    # Q, K, V thresholds do not depend on each other; P's are observed on the quantized Q and K.
    _observe((at.q_quant, at.k_quant, at.v_quant), list(zip(*qkv)))
    qkv = [(at.q_quant(q), at.k_quant(k), at.v_quant(v)) for q, k, v in qkv]
    probs = []
    for i, (q, k, v) in enumerate(qkv):
        k, v = at.keys(k, v)
        probs.append(at.probabilities(q, k, mask))
        qkv[i] = v                                       # only V (per query head) is needed from here on

    def mixed():
        for i, v in enumerate(qkv):
            yield at.mix(at.p_quant(probs[i]), v)
            probs[i] = None

    _observe((at.p_quant,), [probs])
    o_in, x = quantized("o_proj", at.o_proj.input_quant, mixed())
    del qkv, probs
    if gptq:
        _gptq([at.o_proj], o_in, weight_clip, x)
    del x
    with frozen_weights(at.o_proj):
        h2 = [h + at.o_proj.linear(o) for h, o in zip(hidden, o_in)]
    del o_in
    gu_in, x = quantized("gate_proj", mlp.gate_proj.input_quant, (layer.post_attention_layernorm(h) for h in h2))
    if gptq:
        _gptq([mlp.gate_proj, mlp.up_proj], gu_in, weight_clip, x)
    del x
    with frozen_weights(mlp.gate_proj, mlp.up_proj):
        d_in, x = quantized("down_proj", mlp.down_proj.input_quant,
                            (mlp.online_hadamard(F.silu(mlp.gate_proj.linear(g)) * mlp.up_proj.linear(g))
                             for g in gu_in))
    del gu_in
    if gptq:
        _gptq([mlp.down_proj], d_in, weight_clip, x)
    del x
    with frozen_weights(mlp.down_proj):
        return [h + mlp.down_proj.linear(d) for h, d in zip(h2, d_in)], float_out


def calibrate(model: LlamaModel, windows: torch.Tensor, gptq: bool, batch_size: int = 2,
              log: Optional[Callable[[str], None]] = None, threads: Optional[int] = None,
              weight_clip: bool = False, target: str = "quantized") -> None:
    """Calibrate ``model`` in place on token windows [N, ctx] of real text (``threads``: torch intra-op
    threads while calibrating, None to leave torch's setting, which is ``$OMP_NUM_THREADS`` when set and
    every core otherwise; ``weight_clip``: search the weight scales before GPTQ; ``target``: what GPTQ aims
    at, :func:`calibrate_layer`)."""
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
            float_hidden = list(hidden) if gptq and target == "float" else None
            n_layers = len(model.layers)
            progress = bar(n_layers + (1 if gptq else 0), "calibration" + (" (GPTQ)" if gptq else ""), "layers")
            t_start = time.perf_counter()
            for li, layer in enumerate(model.layers):
                t0 = time.perf_counter()
                hidden, float_hidden = calibrate_layer(layer, hidden, cos, sin, mask, gptq, weight_clip, target,
                                                       float_hidden)
                progress.update(1)
                now = time.perf_counter()
                left = (now - t_start) / (li + 1) * (n_layers - li - 1)
                log(f"calibrated layer {li + 1} of {n_layers} in {now - t0:.1f} s (about {left:.0f} s left)")
            if gptq:
                lm_target = {"quantized": None, "float": float_hidden, "unquantized": hidden}[target]
                _gptq([model.lm_head], [model.lm_head.input_quant(model.norm(h)) for h in hidden], weight_clip,
                      None if lm_target is None else [model.norm(h) for h in lm_target])
                progress.update(1)
            progress.close()
    finally:
        torch.set_num_threads(saved_threads)
