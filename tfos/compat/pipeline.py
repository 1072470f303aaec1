"""TensorFlowOnSpark's ``pipeline`` module: :mod:`tfos.pipeline` (``TFEstimator``, ``TFModel``,
the ``Has*`` params), imported when this module is.

Names are looked up in :mod:`tfos.pipeline` on use, so whatever it defines is here too.
"""

from __future__ import annotations

import importlib


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(importlib.import_module("tfos.pipeline"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(dir(importlib.import_module("tfos.pipeline"))))
