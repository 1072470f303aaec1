"""Each training node's share of a set of input files (InputMode.TENSORFLOW).

>>> def main_fun(args, ctx):
...     files = ctx.shard_files("hdfs:///data/train/part-*")   # this node's files
...     dataset = ctx.tfrecord_dataset(files)                  # hdfs://, s3://... too

Sharding is by file: the matching files are sorted by name and node ``worker_num``
of ``num_workers`` takes files ``worker_num, worker_num + num_workers, ...`` (the chief
is ``worker_num`` 0 when it trains). Every file goes to exactly one node. Keep the
files many and similar in size so the nodes get similar shares; under
MultiWorkerMirroredStrategy every node must still run the same number of steps.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence

from tfos.errors import ConfigError
from tfos.storage.filesystems import glob as storage_glob
from tfos.storage.filesystems import local_path


def unsharded(dataset):
    """``dataset`` with tf.distribute's auto-sharding off: its data already is this node's
    share (``ctx.dataset``, ``ctx.tfrecord_dataset``, ``ctx.shard_files``), and
    MultiWorkerMirroredStrategy would otherwise split it again, each node reading 1/n of
    its share."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options)


def list_files(pattern: str) -> list[str]:
    """The files matching a glob ``pattern``, sorted by name.

    Local paths (no scheme, or ``file://``) are listed with Python's ``glob`` and come
    back as plain local paths; remote ones (``hdfs://``, ``s3://``, ``gs://``,
    ``abfs://``...) through tfos's storage layer (:func:`tfos.storage.glob`), since
    TensorFlow 2.21 cannot list ``hdfs://`` or ``s3://``.
    """
    local = local_path(pattern)
    if local is None:
        return storage_glob(pattern)
    return sorted(path for path in glob.glob(local) if os.path.isfile(path))


def _without_file_scheme(path: str) -> str:
    """``file:///a/b`` -> ``/a/b``; remote URIs unchanged."""
    local = local_path(path)
    return path if local is None else local


def shard_files(files: str | Sequence[str], num_shards: int, index: int, allow_empty: bool = False) -> list[str]:
    """Shard ``index`` of ``num_shards`` of ``files`` (a glob pattern or a list of paths).

    The files are sorted by name, then shard ``i`` takes ``files[i::num_shards]``: the
    shards are disjoint and together hold every file.

    Args:
        files: a glob pattern (see :func:`list_files`) or the paths themselves
            (``file:`` URIs come back as plain local paths).
        num_shards: how many shards (training nodes).
        index: which shard, ``0 <= index < num_shards``.
        allow_empty: accept fewer files than shards (some shards empty). Off by default:
            a node without data under a synchronous strategy would block the others.

    Raises:
        ConfigError: a bad ``index``, no file matching, or fewer files than shards.
    """
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise ConfigError(f"num_shards must be a positive int; received: num_shards={num_shards!r}")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < num_shards:
        raise ConfigError(f"index must be in [0, {num_shards}); received: index={index!r} (ps and evaluator "
                          "nodes have worker_num -1 and no shard)")
    paths = list_files(files) if isinstance(files, str) else sorted(_without_file_scheme(f) for f in files)
    if not paths:
        raise ConfigError(f"no file matches {files!r}; check the path (relative paths resolve against "
                          "the executor's working directory or fs.defaultFS) and the pattern")
    if len(paths) < num_shards and not allow_empty:
        raise ConfigError(
            f"{len(paths)} file(s) cannot be sharded {num_shards} ways by file: shard {index} would get "
            f"{len(paths[index::num_shards])}; write at least {num_shards} files (e.g. df.repartition"
            f"({num_shards}) before save_as_tfrecords), shard by record instead (tf.data "
            "AutoShardPolicy.DATA), or pass allow_empty=True"
        )
    return paths[index::num_shards]


__all__ = ["list_files", "shard_files"]
