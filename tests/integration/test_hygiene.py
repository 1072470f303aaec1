"""Resource hygiene under repeated use: 20 tfos.run -> shutdown cycles in one Spark
application, mixing normal ends, raising nodes, killed TF processes and SPARK-mode feeds;
the driver's threads, file descriptors, listening ports and child processes, and the
executors' tfos processes, come back to where they started."""

from __future__ import annotations

import sys
import threading

import cloudpickle
import psutil
import pytest

import tfos
from tests.integration.spark_helpers import wait_no_node_processes

# ~4 minutes: run on demand (python -m pytest -m slow), not in the default run
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CYCLES = 20


def _normal(args, ctx):
    return None


def _raising(args, ctx):
    if ctx.job_name == "worker":
        raise RuntimeError("raised on purpose")


def _killed(args, ctx):
    import os
    import signal

    if ctx.job_name == "worker":
        os.kill(os.getpid(), signal.SIGKILL)


def _fed(args, ctx):
    feed = ctx.get_data_feed(train_mode=True)
    while not feed.should_stop():
        feed.next_batch(100)


def _python_descendants(me: psutil.Process) -> list[int]:
    """Python processes under the driver, other than pyspark's own workers (dying ones excluded)."""
    found = []
    for proc in me.children(recursive=True):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if "python" in proc.name().lower() and "pyspark" not in " ".join(proc.cmdline()):
                found.append(proc.pid)
        except psutil.Error:
            pass  # gone meanwhile
    return sorted(found)


def _driver_resources() -> dict:
    me = psutil.Process()
    return {
        "threads": sorted(t.name for t in threading.enumerate()),
        "fds": me.num_fds(),
        "listening ports": sorted(c.laddr.port for c in me.net_connections("tcp") if c.status == psutil.CONN_LISTEN),
        "python children": _python_descendants(me),
    }


def _cycle(sc, i: int) -> None:
    kind = ("normal", "raising", "killed", "fed")[i % 4]
    fun = {"normal": _normal, "raising": _raising, "killed": _killed, "fed": _fed}[kind]
    mode = tfos.InputMode.SPARK if kind == "fed" else tfos.InputMode.TENSORFLOW
    cluster = tfos.run(sc, fun, None, num_executors=2, input_mode=mode)
    if kind == "fed":
        cluster.train(sc.parallelize(range(1000), 4), num_epochs=1)
    if kind in ("raising", "killed"):
        with pytest.raises(tfos.ClusterFailedError):
            cluster.shutdown(timeout=60)
    else:
        cluster.shutdown(timeout=60)


def test_twenty_cycles_leave_no_threads_fds_ports_or_processes_behind(sc):
    _cycle(sc, 0)  # warm-up: lazy imports, py4j connections, Python workers
    _cycle(sc, 3)
    assert wait_no_node_processes() == []
    before = _driver_resources()
    for i in range(CYCLES):
        _cycle(sc, i)
    assert wait_no_node_processes() == []  # the executors' side: no supervisor, TF process or TensorBoard
    after = _driver_resources()
    print(f"driver before {before}, after {CYCLES} cycles {after}")
    # the driver's pools (py4j, gRPC's completion queues) may hold a thread or an fd more or
    # less from one moment to the next; a leak per cycle would show as +20
    assert len(after["threads"]) <= len(before["threads"]) + 2, (before, after)
    assert after["fds"] <= before["fds"] + 4, (before, after)
    assert after["listening ports"] == before["listening ports"]
    assert after["python children"] == before["python children"]
