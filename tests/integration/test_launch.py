"""The core launch contract on a real 2-executor Spark application with real TensorFlow."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
import urllib.request

import cloudpickle
import numpy as np
import psutil
import pytest

import tfos
from tests.integration.node_functions import mwms_fit, raise_on_worker, sleep_and_tell_pid, wait_for
from tests.integration.spark_helpers import (
    listening,
    process_gone,
    wait_no_node_processes,
)
from tests.polling import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

# the executors cannot import this test module: ship its functions by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


# --------------------------------------------------------------------- roles


def _report_context(out_dir, ctx):
    import json as _json
    import os as _os

    with open(_os.path.join(out_dir, f"{ctx.job_name}-{ctx.task_index}.json"), "w") as f:
        _json.dump({
            "job_name": ctx.job_name, "task_index": ctx.task_index, "cluster_spec": ctx.cluster_spec,
            "tf_config": _json.loads(_os.environ["TF_CONFIG"]), "num_workers": ctx.num_workers,
            "worker_num": ctx.worker_num, "executor_id": ctx.executor_id, "working_dir": ctx.working_dir,
            "omp": _os.environ.get("OMP_NUM_THREADS"), "pid": _os.getpid(),
            "tmp_socket": ctx.tmp_socket is not None, "port_free": _own_port_binds(ctx),
        }, f)


def _own_port_binds(ctx) -> bool:
    """Whether a plain bind of this node's TF port (from its cluster spec) succeeds."""
    import socket as _socket

    port = int(ctx.cluster_spec[ctx.job_name][ctx.task_index].rsplit(":", 1)[1])
    probe = _socket.socket()
    try:
        probe.bind(("0.0.0.0", port))
        return True
    except OSError:
        return False
    finally:
        probe.close()


@pytest.mark.slow  # CI time; in the default run test_submit_remote.py's probe checks unique roles and one cluster spec, test_connect.py's MWMS fit the TF_CONFIG
def test_every_node_sees_the_same_cluster_spec_with_unique_roles(sc, tmp_path):
    from pyspark.sql import SparkSession

    # a classic SparkSession works as TensorFlowOnSpark's SparkContext argument did
    cluster = tfos.run(SparkSession(sc), _report_context, str(tmp_path), num_executors=2)
    assert cluster.sc is sc
    cluster.shutdown(timeout=120)
    reports = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*.json"))]
    assert sorted((r["job_name"], r["task_index"]) for r in reports) == [("chief", 0), ("worker", 0)]
    specs = {json.dumps(r["cluster_spec"], sort_keys=True) for r in reports}
    assert len(specs) == 1
    spec = reports[0]["cluster_spec"]
    addresses = spec["chief"] + spec["worker"]
    assert len(set(addresses)) == 2 and all(a.startswith("127.0.0.1:") for a in addresses)
    for r in reports:
        assert r["tf_config"] == {"cluster": spec, "task": {"type": r["job_name"], "index": r["task_index"]}}
        assert r["num_workers"] == 2
        assert r["omp"] is None  # pyspark's OMP_NUM_THREADS=1 must not throttle TF
        assert (r["tmp_socket"], r["port_free"]) == (False, True)  # released before main_fun
    assert sorted(r["worker_num"] for r in reports) == [0, 1]
    assert len({r["executor_id"] for r in reports}) == 2
    info = cluster.cluster_info
    assert [(n.job_name, n.state) for n in info] == [("chief", "done"), ("worker", "done")]
    assert {n.executor_id for n in info} == {r["executor_id"] for r in reports}


def _hold_then_release_the_port(out_dir, ctx):
    import json as _json
    import os as _os

    held = ctx.tmp_socket is not None and not _own_port_binds(ctx)
    own = ctx.cluster_spec[ctx.job_name][ctx.task_index].rsplit(":", 1)[1]
    same = ctx.tmp_socket is not None and str(ctx.tmp_socket.getsockname()[1]) == own
    ctx.release_port()
    released = ctx.tmp_socket is None
    ctx.start_server()  # TF binds the port it was given
    with open(_os.path.join(out_dir, f"{ctx.job_name}.json"), "w") as f:
        _json.dump({"held": held, "same_port": same, "released": released}, f)


