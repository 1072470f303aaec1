"""tfos.run from a Spark Connect client session, against a real Connect server.

The server (tests/connect_server.py) runs pyspark's own SparkConnectServer on
local-cluster[2,1,1024] bound to 127.0.0.1; this process holds only a client session:
no SparkContext, no RDDs, no py4j. The reservation server runs here, in the client.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import signal
import socket
import sys
import threading
import time

import cloudpickle
import numpy as np
import pytest

import tfos
from tests.integration.node_functions import (
    answer_from_columns,
    collect_ids,
    mwms_fit,
    raise_on_worker,
    sleep_and_tell_pid,
    wait_for,
)
from tests.integration.spark_helpers import listening, wait_no_node_processes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

cloudpickle.register_pickle_by_value(sys.modules[__name__])


# ------------------------------------------------------------ InputMode.TENSORFLOW


def test_mwms_fit_from_a_connect_session_trains_both_nodes_in_step(remote, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="tfos.nodes")
    cluster = tfos.run(remote, mwms_fit, {"api": "keras3", "out": str(tmp_path)}, num_executors=2,
                       tensorboard=True)
    assert cluster.app.remote and cluster.sc is None
    url = cluster.tensorboard_url()
    assert url and url.startswith("http://127.0.0.1:")
    text = repr(cluster)
    assert "chief:0" in text and "worker:0" in text
    cluster.shutdown(timeout=150)
    lines = [r.getMessage() for r in caplog.records if r.name == "tfos.nodes"]
    assert "[chief:0] fit done on chief" in lines and "[worker:0] fit done on worker" in lines
    for name, records in cluster.progress.items():
        assert [r["epoch"] for r in records if r.get("epoch_end")] == [1, 2, 3], name
    np.testing.assert_allclose(np.load(tmp_path / "chief-0.npy"), np.load(tmp_path / "worker-0.npy"),
                               rtol=1e-6, atol=1e-6)
    chief = json.loads((tmp_path / "chief-0.json").read_text())
    assert chief["loss"][-1] < chief["loss"][0]
    assert chief["tf_config"]["cluster"] == cluster.cluster_spec
    assert not listening("127.0.0.1", cluster.server.port)


def test_more_nodes_than_the_connect_server_has_executors_fails_at_once(remote):
    start = time.monotonic()
    with pytest.raises(tfos.SparkPreconditionError, match=r"configured for 2 executor\(s\)"):
        tfos.run(remote, mwms_fit, {}, num_executors=3)
    assert time.monotonic() - start < 10


def _chief_and_evaluator(out, ctx):
    """Each node writes its role and TF_CONFIG; the evaluator waits for the chief's marker."""
    import json as _json
    import os as _os
    import time as _time

    done = _os.path.join(out, "chief-done")
    if ctx.job_name == "evaluator":
        while not _os.path.exists(done):
            _time.sleep(0.1)
    with open(_os.path.join(out, f"{ctx.job_name}.json"), "w") as f:
        _json.dump({"task": [ctx.job_name, ctx.task_index, ctx.worker_num, ctx.num_workers],
                    "tf_config": _json.loads(_os.environ["TF_CONFIG"])}, f)
    if ctx.job_name == "chief":
        open(done, "w").close()


@pytest.mark.slow  # CI time; the evaluator's role and TF_CONFIG are the same node code as test_roles_three.py's evaluator test in the default run
def test_an_evaluator_from_a_connect_session_runs_beside_the_chief_and_finishes(remote, tmp_path):
    cluster = tfos.run(remote, _chief_and_evaluator, str(tmp_path), num_executors=2, eval_node=True)
    cluster.shutdown(grace_secs=60, timeout=120)
    chief = json.loads((tmp_path / "chief.json").read_text())
    evaluator = json.loads((tmp_path / "evaluator.json").read_text())
    assert chief["task"] == ["chief", 0, 0, 1]
    assert evaluator["task"] == ["evaluator", 0, -1, 1]
    # TF's convention: the evaluator is not in the cluster spec it gets, only in its task
    assert evaluator["tf_config"]["task"] == {"type": "evaluator", "index": 0}
    assert set(evaluator["tf_config"]["cluster"]) == {"chief"}
    assert chief["tf_config"]["cluster"] == evaluator["tf_config"]["cluster"] == cluster.cluster_spec
    assert {n.job_name: n.state for n in cluster.cluster_info} == {"chief": "done", "evaluator": "done"}


# ------------------------------------------------------------------ InputMode.SPARK


