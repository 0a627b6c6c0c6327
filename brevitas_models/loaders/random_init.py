"""Deterministic random Llama weights (HF names, float32) for tests and benchmarks without checkpoints."""

from __future__ import annotations

import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterator, List, Optional, Tuple

import torch

from brevitas_models.arch import LlamaArch
from brevitas_models.loaders.gguf import expected_hf_shapes

__all__ = ["random_state_dict", "LazyRandomStateDict", "INIT_STD", "NORM_JITTER"]

INIT_STD = 0.02    # linear and embedding weights ~ N(0, INIT_STD^2)
NORM_JITTER = 0.1  # RMSNorm weights = 1 + NORM_JITTER * N(0, 1)
_CHUNK = 1 << 22   # elements per independently seeded chunk (fixed: part of the definition)


def _fill(job: Tuple[torch.Tensor, int, bool]) -> None:
    chunk, seed, is_norm = job
    gen = torch.Generator(device="cpu").manual_seed(seed)
    if is_norm:
        chunk.normal_(0.0, 1.0, generator=gen).mul_(NORM_JITTER).add_(1.0)
    else:
        chunk.normal_(0.0, INIT_STD, generator=gen)


def random_state_dict(arch: LlamaArch) -> Dict[str, torch.Tensor]:
    """HF-named float32 weights, a deterministic function of ``arch`` (including ``arch.seed``).

    A ``torch.Generator`` seeded with ``arch.seed`` draws one 62-bit seed per fixed-size chunk of
    every tensor (tensors in HF key order); each chunk is then filled in place from its own
    generator. The result therefore does not depend on the number of threads, chunks are generated
    in parallel, and peak memory is a single float32 copy of the weights.

    Linear and embedding weights ~ N(0, 0.02^2); RMSNorm weights = 1 + 0.1 * N(0, 1).
    """
    shapes = expected_hf_shapes(arch)
    master = torch.Generator(device="cpu").manual_seed(int(arch.seed))
    out: Dict[str, torch.Tensor] = {}
    jobs: List[Tuple[torch.Tensor, int, bool]] = []
    for name, shape in shapes.items():
        t = torch.empty(shape, dtype=torch.float32)
        out[name] = t
        flat = t.view(-1)
        n = flat.numel()
        starts = range(0, n, _CHUNK)
        seeds = torch.randint(0, 2 ** 62, (len(starts),), generator=master, dtype=torch.int64).tolist()
        is_norm = name.endswith("norm.weight")
        jobs.extend((flat[s:s + _CHUNK], seed, is_norm) for s, seed in zip(starts, seeds))
    # Largest chunks first keeps the threads balanced; the values do not depend on the order.
    jobs.sort(key=lambda j: -j[0].numel())
    workers = max(1, min(torch.get_num_threads(), len(jobs)))
    with torch.no_grad():
        if workers == 1:
            for job in jobs:
                _fill(job)
        else:
            with ThreadPoolExecutor(max_workers=workers) as ex:
                list(ex.map(_fill, jobs))
    return out


class LazyRandomStateDict(Mapping):
    """``random_state_dict(arch)`` as a read-only mapping generated on first access. ``fingerprint`` names
    the tensors without them (they are a function of ``arch`` and of this module's code): the calibrated-model
    cache keys on it, so a cache hit never generates (or hashes) the weights."""

    def __init__(self, arch: LlamaArch):
        self.arch = arch
        self._tensors: Optional[Dict[str, torch.Tensor]] = None

    @property
    def fingerprint(self) -> str:
        return "random_state_dict:" + json.dumps(self.arch.to_dict(), sort_keys=True, default=str)

    def _data(self) -> Dict[str, torch.Tensor]:
        if self._tensors is None:
            self._tensors = random_state_dict(self.arch)
        return self._tensors

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._data()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())
