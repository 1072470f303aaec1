"""Keras ``model.fit`` under MultiWorkerMirroredStrategy on Spark executors (InputMode.TENSORFLOW).

Each Spark executor runs one TF node; the nodes read their own TFRecord files (sharded by
file with ``ctx.shard_files``), train one model together with
synchronous all-reduce, evaluate it on the test files, and the chief exports it::

    python examples/mnist/keras_mwms.py

prints, after the cluster shut down, ``final accuracy: 0.9xx``. The data (scikit-learn's
8x8 digits, no download) is made on first use by data_setup.py.

Restart from checkpoint: with ``--max-restarts 1``, a failed node makes tfos stop the
cluster and start it again (``ctx.attempt`` 1); the chief checkpoints the weights and the
epoch after every epoch, and every node resumes from that checkpoint. Try it with
``--kill-worker-after-epoch 3``, which SIGKILLs the worker's TF process on attempt 0.
"""

from __future__ import annotations

import os
import shutil
import sys
import time

import mnist_common as common

import tfos


def main_fun(args, ctx):
    """One TF node: chief (``ctx.worker_num == 0``) or worker. TF_CONFIG is already set."""
    import tempfile
    import warnings

    import mnist_common as common
    import tensorflow as tf

    # tf.keras is Keras 3 here, or tf-keras 2.x when the driver passed keras="tf_keras";
    # tfos has already applied its Keras 3 fix for fit/evaluate under MWMS.
    keras = tf.keras
    # built before any other TF op, as MWMS requires; reads the cluster from TF_CONFIG
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    print(f"[{ctx.job_name}:{ctx.task_index}] {ctx.num_workers} training nodes, "
          f"{strategy.num_replicas_in_sync} replicas in sync", flush=True)

    # Shard by file: ctx.shard_files gives this node the sorted matching files worker_num,
    # worker_num + num_workers, ... (the chief is 0); auto-sharding is off in common.records.
    # The dataset is batched with the GLOBAL batch size: MWMS splits each batch among the
    # replicas, so one step consumes batch_size records in all.
    my_files = ctx.shard_files(os.path.join(args.data_dir, "train", "part-*.tfrecord"))
    total_train = sum(count for _, count in common.split_files(args.data_dir, "train"))
    # Every node must run the same number of steps, or the all-reduce of the node
    # that has more waits forever: repeat() makes the input endless and the step
    # count comes from the total, not from this node's share.
    steps_per_epoch = total_train // args.batch_size
    train = (common.records(my_files)
             .shuffle(2048, seed=ctx.worker_num).repeat().batch(args.batch_size)
             .prefetch(tf.data.AUTOTUNE))
    # Every node evaluates the whole (small) test set: same step count everywhere and
    # the exact accuracy, with no uneven-shard bookkeeping.
    test = common.records([path for path, _ in common.split_files(args.data_dir, "test")])
    test = test.batch(args.batch_size)

    with strategy.scope():
        model = common.build_model(keras)
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=args.learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
    # after a restart (ctx.attempt > 0) every node resumes from the chief's last checkpoint,
    # so all of them run the same remaining epochs
    checkpoint = common.epoch_checkpoint(model, os.path.join(args.export_dir, "checkpoint"), ctx.is_chief)
    initial_epoch = checkpoint.restore()
    if ctx.attempt:
        print(f"[{ctx.job_name}:{ctx.task_index}] attempt {ctx.attempt}: resuming at epoch {initial_epoch + 1}",
              flush=True)

    # Only the chief keeps what it writes; the others write to throw-away dirs (MWMS
    # wants every node to run the same save/summary code).
    scratch = tempfile.mkdtemp(prefix="tfos-keras-mwms-")
    callbacks = [checkpoint]
    if args.kill_worker_after_epoch and ctx.attempt == 0 and ctx.job_name == "worker":
        callbacks.append(common.kill_after_epoch(args.kill_worker_after_epoch))
    if args.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=ctx.log_dir if ctx.is_chief else scratch))

    start = time.time()
    # shuffle=False: the dataset shuffles itself (Keras 3 warns that it ignores shuffle=True)
    history = model.fit(train, epochs=args.epochs, initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
                        shuffle=False, callbacks=callbacks, verbose=2 if ctx.is_chief else 0)
    train_s = time.time() - start
    with warnings.catch_warnings():
        # the test set's length is unknown to Keras, so Keras 3 warns when it ends; it should
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        loss, accuracy = model.evaluate(test, verbose=0)

    export_dir = args.export_dir if ctx.is_chief else scratch
    os.makedirs(export_dir, exist_ok=True)
    model.save(os.path.join(export_dir, "model.keras"))
    if ctx.is_chief:
        common.write_json(os.path.join(export_dir, "results.json"), {
            "accuracy": float(accuracy), "loss": float(loss), "epochs": args.epochs,
            "attempt": ctx.attempt, "initial_epoch": initial_epoch,
            "steps_per_epoch": steps_per_epoch, "training_nodes": ctx.num_workers,
            "train_seconds": round(train_s, 2), "keras": common.keras_flavour(),
            "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        })


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.split("\n\n")[0], "keras_mwms",
                                cluster_size=2, epochs=10, batch_size=64)
    parser.add_argument("--learning-rate", type=float, default=0.005, help="(default: %(default)s)")
    parser.add_argument("--tensorboard", action="store_true",
                        help="run TensorBoard on the chief's executor and log to it")
    parser.add_argument("--max-restarts", type=int, default=0,
                        help="restart the whole cluster from the last checkpoint this many times (default: 0)")
    parser.add_argument("--kill-worker-after-epoch", type=int, default=0,
                        help="demo: SIGKILL the worker's TF process after this epoch on the first attempt")
    parser.add_argument("--keras", choices=("keras3", "tf_keras"), default="keras3",
                        help="what tf.keras is on the nodes: Keras 3 (with tfos's MWMS fix) or "
                             "tf-keras 2.x (default: %(default)s)")
    args = common.parse_args(parser, argv)
    common.setup_logging()
    common.ensure_data(args.data_dir, training_nodes=args.cluster_size)
    results_path = os.path.join(args.export_dir, "results.json")
    if os.path.exists(results_path):
        os.remove(results_path)  # never report a previous run's accuracy
    shutil.rmtree(os.path.join(args.export_dir, "checkpoint"), ignore_errors=True)  # nor resume a previous run

    spark = common.spark_session("tfos-keras-mwms", args.cluster_size, args.master)
    start = time.monotonic()
    try:
        cluster = tfos.run(
            spark.sparkContext, main_fun, args, num_executors=args.cluster_size,
            tensorboard=args.tensorboard, input_mode=tfos.InputMode.TENSORFLOW,
            log_dir=os.path.join(args.export_dir, "tensorboard") if args.tensorboard else None,
            master_node="chief", keras=args.keras, max_restarts=args.max_restarts,
        )
        if args.tensorboard:
            print(f"TensorBoard: {cluster.tensorboard_url()}", flush=True)
        cluster.shutdown()
    finally:
        spark.stop()

    results = common.read_results(args.export_dir)
    common.print_history(results["history"], first_epoch=results["initial_epoch"] + 1)
    if results["attempt"]:
        print(f"restarted {results['attempt']} time(s); the last attempt resumed at epoch {results['initial_epoch'] + 1}")
    print(f"trained on {results['training_nodes']} nodes in {time.monotonic() - start:.1f} s "
          f"(fit {results['train_seconds']:.1f} s, {results['keras']}); "
          f"model in {os.path.join(args.export_dir, 'model.keras')}")
    print(f"final accuracy: {results['accuracy']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
