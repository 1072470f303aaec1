"""Start-up and shutdown of a tfos run, against an empty Spark job on the same executors.

Measures, with executors already up and warm:
  * start-up: from ``tfos.run`` to every node running user code (the node's own clock),
  * shutdown: from ``shutdown()`` to every node process and port gone, for nodes that
    already finished and for nodes that serve until stopped (ps-like),
  * references: an empty (barrier) Spark job on the same executors, and two processes
    importing TensorFlow at once (what any TF node start-up costs on this machine).

Usage: python bench/startup.py [--repeats 5]
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

from _common import start_spark, summary  # noqa: E402

import tfos  # noqa: E402


def mark_start(args, ctx):
    import os as _os
    import time as _time

    with open(_os.path.join(args["dir"], f"{ctx.job_name}-{ctx.task_index}"), "w") as f:
        f.write(repr(_time.time()))
    if args.get("serve") and ctx.job_name == "worker":
        ctx.serve()


def node_processes() -> int:
    import psutil

    count = 0
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if "tfos.node." in cmd:
            count += 1
    return count


def one_run(sc, serve: bool) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        cluster = tfos.run(sc, mark_start, {"dir": tmp, "serve": serve}, num_executors=2)
        while len(os.listdir(tmp)) < 2:
            time.sleep(0.01)
        started = max(float(open(os.path.join(tmp, f)).read()) for f in os.listdir(tmp))
        # wait until the training nodes are done, so shutdown measures only stopping
        while not all(n.state in ("done", "serving") for n in cluster.cluster_info):
            time.sleep(0.01)
        t1 = time.monotonic()
        cluster.shutdown(timeout=120)
        while node_processes():
            time.sleep(0.01)
        return started - t0, time.monotonic() - t1


def tf_import_pair() -> float:
    """Two processes importing TensorFlow at once: the floor under any node start-up here."""
    import subprocess

    t0 = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-c", "import tensorflow"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for _ in range(2)]
    for p in procs:
        p.wait()
    return time.monotonic() - t0


def empty_job(sc) -> float:
    t0 = time.monotonic()
    sc.parallelize(range(2), 2).barrier().mapPartitions(lambda it: [1]).collect()
    return time.monotonic() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    spark = start_spark(2, "tfos-bench-startup")
    sc = spark.sparkContext
    one_run(sc, serve=False)  # warm-up: Python workers up, page cache warm
    reference = [empty_job(sc) for _ in range(args.repeats)]
    tf_imports = [tf_import_pair() for _ in range(args.repeats)]
    starts, stops, serve_stops = [], [], []
    for _ in range(args.repeats):
        start, stop = one_run(sc, serve=False)
        starts.append(start)
        stops.append(stop)
        _, serve_stop = one_run(sc, serve=True)
        serve_stops.append(serve_stop)
    spark.stop()
    ref = statistics.median(reference)
    tf_ref = statistics.median(tf_imports)
    result = {
        "empty_spark_job_s": ref,
        "tf_import_pair_s": tf_ref,
        "startup_s": statistics.median(starts),
        "shutdown_done_nodes_s": statistics.median(stops),
        "shutdown_serving_nodes_s": statistics.median(serve_stops),
    }
    print(f"empty Spark job (reference): {summary(reference)}")
    print(f"2 processes importing tensorflow at once (floor): {summary(tf_imports)}")
    print(f"start-up, run() -> all nodes in user code: {summary(starts)}  ratio {result['startup_s'] / ref:.1f}x"
          f" the empty job, {result['startup_s'] / tf_ref:.2f}x the TF import floor")
    print(f"shutdown, nodes done: {summary(stops)}  ratio {result['shutdown_done_nodes_s'] / ref:.1f}x")
    print(f"shutdown, a serving node to stop: {summary(serve_stops)}  ratio {result['shutdown_serving_nodes_s'] / ref:.1f}x")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
