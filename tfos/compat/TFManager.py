"""TensorFlowOnSpark's ``TFManager``: an internal tfos does not have.

TensorFlowOnSpark ran a ``multiprocessing`` manager per executor to hold the node's state
and feed queues; its ``ctx.mgr`` was that manager. tfos feeds each node over an
authenticated socket instead, and ``ctx.mgr`` is the node's context, so
``TFNode.DataFeed(ctx.mgr)`` works as before. Starting or connecting a manager yourself
(TensorFlowOnSpark's own tests did) has no tfos equivalent: these functions say so.
"""

from __future__ import annotations

from tfos.errors import ConfigError

_WHY = ("tfos has no per-executor TFManager: inside main_fun(args, ctx), ctx.mgr is the node's context and "
        "TFNode.DataFeed(ctx.mgr) reads the Spark feed; to try a feeding loop, run it under tfos.run on "
        "local-cluster[2,1,1024] (docs/porting.md)")


def start(authkey=None, queues=None, mode: str = "local"):
    """Refused: see the module docstring (raises :class:`~tfos.errors.ConfigError`)."""
    raise ConfigError(f"TFManager.start(...): {_WHY}")


def connect(address=None, authkey=None):
    """Refused: see the module docstring (raises :class:`~tfos.errors.ConfigError`)."""
    raise ConfigError(f"TFManager.connect(...): {_WHY}")


__all__ = ["connect", "start"]
