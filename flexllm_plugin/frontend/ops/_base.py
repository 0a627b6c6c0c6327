"""Shared machinery of the flexllm frontend CustomOps.

* :class:`FlexLLMOp`: base class (FLOAT32 output datatypes, attribute / input-count verification).
* :func:`run_onnx_node`: execute ONE standard ONNX node with onnxruntime, built exactly as
  ``qonnx.core.onnx_exec.execute_node`` builds it (a single-node model, every input fed at run time).
  Used for the operators whose result depends on the implementation (MatMul summation order,
  Softmax / Sigmoid / ReduceMean / Pow kernels, reductions), so a fused node reproduces the
  replaced subgraph bit for bit (one intra-op thread: see ``_session_options``).
  IEEE-exact elementwise operations (Add, Sub, Mul, Div, Neg, Abs, Sqrt, max) and data movement are
  done in numpy.
* :func:`quant`: the QONNX ``Quant`` node's arithmetic (``qonnx.custom_op.general.quant.quant``) called
  with the same argument types the node receives from the execution context.
* :func:`function_shape_op`: a shape-compatible node for ``make_shape_compatible_op`` that one standard
  node cannot express (several outputs; Reshape + Transpose): a call of a model-local ONNX function.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import List, Sequence

import numpy as np
import onnx
import onnxruntime as rt
from onnx import helper, numpy_helper
from qonnx.core.datatype import DataType
from qonnx.custom_op.base import CustomOp
from qonnx.custom_op.general.quant import quant as _qonnx_quant

FLEXLLM_DOMAIN = "flexllm_plugin.frontend.ops"
ONNX_OPSET = 17   # opset of the standard nodes the fused ops replace (export_stage's OPSET_VERSION)

_F32 = np.float32


# ------------------------------------------------------------------------------------------------
# numerics
# ------------------------------------------------------------------------------------------------

_SESSIONS: "OrderedDict[tuple, rt.InferenceSession]" = OrderedDict()
_MAX_SESSIONS = 256


def _session_options() -> rt.SessionOptions:
    # One thread, so a cached session holds no thread pool. qonnx uses the default (one per core); the
    # kernels used here split work over output elements (MLAS GEMM over row / column tiles, not over
    # the summation; reductions, Softmax, elementwise ops over outputs), so the thread count does not
    # change the bits: tests/test_frontend.py checks fused == original bit for bit.
    opts = rt.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return opts


def run_onnx_node(op_type: str, inputs: Sequence[np.ndarray], opset: int = ONNX_OPSET, **attrs) -> np.ndarray:
    """Output 0 of one standard ONNX node ``op_type(*inputs, **attrs)`` run by onnxruntime.

    Same construction as qonnx's node-by-node execution (single-node model, all inputs fed, none an
    initialiser, so no constant folding or fusion), so the same kernel runs on the same data.
    Sessions are cached per (op, attributes, input shapes and dtypes)."""
    arrays = [np.ascontiguousarray(a) for a in inputs]
    key = (op_type, opset, tuple(sorted((k, repr(v)) for k, v in attrs.items())),
           tuple((a.shape, a.dtype.str) for a in arrays))
    sess = _SESSIONS.get(key)
    if sess is None:
        names = [f"in{i}" for i in range(len(arrays))]
        vis = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape))
               for n, a in zip(names, arrays)]
        out_type = helper.np_dtype_to_tensor_dtype(arrays[0].dtype)
        node = helper.make_node(op_type, names, ["out"], **attrs)
        graph = helper.make_graph([node], "single-node-exec", vis,
                                  [helper.make_tensor_value_info("out", out_type, None)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        sess = rt.InferenceSession(model.SerializeToString(), _session_options())
        _SESSIONS[key] = sess
        if len(_SESSIONS) > _MAX_SESSIONS:
            _SESSIONS.popitem(last=False)
    else:
        _SESSIONS.move_to_end(key)
    return sess.run(None, {f"in{i}": a for i, a in enumerate(arrays)})[0]


def f32(value) -> np.ndarray:
    """A float32 ndarray (0-d for a scalar), as an initialiser arrives in qonnx's execution context."""
    return np.asarray(value, dtype=_F32)


def quant(x: np.ndarray, scale, zero_point, bit_width: int, signed: int, narrow: int) -> np.ndarray:
    """QONNX ``Quant`` (rounding_mode ROUND) exactly as ``IntQuant.execute_node`` computes it.

    ``scale`` / ``zero_point`` broadcast against ``x``; ``bit_width`` becomes a 0-d float32 array like
    the node's bit-width initialiser (``int_quant`` computes its clamp bounds from it)."""
    ret = _qonnx_quant(x, f32(scale), f32(zero_point), f32(float(bit_width)), int(signed), int(narrow), "ROUND")
    if not isinstance(ret, np.ndarray):
        ret = np.asarray(ret, dtype=_F32)
    if ret.dtype != _F32:
        ret = ret.astype(_F32)
    return ret


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return run_onnx_node("MatMul", [a, b])


