"""Spark Connect against a classic SparkContext, same machine, same executors' shape.

Two applications in turn, each ``local-cluster[2,1,1024]`` on 127.0.0.1: a classic
SparkSession in this process, then pyspark's own Spark Connect server (the tests' fixture,
tests/connect_server.py) with this process as its client. On each:

  * start-up: from ``tfos.run`` to both nodes running user code (the nodes' clocks), with
    the executors up and warm (one run first, not counted); InputMode.TENSORFLOW;
  * shutdown: from ``shutdown()`` to its return, nodes already done;
  * feed: one ``cluster.train(df, num_epochs=--epochs)`` of a cached DataFrame
    (``image binary`` of 784 bytes, ``label long``), counted before the clock starts;
    the nodes take it with ``DataFeed.next_batch(1000)``; records per second of the call.

Printed: each figure per application and the Connect/classic ratio (start-up and shutdown:
time ratio, lower is better; feed: rate ratio, higher is better).

Usage: python bench/connect.py [--records 100000] [--partitions 4] [--epochs 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from _common import start_spark, summary  # noqa: E402

import tfos  # noqa: E402


def mark_start(args, ctx):
    import os as _os
    import time as _time

    with open(_os.path.join(args, f"{ctx.job_name}-{ctx.task_index}"), "w") as f:
        f.write(repr(_time.time()))


def take_all(args, ctx):
    feed = ctx.get_data_feed(train_mode=True)
    seen = 0
    while not feed.should_stop():
        seen += len(feed.next_batch(1000))
    import os as _os

    with open(_os.path.join(args, f"{ctx.job_name}-{ctx.task_index}.count"), "w") as f:
        f.write(str(seen))


def start_up(spark, repeats: int) -> tuple[list[float], list[float]]:
    starts, stops = [], []
    for i in range(repeats + 1):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.time()
            cluster = tfos.run(spark, mark_start, tmp, num_executors=2)
            while len(os.listdir(tmp)) < 2:
                time.sleep(0.01)
            started = max(float(open(os.path.join(tmp, f)).read()) for f in os.listdir(tmp))
            while not all(n.state == "done" for n in cluster.cluster_info):
                time.sleep(0.01)
            t1 = time.monotonic()
            cluster.shutdown(timeout=120)
            stopped = time.monotonic() - t1
        if i:  # the first run warms the executors' Python workers and imports
            starts.append(started - t0)
            stops.append(stopped)
    return starts, stops


def feed(spark, records: int, partitions: int, epochs: int, repeats: int) -> list[float]:
    df = (spark.range(0, records, 1, partitions)
          .selectExpr("cast(repeat(cast(id % 10 as string), 784) as binary) as image", "id as label")
          .cache())
    assert df.count() == records
    rates = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            cluster = tfos.run(spark, take_all, tmp, num_executors=2, input_mode=tfos.InputMode.SPARK)
            t0 = time.monotonic()
            cluster.train(df, num_epochs=epochs)
            took = time.monotonic() - t0
            cluster.shutdown(timeout=120)
            seen = sum(int(open(os.path.join(tmp, f)).read()) for f in os.listdir(tmp) if f.endswith(".count"))
        if seen != records * epochs:
            raise SystemExit(f"the nodes took {seen} records, not {records * epochs}")
        rates.append(records * epochs / took)
    df.unpersist()
    return rates


def measure(spark, args) -> dict:
    starts, stops = start_up(spark, args.repeats)
    rates = feed(spark, args.records, args.partitions, args.epochs, args.repeats)
    return {"start": starts, "stop": stops, "feed": rates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

    spark = start_spark(2, "tfos-bench-connect-classic")
    try:
        classic = measure(spark, args)
    finally:
        spark.stop()

    from tests.connect_server import ConnectServer, connect_session

    server = ConnectServer(executors=2).start()
    try:
        session = connect_session(server.url)
        try:
            remote = measure(session, args)
        finally:
            session.stop()  # before the server: pyspark's client retries a release for minutes otherwise
    finally:
        server.stop()
        os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)

    med = statistics.median
    print(f"start-up  classic {summary(classic['start'])}")
    print(f"start-up  connect {summary(remote['start'])}")
    print(f"shutdown  classic {summary(classic['stop'])}")
    print(f"shutdown  connect {summary(remote['stop'])}")
    print(f"feed      classic median {med(classic['feed']):,.0f} records/s (best {max(classic['feed']):,.0f})")
    print(f"feed      connect median {med(remote['feed']):,.0f} records/s (best {max(remote['feed']):,.0f})")
    print(json.dumps({
        "start_up_time_ratio_connect_over_classic": round(med(remote["start"]) / med(classic["start"]), 2),
        "shutdown_time_ratio_connect_over_classic": round(med(remote["stop"]) / med(classic["stop"]), 2),
        "feed_rate_ratio_connect_over_classic": round(med(remote["feed"]) / med(classic["feed"]), 2),
        "records": args.records, "partitions": args.partitions, "epochs": args.epochs, "repeats": args.repeats,
    }))


if __name__ == "__main__":
    main()
