"""Graph helpers shared by the fusion transformations: a producer / consumer / constant index, the
fusion bookkeeping (:class:`Rewriter`), dead-node removal and a stable topological sort.

Matching is structural only (op types, constants, attributes, shapes); node names are used only to
name the fused node (the matched nodes' common name prefix + the fused op type) and in messages.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..ops._base import FLEXLLM_DOMAIN

QONNX_QUANT_DOMAINS = ("qonnx.custom_op.general", "onnx.brevitas")


def attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            val = helper.get_attribute_value(a)
            return val.decode() if isinstance(val, bytes) else val
    return default


class GraphIndex:
    """Producer, consumers, constants (initialisers and ``Constant`` nodes) and shapes of a graph."""

    def __init__(self, model):
        self.model = model
        graph = model.graph
        self.producer: Dict[str, onnx.NodeProto] = {}
        self.consumers: Dict[str, List[onnx.NodeProto]] = defaultdict(list)
        self.order: Dict[int, int] = {}
        for i, node in enumerate(graph.node):
            self.order[id(node)] = i
            for out in node.output:
                if out:
                    self.producer[out] = node
            for inp in node.input:
                if inp:
                    self.consumers[inp].append(node)
        self._init_protos = {t.name: t for t in graph.initializer}
        self._const_cache: Dict[str, np.ndarray] = {}
        self.graph_inputs = {t.name for t in graph.input}
        self.graph_outputs = {t.name for t in graph.output}
        self._shapes: Dict[str, Optional[List[int]]] = {}
        for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
            tt = vi.type.tensor_type
            if tt.HasField("shape"):
                dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
                self._shapes[vi.name] = dims

    # constants ----------------------------------------------------------------------------------
    def is_init(self, name: str) -> bool:
        return name in self._init_protos

    def const(self, name: str) -> Optional[np.ndarray]:
        """Value of an initialiser or of a ``Constant`` node output, else None."""
        if not name:
            return None
        if name in self._const_cache:
            return self._const_cache[name]
        val = None
        if name in self._init_protos:
            val = numpy_helper.to_array(self._init_protos[name])
        else:
            prod = self.producer.get(name)
            if prod is not None and prod.op_type == "Constant" and prod.domain == "":
                t = attr(prod, "value")
                if isinstance(t, onnx.TensorProto):
                    val = numpy_helper.to_array(t)
        if val is not None:
            self._const_cache[name] = val
        return val

    def is_const(self, name: str) -> bool:
        if name in self._init_protos:
            return True
        prod = self.producer.get(name)
        return prod is not None and prod.op_type == "Constant" and self.const(name) is not None

    def const_meta(self, name: str):
        """(shape tuple, numpy dtype) of a constant without converting an initialiser's data, else None."""
        if name in self._init_protos:
            t = self._init_protos[name]
            return tuple(t.dims), np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type))
        val = self.const(name)
        return None if val is None else (val.shape, val.dtype)

    def scalar(self, name: str) -> Optional[float]:
        val = self.const(name)
        if val is None or val.size != 1:
            return None
        return val.reshape(-1)[0].item()

    def shape(self, name: str) -> Optional[List[int]]:
        if name in self._init_protos:
            return list(self._init_protos[name].dims)
        shp = self._shapes.get(name)
        if shp is None or any(d is None for d in shp):
            return None
        return list(shp)

    # structure ----------------------------------------------------------------------------------
    def prod(self, name: str, op_type=None) -> Optional[onnx.NodeProto]:
        node = self.producer.get(name)
        if node is None:
            return None
        if op_type is not None:
            types = (op_type,) if isinstance(op_type, str) else tuple(op_type)
            if node.op_type not in types or not _std_or_quant(node):
                return None
        return node

    def cons(self, name: str) -> List[onnx.NodeProto]:
        return list(self.consumers.get(name, []))

    def only_used_by(self, name: str, nodes: Iterable[onnx.NodeProto]) -> bool:
        """``name`` is not a graph output and every consumer is one of ``nodes``."""
        if name in self.graph_outputs:
            return False
        ids = {id(n) for n in nodes}
        return all(id(c) in ids for c in self.consumers.get(name, []))

    def pos(self, node: onnx.NodeProto) -> int:
        return self.order[id(node)]


