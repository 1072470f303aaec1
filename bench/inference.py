"""DataFrame batch inference: ``TFModel.transform`` against Spark's built-in
``pyspark.ml.functions.predict_batch_udf``, with the same SavedModel and batch size, in
the same run, on 2 executors.

* Data: ``--rows`` rows of ``id long, features array<float>`` (``--features`` values per
  row, uniform in [0, 1), made by Spark with a fixed seed), ``--partitions`` partitions,
  cached and counted before anything is timed.
* Model: a dense Keras 3 classifier (features -> 128 relu -> 10 logits) exported once as a
  SavedModel (``model.export``); signature ``serving_default``, input ``x`` (float32
  ``[None, features]``), output ``output_0`` (float32 ``[None, 10]``).
* tfos: ``TFModel().setExportDir(dir).setInputMapping({"features": "x"})
  .setOutputMapping({"output_0": "prediction"}).setBatchSize(B).transform(df)``.
* Reference: ``df.withColumn("prediction", predict_batch_udf(make_predict_fn,
  return_type=array<float>, batch_size=B, input_tensor_shapes=[[features]])("features"))``,
  where ``make_predict_fn`` loads the same SavedModel and calls the same signature on the
  NumPy batch it is given.
* Each run computes every row of the result (``write.format("noop")``: nothing is
  pruned, nothing collected). One unmeasured run of each first (the models load in
  every executor's Python worker and stay cached), then ``--repeats`` runs of each,
  interleaved. Reported: rows/s, median of the repeats, and the ratio tfos / reference
  (target >= 1.0x).
* Equality: both predictions for the first ``--check-rows`` ids are collected and must be
  allclose (asserted).

Usage: python bench/inference.py [--rows 200000] [--features 64] [--batch-size 1000]
                                 [--partitions 8] [--repeats 5] [--check-rows 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import start_spark  # noqa: E402

SEED = 1234
CLASSES = 10


def export_model(path: str, features: int) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(SEED)
    inputs = keras.Input((features,), name="x")
    hidden = keras.layers.Dense(128, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(CLASSES)(hidden))
    model.export(path, verbose=False)


def make_data(spark, rows: int, features: int, partitions: int):
    from pyspark.sql import functions as F

    values = F.array(*[F.rand(seed=SEED + i) for i in range(features)]).cast("array<float>")
    df = spark.range(0, rows, numPartitions=partitions).select(F.col("id"), values.alias("features"))
    df = df.cache()
    assert df.count() == rows
    return df


def tfos_transform(df, model_dir: str, batch_size: int):
    from tfos.pipeline import TFModel

    model = (TFModel().setExportDir(model_dir).setInputMapping({"features": "x"})
             .setOutputMapping({"output_0": "prediction"}).setBatchSize(batch_size))
    return model.transform(df)


def reference_udf(model_dir: str, batch_size: int, features: int):
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import ArrayType, FloatType

    def make_predict_fn():
        import tensorflow as tf

        loaded = tf.saved_model.load(model_dir)
        signature = loaded.signatures["serving_default"]

        def predict(x):
            _keep = loaded  # the signature reads the loaded object's variables
            return signature(x=tf.convert_to_tensor(x))["output_0"].numpy()

        return predict

    return predict_batch_udf(make_predict_fn, return_type=ArrayType(FloatType()), batch_size=batch_size,
                             input_tensor_shapes=[[features]])


def timed(df) -> float:
    start = time.perf_counter()
    df.write.format("noop").mode("overwrite").save()
    return time.perf_counter() - start


def check_equal(tfos_df, ref_df, check_rows: int) -> float:
    import numpy as np

    def by_id(df):
        rows = df.filter(f"id < {check_rows}").select("id", "prediction").collect()
        return {r.id: r.prediction for r in rows}

    ours, theirs = by_id(tfos_df), by_id(ref_df)
    assert ours.keys() == theirs.keys() and len(ours) == check_rows, (len(ours), len(theirs))
    a = np.array([ours[i] for i in sorted(ours)], np.float32)
    b = np.array([theirs[i] for i in sorted(theirs)], np.float32)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    return float(np.abs(a - b).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--check-rows", type=int, default=5000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tfos-bench-inference-") as tmp:
        model_dir = os.path.join(tmp, "saved_model")
        export_model(model_dir, args.features)
        spark = start_spark(2, "tfos-bench-inference")
        try:
            t = time.monotonic()
            df = make_data(spark, args.rows, args.features, args.partitions)
            print(f"{args.rows} rows of {args.features} floats, {args.partitions} partitions, cached in "
                  f"{time.monotonic() - t:.1f} s; batch size {args.batch_size}", flush=True)
            ours = tfos_transform(df, model_dir, args.batch_size)
            theirs = df.withColumn("prediction", reference_udf(model_dir, args.batch_size, args.features)("features"))
            warm = {"tfos": timed(ours), "reference": timed(theirs)}  # loads the models in the workers
            print(f"warm-up (model loads included): tfos {warm['tfos']:.2f} s, "
                  f"predict_batch_udf {warm['reference']:.2f} s", flush=True)
            max_diff = check_equal(ours, theirs, args.check_rows)
            print(f"predictions of the first {args.check_rows} rows allclose (max |diff| {max_diff:.2e})",
                  flush=True)
            times: dict[str, list[float]] = {"tfos": [], "reference": []}
            for i in range(args.repeats):
                for name, frame in (("reference", theirs), ("tfos", ours)) if i % 2 else \
                        (("tfos", ours), ("reference", theirs)):
                    times[name].append(timed(frame))
                print(f"run {i + 1}: tfos {times['tfos'][-1]:.2f} s, predict_batch_udf "
                      f"{times['reference'][-1]:.2f} s", flush=True)
        finally:
            spark.stop()

    rates = {name: [args.rows / s for s in runs] for name, runs in times.items()}
    med = {name: statistics.median(r) for name, r in rates.items()}
    ratio = med["tfos"] / med["reference"]
    print(f"predict_batch_udf (reference): {med['reference']:,.0f} rows/s "
          f"(runs: {', '.join(f'{r:,.0f}' for r in rates['reference'])})")
    print(f"TFModel.transform:             {med['tfos']:,.0f} rows/s "
          f"(runs: {', '.join(f'{r:,.0f}' for r in rates['tfos'])})")
    print(f"ratio {ratio:.2f}x the reference (target >= 1.0x)")
    print(json.dumps({"rows": args.rows, "features": args.features, "batch_size": args.batch_size,
                      "partitions": args.partitions, "repeats": args.repeats,
                      "reference_rows_per_s": med["reference"], "tfos_rows_per_s": med["tfos"],
                      "ratio": ratio, "reference_runs_s": times["reference"], "tfos_runs_s": times["tfos"],
                      "warm_up_s": warm, "max_abs_diff": max_diff}))


if __name__ == "__main__":
    main()
