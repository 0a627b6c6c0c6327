"""External-memory images of a FlexLLM kernel and their manifest.

Three images, each a flat array the kernel reads through one pointer (an m_axi port on the FPGA):

``wmem``   uint8    packed integer weights (int4: two codes per byte, see ``brevitas_models.packing``)
``fmem``   float32  per-channel weight scales, zero-offset row sums, norm weights, RoPE tables,
                    attention constants
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
from brevitas_models.packing import pack_weights

ALIGN_BYTES = 64
IMAGES = {"wmem": np.uint8, "fmem": np.float32, "embed": np.float32}
MANIFEST_NAME = "manifest.json"


class ManifestError(ValueError):
    pass


@dataclass
class MemoryPlan:
    chunks: Dict[str, List[np.ndarray]] = field(default_factory=lambda: {k: [] for k in IMAGES})
    sizes: Dict[str, int] = field(default_factory=lambda: {k: 0 for k in IMAGES})
    tensors: Dict[str, dict] = field(default_factory=dict)
    _dedup: Dict[tuple, int] = field(default_factory=dict)

    def place(self, image: str, name: str, array: np.ndarray) -> int:
        """Append ``array`` (flattened, cast to the image type) to ``image``; return its element offset."""
        dt = IMAGES[image]
        arr = np.ascontiguousarray(array)
        flat = arr.astype(dt, copy=False).reshape(-1)
        if flat.dtype == np.float32 and arr.dtype != np.float32:
            raise TypeError(f"{name}: expected float32 data for image {image}, got {arr.dtype}")
        digest = hashlib.sha256(flat.tobytes()).hexdigest()
        key = (image, digest, flat.size)
        if key in self._dedup:
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
            self._dedup[key] = offset
        self.tensors[name] = {"image": image, "offset": int(offset), "shape": list(arr.shape),
                              "dtype": str(np.dtype(dt)), "elements": int(flat.size), "sha256": digest}
        return int(offset)

    def image(self, name: str) -> np.ndarray:
        parts = self.chunks[name]
        tail = (-self.sizes[name]) % (ALIGN_BYTES // np.dtype(IMAGES[name]).itemsize)
        data = parts + ([np.zeros(tail, dtype=IMAGES[name])] if tail or not parts else [])
        return np.concatenate(data) if data else np.zeros(0, dtype=IMAGES[name])

    def write(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        files = {}
        for name in IMAGES:
            data = self.image(name)
            path = directory / f"{name}.bin"
            data.tofile(path)
            files[name] = {"file": path.name, "elements": int(data.size), "dtype": str(data.dtype),
                           "sha256": hashlib.sha256(data.tobytes()).hexdigest()}
        manifest = {"alignment_bytes": ALIGN_BYTES, "images": files, "tensors": self.tensors}
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
        if data.size != info["elements"] or hashlib.sha256(data.tobytes()).hexdigest() != info["sha256"]:
            raise ManifestError(f"{file}: size or sha256 differs from {path}")
        images[name] = data
    for tname, t in manifest["tensors"].items():
        img = images[t["image"]]
        chunk = img[t["offset"]: t["offset"] + t["elements"]]
        if chunk.size != t["elements"] or hashlib.sha256(chunk.tobytes()).hexdigest() != t["sha256"]:
            raise ManifestError(f"{path}: tensor {tname!r} does not match its image {t['image']!r}")
    return images


def _linear(layer):
    lp = LinearParams(layer.name, layer.get_attr("w_int"), layer.get_attr("w_scale"), layer.get_attr("weight_bits"))
    return lp.finalize(layer.get_attr("input_kind"))


def plan_model_memory(model) -> MemoryPlan:
    """Place every parameter of every FlexLLM layer; store offsets as layer attributes."""
    plan = MemoryPlan()
    max_rows = 0
    for layer in model.get_layers():
        cls, name = layer.class_name, layer.name
        if cls == "FlexEmbedding":
            layer.set_attr("table_off", plan.place("embed", f"{name}.table", layer.get_attr("table")))
        elif cls == "FlexRMSNorm":
            layer.set_attr("w_off", plan.place("fmem", f"{name}.weight", layer.get_attr("weight")))
        elif cls == "FlexQuantLinear":
            lp = _linear(layer)
            packed = pack_weights(lp.w_int, lp.w_bits)
            layer.set_attr("row_bytes", int(packed.shape[1]))
            layer.set_attr("acc_bits", int(lp.acc_bits))
            layer.set_attr("w_off", plan.place("wmem", f"{name}.w_packed", packed))
            layer.set_attr("s_off", plan.place("fmem", f"{name}.w_scale", lp.w_scale))
            layer.set_attr("z_off", plan.place("fmem", f"{name}.w_zsum", lp.wsum))
        elif cls == "FlexAttention":
            cos, sin = layer.get_attr("rope_cos"), layer.get_attr("rope_sin")
            if cos is None:
                raise ValueError(f"attention '{name}' has no RoPE tables (fold_head_views did not run?)")
            layer.set_attr("cos_off", plan.place("fmem", f"{name}.rope_cos", cos))
            layer.set_attr("sin_off", plan.place("fmem", f"{name}.rope_sin", sin))
            max_rows = max(max_rows, int(cos.shape[0]))
            group = layer.get_attr("heads") // layer.get_attr("kv_heads")
            consts = attention_constants(layer.get_attr("s_q"), layer.get_attr("s_k"), layer.get_attr("s_v"),
                                         layer.get_attr("s_p"), layer.get_attr("softmax_scale"), group)
            for key, arr in consts.items():
                layer.set_attr(f"{key}_off", plan.place("fmem", f"{name}.{key}", arr))
    cfg = model.config.config.setdefault("FlexLLM", {})
    max_ctx = cfg.get("MaxContext") or max_rows
    if not max_ctx:
        raise ValueError("FlexLLM: cannot size the KV cache (no RoPE table and no MaxContext in the config)")
    if max_rows and max_ctx > max_rows:
        raise ValueError(f"FlexLLM: MaxContext {max_ctx} exceeds the RoPE table of {max_rows} positions")
    cfg["MaxContext"] = int(max_ctx)
    cfg["MemoryPlan"] = plan
    return plan
