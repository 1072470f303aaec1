"""Make the examples' data set: scikit-learn's handwritten digits as sharded TFRecords and CSV.

The digits (``sklearn.datasets.load_digits``: 1797 8x8 grey images of 0-9) ship inside
scikit-learn, so this needs no network. It writes, under ``--output``::

    train/part-00000.tfrecord ... part-<N-1>.tfrecord   80% of the images
    test/part-00000.tfrecord  ... part-<N-1>.tfrecord   20% (stratified, fixed seed)
    csv/train.csv, csv/test.csv                          the same rows: label, p0..p63
    meta.json                                            counts per file, written last

Each record is a ``tf.train.Example`` with ``image``: 64 floats in [0, 1] and ``label``:
an int64 in 0..9. Rows are dealt to the shards round-robin, so shard sizes differ by
at most one.

Idempotent: when ``meta.json`` already describes the same settings it does nothing
(``--force`` rewrites). The files are built in a temporary directory and moved into
place, so a half-written data set is never mistaken for a whole one.

    python examples/mnist/data_setup.py [--output DIR] [--num-shards 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

#: examples/data/mnist, wherever the script is run from (examples/data/ is gitignored)
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "data" / "mnist"
SEED = 42
TEST_FRACTION = 0.2
FORMAT_VERSION = 1
NUM_PIXELS = 64
NUM_CLASSES = 10


def settings(num_shards: int) -> dict:
    """What ``meta.json`` must match for the data on disk to be reused."""
    return {"format_version": FORMAT_VERSION, "source": "sklearn.datasets.load_digits",
            "num_shards": num_shards, "seed": SEED, "test_fraction": TEST_FRACTION}


def read_meta(output: str | os.PathLike) -> dict | None:
    """The data set's ``meta.json``, or ``None`` when it is missing or unreadable."""
    try:
        with open(Path(output) / "meta.json") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def is_ready(output: str | os.PathLike, num_shards: int | None = None) -> bool:
    """True when ``output`` holds a complete data set (with ``num_shards`` shards, if given)."""
    meta = read_meta(output)
    if meta is None:
        return False
    if num_shards is None:
        num_shards = meta.get("num_shards")
    if {k: meta.get(k) for k in settings(num_shards)} != settings(num_shards):
        return False
    return all((Path(output) / split / name).is_file()
               for split in ("train", "test") for name in meta[split]["files"])


def setup(output: str | os.PathLike = DEFAULT_OUTPUT, num_shards: int = 4, force: bool = False) -> dict:
    """Write the data set to ``output`` unless it is already there; return its metadata."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1; received: num_shards={num_shards}")
    output = Path(output).resolve()
    if not force and is_ready(output, num_shards):
        return read_meta(output)

    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.data / 16.0).astype(np.float32)  # pixel values are 0..16
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=TEST_FRACTION, random_state=SEED, stratify=labels)

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private
        meta = dict(settings(num_shards), image_shape=[8, 8], num_pixels=NUM_PIXELS,
                    num_classes=NUM_CLASSES)
        (staging / "csv").mkdir()
        for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
            files = _write_tfrecords(staging / split, x, y, num_shards)
            _write_csv(staging / "csv" / f"{split}.csv", x, y)
            meta[split] = {"count": int(len(y)), "files": files}
        with open(staging / "meta.json", "w") as f:
            json.dump(meta, f, indent=2)
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return meta


def _write_tfrecords(directory: Path, x, y, num_shards: int) -> dict[str, int]:
    """Deal rows round-robin into ``num_shards`` files; return file name -> record count."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    directory.mkdir()
    counts = {}
    for shard in range(num_shards):
        name = f"part-{shard:05d}.tfrecord"
        rows = range(shard, len(y), num_shards)
        with tf.io.TFRecordWriter(str(directory / name)) as writer:
            for i in rows:
                example = tf.train.Example(features=tf.train.Features(feature={
                    "image": tf.train.Feature(float_list=tf.train.FloatList(value=x[i].tolist())),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(y[i])])),
                }))
                writer.write(example.SerializeToString())
        counts[name] = len(rows)
    return counts


def _write_csv(path: Path, x, y) -> None:
    with open(path, "w") as f:
        f.write(",".join(["label"] + [f"p{i}" for i in range(NUM_PIXELS)]) + "\n")
        for image, label in zip(x, y, strict=True):
            f.write(f"{int(label)}," + ",".join(f"{v:.6g}" for v in image) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT),
                        help="directory to write (default: %(default)s)")
    parser.add_argument("--num-shards", type=int, default=4,
                        help="TFRecord files per split; file sharding needs at least one per "
                             "training node (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="rewrite even if the data is there")
    args = parser.parse_args(argv)
    start = time.monotonic()
    reused = not args.force and is_ready(args.output, args.num_shards)
    meta = setup(args.output, args.num_shards, args.force)
    what = "already there" if reused else f"written in {time.monotonic() - start:.1f} s"
    print(f"digits data in {Path(args.output).resolve()} ({what}): "
          f"{meta['train']['count']} train / {meta['test']['count']} test records, "
          f"{args.num_shards} TFRecord shards per split, CSV in csv/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
