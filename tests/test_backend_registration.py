"""The FlexLLM backend registers through hls4ml's plugin loader; stock backends keep working."""

import os
import subprocess
import sys

import numpy as np
import pytest


def _run(code, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_entry_point_registers_backend_writer_layers_and_handlers():
    # a fresh interpreter: only `import hls4ml`, nothing from flexllm imported by the user
    code = ("import hls4ml\n"
            "from hls4ml.backends import get_available_backends, get_backend\n"
            "from hls4ml.writer.writers import writer_map\n"
            "from hls4ml.converters.onnx_to_hls import layer_handlers\n"
            "from hls4ml.model.layers import layer_map\n"
            "b = get_backend('FlexLLM')\n"
            "print(type(b).__name__, type(b).__mro__[1].__name__, 'FlexLLM' in writer_map)\n"
            "print(sorted(k for k in ('RMSNorm','QuantLinear','QuantAttention','RoPE','Embedding') if k in layer_handlers))\n"
            "print('FlexQuantLinear' in layer_map, 'vitis' in get_available_backends())\n")
    r = _run(code)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()[-3:]
    assert lines[0] == "FlexLLMBackend VitisBackend True"
    assert lines[1] == "['Embedding', 'QuantAttention', 'QuantLinear', 'RMSNorm', 'RoPE']"
    assert lines[2] == "True True"
    assert "WARNING" not in r.stdout


def test_env_var_and_entry_point_together_register_once():
    r = _run("import hls4ml\nfrom hls4ml.backends import get_available_backends\n"
             "print(get_available_backends().count('flexllm'))",
             {"HLS4ML_BACKEND_PLUGINS": "flexllm_plugin"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "1"
    assert "WARNING" not in r.stdout


def test_register_twice_is_harmless():
    import hls4ml  # noqa: F401
    from hls4ml.backends import get_backend
    from hls4ml.backends.backend import register_backend
    from hls4ml.writer.writers import register_writer

    import flexllm_plugin
    from flexllm_plugin.backend.registration import ensure_registered

    before = get_backend("FlexLLM")
    flexllm_plugin.register(register_backend, register_writer)
    ensure_registered()
    ensure_registered()
    assert get_backend("FlexLLM") is before


def test_initial_config_defaults_to_u280():
    import hls4ml
    cfg = hls4ml.backends.get_backend("FlexLLM").create_initial_config()
    assert cfg["Part"] == "xcu280-fsvh2892-2L-e" and cfg["IOType"] == "io_parallel"
    with pytest.raises(ValueError, match="io_stream"):
        hls4ml.backends.get_backend("FlexLLM").create_initial_config(io_type="io_stream")


def test_stock_vitis_mlp_still_converts_and_runs(tmp_path):
    import hls4ml
    from onnx import TensorProto, helper, numpy_helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.util.cleanup import cleanup_model

    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((8, 6)).astype(np.float32)
    b1 = rng.standard_normal(6).astype(np.float32)
    w2 = rng.standard_normal((6, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W1"], ["h"], name="fc1"),
         helper.make_node("Add", ["h", "b1"], ["hb"], name="bias1"),
         helper.make_node("Relu", ["hb"], ["r"], name="relu1"),
         helper.make_node("MatMul", ["r", "W2"], ["y"], name="fc2")],
        "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(b1, "b1"), numpy_helper.from_array(w2, "W2")])
    model = cleanup_model(ModelWrapper(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])))
    model = cleanup_model(model.transform(ConvertToChannelsLastAndClean()))
    cfg = hls4ml.utils.config_from_onnx_model(model, granularity="name", backend="Vitis",
                                              default_precision="fixed<32,16>")
    hm = hls4ml.converters.convert_from_onnx_model(model, output_dir=str(tmp_path / "prj"), backend="Vitis",
                                                   hls_config=cfg)
    hm.compile()
    x = rng.standard_normal((4, 8)).astype(np.float32)
    ref = np.maximum(x @ w1 + b1, 0) @ w2
    assert np.abs(hm.predict(x) - ref).max() < 2e-3     # fixed<32,16>: 2^-16 steps, 3 layers
