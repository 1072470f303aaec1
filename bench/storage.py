"""TFRecords read from S3 (an S3-API server on loopback) against the same files on local disk.

The files: ``--files`` TFRecord files of ``--records`` records of ``--record-bytes``
random bytes each, written locally and uploaded to a moto S3 server started here (its
own process, loopback). Each repeat, interleaved:

* reference: ``tf.data.TFRecordDataset(local_files, num_parallel_reads=R)`` read to the end;
* tfos: ``tfos.storage.tfrecord_dataset(s3_uris, num_parallel_reads=R)`` read to the end,
  staging under the default budget (the files fit: later epochs read the kept copies),
  and once more with ``--budget-mb`` small enough that files are deleted as read and
  every epoch downloads again (the streaming case).

Both datasets are batched by 1024 so the loop measures the reader, not Python. The
figure is records/s and the ratio tfos/reference (target: >= 0.8).

Usage: python bench/storage.py [--files 16] [--records 20000] [--record-bytes 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.s3_server import S3Server  # noqa: E402


def write_files(directory: str, files: int, records: int, size: int) -> list[str]:
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    paths = []
    for f in range(files):
        path = os.path.join(directory, f"part-{f:05d}.tfrecord")
        block = rng.integers(0, 256, size * 64, dtype=np.uint8).tobytes()
        with tf.io.TFRecordWriter(path) as writer:
            for r in range(records):
                start = (r * 7919) % (len(block) - size)
                writer.write(block[start:start + size])
        paths.append(path)
    return paths


def read_all(dataset) -> tuple[int, float]:
    started = time.perf_counter()
    count = 0
    for batch in dataset.batch(1024):
        count += int(batch.shape[0])
    return count, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--record-bytes", type=int, default=1000)
    parser.add_argument("--parallel-reads", type=int, default=4)
    parser.add_argument("--budget-mb", type=float, default=0, help="streaming budget (default: 3 files)")
    parser.add_argument("--repeats", type=int, default=3)
    opts = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from tfos.storage import tfrecord_dataset

    work = tempfile.mkdtemp(prefix="tfos-bench-storage-")
    server = S3Server().start()
    try:
        os.environ.update(server.env())
        server.make_bucket("bench")
        paths = write_files(work, opts.files, opts.records, opts.record_bytes)
        fs = server.filesystem()
        uris = []
        for path in paths:
            with open(path, "rb") as src, fs.open_output_stream(f"bench/{os.path.basename(path)}") as dst:
                dst.write(src.read())
            uris.append(f"s3://bench/{os.path.basename(path)}")
        file_bytes = os.path.getsize(paths[0])
        budget = int(opts.budget_mb * 1e6) if opts.budget_mb else 3 * file_bytes
        total = opts.files * opts.records
        print(f"{opts.files} files x {opts.records} records x {opts.record_bytes} B "
              f"({opts.files * file_bytes / 1e6:.0f} MB), num_parallel_reads={opts.parallel_reads}")
        kept = tfrecord_dataset(uris, num_parallel_reads=opts.parallel_reads, stage_dir=work)
        rates: dict[str, list[float]] = {"local TFRecordDataset": [], "s3 staged, first epoch": [],
                                         "s3 staged, kept (later epochs)": [], "s3 streaming (small budget)": []}
        for repeat in range(opts.repeats):
            n, s = read_all(tf.data.TFRecordDataset(paths, num_parallel_reads=opts.parallel_reads))
            rates["local TFRecordDataset"].append(n / s)
            if repeat == 0:
                n, s = read_all(kept)
                rates["s3 staged, first epoch"].append(n / s)
            n, s = read_all(kept)
            rates["s3 staged, kept (later epochs)"].append(n / s)
            streaming = tfrecord_dataset(uris, num_parallel_reads=opts.parallel_reads, stage_dir=work,
                                         max_stage_bytes=budget)
            n, s = read_all(streaming)
            rates["s3 streaming (small budget)"].append(n / s)
            assert n == total, (n, total)
        reference = statistics.median(rates["local TFRecordDataset"])
        for name, values in rates.items():
            rate = statistics.median(values)
            print(f"  {name:32} {rate / 1e3:8.0f}k records/s  {rate * opts.record_bytes / 1e6:6.0f} MB/s  "
                  f"{rate / reference:5.2f}x")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
