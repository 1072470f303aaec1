"""Feed throughput (InputMode.SPARK) against tf.data reading TFRecord files, and the TF
process's memory while a million records go through it.

Records are MNIST-shaped: a 784-byte image (random uint8, fixed seeds, as ``bytes``) and an
int64 label. They are made with NumPy on the executors, cached, cut from their
lineage (``localCheckpoint``) and counted before anything is timed, so Spark-side
generation is not measured. The DataFrame (``image binary, label long``) is made from
that RDD and cached too.

* Reference (the InputMode.TENSORFLOW path): one process reads the same records from
  TFRecord files on local disk with tf.data: the image as one bytes feature, the label as
  an int64, ``batch(1000)`` then ``parse_example``. Measured before and after the feeds;
  the best run is the reference (on 2 shared cores some runs come out at half speed).
* tfos: ``cluster.train(rdd or DataFrame, num_epochs=--epochs)`` on 2 executors; the TF
  processes consume with ``ctx.get_data_feed().next_batch(1000)`` (one cluster) or by
  iterating ``ctx.dataset(sig, batch_size=1000)`` once per fed epoch (another cluster). A feed
  is timed from just before ``train()`` to the moment the last node has taken its last
  record (every node logs a timestamp per batch); ``train()`` alone is reported too, and
  the time of its Spark jobs (the partition count, one job per epoch).
* Spark's own read (a second reference): jobs that read the same RDD (through
  ``feed_view``, as the feed does) or DataFrame (the JVM's Arrow batches, as the feed reads
  them; and through ``mapInArrow`` for comparison) into Python and only count it, one pass.
  No feed from Spark can be faster, except a DataFrame's over several epochs per call
  (its later epochs read the Arrow batches Spark keeps for the call).
* Where the CPU goes: CPU seconds per 100k records by role (psutil) around every
  ``train()`` call and every Spark's-own-read job (the floor of the Spark stages); with
  ``--profile DIR``, one extra call per input runs under py-spy and each TF process's and
  Python daemon's hottest functions are printed.
* Memory: before the timed feeds, each cluster is fed ``--rss-records`` records from a
  generator RDD while a driver thread samples the RSS of both TF processes every 0.1 s
  (the children of this run's ``tfos.node.supervisor`` processes). Reported: the peak
  minus the idle RSS just before that feed.

Usage: python bench/feed.py [--records 200000] [--rss-records 1000000] [--repeats 3]
                            [--partitions 8] [--epochs 1] [--consumers next_batch,dataset]
                            [--executor-memory 1024] [--profile DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import start_spark  # noqa: E402

import tfos  # noqa: E402

IMAGE_BYTES = 784
BATCH = 1000
SEED = 1234


# ------------------------------------------------------------------ data


def make_part(part: int, parts: int, n: int):
    """(images, labels) of records ``[part*n//parts, (part+1)*n//parts)``, from their own seed,
    so each executor makes its partition without the driver holding (or shipping) them all."""
    import numpy as np

    size = (part + 1) * n // parts - part * n // parts
    rng = np.random.default_rng([SEED, part])
    images = rng.integers(0, 256, size=(size, IMAGE_BYTES), dtype=np.uint8)
    labels = rng.integers(0, 10, size=size, dtype=np.int64)
    return images, labels


def part_records(part: int, parts: int, n: int) -> list[tuple[bytes, int]]:
    images, labels = make_part(part, parts, n)
    return [(images[i].tobytes(), int(labels[i])) for i in range(len(labels))]


# ------------------------------------------------------------- reference


def reference(n: int, repeats: int, num_files: int) -> list[float]:
    """Records per second of one process reading the records back from TFRecord files."""
    with tempfile.TemporaryDirectory(prefix="tfos-bench-feed-") as tmp:
        out = os.path.join(tmp, "reference.json")
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--reference-child", tmp, "--records", str(n),
             "--repeats", str(repeats), "--partitions", str(num_files)],
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES=""),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        if proc.returncode:
            raise SystemExit(f"the TFRecord reference failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}")
        with open(out) as f:
            return json.load(f)["rates"]


def reference_child(tmp: str, n: int, repeats: int, num_files: int) -> None:
    import tensorflow as tf

    paths = [os.path.join(tmp, f"part-{i:05d}.tfrecord") for i in range(num_files)]
    writers = [tf.io.TFRecordWriter(path) for path in paths]
    for part in range(num_files):
        for image, label in part_records(part, num_files, n):
            writers[part].write(tf.train.Example(features=tf.train.Features(feature={
                "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
            })).SerializeToString())
    for writer in writers:
        writer.close()
    spec = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64)}
    dataset = (tf.data.TFRecordDataset(paths).batch(BATCH)
               .map(lambda s: tf.io.parse_example(s, spec), num_parallel_calls=tf.data.AUTOTUNE)
               .prefetch(tf.data.AUTOTUNE))

    def one_pass() -> float:
        count = 0
        t0 = time.perf_counter()
        for batch in dataset:
            count += int(batch["label"].shape[0])
        elapsed = time.perf_counter() - t0
        assert count == n, (count, n)
        return n / elapsed

    one_pass()  # warm-up: page cache, tf.data's graph
    rates = [one_pass() for _ in range(repeats)]
    with open(os.path.join(tmp, "reference.json"), "w") as f:
        json.dump({"rates": rates}, f)


# ------------------------------------------------------------- TF nodes


def consume(args, ctx):
    """Read every fed record; log (time, records so far) per batch; write the log at the end."""
    import json as _json
    import os as _os
    import time as _time

    log = []
    count = 0
    name = f"node-{ctx.worker_num}"
    if args["consumer"] == "next_batch":
        feed = ctx.get_data_feed(train_mode=True)
        open(_os.path.join(args["dir"], f"{name}.ready"), "w").close()
        while not feed.should_stop():
            batch = feed.next_batch(args["batch"])
            if batch:
                count += len(batch)
                log.append((_time.time(), count))
    else:
        import tensorflow as tf

        tuple_sig = (tf.TensorSpec((), tf.string), tf.TensorSpec((), tf.int64))
        dict_sig = {"image": tf.TensorSpec((), tf.string), "label": tf.TensorSpec((), tf.int64)}
        open(_os.path.join(args["dir"], f"{name}.ready"), "w").close()
        for kind in args["passes"]:  # one dataset iteration per train() call
            dataset = ctx.dataset(dict_sig if kind == "df" else tuple_sig, batch_size=args["batch"])
            for batch in dataset:
                labels = batch["label"] if kind == "df" else batch[1]
                count += int(labels.shape[0])
                log.append((_time.time(), count))
        feed = ctx.get_data_feed(train_mode=True)
        while not feed.should_stop():  # until shutdown() ends the feed
            feed.next_batch(args["batch"])
    with open(_os.path.join(args["dir"], f"{name}.json"), "w") as f:
        _json.dump({"count": count, "log": log}, f)


def tf_processes() -> list:
    """This run's TF processes: children of the ``tfos.node.supervisor`` processes under this
    driver (executor JVM -> pyspark worker -> supervisor -> TF process)."""
    import psutil

    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "tfos.node.supervisor" not in " ".join(proc.cmdline()):
                continue
            found += [c for c in proc.children() if "tfos.node.tf_process" in " ".join(c.cmdline())]
        except psutil.Error:
            pass
    return found


def _role(cmdline: str) -> str:
    if "tfos.node.tf_process" in cmdline:
        return "TF processes"
    if "tfos.node.supervisor" in cmdline:
        return "node supervisors"
    if "pyspark.daemon" in cmdline or "pyspark.worker" in cmdline:
        return "Spark's Python workers (feeding tasks)"
    if "CoarseGrainedExecutorBackend" in cmdline:
        return "executor JVMs"
    if "java" in cmdline:
        return "driver JVM (and local-cluster master, workers)"
    return "other"


def cpu_by_role() -> dict[int, tuple[str, float]]:
    """CPU seconds used so far by this driver and every process under it, by pid."""
    import psutil

    out = {}
    me = psutil.Process()
    for proc in [me, *me.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            role = "driver Python" if proc.pid == me.pid else _role(" ".join(proc.cmdline()))
            out[proc.pid] = (role, times.user + times.system)
        except psutil.Error:
            pass
    return out


def cpu_delta(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds used between two :func:`cpu_by_role` snapshots, summed by role (a process
    that ended in between is missed: the feeding tasks' workers are reused, so few are)."""
    used: dict[str, float] = {}
    for pid, (role, seconds) in after.items():
        used[role] = used.get(role, 0.0) + seconds - before.get(pid, (role, 0.0))[1]
    return used


class RssSampler:
    """Samples the RSS of the given processes every ``interval`` seconds, in a thread."""

    def __init__(self, procs: list, interval: float = 0.1):
        self.procs = procs
        self.interval = interval
        self.samples: list[tuple[float, list[int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(self.interval):
            rss = []
            for p in self.procs:
                try:
                    rss.append(p.memory_info().rss)
                except psutil.Error:
                    rss.append(0)
            self.samples.append((time.time(), rss))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def window(self, t0: float, t1: float) -> list[list[int]]:
        return [r for t, r in self.samples if t0 <= t <= t1]


def wait_files(directory: str, suffix: str, n: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while sum(f.endswith(suffix) for f in os.listdir(directory)) < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {n} {suffix} files in {directory}")
        time.sleep(0.05)


# ---------------------------------------------------------------- driver


def python_daemons() -> list:
    """Spark's Python daemons under this driver (they fork the workers that run feeding tasks)."""
    import psutil

    out = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "pyspark.daemon" in " ".join(proc.cmdline()) and "pyspark.daemon" not in \
                    " ".join(proc.parent().cmdline()):
                out.append(proc)
        except psutil.Error:
            pass
    return out


def run_consumer(sc, consumer: str, feeds: list[tuple[str, object]], rss_feed, epochs: int,
                 profile_dir: str | None = None) -> dict:
    """One cluster, fed ``rss_feed`` (1 epoch) then each of ``feeds`` (kind, data) for ``epochs``;
    with ``profile_dir``, the first timed call of each kind runs under py-spy (:class:`Profiler`)."""
    passes = ["rss"] + [kind for kind, _ in feeds for _ in range(epochs)]
    with tempfile.TemporaryDirectory(prefix="tfos-bench-feed-") as tmp:
        cluster = tfos.run(sc, consume, {"dir": tmp, "batch": BATCH, "consumer": consumer, "passes": passes},
                           num_executors=2, input_mode=tfos.InputMode.SPARK)
        jobs = _time_spark_jobs(cluster)
        wait_files(tmp, ".ready", 2)
        procs = tf_processes()
        if len(procs) != 2:
            raise SystemExit(f"expected 2 TF processes, found {len(procs)}")
        sampler = RssSampler(procs)
        time.sleep(1.5)  # idle baseline
        marks = []  # (kind, t_before_train, t_after_train, report)
        cpu_used = []  # per train() call: CPU seconds by role
        profiles = {}
        for kind, data, n_epochs in [("rss", rss_feed, 1)] + [(k, d, epochs) for k, d in feeds]:
            profiler = None
            if profile_dir and kind != "rss" and kind not in profiles:
                profiler = Profiler(profile_dir)
                pids = {f"TF process {i}": p.pid for i, p in enumerate(procs)}
                pids.update({f"feeding tasks {i}": p.pid for i, p in enumerate(python_daemons())})
                profiler.start(f"{consumer}-{kind}", pids)
                time.sleep(0.5)  # py-spy attached
            cpu0 = cpu_by_role()
            t0 = time.time()
            report = cluster.train(data, num_epochs=n_epochs, feed_timeout=600)
            marks.append((kind, t0, time.time(), report))
            cpu_used.append(cpu_delta(cpu0, cpu_by_role()))
            if profiler is not None:
                time.sleep(0.5)  # the nodes take the last records
                profiles[kind] = profiler.stop()
        cluster.shutdown(timeout=300)
        time.sleep(0.2)
        sampler.stop()
        logs = [json.load(open(os.path.join(tmp, f"node-{i}.json"))) for i in range(2)]

    # per train() call: when did each node reach its cumulative share?
    results = []
    cumulative = [0, 0]
    for kind, t0, t1, report in marks:
        done = []
        for i, node_log in enumerate(logs):
            per_epoch = report.quota_per_node if consumer == "dataset" else report.records_per_node[i]
            cumulative[i] += per_epoch * report.epochs_fed
            done.append(next((t for t, c in node_log["log"] if c >= cumulative[i]), float("nan")))
        inside = [(d, b - a) for d, a, b in jobs if t0 <= a and b <= t1]
        count_s = sum(s for d, s in inside if "count" in d)
        feed_s = sum(s for d, s in inside if "feed epoch" in d)
        results.append({"kind": kind, "records": report.records_per_epoch * report.epochs_fed,
                        "cpu": cpu_used[len(results)],
                        "train_s": t1 - t0, "consumed_s": max(done) - t0, "count_job_s": count_s,
                        "feed_jobs_s": feed_s, "report": report})

    rss_mark = marks[0]
    idle = sampler.window(rss_mark[1] - 1.0, rss_mark[1])
    during = sampler.window(rss_mark[1], results[0]["consumed_s"] + rss_mark[1] + 0.2)
    baseline = [statistics.median(s[i] for s in idle) for i in range(2)]
    peak = [max(s[i] for s in during) for i in range(2)]
    whole_run_peak = [max(s[i] for _, s in sampler.samples) for i in range(2)]
    return {
        "feeds": results[1:],
        "rss": {"records": results[0]["records"], "rate": results[0]["records"] / results[0]["consumed_s"],
                "baseline_mb": [b / 2**20 for b in baseline], "peak_mb": [p / 2**20 for p in peak],
                "growth_mb": [(p - b) / 2**20 for p, b in zip(peak, baseline, strict=True)],
                "whole_run_peak_mb": [p / 2**20 for p in whole_run_peak]},
        "node_counts": [node_log["count"] for node_log in logs],
        "profiles": profiles,
    }


def _count_batches(batches):
    import pyarrow as pa

    yield pa.RecordBatch.from_pydict({"n": [sum(batch.num_rows for batch in batches)]})


def spark_floor(sc, rdd, df, n: int, repeats: int) -> tuple[dict[str, list[float]], dict[str, dict[str, float]]]:
    """Records per second of Spark jobs that only read the data into Python and count it,
    the way the feed jobs read it (an RDD through ``feed_view``; a DataFrame as the JVM's
    Arrow batches through ``feed_view``): what any feed from Spark pays before sending a
    byte. ``df mapInArrow`` reads the DataFrame through ``mapInArrow`` instead, the way
    the feed read it before 2026-11-30, for comparison. Also returns each read's CPU
    seconds per 100k records by role (median of the repeats): the floor of the Spark stages."""
    from tfos.feed.arrow_export import arrow_batches, decode
    from tfos.feed.driver import feed_view

    view = feed_view(rdd, sc.defaultParallelism)
    blobs, schema = arrow_batches(df)
    batches = feed_view(blobs, sc.defaultParallelism)
    jobs = {"rdd": lambda: sum(view.mapPartitions(lambda it: [sum(1 for _ in it)]).collect()),
            "df": lambda: sum(batches.mapPartitions(lambda it: [sum(decode(b, schema).num_rows for b in it)]).collect()),
            "df mapInArrow": lambda: sum(r[0] for r in df.mapInArrow(_count_batches, "n long").collect())}
    rates: dict[str, list[float]] = {kind: [] for kind in jobs}
    cpus: dict[str, list[dict[str, float]]] = {kind: [] for kind in jobs}
    for _ in range(repeats):
        for kind, job in jobs.items():
            cpu0 = cpu_by_role()
            t0 = time.perf_counter()
            assert job() == n
            rates[kind].append(n / (time.perf_counter() - t0))
            cpus[kind].append(cpu_delta(cpu0, cpu_by_role()))
    cpu = {kind: {role: statistics.median(c.get(role, 0.0) * 1e5 / n for c in runs)
                  for role in sorted({r for c in runs for r in c})} for kind, runs in cpus.items()}
    return rates, cpu


class Profiler:
    """py-spy (``pip install -e '.[bench]'``) sampling processes while a feed runs: where each
    process's Python threads spend their CPU (idle threads are not sampled). Native
    frames (TF's C++, the JVMs) are not seen; the CPU figures per role cover those."""

    def __init__(self, directory: str):
        self.directory = directory
        self._running: list[tuple[str, subprocess.Popen, str]] = []

    def start(self, tag: str, procs: dict[str, int]) -> None:
        """Sample each ``{name: pid}`` until :meth:`stop` (a ``feeding...`` pid, Spark's Python
        daemon, with the workers it forks)."""
        for name, pid in procs.items():
            out = os.path.join(self.directory, f"{tag}-{name}.txt")
            cmd = ["py-spy", "record", "-p", str(pid), "-r", "100", "-f", "raw", "-o", out,
                   "--nonblocking", "--threads"] + (["--subprocesses"] if name.startswith("feeding") else [])
            self._running.append((name, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT), out))

    def stop(self) -> dict[str, list[tuple[str, float]]]:
        """Stop sampling; per process, its threads' and hottest functions' share of the samples."""
        import signal

        summaries = {}
        for name, proc, out in self._running:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            summaries[name] = self.summary(out)
        self._running = []
        return summaries

    @staticmethod
    def summary(path: str, top: int = 8) -> list[tuple[str, float]]:
        threads: dict[str, int] = {}
        leaves: dict[str, int] = {}
        total = 0
        try:
            lines = open(path).read().splitlines()
        except OSError:
            return []
        for line in lines:
            stack, _, count = line.rpartition(" ")
            frames = [f for f in stack.split(";") if not f.startswith("process ")]
            if not frames or not count.isdigit():
                continue
            samples = int(count)
            total += samples
            thread = frames[0].split(": ", 1)[-1]
            threads[thread] = threads.get(thread, 0) + samples
            leaf = frames[-1].split(" (")[0]
            leaves[leaf] = leaves.get(leaf, 0) + samples
        if not total:
            return []
        ranked = sorted(threads.items(), key=lambda kv: -kv[1])[:4] + sorted(leaves.items(), key=lambda kv: -kv[1])[:top]
        return [("samples", float(total))] + [(k, v / total) for k, v in ranked]


def _time_spark_jobs(cluster) -> list[tuple[str, float, float]]:
    """Record (description, start, end) of every Spark job ``train()`` runs (count, feed epochs).

    Profiling only: wraps the cluster's private job runner before its feeder exists.
    """
    jobs: list[tuple[str, float, float]] = []
    run_job = cluster._run_feed_job

    def timed(description, thunk):
        t0 = time.time()
        try:
            return run_job(description, thunk)
        finally:
            jobs.append((description, t0, time.time()))

    cluster._run_feed_job = timed
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rss-records", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1,
                        help="num_epochs of each timed train() call; its count job is paid once per "
                             "call (default: %(default)s)")
    parser.add_argument("--consumers", default="next_batch,dataset",
                        help="comma-separated: next_batch, dataset (default: %(default)s)")
    parser.add_argument("--executor-memory", type=int, default=1024,
                        help="MB per executor; the cached records take ~0.8 KB each (default: %(default)s)")
    parser.add_argument("--profile", metavar="DIR",
                        help="run the first timed call of each input under py-spy (pip install -e '.[bench]'), "
                             "write its raw samples to DIR and print each process's hottest functions; "
                             "profiled calls are slower, so their rates are left out of the figures")
    parser.add_argument("--reference-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference_child:
        reference_child(args.reference_child, args.records, args.repeats, args.partitions)
        return

    n = args.records
    spark = start_spark(2, "tfos-bench-feed", args.executor_memory)
    sc = spark.sparkContext
    t = time.monotonic()
    # made on the executors, a partition each; localCheckpoint() cuts the lineage so no job
    # ever makes them again
    parts = args.partitions
    rdd = sc.parallelize(range(parts), parts).flatMap(lambda part: part_records(part, parts, n)).cache()
    rdd.localCheckpoint()
    assert rdd.count() == n
    df = spark.createDataFrame(rdd, "image binary, label long").cache()
    assert df.count() == n
    print(f"{n} records of {IMAGE_BYTES} + 8 bytes, {args.partitions} partitions, cached as an RDD "
          f"and a DataFrame in {time.monotonic() - t:.1f} s", flush=True)
    # distinct bytes per record (one shared object would shrink every pickled chunk to one copy)
    rss_rdd = sc.range(args.rss_records, numSlices=args.partitions).map(lambda i: (i.to_bytes(8, "little") * 98, i))

    ref_rates = reference(n, args.repeats, args.partitions)
    print(f"reference, tf.data over TFRecord files, 1 process: {statistics.median(ref_rates):,.0f} "
          f"records/s (runs: {', '.join(f'{r:,.0f}' for r in ref_rates)}); measured again at the end",
          flush=True)

    feeds = [("rdd", rdd), ("df", df)] * args.repeats
    consumers = [c.strip() for c in args.consumers.split(",") if c.strip()]
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
        feeds = [("rdd", rdd), ("df", df)] + feeds  # the profiled calls come first, and are not counted
    outs = {consumer: run_consumer(sc, consumer, feeds, rss_rdd, args.epochs, args.profile) for consumer in consumers}
    floor, floor_cpu = spark_floor(sc, rdd, df, n, args.repeats)
    for kind, rates in floor.items():
        print(f"Spark's own read of the {kind.upper()} into Python (a job that only counts): "
              f"{statistics.median(rates):,.0f} records/s (runs: {', '.join(f'{r:,.0f}' for r in rates)}); "
              f"CPU seconds per 100k records: "
              + ", ".join(f"{role} {sec:.2f}" for role, sec in floor_cpu[kind].items() if sec >= 0.005)
              + f"; total {sum(floor_cpu[kind].values()):.2f}", flush=True)
    ref_rates += reference(n, args.repeats, args.partitions)  # the machine may have changed meanwhile
    # the best run, not the median: on 2 shared cores the reference sometimes runs at half
    # speed (one core taken by the JVMs' background work), which would flatter every ratio
    ref = max(ref_rates)
    print(f"reference, tf.data over TFRecord files, 1 process: {ref:,.0f} records/s "
          f"(best of {len(ref_rates)}, start and end: {', '.join(f'{r:,.0f}' for r in ref_rates)})",
          flush=True)
    summary = {"spark_read_records_per_s": {k: statistics.median(v) for k, v in floor.items()},
               "spark_read_cpu_s_per_100k": floor_cpu,
               "records": n, "partitions": args.partitions, "epochs_per_train": args.epochs,
               "reference_records_per_s": ref, "reference_runs": ref_rates}
    for consumer, out in outs.items():
        print(f"[{consumer}] node counts {out['node_counts']}")
        entry = {}
        for kind, processes in out["profiles"].items():
            for process, ranked in processes.items():
                print(f"[{consumer}] {kind.upper():>3} feed, py-spy, {process}: "
                      + ", ".join(f"{name} {share:.0%}" if name != "samples" else f"{share:.0f} samples"
                                  for name, share in ranked), flush=True)
        for kind in ("rdd", "df"):
            runs = [r for r in out["feeds"] if r["kind"] == kind][1 if args.profile else 0:]
            rates = [r["records"] / r["consumed_s"] for r in runs]
            train_rates = [r["records"] / r["train_s"] for r in runs]
            rate = statistics.median(rates)
            count_s = statistics.median(r["count_job_s"] for r in runs)
            feed_s = statistics.median(r["feed_jobs_s"] for r in runs)
            entry[kind] = {"records_per_s": rate, "ratio": rate / ref, "runs": rates,
                           "train_only_records_per_s": statistics.median(train_rates),
                           "count_job_s": count_s, "feed_jobs_s": feed_s,
                           "consumed_s": statistics.median(r["consumed_s"] for r in runs),
                           "dropped_per_epoch": runs[0]["report"].dropped_per_epoch,
                           "cpu_s_per_100k": {role: statistics.median(r["cpu"].get(role, 0.0) * 1e5 / r["records"]
                                                                     for r in runs)
                                              for role in sorted({k for r in runs for k in r["cpu"]})}}
            print(f"[{consumer}] {kind.upper():>3} feed ({args.epochs} epoch(s) per train()), train() -> last "
                  f"record consumed: {rate:,.0f} records/s (runs: {', '.join(f'{r:,.0f}' for r in rates)})  "
                  f"ratio {rate / ref:.2f}x the reference (target >= 0.5x), "
                  f"{rate / statistics.median(floor[kind]):.2f}x Spark's own read; "
                  f"train() alone {statistics.median(train_rates):,.0f} records/s", flush=True)
            print(f"[{consumer}] {kind.upper():>3} feed, where the time goes (medians): "
                  f"{entry[kind]['consumed_s']:.2f} s in all, count job {count_s:.2f} s, "
                  f"feed job(s) {feed_s:.2f} s", flush=True)
            cpu = entry[kind]["cpu_s_per_100k"]
            print(f"[{consumer}] {kind.upper():>3} feed, CPU seconds per 100k records fed (2 cores): "
                  + ", ".join(f"{role} {seconds:.2f}" for role, seconds in cpu.items() if seconds >= 0.005)
                  + f"; total {sum(cpu.values()):.2f}", flush=True)
        rss = out["rss"]
        entry["rss"] = rss
        print(f"[{consumer}] RSS of the 2 TF processes while {rss['records']:,} records were fed "
              f"({rss['rate']:,.0f} records/s): idle {', '.join(f'{b:.0f}' for b in rss['baseline_mb'])} MB, "
              f"peak {', '.join(f'{p:.0f}' for p in rss['peak_mb'])} MB, growth "
              f"{', '.join(f'{g:+.0f}' for g in rss['growth_mb'])} MB (target < 300 MB); whole-run peak "
              f"{', '.join(f'{p:.0f}' for p in rss['whole_run_peak_mb'])} MB", flush=True)
        summary[consumer] = entry
    spark.stop()
    print(json.dumps(summary, default=lambda o: None))


if __name__ == "__main__":
    main()
