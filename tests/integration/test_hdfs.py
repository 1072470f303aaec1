"""HDFS for real: Hadoop's own MiniDFSCluster (a NameNode and a DataNode on 127.0.0.1, from
hadoop-client-minicluster 3.5.0, tests/hadoop_cluster.py) with a 2-executor Spark.

The client paths: tfos's storage layer through the ``hdfs-native`` package (a JVM-free
client, ``TFOS_FSSPEC_SCHEMES=hdfs`` on the driver and the executors), and Spark's own
Hadoop client (pyspark's jars) for what Spark reads and qualifies. pyarrow's libhdfs client
cannot run here: no ``libhdfs.so`` comes with pip's pyarrow or Maven's Hadoop jars.
"""

from __future__ import annotations

import json
import sys

import cloudpickle
import pytest

import tfos
from tests.hadoop_cluster import serve
from tfos import dfutil

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def hdfs():
    yield from serve()


@pytest.fixture
def hdfs_native(hdfs, spark, monkeypatch):
    """tfos's storage calls through hdfs-native (its fsspec file system), in the driver and in
    the executors' Python workers (``sc.environment``: the shared application, no own conf)."""
    monkeypatch.setenv("TFOS_FSSPEC_SCHEMES", "hdfs")
    spark.sparkContext.environment["TFOS_FSSPEC_SCHEMES"] = "hdfs"
    yield hdfs
    spark.sparkContext.environment.pop("TFOS_FSSPEC_SCHEMES", None)


def test_the_storage_layer_writes_lists_reads_and_deletes_on_the_namenode(hdfs_native):
    from tfos.storage import glob, resolve
    from tfos.storage.filesystems import read_bytes

    base = f"{hdfs_native.uri}/tfos/layer"
    payload = bytes(range(256)) * 4096  # 1 MiB: more than one packet to the DataNode
    for name in ("a.bin", "b.bin", "sub/c.bin"):
        location = resolve(f"{base}/{name}")
        location.fs.create_dir(location.path.rsplit("/", 1)[0], recursive=True)
        with location.fs.open_output_stream(location.path) as out:
            out.write(payload)
    assert glob(f"{base}/*.bin") == [f"{base}/a.bin", f"{base}/b.bin"]
    assert glob(f"{base}/**/*.bin") == [f"{base}/sub/c.bin"]  # "**" spans segments, "/" must be there
    assert glob(f"{base}/**.bin") == [f"{base}/a.bin", f"{base}/b.bin", f"{base}/sub/c.bin"]
    assert read_bytes(f"{base}/sub/c.bin") == payload
    gone = resolve(f"{base}/a.bin")
    gone.fs.delete_file(gone.path)
    assert glob(f"{base}/*.bin") == [f"{base}/b.bin"]


@pytest.mark.slow  # CI time; dfutil's code is test_dfutil.py's (local and S3), and the HDFS round trip is the storage-layer test above and the shard test below
def test_dfutil_saves_and_loads_tfrecords_on_hdfs(spark, hdfs_native):
    frame = spark.createDataFrame([(i, float(i) / 4, f"row-{i}".encode()) for i in range(200)],
                                  "id long, x double, blob binary").repartition(4)
    target = f"{hdfs_native.uri}/tfos/dfutil/frame"
    saved = dfutil.save_as_tfrecords(frame, target)  # driver: the directory; executors: the parts
    assert (saved.output_dir, saved.total_records, len(saved.files)) == (target, 200, 4)
    back = dfutil.load_tfrecords(spark, target)  # Spark's own HDFS client reads the files
    assert sorted((r.id, r.x, bytes(r.blob)) for r in back.collect()) == [
        (i, i / 4, f"row-{i}".encode()) for i in range(200)]


