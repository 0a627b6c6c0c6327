"""What makes a project self-contained: everything ``verify`` and ``generate`` need, stored in it.

``flexllm build`` adds to the project (besides kernels, weights and build files):

* ``reference/calibrated.pt`` + ``reference/model.json``: the calibrated Brevitas model's state and its
  architecture and recipe -- the golden model is rebuilt from it exactly, with no model source and no
  calibration;
* ``tokenizer/hf/`` (a transformers tokenizer, ``save_pretrained``) or ``tokenizer/byte.json`` (the
  byte-level tokenizer of random-weight models);
* ``qonnx/<stage>/model.onnx`` (the exported QONNX block), ``fused.onnx`` (after ``fuse_llama``) and
  ``reference.npz`` -- the graphs that were converted, for inspection, as FINN keeps its intermediate models;
* ``csim/ap_types/``: the arbitrary-precision headers (from hls4ml's package), so ``make csim`` works on a
  machine without Vitis.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict

REFERENCE_DIR = "reference"
STATE_FILE = "reference/calibrated.pt"
MODEL_FILE = "reference/model.json"
HF_TOKENIZER_DIR = "tokenizer/hf"
BYTE_TOKENIZER_FILE = "tokenizer/byte.json"
QONNX_DIR = "qonnx"
AP_TYPES_DIR = "csim/ap_types"


class ReferenceError(ValueError):
    pass


def save_reference(root: Path, weights, model) -> bool:
    """Write the reference model; True when its state file is a copy of ``model.state_file`` (the
    calibrated-model cache entry it came from), i.e. that file holds exactly the model's state."""
    import torch

    (root / REFERENCE_DIR).mkdir(exist_ok=True)
    state = model.state_dict()
    source = getattr(model, "state_file", None)       # the calibrated-model cache entry it came from
    copied = source is not None and saved_state_equals(Path(source), state)
    if copied:
        shutil.copyfile(source, root / STATE_FILE)      # the bytes torch.save(state) writes, without the pass
    else:
        torch.save(state, root / STATE_FILE)
    meta = {"arch": model.arch.to_dict(), "spec": model.spec.to_dict(),
            "max_positions": int(model.rope_cos.shape[0]), "source": weights.source}
    (root / MODEL_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
    return copied


def saved_state_equals(path: Path, state) -> bool:
    """Whether the torch.save file ``path`` is what ``torch.save(state, <dir>/calibrated.pt)`` writes: its
    archive is named after STATE_FILE and it holds the same tensors (names, order, dtypes, shapes, bytes).

    The tensors' bytes are read from the file in blocks and compared with the state's, so the check maps
    nothing and holds at most one block (the state of a model restored from ``path`` with mmap is itself the
    file's pages: comparing it with a second mapping would count the file twice in the resident set)."""
    import zipfile

    if not path.is_file():
        return False
    archive = Path(STATE_FILE).stem
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        if not names or names[0].split("/")[0] != archive:
            return False
        saved = _saved_layout(z.read(f"{archive}/data.pkl"))
        if saved is None:                     # a pickle this reader does not know: compare the loaded tensors
            return _loaded_state_equals(path, state)
        if list(saved) != list(state):
            return False
        members = {}
        for name, (key, dtype, offset, shape, stride) in saved.items():
            t = state[name]
            if t.dtype != dtype or tuple(t.shape) != shape or stride != _contiguous_stride(shape):
                return False
            info = z.getinfo(f"{archive}/data/{key}")
            if info.compress_type != zipfile.ZIP_STORED:
                return _loaded_state_equals(path, state)
            members[name] = (info, offset * t.element_size())
    with open(path, "rb") as f:
        for name, (info, start) in members.items():
            if not _record_bytes_equal(f, info, start, state[name]):
                return False
    return True


STATE_COMPARE_BLOCK = 1 << 24       # bytes read and compared at a time by saved_state_equals


def _saved_layout(pickle_bytes: bytes):
    """{name: (storage key, dtype, element offset, shape, stride)} of a torch.save'd dict of tensors, read
    from its data.pkl without loading anything (only the globals a state dict uses); None for anything else."""
    import collections
    import io
    import pickle
    import warnings

    import torch

    def rebuild(storage, offset, size, stride, requires_grad, hooks, metadata=None):
        return (storage[1], storage[0], int(offset), tuple(size), tuple(stride))

    class LayoutUnpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) == ("collections", "OrderedDict"):
                return collections.OrderedDict
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return rebuild
            if module == "torch" and name.endswith("Storage") and name != "UntypedStorage":
                with warnings.catch_warnings():      # the legacy typed storage classes name the dtype
                    warnings.simplefilter("ignore", UserWarning)
                    dtype = getattr(getattr(torch, name, None), "dtype", None)
                if isinstance(dtype, torch.dtype):
                    return dtype
            raise pickle.UnpicklingError(f"{module}.{name}")

        def persistent_load(self, pid):
            if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                    and isinstance(pid[1], torch.dtype)):
                raise pickle.UnpicklingError(f"persistent id {pid!r}")
            return (pid[1], str(pid[2]))

    try:
        layout = LayoutUnpickler(io.BytesIO(pickle_bytes)).load()
    except (pickle.UnpicklingError, TypeError, ValueError, AttributeError, EOFError):
        return None
    if not isinstance(layout, dict) or not all(isinstance(v, tuple) and len(v) == 5 for v in layout.values()):
        return None
    return layout


