"""Batch inference with ``cluster.inference`` (InputMode.SPARK) on the model spark_mode.py trained.

The driver reads the test digits with Spark (an RDD with ``--format rdd``, a DataFrame with
``--format df``), starts one TF node per executor, and calls ``cluster.inference(data)``:
a lazy RDD with one result per input record, in input order. Each node loads the model
once, then answers batches from ``ctx.get_data_feed(train_mode=False)`` with
``batch_results``. With an RDD, the driver zips the predictions with the input records; with
a DataFrame, ``cluster.inference(df, output_schema="prediction long")`` returns the input
rows with the prediction added as a column. Either way the result ``(id, label,
prediction)`` is written as CSV and the accuracy printed::

    python examples/mnist/spark_mode.py          # trains and exports the model first
    python examples/mnist/spark_inference.py [--format df]

prints the first rows and ``accuracy: 0.9xx``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import mnist_common as common

import tfos


def main_fun(args, ctx):
    """One inference node: load the model, then predict every batch the feed hands over."""
    import numpy as np
    import tensorflow as tf

    # plain Keras: inference needs no strategy, every node answers its own records
    model = tf.keras.models.load_model(args.model, compile=False)
    if args.format == "df":  # DataFrame rows: columns by name, through input_mapping
        feed = ctx.get_data_feed(train_mode=False, input_mapping={"image": "image"})
    else:
        feed = ctx.get_data_feed(train_mode=False)
    predicted = 0
    while not feed.should_stop():  # true once cluster.shutdown() ended the feed
        batch = feed.next_batch(args.batch_size)  # fewer at the end of a partition, empty at the end
        images = batch["image"] if args.format == "df" else [record[0] for record in batch]  # field 0: image
        if not len(images):
            continue
        logits = model.predict_on_batch(np.asarray(images, dtype=np.float32))
        feed.batch_results([int(p) for p in np.argmax(logits, axis=1)])  # one per record, in order
        predicted += len(images)
    print(f"[{ctx.job_name}:{ctx.task_index}] predicted {predicted} records", flush=True)


def input_rows(spark, args):
    """The test set as ``(image, label, id)`` records: an RDD or a DataFrame, cached."""
    data = common.spark_data(spark, args.data_dir, "test", args.format)
    if args.format == "rdd":
        return data.zipWithIndex().map(lambda pair: (pair[0][0], pair[0][1], pair[1])).cache()
    from pyspark.sql import functions as F

    if data.rdd.getNumPartitions() < args.cluster_size:
        # the small CSV is one partition: spread it, so that every node gets a share
        # (each partition goes to the node on the executor that runs its task)
        data = data.repartition(args.cluster_size)
    return data.withColumn("id", F.monotonically_increasing_id()).cache()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--format", choices=("rdd", "df"), default="rdd",
                        help="infer on an RDD of (image, label, id) tuples or a DataFrame (default: %(default)s)")
    parser.add_argument("--cluster-size", type=int, default=2,
                        help="Spark executors = TF nodes (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=128,
                        help="records per next_batch on a node (default: %(default)s)")
    parser.add_argument("--model", default=str(common.DEFAULT_EXPORT_ROOT / "spark_mode" / "model.keras"),
                        help="the Keras model to load on the nodes (default: spark_mode.py's, %(default)s)")
    parser.add_argument("--data-dir", default=str(common.DEFAULT_DATA_DIR),
                        help="data_setup.py's output; made if missing (default: %(default)s)")
    parser.add_argument("--export-dir", default=str(common.DEFAULT_EXPORT_ROOT / "spark_inference"),
                        help="where the predictions go, as CSV (default: %(default)s)")
    parser.add_argument("--show", type=int, default=10, help="rows to print (default: %(default)s)")
    parser.add_argument("--master", default=None,
                        help="Spark master (default: local-cluster[CLUSTER_SIZE,1,1024])")
    args = parser.parse_args(argv)
    args.data_dir, args.export_dir = os.path.abspath(args.data_dir), os.path.abspath(args.export_dir)
    args.model = os.path.abspath(args.model)
    common.setup_logging()
    if not os.path.exists(args.model):
        print(f"no model at {args.model}; train one first: python examples/mnist/spark_mode.py",
              file=sys.stderr)
        return 2
    common.ensure_data(args.data_dir, training_nodes=1)  # only the driver reads the files

    spark = common.spark_session("tfos-spark-inference", args.cluster_size, args.master)
    start = time.monotonic()
    try:
        rows = input_rows(spark, args)
        cluster = tfos.run(spark.sparkContext, main_fun, args, num_executors=args.cluster_size,
                           input_mode=tfos.InputMode.SPARK)
        try:
            if args.format == "rdd":
                # lazy: one prediction per input record, same partitions and order as the input
                predictions = cluster.inference(rows)
                # zip pairs each input record with its prediction (same partitions, same counts)
                table = rows.zip(predictions).map(lambda pair: (pair[0][2], pair[0][1], pair[1]))
                result = spark.createDataFrame(table, "id long, label long, prediction long").cache()
            else:
                # the input rows with a prediction column added (streamed as Arrow batches)
                predicted = cluster.inference(rows, output_schema="prediction long")
                result = predicted.select("id", "label", "prediction").cache()
            total = result.count()  # runs the inference, once: the result is cached
        finally:
            cluster.shutdown()  # ends the feed: the nodes' loops see should_stop()
        out = os.path.join(args.export_dir, "predictions")
        result.write.mode("overwrite").csv("file://" + out, header=True)
        correct = result.filter("label = prediction").count()
        first = result.orderBy("id").limit(args.show).collect()
    finally:
        spark.stop()

    print(f"{total} predictions from {args.cluster_size} nodes in {time.monotonic() - start:.1f} s, "
          f"written to {out}/")
    print("   id  label  prediction")
    for row in first:
        print(f"{row.id:>5}  {row.label:>5}  {row.prediction:>10}")
    print(f"accuracy: {correct / total:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
