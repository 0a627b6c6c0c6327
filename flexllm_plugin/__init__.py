"""flexllm: an hls4ml backend plugin (backend ``FlexLLM``) for Brevitas-quantized Llama models.

hls4ml discovers the plugin through the ``hls4ml.backends`` entry point (``pyproject.toml``), which
names :func:`register`. Importing this package does not import hls4ml or torch.
"""

import brevitas_models  # noqa: F401,E402  (chooses the OpenMP wait policy before anything imports torch)

__all__ = ["register"]


def register(register_backend, register_writer):
    """hls4ml plugin entry point: register the FlexLLM writer, then the FlexLLM backend (idempotent)."""
    from .backend.registration import register as _register

    _register(register_backend, register_writer)
