"""Nodes reading their own data (InputMode.TENSORFLOW): paths against a (fake) hdfs:// default
file system, file shards on a real run, and tfos.parallel_run's independent instances.

The Spark application claims ``fs.defaultFS=hdfs://namenode.invalid:8020`` (path strings
only: nothing reads HDFS) and one fake GPU per executor (a discovery script), since this
machine has neither.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
import time

import cloudpickle
import pytest

import tfos
from tests.integration.spark_helpers import process_gone, shared_spark, wait_no_node_processes
from tests.polling import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

cloudpickle.register_pickle_by_value(sys.modules[__name__])

FAKE_FS = "hdfs://namenode.invalid:8020"


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    script = tmp_path_factory.mktemp("gpu") / "discover_gpu.sh"
    script.write_text('#!/bin/sh\necho \'{"name": "gpu", "addresses": ["7"]}\'\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return shared_spark(2, "tfos-test-node-data", {
        "spark.hadoop.fs.defaultFS": FAKE_FS,
        "spark.sql.warehouse.dir": "file://" + str(tmp_path_factory.mktemp("warehouse")),
        "spark.worker.resource.gpu.amount": "1",
        "spark.worker.resource.gpu.discoveryScript": str(script),
        "spark.executor.resource.gpu.amount": "1",
        "spark.executor.resource.gpu.discoveryScript": str(script),
        "spark.task.resource.gpu.amount": "1",
    })


def _report_paths(args, ctx):
    import json as _json
    import os as _os

    out_dir, data_dir = args
    paths = ["data/train", "/abs/x", "file:///tmp/x", "hdfs://other:9000/x", "viewfs://cluster/x",
             "s3a://bucket/key"]
    with open(_os.path.join(out_dir, f"{ctx.worker_num}.json"), "w") as f:
        _json.dump({"default_fs": ctx.default_fs, "resolved": {p: ctx.absolute_path(p) for p in paths},
                    "shard": ctx.shard_files("file://" + data_dir + "/part-*"), "num_workers": ctx.num_workers}, f)


@pytest.mark.slow  # CI time; in the default run: tests/unit/test_context.py and test_sharding.py, and against a real NameNode test_hdfs.py's relative path and shard tests
def test_nodes_resolve_paths_against_the_default_fs_and_get_disjoint_complete_shards(sc, tmp_path):
    import getpass

    out_dir, data_dir = tmp_path / "out", tmp_path / "data"
    out_dir.mkdir()
    data_dir.mkdir()
    for i in range(5):
        (data_dir / f"part-{i:05d}.tfrecord").write_bytes(b"")
    cluster = tfos.run(sc, _report_paths, (str(out_dir), str(data_dir)), num_executors=2)
    cluster.shutdown(timeout=120)
    reports = {int(p.stem): json.loads(p.read_text()) for p in out_dir.glob("*.json")}
    assert sorted(reports) == [0, 1]
    for r in reports.values():
        assert r["default_fs"] == FAKE_FS and r["num_workers"] == 2
        assert r["resolved"] == {
            "data/train": f"{FAKE_FS}/user/{getpass.getuser()}/data/train", "/abs/x": f"{FAKE_FS}/abs/x",
            "file:///tmp/x": "file:///tmp/x", "hdfs://other:9000/x": "hdfs://other:9000/x",
            "viewfs://cluster/x": "viewfs://cluster/x", "s3a://bucket/key": "s3a://bucket/key",
        }
    files = [str(data_dir / f"part-{i:05d}.tfrecord") for i in range(5)]
    assert reports[0]["shard"] == files[0::2] and reports[1]["shard"] == files[1::2]


def _instance(args, ctx):
    import os as _os

    if ctx.worker_num == args["fail"]:
        raise RuntimeError(f"instance {ctx.worker_num} gives up")
    return {"index": ctx.worker_num, "num_workers": ctx.num_workers, "task_index": ctx.task_index,
            "cluster_spec": ctx.cluster_spec, "tf_config": _os.environ.get("TF_CONFIG"),
            "gpus": _os.environ.get("CUDA_VISIBLE_DEVICES"), "ctx_gpus": ctx.gpus, "pid": _os.getpid(),
            "lr": args["lrs"][ctx.worker_num]}


def test_parallel_run_returns_each_instance_result_in_index_order(sc):
    results = tfos.parallel_run(sc, _instance, {"fail": -1, "lrs": [0.1, 0.01]}, num_executors=2)
    assert [(r["index"], r["task_index"], r["num_workers"], r["lr"]) for r in results] == [(0, 0, 2, 0.1),
                                                                                           (1, 1, 2, 0.01)]
    assert all(r["cluster_spec"] == {} and r["tf_config"] is None for r in results)
    assert [r["gpus"] for r in results] == ["7", "7"]  # the task's (fake) GPU, not the executor env's ""
    assert [r["ctx_gpus"] for r in results] == [["7"], ["7"]]
    assert results[0]["pid"] != results[1]["pid"]
    assert all(process_gone(r["pid"]) for r in results)  # reaped before parallel_run returned


def test_a_failing_instance_is_reported_with_its_index_and_traceback_and_the_others_results_kept(sc):
    start = time.monotonic()
    with pytest.raises(tfos.ParallelRunError) as err:
        tfos.parallel_run(sc, _instance, {"fail": 1, "lrs": [0.1, 0.2, 0.3]}, num_executors=3, use_barrier=False)
    error = err.value
    assert [f.task_index for f in error.failures] == [1]
    failure = error.failures[0]
    assert failure.job_name == "instance" and failure.exit_code == 1
    assert failure.reason == "main_fun raised RuntimeError: instance 1 gives up"
    assert 'raise RuntimeError(f"instance {ctx.worker_num} gives up")' in failure.traceback
    assert os.path.basename(__file__) in failure.traceback
    assert str(error).startswith("TF cluster failed (parallel run: 1 of 3 instances failed): node instance:1 (host ")
    assert [r and r["lr"] for r in error.results] == [0.1, None, 0.3]
    assert time.monotonic() - start < 60


def _sleep_forever(_args, _ctx):
    import subprocess as _subprocess
    import sys as _sys
    import time as _time

    sleeper = _subprocess.Popen([_sys.executable, "-c", "import time; time.sleep(600)"])
    print(f"about to sleep; spawned {sleeper.pid}", flush=True)
    _time.sleep(600)


def test_an_instance_past_its_timeout_is_stopped_and_reported_and_leaves_nothing_behind(sc):
    with pytest.raises(tfos.ParallelRunError) as err:
        tfos.parallel_run(sc, _sleep_forever, None, num_executors=2, timeout=3, stop_grace_s=1)
    assert [f.task_index for f in err.value.failures] == [0, 1]
    assert err.value.failures[0].reason == "did not finish within timeout=3 s; stopped"
    assert "about to sleep" in err.value.failures[0].output_tail
    # no instance process, and nothing main_fun spawned (its process group is stopped with it)
    spawned = [int(re.search(r"spawned (\d+)", f.output_tail).group(1)) for f in err.value.failures]
    assert wait_until(lambda: all(process_gone(pid) for pid in spawned), 2.0), spawned
    assert wait_no_node_processes(timeout_s=5.0) == []