@pytest.mark.slow  # CI time; covered in the default run by the port handover: unit tests of the node's port
def test_release_port_false_holds_the_tf_port_until_main_fun_releases_it(sc, tmp_path, monkeypatch):
    from tests.unit.test_tls_ports import free_block

    block = free_block(3)
    monkeypatch.setenv("TFOS_SERVER_PORT", str(block))  # TensorFlowOnSpark's range form
    cluster = tfos.run(sc, _hold_then_release_the_port, str(tmp_path), num_executors=2, release_port=False)
    assert block.first <= cluster.server.port <= block.last
    cluster.shutdown(timeout=120)
    reports = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*.json"))]
    assert reports == [{"held": True, "same_port": True, "released": True}] * 2


def test_too_many_executors_requested_fails_at_once(sc):
    start = time.monotonic()
    with pytest.raises(tfos.SparkPreconditionError) as err:
        tfos.run(sc, _report_context, "/nonexistent", num_executors=3)
    assert time.monotonic() - start < 5
    assert str(err.value) == (
        "num_executors=3 but the Spark application is configured for 2 executor(s) "
        "(master local-cluster[2,1,1024]); ask Spark for 3 executors or lower num_executors"
    )


@pytest.mark.parametrize("start", [
    pytest.param(lambda sc, args: tfos.run(sc, _report_context, args, num_executors=3), id="run"),
    pytest.param(lambda sc, args: tfos.parallel_run(sc, _report_context, args, num_executors=3), id="parallel_run"),
])
def test_args_that_cannot_reach_the_executors_fail_before_anything_starts(sc, start):
    # num_executors=3 is more than the application has: the pickling error must come first
    with pytest.raises(tfos.ConfigError) as err:
        start(sc, {"out": "/nonexistent", "lock": threading.Lock()})
    assert str(err.value).startswith(
        "main_fun and its args must pickle to reach the executors, and they do not (TypeError: cannot pickle "
        "'_thread.lock' object)"), str(err.value)
    assert wait_no_node_processes() == []
    assert sc.parallelize(range(4), 2).sum() == 6  # the application is untouched


def _report_args_size(args, ctx):
    import hashlib as _hashlib
    import os as _os

    with open(_os.path.join(args["out"], f"{ctx.job_name}.txt"), "w") as f:
        f.write(f"{len(args['blob'])} {_hashlib.sha256(args['blob']).hexdigest()}")


def test_args_of_tens_of_megabytes_reach_every_node_whole(sc, tmp_path):
    # users pass arrays in tf_args: the payload goes through the Spark closure and two pipes
    import hashlib

    blob = os.urandom(48 << 20)
    cluster = tfos.run(sc, _report_args_size, {"out": str(tmp_path), "blob": blob}, num_executors=2)
    cluster.shutdown(timeout=120)
    expected = f"{len(blob)} {hashlib.sha256(blob).hexdigest()}"
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {"chief.txt": expected, "worker.txt": expected}


# ------------------------------------------------------------------ training




@pytest.mark.parametrize("api,keras_choice,package", [
    # CI time: in the default run an MWMS fit ends with identical weights on both nodes in
    # test_connect.py (same node code, a Connect session's driver), and the main example trains
    pytest.param("keras3", "auto", "keras", marks=pytest.mark.slow),
    # CI time: tf-keras on the nodes runs in the default run in test_compat (TensorFlowOnSpark scripts)
    pytest.param("tf.keras", "tf_keras", "tf_keras", marks=pytest.mark.slow),
])
def test_mwms_fit_across_two_executors_ends_with_identical_weights(sc, tmp_path, api, keras_choice, package, caplog):
    caplog.set_level(logging.INFO, logger="tfos.nodes")
    cluster = tfos.run(sc, mwms_fit, {"api": api, "out": str(tmp_path)}, num_executors=2, keras=keras_choice)
    cluster.shutdown(timeout=150)
    # the nodes' output and progress reached the driver, tagged with their roles
    node_lines = [r.getMessage() for r in caplog.records if r.name == "tfos.nodes"]
    assert "[chief:0] fit done on chief" in node_lines and "[worker:0] fit done on worker" in node_lines
    for name, records in cluster.progress.items():
        assert [r["epoch"] for r in records if r.get("epoch_end")] == [1, 2, 3], name
        assert all("loss" in r["metrics"] for r in records if r.get("epoch_end")), name
        assert records[-1]["stage"] == "evaluated", name
    chief, worker = np.load(tmp_path / "chief-0.npy"), np.load(tmp_path / "worker-0.npy")
    np.testing.assert_allclose(chief, worker, rtol=1e-6, atol=1e-6)
    report = json.loads((tmp_path / "chief-0.json").read_text())
    assert report["keras"] == package
    assert report["loss"][-1] < report["loss"][0]