def _std_or_quant(node) -> bool:
    return node.domain == "" or (node.op_type == "Quant" and node.domain in QONNX_QUANT_DOMAINS)


def commutative_split(idx: GraphIndex, node, pred):
    """For a 2-input commutative node: (a, b) such that ``pred(a)`` holds for input a, else None."""
    a, b = node.input[0], node.input[1]
    if pred(a):
        return a, b
    if pred(b):
        return b, a
    return None


def static_quant(idx: GraphIndex, node) -> Optional[dict]:
    """Parameters of a QONNX ``Quant`` node with constant scale / zero point / bit width, else None."""
    if node is None or node.op_type != "Quant" or node.domain not in QONNX_QUANT_DOMAINS or len(node.input) != 4:
        return None
    scale, zp, bits = (idx.const(n) for n in node.input[1:4])
    if scale is None or zp is None or bits is None or bits.size != 1:
        return None
    if str(attr(node, "rounding_mode", "ROUND")).upper() not in ("ROUND", "HALF_EVEN"):
        return None
    b = float(bits.reshape(-1)[0])
    if b != int(b) or b < 2:
        return None
    return {"x": node.input[0], "scale": scale.astype(np.float32), "zero_point": zp, "bits": int(b),
            "signed": int(attr(node, "signed", 1)), "narrow": int(attr(node, "narrow", 0)), "node": node}


def reduce_axes(idx: GraphIndex, node) -> Optional[List[int]]:
    """Axes of a Reduce* node (attribute, or input 1 from opset 18)."""
    axes = attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        val = idx.const(node.input[1])
        axes = None if val is None else [int(v) for v in val.reshape(-1)]
    return None if axes is None else list(axes)


def is_last_axis_reduce(idx: GraphIndex, node, rank: Optional[int]) -> bool:
    axes = reduce_axes(idx, node)
    if axes is None or len(axes) != 1 or int(attr(node, "keepdims", 1)) != 1:
        return False
    return axes[0] == -1 or (rank is not None and axes[0] == rank - 1)


# ------------------------------------------------------------------------------------------------
# rewriting
# ------------------------------------------------------------------------------------------------

def fused_name(anchor: onnx.NodeProto, op_type: str, taken: set) -> str:
    """The anchor (last matched) node's name with its last '/' segment replaced by ``op_type``
    (e.g. ``/layers.0/input_layernorm/Mul_1`` -> ``/layers.0/input_layernorm/RMSNorm``), made unique."""
    segs = anchor.name.split("/")[:-1] if anchor.name else []
    base = "/".join(segs + [op_type])
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


def set_nodes(graph, nodes: Sequence[onnx.NodeProto]) -> None:
    """Replace the node list by (copies of) ``nodes``."""
    copies = [onnx.NodeProto.FromString(n.SerializeToString()) for n in nodes]
    del graph.node[:]
    graph.node.extend(copies)


