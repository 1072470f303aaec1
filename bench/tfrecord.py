"""DataFrame <-> TFRecord (tfos.dfutil) against Parquet, the same DataFrame in the same run.

The DataFrame: ``--rows`` rows of ``label long, score double, tag string, image binary
(768 bytes, hash-derived so it does not compress away), embedding array<float> (16)``,
made by Spark expressions in ``--partitions`` partitions, cached and counted before
anything is timed. Each repeat, interleaved:

* write: ``df.write.parquet(dir)`` against ``dfutil.save_as_tfrecords(df, dir)``.
* read: ``spark.read.parquet(dir)`` against ``dfutil.load_tfrecords(spark, dir)`` (schema
  from the ``_tfos_schema.json`` it wrote), each computed in full by a ``noop`` write
  (every row made, nothing stored); and ``load_tfrecords`` on ``dir/part-*`` (no saved
  schema: one more job samples the files to infer it).

Rates are rows/s; ratios are tfos over Parquet (higher is better for tfos).
``--compression GZIP`` compares GZIP TFRecords with gzip Parquet.

Usage: python bench/tfrecord.py [--rows 200000] [--partitions 4] [--repeats 3] [--compression GZIP]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import start_spark  # noqa: E402

from tfos import dfutil  # noqa: E402


def make_frame(spark, rows: int, partitions: int):
    from pyspark.sql import functions as F

    image = F.concat(*[F.unhex(F.sha2(F.concat(F.col("id").cast("string"), F.lit(f"-{k}")), 512))
                       for k in range(12)])
    embedding = F.array(*[(F.col("id") % (k + 3)).cast("float") / F.lit(4.0).cast("float") for k in range(16)])
    df = (spark.range(0, rows, numPartitions=partitions)
          .select(F.col("id").alias("label"), (F.col("id") * 0.5).alias("score"),
                  F.concat(F.lit("tag-"), (F.col("id") % 1000).cast("string")).alias("tag"),
                  image.alias("image"), embedding.cast("array<float>").alias("embedding"))
          .cache())
    assert df.count() == rows
    return df


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compute(df) -> None:
    df.write.format("noop").mode("overwrite").save()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--executors", type=int, default=2)
    parser.add_argument("--compression", default=None, choices=[None, "GZIP"])
    args = parser.parse_args(argv)

    spark = start_spark(args.executors, "tfos-bench-tfrecord")
    work = tempfile.mkdtemp(prefix="tfos-bench-tfrecord-")
    parquet_codec = "gzip" if args.compression else "snappy"
    times: dict[str, list[float]] = {k: [] for k in
                                     ("parquet write", "tfrecord write", "parquet read", "tfrecord read",
                                      "tfrecord read, inferred schema")}
    try:
        df = make_frame(spark, args.rows, args.partitions)
        pq_dir, tf_dir = os.path.join(work, "parquet"), os.path.join(work, "tfrecord")
        pattern = os.path.join(tf_dir, "part-*")
        # warm-up: Python workers started, code imported, JIT warm on both sides
        small = df.limit(1000)
        small.write.mode("overwrite").option("compression", parquet_codec).parquet(pq_dir)
        dfutil.save_as_tfrecords(small, tf_dir, compression=args.compression, overwrite=True)
        compute(dfutil.load_tfrecords(spark, tf_dir))
        compute(spark.read.parquet(pq_dir))
        for r in range(args.repeats):
            times["parquet write"].append(timed(
                lambda: df.write.mode("overwrite").option("compression", parquet_codec).parquet(pq_dir)))
            saved = None

            def save():
                nonlocal saved
                saved = dfutil.save_as_tfrecords(df, tf_dir, compression=args.compression, overwrite=True)

            times["tfrecord write"].append(timed(save))
            assert saved.total_records == args.rows
            times["parquet read"].append(timed(lambda: compute(spark.read.parquet(pq_dir))))
            times["tfrecord read"].append(timed(lambda: compute(dfutil.load_tfrecords(spark, tf_dir))))
            times["tfrecord read, inferred schema"].append(timed(
                lambda: compute(dfutil.load_tfrecords(spark, pattern, binary_features=["image"]))))
            print(f"repeat {r + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
                  flush=True)
        sizes = {name: sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
                 for name, d in (("parquet", pq_dir), ("tfrecord", tf_dir))}
        back = dfutil.load_tfrecords(spark, tf_dir)
        assert back.count() == args.rows
    finally:
        spark.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{args.rows} rows, {args.partitions} partitions, {args.executors} executors, "
          f"compression {args.compression or 'none'} (Parquet {parquet_codec}); "
          f"files: parquet {sizes['parquet'] / 1e6:.1f} MB, tfrecord {sizes['tfrecord'] / 1e6:.1f} MB")
    print(f"{'':34}{'median s':>9}{'min':>8}{'max':>8}{'rows/s':>10}")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:34}{med:9.2f}{min(values):8.2f}{max(values):8.2f}{args.rows / med:10.0f}")
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nwrite: tfrecord/parquet rate ratio {med['parquet write'] / med['tfrecord write']:.2f}x")
    print(f"read:  tfrecord/parquet rate ratio {med['parquet read'] / med['tfrecord read']:.2f}x "
          f"({med['parquet read'] / med['tfrecord read, inferred schema']:.2f}x when inferring the schema)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
