"""A real 2-executor run with TLS on the reservation channel and a port range: every port tfos
listens on is in the range, and the run's secret shows nowhere (driver logs at DEBUG, executor
logs, Spark job descriptions, cluster_info, the TF processes' environment and command line)."""

from __future__ import annotations

import base64
import glob
import json
import logging
import os
import socket
import sys

import cloudpickle
import pytest

import tfos
from tests.unit.certs import self_signed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
cloudpickle.register_pickle_by_value(sys.modules[__name__])


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
