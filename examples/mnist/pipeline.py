"""A Spark ML pipeline: ``TFEstimator.fit`` trains on a DataFrame, ``TFModel.transform``
scores the test set.

The driver reads the digits with Spark as DataFrames (``image`` array<float>, ``label``
bigint), sets the estimator's params with TensorFlowOnSpark's setters and calls
``fit(train_df)``: tfos starts one TF node per executor and feeds them the
``input_mapping`` columns for ``epochs`` epochs; each node runs ``main_fun(args, ctx)``
(MWMS ``model.fit`` on ``ctx.dataset()``), and the chief exports a SavedModel whose
serving signature gives ``logits`` and ``prediction`` (the argmax). ``fit`` returns a
``TFModel``; ``transform(test_df)`` runs that SavedModel on the executors (no TF cluster,
the model loaded once per executor Python worker) and appends ``prediction`` and
``logits`` columns to the test rows::

    python examples/mnist/pipeline.py

prints the first rows and ``accuracy: 0.9xx``. The fitted model is also saved with
Spark ML (``model.write().save``) next to the SavedModel and loaded back for the scoring.
"""

from __future__ import annotations

import os
import sys
import time

import mnist_common as common

from tfos.pipeline import TFEstimator, TFModel


def main_fun(args, ctx):
    """One TF node. ``args`` is ``tf_args`` with the estimator's params merged in."""
    import warnings

    import mnist_common as common
    import tensorflow as tf

    keras = tf.keras  # Keras 3; tfos has applied its fix for fit under MWMS
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    # the fed columns (input_mapping's keys), specs inferred from the DataFrame's schema
    dataset = ctx.dataset(feed_timeout=args.feed_timeout).map(lambda row: (row["image"], row["label"]))
    train = dataset.shuffle(1024, seed=ctx.worker_num).batch(args.batch_size)  # global batch size

    with strategy.scope():
        model = common.build_model(keras)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=args.learning_rate),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        model.fit(train, epochs=args.epochs, verbose=2 if ctx.is_chief else 0)

    if ctx.is_chief:
        # a plain copy of the weights (no collective op while only the chief exports), served
        # by a signature with two outputs: the logits and the predicted class
        local = common.build_model(keras)
        local.set_weights(model.get_weights())

        def serve(image):
            logits = local(image, training=False)
            return {"logits": logits, "prediction": tf.argmax(logits, axis=1)}

        archive = keras.export.ExportArchive()
        archive.track(local)
        archive.add_endpoint("serving_default", serve,
                             input_signature=[tf.TensorSpec([None, common.IMAGE_PIXELS], tf.float32, name="image")])
        archive.write_out(args.export_dir, verbose=False)


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.split("\n\n")[0], "pipeline", cluster_size=2, epochs=10, batch_size=64)
    parser.add_argument("--learning-rate", type=float, default=0.005, help="(default: %(default)s)")
    parser.add_argument("--feed-timeout", type=float, default=600,
                        help="seconds a node or a feeding task waits for the other side (default: %(default)s)")
    parser.add_argument("--show", type=int, default=10, help="rows to print (default: %(default)s)")
    args = common.parse_args(parser, argv)
    common.setup_logging()
    common.ensure_data(args.data_dir, training_nodes=1)  # only the driver reads the files
    saved_model = os.path.join(args.export_dir, "saved_model")

    spark = common.spark_session("tfos-pipeline", args.cluster_size, args.master)
    start = time.monotonic()
    try:
        train = common.spark_data(spark, args.data_dir, "train", "df").cache()
        test = common.spark_data(spark, args.data_dir, "test", "df")
        estimator = (
            TFEstimator(main_fun, {"learning_rate": args.learning_rate})
            .setInputMapping({"image": "image", "label": "label"})    # the columns fed to the nodes
            .setOutputMapping({"prediction": "prediction", "logits": "logits"})
            .setClusterSize(args.cluster_size).setEpochs(args.epochs).setBatchSize(args.batch_size)
            .setFeedTimeout(args.feed_timeout).setExportDir(saved_model)
        )
        model = estimator.fit(train)
        fit_s = time.monotonic() - start

        # persisted with Spark ML (params and tf_args; the SavedModel stays in export_dir)
        model.write().overwrite().save(os.path.join(args.export_dir, "spark_model"))
        model = TFModel.load(os.path.join(args.export_dir, "spark_model"))
        # transform feeds only the image; a batch of 256 rows per model call
        scored = model.setInputMapping({"image": "image"}).setBatchSize(256).transform(test).cache()
        total = scored.count()
        correct = scored.filter("label = prediction").count()
        first = scored.select("label", "prediction", "logits").limit(args.show).collect()
    finally:
        spark.stop()

    print(f"fit on {args.cluster_size} nodes in {fit_s:.1f} s; SavedModel in {saved_model}")
    print(f"transform scored {total} test rows; columns added: prediction (bigint), logits (array<float>)")
    print("label  prediction  top logit")
    for row in first:
        print(f"{row.label:>5}  {row.prediction:>10}  {max(row.logits):9.2f}")
    print(f"accuracy: {correct / total:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
