"""TensorFlowOnSpark's ``pipeline`` module: :mod:`tfos.pipeline` (``TFEstimator``, ``TFModel``,
the ``Has*`` params), imported when this module is.

Names are looked up in :mod:`tfos.pipeline` on use, so whatever it defines is here too;
``TFEstimator`` is its subclass that trains under tf-keras unless the script chose
(:mod:`tfos.compat.keras_default`), as the Keras 2 scripts that come through here need.
"""

from __future__ import annotations

import importlib

from tfos.compat.keras_default import keras_option, prefer_tf_keras_on_the_driver
from tfos.pipeline import TFEstimator as _TFEstimator

prefer_tf_keras_on_the_driver()


class TFEstimator(_TFEstimator):
    """:class:`tfos.pipeline.TFEstimator` whose nodes run under tf-keras unless the script chose."""

    def _run_options(self, sc) -> dict:
        return {"keras": keras_option(sc, {})}


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(importlib.import_module("tfos.pipeline"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(dir(importlib.import_module("tfos.pipeline"))))
