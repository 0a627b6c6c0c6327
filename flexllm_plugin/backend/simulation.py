"""C simulation of a FlexLLM stage kernel from Python (the backend's ``predict``).

The compiled library exports ``<project>_csim`` (written by the FlexLLM writer), which calls the kernel
top function exactly as the host does on the FPGA: token ids, run-time token count and start position,
the parameter images (one per weight port, ``fmem``, ``embed``) and the int8 KV cache (``[layers][kv_heads][max_context][head_dim]``, K and V
separately), returning the last token's logits.

``predict(model, x)`` takes the stage graph's inputs (a dict by ONNX input name, a list in graph order,
or just the token ids) and returns a dict by ONNX output name: ``logits`` and the new K/V entries
dequantized like the graph (``code * scale``), plus the raw int8 codes under ``<name>.codes`` when
``return_codes=True``. Past K/V inputs (decode graphs) are re-quantized to codes (exact on the int8
grid) and written to the cache before the call.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from .graph import layers_of
from .memory import load_images


def _graph_io(model):
    onnx_model = model.config.config.get("OnnxModel")
    if onnx_model is None or isinstance(onnx_model, (str, Path)):
        import onnx
        onnx_model = onnx.load(str(onnx_model))
    inits = {i.name for i in onnx_model.graph.initializer}
    inputs = [i.name for i in onnx_model.graph.input if i.name not in inits]
    outputs = [o.name for o in onnx_model.graph.output]
    return inputs, outputs


def _ptr(arr, ctype):
    return arr.ctypes.data_as(ctypes.POINTER(ctype))


def _images(model):
    cache = getattr(model, "_flexllm_images", None)
    if cache is None:
        cache = load_images(Path(model.config.get_output_dir()) / "weights")
        model._flexllm_images = cache
    return cache


def predict(model, x, position=None, return_codes=False):
    if model._top_function_lib is None:
        raise RuntimeError("FlexLLM: call compile() before predict()")
    in_names, out_names = _graph_io(model)
    if isinstance(x, dict):
        feeds = dict(x)
    elif isinstance(x, (list, tuple)):
        if len(x) != len(in_names):
            raise ValueError(f"FlexLLM predict: {len(x)} inputs given, the graph has {in_names}")
        feeds = dict(zip(in_names, x))
    else:
        feeds = {in_names[0]: x}
    missing = [n for n in in_names if n not in feeds]
    if missing:
        raise ValueError(f"FlexLLM predict: missing graph inputs {missing}")

    cfg = model.config.config["FlexLLM"]
    max_ctx = int(cfg["MaxContext"])
    emb = layers_of(model, "FlexEmbedding")[0]
    max_tokens = int(emb.get_attr("n_tokens"))
    ids = np.ascontiguousarray(np.asarray(feeds[in_names[0]]).reshape(-1), dtype=np.int32)
    n = ids.size
    if not 1 <= n <= max_tokens:
        raise ValueError(f"FlexLLM predict: {n} tokens, the kernel takes 1..{max_tokens}")
    if np.any(ids < 0) or np.any(ids >= emb.get_attr("vocab_size")):
        raise ValueError("FlexLLM predict: token id outside the vocabulary")
    ids = np.concatenate([ids, np.zeros(max_tokens - n, dtype=np.int32)])

    attn = layers_of(model, "FlexAttention")[0]
    kvh, hd = attn.get_attr("kv_heads"), attn.get_attr("head_dim")
    n_layers = int(cfg.get("NumLayers") or 1)
    kv_names = attn.get_attr("kv_names")
    per_layer = attn.get_attr("per_layer") or [{k: attn.get_attr(k) for k in ("s_k", "s_v")}]
    row_bytes = 64 * -(-hd // 64)                   # flexllm_kv_cache.h: rows padded to 512-bit words
    k_cache = np.zeros((n_layers, kvh, max_ctx, row_bytes), dtype=np.int8)
    v_cache = np.zeros_like(k_cache)
    past = 0
    for l, names in enumerate(kv_names):
        for cache, inp, scale in ((k_cache, names["inputs"][0] if names["inputs"] else None, per_layer[l]["s_k"]),
                                  (v_cache, names["inputs"][1] if names["inputs"] else None, per_layer[l]["s_v"])):
            if inp is None:
                continue
            vals = np.asarray(feeds[inp], dtype=np.float32).reshape(kvh, -1, hd)
            scale = np.asarray(scale, dtype=np.float32).reshape(kvh, 1, 1)
            codes = np.rint(vals / scale)
            if not np.array_equal(codes.astype(np.float32) * scale, vals):
                raise ValueError(f"FlexLLM predict: input '{inp}' is not on the int8 grid of its K/V scale")
            past = vals.shape[1]
            cache[l, :, :past, :hd] = np.clip(codes, -128, 127).astype(np.int8)
    if position is None:
        position = int(np.asarray(feeds["position"]).reshape(-1)[0]) if "position" in feeds else past
    if position + n > max_ctx:
        raise ValueError(f"FlexLLM predict: positions {position}..{position + n - 1} exceed the KV cache "
                         f"capacity of {max_ctx} tokens")

    images = _images(model)
    vocab = int(layers_of(model, "FlexQuantLinear")[-1].get_attr("n_out"))
    logits = np.zeros(vocab, dtype=np.float32)
    fn = getattr(model._top_function_lib, f"{model.config.get_project_name()}_csim")
    fn.restype = ctypes.c_int
    ports = [images[name] for name in sorted((k for k in images if k.startswith("wmem_p")), key=lambda k: int(k[6:]))]
    port_ptrs = (ctypes.POINTER(ctypes.c_uint8) * len(ports))(*[_ptr(p, ctypes.c_uint8) for p in ports])
    port_words = (ctypes.c_longlong * len(ports))(*[p.size // 64 for p in ports])
    lmem = images["lmem"]
    rc = fn(_ptr(ids, ctypes.c_int32), ctypes.c_int(n), ctypes.c_int(position),
            port_ptrs, port_words, _ptr(lmem, ctypes.c_uint8), ctypes.c_longlong(lmem.size // 16),
            _ptr(images["fmem"], ctypes.c_float), _ptr(images["embed"], ctypes.c_float),
            _ptr(k_cache, ctypes.c_int8), _ptr(v_cache, ctypes.c_int8), ctypes.c_longlong(k_cache.size // 64),
            _ptr(logits, ctypes.c_float))
    if rc != 0:
        raise RuntimeError(f"FlexLLM kernel C simulation returned error code {rc}")

    result = {layers_of(model, "FlexQuantLinear")[-1].outputs[0]: logits.reshape(1, -1)}
    for l, names in enumerate(kv_names):
        for cache, out, scale in ((k_cache, names["outputs"][0], per_layer[l]["s_k"]),
                                  (v_cache, names["outputs"][1], per_layer[l]["s_v"])):
            codes = cache[l, :, position:position + n, :hd].copy()
            scale = np.asarray(scale, dtype=np.float32).reshape(kvh, 1, 1)
            result[out] = (codes.astype(np.float32) * scale)[None]
            if return_codes:
                result[out + ".codes"] = codes
    return result


def loop_counts(model) -> dict:
    """The C simulation's loop-iteration counters accumulated since the last call (``{name: count}``;
    layers/flexllm_counters.h), then reset. The cost model (flexllm_plugin/cost) is held to them."""
    import tempfile

    fn = getattr(model._top_function_lib, f"{model.config.get_project_name()}_dump_counters")
    fn.restype = ctypes.c_int
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "counters.txt"
        rc = fn(ctypes.c_char_p(str(path).encode()))
        if rc != 0:
            raise RuntimeError(f"counter dump failed ({rc}): built without FLEXLLM_COUNTERS?")
        return parse_counts(path.read_text())


def parse_counts(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        if line.strip():
            name, count = line.rsplit(None, 1)
            out[name] = int(count)
    return out
