"""InputMode.SPARK against InputMode.TENSORFLOW: the same MWMS ``fit``, the same records, one run.

The model: a small CNN (two 3x3 convolutions of 16 and 32 filters, max-pooling, a dense
softmax over 10 classes) on 28x28x1 uint8 images scaled to [0, 1], global batch 128,
MultiWorkerMirroredStrategy on 2 executors (``local-cluster[2,1,1024]``). The records:
``--records`` random images with random labels (fixed seed; the speed, not the accuracy,
is measured), 4 parts of equal size, so each node takes half of them per epoch.

* TENSORFLOW mode (the reference): the parts as 4 TFRecord files on local disk; each node
  reads its 2 files (``ctx.shard_files``) with ``tf.data.TFRecordDataset``, batches by 128,
  parses the batch (``parse_example``, ``decode_raw``).
* SPARK mode, DataFrame: a cached DataFrame ``image binary, label long`` fed by
  ``cluster.train(df, num_epochs=E)``; each node reads ``ctx.dataset({"image":
  TensorSpec([784], uint8), "label": ...}, batch_size=128)``.
* SPARK mode, RDD: the same as a cached RDD of ``(bytes, label)`` tuples.

Every fit runs ``--epochs`` epochs' worth of steps (``steps_per_epoch`` times ``epochs``, in
one Keras epoch: each node takes exactly its records); the chief times the steps after the
first epoch (tracing and warm-up excluded). The figure is records per second of those
steps, best of ``--rounds`` rounds per input, and its ratio to TENSORFLOW mode (goal: >=
0.9x); also each round's ratio to the TENSORFLOW run of the same round, and their median
(this machine drifts by up to 1.7x between rounds). CPU seconds per 100k records by role
cover the run from ``tfos.run``'s return to the nodes' last step (the TF processes are still alive when the snapshot is taken).

Usage: python bench/train_modes.py [--records 24576] [--epochs 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import start_spark  # noqa: E402
from feed import cpu_by_role, cpu_delta  # noqa: E402

import tfos  # noqa: E402

BATCH = 128
PARTS = 4


def records_of(part: int, n: int) -> list[tuple[bytes, int]]:
    import numpy as np

    rng = np.random.default_rng(1000 + part)
    images = rng.integers(0, 256, (n, 784), dtype=np.uint8)
    labels = rng.integers(0, 10, n)
    return [(images[i].tobytes(), int(labels[i])) for i in range(n)]


def write_tfrecords(directory: str, per_part: int) -> str:
    import tensorflow as tf

    for part in range(PARTS):
        with tf.io.TFRecordWriter(os.path.join(directory, f"part-{part:05d}.tfrecord")) as writer:
            for image, label in records_of(part, per_part):
                example = tf.train.Example(features=tf.train.Features(feature={
                    "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))}))
                writer.write(example.SerializeToString())
    return os.path.join(directory, "part-*.tfrecord")


def train(args, ctx):
    import json as _json
    import os as _os
    import time as _time

    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    image_spec = tf.TensorSpec([784], tf.uint8)
    label_spec = tf.TensorSpec([], tf.int64)

    def scale(image, label):
        return tf.reshape(tf.cast(image, tf.float32) / 255.0, [-1, 28, 28, 1]), label

    if args["input"] == "tfrecords":
        spec = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64)}

        def parse(batch):
            example = tf.io.parse_example(batch, spec)
            return tf.io.decode_raw(example["image"], tf.uint8), example["label"]

        data = (tf.data.TFRecordDataset(ctx.shard_files(args["pattern"])).repeat(args["epochs"])
                .batch(BATCH).map(parse))
        # the files are this node's share already: without OFF, MWMS shards them again and each
        # node reads half its records (Keras then stops early: "Your input ran out of data")
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        data = data.with_options(options)
    elif args["input"] == "dataframe":
        data = ctx.dataset({"image": image_spec, "label": label_spec}, batch_size=BATCH)
        data = data.repeat(args["epochs"]).map(lambda row: (row["image"], row["label"]))
    else:
        data = ctx.dataset((image_spec, label_spec), batch_size=BATCH).repeat(args["epochs"])
    data = data.map(scale).prefetch(tf.data.AUTOTUNE)

    with strategy.scope():
        model = tf.keras.Sequential([
            tf.keras.Input((28, 28, 1)),
            tf.keras.layers.Conv2D(16, 3, activation="relu"), tf.keras.layers.MaxPooling2D(),
            tf.keras.layers.Conv2D(32, 3, activation="relu"), tf.keras.layers.MaxPooling2D(),
            tf.keras.layers.Flatten(), tf.keras.layers.Dense(10)])
        model.compile(optimizer="adam", metrics=["accuracy"],
                      loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    steps_per_epoch = args["per_node"] * ctx.num_workers // BATCH
    marks = {}

    class Clock(tf.keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            marks["steps"] = batch + 1
            if batch + 1 == steps_per_epoch:
                marks["warm"] = _time.perf_counter()

        def on_train_end(self, logs=None):
            marks["end"] = _time.perf_counter()

    model.fit(data, epochs=1, steps_per_epoch=steps_per_epoch * args["epochs"], verbose=0, callbacks=[Clock()])
    if marks.get("steps") != steps_per_epoch * args["epochs"]:  # a short input would inflate the rate
        raise RuntimeError(f"{args['input']}: fit ran {marks.get('steps')} of {steps_per_epoch * args['epochs']} steps")
    timed = steps_per_epoch * (args["epochs"] - 1) * BATCH
    with open(_os.path.join(args["dir"], f"{ctx.job_name}.json"), "w") as f:
        _json.dump({"records": timed, "seconds": marks["end"] - marks["warm"]}, f)
    release = _os.path.join(args["dir"], "release")
    deadline = _time.monotonic() + 600
    while not _os.path.exists(release) and _time.monotonic() < deadline:  # the driver's CPU snapshot first
        _time.sleep(0.05)


def one_round(sc, kind: str, data, pattern: str, per_node: int, epochs: int) -> dict:
    work = tempfile.mkdtemp(prefix="tfos-bench-modes-")
    args = {"input": kind, "pattern": pattern, "per_node": per_node, "epochs": epochs, "dir": work}
    mode = tfos.InputMode.TENSORFLOW if kind == "tfrecords" else tfos.InputMode.SPARK
    cluster = tfos.run(sc, train, args, num_executors=2, input_mode=mode, master_node="chief")
    cpu0 = cpu_by_role()
    if data is not None:
        cluster.train(data, num_epochs=epochs, feed_timeout=600)
    deadline = time.monotonic() + 900
    while len([n for n in os.listdir(work) if n.endswith(".json")]) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    cpu = cpu_delta(cpu0, cpu_by_role())
    open(os.path.join(work, "release"), "w").close()
    cluster.shutdown(timeout=300)
    with open(os.path.join(work, "chief.json")) as f:
        chief = json.load(f)
    total = per_node * 2 * epochs
    return {"rate": chief["records"] / chief["seconds"],
            "cpu_per_100k": {role: s * 1e5 / total for role, s in cpu.items() if s >= 0.005}}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=24576, help="a multiple of 4 x 128 (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    opts = parser.parse_args()
    per_part = opts.records // PARTS
    if per_part * PARTS != opts.records or (per_part * 2) % BATCH:
        parser.error(f"--records must be a multiple of {PARTS * BATCH // 2 * 2}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    spark = start_spark(2, "bench-train-modes")
    sc = spark.sparkContext
    files = tempfile.mkdtemp(prefix="tfos-bench-modes-files-")
    pattern = write_tfrecords(files, per_part)
    rdd = sc.parallelize(range(PARTS), PARTS).flatMap(lambda p: records_of(p, per_part)).cache()
    df = spark.createDataFrame(rdd, "image binary, label long").cache()
    assert rdd.count() == opts.records and df.count() == opts.records
    inputs = {"tfrecords": None, "dataframe": df, "rdd": rdd}
    results: dict[str, list[dict]] = {kind: [] for kind in inputs}
    print(f"{opts.records} records x {opts.epochs} epochs, global batch {BATCH}, 2 nodes; "
          f"timed: epochs 2-{opts.epochs}", flush=True)
    try:
        for round_ in range(opts.rounds):
            for kind, data in inputs.items():
                result = one_round(sc, kind, data, pattern, per_part * 2, opts.epochs)
                results[kind].append(result)
                print(f"  round {round_ + 1} {kind:10} {result['rate']:8.0f} records/s", flush=True)
    finally:
        spark.stop()
    reference = max(r["rate"] for r in results["tfrecords"])
    for kind, runs in results.items():
        best = max(runs, key=lambda r: r["rate"])
        cpu = ", ".join(f"{role} {s:.2f}" for role, s in sorted(best["cpu_per_100k"].items()))
        rounds = ", ".join(f"{r['rate']:.0f}" for r in runs)
        # the machine drifts between phases: a round's ratio to the TENSORFLOW run just before it
        paired = [r["rate"] / t["rate"] for r, t in zip(runs, results["tfrecords"], strict=True)]
        print(f"{kind:10} best {best['rate']:8.0f} records/s  {best['rate'] / reference:5.2f}x TENSORFLOW mode  "
              f"(rounds: {rounds}; per round {', '.join(f'{x:.2f}x' for x in paired)}, "
              f"median {statistics.median(paired):.2f}x)\n"
              f"           CPU s per 100k records: {cpu}; total {sum(best['cpu_per_100k'].values()):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
