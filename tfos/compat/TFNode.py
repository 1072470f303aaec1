"""TensorFlowOnSpark's ``TFNode`` module: the node-side helpers, over :class:`tfos.NodeContext`.

``mgr`` arguments take what a TensorFlowOnSpark script passes: ``ctx.mgr`` (in tfos the
context itself) or the ``ctx``.
"""

from __future__ import annotations

import logging

from tfos.errors import ConfigError, FeedError

log = logging.getLogger(__name__)

#: DataFeeds made by the functional forms (next_batch/batch_results/terminate), per node and queue
_FEEDS: dict[tuple[int, str], object] = {}


def DataFeed(mgr, train_mode: bool = True, qname_in: str = "input", qname_out: str = "output",  # noqa: N802
             input_mapping: dict | None = None, feed_timeout: float = 600.0):
    """TensorFlowOnSpark's ``TFNode.DataFeed(ctx.mgr, ...)``: the node's Spark feed.

    Returns a :class:`tfos.feed.node_feed.DataFeed` (``next_batch``, ``should_stop``,
    ``batch_results``, ``terminate``), as ``ctx.get_data_feed(...)`` does. ``feed_timeout``
    (tfos only) bounds each wait for data.

    Raises:
        ConfigError: ``mgr`` is neither ``ctx.mgr`` nor a ``ctx``.
        FeedError: the run is not in ``InputMode.SPARK``, or this is a ps/evaluator node.
    """
    return _context(mgr, "TFNode.DataFeed").get_data_feed(
        train_mode=train_mode, qname_in=qname_in, qname_out=qname_out, input_mapping=input_mapping,
        feed_timeout=feed_timeout)


def next_batch(mgr, batch_size: int, qname: str = "input"):
    """Up to ``batch_size`` records from queue ``qname`` (TensorFlowOnSpark 1.x's functional form)."""
    return _feed(mgr, qname, "TFNode.next_batch").next_batch(batch_size)


def batch_results(mgr, results, qname: str = "output") -> None:
    """Send inference results back: one per record taken with :func:`next_batch`, in order.

    Raises:
        FeedError: no records were taken with :func:`next_batch` on this node yet.
    """
    ctx = _context(mgr, "TFNode.batch_results")
    feeds = [feed for (owner, _), feed in _FEEDS.items() if owner == id(ctx) and feed.qname_out == qname]
    if not feeds:
        raise FeedError(f"TFNode.batch_results(mgr, results, qname={qname!r}) before any TFNode.next_batch on "
                        "this node: take the records first (or use a DataFeed's batch_results)")
    feeds[-1].batch_results(results)


def terminate(mgr, qname: str = "input") -> None:
    """Stop the feed early: the rest of the data is skipped."""
    _feed(mgr, qname, "TFNode.terminate").terminate()


def start_cluster_server(ctx, num_gpus: int = 1, rdma: bool = False):
    """Start this node's TF server; returns ``(tf.train.ClusterSpec, tf.distribute.Server)``.

    ``num_gpus`` and ``rdma`` are accepted and ignored: GPUs come from Spark's resource
    scheduling (``CUDA_VISIBLE_DEVICES`` is already set), and TF 2 has no ``grpc+verbs``.
    """
    import tensorflow as tf

    if rdma:
        log.warning("start_cluster_server(rdma=True): ignored, TensorFlow 2 has no grpc+verbs protocol")
    return tf.train.ClusterSpec(ctx.cluster_spec), ctx.start_server()


def hdfs_path(ctx, path: str) -> str:
    """``path`` made absolute on the cluster's default filesystem (``ctx.absolute_path``).

    ``ctx`` is a tfos context, or any object with TensorFlowOnSpark's ``defaultFS`` and
    ``working_dir`` attributes.
    """
    from tfos.context import absolute_path

    return absolute_path(path, ctx.defaultFS, ctx.working_dir)


def export_saved_model(model, export_dir: str, is_chief=False, signatures=None):
    """Export ``model`` as a SavedModel; see :func:`tfos.compat.compat.export_saved_model`.

    TensorFlowOnSpark's TF 1 form ``export_saved_model(sess, export_dir, tag_set, signatures)``
    is refused, as TensorFlowOnSpark refused it on TF 2.

    Raises:
        ConfigError: called with a session, a tag set or signatures.
    """
    if signatures is not None or isinstance(is_chief, str):
        raise ConfigError(
            "TFNode.export_saved_model(sess, export_dir, tag_set, signatures) is TensorFlow 1's session "
            "export; on TensorFlow 2 pass a Keras model: export_saved_model(model, export_dir, is_chief)"
        )
    from tfos.compat.compat import export_saved_model as export

    return export(model, export_dir, bool(is_chief))


def release_port(ctx) -> None:
    """No-op: tfos holds no port for the TF server (``ctx.release_port()``)."""
    ctx.release_port()


def _context(mgr, caller: str):
    if not callable(getattr(mgr, "get_data_feed", None)):
        raise ConfigError(f"{caller} takes ctx.mgr (or ctx) of a tfos node; received: {type(mgr).__name__}")
    return mgr


def _feed(mgr, qname: str, caller: str):
    ctx = _context(mgr, caller)
    key = (id(ctx), qname)
    if key not in _FEEDS:
        _FEEDS[key] = ctx.get_data_feed(qname_in=qname)
    return _FEEDS[key]


__all__ = ["DataFeed", "batch_results", "export_saved_model", "hdfs_path", "next_batch", "release_port",
           "start_cluster_server", "terminate"]
