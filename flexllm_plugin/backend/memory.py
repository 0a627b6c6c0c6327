"""External-memory images of a FlexLLM kernel and their manifest.

Three images, each a flat array the kernel reads through one pointer (an m_axi port on the FPGA):

``wmem_p{i}`` uint8  packed integer weights, one image per weight port (HBM pseudo-channel): every
                    matrix is split over the ports by output row and lives at the same 512-bit-word
                    offset in each (``brevitas_models.packing.pack_weights_ports``)
``lmem``   float32  per-channel weight scales and zero-offset row sums of every linear, in the
                    parameter blocks the engine's parameter reader streams (``packing.pack_linear_params``,
                    blocks of the engine's out lanes)
``fmem``   float32  norm weights, RoPE tables, attention constants
``embed``  float32  the embedding table ``[vocab, hidden]``

Every tensor starts on a 64-byte boundary (one 512-bit HBM word). Identical tensors (e.g. the RoPE
tables shared by Q and K of every layer) are stored once. The manifest (JSON) lists every tensor with
its image, offset (in elements of the image type), shape, dtype and sha256 and is verified on load.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

import numpy as np

from brevitas_models.golden import LinearParams, attention_constants
from brevitas_models.packing import pack_linear_params, pack_weights_ports
from ..project.spec import DEFAULT_WEIGHT_PORTS

ALIGN_BYTES = 64
FLOAT_IMAGES = ("lmem", "fmem", "embed")


def image_dtype(name: str):
    if name in FLOAT_IMAGES:
        return np.float32
    if name.startswith("wmem_p") and name[6:].isdigit():
        return np.uint8
    raise KeyError(f"unknown memory image {name!r}")
MANIFEST_NAME = "manifest.json"


class ManifestError(ValueError):
    pass


@dataclass
class MemoryPlan:
    ports: int = 1
    chunks: Dict[str, List[np.ndarray]] = field(default_factory=dict)
    sizes: Dict[str, int] = field(default_factory=dict)
    tensors: Dict[str, dict] = field(default_factory=dict)
    _dedup: Dict[tuple, int] = field(default_factory=dict)

    out_lanes: int = 1

    def place(self, image: str, name: str, array: np.ndarray, dedup: bool = True) -> int:
        """Append ``array`` (flattened, cast to the image type) to ``image``; return its element offset."""
        dt = image_dtype(image)
        self.chunks.setdefault(image, [])
        self.sizes.setdefault(image, 0)
        arr = np.ascontiguousarray(array)
        flat = arr.astype(dt, copy=False).reshape(-1)
        if flat.dtype == np.float32 and arr.dtype != np.float32:
            raise TypeError(f"{name}: expected float32 data for image {image}, got {arr.dtype}")
        digest = hashlib.sha256(np.ascontiguousarray(flat).data).hexdigest()
        key = (image, digest, flat.size)
        if dedup and key in self._dedup:
            offset = self._dedup[key]
        else:
            itemsize = np.dtype(dt).itemsize
            align = ALIGN_BYTES // itemsize
            pad = (-self.sizes[image]) % align
            if pad:
                self.chunks[image].append(np.zeros(pad, dtype=dt))
            offset = self.sizes[image] + pad
            self.chunks[image].append(flat)
            self.sizes[image] = offset + flat.size
            if dedup:
                self._dedup[key] = offset
        self.tensors[name] = {"image": image, "offset": int(offset), "shape": list(arr.shape),
                              "dtype": str(np.dtype(dt)), "elements": int(flat.size), "sha256": digest}
        return int(offset)

    def place_ports(self, name: str, slices: np.ndarray, dedup: bool = True) -> int:
        """Place one slice per weight port (``slices`` [ports, bytes], bytes a multiple of 64) at the same
        offset of every ``wmem_p{i}`` image; return that offset in 512-bit words."""
        if slices.shape[0] != self.ports or slices.shape[1] % ALIGN_BYTES:
            raise ValueError(f"{name}: {slices.shape} is not {self.ports} port slices of whole 64-byte words")
        offsets = {self.place(f"wmem_p{i}", f"{name}@p{i}", slices[i], dedup) for i in range(self.ports)}
        if len(offsets) != 1:
            raise AssertionError(f"{name}: port slices at different offsets {sorted(offsets)}")
        return offsets.pop() // ALIGN_BYTES

    def image_names(self) -> List[str]:
        return [f"wmem_p{i}" for i in range(self.ports)] + list(FLOAT_IMAGES)

    def image(self, name: str) -> np.ndarray:
        dt = image_dtype(name)
        parts = self.chunks.get(name, [])
        tail = (-self.sizes.get(name, 0)) % (ALIGN_BYTES // np.dtype(dt).itemsize)
        data = parts + ([np.zeros(tail, dtype=dt)] if tail or not parts else [])
        if not parts:        # an empty image still gets one 64-byte word (a buffer of size 0 is invalid)
            data = [np.zeros(ALIGN_BYTES // np.dtype(dt).itemsize, dtype=dt)]
        return np.concatenate(data)

    def image_equals(self, other: "MemoryPlan", name: str) -> bool:
        """``np.array_equal(self.image(name), other.image(name))`` without building either image: chunk by
        chunk, chunks that are views of the same memory (weights packed once for both stages) equal by
        identity."""
        a, b = self.chunks.get(name, []), other.chunks.get(name, [])
        if self.sizes.get(name, 0) != other.sizes.get(name, 0):
            return False
        if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
            return bool(np.array_equal(self.image(name), other.image(name)))
        for x, y in zip(a, b):
            same_memory = (x.dtype == y.dtype and x.strides == y.strides
                           and x.__array_interface__["data"][0] == y.__array_interface__["data"][0])
            if not same_memory and not np.array_equal(x, y):
                return False
        return True

    def write(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        files = {}
        for name in self.image_names():
            data = self.image(name)
            path = directory / f"{name}.bin"
            data.tofile(path)
            files[name] = {"file": path.name, "elements": int(data.size), "dtype": str(data.dtype),
                           "sha256": hashlib.sha256(np.ascontiguousarray(data).data).hexdigest()}
        manifest = {"alignment_bytes": ALIGN_BYTES, "weight_ports": self.ports, "images": files,
                    "tensors": self.tensors}
        (directory / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1, sort_keys=True))


def load_images(directory) -> Dict[str, np.ndarray]:
    """Read the images of a written project and verify them (and every tensor) against the manifest."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    manifest = json.loads(path.read_text())
    images = {}
    for name, info in manifest["images"].items():
        file = directory / info["file"]
        if not file.is_file():
            raise ManifestError(f"{file}: image {name!r} listed in {path} is missing")
        data = np.fromfile(file, dtype=np.dtype(info["dtype"]))
        if data.size != info["elements"] or hashlib.sha256(np.ascontiguousarray(data).data).hexdigest() != info["sha256"]:
            raise ManifestError(f"{file}: size or sha256 differs from {path}")
        images[name] = data
    for tname, t in manifest["tensors"].items():
        img = images[t["image"]]
        chunk = img[t["offset"]: t["offset"] + t["elements"]]
        if chunk.size != t["elements"] or hashlib.sha256(np.ascontiguousarray(chunk).data).hexdigest() != t["sha256"]:
            raise ManifestError(f"{path}: tensor {tname!r} does not match its image {t['image']!r}")
    return images


