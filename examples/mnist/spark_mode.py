"""Keras ``model.fit`` under MultiWorkerMirroredStrategy, fed by Spark (InputMode.SPARK).

The driver reads the training digits with Spark, as an RDD of ``(image, label)`` tuples
(``--format rdd``) or a DataFrame with ``image`` and ``label`` columns (``--format df``),
starts one TF node per executor and streams the data to them with
``cluster.train(data, num_epochs=N)``. Each node reads its share through
``ctx.dataset(output_signature)``, a ``tf.data.Dataset`` whose every pass is the next
epoch Spark feeds, and trains with ``model.fit(dataset.batch(b), epochs=N)``::

    python examples/mnist/spark_mode.py [--format df]

prints the feed report, then ``final accuracy: 0.9xx`` (the chief evaluates the test set
locally). The chief exports ``model.keras`` for spark_inference.py.
"""

from __future__ import annotations

import math
import os
import sys
import time

import mnist_common as common

import tfos


def main_fun(args, ctx):
    """One TF node: chief (``ctx.worker_num == 0``) or worker; TF_CONFIG is already set."""
    import tempfile
    import warnings

    import mnist_common as common
    import numpy as np
    import tensorflow as tf

    keras = tf.keras  # Keras 3; tfos has applied its fix for fit under MWMS
    # built before any other TF op, as MWMS requires; reads the cluster from TF_CONFIG
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    print(f"[{ctx.job_name}:{ctx.task_index}] {ctx.num_workers} training nodes, "
          f"{strategy.num_replicas_in_sync} replicas in sync", flush=True)

    # The records Spark streams to this node, one at a time; each pass over the dataset
    # reads the next epoch cluster.train() feeds, and yields the same number of records
    # on every node (so every node runs the same number of synchronous steps).
    # Auto-sharding is already off: the data is split between the nodes by tfos.
    dataset = ctx.dataset(common.feed_signature(args.format), feed_timeout=args.feed_timeout)
    if args.format == "df":
        dataset = dataset.map(lambda row: (row["image"], row["label"]))  # dict -> (x, y)
    # GLOBAL batch size: MWMS splits each batch among the replicas, so one step takes
    # batch_size / num_workers records from each node's own share.
    train = dataset.shuffle(1024, seed=ctx.worker_num).batch(args.batch_size).prefetch(tf.data.AUTOTUNE)

    with strategy.scope():
        model = common.build_model(keras)
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=args.learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )

    start = time.time()
    with warnings.catch_warnings():
        # no steps_per_epoch: an epoch ends where the fed epoch ends, which Keras 3 reports
        # as "Your input ran out of data" in epoch 1 (while it learns the epoch's length)
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        history = model.fit(train, epochs=args.epochs, shuffle=False, verbose=2 if ctx.is_chief else 0)
    train_s = time.time() - start

    # MWMS wants every node to run the same saving code; only the chief's copy is kept.
    scratch = tempfile.mkdtemp(prefix="tfos-spark-mode-")
    export_dir = args.export_dir if ctx.is_chief else scratch
    os.makedirs(export_dir, exist_ok=True)
    model.save(os.path.join(export_dir, "model.keras"))
    if ctx.is_chief:
        # Evaluate on the chief alone, with a plain (non-distributed) copy of the weights:
        # a distributed evaluate() would wait for the other nodes.
        local = common.build_model(keras)
        local.set_weights(model.get_weights())
        x_test, y_test = np.asarray(args.x_test, np.float32), np.asarray(args.y_test, np.int64)
        logits = local.predict(x_test, batch_size=256, verbose=0)
        accuracy = float(np.mean(np.argmax(logits, axis=1) == y_test))
        common.write_json(os.path.join(export_dir, "results.json"), {
            "accuracy": accuracy, "test_records": int(len(y_test)), "epochs": args.epochs,
            "format": args.format, "training_nodes": ctx.num_workers,
            "train_seconds": round(train_s, 2), "keras": common.keras_flavour(),
            "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        })


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.split("\n\n")[0], "spark_mode",
                                cluster_size=2, epochs=10, batch_size=64)
    parser.add_argument("--format", choices=("rdd", "df"), default="rdd",
                        help="feed an RDD of (image, label) tuples or a DataFrame (default: %(default)s)")
    parser.add_argument("--learning-rate", type=float, default=0.005, help="(default: %(default)s)")
    parser.add_argument("--feed-timeout", type=float, default=600,
                        help="seconds a node or a feeding task waits for the other side (default: %(default)s)")
    args = common.parse_args(parser, argv)
    common.setup_logging()
    common.ensure_data(args.data_dir, training_nodes=1)  # only the driver reads the files
    results_path = os.path.join(args.export_dir, "results.json")
    if os.path.exists(results_path):
        os.remove(results_path)  # never report a previous run's accuracy
    # the test set is small: it travels to the nodes inside args
    x_test, y_test = common.load_csv(args.data_dir, "test")
    args.x_test, args.y_test = x_test.tolist(), y_test.tolist()

    spark = common.spark_session("tfos-spark-mode", args.cluster_size, args.master)
    start = time.monotonic()
    try:
        data = common.spark_data(spark, args.data_dir, "train", args.format)
        data = data.cache()  # fed once per epoch: read and parse the file once
        cluster = tfos.run(spark.sparkContext, main_fun, args, num_executors=args.cluster_size,
                           input_mode=tfos.InputMode.SPARK, master_node="chief")
        try:
            report = cluster.train(data, num_epochs=args.epochs,
                                   feed_timeout=args.feed_timeout)
        finally:
            cluster.shutdown()  # waits for main_fun to return on every node
    finally:
        spark.stop()

    results = common.read_results(args.export_dir)
    print(common.describe_feed(report))
    print(f"  (epoch 1 of the feed went to Keras's build pass, epochs 2-{report.epochs_fed} to fit)")
    common.print_history(results["history"])
    # MWMS splits each global batch over the nodes: every node takes batch_size / nodes a step
    steps = math.ceil(report.quota_per_node / (args.batch_size // args.cluster_size))
    print(f"trained on {results['training_nodes']} nodes from a Spark {args.format.upper()} in "
          f"{time.monotonic() - start:.1f} s (fit {results['train_seconds']:.1f} s, "
          f"{steps} steps per epoch, {results['keras']}); "
          f"model in {os.path.join(args.export_dir, 'model.keras')}")
    print(f"final accuracy: {results['accuracy']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