# ------------------------------------------------------------------- failure


def test_raising_node_reaches_the_driver_with_its_traceback_in_seconds(sc, tmp_path):
    marker = str(tmp_path / "raised_at")
    cluster = tfos.run(sc, raise_on_worker, marker, num_executors=2)
    with pytest.raises(tfos.ClusterFailedError) as err:
        cluster.shutdown(timeout=120)
    caught = time.time()
    raised = float(open(marker).read())
    assert caught - raised < 10
    message = str(err.value)
    assert message.startswith("TF cluster failed (while waiting for the nodes to finish): node worker:0 (host 127.0.0.1")
    assert "main_fun raised ValueError: bad batch shape (raised on purpose)" in message
    assert 'in raise_on_worker\n    raise ValueError("bad batch shape (raised on purpose)")' in message
    root = err.value.root_cause
    assert (root.job_name, root.task_index, root.exit_code) == ("worker", 0, 1)
    assert root.executor_id in {n.executor_id for n in cluster.cluster_info}


def test_killed_tf_process_is_reported_and_nothing_is_left(sc, tmp_path):
    cluster = tfos.run(sc, sleep_and_tell_pid, str(tmp_path), num_executors=2)
    wait_for(tmp_path / "worker.pid")
    wait_for(tmp_path / "chief.pid")
    ports = [(n.host, n.port) for n in cluster.cluster_info]
    server_port = cluster.server.port
    os.kill(int((tmp_path / "worker.pid").read_text()), signal.SIGKILL)
    killed = time.monotonic()
    with pytest.raises(tfos.ClusterFailedError) as err:
        cluster.shutdown(timeout=120)
    assert time.monotonic() - killed < 10
    assert "node worker:0 (host 127.0.0.1" in str(err.value)
    assert "TF process was killed by SIGKILL (exit code -9)" in str(err.value)
    assert wait_no_node_processes() == []
    assert not any(listening(h, p) for h, p in ports)
    assert not listening("127.0.0.1", server_port)


@pytest.mark.parametrize("mode,evidence", [
    (tfos.InputMode.TENSORFLOW, "node supervisor (pid {pid}) was killed by SIGKILL (exit code -9) before reporting a result"),
    # CI time: the lost heartbeat is declared in the default run by
    # tests/unit/test_reservation_load.py::test_driver_declares_exactly_the_silent_nodes_lost
    pytest.param(tfos.InputMode.SPARK, "no heartbeat for 3 s (node process or executor died?)", marks=pytest.mark.slow),
])
def test_killed_supervisor_is_reported_and_its_tf_process_dies_with_it(sc, tmp_path, mode, evidence):
    cluster = tfos.run(sc, sleep_and_tell_pid, str(tmp_path), num_executors=2, input_mode=mode,
                       heartbeat_interval_s=0.5, heartbeat_timeout_s=3.0)
    wait_for(tmp_path / "worker.pid")
    tf_pid = int((tmp_path / "worker.pid").read_text())
    supervisor = psutil.Process(tf_pid).parent()
    assert "tfos.node.supervisor" in " ".join(supervisor.cmdline())
    supervisor.kill()
    killed = time.monotonic()
    with pytest.raises(tfos.ClusterFailedError) as err:
        cluster.shutdown(timeout=120)
    assert time.monotonic() - killed < 10
    assert "node worker:0 (host 127.0.0.1" in str(err.value)
    assert evidence.format(pid=supervisor.pid) in str(err.value)
    # the TF process dies with its supervisor (parent-death signal); a big process takes a
    # moment to tear down after SIGKILL, so allow it a few seconds
    assert wait_until(lambda: process_gone(tf_pid), 10)


