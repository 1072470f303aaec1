"""An InputMode.TENSORFLOW script for `tfos submit --remote`, written as a Spark Connect user
writes one: ``SparkSession.builder.getOrCreate()`` (SPARK_REMOTE makes it a Connect session),
then ``tfos.run(spark, main_fun, args)`` with no ``num_executors`` (``--cluster-size`` reaches
it through TFOS_CONF). Each node writes what it saw to ``--out`` (submit_probe.py's
``main_fun``); the script then prints one ``PROBE {json}`` line. ``--fail-on worker`` makes
that role's node raise.

    tfos submit --remote sc://host:port --cluster-size 2 remote_probe.py --out DIR [--fail-on ROLE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import cloudpickle
import submit_probe  # next to this script (sys.path[0])

# the server's executors cannot import it: main_fun takes its code along
cloudpickle.register_pickle_by_value(submit_probe)
main_fun = submit_probe.main_fun  # what tfos submit's own probe's nodes do (and --fail-on)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--marker", default="")
    parser.add_argument("--fail-on", default="")
    args = parser.parse_args(argv)

    from pyspark.sql import SparkSession

    import tfos

    spark = SparkSession.builder.getOrCreate()
    try:
        cluster = tfos.run(spark, main_fun, args)  # no num_executors: --cluster-size
        nodes, keras = cluster.config.num_executors, cluster.config.keras
        cluster.shutdown(timeout=120)
    finally:
        session = type(spark).__module__
        spark.stop()  # the client's session only: the server keeps running
    records = []
    for name in sorted(os.listdir(args.out)):
        with open(os.path.join(args.out, name)) as f:
            records.append(json.load(f))
    print("PROBE " + json.dumps({"nodes": nodes, "keras": keras, "session": session, "records": records,
                                 "driver_keras": os.environ.get("TF_USE_LEGACY_KERAS")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
