"""Code the digits examples share: the driver's Spark session and data check, and the
nodes' input pipeline and model.

The driver ships this file to the executors with ``sc.addPyFile`` (on a real cluster:
``spark-submit --py-files examples/mnist/mnist_common.py``), so ``main_fun`` can import it
in the TF process. TensorFlow is imported inside the node-side functions only: the
driver never needs it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parents[1]
#: written by data_setup.py; examples/data/ is gitignored
DEFAULT_DATA_DIR = EXAMPLES_DIR / "data" / "mnist"
#: each example exports to DEFAULT_EXPORT_ROOT/<example name>
DEFAULT_EXPORT_ROOT = EXAMPLES_DIR / "data" / "export"
IMAGE_PIXELS = 64
NUM_CLASSES = 10


# ------------------------------------------------------------------- driver


def base_parser(description: str, example: str, cluster_size: int, epochs: int,
                batch_size: int) -> argparse.ArgumentParser:
    """The arguments every example takes; the examples add their own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--cluster-size", type=int, default=cluster_size,
                        help="Spark executors = TF nodes (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=epochs, help="(default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=batch_size,
                        help="global batch size, split across the replicas (default: %(default)s)")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR),
                        help="data_setup.py's output; made if missing (default: %(default)s)")
    parser.add_argument("--export-dir", default=str(DEFAULT_EXPORT_ROOT / example),
                        help="where the chief writes its results (default: %(default)s)")
    parser.add_argument("--master", default=None,
                        help="Spark master (default: local-cluster[CLUSTER_SIZE,1,1024], several "
                             "executor processes on this machine)")
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse, and make the paths absolute: the executors run in other working directories."""
    args = parser.parse_args(argv)
    args.data_dir = os.path.abspath(args.data_dir)
    args.export_dir = os.path.abspath(args.export_dir)
    return args


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)


def ensure_data(data_dir: str, training_nodes: int) -> dict:
    """Make the data set if it is missing; return its ``meta.json``.

    Raises:
        SystemExit: when there are fewer train files than training nodes (sharding by file
            would leave a node without data).
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import data_setup

    if not data_setup.is_ready(data_dir):
        print(f"no data in {data_dir}; running data_setup.py", flush=True)
        data_setup.setup(data_dir, num_shards=max(4, training_nodes))
    meta = data_setup.read_meta(data_dir)
    if len(meta["train"]["files"]) < training_nodes:
        raise SystemExit(
            f"{data_dir} has {len(meta['train']['files'])} train files, fewer than the "
            f"{training_nodes} training nodes that each read their own files; run "
            f"python examples/mnist/data_setup.py --output {data_dir} --num-shards {training_nodes} --force"
        )
    return meta


def spark_session(app_name: str, cluster_size: int, master: str | None = None):
    """A SparkSession for the example, shipping this module to the executors.

    Without ``master`` it starts ``local-cluster[cluster_size,1,1024]``: one-core executor
    processes on this machine, the smallest setup that behaves like a real cluster. Under
    ``spark-submit`` (which starts the driver's JVM itself) the master is spark-submit's.
    """
    under_spark_submit = "PYSPARK_GATEWAY_PORT" in os.environ
    if master is None and not under_spark_submit:
        master = f"local-cluster[{cluster_size},1,1024]"
    if master is not None and master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # all on this machine: loopback
    # the executors' Python must be the one with TensorFlow and tfos
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if master is not None:
        builder = builder.master(master)
    builder = (
        builder.config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        # TensorFlow's C++ INFO/WARNING logs off; must be in the environment before TF loads
        .config("spark.executorEnv.TF_CPP_MIN_LOG_LEVEL", "2")
        # one-core executors cannot usefully share a GPU; keep TF on the CPU
        .config("spark.executorEnv.CUDA_VISIBLE_DEVICES", "")
    )
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    spark.sparkContext.addPyFile(__file__)
    return spark


def read_results(export_dir: str, name: str = "results.json") -> dict:
    with open(os.path.join(export_dir, name)) as f:
        return json.load(f)


