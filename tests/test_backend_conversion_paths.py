"""Conversion paths into the FlexLLM backend: hls4ml YAML config, the convert_stage helper with lane
counts that do not divide the sizes, and the clear errors for graphs the backend cannot implement."""

import numpy as np
import onnx
import pytest
import torch
import yaml
from onnx import helper

from brevitas_models.export import export_stage
from helpers import text_tokens, tiny_model


@pytest.fixture(scope="module")
def prefill_export(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("prefill")
    return export_stage(tiny_model("flexllm-w4a4"), "prefill", out, text_tokens()[:64], seq_len=8, layers=1)


def test_hls4ml_yaml_config(prefill_export, tmp_path):
    import hls4ml

    from flexllm_plugin.frontend import fuse_llama

    fused_path = tmp_path / "fused.onnx"
    onnx.save(fuse_llama(prefill_export["onnx"]).model, fused_path)
    cfg = {"OnnxModel": str(fused_path), "Backend": "FlexLLM", "OutputDir": str(tmp_path / "prj"),
           "ProjectName": "yaml_prj", "Part": "xcu280-fsvh2892-2L-e", "ClockPeriod": 3.33, "IOType": "io_parallel",
           "HLSConfig": {"Model": {"Precision": "float", "ReuseFactor": 1}}}
    (tmp_path / "cfg.yml").write_text(yaml.safe_dump(cfg))
    hm = hls4ml.converters.convert_from_config(str(tmp_path / "cfg.yml"))
    hm.compile()
    ref = np.load(prefill_export["reference"])
    out = hm.predict(ref["input_ids"])
    assert np.abs(out["logits"] - ref["logits"]).max() / np.abs(ref["logits"]).max() < 1e-4


def test_odd_lane_counts_give_identical_results(prefill_export, tmp_path):
    """Lanes that divide nothing (3 tokens, 14 outputs (a multiple of the 2 default weight ports), 7 inputs,
    3 keys) must not change a single bit."""
    from flexllm_plugin.convert import convert_stage

    ref = np.load(prefill_export["reference"])
    outs = []
    for name, lanes in (("a", {}), ("b", {"TokenLanes": 3, "PrefillOutLanes": 14, "PrefillInLanes": 7,
                                           "KeyLanes": 3, "HeadLanes": 2})):
        hm = convert_stage(prefill_export["onnx"], tmp_path / name, project_name=f"lanes_{name}", **lanes)
        hm.compile()
        outs.append(hm.predict(ref["input_ids"], return_codes=True))
    assert "linear_config<MAX_TOKENS, WIDTH, 512, 3, 14, 7," in (tmp_path / "b" / "firmware" / "lanes_b_parameters.h").read_text()
    for key in outs[0]:
        np.testing.assert_array_equal(outs[0][key], outs[1][key])
    with pytest.raises(ValueError, match="unknown lane keys"):
        convert_stage(prefill_export["onnx"], tmp_path / "c", Lanes=4)


def test_unfused_graph_is_rejected_with_node_names(prefill_export, tmp_path):
    from flexllm_plugin.convert import convert_stage
    from flexllm_plugin.frontend import UnsupportedNodeError

    model = onnx.load(prefill_export["onnx"])
    logits = model.graph.output[0].name
    prod = next(n for n in model.graph.node if logits in n.output)
    prod.output[0] = "pre_erf"
    model.graph.node.append(helper.make_node("Erf", ["pre_erf"], [logits], name="/extra/Erf"))
    with pytest.raises(UnsupportedNodeError, match=r"node '/extra/Erf' \(op Erf\)"):
        convert_stage(model, tmp_path / "prj")
    assert not (tmp_path / "prj").exists()


def test_stock_layer_in_a_fused_graph_is_rejected(prefill_export, tmp_path):
    """A node that hls4ml itself can parse (Relu) must not slip into the FlexLLM kernel."""
    import hls4ml

    from flexllm_plugin.backend.passes.validate_flexllm_graph import UnsupportedLayerError
    from flexllm_plugin.frontend import fuse_llama

    fused = fuse_llama(prefill_export["onnx"]).model
    logits = fused.graph.output[0].name
    prod = next(n for n in fused.graph.node if logits in n.output)
    prod.output[0] = "pre_relu"
    fused.graph.value_info.append(helper.make_tensor_value_info("pre_relu", onnx.TensorProto.FLOAT, [1, 512]))
    fused.graph.node.append(helper.make_node("Relu", ["pre_relu"], [logits], name="/extra/Relu"))
    with pytest.raises(UnsupportedLayerError, match=r"layer '/extra/Relu' \(class Activation\)"):
        hls4ml.converters.convert_from_onnx_model(fused, output_dir=str(tmp_path / "prj"), backend="FlexLLM")
    assert not (tmp_path / "prj").exists()


def test_attention_without_static_quantizers_is_rejected(tmp_path):
    """w8a8 keeps attention in fp32: the FlexLLM attention unit (int8 Q/K/V, uint8 P) cannot run it."""
    from flexllm_plugin.converters.onnx_handlers import HandlerError
    from flexllm_plugin.convert import convert_stage

    info = export_stage(tiny_model("w8a8", rotation="none"), "decode", tmp_path / "q", text_tokens()[:64],
                        seq_len=7, layers=1)
    with pytest.raises(HandlerError, match=r"QuantAttention.*static scales"):
        convert_stage(info["onnx"], tmp_path / "prj")
