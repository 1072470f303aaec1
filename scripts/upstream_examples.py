"""Run TensorFlowOnSpark's examples/mnist/keras scripts through tfos.compat, unchanged.

    python scripts/upstream_examples.py PATH_TO_TENSORFLOWONSPARK [--epochs 1] [--only NAME]

PATH is a TensorFlowOnSpark checkout (a work tree, or a bare git directory: its HEAD is
read). Each script is copied with one change, ``tensorflowonspark`` -> ``tfos.compat``,
and run by pyspark's own ``spark-submit`` on ``local-cluster[2,1,1024]`` against synthetic
MNIST-shaped data made here (60,000 training and 10,000 test rows of 784 pixels, as CSV
and as TFRecords). Prints one line per script: exit code and seconds; the logs stay in
the work directory it prints. Not part of CI (several minutes); the results are in
docs/porting.md ("Runs unchanged").
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from upstream_suite import read_tree  # noqa: E402


def make_data(work: str) -> None:
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(1)
    for split, rows in (("train", 60000), ("test", 10000)):
        labels = rng.integers(0, 10, rows)
        images = rng.integers(0, 256, (rows, 784))
        csv = os.path.join(work, "csv", split)
        os.makedirs(csv, exist_ok=True)
        for p, part in enumerate(np.array_split(np.column_stack([labels, images]), 10)):
            np.savetxt(os.path.join(csv, f"part-{p:05d}"), part, delimiter=",", fmt="%d")
        # mnist_tf_ds.py parses a one-hot label of 10; mnist_inference.py one label
        for kind, label_of in (("tfr_onehot", lambda y: np.eye(10, dtype=np.int64)[y]), ("tfr", lambda y: [y])):
            out = os.path.join(work, kind, split)
            os.makedirs(out, exist_ok=True)
            for p in range(10):
                with tf.io.TFRecordWriter(os.path.join(out, f"part-r-{p:05d}")) as writer:
                    for i in range(p * rows // 10, (p + 1) * rows // 10):
                        writer.write(tf.train.Example(features=tf.train.Features(feature={
                            "label": tf.train.Feature(int64_list=tf.train.Int64List(value=label_of(int(labels[i])))),
                            "image": tf.train.Feature(int64_list=tf.train.Int64List(value=images[i])),
                        })).SerializeToString())


def spark_submit(work: str, name: str, script: str, args: list[str]) -> tuple[int, float]:
    import pyspark

    binary = os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-submit")
    command = [binary, "--master", "local-cluster[2,1,1024]", "--conf", "spark.executor.instances=2",
               "--conf", "spark.task.cpus=1", "--conf", "spark.dynamicAllocation.enabled=false",
               "--conf", "spark.ui.showConsoleProgress=false", "--conf", f"spark.pyspark.python={sys.executable}",
               "--conf", f"spark.pyspark.driver.python={sys.executable}",
               "--conf", "spark.executorEnv.TF_CPP_MIN_LOG_LEVEL=2", "--conf", "spark.executorEnv.CUDA_VISIBLE_DEVICES=",
               os.path.join(work, script), *args]
    started = time.monotonic()
    with open(os.path.join(work, f"{name}.log"), "w") as log:
        try:
            code = subprocess.run(command, cwd=work, stdout=log, stderr=subprocess.STDOUT, timeout=900,
                                  env=dict(os.environ, SPARK_LOCAL_IP="127.0.0.1")).returncode
        except subprocess.TimeoutExpired:
            code = -1
    return code, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source")
    parser.add_argument("--epochs", default="1")
    parser.add_argument("--only", default="")
    opts = parser.parse_args()
    work = tempfile.mkdtemp(prefix="tfos-upstream-examples-")
    for name, text in read_tree(opts.source, "examples/mnist/keras/"):
        if name.endswith(".py"):
            with open(os.path.join(work, name), "w", encoding="utf-8") as f:
                f.write(text.replace("tensorflowonspark", "tfos.compat"))
    make_data(work)
    model, export = os.path.join(work, "mnist_model"), os.path.join(work, "mnist_export")
    runs = [
        ("mnist_spark", "mnist_spark.py", ["--images_labels", f"file://{work}/csv/train", "--epochs", opts.epochs,
                                           "--model_dir", model, "--export_dir", export]),
        ("mnist_tf_ds", "mnist_tf_ds.py", ["--images_labels", f"{work}/tfr_onehot/train/part-r-*", "--epochs",
                                           opts.epochs, "--model_dir", model + "2", "--export_dir", export + "2"]),
        ("mnist_pipeline_train", "mnist_pipeline.py", ["--images_labels", f"{work}/csv/train", "--format", "csv",
                                                       "--mode", "train", "--epochs", opts.epochs,
                                                       "--model_dir", model + "3", "--export_dir", export + "3"]),
        ("mnist_pipeline_inference", "mnist_pipeline.py", ["--images_labels", f"{work}/csv/test", "--format", "csv",
                                                           "--mode", "inference", "--export_dir", export + "3",
                                                           "--output", f"{work}/predictions"]),
        ("mnist_inference", "mnist_inference.py", ["--images_labels", f"{work}/tfr/test", "--export_dir", export,
                                                   "--output", f"{work}/predictions2"]),
        ("mnist_tf", "mnist_tf.py", ["--epochs", opts.epochs, "--model_dir", model + "4", "--export_dir", export + "4"]),
    ]
    print(f"work directory (logs): {work}")
    for name, script, args in runs:
        if opts.only and opts.only != name:
            continue
        code, seconds = spark_submit(work, name, script, args)
        print(f"  {name:26} exit {code:3}  {seconds:5.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
