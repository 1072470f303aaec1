"""Worker body for ``test_keras_compat.py``: one MultiWorkerMirroredStrategy process.

Run as a script, not imported by pytest (the leading underscore keeps it out of
collection). The parent test sets ``TF_CONFIG`` (cluster + task index),
``CUDA_VISIBLE_DEVICES=""`` and ``TF_CPP_MIN_LOG_LEVEL=2``, then launches one
process per worker::

    python _mwms_fit_worker.py OUT_DIR [--no-patch] [--predict]

On success the worker writes ``OUT_DIR/result_<task index>.npz`` holding the
final weights (``w0``, ``w1``, ...), the per-epoch training ``loss``, the
``eval_loss`` and ``pred_rows`` (rows returned by ``predict``, -1 without
``--predict``), then exits 0. If ``fit``/``evaluate`` raises, the worker writes
``<type>: <message>`` to ``OUT_DIR/error_<task index>.txt`` and exits 3 at once
(``os._exit``), so a peer stuck in a collective cannot keep it alive.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

EXIT_FIT_FAILED = 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("--no-patch", action="store_true", help="do not apply the fix")
    parser.add_argument("--predict", action="store_true", help="also run model.predict")
    args = parser.parse_args(argv)

    task_index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]

    import numpy as np
    import tensorflow as tf

    if not args.no_patch:
        from tfos.keras_compat import apply_keras3_mwms_fix

        if not apply_keras3_mwms_fix():
            print("apply_keras3_mwms_fix() returned False", file=sys.stderr)
            return 2

    import keras

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    keras.utils.set_random_seed(0)

    # y = x @ [1, -2, 3, 0.5] + 0.25, identical on every worker; the distributed
    # dataset shards it between the workers.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [3.0], [0.5]], dtype="float32") + 0.25).astype("float32")
    global_batch = 16
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(global_batch)

    with strategy.scope():
        model = keras.Sequential(
            [
                keras.Input(shape=(4,)),
                keras.layers.Dense(8, activation="relu"),
                keras.layers.Dense(1),
            ]
        )
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05), loss="mse")

    try:
        history = model.fit(dataset, epochs=2, verbose=0)
        eval_loss = model.evaluate(dataset, verbose=0)
        pred_rows = -1
        if args.predict:
            preds = model.predict(
                tf.data.Dataset.from_tensor_slices(x).batch(global_batch), verbose=0
            )
            # Keras gathers the shards of all workers, so every worker sees all rows.
            pred_rows = int(np.shape(preds)[0])
    except Exception as exc:  # noqa: BLE001 - report any failure to the parent test
        traceback.print_exc()
        with open(os.path.join(args.out_dir, f"error_{task_index}.txt"), "w") as f:
            f.write(f"{type(exc).__name__}: {exc}")
        sys.stderr.flush()
        os._exit(EXIT_FIT_FAILED)

    arrays = {f"w{i}": np.asarray(w) for i, w in enumerate(model.get_weights())}
    np.savez(
        os.path.join(args.out_dir, f"result_{task_index}.npz"),
        loss=np.asarray(history.history["loss"], dtype="float64"),
        eval_loss=np.asarray(eval_loss, dtype="float64"),
        pred_rows=np.asarray(pred_rows),
        **arrays,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
