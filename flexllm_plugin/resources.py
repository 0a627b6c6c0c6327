"""Locate the package data directories ``layers/`` (HLS library) and ``configs/`` (YAML presets).

In a wheel they are installed as ``flexllm_plugin.layers`` / ``flexllm_plugin.configs``; in an
editable install or a source checkout they are the top-level folders of the repository.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def data_dir(name: str) -> Path:
    if name not in ("layers", "configs"):
        raise ValueError(f"unknown package data directory {name!r}")
    try:
        spec = importlib.util.find_spec(f"flexllm_plugin.{name}")
    except ModuleNotFoundError:
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    local = Path(__file__).resolve().parent.parent / name
    if local.is_dir():
        return local
    raise FileNotFoundError(f"flexllm package data directory {name!r} not found (broken install?)")


def config_path(name: str) -> Path:
    """A shipped config by file name, e.g. ``config_path('tiny.yaml')``."""
    path = data_dir("configs") / name
    if not path.is_file():
        raise FileNotFoundError(f"no shipped config {name!r} in {path.parent}")
    return path
