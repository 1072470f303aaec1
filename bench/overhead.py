"""Training overhead of running under tfos, against the same processes launched by hand.

The same MultiWorkerMirroredStrategy ``model.fit`` (a small dense model, a warm-up epoch,
then timed epochs) runs (a) through tfos on 2 executors and (b) in 2 processes started
here with ``TF_CONFIG``, in the same run. Prints both times and their ratio.

Usage: python bench/overhead.py [--steps 300] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import start_spark  # noqa: E402

import tfos  # noqa: E402

WORKLOAD = textwrap.dedent('''
    def workload(steps, out_path):
        import json, os, time
        import numpy as np
        import keras
        import tensorflow as tf
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        rng = np.random.default_rng(0)
        batch = 64
        x = rng.normal(size=(batch * steps, 32)).astype("float32")
        y = (x @ rng.normal(size=(32, 1))).astype("float32")
        with strategy.scope():
            model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(128, activation="relu"),
                                      keras.layers.Dense(128, activation="relu"), keras.layers.Dense(1)])
            model.compile(optimizer="adam", loss="mse")
        model.fit(x[: batch * 20], y[: batch * 20], batch_size=batch, epochs=1, verbose=0)  # warm-up
        t0 = time.perf_counter()
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
        elapsed = time.perf_counter() - t0
        with open(out_path, "w") as f:
            json.dump({"seconds": elapsed, "omp": os.environ.get("OMP_NUM_THREADS"),
                       "threads": tf.config.threading.get_intra_op_parallelism_threads()}, f)
''')
namespace: dict = {}
exec(WORKLOAD, namespace)  # one definition for both paths
workload = namespace["workload"]


def tfos_main(args, ctx):
    import os as _os

    from tfos.keras_compat import apply_keras3_mwms_fix  # already applied by tfos; harmless

    apply_keras3_mwms_fix()
    args["fn"](args["steps"], _os.path.join(args["dir"], f"{ctx.job_name}.json"))


def via_tfos(sc, steps: int, env: dict | None = None) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cluster = tfos.run(sc, tfos_main, {"fn": workload, "steps": steps, "dir": tmp}, num_executors=2,
                           env=env or {})
        cluster.shutdown(timeout=600)
        return max(json.load(open(os.path.join(tmp, f)))["seconds"] for f in os.listdir(tmp))


def by_hand(steps: int) -> float:
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    spec = {"chief": [f"127.0.0.1:{ports[0]}"], "worker": [f"127.0.0.1:{ports[1]}"]}
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "node.py")
        with open(script, "w") as f:
            f.write(WORKLOAD + textwrap.dedent('''
                import sys
                from tfos.keras_compat import apply_keras3_mwms_fix
                apply_keras3_mwms_fix()
                workload(int(sys.argv[1]), sys.argv[2])
            '''))
        procs = []
        for job in ("chief", "worker"):
            env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": spec, "task": {"type": job, "index": 0}}),
                       TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
            procs.append(subprocess.Popen([sys.executable, script, str(steps), os.path.join(tmp, f"{job}.json")],
                                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for p in procs:
            if p.wait(timeout=600) != 0:
                raise RuntimeError("hand-launched MWMS process failed")
        return max(json.load(open(os.path.join(tmp, f"{j}.json")))["seconds"] for j in ("chief", "worker"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--pyspark-threads", action="store_true",
                        help="also run tfos with OMP_NUM_THREADS=1, as pyspark sets it for its workers "
                             "(what a TF process started from a Python worker inherits)")
    args = parser.parse_args()
    spark = start_spark(2, "tfos-bench-overhead")
    sc = spark.sparkContext
    tfos_times, hand_times, omp1_times = [], [], []
    for _ in range(args.repeats):  # interleaved, so drift on a noisy machine hits both
        hand_times.append(by_hand(args.steps))
        tfos_times.append(via_tfos(sc, args.steps))
        if args.pyspark_threads:
            omp1_times.append(via_tfos(sc, args.steps, {"OMP_NUM_THREADS": "1"}))
    spark.stop()
    if omp1_times:
        o = statistics.median(omp1_times)
        print(f"tfos with pyspark's OMP_NUM_THREADS=1:  median {o:.2f} s {omp1_times} "
              f"ratio {o / statistics.median(hand_times):.2f}x")
    t, h = statistics.median(tfos_times), statistics.median(hand_times)
    print(f"hand-launched MWMS fit, {args.steps} steps: median {h:.2f} s {hand_times}")
    print(f"tfos MWMS fit, {args.steps} steps:          median {t:.2f} s {tfos_times}")
    print(f"ratio tfos / hand-launched: {t / h:.2f}x")
    print(json.dumps({"hand_s": h, "tfos_s": t, "ratio": t / h}))


if __name__ == "__main__":
    main()
