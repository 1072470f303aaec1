# InputMode.SPARK: Spark feeds an RDD, each node reads it through TFNode.DataFeed in a
# generator (TensorFlowOnSpark's mnist_spark.py shape). The only tfos-specific lines are
# the imports from tfos.compat.


def main_fun(args, ctx):
    import numpy as np
    import tensorflow as tf

    from tfos.compat import TFNode, compat

    strategy = tf.distribute.MultiWorkerMirroredStrategy()

    def build_and_compile_model():
        model = tf.keras.Sequential([
            tf.keras.Input(shape=(64,)),
            tf.keras.layers.Dense(64, activation="relu"),
            tf.keras.layers.Dense(10, activation="softmax"),
        ])
        model.compile(loss=tf.keras.losses.sparse_categorical_crossentropy,
                      optimizer=tf.keras.optimizers.Adam(learning_rate=0.01),
                      metrics=["accuracy"])
        return model

    tf_feed = TFNode.DataFeed(ctx.mgr, False)

    def rdd_generator():
        while not tf_feed.should_stop():
            batch = tf_feed.next_batch(1)
            if len(batch) > 0:
                example = batch[0]
                image = np.array(example[0]).astype(np.float32) / 16.0
                label = np.array(example[1]).astype(np.int64)
                yield (image, label)
            else:
                return

    ds = tf.data.Dataset.from_generator(
        rdd_generator, output_signature=(tf.TensorSpec([64], tf.float32), tf.TensorSpec([], tf.int64)))
    options = tf.data.Options()
    compat.disable_auto_shard(options)  # each node reads its own share of the RDD
    ds = ds.batch(args.batch_size).with_options(options)

    with strategy.scope():
        multi_worker_model = build_and_compile_model()

    # MultiWorkerMirroredStrategy is synchronous: stop before any node runs out of fed data
    steps_per_epoch = args.num_records / args.batch_size
    max_steps_per_worker = int(steps_per_epoch * 0.9)
    multi_worker_model.fit(x=ds, epochs=args.epochs, steps_per_epoch=max_steps_per_worker, verbose=0)

    compat.export_saved_model(multi_worker_model, args.export_dir, ctx.job_name == "chief")

    # the rest of the feed is skipped
    tf_feed.terminate()


if __name__ == "__main__":
    import argparse

    from pyspark.conf import SparkConf
    from pyspark.context import SparkContext

    from tfos.compat import TFCluster

    sc = SparkContext(conf=SparkConf().setAppName("compat_mnist_spark"))
    executors = sc._conf.get("spark.executor.instances")
    num_executors = int(executors) if executors is not None else 1

    parser = argparse.ArgumentParser()
    parser.add_argument("--batch_size", help="number of records per batch", type=int, default=64)
    parser.add_argument("--cluster_size", help="number of nodes in the cluster", type=int, default=num_executors)
    parser.add_argument("--epochs", help="number of epochs", type=int, default=3)
    parser.add_argument("--images_labels", help="path to the CSV of label,pixels rows")
    parser.add_argument("--export_dir", help="path to export saved_model", default="mnist_export")
    parser.add_argument("--model_dir", help="path to save checkpoint", default="mnist_model")
    parser.add_argument("--tensorboard", help="launch tensorboard process", action="store_true")
    args = parser.parse_args()
    print("args:", args)
    import tensorflow as tf

    print("driver tf.keras:", tf.keras.__name__.split(".")[0])  # tf_keras, or keras (Keras 3)

    def parse(line):
        values = [float(x) for x in line.split(",")]
        return (values[1:], int(values[0]))

    images_labels = sc.textFile(args.images_labels).map(parse).cache()
    args.num_records = images_labels.count()

    cluster = TFCluster.run(sc, main_fun, args, args.cluster_size, 0, args.tensorboard,
                            TFCluster.InputMode.SPARK, master_node="chief")
    cluster.train(images_labels, args.epochs)
    cluster.shutdown(grace_secs=0)
    print("COMPAT DONE spark", flush=True)
