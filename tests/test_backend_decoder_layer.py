"""One decoder layer through the whole plugin, both stages: QONNX export -> fuse_llama -> hls4ml
``convert_from_onnx_model(backend='FlexLLM')`` -> ``compile()`` (C simulation of the exact kernel
sources) -> ``predict()``, against the bit-true golden model (bit-exact) and the Brevitas model (close)."""

import numpy as np
import pytest
import torch

from brevitas_models.export import export_stage, truncated_model
from brevitas_models.golden import GoldenModel
from helpers import text_tokens, tiny_model

PREFILL_L, DECODE_P = 8, 7      # decode: 7 cached entries + the new token


@pytest.fixture(scope="module", params=["uint4_asym", "int8"])
def preset_model(request):
    """flexllm-w4a4 (uint4 asymmetric per-token inputs) and its int8-input variant."""
    torch.set_num_threads(1)
    return request.param, tiny_model("flexllm-w4a4", input_quant=request.param)


def _convert(model, stage, seq_len, tmp, layers=1):
    import hls4ml

    from flexllm_plugin.frontend import fuse_llama

    info = export_stage(model, stage, tmp / stage / "qonnx", text_tokens()[:64], seq_len=seq_len, layers=layers)
    fused = fuse_llama(info["onnx"])
    hm = hls4ml.converters.convert_from_onnx_model(
        fused.model, output_dir=str(tmp / stage / "prj"), project_name=f"tiny_{stage}", backend="FlexLLM",
        part="xcu280-fsvh2892-2L-e")
    hm.compile()
    ref = np.load(info["reference"])
    return info, hm, ref


def _bits(a):
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def _golden_run(model, n_layers, stage, seq_len):
    """Golden logits (last token) and trace of the exported sample: prefill of seq_len tokens, or a
    decode step at position seq_len after a prefill of seq_len tokens."""
    golden = GoldenModel.from_brevitas(truncated_model(model, n_layers))
    toks = text_tokens()[:64].numpy()
    if stage == "prefill":
        logits, _, trace = golden.prefill(toks[:seq_len], trace=True)
        return logits.reshape(seq_len, -1)[-1], trace
    _, kv, _ = golden.prefill(toks[:seq_len])
    logits, _, trace = golden.decode(int(toks[seq_len]), seq_len, kv, trace=True)
    return logits, trace


@pytest.mark.parametrize("stage", ["prefill", "decode"])
def test_decoder_layer_matches_golden_bit_exactly(preset_model, stage, tmp_path):
    preset, model = preset_model
    seq_len = PREFILL_L if stage == "prefill" else DECODE_P
    info, hm, ref = _convert(model, stage, seq_len, tmp_path)
    out = hm.predict([ref[n] for n in info["input_names"]], return_codes=True)

    logits, trace = _golden_run(model, 1, stage, seq_len)
    key_name, value_name = info["output_names"][1:3]
    # integer tensors bit-exact: the new KV-cache entries (int8 codes of K after RoPE and of V)
    np.testing.assert_array_equal(out[key_name + ".codes"], trace["layers.0.self_attn.k_int"])
    np.testing.assert_array_equal(out[value_name + ".codes"], trace["layers.0.self_attn.v_int"])
    # fp32 logits bit-exact (same operation order as the golden model: docs/numerics.md)
    np.testing.assert_array_equal(_bits(out["logits"].reshape(-1)), _bits(np.asarray(logits).reshape(-1)))
    # and close to the Brevitas fake-quant model (PyTorch reference of the export)
    rel = np.abs(out["logits"] - ref["logits"]).max() / np.abs(ref["logits"]).max()
    assert rel < 1e-4, f"{preset} {stage}: logits rel err {rel:.2e} vs Brevitas"
    kv_rel = np.abs(out[key_name] - ref[key_name]).max() / np.abs(ref[key_name]).max()
    assert kv_rel < 1e-4


def test_project_layout_and_manifest(preset_model, tmp_path):
    from flexllm_plugin.backend.memory import ManifestError, load_images

    _, model = preset_model
    _, hm, _ = _convert(model, "decode", DECODE_P, tmp_path)
    prj = tmp_path / "decode" / "prj"
    src = (prj / "firmware" / "tiny_decode.cpp").read_text()
    core = (prj / "firmware" / "tiny_decode_core.h").read_text()
    assert "#pragma HLS INTERFACE m_axi port=w0" in src and "stage_pass(" in src
    # one call site of every shared unit (temporal reuse: the schedule tables carry the calls)
    for unit in ("flexllm::linear_mac<ENGINE>", "flexllm::attention<ATTENTION>", "flexllm::rmsnorm_row<",
                 "flexllm::quantize_tokens<", "linear_engine(codes"):
        assert core.count(unit) == 1, unit
    headers = {p.name for p in (prj / "firmware" / "flexllm").glob("*.h")}
    assert {"flexllm_linear.h", "flexllm_attention.h", "flexllm_rmsnorm.h"} <= headers
    images = load_images(prj / "weights")
    assert images["wmem_p0"].dtype == np.uint8 and images["fmem"].dtype == np.float32
    # a corrupted image is detected by the manifest check
    data = (prj / "weights" / "fmem.bin").read_bytes()
    (prj / "weights" / "fmem.bin").write_bytes(data[:-4] + b"\0\0\0\1")
    with pytest.raises(ManifestError, match="fmem"):
        load_images(prj / "weights")


def test_predict_rejects_context_beyond_the_cache(preset_model, tmp_path):
    _, model = preset_model
    info, hm, ref = _convert(model, "prefill", PREFILL_L, tmp_path)
    ids = ref[info["input_names"][0]]
    with pytest.raises(ValueError, match="KV cache"):
        hm.predict({"input_ids": ids}, position=4)      # positions 4..11 > 8 (prefill RoPE table)


@pytest.mark.parametrize("stage", ["prefill", "decode"])
def test_two_layer_graph_folds_into_one_block(stage, tmp_path):
    """Temporal reuse: a 2-layer graph becomes ONE block in a layer loop; both layers' KV entries and the
    logits stay bit-exact, and the kernel source contains the block once."""
    torch.set_num_threads(1)
    model = tiny_model("flexllm-w4a4")
    seq_len = PREFILL_L if stage == "prefill" else DECODE_P
    info, hm, ref = _convert(model, stage, seq_len, tmp_path, layers=2)
    core = (tmp_path / stage / "prj" / "firmware" / f"tiny_{stage}_core.h").read_text()
    params = (tmp_path / stage / "prj" / "firmware" / f"tiny_{stage}_parameters.h").read_text()
    assert core.count("flexllm::attention<") == 1 and "BLOCK_STEPS = N_LAYERS * BLOCK_CALLS" in core
    assert params.count("flexllm::UNIT_ATTENTION") == 1          # one block: the layers are data
    assert "constexpr int N_LAYERS = 2;" in (tmp_path / stage / "prj" / "firmware" / f"tiny_{stage}.h").read_text()
    out = hm.predict([ref[n] for n in info["input_names"]], return_codes=True)
    logits, trace = _golden_run(model, 2, stage, seq_len)
    np.testing.assert_array_equal(_bits(out["logits"].reshape(-1)), _bits(np.asarray(logits).reshape(-1)))
    for layer in (0, 1):
        key, value = info["output_names"][1 + 2 * layer: 3 + 2 * layer]
        np.testing.assert_array_equal(out[key + ".codes"], trace[f"layers.{layer}.self_attn.k_int"])
        np.testing.assert_array_equal(out[value + ".codes"], trace[f"layers.{layer}.self_attn.v_int"])
