"""Restart from checkpoint: a worker's TF process killed with SIGKILL mid-training, and the
run (max_restarts=1) finishes from the last checkpoint with a model as good as an
uninterrupted run's; in InputMode.SPARK, a node stuck at an epoch boundary restarts the run
and the feed resumes."""

from __future__ import annotations

import collections
import json
import sys
import time

import cloudpickle
import pytest

import tfos

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
cloudpickle.register_pickle_by_value(sys.modules[__name__])

EPOCHS = 6


def _train_with_checkpoints(args, ctx):
    """MWMS regression; the chief checkpoints weights + epoch after every epoch; every node
    resumes from the checkpoint when one exists. On attempt 0, worker:0 SIGKILLs itself
    after epoch ``args["kill_after"]`` (a real kill -9 of its TF process)."""
    import json as _json
    import os as _os
    import signal

    import keras
    import numpy as np
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    keras.utils.set_random_seed(7)
    x = np.random.default_rng(0).normal(size=(512, 4)).astype("float32")
    y = (x @ np.array([1.5, -2.0, 0.5, 1.0], dtype="float32") + 0.3)[:, None]
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    weights = _os.path.join(args["dir"], "ckpt.weights.h5")
    meta = _os.path.join(args["dir"], "ckpt.json")
    initial_epoch = 0
    if _os.path.exists(meta):
        model.load_weights(weights)
        initial_epoch = _json.load(open(meta))["epoch"]

    class Checkpoint(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if ctx.is_chief:  # one writer; rename makes the pair appear whole
                model.save_weights(weights + ".tmp.weights.h5")
                _os.replace(weights + ".tmp.weights.h5", weights)
                with open(meta + ".tmp", "w") as f:
                    _json.dump({"epoch": epoch + 1}, f)
                _os.replace(meta + ".tmp", meta)
            if ctx.attempt == 0 and ctx.job_name == "worker" and epoch + 1 == args["kill_after"]:
                _os.kill(_os.getpid(), signal.SIGKILL)

    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    model.fit(dataset, epochs=args["epochs"], initial_epoch=initial_epoch, verbose=0, callbacks=[Checkpoint()])
    loss = float(model.evaluate(dataset, verbose=0))  # a collective: every node takes part
    if ctx.is_chief:
        with open(_os.path.join(args["dir"], "result.json"), "w") as f:
            _json.dump({"attempt": ctx.attempt, "initial_epoch": initial_epoch, "loss": loss}, f)


def _run(sc, directory, kill_after: int, max_restarts: int):
    cluster = tfos.run(sc, _train_with_checkpoints, {"dir": str(directory), "epochs": EPOCHS,
                                                     "kill_after": kill_after}, num_executors=2,
                       max_restarts=max_restarts)
    cluster.shutdown(timeout=240)
    return cluster, json.loads((directory / "result.json").read_text())


@pytest.mark.slow  # CI time; covered in the default run by restart from a checkpoint: test_storage's restart test; a restart: the stuck-node test
def test_a_killed_worker_restarts_the_run_from_its_last_checkpoint(sc, tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "killed").mkdir()
    _, plain = _run(sc, tmp_path / "plain", kill_after=0, max_restarts=0)
    start = time.monotonic()
    cluster, killed = _run(sc, tmp_path / "killed", kill_after=3, max_restarts=1)
    assert killed["attempt"] == 1
    assert killed["initial_epoch"] >= 2  # resumed from a checkpoint, not from scratch
    assert killed["loss"] <= plain["loss"] * 1.1 + 1e-3
    assert len(cluster.attempt_failures) == 1
    root = cluster.attempt_failures[0][0]
    assert root.name == "worker:0" and "SIGKILL" in root.describe()
    assert [a for a, _ in cluster.restart_times] == [1]
    assert cluster.restart_times[0][1] < time.monotonic() - start


def _always_fails(args, ctx):
    raise RuntimeError(f"bad input on attempt {ctx.attempt}")


@pytest.mark.slow  # CI time; covered in the default run by the error's content: tests/unit/test_restart.py
def test_when_restarts_run_out_the_error_lists_every_attempts_root_cause(sc):
    with pytest.raises(tfos.ClusterFailedError) as err:
        cluster = tfos.run(sc, _always_fails, None, num_executors=2, max_restarts=1)
        cluster.shutdown(timeout=120)
    text = str(err.value)
    assert "2 attempt(s)" in text
    assert "bad input on attempt 0" in text and "bad input on attempt 1" in text


def _stuck_at_an_epoch_boundary(args, ctx):
    """InputMode.SPARK. On attempt 0 worker:0 takes the first train() call's records and, once
    that call returned (the test says so), its TF process stops (SIGSTOP: alive to its
    supervisor, whose heartbeats go on, but deaf to the feed), so the next train() call's
    first epoch plan gets no answer. Every node writes the records it read on attempt 1."""
    import json as _json
    import os as _os
    import signal
    import time as _time

    feed = ctx.get_data_feed(train_mode=True)
    if ctx.attempt == 0:
        taken = 0
        while taken < args["first_per_node"]:
            taken += len(feed.next_batch(args["first_per_node"] - taken))
        if ctx.job_name == "worker":
            go = _os.path.join(args["dir"], "stop-now")
            for _ in range(600):  # stopped earlier, the feed thread could not acknowledge the feed's end
                if _os.path.exists(go):
                    break
                _time.sleep(0.1)
            open(_os.path.join(args["dir"], "stopping"), "w").close()
            _os.kill(_os.getpid(), signal.SIGSTOP)
    seen = []
    while not feed.should_stop():
        seen.extend(feed.next_batch(100))
    with open(_os.path.join(args["dir"], f"attempt{ctx.attempt}-{ctx.job_name}.json"), "w") as f:
        _json.dump(seen, f)


def test_a_node_stuck_at_an_epoch_boundary_restarts_the_run_and_the_feed_resumes(sc, tmp_path):
    cluster = tfos.run(sc, _stuck_at_an_epoch_boundary, {"dir": str(tmp_path), "first_per_node": 100},
                       num_executors=2, input_mode=tfos.InputMode.SPARK, max_restarts=1)
    first = cluster.train(sc.parallelize(range(200), 2), num_epochs=1)
    assert first.records_per_node == [100, 100] and not first.terminated, first
    (tmp_path / "stop-now").touch()
    deadline = time.monotonic() + 60
    while not (tmp_path / "stopping").exists():
        assert time.monotonic() < deadline, "worker:0 never took its records"
        time.sleep(0.1)
    time.sleep(1)  # its SIGSTOP lands
    started = time.monotonic()
    report = cluster.train(sc.parallelize(range(1000, 1300), 2), num_epochs=2, feed_timeout=5)
    resumed_in = time.monotonic() - started
    cluster.shutdown(timeout=120)
    assert cluster.attempt == 1 and report.epochs_fed == 2
    root = cluster.attempt_failures[0][0]
    assert root.name == "worker:0"
    # the cause in the brackets is the feed's own (no answer to the handshake or to the plan)
    assert root.reason.startswith("node worker:0's feed did not take epoch 1's plan ("), root.reason
    assert root.reason.endswith("); it still runs, so its TF process is stuck or its feed broke"), root.reason
    seen = []
    for job in ("chief", "worker"):
        seen += json.loads((tmp_path / f"attempt1-{job}.json").read_text())
    counts = collections.Counter(seen)
    assert set(counts) == set(range(1000, 1300)) and set(counts.values()) == {2}  # both epochs, on attempt 1
    assert resumed_in < 120
