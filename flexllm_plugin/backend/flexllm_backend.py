"""The FlexLLM hls4ml backend: a Vitis backend whose default flow targets the flexllm layer library.

It subclasses hls4ml's :class:`~hls4ml.backends.VitisBackend` (the stock Vitis flows stay registered
and untouched) and adds its own flows:

``flexllm:convert``          validate that every layer is a FlexLLM layer, drop constant layers,
                             fold head views and RoPE into attention, fold the decoder blocks (temporal reuse), size the
                             on-chip buffers, plan the external-memory images
``flexllm:apply_templates``  per-layer C++ (config structs and function calls, ``backend/passes/templates.py``)
``flexllm:ip``               (default) the two above
``flexllm:write``            ``make_stamp`` + the FlexLLM writer (kernel, parameter images, C-sim bridge)

``compile()`` builds the C simulation library from the exact kernel sources; ``predict()`` runs it
with an external-memory KV cache (see :mod:`flexllm_plugin.backend.simulation`).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from hls4ml.backends import VitisBackend, VivadoBackend
from hls4ml.model.flow import register_flow

U280_PART = "xcu280-fsvh2892-2L-e"
DEFAULT_CLOCK_NS = 3.33       # 300 MHz kernel clock


class FlexLLMBackend(VitisBackend):
    def __init__(self):
        super(VivadoBackend, self).__init__(name="FlexLLM")
        self._register_layer_attributes()
        self._register_flows()

    # ---- flows ------------------------------------------------------------------------------------
    def _register_flows(self):
        convert = register_flow("convert", ["flexllm:validate_flexllm_graph", "flexllm:remove_constant_layers",
                                            "flexllm:fold_head_views", "flexllm:fold_decoder_blocks",
                                            "flexllm:size_buffers", "flexllm:plan_memory", "flexllm:bind_units"],
                                backend=self.name)
        templates = register_flow("apply_templates", self._get_layer_templates, requires=[convert],
                                  backend=self.name)
        self._default_flow = register_flow("ip", None, requires=[convert, templates], backend=self.name)
        self._writer_flow = register_flow("write", ["make_stamp", "flexllm:write_hls"], requires=[self._default_flow],
                                          backend=self.name)

    def create_layer_class(self, layer_class):
        from hls4ml.model.layers import Input

        from .layers import FlexInput

        if layer_class is Input:
            layer_class = FlexInput
        return super().create_layer_class(layer_class)

    def get_default_flow(self):
        return self._default_flow

    def get_writer_flow(self):
        return self._writer_flow

    # ---- configuration ----------------------------------------------------------------------------
    def create_initial_config(self, part=U280_PART, clock_period=DEFAULT_CLOCK_NS, clock_uncertainty="27%",
                              io_type="io_parallel", max_context=None, lanes=None, flexllm=None, namespace=None,
                              **_):
        """Initial hls4ml configuration for a FlexLLM stage.

        Args:
            part: FPGA part (default the Alveo U280's ``xcu280-fsvh2892-2L-e``).
            clock_period: kernel clock period in ns (default 3.33, i.e. 300 MHz).
            io_type: only ``io_parallel`` (the kernels move tensors through on-chip buffers and m_axi).
            max_context: KV-cache capacity in tokens (default: the RoPE table length of the graph).
            lanes: engine parallelism (``flexllm_plugin.convert.LANE_KEYS``), e.g. ``{"OutLanes": 16}``.
            flexllm: further entries of the ``FlexLLM`` config section (the project builder passes
                ``LayerParams`` (golden per-layer parameters of all layers), ``RopeTables``, ``WeightPorts`` (default 2: the
                KV cache needs a K and a V buffer on weight-port channels)).
        """
        from .registration import ensure_registered

        ensure_registered()
        if io_type not in (None, "io_parallel"):
            raise ValueError(f"FlexLLM backend: IOType {io_type!r} is not supported (use io_parallel)")
        return {
            "Part": part or U280_PART,
            "ClockPeriod": clock_period or DEFAULT_CLOCK_NS,
            "ClockUncertainty": clock_uncertainty,
            "IOType": "io_parallel",
            "HLSConfig": {},
            "FlexLLM": {"MaxContext": max_context, **dict(lanes or {}), **dict(flexllm or {})},
            "WriterConfig": {"Namespace": namespace, "WriteWeightsTxt": False, "WriteTar": False},
        }

    # ---- C simulation -----------------------------------------------------------------------------
    def compile(self, model):
        """Build ``firmware/<project>-<stamp>.so`` (C simulation of the kernel sources) and return its path."""
        out = Path(model.config.get_output_dir())
        ret = subprocess.run(["bash", "build_lib.sh"], cwd=out, capture_output=True, text=True)
        if ret.returncode != 0:
            raise RuntimeError(f"C simulation build of project {model.config.get_project_name()!r} in {out} "
                               f"failed:\n{ret.stdout}\n{ret.stderr}")
        return str(out / "firmware" / f"{model.config.get_project_name()}-{model.config.get_config_value('Stamp')}.so")

    def predict(self, model, x, *args, **kwargs):
        from .simulation import predict

        return predict(model, x, *args, **kwargs)

    def build(self, model, reset=False, csim=True, synth=True, cosim=False, validation=False, export=False,
              vsynth=False, fifo_opt=False, log_to_stdout=True):
        """hls4ml's ``build()`` with the keywords of its Vitis backend: run the stage's Vitis HLS script and
        return the report dictionary (``CSynthesisReport`` as ``hls4ml.report.parse_vivado_report`` gives it).

        ``csim`` builds the C simulation library (``compile()``, g++: a bare stage has no HLS test bench; the
        whole-model C simulation is ``flexllm verify``); ``synth`` runs ``csynth_design`` and ``export``
        ``export_design -format xo`` through ``hls/<stage>.tcl`` in the stage's output directory (written
        from the project template when missing). ``cosim``, ``validation``, ``vsynth`` and ``fifo_opt`` are
        not available for FlexLLM kernels. Raises RuntimeError naming what to install when ``vitis_hls`` is
        not on PATH, before running anything.
        """
        from .hls_build import build_stage

        return build_stage(self, model, reset=reset, csim=csim, synth=synth, cosim=cosim, validation=validation,
                           export=export, vsynth=vsynth, fifo_opt=fifo_opt, log_to_stdout=log_to_stdout)
