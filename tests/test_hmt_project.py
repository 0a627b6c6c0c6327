"""HMT in the generated project: a tiny HMT project (configs/tiny_hmt.yaml, seeded random HMT parameters)
built and C-simulated over a prompt of more than 16 x its compiled context (34 segments through a KV
cache of 32 positions) against the golden model's HMT path, bit for bit (every pushed memory and key,
every token, the KV cache, the logits); the golden HMT path against the PyTorch HMT wrapper on the same
quantized backbone; the basis fold of the hardware parameters against the float recall; the build's
HMT limits."""

import numpy as np
import pytest
import torch
import yaml

from brevitas_models.hmt.golden_recall import memory_recall
from brevitas_models.hmt.golden_segments import ROW_MEMORY, ROW_SUMMARY, segment_layouts
from brevitas_models.hmt.hardware import HardwareHMTParams, hardware_params
from brevitas_models.hmt.memory import HMTParams, recall
from flexllm_plugin.config import ConfigError, load_config
from flexllm_plugin.resources import config_path
from tests.helpers import text_tokens, tiny_model, tiny_weights

SENTENCE = "Assert statements are a convenient way to insert debugging assertions into a program. "


def random_params(d=96, seed=0, recall_scale="none", recall_residual=False) -> HMTParams:
    """Seeded random HMT parameters (not trained): W_q, W_k scaled so the recall's softmax is neither
    uniform nor one-hot; a recall scale (``HMT.RecallScale``) around its starting value, per channel
    different for ``diagonal``."""
    g = torch.Generator().manual_seed(seed)
    p = HMTParams(d, recall_scale=recall_scale, recall_residual=recall_residual)
    with torch.no_grad():
        p.summary_token.copy_(torch.randn(d, generator=g) * 0.05)
        p.initial_memory.copy_(torch.randn(d, generator=g) * 0.05)
        p.w_q.copy_(torch.randn(d, d, generator=g) * 4 / d ** 0.5)
        p.w_k.copy_(torch.randn(d, d, generator=g) * 4 / d ** 0.5)
        if p.recall_scale is not None:
            p.recall_scale.mul_(1 + 0.5 * torch.randn(p.recall_scale.shape, generator=g))
    return p


def write_hmt_config(tmp, quant_over=None, **hmt_over):
    from brevitas_models.hmt.train import save_checkpoint
    ck = tmp / "hmt.pt"
    data = yaml.safe_load(config_path("tiny_hmt.yaml").read_text())
    data["HMT"].update({"Checkpoint": str(ck), **hmt_over})
    data["Quantization"].update(quant_over or {})
    path = tmp / "tiny_hmt.yaml"
    path.write_text(yaml.safe_dump(data))
    spec = load_config(path).hmt_spec()
    save_checkpoint(ck, random_params(recall_scale=spec.recall_scale, recall_residual=spec.recall_residual), spec,
                    {"source": "seeded random (tests/test_hmt_project.py)"})
    return path


@pytest.fixture(scope="module")
def hmt_project(tmp_path_factory):
    from flexllm_plugin.project.builder import build_project
    tmp = tmp_path_factory.mktemp("hmt")
    out = tmp / "tiny_hmt"
    build_project(load_config(write_hmt_config(tmp)), out)
    return out