# ------------------------------------------------------------------------------------------------
# shape inference helpers
# ------------------------------------------------------------------------------------------------

SHAPE_FUNCTION_DOMAIN = "flexllm_plugin.frontend.shape_functions"


def function_shape_op(model, node: onnx.NodeProto, name: str, inputs: Sequence[str], outputs: Sequence[str],
                      body: Sequence[onnx.NodeProto]) -> onnx.NodeProto:
    """A shape-compatible node for ``make_shape_compatible_op`` computing outputs that one standard node
    cannot (several outputs, or Reshape + Transpose): a call of the model-local ONNX function ``name``
    (domain :data:`SHAPE_FUNCTION_DOMAIN`, standard-op ``body`` over formal ``inputs`` / ``outputs``),
    which is added to ``model`` if missing. ONNX shape inference infers through model-local functions
    and, unlike a subgraph (``If``), leaves the calling node unchanged, which qonnx's ``InferShapes`` needs
    to restore the CustomOp afterwards. The function stays in the model (it is never executed)."""
    proto = model.model if hasattr(model, "model") else model
    if not any(f.domain == SHAPE_FUNCTION_DOMAIN and f.name == name for f in proto.functions):
        proto.functions.append(helper.make_function(SHAPE_FUNCTION_DOMAIN, name, list(inputs), list(outputs),
                                                    list(body), opset_imports=[helper.make_opsetid("", ONNX_OPSET)]))
    if not any(o.domain == SHAPE_FUNCTION_DOMAIN for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid(SHAPE_FUNCTION_DOMAIN, 1))
    return helper.make_node(name, list(node.input), list(node.output), domain=SHAPE_FUNCTION_DOMAIN)


def const_node(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name))


# ------------------------------------------------------------------------------------------------
# base class
# ------------------------------------------------------------------------------------------------

class FlexLLMOp(CustomOp):
    """Base of the flexllm frontend ops: every output is FLOAT32; ``verify_node`` checks the domain,
    the number of inputs (``NUM_INPUTS``: allowed counts) and the required attributes and raises
    ``ValueError`` on the first problem (returns a list of info messages otherwise)."""

    NUM_INPUTS: Sequence[int] = (1,)
    NUM_OUTPUTS: int = 1

    def infer_node_datatype(self, model):
        for out in self.onnx_node.output:
            model.set_tensor_datatype(out, DataType["FLOAT32"])

    def verify_node(self) -> List[str]:
        node = self.onnx_node
        name = f"{node.op_type} node '{node.name}'"
        if node.domain != FLEXLLM_DOMAIN:
            raise ValueError(f"{name}: domain {node.domain!r}, expected {FLEXLLM_DOMAIN!r}")
        if len(node.input) not in tuple(self.NUM_INPUTS):
            raise ValueError(f"{name}: {len(node.input)} inputs, expected {tuple(self.NUM_INPUTS)}")
        if len(node.output) != self.NUM_OUTPUTS:
            raise ValueError(f"{name}: {len(node.output)} outputs, expected {self.NUM_OUTPUTS}")
        for attr, spec in self.get_nodeattr_types().items():
            try:
                self.get_nodeattr(attr)
            except Exception as exc:   # required attribute missing / value not allowed
                raise ValueError(f"{name}: attribute {attr}: {exc}") from exc
        self.verify_specific()
        return [f"{name}: ok"]

    def verify_specific(self) -> None:
        """Op-specific attribute checks (raise ValueError)."""

    # helpers for subclasses
    def _inputs(self, context) -> List[np.ndarray]:
        return [context[i] for i in self.onnx_node.input]

    def _set(self, context, *values) -> None:
        for name, val in zip(self.onnx_node.output, values):
            context[name] = val


def float_list(values) -> List[float]:
    """Python floats of float32 values (ONNX ``floats`` attributes are float32: the values round-trip
    exactly)."""
    return [float(v) for v in np.asarray(values, dtype=_F32).ravel()]


def as_f32_array(values: Sequence[float]) -> np.ndarray:
    return np.asarray(list(values), dtype=_F32)


__all__ = ["FLEXLLM_DOMAIN", "ONNX_OPSET", "FlexLLMOp", "run_onnx_node", "quant", "matmul", "f32",
           "function_shape_op", "SHAPE_FUNCTION_DOMAIN", "const_node", "float_list", "as_f32_array"]
