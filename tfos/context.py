"""What a node's ``main_fun(args, ctx)`` knows about itself and its cluster."""

from __future__ import annotations

import getpass
import json
import os
from dataclasses import InitVar, dataclass, field
from typing import Any

from tfos.errors import ConfigError, FeedError, FeedTimeout
from tfos.reservation.states import NodeState

_SCHEMES_PASSED_THROUGH = ("://",)

#: RDD records per element ``ctx.dataset`` hands tf.data: each element costs ~1.5 ms in
#: ``from_generator`` here whatever its size, so gathering the ~1000-record fed chunks into
#: 8192 cut the TF process's CPU per record by a third (docs/benchmarks.md)
DATASET_ELEMENT_RECORDS = 8192


@dataclass
class NodeContext:
    """The node's view of the run, passed to ``main_fun(args, ctx)``.

    Attribute names follow TensorFlowOnSpark's ``TFNodeContext``.

    Attributes:
        job_name: "chief", "master", "worker", "ps" or "evaluator".
        task_index: index within the job.
        cluster_spec: job -> list of "host:port" (the evaluator is not in it).
        num_workers: number of training nodes (chief and workers).
        worker_num: this node's rank among training nodes (chief is 0); -1 for ps/evaluator.
        executor_id: the Spark executor id this node runs on.
        default_fs: Hadoop's ``fs.defaultFS`` as Spark sees it (e.g. "file:///", "hdfs://nn:8020").
        working_dir: the executor's working directory (where ``--files`` land).
        log_dir: the run's log/TensorBoard directory (``tensorboard_dir`` is the same).
        attempt: 0 for the first run of ``main_fun`` (restarts count up).
        gpus: the GPU addresses Spark assigned to this node's task (``CUDA_VISIBLE_DEVICES``
            holds them, mapped through the executor's own); empty without GPU scheduling.
    """

    job_name: str
    task_index: int
    cluster_spec: dict[str, list[str]]
    num_workers: int
    worker_num: int
    executor_id: str
    default_fs: str = "file:///"
    working_dir: str = field(default_factory=os.getcwd)
    log_dir: str = ""
    attempt: int = 0
    run_id: str = ""
    host: str = ""
    gpus: list[str] = field(default_factory=list)
    #: this node's local directories (``local_dir``); the lead node's are mirrored to ``storage``
    local_root: str = ""
    #: the run's storage URI (``tfos.run(storage=...)``), "" without
    storage: str = ""
    #: what the TF process hands the context (constructor arguments only; kept private):
    #: the driver's event channel (``events(state, **fields)``), the node's Spark feed server
    #: (fed nodes), and the socket still holding the TF port (``release_port=False`` runs)
    events: InitVar[Any] = None
    feed: InitVar[Any] = None
    held_port: InitVar[Any] = None
    _server: Any = field(default=None, init=False, repr=False)
    _local_dirs: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self, events, feed, held_port) -> None:
        self._events = events
        self._feed = feed
        self._tmp_socket = held_port

    @property
    def tensorboard_dir(self) -> str:
        return self.log_dir

    @property
    def tf_config(self) -> dict:
        """The ``TF_CONFIG`` this process exported (parsed)."""
        return json.loads(os.environ.get("TF_CONFIG", "{}"))

    @property
    def is_chief(self) -> bool:
        """True on the node that should write checkpoints, summaries and exports."""
        from tfos.roles import Role, is_lead

        return is_lead(Role(self.job_name, self.task_index), self.cluster_spec)

    def absolute_path(self, path: str) -> str:
        """``path`` resolved the way TensorFlowOnSpark did; see :func:`absolute_path`."""
        return absolute_path(path, self.default_fs, self.working_dir)

    def shard_files(self, pattern, allow_empty: bool = False) -> list[str]:
        """This training node's share of the files matching ``pattern`` (sharding by file).

        ``pattern`` (a glob, or a list of paths) is resolved with :meth:`absolute_path`;
        the matching files are sorted by name and this node takes files ``worker_num,
        worker_num + num_workers, ...``, so the training nodes (chief included) get
        disjoint shards that together hold every file. See :func:`tfos.sharding.shard_files`.

        Raises:
            ConfigError: on ps and evaluator nodes (they train on no shard), when nothing
                matches, or when there are fewer files than training nodes (unless ``allow_empty``).
        """
        from tfos.sharding import shard_files

        if isinstance(pattern, str):
            pattern = self.absolute_path(pattern)
        else:
            pattern = [self.absolute_path(p) for p in pattern]
        return shard_files(pattern, self.num_workers, self.worker_num, allow_empty=allow_empty)

    def start_server(self):
        """Start (once) this node's ``tf.distribute.Server`` and return it."""
        if self._server is None:
            import tensorflow as tf

            resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
            self._server = tf.distribute.Server(
                resolver.cluster_spec(), job_name=self.job_name, task_index=self.task_index,
                protocol=resolver.rpc_layer or "grpc", start=True,
            )
        return self._server

    # -- TensorFlowOnSpark names, for scripts being ported ---------------------------

    @property
    def defaultFS(self) -> str:  # noqa: N802 - TensorFlowOnSpark's spelling
        return self.default_fs

    def start_cluster_server(self, *_args, **_kwargs):
        """TensorFlowOnSpark's name for :meth:`start_server` (its GPU/RDMA arguments are ignored)."""
        return self.start_server()

    @property
    def tmp_socket(self):
        """The socket holding this node's TF port, with ``tfos.run(..., release_port=False)``.

        tfos holds each node's TF port from the moment it picks it until ``main_fun`` runs,
        so no other process can take it meanwhile. With ``release_port=False`` (TensorFlowOnSpark's
        option) the hold lasts into ``main_fun``: call :meth:`release_port` before the TF
        server starts (a strategy, ``start_server``). ``None`` once released.
        """
        return self._tmp_socket

    def release_port(self) -> None:
        """Release this node's TF port for TF to bind (``release_port=False`` runs only)."""
        if self._tmp_socket is not None:
            self._tmp_socket.close()
            self._tmp_socket = None

    @property
    def mgr(self) -> NodeContext:
        """TensorFlowOnSpark's ``ctx.mgr``, for ``tfos.compat.TFNode.DataFeed(ctx.mgr, ...)``.

        tfos has no per-executor manager process: the feed hangs off the context, so this
        is the context itself.
        """
        return self

    def serve(self) -> None:
        """Serve this node's TF server until tfos stops the node (ps, and PS-strategy workers).

        Tells the driver the node is serving, so ``shutdown()`` stops it once the training
        nodes are done instead of waiting for it to return.
        """
        server = self.start_server()
        if self._events is not None:
            self._events(NodeState.SERVING)
        server.join()

    def get_data_feed(self, train_mode: bool = True, qname_in: str = "input", qname_out: str = "output",
                      input_mapping: dict | None = None, feed_timeout: float = 600.0):
        """The Spark feed as TensorFlowOnSpark's ``DataFeed`` (``next_batch``, ``should_stop``,
        ``batch_results``, ``terminate``). Needs ``input_mode=tfos.InputMode.SPARK``."""
        from tfos.feed.node_feed import DataFeed

        return DataFeed(self._require_feed(), train_mode=train_mode, qname_in=qname_in,
                        qname_out=qname_out, input_mapping=input_mapping, feed_timeout=feed_timeout,
                        node_name=f"{self.job_name}:{self.task_index}")

    def dataset(self, output_signature=None, qname: str = "input", feed_timeout: float = 600.0,
                batch_size: int | None = None):
        """The Spark feed as a ``tf.data.Dataset`` of single records, one epoch per iteration.

        Each pass over the dataset (each Keras epoch) reads the next epoch that
        ``cluster.train(..., num_epochs=N)`` feeds, and yields the same number of records
        on every node, so synchronous strategies run equal steps (the few records above
        that are dropped and reported by ``train``). Auto-sharding is off: the data is
        already split between the nodes.

        Args:
            output_signature: a ``tf.TensorSpec`` per field of a record: one spec for
                scalar/array records, a tuple for tuple records, or a dict keyed by column
                name for DataFrame rows (a subset of the columns is fine). A binary column
                or a ``bytes`` field of RDD records may be declared as a numeric tensor
                (``TensorSpec([784], tf.uint8)`` for raw image bytes): its bytes are
                reinterpreted, not parsed. ``None`` (DataFrames
                only) infers ``{column: TensorSpec}`` from the schema, waiting for
                ``cluster.train`` to send it: array columns get their length when every row
                has the same one.
            qname: the queue ``cluster.train(..., qname=...)`` feeds.
            feed_timeout: seconds to wait for data before raising ``FeedTimeout``.
            batch_size: when given, the dataset yields batches of this size (the last of an
                epoch may be smaller), re-cut from the fed chunks: ~1.5x faster than
                ``.batch()`` on the dataset of single records.
        """
        import tensorflow as tf

        from tfos.feed.node_feed import epoch_chunks
        from tfos.feed.records import to_columns
        from tfos.sharding import unsharded

        server = self._require_feed()
        name = f"{self.job_name}:{self.task_index}"
        if output_signature is None:
            output_signature = self._inferred_signature(server, qname, feed_timeout)
        batched = tf.nest.map_structure(
            lambda spec: tf.TensorSpec((None, *spec.shape), spec.dtype, spec.name), output_signature
        )

        def chunks():
            columns = None
            pending: list = []  # RDD records gathered into one element (see DATASET_ELEMENT_RECORDS)
            for chunk, cols in epoch_chunks(server, qname, feed_timeout, name):
                columns = cols or columns
                if not isinstance(chunk, list):  # Arrow: chunks of 8192 rows already; joining would copy
                    yield to_columns(chunk, output_signature, columns)
                    continue
                pending.extend(chunk)
                if len(pending) >= DATASET_ELEMENT_RECORDS:
                    yield to_columns(pending, output_signature, columns)
                    pending = []
            if pending:
                yield to_columns(pending, output_signature, columns)

        dataset = tf.data.Dataset.from_generator(chunks, output_signature=batched)
        if batch_size is None:
            dataset = dataset.unbatch()
        else:
            if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
                raise ConfigError(f"batch_size must be a positive int or None; received: batch_size={batch_size!r}")
            dataset = dataset.rebatch(batch_size)
        return unsharded(dataset)

    def local_dir(self, name: str) -> str:
        """A local directory ``name`` on this node's disk, for checkpoints, exports, summaries.

        With ``tfos.run(..., storage=URI)``: the first call downloads ``URI/<name>`` into it
        when storage has it (a restart, or a later run with the same storage, resumes from
        there), and the lead node's directories (chief, or ``worker:0`` without one) are
        mirrored to ``URI/<name>`` while the run goes and completely before ``shutdown()``
        returns. Without storage it is just a local directory. See :mod:`tfos.storage.mirror`.

        Raises:
            ConfigError: ``name`` is empty, absolute or leaves the node's root (``..``).
            StorageError: storage has ``name`` but it cannot be downloaded (the file is named).
        """
        import tempfile

        parts = [p for p in str(name).replace("\\", "/").split("/") if p not in ("", ".")]
        if not parts or ".." in parts or str(name).startswith("/"):
            raise ConfigError(f"local_dir(name) takes a relative name such as 'backup' or 'export/v1'; "
                             f"received: {name!r}")
        rel = "/".join(parts)
        if rel in self._local_dirs:
            return self._local_dirs[rel]
        root = self.local_root or os.path.join(tempfile.gettempdir(), f"tfos-local-{self.run_id or os.getpid()}")
        path = os.path.join(root, *parts)
        os.makedirs(path, exist_ok=True)
        if self.storage:
            from tfos.storage.mirror import restore, write_restored_manifest

            restored = restore(f"{self.storage.rstrip('/')}/{rel}", path)
            if restored:
                write_restored_manifest(root, rel, restored)
        self._local_dirs[rel] = path
        return path

    def tfrecord_dataset(self, files, compression_type: str | None = None, buffer_size: int | None = None,
                         num_parallel_reads: int | None = None, max_stage_bytes: int | None = None):
        """``tf.data.TFRecordDataset(files, ...)`` for files on any storage (hdfs://, s3://...).

        ``files`` is a path or a list of paths (``ctx.shard_files(...)`` gives this node's);
        each is resolved with :meth:`absolute_path`. Local files are read in place; remote
        ones are staged to this executor's disk ahead of TensorFlow's reader, at most
        ``max_stage_bytes`` at a time (default 2 GiB); see :mod:`tfos.storage.records`.
        The records and their order are TFRecordDataset's. tf.data's auto-sharding is off:
        the files already are this node's share.
        """
        from tfos.storage.records import MAX_STAGE_BYTES, tfrecord_dataset

        paths = [files] if isinstance(files, str) else list(files)
        return tfrecord_dataset([self.absolute_path(p) for p in paths], compression_type, buffer_size,
                                num_parallel_reads, max_stage_bytes=max_stage_bytes or MAX_STAGE_BYTES,
                                auto_shard=False)

    def report_progress(self, **fields) -> None:
        """Tell the driver how training goes (``epoch=2, epochs=5, step=40, metrics={...}``).

        Best effort and cheap: the record is queued for the driver's log, its live display
        and ``cluster.progress``; it never blocks or fails training.
        """
        from tfos.progress import progress_record

        if self._events is not None:
            self._events("progress", record=progress_record(**fields))

    def progress_callback(self, every_s: float = 1.0):
        """A ``tf.keras`` callback reporting epoch/step/metrics to the driver (``report_progress``)."""
        from tfos.progress import keras_callback

        return keras_callback(self.report_progress, every_s)

    def _inferred_signature(self, server, qname: str, feed_timeout: float):
        from tfos.feed.records import signature_of

        schema = server.wait_schema(qname, feed_timeout)
        if schema is None:
            raise FeedTimeout(
                f"node {self.job_name}:{self.task_index} waited {feed_timeout:g} s for the schema of a "
                f"DataFrame on queue {qname!r} to infer ctx.dataset's element spec; cluster.train(df) sends "
                f"it (an RDD has none: pass output_signature)"
            )
        return signature_of(schema)

    def _require_feed(self):
        if self._feed is None:
            raise FeedError(
                "this node has no Spark feed: start the run with input_mode=tfos.InputMode.SPARK "
                "(ps and evaluator nodes are never fed)"
            )
        return self._feed


def absolute_path(path: str, default_fs: str, working_dir: str) -> str:
    """Resolve ``path`` against the default filesystem, the way TensorFlowOnSpark did.

    Paths with a scheme (``hdfs://``, ``file://``, ``s3a://``, ``viewfs://``...) pass through.
    On a local default filesystem a relative path is taken from ``working_dir`` and
    returned as ``file://...``; on a distributed one, absolute paths are prefixed with
    ``default_fs`` and relative ones with ``default_fs/user/<user>/``.
    """
    if any(s in path for s in _SCHEMES_PASSED_THROUGH):
        return path
    fs = (default_fs or "file:///").rstrip("/")
    if fs.endswith(":"):  # a default filesystem without a host ("hdfs://"): keep the "//"
        fs += "//"
    if fs.startswith("file:"):
        return "file://" + os.path.abspath(os.path.join(working_dir, path))
    if path.startswith("/"):
        return fs + path
    return f"{fs}/user/{getpass.getuser()}/{path}"
