"""A sidecar evaluator (``eval_node=True``) next to MultiWorkerMirroredStrategy training.

tfos plans chief:0, evaluator:0 and worker:0 on three executors. The chief and the worker
train one model with MWMS and ``model.fit`` and save a checkpoint at the end of every
epoch (the chief into ``EXPORT_DIR/checkpoints``, the worker into a throw-away dir, as
MWMS wants every node to save). The evaluator is not part of the training cluster: it
watches the checkpoint dir, evaluates each new checkpoint on the test set with its own
copy of the model, and appends the result to ``EXPORT_DIR/evaluations.json``. After the
last epoch the chief writes a marker naming the final checkpoint; the evaluator stops
once it has evaluated that one::

    python examples/mnist/evaluator_sidecar.py

prints one line per evaluated checkpoint, then ``final accuracy: 0.9xx``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

import mnist_common as common

import tfos

FINAL_MARKER = "FINAL"  # in the checkpoint dir: the chief's "training is over" note
EVALUATIONS = "evaluations.json"


def main_fun(args, ctx):
    if ctx.job_name == "evaluator":
        evaluate_checkpoints(args)
    else:
        train(args, ctx)


def train(args, ctx):
    """Chief and worker: MWMS ``fit``, one checkpoint per epoch, then the final marker."""
    import tempfile

    import mnist_common as common
    import tensorflow as tf

    keras = tf.keras
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    train_files = common.split_files(args.data_dir, "train")
    my_files = common.shard_files(train_files, ctx.num_workers, ctx.worker_num)
    # same steps on every node (see keras_mwms.py): endless input, steps from the total
    steps_per_epoch = sum(count for _, count in train_files) // args.batch_size
    train = (common.records([path for path, _ in my_files])
             .shuffle(2048, seed=ctx.worker_num).repeat().batch(args.batch_size))

    with strategy.scope():
        model = common.build_model(keras)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=args.learning_rate),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])

    checkpoint_dir = os.path.join(args.export_dir, "checkpoints")
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(model=model),
        checkpoint_dir if ctx.is_chief else tempfile.mkdtemp(prefix="tfos-sidecar-"),
        max_to_keep=None)

    class SaveEveryEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            manager.save(checkpoint_number=epoch + 1)  # every node saves; see above

    model.fit(train, epochs=args.epochs, steps_per_epoch=steps_per_epoch, shuffle=False,
              callbacks=[SaveEveryEpoch()], verbose=2 if ctx.is_chief else 0)
    if not ctx.is_chief:
        return
    common.write_json(os.path.join(checkpoint_dir, FINAL_MARKER),
                      {"final_checkpoint": manager.latest_checkpoint, "epochs": args.epochs})
    # tfos stops the evaluator as soon as the training nodes are done, so give it a
    # bounded time to evaluate the final checkpoint before returning.
    results = os.path.join(args.export_dir, EVALUATIONS)
    deadline = time.monotonic() + args.eval_wait
    while time.monotonic() < deadline and not _read(results).get("done"):
        time.sleep(0.2)


def evaluate_checkpoints(args):
    """Evaluator: evaluate every checkpoint as it appears, until the final one is done."""
    import mnist_common as common
    import numpy as np
    import tensorflow as tf

    keras = tf.keras
    model = common.build_model(keras)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    checkpoint = tf.train.Checkpoint(model=model)
    test = common.records([path for path, _ in common.split_files(args.data_dir, "test")])
    x_test, y_test = (np.stack(column) for column in zip(*test.as_numpy_iterator(), strict=True))

    checkpoint_dir = os.path.join(args.export_dir, "checkpoints")
    results_path = os.path.join(args.export_dir, EVALUATIONS)
    evaluations: list[dict] = []
    seen: set[str] = set()
    idle_since = time.monotonic()
    while True:
        state = tf.train.get_checkpoint_state(checkpoint_dir)
        # listed in the state file only once completely written
        new = [p for p in (state.all_model_checkpoint_paths if state else []) if p not in seen]
        for path in new:
            checkpoint.restore(path).expect_partial()
            loss, accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
            seen.add(path)
            evaluations.append({"checkpoint": os.path.basename(path),
                                "epoch": int(path.rsplit("-", 1)[1]),
                                "loss": float(loss), "accuracy": float(accuracy),
                                "evaluated_at": time.time()})
            print(f"[evaluator] {os.path.basename(path)}: accuracy {accuracy:.4f}", flush=True)
            common.write_json(results_path, {"evaluations": evaluations, "done": False})
        if new:
            idle_since = time.monotonic()
            continue
        final = _read(os.path.join(checkpoint_dir, FINAL_MARKER)).get("final_checkpoint")
        if final in seen:
            break
        if time.monotonic() - idle_since > args.eval_idle_timeout:
            print(f"[evaluator] no new checkpoint for {args.eval_idle_timeout:g} s; stopping",
                  flush=True)
            break
        time.sleep(0.5)
    common.write_json(results_path, {"evaluations": evaluations, "done": True})


def _read(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.split("\n\n")[0], "evaluator_sidecar",
                                cluster_size=3, epochs=10, batch_size=64)
    parser.add_argument("--learning-rate", type=float, default=0.005, help="(default: %(default)s)")
    parser.add_argument("--eval-wait", type=float, default=60,
                        help="seconds the chief waits for the evaluator to finish (default: %(default)s)")
    parser.add_argument("--eval-idle-timeout", type=float, default=300,
                        help="the evaluator gives up after this many seconds without a new "
                             "checkpoint (default: %(default)s)")
    args = common.parse_args(parser, argv)
    training_nodes = args.cluster_size - 1
    if training_nodes < 1:
        parser.error("--cluster-size must be at least 2: the chief and the evaluator")
    common.setup_logging()
    common.ensure_data(args.data_dir, training_nodes=training_nodes)
    # start clean: the evaluator must not see a previous run's checkpoints
    shutil.rmtree(os.path.join(args.export_dir, "checkpoints"), ignore_errors=True)
    if os.path.exists(os.path.join(args.export_dir, EVALUATIONS)):
        os.remove(os.path.join(args.export_dir, EVALUATIONS))

    spark = common.spark_session("tfos-evaluator-sidecar", args.cluster_size, args.master)
    start = time.monotonic()
    try:
        cluster = tfos.run(spark.sparkContext, main_fun, args, num_executors=args.cluster_size,
                           master_node="chief", eval_node=True)
        print("cluster: " + ", ".join(f"{n.job_name}:{n.task_index} on executor {n.executor_id}"
                                      for n in cluster.cluster_info), flush=True)
        cluster.shutdown()  # after the chief and worker return; then stops the evaluator
    finally:
        spark.stop()

    results = _read(os.path.join(args.export_dir, EVALUATIONS))
    evaluations = results.get("evaluations", [])
    for e in evaluations:
        print(f"epoch {e['epoch']:>2} ({e['checkpoint']}): test loss {e['loss']:.4f}, "
              f"test accuracy {e['accuracy']:.4f}")
    if not evaluations:
        print("the evaluator evaluated no checkpoint", file=sys.stderr)
        return 1
    complete = "" if results.get("done") else " (the evaluator was stopped before it finished)"
    print(f"{len(evaluations)} checkpoints evaluated in {time.monotonic() - start:.1f} s{complete}")
    print(f"final accuracy: {evaluations[-1]['accuracy']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
