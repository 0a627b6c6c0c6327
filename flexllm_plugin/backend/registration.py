"""Registration of the FlexLLM backend, its writer, layer classes and ONNX handlers with hls4ml.

hls4ml calls :func:`register` (through the ``hls4ml.backends`` entry point or the
``HLS4ML_BACKEND_PLUGINS`` environment variable) while ``hls4ml.converters`` is still being imported,
so the ONNX handlers cannot be registered at that moment (importing the converters there is a circular
import). They are registered as soon as ``hls4ml.converters.onnx_to_hls`` has finished loading, by a
one-shot post-import hook on ``sys.meta_path``; :func:`ensure_registered` (called by the backend's
``create_initial_config`` and by the CLI) registers them directly when hls4ml is already imported.
Every step is idempotent: registering twice is harmless.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

BACKEND_NAME = "FlexLLM"
_ONNX_MODULE = "hls4ml.converters.onnx_to_hls"


def register_layers() -> None:
    from hls4ml.model.layers import layer_map, register_layer

    from . import layers

    for name, cls in layers.LAYER_CLASSES.items():
        if layer_map.get(name) is not cls:
            register_layer(name, cls)


def register_onnx_handlers() -> None:
    """Register one ONNX handler per fused flexllm op (skipping names hls4ml already maps to ours)."""
    # the package re-exports a *function* named onnx_to_hls: fetch the module itself
    onnx_to_hls = importlib.import_module(_ONNX_MODULE)

    from ..converters.onnx_handlers import ONNX_HANDLERS

    from ..converters.routes import install as install_routes

    register_layers()
    install_routes()          # YAML route defaults, unfused graphs fused (converters/routes.py)
    for op_type, fn in ONNX_HANDLERS.items():
        current = onnx_to_hls.layer_handlers.get(op_type)
        if current is fn:
            continue
        if current is not None:
            raise RuntimeError(f"ONNX op type {op_type!r} already has an hls4ml handler ({current!r}); "
                               "flexllm cannot register its own")
        onnx_to_hls.register_onnx_layer_handler(op_type, fn)


class _AfterImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Run a callback right after one module finished executing (one-shot meta path hook)."""

    def __init__(self, module_name, callback):
        self.module_name, self.callback, self._spec = module_name, callback, None

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.module_name or self._spec is not None:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        self._spec, self._inner = spec, spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        self.callback()


def _module_ready(name: str) -> bool:
    mod = sys.modules.get(name)
    spec = getattr(mod, "__spec__", None)
    return mod is not None and not getattr(spec, "_initializing", False) and hasattr(mod, "layer_handlers")


def _schedule_onnx_handlers() -> None:
    if _module_ready(_ONNX_MODULE):
        register_onnx_handlers()
    elif not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(_ONNX_MODULE, register_onnx_handlers))


def register(register_backend, register_writer) -> None:
    """Writer first, then the backend (hls4ml 1.3 looks the writer up when the backend is created)."""
    from hls4ml.backends.backend import backend_map
    from hls4ml.writer.writers import writer_map

    from .flexllm_backend import FlexLLMBackend
    from .writer import FlexLLMWriter

    register_layers()
    if BACKEND_NAME not in writer_map:
        register_writer(BACKEND_NAME, FlexLLMWriter)
    if BACKEND_NAME.lower() not in backend_map:
        register_backend(BACKEND_NAME, FlexLLMBackend)
    _schedule_onnx_handlers()


def ensure_registered() -> None:
    """Make sure backend, writer, layers and ONNX handlers are registered (call after ``import hls4ml``)."""
    import hls4ml  # noqa: F401  (runs the plugin loader)
    from hls4ml.backends.backend import register_backend
    from hls4ml.writer.writers import register_writer

    register(register_backend, register_writer)
    register_onnx_handlers()