def test_long_prompt_through_segments_matches_the_golden_bit_for_bit(hmt_project):
    from flexllm_plugin.project.verify import verify

    prompt = SENTENCE * 7                                 # 602 byte tokens
    r = verify(hmt_project, prompt, 8)
    ctx = load_config(hmt_project / "flexllm_config.yaml")["Decode"]["MaxContext"]
    assert r["prompt_tokens"] == len(prompt) >= 16 * ctx
    assert r["segments"] == -(-len(prompt) // 18) >= 3
    assert len(r["segment_memories_match"]) == r["segments"] - 1 and all(r["segment_memories_match"])
    assert r["tokens_match"] and r["kv_cache_match"] and r["max_logit_rel_err"] == 0.0 and r["match"]
    assert r["kv_positions"] <= ctx and len(r["csim_tokens"]) == 8
    # the C simulation's loop counters over all segments == the cost model (passes + recall unit)
    cyc = r["cycles"]["prefill"]
    assert cyc["loops_differing"] == {} and cyc["counted"] == cyc["modeled"] > 0
    readme = (hmt_project / "README.md").read_text()
    assert "## HMT: long prompts with a bounded KV cache" in readme and "| 64 | 1152 |" in readme


def test_recall_scale_on_an_unrotated_backbone_matches_the_golden(tmp_path):
    """HMT.RecallScale and HMT.RecallResidual on an unrotated backbone (Rotation: none): the image carries
    W_p = V (the learned per-channel scale), the kernel applies it to the mix and adds P_0, and the C
    simulation equals the golden bit for bit on every memory, token, the KV cache and the logits; its loop
    counters equal the cost model's."""
    from flexllm_plugin.project.builder import build_project
    from flexllm_plugin.project.verify import verify

    out = tmp_path / "tiny_hmt"
    build_project(load_config(write_hmt_config(tmp_path, {"Rotation": "none"}, RecallScale="diagonal",
                                                   RecallResidual=True)), out)
    kernel = (out / "firmware" / "tiny_hmt_prefill.cpp").read_text()
    assert "hmt_params + HMT_WP_OFF" in kernel and "HMT_RECALL_RESIDUAL:" in kernel
    hw = HardwareHMTParams.from_image(np.fromfile(out / "weights" / "hmt_params.bin", dtype=np.float32), 96, True)
    assert np.count_nonzero(hw.w_p - np.diag(np.diag(hw.w_p))) == 0 and np.ptp(np.diag(hw.w_p)) > 0
    r = verify(out, SENTENCE * 2, 3)
    assert r["segments"] >= 3 and all(r["segment_memories_match"]) and r["match"]
    cyc = r["cycles"]["prefill"]
    assert cyc["loops_differing"] == {} and cyc["counted"] == cyc["modeled"] > 0


def test_the_kernel_recall_comes_through_qonnx_and_hls4ml(hmt_project):
    """The project keeps the QONNX memory graph (qonnx/hmt/model.onnx, the hardware W_q' / W_k'); qonnx
    executes it like the golden recall on the project's parameter image, and the prefill kernel's recall is
    the call the hls4ml FlexMemoryRecall layer's template writes."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    from brevitas_models.hmt.golden_recall import memory_key
    model = ModelWrapper(str(hmt_project / "qonnx" / "hmt" / "model.onnx"))
    hw = HardwareHMTParams.from_image(np.fromfile(hmt_project / "weights" / "hmt_params.bin", dtype=np.float32),
                                      96, True)
    rng = np.random.default_rng(1)
    mems = rng.standard_normal((2, 96)).astype(np.float32)
    keys = np.stack([memory_key(hw.w_k, m) for m in mems])
    s = rng.standard_normal(96).astype(np.float32)
    out = execute_onnx(model, {"summary": s[None], "keys": keys, "memories": mems,
                               "filled": np.array([2], dtype=np.int64), "new_memory": mems[:1]})
    mix = memory_recall(hw.w_q, s, keys, mems, 2)
    assert out["recalled"][0].view(np.uint32).tolist() == mix.view(np.uint32).tolist()
    assert hw.projects_recall                              # rotated backbone: the graph carries W_p too
    np.testing.assert_allclose(out["recalled_row"][0], hw.w_p.astype(np.float64) @ mix, rtol=1e-4,
                               atol=1e-5 * np.abs(mix).max())
    kernel = (hmt_project / "firmware" / "tiny_hmt_prefill.cpp").read_text()
    assert "flexllm::memory_recall<2, 96, 16>(hmt_params + HMT_WQ_OFF, state, ring_key, ring_mem, filled, " in kernel


@pytest.mark.slow
def test_cli_verify_prompt_file_reports_segments(hmt_project, tmp_path):
    import json
    import subprocess
    import sys
    f = tmp_path / "long.txt"
    f.write_text(SENTENCE)                                 # 86 tokens: 5 segments
    r = subprocess.run([sys.executable, "-m", "flexllm_plugin.cli", "verify", str(hmt_project), "--prompt-file",
                        str(f), "--max-new-tokens", "3", "--json", "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["segments"] == 5 and out["match"]
    r = subprocess.run([sys.executable, "-m", "flexllm_plugin.cli", "verify", str(hmt_project), "--prompt-file",
                        str(f), "--max-new-tokens", "3", "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("MATCH") and "HMT: 5 segments of 18 tokens, memories equal: 4/4" in r.stdout


def test_golden_hmt_path_follows_the_pytorch_wrapper(monkeypatch):
    """The golden HMT path (hardware basis, integer backbone) against HMTWrapper on the same quantized
    Brevitas backbone (float basis, fake-quant): the same memories up to quantization noise."""
    from brevitas_models.golden import GoldenModel
    from brevitas_models.hmt.basis import BackboneBasis
    from brevitas_models.hmt.golden_segments import GoldenHMT
    from brevitas_models.hmt.memory import MemoryCache
    from brevitas_models.hmt.spec import HMTSpec
    from brevitas_models.hmt.wrapper import HMTWrapper

    model = tiny_model("flexllm-w4a4").eval()
    assert model.rotated                                   # the fold's hard case
    norm = tiny_weights().state_dict["model.norm.weight"]
    params = random_params()
    spec = HMTSpec(segment_length=24, sensory_tokens=4, memory_slots=2)
    ids = text_tokens()[: 4 * spec.block]
    golden = GoldenModel.from_brevitas(model)
    hw = hardware_params(params, model, norm)
    pre = GoldenHMT(golden, hw, spec.segment_length, spec.sensory_tokens, spec.summary, spec.memory_slots).prefill(
        ids.tolist())
    wrapper = HMTWrapper(model, spec, params, final_norm_weight=norm)
    memories = []
    orig_push = MemoryCache.push

    def record(cache, memory, w_k):
        memories.append(memory.detach()[0].double().numpy())
        return orig_push(cache, memory, w_k)
    monkeypatch.setattr(MemoryCache, "push", record)
    with torch.no_grad():
        wrapper.run(ids[None])
    basis = BackboneBasis(model, norm)
    pushed = [r.memory for r in pre.segments if r.memory is not None]
    assert len(pushed) == len(memories) == 3
    for g, w in zip(pushed, memories):
        g_float = basis.from_post_norm(torch.from_numpy(g).double()[None].float())[0].double().numpy()
        cos = g_float @ w / np.linalg.norm(g_float) / np.linalg.norm(w)
        assert cos > 0.98, cos
    rows = [r.memory_row for r in pre.segments]
    assert not np.array_equal(rows[1], rows[2])            # the recall moves with the memories


@pytest.mark.parametrize("recall_scale, residual", [("none", False), ("scalar", False), ("diagonal", False),
                                                     ("diagonal", True)])
@pytest.mark.parametrize("rotated", [False, True])
def test_hardware_fold_equals_the_float_recall(rotated, recall_scale, residual):
    """W_q' = W_q G, W_k' = W_k G, W_p = R V G (hardware basis, V the learned recall scale) against the
    PyTorch recall in the float basis, times the recall scale (plus P_0 with HMT.RecallResidual), followed
    by the backbone's input map (fp32 tolerance). W_p is in the image exactly when it is not the identity."""
    from brevitas_models.hmt.basis import BackboneBasis
    from tests.helpers import tiny_float_model

    model = tiny_float_model(rotated)
    norm = tiny_weights().state_dict["model.norm.weight"]
    params = random_params(seed=3, recall_scale=recall_scale, recall_residual=residual)
    hw = hardware_params(params, model, norm)
    projects = rotated or recall_scale != "none"
    assert hw.projects_recall == projects and hw.recall_residual == residual
    back = HardwareHMTParams.from_image(hw.image(), 96, projects, residual)
    assert np.array_equal(back.w_k, hw.w_k) and (back.w_p is None) == (not projects)
    if projects:
        assert np.array_equal(back.w_p, hw.w_p)
    basis = BackboneBasis(model, norm)
    rng = np.random.default_rng(0)
    u = rng.standard_normal((4, 96)).astype(np.float32)           # hardware states: S, then 3 memories
    keys = np.stack([hw.w_k.astype(np.float64) @ m for m in u[1:]]).astype(np.float32)
    got = memory_recall(hw.w_q, u[0], keys, u[1:], 3)
    if projects:
        got = (hw.w_p.astype(np.float64) @ got).astype(np.float32)
    if residual:
        got = hw.initial_row + got
    f = basis.from_post_norm(torch.from_numpy(u))                 # float-basis S and memories
    k_f = f[1:] @ params.w_k.detach().t()
    p_float = recall(f[:1], k_f[None], f[1:][None], torch.ones(3, dtype=torch.bool), params.w_q.detach())
    want = basis.to_model(params.recall_output(p_float))[0].detach().numpy()
    if recall_scale != "none" and not residual:                   # the scale is really applied
        unscaled = basis.to_model(p_float)[0].detach().numpy()
        assert np.abs(want - unscaled).max() > 0.5 * np.abs(unscaled).max()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    np.testing.assert_allclose(hw.summary_row, basis.to_model(params.summary_token.detach()[None])[0].numpy(),
                               rtol=1e-5, atol=1e-6)


def test_segment_layouts():
    lay = segment_layouts(40, block=18, summary_tokens=9, sensory_tokens=4)
    assert len(lay) == 3 and [x.push for x in lay] == [True, True, False]
    assert lay[0].summary is None and lay[0].main == [ROW_MEMORY] + list(range(18)) + [ROW_MEMORY]
    assert lay[1].summary == [ROW_SUMMARY] + list(range(18, 27)) + [ROW_SUMMARY]
    assert lay[1].main == [ROW_MEMORY] + list(range(14, 18)) + list(range(18, 36)) + [ROW_MEMORY]
    assert len(lay[1].main) == 24                                  # L = 2 + k + block
    assert lay[2].summary == [ROW_SUMMARY, 36, 37, 38, 39, ROW_SUMMARY]     # a short last block
    assert lay[2].main == [ROW_MEMORY] + list(range(32, 40))


@pytest.mark.parametrize("over, key", [({"SegmentLength": 40}, "HMT.SegmentLength"),
                                       ({"MemorySlots": 30000}, "HMT.MemorySlots")])
def test_build_names_the_hmt_limit(tmp_path, over, key):
    from flexllm_plugin.preflight import preflight
    cfg = load_config(write_hmt_config(tmp_path, **over))
    with pytest.raises(ConfigError, match=key):
        preflight(cfg)


def test_host_drives_the_segments_on_the_fake_runtime(hmt_project, tmp_path):
    """host/host.cpp of the HMT project, built by its Makefile against tests/xrt_stub: one prefill run per
    segment with that segment's rows and scalars (n_tokens, n_summary, hmt_segment, hmt_push), the memory
    ring bound to the same bo in every run, then decode from the last segment's position."""
    import json
    import os
    import shutil
    import struct
    import subprocess
    from pathlib import Path

    if shutil.which("g++") is None or shutil.which("make") is None:
        pytest.skip("needs g++ and make")
    from brevitas_models.hmt.golden_segments import segment_layouts
    stub = Path(__file__).resolve().parent / "xrt_stub"
    xrt = tmp_path / "xrt"
    (xrt / "lib").mkdir(parents=True)
    (xrt / "include").symlink_to(stub)
    subprocess.run(["g++", "-std=c++17", "-O0", "-c", f"-I{stub}", str(stub / "xrt_stub.cpp"), "-o",
                    str(xrt / "stub.o")], check=True)
    subprocess.run(["ar", "rcs", str(xrt / "lib" / "libxrt_coreutil.a"), str(xrt / "stub.o")], check=True)
    make = subprocess.run(["make", "host", f"XILINX_XRT={xrt}", "HOST_CXXFLAGS=-std=c++17 -O0 -Wall -Wextra -Werror"],
                          cwd=hmt_project, capture_output=True, text=True, timeout=300)
    assert make.returncode == 0, make.stdout + make.stderr
    info = json.loads((hmt_project / "flexllm_build.json").read_text())["project"]
    pre, dec = info["kernels"]
    arg = {k["name"]: {p["name"]: i for i, p in enumerate(k["ports"])} for k in (pre, dec)}
    for stage in ("prefill", "decode"):
        (tmp_path / f"{stage}.xclbin").write_bytes(b"xclbin2\0")
    prompt = list(range(3, 43))                        # 40 tokens: 3 segments of 18-token blocks
    log = tmp_path / "xrt.log"
    env = dict(os.environ, XRT_STUB_WRITES=f"{pre['name']}:{arg[pre['name']]['next_token']}:5",
               XRT_STUB_LOG=str(log))
    r = subprocess.run([str(hmt_project / "build" / "host"), str(tmp_path / "prefill.xclbin"),
                        str(tmp_path / "decode.xclbin"), str(hmt_project), "--tokens", " ".join(map(str, prompt)),
                        "--max-new-tokens", "3"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = [line.split() for line in log.read_text().splitlines()]
    layouts = segment_layouts(len(prompt), 18, 9, 4, prompt)
    assert f"HMT: 3 segments, KV cache of {len(layouts[-1].main)} positions" in r.stdout     # [P, 4 sensory, 4]
    assert [l[1] for l in lines if l[0] == "start"] == [pre["name"]] * 3 + [dec["name"]]

    def scalars(kernel, name):       # the value of one scalar argument at every set_arg, in order
        return [struct.unpack("<i", bytes.fromhex(l[5]))[0] for l in lines
                if l[0] == "set_arg" and l[1] == kernel and int(l[2]) == arg[kernel][name]]
    assert scalars(pre["name"], "n_tokens") == [len(x.main) for x in layouts]
    assert scalars(pre["name"], "n_summary") == [len(x.summary or []) for x in layouts]
    assert scalars(pre["name"], "hmt_segment") == [0, 1, 2]
    assert scalars(pre["name"], "hmt_push") == [1, 1, 0]
    assert scalars(dec["name"], "position") == [len(layouts[-1].main)]
    rings = {l[4] for l in lines if l[0] == "set_arg" and l[1] == pre["name"] and int(l[2]) == arg[pre["name"]]["hmt_ring"]}
    assert len(rings) == 1                             # the memory ring stays on the card between segments