class Rewriter:
    """Collects fusions found on one :class:`GraphIndex` and applies them together.

    ``replace(matched, new_node)``: the matched nodes are removed and ``new_node`` is inserted where the
    last of them was; ``claimed`` prevents two fusions from taking the same node."""

    def __init__(self, model):
        self.model = model
        self.idx = GraphIndex(model)
        self.removed: set = set()
        self.inserts: Dict[int, List[onnx.NodeProto]] = defaultdict(list)
        self.new_inits: List[onnx.TensorProto] = []
        self.taken_names = {n.name for n in model.graph.node}
        self.taken_tensors = set(self.idx.producer) | set(self.idx.consumers) | self.idx.graph_inputs | \
            {t.name for t in model.graph.initializer}
        self.count = 0

    def claimed(self, nodes) -> bool:
        return any(id(n) in self.removed for n in nodes)

    def make_node(self, op_type, inputs, outputs, matched, **attrs) -> onnx.NodeProto:
        node = helper.make_node(op_type, list(inputs), list(outputs),
                                name=fused_name(max(matched, key=self.idx.pos), op_type, self.taken_names),
                                domain=FLEXLLM_DOMAIN,
                                **{k: v for k, v in attrs.items() if not (isinstance(v, list) and not v)})
        return node

    def replace(self, matched: Sequence[onnx.NodeProto], new_node: onnx.NodeProto) -> None:
        anchor = max(matched, key=self.idx.pos)
        for n in matched:
            self.removed.add(id(n))
        self.inserts[id(anchor)].append(new_node)
        self.count += 1

    def add_initializer(self, base: str, value: np.ndarray) -> str:
        name, k = base, 0
        while name in self.taken_tensors:
            k += 1
            name = f"{base}_{k}"
        self.taken_tensors.add(name)
        self.new_inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def initializer_for(self, name: str, value: Optional[np.ndarray], base: str) -> str:
        """``name`` if it is an initialiser holding exactly ``value`` (``None``: as it is), else a new
        initialiser named after ``base`` holding ``value`` (``None``: the constant's value)."""
        if self.idx.is_init(name):
            if value is None or value is self.idx._const_cache.get(name):
                return name
            cur = self.idx.const(name)
            if cur.shape == value.shape and cur.dtype == value.dtype and np.array_equal(cur, value):
                return name
        return self.add_initializer(base, self.idx.const(name) if value is None else value)

    def fresh_tensor(self, base: str) -> str:
        name, k = base, 0
        while name in self.taken_tensors:
            k += 1
            name = f"{base}_{k}"
        self.taken_tensors.add(name)
        return name

    def commit(self) -> bool:
        if not self.count:
            return False
        graph = self.model.graph
        new_nodes = []
        for node in graph.node:
            if id(node) not in self.removed:
                new_nodes.append(node)
            new_nodes.extend(self.inserts.get(id(node), []))
        set_nodes(graph, new_nodes)
        graph.initializer.extend(self.new_inits)
        remove_dead_nodes(self.model)
        topological_sort(self.model)
        return True


def remove_dead_nodes(model) -> int:
    """Remove nodes none of whose outputs is consumed or a graph output (iteratively), then the
    initialisers no node reads any more. Returns the number of nodes removed."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    removed = 0
    while True:
        used = set(outputs)
        for node in graph.node:
            used.update(i for i in node.input if i)
        dead = [n for n in graph.node if not any(o in used for o in n.output if o)]
        if not dead:
            break
        dead_ids = {id(n) for n in dead}
        set_nodes(graph, [n for n in graph.node if id(n) not in dead_ids])
        removed += len(dead)
    used = {i for n in graph.node for i in n.input} | outputs
    # delete in place, back to front (no copies of possibly large initialisers)
    for i in reversed([i for i, t in enumerate(graph.initializer) if t.name not in used]):
        del graph.initializer[i]
    known = {i for n in graph.node for i in list(n.input) + list(n.output)}
    for i in reversed([i for i, v in enumerate(graph.value_info) if v.name not in known]):
        del graph.value_info[i]
    return removed


def topological_sort(model) -> None:
    """Stable topological sort of the node list (Kahn, ties broken by current position)."""
    graph = model.graph
    nodes = list(graph.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    deps = [set() for _ in nodes]
    users = defaultdict(list)
    for i, n in enumerate(nodes):
        for inp in n.input:
            j = producer.get(inp)
            if j is not None and j != i and j not in deps[i]:
                deps[i].add(j)
                users[j].append(i)
    missing = [len(d) for d in deps]
    heap = [i for i, m in enumerate(missing) if m == 0]
    heapq.heapify(heap)
    order = []
    while heap:
        i = heapq.heappop(heap)
        order.append(i)
        for u in users[i]:
            missing[u] -= 1
            if missing[u] == 0:
                heapq.heappush(heap, u)
    if len(order) != len(nodes):
        raise ValueError("graph has a cycle")
    if order == list(range(len(nodes))):
        return
    set_nodes(graph, [nodes[i] for i in order])
