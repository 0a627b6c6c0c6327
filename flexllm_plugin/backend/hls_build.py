"""``hm.build()`` of a FlexLLM stage: the Vitis HLS run of its kernel and the parsed report.

The stage's output directory holds ``firmware/<project>.cpp`` (the FlexLLM writer); the HLS script is
``hls/<project>.tcl`` from the project's template (``project/vitis_files.hls_tcl``, the same file ``make
hls`` runs in a ``flexllm build`` project), steps chosen through ``FLEXLLM_HLS_STEPS``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict

VITIS_HLS = "vitis_hls"
NOT_AVAILABLE = {"cosim": "RTL co-simulation of a FlexLLM kernel needs a test bench with its m_axi HBM ports; "
                          "none is generated (verify with flexllm verify: C simulation against the golden model)",
                 "validation": "needs cosim", "vsynth": "Vivado out-of-context synthesis is not scripted; the v++ "
                 "link of a flexllm build project (make xclbin) implements the kernel",
                 "fifo_opt": "FIFO depth optimisation runs in cosim"}


def vitis_missing_message(what: str) -> str:
    return (f"{what} needs AMD Vitis HLS, but `{VITIS_HLS}` is not on PATH. Install AMD Vitis (2022.2, the "
            "version FlexLLM targets; Vitis HLS is part of it) and run `source <Vitis install>/settings64.sh` "
            "so that vitis_hls is found. Without Vitis: hm.compile() / hm.predict() (C simulation with g++) "
            "and `flexllm build` + `flexllm verify` work.")


def stage_tcl(model) -> str:
    from ..project.spec import Kernel, ProjectSpec
    from ..project.vitis_files import hls_tcl

    name = model.config.get_project_name()
    clock_mhz = 1e3 / float(model.config.get_config_value("ClockPeriod"))
    kernel = Kernel(name=name, source=f"firmware/{name}.cpp", ports=[], clock_mhz=clock_mhz)
    spec = ProjectSpec(name=name, part=model.config.get_config_value("Part"), platform="", kernels=[kernel],
                       buffers=[], model={})
    return hls_tcl(spec, kernel)


def build_stage(backend, model, reset=False, csim=True, synth=True, cosim=False, validation=False, export=False,
                vsynth=False, fifo_opt=False, log_to_stdout=True) -> Dict:
    asked = {"cosim": cosim, "validation": validation, "vsynth": vsynth, "fifo_opt": fifo_opt}
    for key, on in asked.items():
        if on:
            raise ValueError(f"FlexLLM backend build({key}=True): not available: {NOT_AVAILABLE[key]}")
    steps = [s for s, on in (("synth", synth), ("export", export)) if on]
    if steps and shutil.which(VITIS_HLS) is None:
        raise RuntimeError(vitis_missing_message(f"hm.build({', '.join(f'{s}=True' for s in steps)})"))
    out = Path(model.config.get_output_dir())
    name = model.config.get_project_name()
    if not (out / "firmware" / f"{name}.cpp").is_file():
        raise FileNotFoundError(f"{out / 'firmware' / (name + '.cpp')}: the stage is not written; call hm.write() "
                                "(or hm.compile()) first")
    report: Dict = {}
    if csim:
        report["CSimLibrary"] = backend.compile(model)
    if not steps:
        return report
    tcl = out / "hls" / f"{name}.tcl"
    if reset or not tcl.is_file():
        tcl.parent.mkdir(exist_ok=True)
        tcl.write_text(stage_tcl(model))
    env = dict(os.environ, FLEXLLM_HLS_STEPS=" ".join(steps))
    log = None if log_to_stdout else open(out / "build_stdout.log", "w")
    try:
        ret = subprocess.run([VITIS_HLS, "-f", str(tcl.relative_to(out))], cwd=out, env=env, stdout=log,
                             stderr=subprocess.STDOUT if log else None)
    finally:
        if log:
            log.close()
    if ret.returncode != 0:
        raise RuntimeError(f"Vitis HLS failed for {name} (steps {' '.join(steps)}, exit {ret.returncode}); see "
                           f"{'the output above' if log_to_stdout else out / 'build_stdout.log'} and "
                           f"{out / 'hls' / (name + '_prj')}")
    from ..report.csynth import csynth_path, read_csynth_xml
    path = csynth_path(out, name)
    if path is None:
        raise RuntimeError(f"Vitis HLS ran for {name} but wrote no csynth report under {out / 'hls' / (name + '_prj')}")
    parsed = read_csynth_xml(path)
    report["CSynthesisReport"] = parsed["CSynthesisReport"]
    report["measured"] = parsed["measured"]
    if export:
        report["ExportedXO"] = str(out / "build" / "xo" / f"{name}.xo")
    return report