def test_a_dataframe_feed_reaches_each_node_exactly_once_per_epoch(remote, tmp_path):
    from pyspark import StorageLevel

    # 6 skewed partitions (1000, 1000, 1000, 10, 11, 10 rows) on 2 task slots
    df = remote.range(0, 6000, 1, 6).where("id < 3000 or id % 97 = 0")
    total = df.count()
    cluster = tfos.run(remote, collect_ids, str(tmp_path), num_executors=2, input_mode=tfos.InputMode.SPARK)
    report = cluster.train(df, num_epochs=2)
    with pytest.raises(tfos.FeedError, match="over Spark Connect, cluster.train/inference take a DataFrame"):
        cluster.train([(1, 2)], num_epochs=1)
    cluster.shutdown(timeout=120)
    counts = collections.Counter()
    for name in ("chief", "worker"):
        counts.update(json.loads((tmp_path / f"{name}.json").read_text()))
    assert set(counts) == set(df.toPandas()["id"]) and len(counts) == total
    assert set(counts.values()) == {2}
    assert (report.records_per_epoch, report.epochs_fed, report.transport) == (total, 2, "arrow")
    assert len(report.partition_sizes) == 6 and sum(report.partition_sizes) == total  # its own partitions
    assert df.storageLevel == StorageLevel.NONE  # persisted for the call only


def _sum_ids_slowly(out, ctx):
    """Takes the feed in small batches with a pause now and then, so the feeders fill every
    credit and buffer on the way and wait; writes (records, sum of ids, sum of image bytes)."""
    import json as _json
    import os as _os
    import time as _time

    feed = ctx.get_data_feed(train_mode=True)
    seen = ids = total = 0
    while not feed.should_stop():
        batch = feed.next_batch(500)
        seen += len(batch)
        ids += sum(int(record[1]) for record in batch)
        total += sum(len(record[0]) for record in batch)
        if seen % 20_000 < 500:
            _time.sleep(0.5)
    with open(_os.path.join(out, f"{ctx.job_name}.json"), "w") as f:
        _json.dump([seen, ids, total], f)


