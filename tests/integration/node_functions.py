"""``main_fun``s the launch tests share (classic and Spark Connect sessions run the same ones).

Shipped by value: the executors cannot import the tests package.
"""

from __future__ import annotations

import os
import sys
import time

import cloudpickle

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def wait_for(path, timeout_s=60.0):
    """Block until ``path`` exists (a node wrote it), at most ``timeout_s``."""
    end = time.monotonic() + timeout_s
    while not os.path.exists(path):
        if time.monotonic() > end:
            raise AssertionError(f"{path} did not appear within {timeout_s} s")
        time.sleep(0.1)


def raise_on_worker(marker, ctx):
    """The worker writes the time to ``marker`` and raises; the chief sleeps."""
    import time as _time

    if ctx.job_name == "worker":
        with open(marker, "w") as f:
            f.write(repr(_time.time()))
        raise ValueError("bad batch shape (raised on purpose)")
    _time.sleep(120)


def sleep_and_tell_pid(out, ctx):
    """Each node writes its TF process's pid to ``out/<job>.pid``, then sleeps."""
    import os as _os
    import time as _time

    with open(_os.path.join(out, f"{ctx.job_name}.pid"), "w") as f:
        f.write(str(_os.getpid()))
    _time.sleep(120)


def mwms_fit(args, ctx):
    """MWMS fit of a small regression (``args``: ``api`` keras3 or tf.keras, ``out`` dir); each
    node saves its weights and a JSON of its losses, Keras package and TF_CONFIG."""
    import os as _os

    import numpy as _np

    if args["api"] == "keras3":
        import keras
    else:
        import tensorflow as _tf

        keras = _tf.keras
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    rng = _np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = (x @ rng.normal(size=(8, 1))).astype("float32")
    with strategy.scope():
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    history = model.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=[ctx.progress_callback()])
    model.evaluate(x, y, batch_size=32, verbose=0)
    ctx.report_progress(stage="evaluated")
    print(f"fit done on {ctx.job_name}", flush=True)
    out = args["out"]
    _np.save(_os.path.join(out, f"{ctx.job_name}-{ctx.task_index}.npy"),
             _np.concatenate([w.ravel() for w in model.get_weights()]))
    with open(_os.path.join(out, f"{ctx.job_name}-{ctx.task_index}.json"), "w") as f:
        import json as _json

        _json.dump({"loss": history.history["loss"], "keras": type(model).__module__.split(".")[0],
                    "tf_config": _json.loads(_os.environ["TF_CONFIG"])}, f)


def collect_ids(out, ctx):
    """InputMode.SPARK: read the feed to its end; write the first field of every record to
    ``out/<job>.json`` (an RDD's ``(id, ...)`` records, a DataFrame's rows as tuples)."""
    import json as _json
    import os as _os

    feed = ctx.get_data_feed(train_mode=True)
    seen = []
    while not feed.should_stop():
        seen.extend(record[0] for record in feed.next_batch(100))
    with open(_os.path.join(out, f"{ctx.job_name}.json"), "w") as f:
        _json.dump(seen, f)


def answer_from_columns(args, ctx):
    """Inference through DataFeed with input_mapping: ``(id * 10, name + "!")`` per row."""
    feed = ctx.get_data_feed(train_mode=False, input_mapping={"id": "ids", "name": "names"})
    while not feed.should_stop():
        batch = feed.next_batch(250)
        if len(batch["ids"]):
            feed.batch_results([(int(i) * 10, f"{n}!") for i, n in zip(batch["ids"], batch["names"], strict=True)])
