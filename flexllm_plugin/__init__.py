"""flexllm: an hls4ml backend plugin (backend ``FlexLLM``) for Brevitas-quantized Llama models.

hls4ml discovers the plugin through the ``hls4ml.backends`` entry point (``pyproject.toml``), which
names :func:`register`. Importing this package does not import hls4ml or torch.
"""

import os

# OpenMP threads that wait for work sleep instead of spinning. libgomp reads this once, when torch loads it,
# so it is set before anything imports torch (a value the user set wins). On a 2-core machine with one
# other busy process, torch's 2 spinning threads ran the calibration's small steps about 3x slower than
# sleeping ones (49 s against 18 s of wall time for the same loop; 1 thread: 20 s).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__all__ = ["register"]


def register(register_backend, register_writer):
    """hls4ml plugin entry point: register the FlexLLM writer, then the FlexLLM backend (idempotent)."""
    from .backend.registration import register as _register

    _register(register_backend, register_writer)
