"""TensorFlowOnSpark's ``TFParallel`` module over :func:`tfos.parallel_run`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tfos.parallel import parallel_run


def run(sc, map_fn: Callable[[Any, Any], Any], tf_args: Any, num_executors: int | None = None,
        use_barrier: bool = True, **options: Any) -> list:
    """Run ``map_fn(tf_args, ctx)`` as ``num_executors`` independent single-node instances.

    Blocks until all ended. Unlike TensorFlowOnSpark (which returned ``None``) it returns
    the instances' return values in index order; a failed instance raises
    :class:`tfos.ParallelRunError`. Extra ``options`` go to :func:`tfos.parallel_run`
    (``timeout``, ``env``, ``keras``...).
    """
    return parallel_run(sc, map_fn, tf_args, num_executors, use_barrier, **options)


__all__ = ["run"]
