"""Per-stage QONNX export of a Brevitas :class:`~brevitas_models.model.LlamaModel`.

Two graphs, each a thin wrapper around the model's own modules (no weight copies):

``prefill`` (sequence length ``L``, default :data:`DEFAULT_PREFILL_LEN` = 32)
    inputs   ``input_ids``            int64   [1, L]
    outputs  ``logits``               float32 [1, vocab]   (last position, final norm + LM head)
             ``present_key_{i}``      float32 [1, kv_heads, L, head_dim]   K after RoPE, int8 grid
             ``present_value_{i}``    float32 [1, kv_heads, L, head_dim]   V, int8 grid
    RoPE cos/sin of positions 0..L-1 and the additive causal mask are constants (initialisers).

``decode`` (past length ``P``, default :data:`DEFAULT_DECODE_PAST` = 31, i.e. the 32nd token)
    inputs   ``input_ids``            int64   [1, 1]
             ``position``             int64   [1]      (= P, the new token's position)
             ``past_key_{i}``         float32 [1, kv_heads, P, head_dim]   int8-grid values
             ``past_value_{i}``       float32 [1, kv_heads, P, head_dim]
    outputs  ``logits``               float32 [1, vocab]
             ``new_key_{i}``          float32 [1, kv_heads, 1, head_dim]
             ``new_value_{i}``        float32 [1, kv_heads, 1, head_dim]
    The past K/V inputs are re-marked as int8 by a ``Quant`` node with the layer's per-head K (V) scale
    (idempotent on grid values) when the model quantizes K/V; cos/sin are ``Gather``-ed from constant
    tables of the model's full RoPE length by ``position``. No mask (all P past entries are valid).
    Shapes are static: the graph is exported for one past length P.

``layers=N`` exports only the first N decoder layers followed by the final norm and the LM head
(for testing big models partially); the reference then comes from the same truncated model.

Files in ``out_dir``: ``model.onnx`` (+ ``model.onnx.data`` when the initialisers need ONNX external
data: automatically above :data:`EXTERNAL_DATA_THRESHOLD` bytes, or on request) and ``reference.npz``
(one array per graph input and output, keyed by the ONNX tensor names, computed by the Brevitas model
in normal, non-export mode on real-text ``tokens``: prefill on ``tokens[:L]``; decode runs the model's
prefill on ``tokens[:P]`` for the past K/V, then ``tokens[P]`` at position P).

Dynamic per-token input quantizers are exported as in-graph scale / zero-point computations feeding
QONNX ``Quant`` nodes (docs/qonnx-dynamic-quant.md); the online Hadamard R4 as a MatMul with a
constant matrix.

qonnx execution of the graph reproduces the reference up to float32 summation order, except where a
value sits within ~1e-5 quantization steps of a rounding boundary: then one uint4 code flips and, in
an early layer, spreads through K/V (measured and explained in docs/qonnx-dynamic-quant.md, section 8).
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .export_ops import LeanQuantOp, clear_hadamard_cache, hadamard_constant, static_quant
from .model import LlamaModel, OnlineHadamard, TokenQuant, causal_mask

__all__ = ["STAGES", "DEFAULT_PREFILL_LEN", "DEFAULT_DECODE_PAST", "OPSET_VERSION", "EXTERNAL_DATA_THRESHOLD",
           "ONNX_NAME", "DATA_NAME", "REFERENCE_NAME", "export_stage", "stage_io_names", "truncated_model",
           "vocab_view",
           "PrefillGraph", "DecodeGraph"]

STAGES = ("prefill", "decode")
DEFAULT_PREFILL_LEN = 32   # prefill: L = 32 tokens
DEFAULT_DECODE_PAST = 31   # decode: P = 31 past tokens, the new token is the 32nd (position 31)
OPSET_VERSION = 17
# Protobuf cannot serialise a message > 2 GiB; above this many bytes of weights and constants the
# model is written with ONNX external data (margin for the graph itself).
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
ONNX_NAME = "model.onnx"
DATA_NAME = "model.onnx.data"
REFERENCE_NAME = "reference.npz"


# ------------------------------------------------------------------------------------------------
# wrappers
# ------------------------------------------------------------------------------------------------

def truncated_model(model: LlamaModel, num_layers: int) -> LlamaModel:
    """A shallow view of ``model`` with only its first ``num_layers`` decoder layers (same module objects,
    no weight copies); ``model`` itself is not modified."""
    if num_layers == len(model.layers):
        return model
    view = copy.copy(model)
    view._modules = dict(model._modules)
    view._modules["layers"] = nn.ModuleList(list(model.layers)[:num_layers])
    return view


def vocab_view(model: LlamaModel, rows: int) -> LlamaModel:
    """A view of ``model`` whose embedding table and LM head keep only their first ``rows`` token rows
    (copies of those rows; the LM head shares its input quantizer). For exporting the *structure* of
    the vocabulary-sized ends of a large model cheaply: the weights of the whole table are carried
    separately (the project builder supplies them from the golden model)."""
    import dataclasses

    from .model import QuantLinearUnit

    if rows >= model.arch.vocab_size:
        return model
    view = copy.copy(model)
    view._modules = dict(model._modules)
    view.arch = dataclasses.replace(model.arch, vocab_size=rows)
    emb = nn.Embedding(rows, model.arch.hidden_size)
    lm = QuantLinearUnit(model.arch.hidden_size, rows, model.spec, "lm_head")
    with torch.no_grad():
        emb.weight.copy_(model.embed_tokens.weight[:rows])
        lm.linear.weight.copy_(model.lm_head.linear.weight[:rows])
    lm.input_quant = model.lm_head.input_quant
    lm.eval()
    view._modules["embed_tokens"] = emb
    view._modules["lm_head"] = lm
    return view


def _kv_scale(head_quant) -> Optional[torch.Tensor]:
    """[1, heads, 1, 1] scale of a static per-head quantizer, or None if it does not quantize."""
    if head_quant.quant is None:
        return None
    return head_quant.scale().detach().to(torch.float32).view(1, -1, 1, 1).clone()


def _register_hadamard(wrapper: nn.Module, model: LlamaModel) -> None:
    """Register the (cached) R4 Hadamard constant as a buffer of the wrapper, so the MatMul of every
    layer's OnlineHadamard references one initialiser (the export branch uses the same tensor object)."""
    sizes = sorted({layer.mlp.online_hadamard.size for layer in model.layers if layer.mlp.online_hadamard.enabled})
    for n in sizes:
        wrapper.register_buffer(f"hadamard_{n}", hadamard_constant(n))