def print_history(history: dict, first_epoch: int = 1) -> None:
    """One line per epoch from a Keras-style history: ``{"loss": [...], "accuracy": [...]}``."""
    for epoch, (loss, accuracy) in enumerate(zip(history["loss"], history["accuracy"], strict=True), first_epoch):
        print(f"epoch {epoch:>2}: train loss {loss:.4f}, train accuracy {accuracy:.4f}")


# --------------------------------------------------------------------- node


def split_files(data_dir: str, split: str) -> list[tuple[str, int]]:
    """``(absolute path, record count)`` of each TFRecord file of ``split`` ("train"/"test")."""
    with open(os.path.join(data_dir, "meta.json")) as f:
        meta = json.load(f)
    return [(os.path.join(data_dir, split, name), count)
            for name, count in sorted(meta[split]["files"].items())]


def shard_files(files: list, num_shards: int, index: int) -> list:
    """Files ``index, index + num_shards, ...``: this node's share when sharding by file."""
    if not 0 <= index < num_shards:
        raise ValueError(f"index must be in [0, {num_shards}); received: index={index}")
    if len(files) < num_shards:
        raise ValueError(f"{len(files)} files cannot be sharded {num_shards} ways by file; "
                         "rerun data_setup.py with more --num-shards")
    return files[index::num_shards]


def parse_example(serialized):
    """A serialized ``tf.train.Example`` -> ``(image float32[64], label int64)``."""
    import tensorflow as tf

    features = tf.io.parse_single_example(serialized, {
        "image": tf.io.FixedLenFeature([IMAGE_PIXELS], tf.float32),
        "label": tf.io.FixedLenFeature([], tf.int64),
    })
    return features["image"], features["label"]


def records(paths: list[str]):
    """``(image, label)`` pairs from TFRecord files, in file order; TF auto-sharding off.

    The examples shard by hand (each node reads its own files), so TF must not shard
    the result again: ``AutoShardPolicy.OFF``.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    dataset = tf.data.TFRecordDataset(paths).map(parse_example, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.with_options(options)


def build_model(keras):
    """A small dense classifier for 8x8 digits; ``keras`` is ``tf.keras`` or ``import keras``."""
    return keras.Sequential([
        keras.Input(shape=(IMAGE_PIXELS,)),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(NUM_CLASSES),
    ])


def keras_flavour() -> str:
    """What ``tf.keras`` is in this process: "Keras 3.x.y" or "tf-keras 2.x.y"."""
    if os.environ.get("TF_USE_LEGACY_KERAS", "").strip().lower() in ("1", "true"):
        import tf_keras

        return f"tf-keras {tf_keras.__version__}"
    import keras

    return f"Keras {keras.__version__}"


def write_json(path: str, data: dict) -> None:
    """Write ``data`` to ``path`` atomically (readers never see half a file)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


# ------------------------------------------------------ InputMode.SPARK data


def csv_path(data_dir: str, split: str) -> str:
    """data_setup.py's CSV of ``split`` ("train"/"test"): a header, then ``label,p0..p63`` rows."""
    return os.path.join(data_dir, "csv", f"{split}.csv")


def load_csv(data_dir: str, split: str):
    """``(images float32[n, 64], labels int64[n])`` of ``split``, read with NumPy (small data)."""
    import numpy as np

    table = np.loadtxt(csv_path(data_dir, split), delimiter=",", skiprows=1, dtype=np.float32, ndmin=2)
    return table[:, 1:], table[:, 0].astype(np.int64)


def _parse_csv_line(line: str):
    values = line.split(",")
    return [float(v) for v in values[1:]], int(values[0])


