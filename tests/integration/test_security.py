"""A real 2-executor run with TLS on the reservation channel and a port range: every port tfos
listens on is in the range, and the run's secret shows nowhere (driver logs at DEBUG, executor
logs, Spark job descriptions, cluster_info, the TF processes' environment and command line).
What the node processes and the driver actually listen on (read from the kernel) is in the port
range, on the advertised host, except TensorFlow's own server, which binds every address. The module's Spark application has ``spark.authenticate`` on with a known secret: no node
process (supervisor, TF process, TensorBoard) holds it or the run's secret in its environment
or command line, and a ``main_fun`` printing every frame's locals shows neither."""

from __future__ import annotations

import base64
import glob
import json
import logging
import os
import secrets
import socket
import sys
import time

import cloudpickle
import psutil
import pytest

import tfos
from tests.integration.spark_helpers import node_processes
from tests.unit.certs import self_signed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
cloudpickle.register_pickle_by_value(sys.modules[__name__])

#: Spark's own RPC secret: the standalone Worker hands it to each executor as _SPARK_AUTH_SECRET
SPARK_AUTH_SECRET = secrets.token_hex(24)
SPARK_CONF = {"spark.authenticate": "true", "spark.authenticate.secret": SPARK_AUTH_SECRET}


def _record_and_read(args, ctx):
    import json as _json
    import os as _os
    import sys as _sys

    feed = ctx.get_data_feed(train_mode=True)
    count = 0
    while not feed.should_stop():
        count += len(feed.next_batch(50))
    with open(_os.path.join(args, f"{ctx.job_name}.json"), "w") as f:
        _json.dump({"count": count, "argv": _sys.argv, "env": dict(_os.environ),
                    "cluster_spec": ctx.cluster_spec}, f)


def _free_block(size: int) -> tuple[int, int]:
    """``size`` consecutive ports free a moment ago, away from the kernel's ephemeral range."""
    for first in range(30000, 32000, size):
        socks = []
        try:
            for port in range(first, first + size):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return first, first + size - 1
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    pytest.skip("no free block of ports")


def _forms(secret: bytes) -> list[str]:
    return [secret.hex(), secret.hex().upper(), base64.b64encode(secret).decode(),
            base64.urlsafe_b64encode(secret).decode(), repr(secret)[2:-1], secret.decode("latin-1")]


def _executor_logs(sc) -> list[str]:
    from pyspark.find_spark_home import _find_spark_home

    pattern = os.path.join(_find_spark_home(), "work", sc.applicationId, "*", "std*")
    texts = []
    for path in glob.glob(pattern):
        with open(path, errors="replace") as f:
            texts.append(f.read())
    return texts


def _job_descriptions(sc) -> list[str]:
    """Name and description of every job of the application, as the Spark UI lists them."""
    jobs = sc._jsc.sc().statusStore().jobsList(None).iterator()  # a Scala Seq of JobData
    found = []
    while jobs.hasNext():
        job = jobs.next()
        found.append(f"{job.name()} {job.description()}")
    return found


