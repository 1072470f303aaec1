"""Failure detection: from a node's crash to the driver's exception.

Two kinds of crash, repeated: ``main_fun`` raising on a worker, and the worker's TF
process killed with SIGKILL. The clock starts at the raise (the node's own time) or
at the kill, and stops when ``shutdown()`` raises ``ClusterFailedError`` in the driver.
Reference: an empty barrier Spark job on the same executors, in the same run.

Restart (``max_restarts=1``): the worker's TF process is killed with SIGKILL; the clock
stops when ``main_fun`` runs again on every node of the new attempt (``ctx.attempt == 1``),
which is when training resumes from its checkpoint.

Usage: python bench/failure.py [--repeats 10]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import start_spark, summary  # noqa: E402
from startup import empty_job  # noqa: E402

import tfos  # noqa: E402


def crash(args, ctx):
    import os as _os
    import time as _time

    if ctx.job_name == "worker":
        if args["how"] == "raise":
            with open(_os.path.join(args["dir"], "t"), "w") as f:
                f.write(repr(_time.time()))
            raise RuntimeError("crash on purpose")
        with open(_os.path.join(args["dir"], "pid"), "w") as f:
            f.write(str(_os.getpid()))
    _time.sleep(300)


def resume(args, ctx):
    import os as _os
    import time as _time

    if ctx.attempt == 0:
        if ctx.job_name == "worker":
            with open(_os.path.join(args["dir"], "pid"), "w") as f:
                f.write(str(_os.getpid()))
        _time.sleep(300)
    with open(_os.path.join(args["dir"], f"resumed-{ctx.job_name}"), "w") as f:
        f.write(repr(_time.time()))


def one_restart(sc) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cluster = tfos.run(sc, resume, {"dir": tmp}, num_executors=2, max_restarts=1)
        pid_file = os.path.join(tmp, "pid")
        while not os.path.exists(pid_file) or not open(pid_file).read():
            time.sleep(0.01)
        start = time.time()
        os.kill(int(open(pid_file).read()), signal.SIGKILL)
        cluster.shutdown(timeout=120)
        return max(float(open(os.path.join(tmp, f"resumed-{n}")).read()) for n in ("chief", "worker")) - start


def one(sc, how: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cluster = tfos.run(sc, crash, {"dir": tmp, "how": how}, num_executors=2)
        if how == "kill":
            pid_file = os.path.join(tmp, "pid")
            while not os.path.exists(pid_file) or not open(pid_file).read():
                time.sleep(0.01)
            start = time.time()
            os.kill(int(open(pid_file).read()), signal.SIGKILL)
        try:
            cluster.shutdown(timeout=120)
        except tfos.ClusterFailedError:
            end = time.time()
        else:
            raise RuntimeError("the crash was not reported")
        if how == "raise":
            start = float(open(os.path.join(tmp, "t")).read())
        return end - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    spark = start_spark(2, "tfos-bench-failure")
    sc = spark.sparkContext
    one(sc, "raise")  # warm-up
    reference = [empty_job(sc) for _ in range(args.repeats)]
    raised = [one(sc, "raise") for _ in range(args.repeats)]
    killed = [one(sc, "kill") for _ in range(args.repeats)]
    restarted = [one_restart(sc) for _ in range(max(1, args.repeats // 2))]
    spark.stop()
    ref = statistics.median(reference)
    print(f"empty Spark job (reference): {summary(reference)}")
    print(f"main_fun raised -> driver exception: {summary(raised)}  ratio {statistics.median(raised) / ref:.1f}x")
    print(f"TF process killed -> driver exception: {summary(killed)}  ratio {statistics.median(killed) / ref:.1f}x")
    print(f"TF process killed -> main_fun running again on every node (max_restarts=1): {summary(restarted)}  "
          f"ratio {statistics.median(restarted) / ref:.1f}x")
    print(json.dumps({"empty_spark_job_s": ref, "raise_median_s": statistics.median(raised),
                      "raise_max_s": max(raised), "kill_median_s": statistics.median(killed),
                      "kill_max_s": max(killed), "restart_median_s": statistics.median(restarted),
                      "restart_max_s": max(restarted)}))


if __name__ == "__main__":
    main()