def test_killed_spark_task_fails_the_run_fast_without_a_second_registration(sc, tmp_path):
    cluster = tfos.run(sc, sleep_and_tell_pid, str(tmp_path), num_executors=2)
    wait_for(tmp_path / "worker.pid")
    tf_proc = psutil.Process(int((tmp_path / "worker.pid").read_text()))
    task_process = tf_proc.parent().parent()  # TF process -> supervisor -> pyspark worker
    assert "pyspark" in " ".join(task_process.cmdline())
    task_process.kill()
    start = time.monotonic()
    with pytest.raises(tfos.ClusterFailedError) as err:
        cluster.shutdown(timeout=120)
    assert time.monotonic() - start < 15
    assert "node worker:0" in str(err.value)
    assert [n.job_name for n in cluster.cluster_info] == ["chief", "worker"]


# ------------------------------------------------------------- tensorboard


def _wait_for_file(args, ctx):
    import os as _os
    import time as _time

    end = _time.time() + 90
    while not _os.path.exists(args) and _time.time() < end:
        _time.sleep(0.2)


def test_tensorboard_url_answers_while_the_cluster_runs_and_not_after(sc, tmp_path):
    release = tmp_path / "release"
    cluster = tfos.run(sc, _wait_for_file, str(release), num_executors=2, tensorboard=True,
                       log_dir=str(tmp_path / "tb"))
    url = cluster.tensorboard_url()
    assert url is not None and url.startswith("http://127.0.0.1:")
    status, end = None, time.monotonic() + 60
    while time.monotonic() < end:
        try:
            status = urllib.request.urlopen(url, timeout=2).status
            break
        except OSError:
            time.sleep(0.5)
    release.write_text("go")
    cluster.shutdown(timeout=120)
    assert status == 200
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)


@pytest.mark.slow  # CI time; covered in the default run by the URL's life: test_tensorboard_url_answers_while_the_cluster_runs_and_not_after
def test_no_tensorboard_means_no_url(sc, tmp_path):
    cluster = tfos.run(sc, _report_context, str(tmp_path), num_executors=2)
    cluster.shutdown(timeout=120)
    assert cluster.tensorboard_url() is None


# ------------------------------------------------------------ SPARK mode node


@pytest.mark.slow  # CI time; every SPARK-mode feed of the default run (test_feed.py) needs the slots the node tasks free
def test_spark_mode_node_tasks_free_their_slots_while_tf_runs(sc, tmp_path):
    release = tmp_path / "release"
    cluster = tfos.run(sc, _wait_for_file, str(release), num_executors=2, input_mode=tfos.InputMode.SPARK)
    # both executors' only slots are free again: a plain Spark job runs while the TF processes live
    assert sc.parallelize(range(4), 2).map(lambda x: x * 2).sum() == 12
    assert all(n.state == "running" for n in cluster.cluster_info)
    release.write_text("go")
    cluster.shutdown(timeout=120)
    assert all(n.state == "done" for n in cluster.cluster_info)


# ------------------------------------------------------------------ secret


def test_the_secret_never_shows_in_logs_errors_or_cluster_info(sc, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    cluster = tfos.run(sc, raise_on_worker, str(tmp_path / "m"), num_executors=2)
    secret = cluster._secret.value
    with pytest.raises(tfos.ClusterFailedError) as err:
        cluster.shutdown(timeout=120)
    for text in (caplog.text, str(err.value), repr(cluster), repr(cluster.cluster_info), repr(cluster._launch)):
        assert secret.hex() not in text
        assert repr(secret) not in text