def test_tls_run_in_a_port_range_leaks_no_secret(sc, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    first, last = _free_block(12)
    cert, key = self_signed(str(tmp_path), "127.0.0.1")
    cluster = tfos.run(sc, _record_and_read, str(tmp_path), num_executors=2, tensorboard=True,
                       input_mode=tfos.InputMode.SPARK, tls=tfos.TLSConfig(cert, key), port_range=f"{first}-{last}")
    secret = cluster._secret.value
    info = cluster.cluster_info
    feed_ports = [n.feed_port for n in cluster.state.snapshot()]
    report = cluster.train(sc.parallelize(range(1000), 4), num_epochs=1)
    assert repr(cluster._feeder._secret) == "Secret(***)"  # what the feeding closures carry
    cluster.shutdown(timeout=120)

    # ports: the reservation server, each TF server, feed endpoint and TensorBoard
    in_range = range(first, last + 1)
    assert cluster.server.port in in_range
    assert cluster.server.tls is not None
    tensorboard = [n.tensorboard_port for n in info if n.job_name == "chief"]
    listened = [cluster.server.port] + [n.port for n in info] + feed_ports + tensorboard
    assert len(set(listened)) == len(listened) == 1 + 2 + 2 + 1
    assert all(p in in_range for p in listened), (listened, first, last)
    assert cluster.tensorboard_url() == f"http://127.0.0.1:{info[0].tensorboard_port}"
    assert report.records_per_epoch == 1000

    # the secret, in any spelling, is nowhere
    nodes = {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in ("chief", "worker")}
    assert sum(n["count"] for n in nodes.values()) == 1000
    places = {
        "driver log": caplog.text,
        "cluster_info": repr(info) + str(info),
        "cluster": repr(cluster) + repr(cluster.config) + repr(cluster._launch),
        "job descriptions": "\n".join(_job_descriptions(sc)),
        "executor logs": "\n".join(_executor_logs(sc)),
        "TF process env and argv": json.dumps([(n["env"], n["argv"]) for n in nodes.values()]),
    }
    assert "tfos: nodes (run " in places["job descriptions"] and "tfos: feed epoch" in places["job descriptions"]
    assert "reservation server listening on" in places["driver log"]
    assert places["executor logs"], "no executor log files found"
    for where, text in places.items():
        for form in _forms(secret):
            assert form not in text, f"the secret shows in the {where}"


def _dump_locals_and_raise(args, ctx):
    """Writes what a locals-capturing traceback hook would print (every frame of every thread,
    each local's repr), prints the main thread's stack that way, then raises."""
    import os as _os
    import sys as _sys
    import time as _time
    import traceback as _traceback

    import tensorflow as tf

    # the TF server every strategy starts, so that the test sees what it listens on
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    server = tf.distribute.Server(resolver.cluster_spec(), job_name=ctx.job_name,  # noqa: F841
                                  task_index=ctx.task_index, protocol="grpc", start=True)
    with open(_os.path.join(args, f"{ctx.job_name}.pid"), "w") as f:
        f.write(str(_os.getpid()))
    end = _time.monotonic() + 90
    while not _os.path.exists(_os.path.join(args, "go")) and _time.monotonic() < end:
        _time.sleep(0.1)  # the test reads every node process's /proc meanwhile
    dump = []
    for frame in _sys._current_frames().values():
        for summary in _traceback.StackSummary.extract(_traceback.walk_stack(frame), capture_locals=True):
            dump.append(f"{summary.filename}:{summary.name} {summary.locals}")
    with open(_os.path.join(args, f"{ctx.job_name}.locals"), "w") as f:
        f.write("\n".join(dump))
    stack = _traceback.StackSummary.extract(_traceback.walk_stack(None), capture_locals=True)
    print("".join(stack.format()), file=_sys.stderr, flush=True)
    raise RuntimeError("raised on purpose, after printing every local")


def _proc_text(pid: int) -> str:
    """A process's environment and command line, as the kernel shows them to its user."""
    parts = []
    for name in ("environ", "cmdline"):
        with open(f"/proc/{pid}/{name}", "rb") as f:
            parts.append(f.read().replace(b"\0", b"\n").decode("latin-1"))
    return "\n".join(parts)


def _listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of each listening TCP socket; gRPC's IPv4-mapped binds as their IPv4 address."""
    return {(c.laddr.ip.removeprefix("::ffff:"), c.laddr.port)
            for c in psutil.Process(pid).net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}


def _check_listeners(cluster, procs: dict[int, str], driver_before: set, first: int, last: int) -> None:
    """Every listening socket of the node processes is in the range; only the TF server's is on
    more than the advertised host (TF binds every address); the driver adds the reservation
    server's, on the advertised host."""
    tf_ports = {n.port for n in cluster.cluster_info}
    end = time.monotonic() + 30  # TensorBoard takes a few seconds to listen
    while True:
        seen = {pid: _listening(pid) for pid in procs}
        found = set().union(*seen.values())
        if len({p for _, p in found}) >= len(tf_ports) + 3 or time.monotonic() > end:
            break
        time.sleep(0.5)
    where = "\n".join(f"{procs[pid][:90]}: {sorted(s)}" for pid, s in seen.items())
    assert tf_ports <= {port for _, port in found}, f"the TF servers do not listen:\n{where}"
    for ip, port in found:
        assert first <= port <= last, f"{ip}:{port} is outside the port range {first}-{last}:\n{where}"
        if port in tf_ports:
            assert ip in ("0.0.0.0", "::"), f"TF's server on {ip}:{port}: the docs say every address"
        else:
            assert ip == "127.0.0.1", f"{ip}:{port} is not the advertised host 127.0.0.1:\n{where}"
    feed_and_tb = found - {(ip, p) for ip, p in found if p in tf_ports}
    assert len({p for _, p in feed_and_tb}) == 2 + 1, where  # two feed endpoints and TensorBoard
    driver_new = _listening(os.getpid()) - driver_before
    assert driver_new == {("127.0.0.1", cluster.server.port)}, driver_new


def test_node_processes_hold_no_secret_show_none_in_locals_and_listen_only_in_the_range(sc, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    first, last = _free_block(12)
    driver_before = _listening(os.getpid())
    cluster = tfos.run(sc, _dump_locals_and_raise, str(tmp_path), num_executors=2, tensorboard=True,
                       input_mode=tfos.InputMode.SPARK, port_range=f"{first}-{last}")
    run_secret = cluster._secret.value
    forbidden = [*_forms(run_secret), SPARK_AUTH_SECRET]
    try:
        end = time.monotonic() + 90
        while not all((tmp_path / f"{n}.pid").exists() for n in ("chief", "worker")):
            assert time.monotonic() < end, "main_fun did not start on both nodes"
            time.sleep(0.1)
        procs = {p.pid: " ".join(p.cmdline()) for p in node_processes()}
        kinds = {kind: [pid for pid, cmd in procs.items() if kind in cmd]
                 for kind in ("tfos.node.supervisor", "tfos.node.tf_process", "tensorboard.main")}
        assert [len(kinds[k]) for k in kinds] == [2, 4, 1], procs  # 2 TF processes, each with its reaper
        # the evidence that the filter matters: the executors themselves carry Spark's secret
        executors = [p for p in psutil.process_iter(["cmdline"])
                     if "CoarseGrainedExecutorBackend" in " ".join(p.info["cmdline"] or [])
                     and sc.applicationId in " ".join(p.info["cmdline"] or [])]
        assert executors and all(f"_SPARK_AUTH_SECRET={SPARK_AUTH_SECRET}" in _proc_text(p.pid) for p in executors)
        for pid, cmd in procs.items():
            text = _proc_text(pid)
            assert "_SPARK_" not in text and "PYSPARK_GATEWAY_SECRET" not in text, cmd
            for form in forbidden:
                assert form not in text, f"a secret shows in /proc/{pid} ({cmd[:80]})"
        _check_listeners(cluster, procs, driver_before, first, last)
    finally:
        (tmp_path / "go").touch()
    with pytest.raises(tfos.ClusterFailedError) as err:
        cluster.shutdown(timeout=120)

    dumps = {n: (tmp_path / f"{n}.locals").read_text() for n in ("chief", "worker")}
    # the dumps did reach the frame that calls main_fun, and the feed server's threads
    assert all("tf_process.py:main" in d and "'feed_secret': 'Secret(***)'" in d for d in dumps.values()), dumps
    assert all("node_feed.py" in d for d in dumps.values())
    places = {**{f"{n} locals": d for n, d in dumps.items()}, "node failure": str(err.value),
              "tracebacks and output tails": "\n".join(f.traceback + f.output_tail for f in err.value.failures),
              "driver log": caplog.text, "executor logs": "\n".join(_executor_logs(sc))}
    assert "raised on purpose, after printing every local" in places["node failure"]
    assert "feed_secret = Secret(***)" in places["executor logs"]  # the printed stack reached the node's log
    for where, text in places.items():
        for form in forbidden:
            assert form not in text, f"a secret shows in the {where}"

