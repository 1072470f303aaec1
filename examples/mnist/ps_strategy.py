"""ParameterServerStrategy: one ps, one coordinating chief, one worker, ``model.fit`` with tf-keras.

tfos plans the roles ps:0, chief:0, worker:0 on three executors. The ps node serves its
variables (tfos does that itself: a ps never runs ``main_fun``); the worker only serves
too (``ctx.serve()``), executing what the coordinator sends it; the chief is the
coordinator: it builds the model under the strategy and calls ``model.fit`` with a
``DatasetCreator``, whose function each worker runs to make its own input pipeline.
When the chief returns, ``cluster.shutdown()`` stops the ps and the worker::

    python examples/mnist/ps_strategy.py

prints ``final accuracy: 0.9xx``.

Why ``model.fit`` with tf-keras: ParameterServerStrategy ``fit`` needs
``tf.keras.utils.experimental.DatasetCreator`` and the coordinator-aware training loop,
which only tf-keras (Keras 2) has; Keras 3 has no ParameterServerStrategy support. So
the driver passes ``keras="tf_keras"`` to ``tfos.run``, which makes ``tf.keras`` tf-keras
on the nodes (``TF_USE_LEGACY_KERAS=1``). The test accuracy is computed on the chief
with a local copy of the trained weights, in plain (non-distributed) Keras.
"""

from __future__ import annotations

import os
import sys
import time

import mnist_common as common

import tfos


def main_fun(args, ctx):
    if ctx.job_name == "worker":
        # the coordinator sends this node its work over gRPC; serve until tfos stops it
        ctx.serve()
        return

    import mnist_common as common
    import numpy as np
    import tensorflow as tf

    keras = tf.keras  # tf-keras 2.x: the driver passed keras="tf_keras"
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    strategy = tf.distribute.ParameterServerStrategy(resolver)
    train_files = [path for path, _ in common.split_files(args.data_dir, "train")]
    total_train = sum(count for _, count in common.split_files(args.data_dir, "train"))

    def dataset_fn(input_context: tf.distribute.InputContext):
        # Traced on the chief, run on every worker: each reads its own files. Training
        # is asynchronous, so the workers need not see equal amounts of data.
        batch = input_context.get_per_replica_batch_size(args.batch_size)
        mine = common.shard_files(train_files, input_context.num_input_pipelines,
                                  input_context.input_pipeline_id)
        return (common.records(mine).shuffle(2048).repeat().batch(batch, drop_remainder=True)
                .prefetch(tf.data.AUTOTUNE))

    with strategy.scope():
        model = common.build_model(keras)
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=args.learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            # several steps per remote call: each call is a round trip to a worker
            steps_per_execution=args.steps_per_execution,
        )
    steps_per_epoch = total_train // args.batch_size
    start = time.time()
    history = model.fit(keras.utils.experimental.DatasetCreator(dataset_fn), epochs=args.epochs,
                        steps_per_epoch=steps_per_epoch, verbose=2)
    train_s = time.time() - start

    # Evaluate a local, non-distributed copy of the trained weights on the chief.
    local = common.build_model(keras)
    local.set_weights(model.get_weights())  # read from the ps
    local.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    test = common.records([path for path, _ in common.split_files(args.data_dir, "test")])
    x_test, y_test = (np.stack(column) for column in zip(*test.as_numpy_iterator(), strict=True))
    loss, accuracy = local.evaluate(x_test, y_test, batch_size=256, verbose=0)
    local.save(os.path.join(args.export_dir, "model.keras"))
    common.write_json(os.path.join(args.export_dir, "results.json"), {
        "accuracy": float(accuracy), "loss": float(loss), "epochs": args.epochs,
        "steps_per_epoch": steps_per_epoch, "train_seconds": round(train_s, 2),
        "cluster_spec": ctx.cluster_spec, "keras": common.keras_flavour(),
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
    })


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.split("\n\n")[0], "ps_strategy",
                                cluster_size=3, epochs=10, batch_size=64)
    parser.add_argument("--num-ps", type=int, default=1, help="(default: %(default)s)")
    parser.add_argument("--learning-rate", type=float, default=0.005, help="(default: %(default)s)")
    parser.add_argument("--steps-per-execution", type=int, default=11,
                        help="training steps per call to a worker (default: %(default)s)")
    args = common.parse_args(parser, argv)
    workers = args.cluster_size - args.num_ps - 1
    if workers < 1:
        parser.error(f"--cluster-size {args.cluster_size} leaves no worker next to "
                     f"{args.num_ps} ps and the chief; use at least {args.num_ps + 2}")
    common.setup_logging()
    common.ensure_data(args.data_dir, training_nodes=workers)
    os.makedirs(args.export_dir, exist_ok=True)
    results_path = os.path.join(args.export_dir, "results.json")
    if os.path.exists(results_path):
        os.remove(results_path)  # never report a previous run's accuracy

    spark = common.spark_session("tfos-ps-strategy", args.cluster_size, args.master)
    start = time.monotonic()
    try:
        cluster = tfos.run(spark.sparkContext, main_fun, args, num_executors=args.cluster_size,
                           num_ps=args.num_ps, master_node="chief", keras="tf_keras")
        print("cluster: " + ", ".join(f"{n.job_name}:{n.task_index} on executor {n.executor_id}"
                                      for n in cluster.cluster_info), flush=True)
        # returns when the chief is done; tfos then stops the ps and the worker servers
        cluster.shutdown()
    finally:
        spark.stop()

    results = common.read_results(args.export_dir)
    common.print_history(results["history"])
    print(f"trained in {time.monotonic() - start:.1f} s (fit {results['train_seconds']:.1f} s, "
          f"{results['keras']}); test loss {results['loss']:.4f}")
    print(f"final accuracy: {results['accuracy']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
