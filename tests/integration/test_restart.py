"""Restart from checkpoint: a worker's TF process killed with SIGKILL mid-training, and the
run (max_restarts=1) finishes from the last checkpoint with a model as good as an
uninterrupted run's."""

from __future__ import annotations

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


def test_when_restarts_run_out_the_error_lists_every_attempts_root_cause(sc):
    with pytest.raises(tfos.ClusterFailedError) as err:
        cluster = tfos.run(sc, _always_fails, None, num_executors=2, max_restarts=1)
        cluster.shutdown(timeout=120)
    text = str(err.value)
    assert "2 attempt(s)" in text
    assert "bad input on attempt 0" in text and "bad input on attempt 1" in text
