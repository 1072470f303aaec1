"""A tiny InputMode.TENSORFLOW script for `tfos submit` tests.

It calls ``tfos.run`` with no ``num_executors``: the cluster size comes from the
``spark.tfos.clusterSize`` conf that ``tfos submit`` sets. Each node writes what it saw
(role, TF_CONFIG, Keras selection, a TF result) to ``--out``; the driver then prints one
``PROBE {json}`` line with the Spark settings and every node's record.

    tfos submit --cluster-size 2 tests/integration/scripts/submit_probe.py --out DIR --marker m

``--fail-on worker`` makes the worker nodes raise (the run, and the script, then fail).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main_fun(args, ctx):
    import json
    import os
    import sys

    import tensorflow as tf

    if args.fail_on == ctx.job_name:
        raise RuntimeError(f"probe: node {ctx.job_name}:{ctx.task_index} fails on purpose")
    total = int(tf.reduce_sum(tf.range(ctx.task_index + 4)).numpy())
    record = {
        "job_name": ctx.job_name,
        "task_index": ctx.task_index,
        "num_workers": ctx.num_workers,
        "tf_config": json.loads(os.environ["TF_CONFIG"]),
        "tf_use_legacy_keras": os.environ.get("TF_USE_LEGACY_KERAS"),
        "probe_env": os.environ.get("TFOS_PROBE"),
        "marker": args.marker,
        "total": total,
        "pid": os.getpid(),
        "executor_id": ctx.executor_id,
        "cwd": os.getcwd(),
        "executable": sys.executable,
        "prefix": sys.prefix,
    }
    with open(os.path.join(args.out, f"{ctx.job_name}-{ctx.task_index}.json"), "w") as f:
        json.dump(record, f)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--marker", default="")
    parser.add_argument("--fail-on", default="", help="the nodes of this job raise RuntimeError")
    args = parser.parse_args(argv)

    from pyspark.sql import SparkSession

    import tfos

    spark = SparkSession.builder.appName("tfos-submit-probe").getOrCreate()
    sc = spark.sparkContext
    sc.setLogLevel("ERROR")
    try:
        cluster = tfos.run(sc, main_fun, args)  # no num_executors: spark.tfos.clusterSize
        nodes = cluster.config.num_executors
        cluster.shutdown(timeout=120)
    finally:
        conf = sc.getConf()
        settings = {key: conf.get(key) for key in (
            "spark.master", "spark.tfos.clusterSize", "spark.tfos.keras", "spark.task.cpus",
            "spark.dynamicAllocation.enabled", "spark.task.maxFailures", "spark.executor.cores",
            "spark.cores.max")}
        spark.stop()
    records = []
    for name in sorted(os.listdir(args.out)):
        with open(os.path.join(args.out, name)) as f:
            records.append(json.load(f))
    print("PROBE " + json.dumps({"nodes": nodes, "conf": settings, "records": records,
                                 "driver_keras": os.environ.get("TF_USE_LEGACY_KERAS")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
