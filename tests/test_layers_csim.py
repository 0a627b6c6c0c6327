"""C simulation of the HLS library ``layers/`` against the bit-true numpy contract.

Every module is compiled with g++ and the ap_types headers bundled with hls4ml, driven through raw
binary I/O (``tests/csim/drv_*.cpp``: inputs on stdin, outputs to a file) and compared with the numpy
reference (``brevitas_models.fp32`` / ``hadamard`` / ``sampling`` / ``packing`` / ``golden``):
integers exactly, fp32 bit for bit (``.view(np.uint32)``). The one documented exception is the sign
of a zero row minimum (the ``zero`` of uint4 quantization), which numpy leaves to the reduction
order (docs/numerics.md); it is compared numerically and checked against the C++ rule.

Drivers are compiled once per content hash (headers + driver + flags + compiler) into a cache
directory (``$FLEXLLM_CSIM_CACHE``, default ``<tmp>/flexllm-csim-<uid>``), one job at a time.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from brevitas_models import fp32
from brevitas_models.golden import GoldenModel, KVCache, LayerParams, LinearParams
from brevitas_models.hadamard import fast_hadamard_transform_np, hadamard_factor, small_hadamard
from brevitas_models.packing import (WORD_BYTES, pack_weights, pack_weights_ports, packed_row_bytes, row_words,
                                     rows_per_port, slice_words, unpack_weights, unpack_weights_ports)
from brevitas_models.sampling import sample_top_k, uniform_from_state, xorshift32

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ROOT / "layers"
CSIM = ROOT / "tests" / "csim"
HEADERS = sorted(p.name for p in LAYERS.glob("*.h"))
DRIVERS = ("ops", "linear", "attention", "model")
CXX = os.environ.get("CXX", "g++")
# The contract's flags (no FMA contraction, no fast-math) plus warnings; -O2 as in the kernels' C-sim.
CXXFLAGS = ["-std=c++17", "-O2", "-ffp-contract=off", "-fno-fast-math"]
WARNFLAGS = ["-Wall", "-Wextra", "-Wno-unknown-pragmas", "-Wno-unused-label", "-Wno-maybe-uninitialized"]
OWN_WARNING = re.compile(r"(layers|tests/csim)/[\w.]+:\d+:\d+: warning")
F32 = np.float32
UINT4, INT8 = 0, 1                       # flexllm::input_quant_kind
KIND_NAME = {UINT4: "uint4_asym", INT8: "int8"}

pytestmark = pytest.mark.skipif(shutil.which(CXX) is None, reason=f"{CXX} not available")


def _ap_types() -> Path:
    import hls4ml

    return Path(hls4ml.__file__).parent / "templates" / "vivado" / "ap_types"


# ------------------------------------------------------------------------------------------------
# build and run
# ------------------------------------------------------------------------------------------------

class CSim:
    """Compiles the drivers (lazily, once per content hash) and runs them."""

    def __init__(self, cache: Path, work: Path):
        self.cache = cache
        self.work = work
        self.ap_types = _ap_types()
        self.includes = ["-I", str(LAYERS), "-I", str(CSIM), "-isystem", str(self.ap_types)]
        version = subprocess.run([CXX, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
        h = hashlib.sha256("\0".join([version, str(self.ap_types)] + CXXFLAGS + WARNFLAGS).encode())
        for p in sorted(LAYERS.glob("*.h")) + sorted(CSIM.glob("*.h")):
            h.update(p.name.encode() + p.read_bytes())
        self.base_hash = h
        self.exes: dict = {}
        self.calls = 0

    def _key(self, *parts: bytes) -> str:
        h = self.base_hash.copy()
        for p in parts:
            h.update(p)
        return h.hexdigest()[:20]

    def _compile(self, args, out: Path):
        proc = subprocess.run([CXX] + CXXFLAGS + WARNFLAGS + self.includes + args, capture_output=True, text=True)
        assert proc.returncode == 0, f"compilation failed:\n{proc.stderr[-6000:]}"
        own = [l for l in proc.stderr.splitlines() if OWN_WARNING.search(l)]
        assert not own, "warnings in the library / drivers:\n" + "\n".join(own)

    def exe(self, name: str) -> Path:
        if name not in self.exes:
            src = CSIM / f"drv_{name}.cpp"
            path = self.cache / f"drv_{name}-{self._key(src.read_bytes())}"
            if not path.exists():
                tmp = path.with_suffix(f".tmp{os.getpid()}")
                self._compile([str(src), "-o", str(tmp)], tmp)
                os.replace(tmp, path)
            self.exes[name] = path
        return self.exes[name]

    def syntax_check(self, header: str):
        stamp = self.cache / f"syntax-{header}-{self._key(header.encode())}.ok"
        if stamp.exists():
            return
        src = self.work / f"only_{header}.cpp"
        src.write_text(f'#include "{header}"\n')
        self._compile(["-fsyntax-only", str(src)], src)
        stamp.touch()

    def run(self, name: str, op: str, *items) -> "Output":
        out = self.work / f"out_{name}.bin"
        proc = subprocess.run([str(self.exe(name)), op, str(out)], input=payload(*items), capture_output=True,
                              timeout=120)
        assert proc.returncode == 0, f"{name} {op} failed: {proc.stderr.decode()[-2000:]}"
        assert not proc.stdout and not proc.stderr, (proc.stdout + proc.stderr).decode()[-2000:]
        self.calls += 1
        return Output(out.read_bytes())


def payload(*items) -> bytes:
    """Python int -> int32, Python float -> float32, numpy scalars / arrays -> their own dtype."""
    parts = []
    for it in items:
        if isinstance(it, bool) or isinstance(it, int):
            parts.append(np.int32(it).tobytes())
        elif isinstance(it, float):
            parts.append(np.float32(it).tobytes())
        elif isinstance(it, (np.ndarray, np.generic)):
            parts.append(np.ascontiguousarray(it).tobytes())
        else:
            raise TypeError(type(it))
    return b"".join(parts)


class Output:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, dtype, shape):
        dt = np.dtype(dtype)
        shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(shape)
        n = int(np.prod(shape))
        a = np.frombuffer(self.data, dt, n, self.pos).reshape(shape).copy()
        self.pos += n * dt.itemsize
        return a

    def done(self):
        assert self.pos == len(self.data), f"{len(self.data) - self.pos} unread output bytes"


@pytest.fixture(scope="session")
def csim(tmp_path_factory):
    cache = Path(os.environ.get("FLEXLLM_CSIM_CACHE",
                                Path(tempfile.gettempdir()) / f"flexllm-csim-{os.getuid()}"))
    cache.mkdir(parents=True, exist_ok=True)
    return CSim(cache, tmp_path_factory.mktemp("csim"))


def assert_bits(actual, expected, what=""):
    """fp32 arrays bit-identical (so also +0 / -0, inf, and NaN payloads)."""
    a = np.asarray(actual, dtype=F32)
    e = np.asarray(expected)
    assert e.dtype == F32, f"{what}: reference is {e.dtype}, not float32"
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    bad = a.view(np.uint32) != e.view(np.uint32)
    if bad.any():
        i = np.argwhere(bad)[0]
        diff = np.abs(a.astype(np.float64) - e.astype(np.float64))
        pytest.fail(f"{what}: {int(bad.sum())} of {bad.size} fp32 values differ in bits; first at {tuple(i)}: "
                    f"{a[tuple(i)]!r} vs {e[tuple(i)]!r}; max |diff| {np.nanmax(diff):.3g}")


def assert_ints(actual, expected, what=""):
    a, e = np.asarray(actual), np.asarray(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    bad = a.astype(np.int64) != e.astype(np.int64)
    if bad.any():
        i = tuple(np.argwhere(bad)[0])
        pytest.fail(f"{what}: {int(bad.sum())} of {bad.size} integers differ; first at {i}: {a[i]} vs {e[i]}")


def rng_for(*key) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:8], "little"))


def activations(rng, shape, outliers=True) -> np.ndarray:
    """Normal activations with a few large outliers, some exact zeros and negative zeros."""
    x = rng.standard_normal(shape).astype(F32)
    if outliers and x.size > 8:
        flat = x.reshape(-1)
        idx = rng.choice(flat.size, size=max(1, flat.size // 64), replace=False)
        flat[idx] *= F32(40.0)
        flat[rng.choice(flat.size, size=2, replace=False)] = F32(0.0)
        flat[rng.choice(flat.size, size=2, replace=False)] = F32(-0.0)
    return x


# ------------------------------------------------------------------------------------------------
# headers
# ------------------------------------------------------------------------------------------------

def test_header_list():
    assert "flexllm_linear.h" in HEADERS and len(HEADERS) >= 16
    for h in HEADERS:
        text = (LAYERS / h).read_text()
        assert "#pragma once" in text, h
        assert "namespace flexllm" in text, h
        if h.endswith("_host.h"):
            continue          # host-side helpers (testbench and XRT host), never synthesised
        code = re.sub(r"//[^\n]*|/\*.*?\*/", "", text, flags=re.S)
        for bad in (r"std::vector", r"\bmalloc\b", r"\bnew\b", r"\bdelete\b"):
            assert not re.search(bad, code), f"{h}: no dynamic allocation in kernel code ({bad})"


@pytest.mark.parametrize("header", HEADERS)
def test_header_compiles_standalone(csim, header):
    csim.syntax_check(header)


# ------------------------------------------------------------------------------------------------
# reductions, scalar math
# ------------------------------------------------------------------------------------------------

def _expected_min_max(x):
    """Row min / max with the C++ zero rule: -0 is below +0 (numpy leaves it to the order)."""
    mn, mx = x.min(axis=-1), x.max(axis=-1)
    zero = x == 0
    neg0 = (zero & np.signbit(x)).any(axis=-1)
    pos0 = (zero & ~np.signbit(x)).any(axis=-1)
    mn = np.where(mn == 0, np.where(neg0, F32(-0.0), F32(0.0)), mn).astype(F32)
    mx = np.where(mx == 0, np.where(pos0, F32(0.0), F32(-0.0)), mx).astype(F32)
    return mn, mx


# LANES of the element-wise modules: 1, 4, 16 (and 2, 8 for the reductions); the sizes include
# values that LANES does not divide.
LANES = [1, 4, 16]
ALL_LANES = [1, 2, 4, 8, 16]
N_REDUCE_ROWS = 11


def _reduce_rows(rng, n):
    """Random rows with -0 / +0 / +-inf edge cases (row 7: +inf and -inf, the sum is NaN)."""
    x = activations(rng, (N_REDUCE_ROWS, n))
    if n:
        x[1] = F32(-0.0)                                  # all negative zeros: the sum is +0
        x[2] = rng.standard_normal(n).astype(F32) * F32(1e30)
        x[3] = np.where(rng.random(n) < 0.5, F32(0.0), F32(-0.0))
        x[4] = F32(2.5)                                   # constant row
        x[5, rng.integers(0, n)] = F32(np.inf)
        x[6, rng.integers(0, n)] = F32(-np.inf)
        i, j = (rng.choice(n, 2, replace=False) if n > 1 else (0, 0))
        x[7, i], x[7, j] = F32(np.inf), F32(-np.inf)
        x[8] = np.where(rng.random(n) < 0.3, F32(0.0), np.abs(x[8]))  # >= 0 with +0 minima
        x[9] = np.where(rng.random(n) < 0.3, F32(-0.0), -np.abs(x[9]))  # <= 0 with -0 maxima
    return x


def _run_reduce(csim, lanes, x):
    rows, n = x.shape
    out = csim.run("ops", "reduce", lanes, rows, n, x)
    res = out.take(F32, (rows, 8))
    out.done()
    return res


@pytest.mark.parametrize("lanes", ALL_LANES)
@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 17, 96, 127, 128, 129, 160, 576, 1000, 1536, 8192])
def test_reduce(csim, lanes, n):
    x = _reduce_rows(rng_for("reduce", n), n)
    res = _run_reduce(csim, lanes, x)
    with np.errstate(invalid="ignore"):
        ref = fp32.sum_partials(x)
    for col, what in ((0, "sum_partials"), (1, "sum_partials_accumulator.add"), (2, "add_lanes")):
        nan = np.isnan(ref)
        assert np.array_equal(np.isnan(res[:, col]), nan), what
        assert_bits(res[~nan, col], ref[~nan], what)
    if n:
        assert np.isnan(ref[7]) == (n > 1) and ref[5] == np.inf and ref[6] == -np.inf
        mn, mx = _expected_min_max(x)
        assert_bits(res[:, 3], mn, "row_min")
        assert_bits(res[:, 4], mx, "row_max")
        assert_bits(res[:, 5], mn, "row_min_max: min")
        assert_bits(res[:, 6], mx, "row_min_max: max")
        assert_bits(res[:, 7], np.abs(x).max(axis=-1), "row_absmax")
    else:
        assert_bits(res[:, 7], np.zeros(N_REDUCE_ROWS, F32), "row_absmax of nothing")


@pytest.mark.parametrize("n", [1, 7, 33, 200, 1537])
def test_reduce_lane_invariance(csim, n):
    """Per-lane min / max / absmax combined at the end and the 128-partial sum give bit-identical
    results (NaN included) for every LANES, on rows with -0 / +0 / +-inf edge cases."""
    rng = rng_for("reduce-lanes", n)
    x = _reduce_rows(rng, n)
    x[10] = np.where(rng.random(n) < 0.5, F32(0.0), F32(-0.0))
    x[10, rng.integers(0, n)] = F32(np.inf)
    base = _run_reduce(csim, 1, x)
    for lanes in ALL_LANES[1:]:
        got = _run_reduce(csim, lanes, x)
        bad = got.view(np.uint32) != base.view(np.uint32)
        assert not bad.any(), f"LANES={lanes} differs from LANES=1 at {np.argwhere(bad)[:5].tolist()}"
    assert (base[:, 1:3].view(np.uint32) == base[:, :1].view(np.uint32)).all(), "streaming forms"


def test_scalar_math(csim):
    rng = rng_for("scalar")
    ties = (np.arange(-40, 41, dtype=F32) + F32(0.5))
    special = np.array([0.0, -0.0, 0.49999997, -0.49999997, 0.5000001, 1.5, 2.5, -2.5, 8388607.5, 8388608.0,
                        -8388609.0, 16777217.0, 3.4e38, -3.4e38, 1e-45, -1e-45, np.inf, -np.inf,
                        88.72283, 88.72284, -87.33655, -103.97208, -103.97209, -200.0, 1e-8, -1e-8],
                       dtype=F32)
    x = np.concatenate([ties, special,
                        (rng.standard_normal(20000) * 30).astype(F32),
                        rng.uniform(-110, 90, 20000).astype(F32),
                        (rng.standard_normal(4000) * 1e7).astype(F32)])
    out = csim.run("ops", "scalar", x.size, x)
    r_lib, r_arith, e, s = (out.take(F32, x.size) for _ in range(4))
    out.done()
    assert_bits(r_lib, fp32.rint(x), "rint_even")
    assert_bits(r_arith, fp32.rint(x), "rint_even_arith (synthesis path)")
    assert_bits(e, fp32.exp32(x), "exp32")
    with np.errstate(over="ignore", invalid="ignore"):                 # silu(-inf) = -inf / inf = NaN
        assert_bits(s, fp32.silu(x), "silu")


# ------------------------------------------------------------------------------------------------
# quantization
# ------------------------------------------------------------------------------------------------

def _quant_rows(rng, d):
    rows = [activations(rng, d), activations(rng, d, outliers=False) * F32(1e-3),
            np.full(d, F32(-3.25)),                                   # constant row: guard
            np.where(rng.random(d) < 0.5, F32(0.0), F32(-0.0)),       # zeros of both signs: guard
            (rng.standard_normal(d) * F32(1e-39)).astype(F32),        # subnormal scale: guard
            (rng.standard_normal(d) * F32(1e37)).astype(F32),         # large magnitudes
            np.abs(activations(rng, d)) + F32(1.0),                   # all positive
            np.round(rng.standard_normal(d) * 7.5).astype(F32)]       # many exact ties
    return np.stack(rows).astype(F32)


@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("kind", [UINT4, INT8])
@pytest.mark.parametrize("d", [1, 2, 7, 96, 160, 576, 1537, 8192])
def test_token_quant(csim, kind, d, lanes):
    x = _quant_rows(rng_for("tq", kind, d), d)
    rows = x.shape[0]
    out = csim.run("ops", "token_quant", lanes, kind, rows, d, x)
    q = out.take(np.uint8 if kind == UINT4 else np.int8, (rows, d))
    s = out.take(F32, rows)
    z = out.take(F32, rows)
    out.done()
    if kind == UINT4:
        q_ref, s_ref, mn_ref = fp32.quant_uint4_asym(x)
        assert_ints(q, q_ref, "uint4 codes")
        assert_bits(s, s_ref, "uint4 scale")
        assert np.array_equal(z, mn_ref), "uint4 zero (= min)"
        assert_bits(z, _expected_min_max(x)[0], "uint4 zero, C++ zero-sign rule")
    else:
        q_ref, s_ref = fp32.quant_int8_sym(x)
        assert_ints(q, q_ref, "int8 codes")
        assert_bits(s, s_ref, "int8 scale")
        assert_bits(z, np.zeros(rows, F32), "int8 zero")


@pytest.mark.parametrize("lanes", [1, 16])
@pytest.mark.parametrize("clip", [0.9, 0.75, 0.5])
@pytest.mark.parametrize("d", [1, 7, 576, 1537])
def test_token_quant_clipped_uint4(csim, d, clip, lanes):
    """The clipped uint4 range (clip * min, clip * max; codes saturate at 0 and 15) bit-exact against the
    numpy golden, and the saturation really happens."""
    x = _quant_rows(rng_for("tqc", d, clip), d)
    rows = x.shape[0]
    out = csim.run("ops", "token_quant_clip", lanes, UINT4, rows, d, F32(clip), x)
    q, s, z = out.take(np.uint8, (rows, d)), out.take(F32, rows), out.take(F32, rows)
    out.done()
    q_ref, s_ref, mn_ref = fp32.quant_uint4_asym(x, clip)
    assert_ints(q, q_ref, "clipped uint4 codes")
    assert_bits(s, s_ref, "clipped uint4 scale")
    assert np.array_equal(z, mn_ref), "clipped uint4 zero (= clip * min)"
    assert_bits(z, _expected_min_max(x)[0] * F32(clip), "clipped uint4 zero, C++ zero-sign rule")
    if d > 7:                                                      # row 0 has both signs: both ends saturate
        above, below = x[0] > x[0].max() * F32(clip), x[0] < x[0].min() * F32(clip)
        assert above.any() and below.any()
        assert (q[0][above] == 15).all() and (q[0][below] == 0).all()
    with pytest.raises(ValueError, match="clip must be in"):
        fp32.quant_uint4_asym(x, 1.5)


@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("lo,hi", [(-128, 127), (0, 255), (0, 15)])
def test_quant_static(csim, lo, hi, lanes):
    rng = rng_for("qs", lo, hi)
    x = np.concatenate([(rng.standard_normal(3000) * 3).astype(F32),
                        (np.arange(-300, 300) / F32(2.0)).astype(F32),      # exact ties after * 1
                        np.array([np.inf, -np.inf, 3e38, -3e38, 0.0, -0.0], F32)]).astype(F32)
    for mult in (F32(1.0), F32(37.917), F32(255.0), F32(1) / F32(0.0123)):
        out = csim.run("ops", "quant_static", lanes, x.size, mult, lo, hi, x)
        c1, c2 = out.take(np.int32, x.size), out.take(np.int32, x.size)
        out.done()
        with np.errstate(over="ignore"):
            ref = fp32.quant_static(x, mult, lo, hi, np.int32)
        assert_ints(c1, ref, "quant_static")
        assert_ints(c2, ref, "quant_static_row")


# ------------------------------------------------------------------------------------------------
# row operators
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("d", [1, 5, 96, 130, 576, 2048, 8192])
def test_rmsnorm(csim, d, lanes):
    rng = rng_for("rms", d)
    x = np.stack([activations(rng, d), activations(rng, d) * F32(1e-3), activations(rng, d) * F32(1e15),
                  np.full(d, F32(0.0))]).astype(F32)
    w = rng.uniform(0.5, 1.5, d).astype(F32)
    eps = F32(1e-5)
    out = csim.run("ops", "rmsnorm", lanes, x.shape[0], d, eps, x, w)
    y = out.take(F32, x.shape)
    out.done()
    assert_bits(y, fp32.rmsnorm(x, w, eps), "rmsnorm")


@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("T", [1, 5, 64, 257, 2048])
def test_softmax(csim, T, lanes):
    """Masked softmax rows as in attention: valid prefix n <= T, exact zeros after it."""
    rng = rng_for("softmax", T)
    rows = 6
    s = (rng.standard_normal((rows, T)) * 4).astype(F32)
    s[1] *= F32(100.0)                                        # very peaked
    s[2] = F32(1.25)                                          # all equal
    s[3] = np.round(s[3])                                     # ties
    n_valid = np.array([T, max(1, T // 2), T, max(1, T - 3), 1, max(1, T // 3)], dtype=np.int32)
    valid = np.arange(T)[None, :] < n_valid[:, None]
    inv_p = F32(1) / F32(0.9 / 255)
    p_ref = fp32.softmax_masked(s, valid)
    q_ref = fp32.quant_static(p_ref, inv_p, 0, 255, np.uint8)
    ragged = np.concatenate([s[r, :n] for r, n in enumerate(n_valid)])
    out = csim.run("ops", "softmax", lanes, rows, n_valid, inv_p, ragged)
    for r, n in enumerate(n_valid):
        p1, p2, q, p3 = out.take(F32, n), out.take(F32, n), out.take(np.uint8, n), out.take(F32, n)
        assert_bits(p1, p_ref[r, :n], f"softmax_prefix row {r}")
        assert_bits(p2, p_ref[r, :n], f"softmax_quant_prefix row {r}")
        assert_bits(p3, p_ref[r, :n], f"softmax_prefix_with_max row {r}")
        assert_ints(q, q_ref[r, :n], f"p_int row {r}")
        assert not p_ref[r, n:].any()
    out.done()


def rope_tables_np(hd: int, n_pos: int, theta: float = 10000.0):
    inv_freq = (F32(1.0) / (F32(theta) ** (np.arange(0, hd, 2, dtype=F32) / F32(hd)))).astype(F32)
    ang = (np.arange(n_pos, dtype=F32)[:, None] * inv_freq[None, :]).astype(F32)
    ang = np.concatenate([ang, ang], axis=1)
    return np.cos(ang).astype(F32), np.sin(ang).astype(F32)


@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("hd", [6, 16, 32, 64, 128])
def test_rope(csim, hd, lanes):
    rng = rng_for("rope", hd)
    n_pos, rows = 300, 9
    cos, sin = rope_tables_np(hd, n_pos)
    pos = rng.integers(0, n_pos, rows).astype(np.int32)
    pos[0], pos[1] = 0, n_pos - 1
    x = activations(rng, (rows, hd))
    out = csim.run("ops", "rope", lanes, n_pos, hd, rows, cos, sin, pos, x)
    y = out.take(F32, (rows, 2, hd))
    out.done()
    ref = fp32.rope(x, cos[pos], sin[pos])
    assert_bits(y[:, 0], ref, "rope_at")
    assert_bits(y[:, 1], ref, "rope_load_tables + rope_apply")


@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("d", [7, 160, 1537, 8192])
def test_silu_mul_and_residual(csim, d, lanes):
    """flexllm_activation.h and flexllm_residual.h (residual_add, residual_sum, copy_row, copy_rows)."""
    rng = rng_for("silu", d)
    g = activations(rng, (5, d)) * F32(8.0)
    g[0, :4] = [F32(-200.0), F32(100.0), F32(-0.0), F32(-89.0)]     # exp32(-g) = inf, -0 gate, ...
    u = activations(rng, (5, d))
    out = csim.run("ops", "silu_residual", lanes, 5, d, g, u)
    act, total, last = out.take(F32, (5, d)), out.take(F32, (5, d)), out.take(F32, d)
    copied, res = out.take(F32, (5, d)), out.take(F32, (5, d))
    out.done()
    with np.errstate(over="ignore"):
        assert_bits(act, fp32.silu(g) * u, "silu_mul")
    assert_bits(total, g + u, "residual_sum")
    assert_bits(last, g[-1], "copy_row")
    assert_bits(copied, u, "copy_rows")
    assert_bits(res, g + u, "residual_add")


def test_embedding(csim):
    rng = rng_for("emb")
    vocab, d = 300, 96
    table = activations(rng, (vocab, d))
    ids = np.array([0, 299, 17, 17, 5], dtype=np.int32)
    out = csim.run("ops", "embedding", vocab, d, table, ids.size, ids)
    x = out.take(F32, (ids.size, d))
    out.done()
    assert_bits(x, table[ids], "embedding")


# sizes of the presets (tiny hidden 96 / FFN 160, SmolLM2 hidden 576 / FFN 1536, Llama-3.2-1B hidden
# 2048 / FFN 8192) and other constructible n = m * 2^k
HADAMARD_SIZES = [96, 160, 576, 1536, 2048, 8192, 1, 2, 16, 40, 112, 12, 24, 208, 320, 1280, 5632, 4096]


@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("n", HADAMARD_SIZES)
def test_hadamard(csim, n, lanes):
    m, p = hadamard_factor(n)
    assert m <= 64
    rng = rng_for("had", n)
    x = activations(rng, (3, n))
    x[2] = rng.integers(-3, 4, n).astype(F32)         # many exact zeros / cancellations (signed zeros)
    scale = np.float64(1.0 / math.sqrt(n)).astype(F32)
    sign = np.ascontiguousarray(small_hadamard(m), dtype=np.int8)
    out = csim.run("ops", "hadamard", lanes, 3, m, int(p).bit_length() - 1, sign, scale, x)
    y, y_inplace = out.take(F32, (3, n)), out.take(F32, (3, n))
    out.done()
    ref = fast_hadamard_transform_np(x)
    assert_bits(y, ref, f"hadamard n={n} (m={m}, p={p})")
    assert_bits(y_inplace, ref, "hadamard in place")


# ------------------------------------------------------------------------------------------------
# weights, KV cache
# ------------------------------------------------------------------------------------------------

def random_weights(rng, d_out, d_in, bits, full_range=True):
    lo = -(2 ** (bits - 1)) if full_range else -(2 ** (bits - 1) - 1)
    return rng.integers(lo, 2 ** (bits - 1), (d_out, d_in)).astype(np.int8)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("d_in", [1, 2, 7, 96, 161])
def test_weight_packing(bits, d_in):
    rng = rng_for("w", bits, d_in)
    w = random_weights(rng, 13, d_in, bits)
    packed = pack_weights(w, bits)
    assert packed.dtype == np.uint8 and packed.shape == (13, packed_row_bytes(d_in, bits))
    assert np.array_equal(unpack_weights(packed, d_in, bits), w)
    if bits == 4 and d_in % 2:
        assert not (packed[:, -1] >> 4).any(), "odd d_in: last high nibble must be 0"
    if bits == 4 and d_in >= 2:
        assert packed[0, 0] == ((int(w[0, 0]) & 15) | ((int(w[0, 1]) & 15) << 4))


@pytest.mark.parametrize("ports", [1, 2, 3, 4])
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("d_out,d_in", [(13, 1), (13, 161), (2, 128), (7, 129), (9, 64), (5, 300)])
def test_weight_ports_layout(csim, ports, bits, d_out, d_in):
    """pack_weights_ports: the documented word / port / slot layout, its inverse, and the C++ readers
    (unpack_weight_row, weight_code) read back the same codes from the port memories."""
    rng = rng_for("wports", ports, bits, d_out, d_in)
    w = random_weights(rng, d_out, d_in, bits)
    packed = pack_weights_ports(w, bits, ports)
    rw, rpp = row_words(d_in, bits), rows_per_port(d_out, ports)
    assert rw == -(-packed_row_bytes(d_in, bits) // 64) and rpp == -(-d_out // ports)
    assert packed.dtype == np.uint8 and packed.shape == (ports, slice_words(d_out, d_in, bits, ports) * WORD_BYTES)
    assert packed.shape[1] == rpp * rw * 64
    assert np.array_equal(unpack_weights_ports(packed, d_out, d_in, bits), w)
    rows, rb = pack_weights(w, bits), packed_row_bytes(d_in, bits)
    slots = packed.reshape(ports, rpp, rw * 64)
    for j in range(rpp * ports):                      # row j: port j % ports, slot j // ports
        got = slots[j % ports, j // ports]
        if j < d_out:
            assert np.array_equal(got[:rb], rows[j]) and not got[rb:].any(), f"row {j}"
        else:
            assert not got.any(), f"missing row {j} must be zero"
    w_off = 3
    out = csim.run("ops", "weights", bits, ports, d_out, d_in, w_off, packed)
    a, b = out.take(np.int8, (d_out, d_in)), out.take(np.int8, (d_out, d_in))
    out.done()
    assert_ints(a, w, "unpack_weight_row")
    assert_ints(b, w, "weight_code")


def test_weight_packing_rejects_out_of_range():
    with pytest.raises(ValueError):
        pack_weights(np.array([[8]], dtype=np.int8), 4)
    with pytest.raises(ValueError):
        pack_weights(np.zeros((2, 2), np.int8), 3)
    with pytest.raises(ValueError):
        pack_weights_ports(np.zeros((2, 2), np.int8), 4, 0)
    with pytest.raises(ValueError):
        pack_weights_ports(np.array([[-9]], dtype=np.int8), 4, 2)


@pytest.mark.parametrize("hd,lanes,position,n_new", [(32, 1, 0, 5), (64, 3, 7, 4), (80, 4, 13, 9), (64, 2, 38, 2)])
def test_kv_cache_ports(csim, hd, lanes, position, n_new):
    """The KV cache spread over 2 x lanes port buffers (layers/flexllm_kv_cache.h): new rows written by the
    writer tasks' kv_write_port_rows land at their positions of the logical cache (nothing else changes), and
    the readers' kv_read_port_rows return rows 0 .. position+n_new-1 in order, K and V alike; hd 32 / 64 / 80:
    part of a word, exactly one, two words per row."""
    rng = rng_for("kv", hd, lanes, position)
    layers, kvh, max_ctx = 3, 2, 40
    cache = rng.integers(-128, 128, (layers, kvh, max_ctx, hd)).astype(np.int8)
    layer, kh = 2, 1
    rows = rng.integers(-128, 128, (n_new, hd)).astype(np.int8)
    out = csim.run("ops", "kv_cache", layers, kvh, max_ctx, hd, lanes, cache, layer, kh, position, n_new, rows)
    got = out.take(np.int8, cache.shape)
    read = out.take(np.int8, (position + n_new, hd))
    out.done()
    expected = cache.copy()
    expected[layer, kh, position:position + n_new] = rows
    assert_ints(got, expected, "kv cache after the writer tasks")
    assert_ints(read, expected[layer, kh, :position + n_new], "rows streamed by the reader tasks")


def test_int8_pack2_is_exact(csim):
    """Two 8-bit products per DSP48E2 (flexllm_attention.h int8_pack2_mul: the attention's head-lane pairs)
    equal the plain products for every int8 / uint8 pair and int8 shared operand."""
    out = csim.run("ops", "int8_pack2")
    checked, bad = out.take(np.int64, 2)
    out.done()
    assert checked == 384 * 384 * 256 and bad == 0


# ------------------------------------------------------------------------------------------------
# linear engine
# ------------------------------------------------------------------------------------------------

LINEAR_SHAPES = [  # (n_tokens, d_in, d_out): decode and prefill, sizes not multiples of the lanes / ports;
    # d_in 128 / 129: int4 rows of exactly one word / one byte into a second word; d_out < ports
    (1, 96, 160), (7, 160, 96), (16, 33, 17), (3, 576, 64), (2, 1536, 40), (1, 8192, 12), (5, 2048, 23),
    (1, 128, 2), (3, 129, 3), (1, 8192, 7), (1, 2049, 13)]
# (TOKEN_LANES, OUT_LANES, IN_LANES, PORTS) of tests/csim/drv_linear.cpp `lanes<ID>`; ids 4 and 5 are decode
# engines (MAX_TOKENS 1: the streaming form, LUT MACs and DSP-packed int4 x uint4 MACs); id 6 the prefill
# (tiled) engine with DSP-packed MACs
LINEAR_LANES = [(1, 4, 16, 4), (3, 5, 7, 1), (4, 6, 10, 3), (2, 6, 33, 2), (1, 4, 48, 4), (1, 6, 128, 6), (3, 6, 10, 3)]
DECODE_LANES = {4: None, 5: (4, UINT4)}                 # id -> the only (bits, kind) it runs, None: all
DSP_PACKED = {5, 6}                                     # ids with int4 x uint4 DSP packing
BITS_KINDS = [(4, UINT4), (4, INT8), (8, INT8), (8, UINT4)]


def golden_linear(w, w_scale, bits, kind, q, s, z):
    lp = LinearParams("lin", w, w_scale, bits).finalize(KIND_NAME[kind])
    y = GoldenModel._linear_q(None, lp, q, s, z, None, "lin")     # the golden code itself (self unused)
    acc = fp32.int_matmul(q, lp.wt, lp.acc_bound)
    return lp, y, acc


@pytest.mark.parametrize("lanes", range(len(LINEAR_LANES)),
                         ids=["TP{}-BP{}-WP{}-P{}".format(*c) + ("-dsp2" if i in DSP_PACKED else "")
                              for i, c in enumerate(LINEAR_LANES)])
@pytest.mark.parametrize("bits,kind", BITS_KINDS, ids=["w4-uint4", "w4-int8", "w8-int8", "w8-uint4"])
@pytest.mark.parametrize("shape", LINEAR_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_linear(csim, lanes, bits, kind, shape):
    n, d_in, d_out = shape
    if lanes in DECODE_LANES and (n != 1 or DECODE_LANES[lanes] not in (None, (bits, kind))):
        pytest.skip("decode engine: one token per call (and DSP packing: int4 x uint4 only)")
    if lanes in DSP_PACKED and (bits, kind) != (4, UINT4):
        pytest.skip("DSP packing: int4 x uint4 only")
    rng = rng_for("linear", lanes, bits, kind, shape)
    x = activations(rng, (n, d_in))
    if n > 2:
        x[1] = F32(0.75)                                 # constant token: guard, y = mn * wsum
    if kind == UINT4:
        q, s, z = fp32.quant_uint4_asym(x)
    else:
        (q, s), z = fp32.quant_int8_sym(x), None
    w = random_weights(rng, d_out, d_in, bits)
    w_scale = (rng.uniform(0.5, 2.0, d_out) / (2 ** (bits - 1) * math.sqrt(d_in))).astype(F32)
    lp, y_ref, acc_ref = golden_linear(w, w_scale, bits, kind, q, s, z)
    ports, w_off = LINEAR_LANES[lanes][3], 5            # the slice sits after 5 garbage words
    out = csim.run("linear", "linear", lanes, ports, bits, kind, n, d_in, d_out, w_off, q, s,
                   z if z is not None else np.zeros(n, F32), pack_weights_ports(w, bits, ports), lp.w_scale,
                   lp.wsum if kind == UINT4 else np.zeros(d_out, F32))
    y, acc = out.take(F32, (n, d_out)), out.take(np.int32, (n, d_out))
    out.done()
    assert_ints(acc, acc_ref, "linear accumulators")
    assert_bits(y, y_ref, "linear output")


def test_dsp_pack2_is_exact(csim):
    """Two int4 x 4-bit products per DSP48E2 (flexllm_linear.h dsp_pack2_*) for every MAC operand of the
    engines: uint4 codes 0..15 and the signed high nibbles -8..7 of int8 codes on a per-call engine. Every
    product exhaustively, the extraction over the low field's whole range (|S_b| <= 8192 x 120) with the
    high field at its ends (and the reverse), and 8192 accumulated extreme products."""
    out = csim.run("ops", "dsp_pack2")
    checked, bad = out.take(np.int64, 2)
    out.done()
    lim = 8192 * 120
    assert checked == 24 * 16 * 16 + 7 * (2 * lim + 1) * 2 + 8 and bad == 0


# (lanes id of tests/csim/drv_linear.cpp, n_tokens of its calls): a prefill-like tiled engine (fabric MACs),
# the decode streaming engine (fabric MACs), the decode engine with DSP-packed nibbles, and the tiled engine
# with DSP-packed nibbles on output lanes 0..3
PER_CALL_ENGINES = [(2, 7), (4, 1), (5, 1), (6, 5)]
# (kind, clip, d_in, d_out) of the calls of one schedule: uint4, int8, clipped uint4, int8 at the engine's
# largest d_in (the packing bound), uint4 again after an int8 call (accumulator sets reset)
PER_CALL_SCHEDULE = [(UINT4, 1.0, 160, 23), (INT8, 1.0, 96, 17), (UINT4, 0.9, 576, 13), (INT8, 1.0, 8192, 7),
                     (UINT4, 0.75, 129, 12), (INT8, 1.0, 33, 6)]


@pytest.mark.parametrize("engine", PER_CALL_ENGINES, ids=lambda e: f"L{e[0]}-n{e[1]}")
def test_linear_per_call_kind_and_clip(csim, engine):
    """ONE per-call engine (INPUT_PER_CALL) and ONE per-call quantizer run a schedule that mixes uint4, int8
    (two nibble passes) and clipped uint4 calls: codes, scales, zeros, accumulators and outputs bit-exact
    against the numpy golden (GoldenModel._quant_input / _linear_q with the site's kind and clip ratio)."""
    lanes, n = engine
    ports = LINEAR_LANES[lanes][3]
    rng = rng_for("per_call", lanes)
    items, refs = [len(PER_CALL_SCHEDULE)], []
    for kind, clip, d_in, d_out in PER_CALL_SCHEDULE:
        x = activations(rng, (n, d_in))
        w = random_weights(rng, d_out, d_in, 4)
        w_scale = (rng.uniform(0.5, 2.0, d_out) / (8 * math.sqrt(d_in))).astype(F32)
        lp = LinearParams("lin", w, w_scale, 4).finalize(KIND_NAME[kind], clip)
        q, sc, z = GoldenModel._quant_input(None, x, lp)
        y = GoldenModel._linear_q(None, lp, q, sc, z, None, "lin")
        refs.append((kind, q, sc, z, fp32.int_matmul(q, lp.wt, lp.acc_bound), y, x, clip))
        items += [kind, F32(clip), n, d_in, d_out, 3, x, pack_weights_ports(w, 4, ports), lp.w_scale,
                  lp.wsum if kind == UINT4 else np.zeros(d_out, F32)]
    out = csim.run("linear", "schedule", lanes, *items)
    for (kind, clip, d_in, d_out), (k, q_ref, s_ref, z_ref, acc_ref, y_ref, x, c) in zip(PER_CALL_SCHEDULE, refs):
        what = f"{KIND_NAME[kind]} call (clip {clip}, {d_in} -> {d_out})"
        q, sc, z = out.take(np.int8, (n, d_in)), out.take(F32, n), out.take(F32, n)
        y, acc = out.take(F32, (n, d_out)), out.take(np.int32, (n, d_out))
        assert_ints(q, q_ref, f"{what}: codes")
        assert_bits(sc, s_ref, f"{what}: scale")
        if kind == UINT4:
            assert np.array_equal(z, z_ref), f"{what}: zero (= clip * min)"
            assert_bits(z, _expected_min_max(x)[0] * F32(c), f"{what}: zero, C++ zero-sign rule")
        else:
            assert_bits(z, np.zeros(n, F32), f"{what}: zero")
            assert (q < 0).any() and (q > 15).any(), f"{what}: codes outside the uint4 range (both nibbles used)"
        assert_ints(acc, acc_ref, f"{what}: accumulators")
        assert_bits(y, y_ref, f"{what}: output")
    out.done()


# ------------------------------------------------------------------------------------------------
# attention
# ------------------------------------------------------------------------------------------------

def head_scales(rng, n_heads, n_kv_heads, head_dim):
    """Static scales as calibration would give (s_q of the softmax-scaled q), finalized by golden."""
    sm = 1.0 / math.sqrt(head_dim)
    lp = LayerParams(input_norm=None, post_norm=None, q_proj=None, k_proj=None, v_proj=None, o_proj=None,
                     gate_proj=None, up_proj=None, down_proj=None,
                     s_q=(rng.uniform(2.0, 4.0, n_heads) * sm / 127).astype(F32),
                     s_k=rng.uniform(2.0, 4.0, n_kv_heads).astype(F32) / F32(127),
                     s_v=rng.uniform(2.0, 4.0, n_kv_heads).astype(F32) / F32(127),
                     s_p=(rng.uniform(0.8, 1.0, n_heads) / 255).astype(F32))
    return lp.finalize(sm, n_heads // n_kv_heads)


class _ProjectionStub:
    """Stands in for GoldenModel inside GoldenModel._attention: returns given q/k/v projections and
    passes the attention output through o_proj, so the golden attention code itself is the reference."""

    def __init__(self, qf, kf, vf, n_heads, n_kv_heads, head_dim, cos, sin):
        self.num_heads, self.num_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.rope_cos, self.rope_sin = cos, sin
        self._kv_of = np.arange(n_heads) // (n_heads // n_kv_heads)
        self._proj = [qf, kf, vf]

    def _quant_input(self, x, lp):
        return x, None, None

    def _linear_q(self, lp, q, s, zero, trace, prefix):
        return q if prefix.endswith("o_proj") else self._proj.pop(0)


ATTENTION_CASES = [  # (lanes, head_dim, group, n_kv_heads, n_tokens, position)
    (0, 64, 3, 3, 5, 0),      # SmolLM2-like prefill
    (1, 64, 3, 3, 1, 37),     # ... decode
    (2, 128, 4, 2, 4, 20),    # chunked prefill after a cache
    (1, 32, 1, 4, 3, 0),      # MHA
    (0, 32, 4, 1, 1, 200),    # long decode
    (2, 64, 4, 2, 16, 100),   # Llama-3.2-like group 4
    (1, 16, 3, 2, 7, 9),      # tiny preset
    (0, 128, 1, 1, 2, 238),   # last positions of the cache (max_ctx 240)
]


@pytest.mark.parametrize("case", ATTENTION_CASES, ids=lambda c: "L{}-hd{}-g{}-kv{}-n{}-p{}".format(*c))
def test_attention(csim, case):
    lanes, hd, group, kvh, n, position = case
    H = group * kvh
    rng = rng_for("attn", case)
    n_layers, layer, max_ctx, n_pos = 2, 1, 240, 256
    cos, sin = rope_tables_np(hd, n_pos)
    sc = head_scales(rng, H, kvh, hd)
    qf = activations(rng, (n, H * hd))
    kf = activations(rng, (n, kvh * hd))
    vf = activations(rng, (n, kvh * hd))
    k_cache = rng.integers(-128, 128, (n_layers, kvh, max_ctx, hd)).astype(np.int8)
    v_cache = rng.integers(-128, 128, (n_layers, kvh, max_ctx, hd)).astype(np.int8)
    k_cache[layer, :, :position] = rng.integers(-40, 41, (kvh, position, hd))  # realistic cached codes
    v_cache[layer, :, :position] = rng.integers(-40, 41, (kvh, position, hd))

    stub = _ProjectionStub(qf, kf, vf, H, kvh, hd, cos, sin)
    trace = {}
    ref, k_int, v_int = GoldenModel._attention(stub, 0, sc, np.zeros((n, 1), F32), position, k_cache[layer, :, :position],
                                               v_cache[layer, :, :position], trace)
    assert trace["layers.0.self_attn.p_int"].max() > 0
    out = csim.run("attention", "attention", lanes, n, position, H, kvh, hd, max_ctx, n_layers, layer, n_pos,
                   cos, sin, sc.c_q, sc.inv_k, sc.inv_v, sc.qk_scale, sc.inv_p, sc.pv_scale, qf, kf, vf,
                   k_cache, v_cache)
    attn = out.take(F32, (n, H * hd))
    k_after, v_after = out.take(np.int8, k_cache.shape), out.take(np.int8, v_cache.shape)
    out.done()
    k_exp, v_exp = k_cache.copy(), v_cache.copy()
    k_exp[layer, :, position:position + n] = k_int
    v_exp[layer, :, position:position + n] = v_int
    assert_ints(k_after, k_exp, "K cache")
    assert_ints(v_after, v_exp, "V cache")
    assert_bits(attn, ref, "attention output")


# ------------------------------------------------------------------------------------------------
# sampling
# ------------------------------------------------------------------------------------------------

def test_xorshift(csim):
    state, count = 0x12345678, 200
    out = csim.run("ops", "xorshift", np.uint32(state), count)
    got = [(out.take(np.uint32, 1)[0], out.take(F32, 1)[0]) for _ in range(count)]
    out.done()
    s = state
    for st, u in got:
        s = xorshift32(s)
        assert int(st) == s
        assert_bits(np.array([u], F32), np.array([uniform_from_state(s)], F32), "uniform")
        assert 0.0 <= float(u) < 1.0


@pytest.mark.parametrize("n", [1, 10, 512, 8192])
def test_sampling(csim, n):
    rng = rng_for("sample", n)
    state = 2463534242
    for trial in range(6):
        if trial % 2:
            logits = (rng.integers(-20, 20, n) / 4).astype(F32)       # many ties
        else:
            logits = (rng.standard_normal(n) * 3).astype(F32)
        if trial == 4 and n > 3:
            logits[[1, 2]] = -np.inf
            logits[3] = logits.max()                                  # tie at the top
        k = [1, 5, 40, 64, 3, n][trial]
        k = max(1, min(k, 64))
        inv_t = F32([1.0, 1.25, 0.5, 10.0, 1.0, 0.7][trial])
        out = csim.run("ops", "sampling", n, k, inv_t, np.uint32(state), logits)
        arg, idx, new_state = int(out.take(np.int32, 1)[0]), int(out.take(np.int32, 1)[0]), int(
            out.take(np.uint32, 1)[0])
        out.done()
        assert arg == int(np.argmax(logits))
        ref_idx, ref_state = sample_top_k(logits, k, inv_t, state)
        assert (idx, new_state) == (ref_idx, ref_state), f"trial {trial}"
        state = new_state


def test_sampling_python_reference():
    logits = np.array([1.0, 3.0, 3.0, -np.inf, 2.0], F32)
    picks = set()
    s = 1
    for _ in range(200):
        i, s = sample_top_k(logits, 3, F32(1.0), s)
        picks.add(i)
    assert picks == {1, 2, 4}                                         # top-3: 3.0 (idx 1, 2), 2.0
    assert sample_top_k(logits, 1, F32(1.0), 7)[0] == 1               # k = 1 is greedy (lowest index)


# ------------------------------------------------------------------------------------------------
# the whole model: composition of the modules against GoldenModel
# ------------------------------------------------------------------------------------------------

MODEL_CASES = {  # name: (weight_bits, input kind, r4, hidden, heads, kv_heads, head_dim, ffn, vocab, layers)
    "tiny-w4a4": (4, UINT4, True, 96, 6, 2, 16, 160, 512, 2),
    "tiny-w4a8": (4, INT8, True, 96, 6, 2, 16, 160, 512, 2),
    "gqa4-w8a8": (8, INT8, True, 64, 4, 1, 32, 192, 300, 1),
    "mha-w4a4-nor4": (4, UINT4, False, 64, 2, 2, 32, 100, 256, 3),
}


def random_golden(rng, bits, kind, r4, hidden, H, KVH, hd, ffn, vocab, n_layers, n_pos=64):
    def lin(name, d_out, d_in):
        w = random_weights(rng, d_out, d_in, bits, full_range=False)
        s = (rng.uniform(0.5, 1.5, d_out) / ((2 ** (bits - 1) - 1) * math.sqrt(d_in))).astype(F32)
        return LinearParams(name, w, s, bits)

    sm = 1.0 / math.sqrt(hd)
    layers = []
    for i in range(n_layers):
        layers.append(LayerParams(
            input_norm=rng.uniform(0.5, 1.5, hidden).astype(F32), post_norm=rng.uniform(0.5, 1.5, hidden).astype(F32),
            q_proj=lin("q", H * hd, hidden), k_proj=lin("k", KVH * hd, hidden), v_proj=lin("v", KVH * hd, hidden),
            o_proj=lin("o", hidden, H * hd), gate_proj=lin("g", ffn, hidden), up_proj=lin("u", ffn, hidden),
            down_proj=lin("d", hidden, ffn),
            s_q=(rng.uniform(2.0, 4.0, H) * sm / 127).astype(F32), s_k=rng.uniform(2.0, 4.0, KVH).astype(F32) / F32(127),
            s_v=rng.uniform(1.0, 3.0, KVH).astype(F32) / F32(127), s_p=(rng.uniform(0.8, 1.0, H) / 255).astype(F32)))
    cos, sin = rope_tables_np(hd, n_pos)
    return GoldenModel(hidden_size=hidden, num_heads=H, num_kv_heads=KVH, head_dim=hd, intermediate_size=ffn,
                       vocab_size=vocab, rms_norm_eps=1e-5, input_quant=KIND_NAME[kind], weight_bits=bits, r4=r4,
                       embed=rng.standard_normal((vocab, hidden)).astype(F32),
                       final_norm=rng.uniform(0.5, 1.5, hidden).astype(F32), lm_head=lin("lm_head", vocab, hidden),
                       layers=layers, rope_cos=cos, rope_sin=sin)


MODEL_PORTS = 3                          # drv_model.cpp PORTS


def _model_payload(g: GoldenModel, max_ctx: int, calls):
    kind = UINT4 if g.input_quant == "uint4_asym" else INT8

    def lin(lp):
        return [pack_weights_ports(lp.w_int, lp.w_bits, MODEL_PORTS), lp.w_scale,
                lp.wsum if kind == UINT4 else np.zeros(lp.d_out, F32)]

    items = [g.weight_bits, kind, MODEL_PORTS, g.num_layers, g.hidden_size, g.num_heads, g.num_kv_heads, g.head_dim,
             g.intermediate_size, g.vocab_size, g.max_positions, int(g.r4), max_ctx, g.eps,
             g.embed, g.rope_cos, g.rope_sin]
    if g.r4:
        m, p = hadamard_factor(g.intermediate_size)
        items += [m, int(p).bit_length() - 1, np.ascontiguousarray(small_hadamard(m), dtype=np.int8),
                  np.float64(1.0 / math.sqrt(g.intermediate_size)).astype(F32)]
    items += [g.final_norm] + lin(g.lm_head)
    for L in g.layers:
        items += [L.input_norm, L.post_norm]
        for lp in (L.q_proj, L.k_proj, L.v_proj, L.o_proj, L.gate_proj, L.up_proj, L.down_proj):
            items += lin(lp)
        items += [L.c_q, L.inv_k, L.inv_v, L.qk_scale, L.inv_p, L.pv_scale]
    items.append(len(calls))
    for ids, position in calls:
        items += [len(ids), position, np.asarray(ids, dtype=np.int32)]
    return items


@pytest.mark.parametrize("name", list(MODEL_CASES))
def test_model_end_to_end(csim, name):
    """Prefill, chunked prefill and greedy decode steps of a random model: every logit bit-exact
    against GoldenModel, and the int8 KV cache identical."""
    rng = rng_for("model", name)
    g = random_golden(rng, *MODEL_CASES[name])
    max_ctx = 40
    prompt = rng.integers(0, g.vocab_size, 6)
    chunk = rng.integers(0, g.vocab_size, 3)
    logits0, kv, _ = g.prefill(prompt)
    logits1, kv, _ = g._forward(chunk, 6, kv, False)
    calls, ref_logits = [(prompt, 0), (chunk, 6)], [logits0, logits1]
    tok, pos = int(np.argmax(logits1[-1])), 9
    for _ in range(2):
        lg, kv, _ = g.decode(tok, pos, kv)
        calls.append(([tok], pos))
        ref_logits.append(lg[None])
        tok, pos = int(np.argmax(lg)), pos + 1
    out = csim.run("model", "model", *_model_payload(g, max_ctx, calls))
    for (ids, _), ref in zip(calls, ref_logits):
        assert_bits(out.take(F32, (len(ids), g.vocab_size)), ref, f"{name}: logits")
    shape = (g.num_layers, g.num_kv_heads, max_ctx, g.head_dim)
    k_cache, v_cache = out.take(np.int8, shape), out.take(np.int8, shape)
    out.done()
    assert isinstance(kv, KVCache) and kv.length == pos
    for i in range(g.num_layers):
        assert_ints(k_cache[i, :, :pos], kv.k[i], f"layer {i} K cache")
        assert_ints(v_cache[i, :, :pos], kv.v[i], f"layer {i} V cache")
    assert not k_cache[:, :, pos:].any() and not v_cache[:, :, pos:].any()
