"""TFRecord files from any storage into ``tf.data``, at local-disk speed.

TensorFlow 2.21 cannot open ``s3://`` or ``hdfs://``. tfos stages: a few download
threads copy the files, in reading order and ahead of the reader, to the executor's
local disk, and ``tf.data.TFRecordDataset`` (TensorFlow's own C++ reader: CRC checks,
GZIP/ZLIB, ``buffer_size``) reads the local copies; ``num_parallel_reads`` interleaves
files exactly as ``TFRecordDataset`` does. A file is deleted as soon as the reader has
read it to the end, so disk use stays under ``max_stage_bytes`` (plus the files being
read); when every file fits in that budget they are kept instead, and later epochs read
them without downloading again.

Why staging and not streaming records through Python: a generator feeding tf.data
costs about 1.5 ms per element and holds the GIL per record, while whole-file copies
run in pyarrow's C++ with the GIL released and overlap with training, so the reader
sees local files almost all the time (docs/benchmarks.md has the figures).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import uuid
import weakref
from collections import deque
from concurrent import futures

from tfos.errors import StorageError
from tfos.storage.filesystems import download, is_remote, redact, resolve, storage_error

log = logging.getLogger(__name__)

#: default disk budget for staged files (per dataset); at least the files being read are kept
MAX_STAGE_BYTES = 2 << 30
#: parallel downloads
DOWNLOAD_THREADS = 4


def tfrecord_dataset(files, compression_type: str | None = None, buffer_size: int | None = None,
                     num_parallel_reads: int | None = None, stage_dir: str | None = None,
                     max_stage_bytes: int = MAX_STAGE_BYTES, auto_shard: bool = True):
    """A ``tf.data.Dataset`` of the serialized records in ``files`` (URIs or local paths).

    Same arguments and records, in the same order, as ``tf.data.TFRecordDataset(files,
    compression_type, buffer_size, num_parallel_reads)``. Local files are read in place;
    remote ones (``s3://``, ``hdfs://``, ``gs://``, ``abfs://``...) are staged to
    ``stage_dir`` (default: Spark's local dir, else the temp dir) under ``max_stage_bytes``.
    ``auto_shard=False`` turns tf.distribute's auto-sharding off (the files are this node's
    share already: :func:`tfos.sharding.unsharded`).

    Raises:
        StorageError: a file cannot be listed or downloaded (when the dataset is iterated,
            for downloads); the message names the file.
    """
    import tensorflow as tf

    paths = [files] if isinstance(files, str) else list(files)
    if not paths:
        raise StorageError("tfrecord_dataset(files): no files given")
    from tfos.sharding import unsharded

    if not any(is_remote(p) for p in paths):
        dataset = tf.data.TFRecordDataset(paths, compression_type, buffer_size, num_parallel_reads)
        return dataset if auto_shard else unsharded(dataset)
    stager = Stager(paths, stage_dir, max_stage_bytes, ahead=max(num_parallel_reads or 1, 1) + 1)
    local_paths = tf.data.Dataset.from_generator(stager.local_paths, output_signature=tf.TensorSpec((), tf.string))

    def read(path):
        return tf.data.TFRecordDataset(path, compression_type, buffer_size)

    def read_then_release(path):
        # runs once the file is read to its end: frees its disk (this Python generator slows
        # the read to about 0.7x, so only files that are deleted after reading pay it)
        release = tf.data.Dataset.from_generator(stager.release, args=(path,),
                                                 output_signature=tf.TensorSpec((), tf.string))
        return read(path).concatenate(release)

    reader = read if stager.keep else read_then_release
    if num_parallel_reads:
        dataset = local_paths.interleave(reader, cycle_length=num_parallel_reads,
                                         num_parallel_calls=num_parallel_reads, deterministic=True)
    else:
        dataset = local_paths.interleave(reader, cycle_length=1)
    if not auto_shard:
        dataset = unsharded(dataset)
    # set on the dataset this function made and returns, last: the stager (and its directory)
    # lives as long as the dataset does
    dataset._tfos_stager = stager
    return dataset


class Stager:
    """Copies remote files to a local directory ahead of the reader, within a disk budget."""

    def __init__(self, uris: list[str], stage_dir: str | None, max_bytes: int, ahead: int = 2):
        self.uris = list(uris)
        self.max_bytes = max_bytes
        self.ahead = max(ahead, 1)
        root = stage_dir or _default_stage_root()
        os.makedirs(root, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix="tfos-stage-", dir=root)
        self.sizes = [self._size(uri) for uri in self.uris]
        # every file fits: keep them after reading, so later epochs need no download
        self.keep = sum(self.sizes) <= max_bytes
        self._lock = threading.Condition()
        self._staged: dict[str, int] = {}  # local path -> bytes, of the files on disk
        self._kept: dict[int, str] = {}    # index -> local path (keep mode)
        self._pool = futures.ThreadPoolExecutor(max_workers=DOWNLOAD_THREADS, thread_name_prefix="tfos-stage")
        self._finalizer = weakref.finalize(self, _cleanup, self._pool, self.dir)
        log.info("staging %d remote file(s) (%.1f MB) to %s%s", len(self.uris), sum(self.sizes) / 1e6, self.dir,
                 " (kept for later epochs)" if self.keep else f" (at most {max_bytes / 1e6:.0f} MB at a time)")

    def local_paths(self):
        """One pass over the files: yields each file's local copy, in order, once it is whole."""
        pending: deque[tuple[int, futures.Future]] = deque()
        nxt = 0
        try:
            while nxt < len(self.uris) or pending:
                while nxt < len(self.uris) and self._room_for(nxt, len(pending)):
                    pending.append((nxt, self._submit(nxt)))
                    nxt += 1
                if not pending:  # over budget with nothing in flight: wait for a release
                    with self._lock:
                        self._lock.wait(0.5)
                    continue
                _, future = pending.popleft()
                yield future.result().encode()
        finally:
            for _, future in pending:
                future.cancel()

    def release(self, path: bytes):
        """Called (as a generator) when the reader reached the end of ``path``: frees its disk."""
        local = path.decode() if isinstance(path, bytes) else str(path)
        if not self.keep:
            with self._lock:
                self._staged.pop(local, None)
                self._lock.notify_all()
            try:
                os.remove(local)
            except FileNotFoundError:
                pass
        return iter(())

    def close(self) -> None:
        """Stop downloading and remove the staged files."""
        self._finalizer()

    # ------------------------------------------------------------------ internals

    def _room_for(self, index: int, in_flight: int) -> bool:
        if self.keep:
            return in_flight < self.ahead + DOWNLOAD_THREADS
        with self._lock:
            used = sum(self._staged.values())
            # the reader always gets `ahead` files, whatever their size
            return in_flight < self.ahead or used + self.sizes[index] <= self.max_bytes

    def _submit(self, index: int) -> futures.Future:
        if self.keep and index in self._kept:
            done: futures.Future = futures.Future()
            done.set_result(self._kept[index])
            return done
        local = os.path.join(self.dir, f"{index:06d}-{uuid.uuid4().hex[:8]}.tfrecord")
        with self._lock:
            self._staged[local] = self.sizes[index]
        return self._pool.submit(self._download, index, local)

    def _download(self, index: int, local: str) -> str:
        try:
            download(self.uris[index], local)
        except StorageError:
            with self._lock:
                self._staged.pop(local, None)
            raise
        if self.keep:
            self._kept[index] = local
        return local

    def _size(self, uri: str) -> int:
        import pyarrow.fs as pafs

        location = resolve(uri)
        try:
            info = location.fs.get_file_info(location.path)
        except (OSError, ValueError) as exc:
            raise storage_error("read", uri, exc) from None
        if info.type != pafs.FileType.File:
            raise StorageError(f"cannot read {redact(uri)}: no such file")
        return int(info.size or 0)


def local_scratch_dir() -> str:
    """The executor's scratch disk: Spark's local dir, YARN's container dir, else the temp dir."""
    for name in ("SPARK_LOCAL_DIRS", "LOCAL_DIRS"):
        value = os.environ.get(name)
        if value:
            return value.split(",")[0]
    return tempfile.gettempdir()


def _default_stage_root() -> str:
    return os.path.join(local_scratch_dir(), "tfos-stage")


def _cleanup(pool: futures.ThreadPoolExecutor, directory: str) -> None:
    pool.shutdown(wait=False, cancel_futures=True)
    shutil.rmtree(directory, ignore_errors=True)