def _contiguous_stride(shape) -> tuple:
    stride, acc = [], 1
    for n in reversed(shape):
        stride.append(acc)
        acc *= n
    return tuple(reversed(stride))


def _record_bytes_equal(f, info, start: int, tensor) -> bool:
    """Whether the stored zip member ``info`` holds ``tensor``'s bytes from byte ``start`` on."""
    import struct

    import numpy as np
    import torch

    t = tensor.detach().contiguous()
    want = t.view(torch.uint8).numpy().reshape(-1) if t.numel() else np.zeros(0, np.uint8)
    if start + want.size > info.file_size:
        return False
    f.seek(info.header_offset)
    header = f.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        return False
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    f.seek(info.header_offset + 30 + name_len + extra_len + start)
    block = bytearray(min(STATE_COMPARE_BLOCK, max(1, want.size)))
    view = memoryview(block)
    for i in range(0, want.size, len(block)):
        n = min(len(block), want.size - i)
        if f.readinto(view[:n]) != n or not np.array_equal(np.frombuffer(block, np.uint8, n), want[i:i + n]):
            return False
    return True


def _loaded_state_equals(path: Path, state) -> bool:
    import torch

    saved = torch.load(path, weights_only=True, mmap=True)
    if not isinstance(saved, dict) or list(saved) != list(state):
        return False
    return all(isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
               and a.shape == b.shape and torch.equal(a, b) for a, b in zip(saved.values(), state.values()))


def save_tokenizer(root: Path, tok) -> None:
    from brevitas_models.text import ByteTokenizer

    (root / "tokenizer").mkdir(exist_ok=True)
    if isinstance(tok, ByteTokenizer):
        (root / BYTE_TOKENIZER_FILE).write_text(json.dumps({"vocab_size": tok.vocab_size}))
    elif hasattr(tok, "save_pretrained"):
        tok.save_pretrained(str(root / HF_TOKENIZER_DIR))
    else:
        raise ReferenceError(f"cannot store a tokenizer of type {type(tok).__name__} in the project")


def save_graphs(root: Path, workdir: Path) -> None:
    """The exported and fused QONNX graph of each stage (and the export's reference.npz)."""
    for stage_dir in sorted(p for p in Path(workdir).iterdir() if p.is_dir() and (p / "model.onnx").is_file()):
        dst = root / QONNX_DIR / stage_dir.name
        dst.mkdir(parents=True)
        for f in sorted(stage_dir.iterdir()):
            if f.is_file():
                shutil.copyfile(f, dst / f.name)


def save_ap_types(root: Path) -> None:
    import hls4ml

    src = Path(hls4ml.__file__).parent / "templates" / "vivado" / "ap_types"
    shutil.copytree(src, root / AP_TYPES_DIR, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def load_tokenizer(outdir: Path):
    outdir = Path(outdir)
    if (outdir / BYTE_TOKENIZER_FILE).is_file():
        from brevitas_models.text import ByteTokenizer
        return ByteTokenizer(int(json.loads((outdir / BYTE_TOKENIZER_FILE).read_text())["vocab_size"]))
    if (outdir / HF_TOKENIZER_DIR).is_dir():
        from transformers import AutoTokenizer
        try:
            return AutoTokenizer.from_pretrained(str(outdir / HF_TOKENIZER_DIR), local_files_only=True)
        except Exception as e:
            raise ReferenceError(f"{outdir / HF_TOKENIZER_DIR}: cannot load the project's tokenizer "
                                 f"({type(e).__name__}: {e})") from None
    raise ReferenceError(f"{outdir}: the project has no tokenizer ({BYTE_TOKENIZER_FILE} or {HF_TOKENIZER_DIR}/); "
                         "rebuild it with this flexllm")


def load_reference(outdir: Path):
    """(calibrated Brevitas model, golden model) rebuilt from the project alone."""
    import torch

    from brevitas_models.arch import LlamaArch
    from brevitas_models.build import restore_model
    from brevitas_models.golden import GoldenModel
    from brevitas_models.quant_presets import QuantSpec

    outdir = Path(outdir)
    meta_path, state_path = outdir / MODEL_FILE, outdir / STATE_FILE
    for p in (meta_path, state_path):
        if not p.is_file():
            raise ReferenceError(f"{p} missing: the project's reference model is incomplete; rebuild it")
    meta: Dict = json.loads(meta_path.read_text())
    arch = LlamaArch.from_dict(meta["arch"], where=str(meta_path))
    spec = QuantSpec(**meta["spec"])
    try:
        state = torch.load(state_path, weights_only=True)
        model = restore_model(arch, spec, state, meta["max_positions"])
    except Exception as e:
        raise ReferenceError(f"{state_path}: cannot restore the reference model ({type(e).__name__}: {e})") from None
    return model, GoldenModel.from_brevitas(model)