def test_a_relative_path_lands_on_fs_default_fs_as_spark_and_tensorflowonspark_resolve_it(spark, hdfs_native):
    from tfos.context import absolute_path
    from tfos.storage.filesystems import read_bytes

    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    before = hadoop_conf.get("fs.defaultFS")
    hadoop_conf.set("fs.defaultFS", hdfs_native.uri)
    try:
        frame = spark.createDataFrame([(i,) for i in range(10)], "id long")
        saved = dfutil.save_as_tfrecords(frame, "relative/frame")
    finally:
        hadoop_conf.set("fs.defaultFS", before)
    # Spark put it under the user's HDFS home; ctx.absolute_path (TensorFlowOnSpark's
    # hdfs_path) names the same place from fs.defaultFS and that home
    import getpass

    home = f"/user/{getpass.getuser()}"
    assert saved.output_dir == f"{hdfs_native.uri}{home}/relative/frame"
    assert absolute_path("relative/frame", hdfs_native.uri, home) == saved.output_dir
    assert read_bytes(f"{saved.output_dir}/_SUCCESS") == b""


def _count_my_shard(args, ctx):
    """This node's files of ``args["pattern"]`` on HDFS, and the records in them."""
    import json as _json
    import os as _os

    files = ctx.shard_files(args["pattern"])
    records = sum(1 for _ in ctx.tfrecord_dataset(files))
    with open(_os.path.join(args["out"], f"{ctx.job_name}.json"), "w") as f:
        _json.dump({"files": files, "records": records}, f)


def test_nodes_shard_and_read_tfrecords_from_hdfs(spark, hdfs_native, tmp_path):
    frame = spark.createDataFrame([(i,) for i in range(120)], "id long").repartition(4)
    train = f"{hdfs_native.uri}/tfos/nodes/train"
    dfutil.save_as_tfrecords(frame, train)
    cluster = tfos.run(spark.sparkContext, _count_my_shard, {"pattern": f"{train}/part-*", "out": str(tmp_path)},
                       num_executors=2)
    cluster.shutdown(timeout=180)
    reports = {p.stem: json.loads(p.read_text()) for p in tmp_path.glob("*.json")}
    assert reports["chief"]["files"] == [f"{train}/part-00000.tfrecord", f"{train}/part-00002.tfrecord"]
    assert reports["worker"]["files"] == [f"{train}/part-00001.tfrecord", f"{train}/part-00003.tfrecord"]
    assert reports["chief"]["records"] + reports["worker"]["records"] == 120


def _save_then_resume(args, ctx):
    """Write (first run) or read back (second run) a file in ``ctx.local_dir("export")``."""
    import os as _os

    export = ctx.local_dir("export")
    path = _os.path.join(export, "model.txt")
    if _os.path.exists(path):  # restored from storage
        with open(path) as f, open(_os.path.join(args, f"{ctx.job_name}.txt"), "w") as out:
            out.write(f.read())
    elif ctx.is_chief:
        with open(path, "w") as f:
            f.write("weights of run 1")


@pytest.mark.slow  # CI time; the mirror and restore are the S3 storage test's (default run), hdfs-native the tests above
def test_a_runs_storage_on_hdfs_is_mirrored_and_restored_by_the_next_run(spark, hdfs_native, tmp_path):
    from tfos.storage import glob

    storage = f"{hdfs_native.uri}/tfos/runs/mirror"
    first = tfos.run(spark.sparkContext, _save_then_resume, str(tmp_path), num_executors=2, storage=storage)
    first.shutdown(timeout=180)  # returns once the lead node's files are in storage
    assert glob(f"{storage}/export/*") == [f"{storage}/export/model.txt"]
    second = tfos.run(spark.sparkContext, _save_then_resume, str(tmp_path), num_executors=2, storage=storage)
    second.shutdown(timeout=180)
    # every node of the next run finds the chief's file in its own local_dir
    assert {p.name: p.read_text() for p in tmp_path.glob("*.txt")} == {
        "chief.txt": "weights of run 1", "worker.txt": "weights of run 1"}
