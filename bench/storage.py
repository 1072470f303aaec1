"""TFRecords read from S3 (an S3-API server on loopback) against the same files on local disk.

Two cases by default, each its own set of files written locally and uploaded to a moto
S3 server started here (its own process, loopback): 16 files of 20,000 records of 1,000
random bytes (325 MB), and 8 files of 3,200 records of 4,096 bytes (105 MB). Each repeat,
interleaved:

* reference: ``tf.data.TFRecordDataset(local_files, num_parallel_reads=R)`` read to the end;
* the server's own rate: pyarrow's ``S3FileSystem`` reading every file whole into memory
  (``open_input_file(...).read()``), with 1 and with 4 threads: what any client gets;
* tfos: ``tfos.storage.tfrecord_dataset(s3_uris, num_parallel_reads=R)`` read to the end,
  staging under the default budget (the files fit: later epochs read the kept copies),
  and once more with a budget of 3 files, so that files are deleted as read and every
  epoch downloads again (the streaming case).

Both datasets are batched by 1024 so the loop measures the reader, not Python. The
figures are MB/s, the ratio tfos/local (target: >= 0.8), and for the epochs that
download, the ratio to the server's best rate (target: >= 0.8).

Usage: python bench/storage.py [--cases 16x20000x1000 8x3200x4096] [--parallel-reads 4] [--repeats 3]
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


def server_rate(fs, keys: list[str], threads: int) -> float:
    """Bytes per second of whole-file reads from the server (the data is dropped)."""
    from concurrent import futures

    def whole(key: str) -> int:
        with fs.open_input_file(key) as f:
            return len(f.read())

    started = time.perf_counter()
    with futures.ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(whole, keys))
    return total / (time.perf_counter() - started)


def run_case(server, work: str, files: int, records: int, size: int, reads: int, repeats: int) -> None:
    import tensorflow as tf

    from tfos.storage import tfrecord_dataset

    case_dir = tempfile.mkdtemp(prefix=f"case-{size}-", dir=work)
    bucket = f"bench{size}"
    server.make_bucket(bucket)
    paths = write_files(case_dir, files, records, size)
    fs = server.filesystem()
    for path in paths:
        with open(path, "rb") as src, fs.open_output_stream(f"{bucket}/{os.path.basename(path)}") as dst:
            dst.write(src.read())
    keys = [f"{bucket}/{os.path.basename(path)}" for path in paths]
    uris = [f"s3://{key}" for key in keys]
    file_bytes = os.path.getsize(paths[0])
    total = files * records
    print(f"{files} files x {records} records x {size} B ({files * file_bytes / 1e6:.0f} MB), "
          f"num_parallel_reads={reads}")
    kept = tfrecord_dataset(uris, num_parallel_reads=reads, stage_dir=case_dir)
    rates: dict[str, list[float]] = {"local TFRecordDataset": [], "server, whole files, 1 thread": [],
                                     "server, whole files, 4 threads": [], "s3 staged, first epoch": [],
                                     "s3 staged, kept (later epochs)": [], "s3 streaming (3-file budget)": []}
    downloads = ("s3 staged, first epoch", "s3 streaming (3-file budget)")
    record_bytes = size + 16  # the TFRecord framing: length, CRCs
    for repeat in range(repeats):
        n, s = read_all(tf.data.TFRecordDataset(paths, num_parallel_reads=reads))
        rates["local TFRecordDataset"].append(n * record_bytes / s)
        rates["server, whole files, 1 thread"].append(server_rate(fs, keys, 1))
        rates["server, whole files, 4 threads"].append(server_rate(fs, keys, 4))
        if repeat == 0:
            n, s = read_all(kept)
            rates["s3 staged, first epoch"].append(n * record_bytes / s)
        n, s = read_all(kept)
        rates["s3 staged, kept (later epochs)"].append(n * record_bytes / s)
        streaming = tfrecord_dataset(uris, num_parallel_reads=reads, stage_dir=case_dir,
                                     max_stage_bytes=3 * file_bytes)
        n, s = read_all(streaming)
        rates["s3 streaming (3-file budget)"].append(n * record_bytes / s)
        assert n == total, (n, total)
    local = statistics.median(rates["local TFRecordDataset"])
    served = max(statistics.median(rates["server, whole files, 1 thread"]),
                 statistics.median(rates["server, whole files, 4 threads"]))
    for name, values in rates.items():
        rate = statistics.median(values)
        vs_server = f"  {rate / served:5.2f}x the server" if name in downloads else ""
        print(f"  {name:32} {rate / 1e6:7.0f} MB/s  {rate / local:5.2f}x local{vs_server}  "
              f"(min {min(values) / 1e6:.0f}, max {max(values) / 1e6:.0f}, n={len(values)})")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", nargs="+", default=["16x20000x1000", "8x3200x4096"],
                        help="FILESxRECORDSxBYTES per case (default: %(default)s)")
    parser.add_argument("--parallel-reads", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    opts = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    work = tempfile.mkdtemp(prefix="tfos-bench-storage-")
    server = S3Server().start()
    try:
        os.environ.update(server.env())
        for case in opts.cases:
            files, records, size = (int(v) for v in case.split("x"))
            run_case(server, work, files, records, size, opts.parallel_reads, opts.repeats)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