def _layer_sets(layer, n_layers):
    """The per-layer parameter dicts of a block layer (``per_layer``), or its own attributes once."""
    per_layer = layer.get_attr("per_layer")
    if per_layer is not None:
        if len(per_layer) != n_layers:
            raise ValueError(f"layer '{layer.name}': {len(per_layer)} parameter sets for {n_layers} layers")
        return per_layer
    return None


def _linear_images(cfg, name, w_int, w_scale, bits, kind, ports):
    """(LinearParams, port images) of one weight matrix; memoised in ``cfg["PackCache"]`` (when the
    caller provides one) by the identity of the source arrays, so two stages converted from the same
    per-layer parameters finalise and pack each matrix once. The cache keeps the sources alive, so the
    identities stay valid."""
    cache = cfg.get("PackCache")
    key = (id(w_int), id(w_scale), bits, kind, ports)
    if cache is not None and key in cache and cache[key][0] is w_int and cache[key][1] is w_scale:
        return cache[key][2], cache[key][3]
    lp = LinearParams(name, w_int, w_scale, bits).finalize(kind)
    packed = pack_weights_ports(lp.w_int, lp.w_bits, ports)
    if cache is not None:
        cache[key] = (w_int, w_scale, lp, packed)
    return lp, packed


def plan_model_memory(model) -> MemoryPlan:
    """Place every parameter of every FlexLLM layer; store offsets as layer attributes.

    A block layer (temporal reuse) gets every tensor once per decoder layer, at a fixed stride, and its
    offset attribute is the C++ expression ``base + l * stride`` (``l`` = the kernel's layer loop index).
    """
    cfg = model.config.config.setdefault("FlexLLM", {})
    n_layers = int(cfg.get("NumLayers") or 1)
    from .passes.templates import linear_lanes_of_config
    plan = MemoryPlan(ports=int(cfg.get("WeightPorts") or DEFAULT_WEIGHT_PORTS))
    plan.out_lanes = linear_lanes_of_config(model)[1]
    max_rows = 0

    def put(layer, key, image, name, arrays):
        """Place ``arrays`` (one per layer, or a single array) and record on the layer ``<key>`` (the C++
        expression ``base + l * stride``) and ``<key>_pair`` ``(base, stride)`` (in 512-bit words for the
        ``wmem`` and ``lmem`` images, in elements otherwise)."""
        if image == "wmem":
            place = plan.place_ports
        elif image == "lmem":
            def place(n, a, dedup=True):
                return plan.place("lmem", n, a, dedup) // 16
        else:
            def place(n, a, dedup=True):
                return plan.place(image, n, a, dedup)
        if not isinstance(arrays, list):
            base, stride = place(f"{layer.name}.{name}", arrays), 0
        else:
            offsets = [place(f"{layer.name}.{name}[{l}]", a, dedup=False) for l, a in enumerate(arrays)]
            base = offsets[0]
            stride = offsets[1] - offsets[0] if len(offsets) > 1 else 0
            if any(o != offsets[0] + i * stride for i, o in enumerate(offsets)):
                raise AssertionError(f"{layer.name}.{name}: per-layer copies not equally spaced")
        layer.set_attr(key, f"{base} + l * {stride}" if stride else str(base))
        layer.set_attr(f"{key}_pair", (int(base), int(stride)))

    for layer in model.get_layers():
        cls = layer.class_name
        sets = _layer_sets(layer, n_layers)

        def values(key, _sets=sets, _layer=layer):
            return [p[key] for p in _sets] if _sets is not None else _layer.get_attr(key)

        if cls == "FlexEmbedding":
            put(layer, "table_off", "embed", "table", layer.get_attr("table"))
        elif cls == "FlexRMSNorm":
            w = values("weight")
            put(layer, "w_off", "fmem", "weight", [np.asarray(x, dtype=np.float32) for x in w]
                if isinstance(w, list) else np.asarray(w, dtype=np.float32))
        elif cls == "FlexQuantLinear":
            kind, bits = layer.get_attr("input_kind"), layer.get_attr("weight_bits")
            w_ints, w_scales = values("w_int"), values("w_scale")
            single = not isinstance(w_ints, list)
            images = [_linear_images(cfg, layer.name, w, s, bits, kind, plan.ports)
                      for w, s in zip([w_ints] if single else w_ints, [w_scales] if single else w_scales)]
            lps, packed = [lp for lp, _ in images], [p for _, p in images]
            layer.set_attr("acc_bits", int(max(lp.acc_bits for lp in lps)))
            pick = (lambda xs: xs[0]) if single else (lambda xs: xs)
            put(layer, "w_off", "wmem", "w_packed", pick(packed))
            put(layer, "p_off", "lmem", "params", pick([pack_linear_params(lp.w_scale, lp.wsum, plan.out_lanes)
                                                        for lp in lps]))
        elif cls == "FlexAttention":
            cos, sin = layer.get_attr("rope_cos"), layer.get_attr("rope_sin")
            if cos is None:
                raise ValueError(f"attention '{layer.name}' has no RoPE tables (fold_head_views did not run?)")
            if cfg.get("RopeTables") is not None:
                # the model's own tables (e.g. all positions of the context, where a prefill graph only
                # carries its L rows): they must agree bit for bit with the graph's rows
                cos_o, sin_o = (np.asarray(t, dtype=np.float32) for t in cfg["RopeTables"])
                rows = min(cos.shape[0], cos_o.shape[0])
                if not (np.array_equal(cos[:rows], cos_o[:rows]) and np.array_equal(sin[:rows], sin_o[:rows])):
                    raise ValueError(f"attention '{layer.name}': the supplied RoPE tables differ from the graph's")
                cos, sin = cos_o, sin_o
            put(layer, "cos_off", "fmem", "rope_cos", cos)
            put(layer, "sin_off", "fmem", "rope_sin", sin)
            max_rows = max(max_rows, int(cos.shape[0]))
            group = layer.get_attr("heads") // layer.get_attr("kv_heads")
            scales = {k: values(k) for k in ("s_q", "s_k", "s_v", "s_p")}
            n = len(scales["s_q"]) if isinstance(scales["s_q"], list) else None
            consts = [attention_constants(*(scales[k][l] if n else scales[k] for k in ("s_q", "s_k", "s_v", "s_p")),
                                          layer.get_attr("softmax_scale"), group) for l in range(n or 1)]
            for key in consts[0]:
                put(layer, f"{key}_off", "fmem", key, [c[key] for c in consts] if n else consts[0][key])
    max_ctx = cfg.get("MaxContext") or max_rows
    if not max_ctx:
        raise ValueError("FlexLLM: cannot size the KV cache (no RoPE table and no MaxContext in the config)")
    if max_rows and max_ctx > max_rows:
        raise ValueError(f"FlexLLM: MaxContext {max_ctx} exceeds the RoPE table of {max_rows} positions")
    cfg["MaxContext"] = int(max_ctx)
    cfg["MemoryPlan"] = plan
    return plan
