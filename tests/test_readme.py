"""The README's hls4ml snippets run as written (from a directory holding build/tiny, as after
`flexllm build configs/tiny.yaml --out build/tiny`), and the hls4ml routes behave as documented."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _snippets():
    text = README.read_text()
    section = text[text.index("## Using it from hls4ml"):text.index("## Architecture")]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    from flexllm_plugin.config import load_config
    from flexllm_plugin.project.builder import build_project
    from flexllm_plugin.resources import config_path

    root = tmp_path_factory.mktemp("readme")
    build_project(load_config(config_path("tiny.yaml")), root / "build" / "tiny")
    return root


def test_readme_has_the_snippets():
    snippets = _snippets()
    assert len(snippets) == 2 and "convert_from_onnx_model" in snippets[0] and "convert_from_config" in snippets[1]


@pytest.mark.parametrize("index", [0, 1])
def test_readme_snippet_runs_as_written(workdir, monkeypatch, capsys, index):
    monkeypatch.chdir(workdir)
    exec(compile(_snippets()[index], f"README.md snippet {index}", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    if index == 0:
        err = float(re.search(r"max \|logit error\|: (\S+)", out).group(1))
        assert err < 1e-3
    else:
        assert "ModelGraph flexllm_stage" in out


def test_yaml_route_with_model_and_backend_alone(workdir, tmp_path):
    import hls4ml

    cfg = {"OnnxModel": str(workdir / "build/tiny/qonnx/decode/fused.onnx"), "Backend": "FlexLLM",
           "OutputDir": str(tmp_path / "prj")}
    hm = hls4ml.converters.convert_from_config(cfg)
    assert hm.config.get_config_value("Part") == "xcu280-fsvh2892-2L-e"


def test_raw_exported_graph_is_fused_by_the_route(workdir, tmp_path):
    import hls4ml

    from flexllm_plugin.backend.registration import ensure_registered

    ensure_registered()
    hm = hls4ml.converters.convert_from_onnx_model(str(workdir / "build/tiny/qonnx/decode/model.onnx"),
                                                   backend="FlexLLM", output_dir=str(tmp_path / "prj"))
    assert any(layer.class_name == "FlexAttention" for layer in hm.get_layers())
