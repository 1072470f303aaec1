"""A training job as a YARN user submits one, for tests/integration/test_yarn.py.

The driver writes the training data to HDFS (``dfutil.save_as_tfrecords``), then runs a
2-node MultiWorkerMirroredStrategy ``fit`` whose nodes read their shards back from HDFS
(``ctx.shard_files`` + ``ctx.tfrecord_dataset``), with TensorBoard on the chief's executor.
The chief writes its TensorBoard events and ``results.json`` into ``ctx.local_dir``
directories, which tfos mirrors to ``--storage`` (``tfos submit --storage hdfs://...``).
The driver checks that TensorBoard answers while the run goes (and tells the chief so
through storage, so the run does not end first), then prints one ``RESULT {json}`` line
from what storage holds after ``shutdown()``.

    tfos submit --master yarn --deploy-mode cluster --cluster-size 2 --storage hdfs://nn/runs/r \
        yarn_train.py --data hdfs://nn/data/train --epochs 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request

RECORDS = 2048
BATCH = 64
WEIGHTS = [0.5, -1.0, 2.0, 0.25]
TENSORBOARD_SEEN = "tensorboard-seen"


def main_fun(args, ctx):
    import json
    import os
    import time

    import tensorflow as tf

    from tfos import storage

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    spec = {"x": tf.io.FixedLenFeature([4], tf.float32), "y": tf.io.FixedLenFeature([], tf.float32)}

    def parse(record):
        example = tf.io.parse_single_example(record, spec)
        return example["x"], example["y"]

    files = ctx.shard_files(args.data + "/part-*")
    data = ctx.tfrecord_dataset(files).map(parse).repeat().batch(BATCH)
    with strategy.scope():
        model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])
        model.compile(optimizer=tf.keras.optimizers.SGD(0.1), loss="mse")
    # every node runs the same callbacks; only the chief's directory is mirrored to storage
    log_dir = ctx.log_dir if ctx.is_chief else ctx.local_dir("scratch-tensorboard")
    history = model.fit(data, epochs=args.epochs, steps_per_epoch=RECORDS // BATCH,
                        callbacks=[tf.keras.callbacks.TensorBoard(log_dir=log_dir)], verbose=0)
    if not ctx.is_chief:
        return
    export = ctx.local_dir("export")
    with open(os.path.join(export, "results.json"), "w") as f:
        json.dump({"loss": [float(v) for v in history.history["loss"]], "files": files,
                   "num_workers": ctx.num_workers, "cwd": os.getcwd()}, f)
    # keep TensorBoard up until the driver has seen it answer (it starts once the cluster formed)
    deadline = time.monotonic() + 120
    while not storage.glob(f"{args.storage}/{TENSORBOARD_SEEN}") and time.monotonic() < deadline:
        time.sleep(0.5)


def write_data(spark, uri: str) -> None:
    import random

    from tfos import dfutil

    rng = random.Random(7)
    rows = []
    for _ in range(RECORDS):
        x = [rng.uniform(-1, 1) for _ in WEIGHTS]
        rows.append((x, sum(w * v for w, v in zip(WEIGHTS, x, strict=True))))
    frame = spark.createDataFrame(rows, "x array<float>, y float").repartition(4)
    dfutil.save_as_tfrecords(frame, uri, overwrite=True)


def wait_for_tensorboard(url: str, timeout_s: float = 120) -> int:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                return reply.status
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True, help="where the driver writes the TFRecords (a URI)")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)

    from pyspark.sql import SparkSession

    import tfos
    from tfos import storage
    from tfos.spark.conf import STORAGE_KEY
    from tfos.storage.filesystems import read_bytes

    spark = SparkSession.builder.appName("tfos-yarn-train").getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    args.storage = spark.conf.get(STORAGE_KEY)  # tfos submit --storage
    try:
        write_data(spark, args.data)
        cluster = tfos.run(spark.sparkContext, main_fun, args, tensorboard=True,
                           input_mode=tfos.InputMode.TENSORFLOW, master_node="chief")
        url = cluster.tensorboard_url()
        status = wait_for_tensorboard(url)
        location = storage.resolve(f"{args.storage}/{TENSORBOARD_SEEN}")
        with location.fs.open_output_stream(location.path) as out:
            out.write(b"yes")
        cluster.shutdown(timeout=300)  # returns once the chief's directories are in storage
    finally:
        master = spark.sparkContext.master
        spark.stop()
    results = json.loads(read_bytes(f"{args.storage}/export/results.json"))
    events = storage.glob(f"{args.storage}/tensorboard/**")
    print("RESULT " + json.dumps({"master": master, "tensorboard_url": url, "tensorboard_status": status,
                                  "events": [e for e in events if "tfevents" in e], **results}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
