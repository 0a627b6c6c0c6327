"""flexllm frontend: fuse a per-stage QONNX Llama graph (``brevitas_models.export.export_stage``) into
a graph of flexllm operators (domain :data:`FLEXLLM_DOMAIN`, qonnx CustomOps in :mod:`.ops`).

``fuse_llama(model)`` works on a copy of the model (path, ``onnx.ModelProto`` or qonnx ``ModelWrapper``;
raw export output or after ``qonnx.util.cleanup.cleanup_model``):

1. qonnx ``InferShapes`` (the matchers check shapes; run on a weight-free copy, see :mod:`.shapes`, so
   models above 2 GiB work);
2. the fusions of :data:`.transformations.FUSION_ORDER`, in that order (the order is explained in
   :mod:`.transformations`); each removes the nodes and initialisers it leaves dead;
3. :func:`check_fully_fused`: :class:`UnsupportedNodeError` naming every node left that is not a
   flexllm op (nothing is returned then; the caller's model is never modified);
4. ``InferShapes`` and ``InferDataTypes`` on the fused graph (every output FLOAT32); its graph inputs
   and outputs (names, element types, shapes) are those of the original.

qonnx execution of the fused graph reproduces the original graph bit for bit: each op's
``execute_node`` performs the replaced nodes' operations in the same order, running the
implementation-dependent ones (MatMul, Softmax, Sigmoid, Pow, Reduce*) as single onnxruntime nodes
exactly as qonnx runs them.
"""

from __future__ import annotations

import copy
import os
from typing import Union

import onnx
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.infer_datatypes import InferDataTypes

from .check import FUSED_OP_TYPES, UnsupportedNodeError, check_fully_fused
from .ops._base import FLEXLLM_DOMAIN
from .shapes import infer_shapes
from .transformations import FUSION_ORDER, RemoveDeadNodes

__all__ = ["annotate_initializer_shapes", "FLEXLLM_DOMAIN", "FUSED_OP_TYPES", "FUSION_ORDER", "UnsupportedNodeError", "check_fully_fused",
           "fuse_llama", "infer_shapes", "load_model_copy"]

ModelLike = Union[str, os.PathLike, onnx.ModelProto, ModelWrapper]


def load_model_copy(model: ModelLike) -> ModelWrapper:
    """A ModelWrapper on a private copy of ``model`` (a path is loaded with its external data)."""
    if isinstance(model, ModelWrapper):
        proto = copy.deepcopy(model.model)
    elif isinstance(model, onnx.ModelProto):
        proto = copy.deepcopy(model)
    elif isinstance(model, (str, os.PathLike)):
        proto = onnx.load(os.fspath(model))
    else:
        raise TypeError(f"fuse_llama: expected a path, onnx.ModelProto or ModelWrapper, got {type(model).__name__}")
    return ModelWrapper(proto, fix_missing_initializer_valueinfo=False)


def _io_signature(model: ModelWrapper):
    inits = {t.name for t in model.graph.initializer}

    def sig(vis):
        out = []
        for vi in vis:
            if vi.name in inits:
                continue
            tt = vi.type.tensor_type
            out.append((vi.name, tt.elem_type, tuple(d.dim_value if d.HasField("dim_value") else d.dim_param
                                                     for d in tt.shape.dim)))
        return out
    return sig(model.graph.input), sig(model.graph.output)


def _transform(model: ModelWrapper, transformation) -> ModelWrapper:
    # no deepcopy (we own the copy), no qonnx cleanup (its GiveUniqueParameterTensors would duplicate
    # shared weights such as a tied LM head or the one Hadamard matrix of all layers)
    return model.transform(transformation, make_deepcopy=False, cleanup=False)


def fuse_llama(model: ModelLike) -> ModelWrapper:
    """Fuse an exported Llama stage graph into flexllm ops; see the module docstring."""
    wrapper = load_model_copy(model)
    io_before = _io_signature(wrapper)
    wrapper.set_opset_import(FLEXLLM_DOMAIN, 1)
    wrapper = infer_shapes(wrapper)
    for transformation in FUSION_ORDER:
        wrapper = _transform(wrapper, transformation())
    wrapper = _transform(wrapper, RemoveDeadNodes())
    check_fully_fused(wrapper)
    wrapper = infer_shapes(wrapper)
    wrapper = _transform(wrapper, InferDataTypes())
    io_after = _io_signature(wrapper)
    if io_after != io_before:      # a bug of a fusion, not of the input
        raise RuntimeError(f"fuse_llama changed the graph interface: {io_before} -> {io_after}")
    annotate_initializer_shapes(wrapper)
    return wrapper


def annotate_initializer_shapes(model: ModelWrapper) -> None:
    """Give every initialiser a ``value_info`` entry: hls4ml's ONNX parser looks up the shape of every
    node input there (``get_input_shape``) and fails on bare initialisers."""
    known = {vi.name for vi in model.graph.value_info} | {vi.name for vi in model.graph.input}
    for init in model.graph.initializer:
        if init.name not in known:
            model.graph.value_info.append(onnx.helper.make_tensor_value_info(init.name, init.data_type,
                                                                             list(init.dims)))