def test_a_connect_feed_of_more_than_every_buffer_holds_arrives_whole(remote, tmp_path):
    # 120,000 rows of 784 bytes (~94 MB per epoch, 2 epochs): far more than the credits and
    # socket buffers between a feeding task and its node hold, with a consumer that stalls
    n = 120_000
    df = (remote.range(0, n, 1, 4)
          .selectExpr("cast(repeat(cast(id % 10 as string), 784) as binary) as image", "id as label"))
    cluster = tfos.run(remote, _sum_ids_slowly, str(tmp_path), num_executors=2, input_mode=tfos.InputMode.SPARK)
    report = cluster.train(df, num_epochs=2, feed_timeout=120)
    cluster.shutdown(timeout=150)
    totals = [json.loads((tmp_path / f"{name}.json").read_text()) for name in ("chief", "worker")]
    assert [sum(t[i] for t in totals) for i in range(3)] == [2 * n, 2 * (n * (n - 1) // 2), 2 * n * 784]
    assert report.epochs_fed == 2 and report.records_per_epoch == n


def _mwms_fit_on_frame(out, ctx):
    import json as _json
    import os as _os

    import keras
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    data = ctx.dataset(batch_size=16).map(lambda b: (b["x"], b["y"]))
    history = model.fit(data, epochs=2, verbose=0, callbacks=[ctx.progress_callback()])
    with open(_os.path.join(out, f"{ctx.job_name}.json"), "w") as f:
        _json.dump({"loss": history.history["loss"]}, f)


@pytest.mark.slow  # CI time; in the default run the Connect feed is checked by test_a_dataframe_feed_reaches_each_node_exactly_once_per_epoch, MWMS over Connect by test_mwms_fit_from_a_connect_session_trains_both_nodes_in_step, and fed MWMS fit by test_feed.py
def test_mwms_fit_on_a_dataframe_fed_over_connect(remote, tmp_path):
    df = remote.range(0, 800, 1, 3).selectExpr(
        "array(cast(id % 7 as float), 1.0f, cast(id % 3 as float), 0.5f) as x", "cast(id % 7 as float) * 0.3f as y")
    cluster = tfos.run(remote, _mwms_fit_on_frame, str(tmp_path), num_executors=2, input_mode=tfos.InputMode.SPARK)
    report = cluster.train(df, num_epochs=2)
    cluster.shutdown(timeout=150)
    assert report.epochs_fed == 2 and report.dropped_per_epoch == 0
    for name in ("chief", "worker"):
        loss = json.loads((tmp_path / f"{name}.json").read_text())["loss"]
        assert len(loss) == 2 and 0 < loss[-1] < loss[0]
    assert [r["epoch"] for r in cluster.progress["chief:0"] if r.get("epoch_end")] == [1, 2]


def test_inference_over_connect_returns_a_dataframe_in_input_order(remote):
    df = remote.range(0, 20_000, 1, 5).selectExpr("id", "concat('r', id) as name")
    cluster = tfos.run(remote, answer_from_columns, None, num_executors=2, input_mode=tfos.InputMode.SPARK)
    out = cluster.inference(df, output_schema="times_ten long, shout string")
    with pytest.raises(tfos.FeedError, match="needs output_schema"):
        cluster.inference(df)
    rows = out.collect()
    cluster.shutdown(timeout=120)
    assert out.columns == ["id", "name", "times_ten", "shout"]
    assert [tuple(r) for r in rows] == [(i, f"r{i}", i * 10, f"r{i}!") for i in range(20_000)]


# ------------------------------------------------------------------ failures


def test_a_raising_node_reaches_the_client_with_its_traceback_in_seconds(remote, tmp_path):
    marker = str(tmp_path / "raised_at")
    cluster = tfos.run(remote, raise_on_worker, marker, num_executors=2)
    with pytest.raises(tfos.ClusterFailedError) as err:
        cluster.shutdown(timeout=120)
    assert time.time() - float(open(marker).read()) < 10
    message = str(err.value)
    assert "node worker:0 (host 127.0.0.1" in message
    assert "main_fun raised ValueError: bad batch shape (raised on purpose)" in message
    assert 'raise ValueError("bad batch shape (raised on purpose)")' in message


@pytest.mark.slow  # CI time; a failing node over Connect is test_a_raising_node_reaches_the_client_with_its_traceback_in_seconds, a killed TF process test_launch.py's (same driver-side code)
def test_a_killed_tf_process_fails_the_run_and_leaves_nothing(remote, tmp_path):
    cluster = tfos.run(remote, sleep_and_tell_pid, str(tmp_path), num_executors=2)
    wait_for(tmp_path / "worker.pid")
    wait_for(tmp_path / "chief.pid")
    os.kill(int((tmp_path / "worker.pid").read_text()), signal.SIGKILL)
    killed = time.monotonic()
    with pytest.raises(tfos.ClusterFailedError) as err:
        cluster.shutdown(timeout=120)
    assert time.monotonic() - killed < 10
    assert "TF process was killed by SIGKILL (exit code -9)" in str(err.value)
    assert wait_no_node_processes() == []


# ------------------------------------------------------- a client out of reach


@pytest.fixture
def silent_listener():
    """A port on 127.0.0.1 that accepts connections and never answers (a firewall that drops,
    a NAT with nothing behind it): what executors meet at a client they cannot reach."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    listener.close()


def test_a_client_the_executors_cannot_reach_fails_in_seconds_naming_the_address(remote, silent_listener,
                                                                                 monkeypatch):
    # the reservation server binds 127.0.0.2 but advertises 127.0.0.1, where nothing answers
    monkeypatch.setenv("TFOS_SERVER_HOST", "127.0.0.1")
    monkeypatch.setenv("TFOS_SERVER_BIND_HOST", "127.0.0.2")
    monkeypatch.setenv("TFOS_SERVER_PORT", str(silent_listener))
    start = time.monotonic()
    with pytest.raises(tfos.ClusterFailedError) as err:
        tfos.run(remote, sleep_and_tell_pid, "/nonexistent", num_executors=2, reservation_timeout=120)
    elapsed = time.monotonic() - start
    assert elapsed < 40, elapsed
    message = str(err.value)
    assert f"cannot reach tfos's reservation server at 127.0.0.1:{silent_listener}" in message
    assert "TFOS_SERVER_HOST" in message


# ------------------------------------------------------------------ parallel_run


def _instance_over_connect(args, ctx):
    import os as _os

    if ctx.worker_num == args["fail"]:
        raise RuntimeError(f"instance {ctx.worker_num} gives up")
    return {"index": ctx.worker_num, "num_workers": ctx.num_workers, "tf_config": _os.environ.get("TF_CONFIG"),
            "pid": _os.getpid(), "lr": args["lrs"][ctx.worker_num]}


def test_parallel_run_over_connect_returns_each_instance_result_in_index_order(remote):
    results = tfos.parallel_run(remote, _instance_over_connect, {"fail": -1, "lrs": [0.1, 0.01]}, num_executors=2)
    assert [(r["index"], r["num_workers"], r["lr"]) for r in results] == [(0, 2, 0.1), (1, 2, 0.01)]
    assert all(r["tf_config"] is None for r in results)
    assert results[0]["pid"] != results[1]["pid"]
    assert wait_no_node_processes() == []


def test_a_failing_parallel_instance_over_connect_is_reported_and_the_others_kept(remote):
    with pytest.raises(tfos.ParallelRunError) as err:
        tfos.parallel_run(remote, _instance_over_connect, {"fail": 1, "lrs": [0.1, 0.2, 0.3]}, num_executors=3,
                          use_barrier=False)
    error = err.value
    assert [f.task_index for f in error.failures] == [1]
    assert error.failures[0].reason == "main_fun raised RuntimeError: instance 1 gives up"
    assert 'raise RuntimeError(f"instance {ctx.worker_num} gives up")' in error.failures[0].traceback
    assert [r and r["lr"] for r in error.results] == [0.1, None, 0.3]