class PrefillGraph(nn.Module):
    """input_ids [1, L] -> (logits [1, vocab], present_key_0, present_value_0, ...)."""

    def __init__(self, model: LlamaModel, seq_len: int):
        super().__init__()
        self.embed_tokens = model.embed_tokens
        self.layers = model.layers
        self.norm = model.norm
        self.lm_head = model.lm_head
        cos, sin = model.rope(0, seq_len)
        # Persistent buffers: the TorchScript exporter turns the state dict into initialisers (shared by all
        # layers); tensors outside it would become one Constant per use.
        self.register_buffer("rope_cos", cos.clone())
        self.register_buffer("rope_sin", sin.clone())
        # As LlamaModel.hidden_states: no mask for a single token.
        self.register_buffer("mask", causal_mask(seq_len, 0) if seq_len > 1 else None)
        _register_hadamard(self, model)

    def forward(self, input_ids):
        h = self.embed_tokens(input_ids)
        outs: List[torch.Tensor] = []
        for layer in self.layers:
            h, (k, v) = layer(h, self.rope_cos, self.rope_sin, self.mask)
            outs += [k, v]
        logits = self.lm_head(self.norm(h[:, -1, :]))
        return (logits, *outs)


class DecodeGraph(nn.Module):
    """(input_ids [1, 1], position [1], past_key_0, past_value_0, ...) -> (logits [1, vocab], new_key_0,
    new_value_0, ...)."""

    def __init__(self, model: LlamaModel):
        super().__init__()
        self.embed_tokens = model.embed_tokens
        self.layers = model.layers
        self.norm = model.norm
        self.lm_head = model.lm_head
        self.register_buffer("rope_cos_table", model.rope_cos.clone())
        self.register_buffer("rope_sin_table", model.rope_sin.clone())
        for i, layer in enumerate(self.layers):
            self.register_buffer(f"k_scale_{i}", _kv_scale(layer.self_attn.k_quant))
            self.register_buffer(f"v_scale_{i}", _kv_scale(layer.self_attn.v_quant))
        _register_hadamard(self, model)

    def forward(self, input_ids, position, *past):
        cos = torch.index_select(self.rope_cos_table, 0, position)   # Gather -> [1, head_dim]
        sin = torch.index_select(self.rope_sin_table, 0, position)
        h = self.embed_tokens(input_ids)
        outs: List[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            pk, pv = past[2 * i], past[2 * i + 1]
            ks, vs = getattr(self, f"k_scale_{i}"), getattr(self, f"v_scale_{i}")
            if ks is not None:
                pk = static_quant(pk, ks)
            if vs is not None:
                pv = static_quant(pv, vs)
            h, (k, v) = layer(h, cos, sin, None, (pk, pv))
            outs += [k, v]
        logits = self.lm_head(self.norm(h[:, -1, :]))
        return (logits, *outs)


def stage_io_names(stage: str, num_layers: int) -> Tuple[List[str], List[str]]:
    """(input names, output names) of a stage graph with ``num_layers`` decoder layers."""
    _check_stage(stage)
    kv = lambda prefix: [f"{prefix}_{kind}_{i}" for i in range(num_layers) for kind in ("key", "value")]
    if stage == "prefill":
        return ["input_ids"], ["logits"] + kv("present")
    return ["input_ids", "position"] + kv("past"), ["logits"] + kv("new")


# ------------------------------------------------------------------------------------------------
# export machinery
# ------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _export_mode(module: nn.Module):
    """Switch TokenQuant and OnlineHadamard to their exportable forms inside ``module``."""
    mods = [m for m in module.modules() if isinstance(m, (TokenQuant, OnlineHadamard))]
    saved = [(m, m.__dict__.get("export_mode", None)) for m in mods]
    try:
        for m in mods:
            m.export_mode = True
        yield
    finally:
        for m, old in saved:
            if old is None:
                del m.export_mode
            else:
                m.export_mode = old


@contextlib.contextmanager
def _finally(fn, *args):
    try:
        yield
    finally:
        fn(*args)


_FOLD_OPS = {"Identity", "Shape", "Slice", "Concat", "Gather", "Unsqueeze", "Squeeze", "Cast", "Reshape",
             "Range", "Add", "Sub", "Mul", "Div", "Equal", "Where", "Expand", "ConstantOfShape"}
_FOLD_MAX_BYTES = 1 << 20   # never materialise folded tensors above 1 MiB (weights stay as they are)
_LARGE_INIT_BYTES = 1 << 16


def _static_shapes(model) -> Dict[str, Tuple[int, ...]]:
    """Static shapes of every tensor, from ONNX shape inference on a weight-free skeleton of the graph
    (large initialisers become typed graph inputs, QONNX ``Quant`` nodes shape-preserving Identities)."""
    import onnx
    from onnx import helper, shape_inference
    g = model.graph
    skel_inits, skel_inputs = [], list(g.input)
    for init in g.initializer:
        if init.HasField("raw_data") and len(init.raw_data) > _LARGE_INIT_BYTES or init.external_data:
            skel_inputs.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        else:
            skel_inits.append(init)
    nodes = []
    for node in g.node:
        if node.op_type in ("Quant", "BipolarQuant", "Trunc") and node.domain.startswith("qonnx"):
            nodes.append(helper.make_node("Identity", [node.input[0]], [node.output[0]], name=node.name))
        else:
            nodes.append(node)
    skel = helper.make_model(helper.make_graph(nodes, "skeleton", skel_inputs, list(g.output), skel_inits),
                             opset_imports=[o for o in model.opset_import if o.domain in ("", "ai.onnx")])
    skel.ir_version = model.ir_version
    inferred = shape_inference.infer_shapes(skel, strict_mode=False, data_prop=True)
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if vi.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = tuple(d.dim_value for d in dims)
    for init in g.initializer:
        shapes[init.name] = tuple(init.dims)
    return shapes


def _fold_static_subgraphs(model) -> None:
    """Fold what is constant in the exported graph before anyone runs QONNX cleanup on it: ``Shape`` of
    statically shaped tensors and the small shape arithmetic behind it (``repeat_interleave`` -> Tile,
    Shape, Slice, Concat, Reshape), and ``Identity`` of initialisers (the TorchScript exporter
    deduplicates equal parameters, e.g. the all-ones norm weights after rotation, into Identity nodes).
    Saves qonnx ``FoldConstants`` one full-graph iteration per folded node. Weights and QONNX nodes are
    never touched."""
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator
    g = model.graph
    init_by_name = {init.name: init for init in g.initializer}
    outputs = {o.name for o in g.output}
    shapes = None
    consts: Dict[str, np.ndarray] = {}
    rename: Dict[str, str] = {}
    keep = []

    def const(name):
        if name in consts:
            return consts[name]
        init = init_by_name.get(name)
        if init is None or init.external_data or init.data_location == 1:
            return None
        size = len(init.raw_data) if init.HasField("raw_data") else 0
        if size > _FOLD_MAX_BYTES:
            return None
        consts[name] = numpy_helper.to_array(init)
        return consts[name]

    for node in g.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
        if node.domain not in ("", "ai.onnx") or node.op_type not in _FOLD_OPS or len(node.output) != 1:
            keep.append(node)
            continue
        out = node.output[0]
        if node.op_type == "Identity" and node.input[0] in init_by_name and out not in outputs:
            rename[out] = node.input[0]
            continue
        value = None
        if node.op_type == "Shape":
            if shapes is None:
                shapes = _static_shapes(model)
            shape = shapes.get(node.input[0])
            if shape is not None:
                attrs = {a.name: a.i for a in node.attribute}
                value = np.array(shape, dtype=np.int64)[attrs.get("start", 0):attrs.get("end", len(shape))]
        else:
            args = [const(name) if name else None for name in node.input]
            if all(a is not None for a, name in zip(args, node.input) if name):
                feeds = {name: a for name, a in zip(node.input, args) if name}
                value = ReferenceEvaluator(node).run(None, feeds)[0]
                if value.nbytes > _FOLD_MAX_BYTES:
                    value = None
        if value is None or out in outputs:
            keep.append(node)
            continue
        consts[out] = np.asarray(value)
        new_init = numpy_helper.from_array(consts[out], out)
        g.initializer.append(new_init)
        init_by_name[out] = new_init
    for o in g.output:
        if o.name in rename:  # cannot happen (outputs are excluded above); keep the graph consistent anyway
            raise AssertionError(o.name)
    if len(keep) != len(g.node):
        del g.node[:]
        g.node.extend(keep)
    _drop_unused_initializers(model)


def _drop_unused_initializers(model) -> None:
    g = model.graph
    used = {name for node in g.node for name in node.input} | {o.name for o in g.output}
    unused = [i for i, init in enumerate(g.initializer) if init.name not in used]
    for i in reversed(unused):
        del g.initializer[i]


def _constants_to_initializers(model) -> None:
    """onnxoptimizer's ``extract_constant_to_initializer`` (the pass Brevitas runs), in Python."""
    g = model.graph
    keep = []
    for node in g.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            tensor = node.attribute[0].t
            tensor.name = node.output[0]
            g.initializer.append(tensor)
        else:
            keep.append(node)
    if len(keep) != len(g.node):
        del g.node[:]
        g.node.extend(keep)


def _attach_external_weights(model, state: Dict[str, torch.Tensor], data_path: Path, user_inputs) -> None:
    """Turn the graph inputs that are wrapper parameters/buffers (``export_params=False``) into
    initialisers whose data is streamed from the torch tensors straight into ``data_path`` (no
    in-memory copy of the weights in protobuf)."""
    from onnx import TensorProto, helper
    g = model.graph
    keep, params = [], []
    for vi in g.input:
        (keep if vi.name in user_inputs else params).append(vi)
    missing = [vi.name for vi in params if vi.name not in state]
    if missing:
        raise RuntimeError(f"export: graph inputs {missing[:5]} are neither stage inputs nor wrapper state")
    with open(data_path, "ab") as f:
        for vi in params:
            t = state[vi.name].detach().contiguous()
            arr = t.numpy()
            offset = f.tell()
            f.write(memoryview(arr).cast("B"))
            init = TensorProto(name=vi.name, dims=list(arr.shape),
                               data_type=helper.np_dtype_to_tensor_dtype(arr.dtype),
                               data_location=TensorProto.EXTERNAL)
            for key, value in (("location", data_path.name), ("offset", str(offset)),
                               ("length", str(arr.nbytes))):
                entry = init.external_data.add()
                entry.key, entry.value = key, value
            g.initializer.append(init)
    del g.input[:]
    g.input.extend(keep)


def _mark_external(model, location: str, size_threshold: int = 1024) -> None:
    """Mark the remaining in-proto initialisers >= ``size_threshold`` bytes as external data in
    ``location`` (``onnx.save`` appends them to the file). ``onnx``'s ``convert_model_to_external_data``
    is not used: it refuses when a file of that name exists in the *current* directory."""
    from onnx.external_data_helper import set_external_data
    for init in model.graph.initializer:
        if init.HasField("raw_data") and len(init.raw_data) >= size_threshold:
            set_external_data(init, location)


def _reset_export_handlers(module: nn.Module) -> None:
    """Detach the Brevitas export handlers from every quant proxy (their state before any export).

    Brevitas leaves them attached after an export, and its QONNX weight handler keeps
    ``quant_weight_values``, an unused fake-quantized copy of every weight, for as long as it lives. A
    fresh handler per export also lets the big-model path install its own weight handler."""
    for m in module.modules():
        if getattr(m, "export_handler", None) is not None:
            m.export_handler = None


def _external_data_manager(transform):
    """``QONNXManager`` (what ``brevitas.export.export_qonnx(..., dynamo=False)`` runs) for big models:
    the onnxoptimizer step replaced by ``transform`` (onnxoptimizer round-trips a > 2 GiB model through
    two extra temporary copies), and a weight handler that does not keep Brevitas' unused copy of every
    fake-quantized weight during the export (5 GB for Llama-3.2-1B) and traces the weight ``Quant`` with
    :class:`~brevitas_models.export_ops.LeanQuantTorchScriptFn` (same node, same values, no memory kept
    alive per weight during tracing)."""
    from brevitas.export.onnx.qonnx.function import BrevitasBinaryQuantOp
    from brevitas.export.onnx.qonnx.handler import BrevitasWeightQuantProxyHandler
    from brevitas.export.onnx.qonnx.manager import QONNXManager

    class LeanWeightQuantProxyHandler(BrevitasWeightQuantProxyHandler):
        """Brevitas 0.13.4's ``prepare_for_export`` without ``quant_weight_values`` (a second full
        fake-quantization of the weight, kept alive and never used), tracing with LeanQuantOp."""

        def prepare_for_export(self, module):
            if not module.is_quant_enabled:
                return
            first_qweight = module.tracked_module_list[0].quant_weight()
            self.validate(first_qweight.bit_width, first_qweight.zero_point)
            self.symbolic_kwargs = {
                'scale': first_qweight.scale,
                'zero_point': first_qweight.zero_point,
                'bit_width': first_qweight.bit_width,
                'narrow_range': module.is_narrow_range,
                'signed': first_qweight.signed,
                'rounding_mode': 'ROUND'}
            self.quant_op = BrevitasBinaryQuantOp if self.symbolic_kwargs['bit_width'] == 1 else LeanQuantOp

    class QONNXExternalDataManager(QONNXManager):
        run_onnx_passes = False
        model_transforms = [transform]
        handlers = [LeanWeightQuantProxyHandler if h is BrevitasWeightQuantProxyHandler else h
                    for h in QONNXManager.handlers]

    return QONNXExternalDataManager


def _graph_bytes(module: nn.Module) -> int:
    """Bytes of the parameters and buffers a wrapper exports as initialisers."""
    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def _export(wrapper: nn.Module, args: Tuple[torch.Tensor, ...], path: Path, input_names, output_names,
            external_data: bool, opset_version: int) -> None:
    """Export ``wrapper`` to ``path`` (and ``DATA_NAME`` next to it with external data).

    Small graphs: ``brevitas.export.export_qonnx`` (TorchScript, Brevitas' onnxoptimizer passes), then
    :func:`_fold_static_subgraphs`. Big graphs (external data): the same QONNX manager with
    ``export_params=False`` -- the weights leave torch as graph inputs and are streamed into
    ``model.onnx.data`` by a model transform, so neither torch nor Brevitas ever holds a protobuf copy of
    them (Brevitas re-loads the exported file; torch would write one file per tensor above 2 GiB)."""
    import onnx
    from brevitas.export import export_qonnx
    # dynamo=False: TorchScript exporter (torch.onnx.export defaults to dynamo in torch >= 2.9).
    kwargs = dict(args=args, input_names=input_names, output_names=output_names, dynamo=False,
                  opset_version=opset_version, keep_initializers_as_inputs=False)
    _reset_export_handlers(wrapper)
    with _export_mode(wrapper), _finally(_reset_export_handlers, wrapper), _finally(clear_hadamard_cache):
        if not external_data:
            # in memory (export_path=None): the graph is written once, after folding, instead of being
            # written, re-read, written and re-read again on the way
            model = export_qonnx(wrapper, export_path=None, do_constant_folding=True, **kwargs)
            _fold_static_subgraphs(model)
            onnx.save(model, str(path))
            return
        scratch = path.parent / (path.name + ".export-tmp")
        if scratch.exists():
            shutil.rmtree(scratch)
        scratch.mkdir(parents=True)
        state = dict(wrapper.state_dict(keep_vars=False))
        user_inputs = set(input_names)

        def transform(model):
            _attach_external_weights(model, state, scratch / DATA_NAME, user_inputs)
            _constants_to_initializers(model)
            _fold_static_subgraphs(model)
            _mark_external(model, DATA_NAME)
            return model

        try:
            # No constant folding: folded parameters (e.g. transposed float weights) would exist only
            # inside the exporter, not in the wrapper's state to stream from. qonnx cleanup folds them.
            _external_data_manager(transform).export(
                wrapper, export_path=str(scratch / ONNX_NAME), export_params=False, do_constant_folding=False,
                **kwargs)
            os.replace(scratch / ONNX_NAME, path)
            os.replace(scratch / DATA_NAME, path.parent / DATA_NAME)
        finally:
            del state
            shutil.rmtree(scratch, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# public API
# ------------------------------------------------------------------------------------------------

def _check_stage(stage):
    if stage not in STAGES:
        raise ValueError(f"unknown export stage {stage!r}; known: {list(STAGES)}")


def _check_args(model: LlamaModel, stage: str, tokens, seq_len, layers) -> Tuple[int, int]:
    _check_stage(stage)
    if seq_len is None:
        seq_len = DEFAULT_PREFILL_LEN if stage == "prefill" else DEFAULT_DECODE_PAST
    if not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 1:
        raise ValueError(f"seq_len must be a positive integer, got {seq_len!r}")
    table = model.rope_cos.shape[0]
    positions = seq_len if stage == "prefill" else seq_len + 1
    if positions > table:
        what = "prefill length" if stage == "prefill" else f"decode past length {seq_len} + 1 new token ="
        raise ValueError(f"seq_len {seq_len!r} too large: {what} {positions} positions exceed the model's "
                         f"RoPE table ({table} positions)")
    total = len(model.layers)
    if layers is None:
        layers = total
    if not isinstance(layers, int) or isinstance(layers, bool) or not 1 <= layers <= total:
        raise ValueError(f"layers must be an integer in 1..{total} (the model's decoder layers), got {layers!r}")
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 1 or tokens.dtype != torch.long:
        raise ValueError(f"tokens must be a 1-D LongTensor of text token ids, got "
                         f"{type(tokens).__name__}{tuple(getattr(tokens, 'shape', ()))}")
    if tokens.numel() < positions:
        raise ValueError(f"stage {stage!r} with seq_len {seq_len} needs {positions} tokens, "
                         f"got {tokens.numel()}")
    vocab = model.arch.vocab_size
    used = tokens[:positions]
    if int(used.min()) < 0 or int(used.max()) >= vocab:
        raise ValueError(f"token ids must be in 0..{vocab - 1}, got {int(used.min())}..{int(used.max())}")
    return seq_len, layers


def _reference(view: LlamaModel, stage: str, tokens: torch.Tensor, seq_len: int,
               input_names: Sequence[str], output_names: Sequence[str]):
    """(export args, reference arrays) from the Brevitas model in normal mode."""
    with torch.no_grad():
        if stage == "prefill":
            ids = tokens[:seq_len].view(1, seq_len).clone()
            logits, presents = view(ids)
            args = (ids,)
        else:
            ids = tokens[:seq_len].view(1, seq_len)
            _, past = view(ids)
            new_ids = tokens[seq_len:seq_len + 1].view(1, 1).clone()
            logits, presents = view(new_ids, past)
            position = torch.tensor([seq_len], dtype=torch.long)
            args = (new_ids, position, *[t.contiguous() for kv in past for t in kv])
        outputs = (logits[:, -1, :], *[t for kv in presents for t in kv])
    ref = {name: t.detach().cpu().numpy() for name, t in zip(input_names, args)}
    ref.update({name: t.detach().cpu().numpy() for name, t in zip(output_names, outputs)})
    return args, ref


def export_stage(model: LlamaModel, stage: str, out_dir, tokens: torch.Tensor, seq_len: Optional[int] = None,
                 layers: Optional[int] = None, external_data: Optional[bool] = None,
                 opset_version: int = OPSET_VERSION) -> Dict:
    """Export one stage of ``model`` as a QONNX graph plus its PyTorch reference.

    Args:
        model: a built (rotated / calibrated) :class:`LlamaModel`; it is not modified.
        stage: ``"prefill"`` or ``"decode"`` (see the module docstring for the graph interfaces).
        out_dir: directory for ``model.onnx`` (``model.onnx.data``) and ``reference.npz`` (created).
        tokens: 1-D LongTensor of real-text token ids; prefill uses ``tokens[:L]``, decode
            ``tokens[:P + 1]``.
        seq_len: prefill length L (default 32) or decode past length P (default 31); L, resp. P + 1,
            must fit the model's RoPE table.
        layers: export only the first N decoder layers (default: all), then the final norm and LM head.
        external_data: write initialisers to ``model.onnx.data``; default: only when weights and
            constants exceed :data:`EXTERNAL_DATA_THRESHOLD` bytes (protobuf's 2 GiB limit).
        opset_version: ONNX opset of the standard-domain nodes.

    Returns:
        dict with ``onnx`` (path), ``onnx_data`` (path or None), ``reference`` (path), ``stage``,
        ``seq_len``, ``layers``, ``input_names``, ``output_names``, ``external_data`` and the timings
        ``reference_s``, ``export_s``, ``total_s`` (seconds).
    """
    t_start = time.perf_counter()
    seq_len, layers = _check_args(model, stage, tokens, seq_len, layers)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    input_names, output_names = stage_io_names(stage, layers)

    view = truncated_model(model, layers)
    was_training = model.training
    model.eval()
    try:
        t0 = time.perf_counter()
        args, ref = _reference(view, stage, tokens, seq_len, input_names, output_names)
        t_ref = time.perf_counter() - t0
        ref_path = out_dir / REFERENCE_NAME
        np.savez(ref_path, **ref)
        del ref

        wrapper = PrefillGraph(view, seq_len) if stage == "prefill" else DecodeGraph(view)
        wrapper.eval()
        if external_data is None:
            external_data = _graph_bytes(wrapper) > EXTERNAL_DATA_THRESHOLD
        onnx_path = out_dir / ONNX_NAME
        data_path = out_dir / DATA_NAME
        if data_path.exists():
            data_path.unlink()
        t0 = time.perf_counter()
        _export(wrapper, args, onnx_path, input_names, output_names, bool(external_data), opset_version)
        t_export = time.perf_counter() - t0
    finally:
        model.train(was_training)
    return {
        "stage": stage,
        "seq_len": seq_len,
        "layers": layers,
        "onnx": str(onnx_path),
        "onnx_data": str(data_path) if external_data else None,
        "reference": str(ref_path),
        "input_names": input_names,
        "output_names": output_names,
        "external_data": bool(external_data),
        "reference_s": t_ref,
        "export_s": t_export,
        "total_s": time.perf_counter() - t_start,
    }
