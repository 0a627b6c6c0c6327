"""Progress bars for the long loops (calibration, perplexity, export, conversion, C simulation).

One switch for the whole process: :func:`set_enabled` (the ``flexllm`` CLI turns bars off with
``--quiet`` or ``--json``). Bars go to stderr through tqdm (counts, rate, time left); with bars off,
:func:`bar` returns a no-op object with the same ``update`` / ``close`` / ``set_postfix_str`` methods.
"""

from __future__ import annotations

import sys

_ENABLED = False


def set_enabled(on: bool) -> None:
    global _ENABLED
    _ENABLED = bool(on)


def enabled() -> bool:
    return _ENABLED


class _NoBar:
    def update(self, n=1):
        pass

    def set_postfix_str(self, s="", refresh=True):
        pass

    def set_description_str(self, s="", refresh=True):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def bar(total: int, desc: str, unit: str = "it"):
    """A progress bar of ``total`` steps (tqdm on stderr), or a no-op when bars are off."""
    if not _ENABLED:
        return _NoBar()
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=True,
                bar_format="{desc}: {n_fmt}/{total_fmt} {unit} |{bar}| {elapsed}<{remaining}{postfix}")
