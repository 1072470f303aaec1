"""The TF process: runs the user's ``main_fun(args, ctx)`` (or a ps server) for one node.

Started by the supervisor as ``python -m tfos.node.tf_process``. Reads, from stdin:
its header, the cloudpickled ``(main_fun, args)`` (written by the supervisor from the
Spark task closure, never from a socket), then the cluster. Imports TensorFlow while
the cluster forms, exports ``TF_CONFIG``, and reports "running" / "failed" (with the
traceback) to the supervisor over a private pipe; ``main_fun`` runs as every child
runs it (:mod:`tfos.node.user_function`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading

from tfos.node import frames
from tfos.node.frames import EventWriter
from tfos.node.process import die_with_parent, start_group_reaper
from tfos.node.user_function import prepare_interpreter, run_user_function
from tfos.reservation.states import NodeState
from tfos.roles import PS_JOB

log = logging.getLogger("tfos.node")


def _preimport_tensorflow() -> None:
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        pass


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--status-fd", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--feed-fd", type=int, default=-1)
    parser.add_argument("--port-fd", type=int, default=-1)
    parser.add_argument("--watch-fd", type=int, default=-1)
    opts = parser.parse_args()
    if not die_with_parent(opts.parent_pid):
        return 70  # the supervisor is already gone
    if opts.watch_fd >= 0:
        start_group_reaper(opts.watch_fd)  # first: no thread runs yet
    events = EventWriter(os.fdopen(opts.status_fd, "wb"))
    stdin = sys.stdin.buffer
    header = frames.read_json(stdin)
    payload = frames.read_frame(stdin)
    if header is None or payload is None:
        return 70
    prepare_interpreter(header["keras"])
    preimport = threading.Thread(target=_preimport_tensorflow, name="tfos-preimport", daemon=True)
    preimport.start()
    cluster = frames.read_json(stdin)
    if cluster is None:
        return 0  # the run ended before the cluster formed
    # out of the dict now: a traceback that prints this frame's locals must not show it
    feed_secret = _take_secret(cluster)
    os.environ["TF_CONFIG"] = _json(cluster["tf_config"])
    preimport.join()

    def make_context():
        feed = None
        if opts.feed_fd >= 0:  # the supervisor gives one to fed nodes only
            feed = _feed_server(opts.feed_fd, feed_secret, header["run_id"],
                                f"{cluster['job_name']}:{cluster['task_index']}")
        return _context(header, cluster, events, feed=feed,
                        held_port=_held_port(opts.port_fd, header.get("release_port", True)))

    def serve_or_call(main_fun, args, ctx):
        if ctx.job_name == PS_JOB:
            events(NodeState.RUNNING)
            ctx.serve()
            return None
        from tfos.keras_compat import apply_keras3_mwms_fix_on_import

        apply_keras3_mwms_fix_on_import()
        events(NodeState.RUNNING)
        return main_fun(args, ctx)

    return run_user_function(payload, make_context, events, serve_or_call).exit_code


def _context(header: dict, cluster: dict, events, feed=None, held_port=None):
    from tfos.context import NodeContext

    return NodeContext(
        job_name=cluster["job_name"], task_index=cluster["task_index"],
        cluster_spec=cluster["cluster_spec"], num_workers=cluster["num_workers"],
        worker_num=cluster["worker_num"], executor_id=header["executor_id"],
        default_fs=header["default_fs"], working_dir=header["working_dir"],
        log_dir=cluster["log_dir"], run_id=header["run_id"], host=header["host"],
        gpus=list(header.get("gpus", [])), attempt=header.get("attempt", 0), events=events,
        local_root=cluster.get("local_root", ""), storage=cluster.get("storage", ""),
        feed=feed, held_port=held_port,
    )


def _held_port(fd: int, release: bool):
    """The supervisor's hold on this node's TF port: closed now (``release_port=True``, the
    default), or handed to ``main_fun`` as ``ctx.tmp_socket`` until ``ctx.release_port()``."""
    if fd < 0:
        return None
    import socket

    held = socket.socket(fileno=fd)
    if release:
        held.close()
        return None
    return held


def _take_secret(cluster: dict):
    """The run secret, removed from ``cluster`` and held as a ``Secret`` (repr ``Secret(***)``),
    so no local of the frame that calls ``main_fun`` holds it in bytes or hex."""
    from tfos.reservation.auth import Secret

    return Secret(bytes.fromhex(cluster.pop("secret", "") or ""))


def _feed_server(fd: int, secret, run_id: str, node: str):
    import socket

    from tfos.feed.node_feed import FeedServer

    listener = socket.socket(fileno=fd)
    return FeedServer(listener, secret.value, run_id=run_id, node=node)


def _json(obj) -> str:
    import json

    return json.dumps(obj)


if __name__ == "__main__":
    from tfos.node.process import exit_within

    exit_within(main())
