# InputMode.TENSORFLOW: each node reads the data itself (TensorFlowOnSpark's mnist_tf.py shape,
# a Keras 2 script: weights-only checkpoints without a .weights.h5 suffix, which Keras 3 refuses).
# The only tfos-specific lines are the imports from tfos.compat.


def main_fun(args, ctx):
    import io

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

    path = TFNode.hdfs_path(ctx, args.images_labels)
    with tf.io.gfile.GFile(path, "rb") as f:
        table = np.loadtxt(io.BytesIO(f.read()), delimiter=",", dtype=np.float32)
    images, labels = table[:, 1:] / 16.0, table[:, 0].astype(np.int64)

    options = tf.data.Options()
    compat.disable_auto_shard(options)
    train_datasets = (tf.data.Dataset.from_tensor_slices((images, labels))
                      .shuffle(2048, seed=ctx.task_index).repeat().batch(args.batch_size)
                      .with_options(options))

    with strategy.scope():
        multi_worker_model = build_and_compile_model()
    callbacks = [tf.keras.callbacks.ModelCheckpoint(
        filepath=args.model_dir + "/weights-{epoch:04d}" if ctx.job_name == "chief" else
        "/tmp/tfos-compat-weights-{epoch:04d}", save_weights_only=True)]
    multi_worker_model.fit(x=train_datasets, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                           callbacks=callbacks, verbose=0)

    compat.export_saved_model(multi_worker_model, args.export_dir, ctx.job_name == "chief")


if __name__ == "__main__":
    import argparse

    from pyspark.conf import SparkConf
    from pyspark.context import SparkContext

    from tfos.compat import TFCluster

    sc = SparkContext(conf=SparkConf().setAppName("compat_mnist_tf"))
    executors = sc._conf.get("spark.executor.instances")
    num_executors = int(executors) if executors is not None else 1
    num_ps = 0

    parser = argparse.ArgumentParser()
    parser.add_argument("--batch_size", help="number of records per batch", type=int, default=64)
    parser.add_argument("--cluster_size", help="number of nodes in the cluster", type=int, default=num_executors)
    parser.add_argument("--epochs", help="number of epochs", type=int, default=3)
    parser.add_argument("--images_labels", help="path to the CSV of label,pixels rows")
    parser.add_argument("--export_dir", help="path to export saved_model", default="mnist_export")
    parser.add_argument("--model_dir", help="path to save checkpoint", default="mnist_model")
    parser.add_argument("--steps_per_epoch", help="steps per epoch", type=int, default=40)
    parser.add_argument("--tensorboard", help="launch tensorboard process", action="store_true")
    args = parser.parse_args()
    print("args:", args)
    import tensorflow as tf

    print("driver tf.keras:", tf.keras.__name__.split(".")[0])  # tf_keras, or keras (Keras 3)

    cluster = TFCluster.run(sc, main_fun, args, args.cluster_size, num_ps, args.tensorboard,
                            TFCluster.InputMode.TENSORFLOW, master_node="chief")
    print("nodes:", sorted((n["job_name"], n["task_index"]) for n in cluster.cluster_info))
    cluster.shutdown(None, 0, 600)
    print("COMPAT DONE tensorflow", flush=True)
