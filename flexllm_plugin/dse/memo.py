"""Memoized unit models for the search.

The cost model's units (linear engine, attention unit, element-wise units, sampler) are frozen dataclasses
whose methods are pure functions of their fields and arguments. A search evaluates the same unit with the
same arguments many times (every layer of a pass, every candidate sharing the unit's lanes), so
:func:`memoize_units` swaps each unit of a StageModel for a proxy that caches its method results in one
table keyed by (unit, method, arguments). The StageModel's own composition code runs unchanged.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, Tuple

_CACHE: Dict[Tuple, Any] = {}
UNIT_FIELDS = ("engine", "attention", "units", "sampler")


class CachedUnit:
    def __init__(self, unit):
        object.__setattr__(self, "_unit", unit)

    def __getattr__(self, name):
        attr = getattr(self._unit, name)
        if not callable(attr):
            return attr
        unit = self._unit

        def call(*args, **kwargs):
            key = (unit, name, args, tuple(sorted(kwargs.items())))
            try:
                hit = _CACHE[key]
            except TypeError:                     # unhashable argument: no caching
                return attr(*args, **kwargs)
            except KeyError:
                hit = _CACHE[key] = attr(*args, **kwargs)
            return copy.copy(hit)                 # callers may update the Counter / dict they get
        return call


def memoize_units(model):
    """The same StageModel with its unit models cached (in place; returns the model)."""
    for f in UNIT_FIELDS:
        unit = getattr(model, f, None)
        if unit is not None and not isinstance(unit, CachedUnit):
            setattr(model, f, CachedUnit(unit))
    return model


def clear_cache() -> None:
    _CACHE.clear()


def cache_size() -> int:
    return len(_CACHE)
