"""Small lookups on a FlexLLM hls4ml model graph (shared by the passes, templates, writer, predict)."""

from __future__ import annotations

from typing import List


def layers_of(model, class_name: str) -> List:
    """The layers of one class, in graph order."""
    return [layer for layer in model.get_layers() if layer.class_name == class_name]


def producer(model, name: str):
    """The layer whose outputs include tensor ``name``."""
    for layer in model.get_layers():
        if name in layer.outputs:
            return layer
    raise ValueError(f"no layer produces '{name}'")


def consumers(model, name: str) -> List:
    """The layers that read tensor ``name``."""
    return [layer for layer in model.get_layers() if name in layer.inputs]
