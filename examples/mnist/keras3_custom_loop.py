"""A custom training loop with Keras 3 (``import keras``) under MultiWorkerMirroredStrategy.

No ``model.fit``: a ``tf.function`` runs ``strategy.run(step)`` on every replica, the step
computes the loss under a ``GradientTape`` and applies the gradients with a Keras
optimizer (which all-reduces them across the nodes), and ``strategy.reduce`` sums the
per-replica loss and correct counts. Input comes from
``strategy.distribute_datasets_from_function``: each node builds its own pipeline over its
own train files, batched with the per-replica batch size. Evaluation is distributed too,
padded so every node runs the same number of steps::

    python examples/mnist/keras3_custom_loop.py

prints ``final accuracy: 0.9xx``.
"""

from __future__ import annotations

import math
import os
import sys
import time

import mnist_common as common

import tfos


def main_fun(args, ctx):
    import keras
    import mnist_common as common
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    replicas = strategy.num_replicas_in_sync
    train_files = common.split_files(args.data_dir, "train")
    test_files = common.split_files(args.data_dir, "test")
    steps_per_epoch = sum(count for _, count in train_files) // args.batch_size

    def train_input(input_context: tf.distribute.InputContext):
        # Under MWMS there is one input pipeline per node, numbered like ctx.worker_num.
        per_replica = input_context.get_per_replica_batch_size(args.batch_size)
        mine = common.shard_files(train_files, input_context.num_input_pipelines,
                                  input_context.input_pipeline_id)
        return (common.records([path for path, _ in mine])
                .shuffle(2048, seed=input_context.input_pipeline_id)
                .repeat().batch(per_replica, drop_remainder=True).prefetch(tf.data.AUTOTUNE))

    # The test files are sharded too, so the nodes hold different numbers of records:
    # pad each node's share with weight-0 records up to the same number of batches, or
    # the node with more batches would wait forever in the all-reduce.
    per_replica_eval = max(1, args.batch_size // replicas)
    mine = common.shard_files(test_files, ctx.num_workers, ctx.worker_num)
    most = max(sum(c for _, c in common.shard_files(test_files, ctx.num_workers, i))
               for i in range(ctx.num_workers))
    eval_steps = math.ceil(most / per_replica_eval)

    def test_input(input_context: tf.distribute.InputContext):
        real = common.records([path for path, _ in mine]).map(lambda x, y: (x, y, 1.0))
        pad = tf.data.Dataset.from_tensors(
            (tf.zeros([common.IMAGE_PIXELS]), tf.constant(0, tf.int64), 0.0)).repeat()
        return real.concatenate(pad).batch(per_replica_eval).take(eval_steps)

    with strategy.scope():
        model = common.build_model(keras)
        optimizer = keras.optimizers.Adam(learning_rate=args.learning_rate)
    # per-example losses; averaged over the GLOBAL batch so that the optimizer's
    # cross-replica gradient sum is the gradient of the global mean loss
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)

    @tf.function
    def train_steps(iterator, steps):
        def step(x, y):
            with tf.GradientTape() as tape:
                logits = model(x, training=True)
                loss = tf.nn.compute_average_loss(loss_fn(y, logits), global_batch_size=args.batch_size)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            correct = tf.reduce_sum(tf.cast(tf.argmax(logits, axis=1) == y, tf.float32))
            return loss, correct

        total_loss = tf.constant(0.0)
        total_correct = tf.constant(0.0)
        for _ in tf.range(steps):
            loss, correct = strategy.run(step, args=next(iterator))
            total_loss += strategy.reduce("SUM", loss, axis=None)
            total_correct += strategy.reduce("SUM", correct, axis=None)
        return total_loss, total_correct

    @tf.function
    def eval_step(x, y, weight):
        def step(x, y, weight):
            logits = model(x, training=False)
            hit = tf.cast(tf.argmax(logits, axis=1) == y, tf.float32)
            return tf.reduce_sum(hit * weight), tf.reduce_sum(weight)

        correct, seen = strategy.run(step, args=(x, y, weight))
        return strategy.reduce("SUM", correct, axis=None), strategy.reduce("SUM", seen, axis=None)

    iterator = iter(strategy.distribute_datasets_from_function(train_input))
    history = {"loss": [], "accuracy": []}
    start = time.time()
    for epoch in range(args.epochs):
        loss, correct = train_steps(iterator, tf.constant(steps_per_epoch))
        history["loss"].append(float(loss) / steps_per_epoch)
        history["accuracy"].append(float(correct) / (steps_per_epoch * args.batch_size))
        if ctx.is_chief:
            print(f"epoch {epoch + 1}/{args.epochs}: loss {history['loss'][-1]:.4f}, "
                  f"train accuracy {history['accuracy'][-1]:.4f}", flush=True)
    train_s = time.time() - start

    correct = seen = 0.0
    for x, y, weight in strategy.distribute_datasets_from_function(test_input):
        c, n = eval_step(x, y, weight)
        correct, seen = correct + float(c), seen + float(n)
    if ctx.is_chief:
        common.write_json(os.path.join(args.export_dir, "results.json"), {
            "accuracy": correct / seen, "evaluated": int(seen), "epochs": args.epochs,
            "steps_per_epoch": steps_per_epoch, "training_nodes": ctx.num_workers,
            "train_seconds": round(train_s, 2), "keras": common.keras_flavour(),
            "history": history,
        })


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.split("\n\n")[0], "keras3_custom_loop",
                                cluster_size=2, epochs=10, batch_size=64)
    parser.add_argument("--learning-rate", type=float, default=0.005, help="(default: %(default)s)")
    args = common.parse_args(parser, argv)
    common.setup_logging()
    common.ensure_data(args.data_dir, training_nodes=args.cluster_size)
    results_path = os.path.join(args.export_dir, "results.json")
    if os.path.exists(results_path):
        os.remove(results_path)  # never report a previous run's accuracy

    spark = common.spark_session("tfos-keras3-custom-loop", args.cluster_size, args.master)
    start = time.monotonic()
    try:
        # keras="keras3": `import keras` is Keras 3 on the nodes, whatever the environment says
        cluster = tfos.run(spark.sparkContext, main_fun, args, num_executors=args.cluster_size,
                           keras="keras3")
        cluster.shutdown()
    finally:
        spark.stop()

    results = common.read_results(args.export_dir)
    common.print_history(results["history"])
    print(f"trained on {results['training_nodes']} nodes in {time.monotonic() - start:.1f} s "
          f"(training loop {results['train_seconds']:.1f} s, {results['keras']}); "
          f"evaluated {results['evaluated']} test images")
    print(f"final accuracy: {results['accuracy']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