def spark_data(spark, data_dir: str, split: str, fmt: str):
    """``split`` read by Spark, as the feed takes it.

    ``fmt="rdd"``: an RDD of ``(image, label)`` tuples (64 floats, an int), from
    ``sc.textFile``. ``fmt="df"``: a DataFrame with columns ``image`` (array<float>)
    and ``label`` (bigint), from ``spark.read.csv``. Either way, every executor must be
    able to read ``data_dir`` (on a multi-host cluster: a shared filesystem or HDFS).
    """
    path = "file://" + csv_path(data_dir, split) if "://" not in data_dir else csv_path(data_dir, split)
    if fmt == "rdd":
        lines = spark.sparkContext.textFile(path)
        return lines.filter(lambda line: not line.startswith("label")).map(_parse_csv_line)
    if fmt == "df":
        from pyspark.sql import functions as F

        schema = ", ".join(["label INT"] + [f"p{i} FLOAT" for i in range(IMAGE_PIXELS)])
        table = spark.read.csv(path, header=True, schema=schema)
        return table.select(F.array(*[F.col(f"p{i}") for i in range(IMAGE_PIXELS)]).alias("image"),
                            F.col("label").cast("long").alias("label"))
    raise ValueError(f"fmt must be 'rdd' or 'df'; received: {fmt!r}")


def feed_signature(fmt: str):
    """``ctx.dataset``'s ``output_signature`` for :func:`spark_data`'s records (node side)."""
    import tensorflow as tf

    image = tf.TensorSpec((IMAGE_PIXELS,), tf.float32)
    label = tf.TensorSpec((), tf.int64)
    if fmt == "df":
        return {"image": image, "label": label}  # DataFrame rows: by column name
    return (image, label)  # RDD tuples: by position


def describe_feed(report) -> str:
    """A few lines summing up a :class:`tfos.feed.driver.FeedReport` (what ``cluster.train`` fed)."""
    lines = [
        f"fed {report.records_per_epoch} records x {report.epochs_fed}/{report.num_epochs} epochs "
        f"on queue {report.qname!r} ({len(report.partition_sizes)} partitions)"
        + (", stopped early by the nodes (terminate())" if report.terminated else ""),
    ]
    for name, count in zip(report.nodes, report.records_per_node, strict=True):
        lines.append(f"  {name}: {count} records per epoch")
    lines.append(f"  ctx.dataset yields {report.quota_per_node} per node per epoch; "
                 f"{report.dropped_per_epoch} record(s) per epoch dropped to keep the nodes in step")
    return "\n".join(lines)


def epoch_checkpoint(model, directory: str, is_chief: bool):
    """A Keras callback: the chief saves the weights and the epoch after every epoch; every node
    restores them at start. Made to pair with ``tfos.run(..., max_restarts=N)``.

    One writer (the chief), atomic renames (a reader never sees half a checkpoint), and every
    node reads the same files, so after a restart all nodes resume at the same epoch and run
    the same steps (MWMS needs that). The optimizer's state is not saved: it restarts fresh.
    Keras 3's ``BackupAndRestore`` is not used because every node would write the same files;
    with ``keras="tf_keras"``, tf-keras's ``BackupAndRestore`` handles MWMS and works too.
    ``restore()`` on the callback loads the checkpoint and returns the epoch to resume at.
    """
    import tensorflow as tf

    class EpochCheckpoint(tf.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.weights = os.path.join(directory, "last.weights.h5")
            self.meta = os.path.join(directory, "last.json")

        def restore(self) -> int:
            if not os.path.exists(self.meta):
                return 0
            model.load_weights(self.weights)
            with open(self.meta) as f:
                return int(json.load(f)["epoch"])

        def on_epoch_end(self, epoch, logs=None):
            if not is_chief:
                return
            os.makedirs(directory, exist_ok=True)
            model.save_weights(self.weights + ".tmp.weights.h5")
            os.replace(self.weights + ".tmp.weights.h5", self.weights)
            write_json(self.meta, {"epoch": epoch + 1})  # atomic too

    return EpochCheckpoint()


def kill_after_epoch(epoch: int):
    """A Keras callback that SIGKILLs this process after ``epoch`` (to demonstrate restarts)."""
    import signal

    import tensorflow as tf

    class _Kill(tf.keras.callbacks.Callback):
        def on_epoch_end(self, done, logs=None):
            if done + 1 == epoch:
                print(f"killing this TF process (pid {os.getpid()}) after epoch {epoch}, as asked", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)

    return _Kill()
