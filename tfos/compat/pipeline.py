"""TensorFlowOnSpark's ``pipeline`` module: :mod:`tfos.pipeline` (``TFEstimator``, ``TFModel``,
the ``Has*`` params), imported when this module is.

Names are looked up in :mod:`tfos.pipeline` on use, so whatever it defines is here too;
``TFEstimator`` is its subclass that trains under tf-keras unless the script chose
(:mod:`tfos.compat.keras_default`), as the Keras 2 scripts that come through here need;
``Namespace`` and ``TFParams`` are TensorFlowOnSpark's args helpers, which its scripts use.
"""

from __future__ import annotations

import argparse
import copy
import importlib

from pyspark.ml.param import Params

from tfos.compat.keras_default import keras_option, prefer_tf_keras_on_the_driver
from tfos.errors import ConfigError
from tfos.pipeline import TFEstimator as _TFEstimator

prefer_tf_keras_on_the_driver()


class Namespace:
    """TensorFlowOnSpark's args holder: attributes from a dict, an ``argparse.Namespace`` or
    another ``Namespace``; or, from a list, ``argv`` (command-line style args).

    ``name in ns`` tests an attribute (an argv item for argv), iteration gives the names
    (the argv items), and two are equal when their attributes (argv) are.
    """

    argv = None

    def __init__(self, d):
        if isinstance(d, list):
            self.argv = d
        elif isinstance(d, dict):
            vars(self).update(d)
        elif isinstance(d, (argparse.Namespace, Namespace)):
            vars(self).update(vars(d))
        else:
            raise ConfigError(f"Namespace takes a dict, a list (argv), an argparse.Namespace or a Namespace; "
                              f"received: {type(d).__name__} {d!r}")

    def __iter__(self):
        return iter(self.argv if self.argv else list(vars(self)))

    def __contains__(self, name) -> bool:
        return name in (self.argv if self.argv else vars(self))

    def __eq__(self, other) -> bool:
        if self.argv:
            return self.argv == (other.argv if isinstance(other, Namespace) else other)
        return vars(self) == vars(other)

    __hash__ = None

    def __repr__(self) -> str:
        if self.argv:
            return repr(self.argv)
        return f"Namespace({', '.join(f'{k}={v!r}' for k, v in sorted(vars(self).items()))})"


class TFParams(Params):
    """TensorFlowOnSpark's mix-in: ``args`` (a Namespace) merged with the stage's params."""

    args = None

    def merge_args_params(self):
        """A copy of ``args`` with every param that has a value (set or default) added."""
        merged = copy.copy(self.args) if self.args is not None else Namespace({})
        for param in self.params:
            if self.isDefined(param):
                setattr(merged, param.name, self.getOrDefault(param))
        return merged


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
