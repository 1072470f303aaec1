"""Cluster storage on a real cluster path: 2 executors, MWMS, TFRecords read from an S3-API
server (moto, its own process, loopback) through ctx.shard_files and ctx.tfrecord_dataset."""

from __future__ import annotations

import json
import os
import sys

import cloudpickle
import pytest

import tfos
from tests.s3_server import serve_bucket

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

cloudpickle.register_pickle_by_value(sys.modules[__name__])

BUCKET = "tfos-train"
FILES = 4
RECORDS = 64


@pytest.fixture(scope="module")
def s3():
    yield from serve_bucket(BUCKET)


@pytest.fixture(scope="module")
def train_files(s3, tmp_path_factory):
    """FILES TFRecord files of tf.train.Examples (x: 4 floats, y = x . w) in s3://BUCKET/train/."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(3)
    w = np.array([1.0, -2.0, 0.5, 3.0], dtype=np.float32)
    local = tmp_path_factory.mktemp("train")
    fs = s3.filesystem()
    for f in range(FILES):
        path = local / f"part-{f:05d}"
        with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
            for _ in range(RECORDS):
                x = rng.normal(size=4).astype(np.float32)
                example = tf.train.Example(features=tf.train.Features(feature={
                    "x": tf.train.Feature(float_list=tf.train.FloatList(value=x)),
                    "y": tf.train.Feature(float_list=tf.train.FloatList(value=[float(x @ w)])),
                }))
                writer.write(example.SerializeToString())
        with open(path, "rb") as src, fs.open_output_stream(f"{BUCKET}/train/part-{f:05d}") as dst:
            dst.write(src.read())
    return f"s3://{BUCKET}/train/part-*"


def _mwms_linear_model():
    """A linear model under MultiWorkerMirroredStrategy (made first, before any other TF op)."""
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])
        model.compile(optimizer=tf.keras.optimizers.SGD(0.05), loss="mse")
    return model


def _examples(records):
    """``train_files``' serialized records as ``(x, y)`` pairs."""
    import tensorflow as tf

    spec = {"x": tf.io.FixedLenFeature([4], tf.float32), "y": tf.io.FixedLenFeature([1], tf.float32)}
    return records.map(lambda r: tf.io.parse_single_example(r, spec)).map(lambda e: (e["x"], e["y"]))


def _fit_from_s3(args, ctx):
    import json as _json
    import os as _os

    model = _mwms_linear_model()
    files = ctx.shard_files(args["pattern"])
    records = ctx.tfrecord_dataset(files, compression_type="GZIP", num_parallel_reads=2)
    count = sum(1 for _ in records)
    dataset = _examples(records)
    history = model.fit(dataset.batch(16).repeat(), steps_per_epoch=8, epochs=2, verbose=0)
    with open(_os.path.join(args["out"], f"{ctx.job_name}.json"), "w") as f:
        _json.dump({"files": files, "records": count, "loss": history.history["loss"],
                    "stage_dir": records._tfos_stager.dir, "staged": _os.path.isdir(records._tfos_stager.dir)}, f)


@pytest.fixture
def s3a_conf(sc, s3):
    """The S3 server set the way Spark users set it: spark.hadoop.fs.s3a.* in the conf."""
    conf = s3.s3a_conf()
    for key, value in conf.items():
        sc._conf.set(key, value)
    yield
    for key in conf:
        sc._conf._jconf.remove(key)


@pytest.mark.slow  # CI time; in the default run the nodes read their S3 shards in the checkpoint/restart test, and s3a conf credentials reach the executors in test_dfutil.py's S3 test
def test_mwms_fit_reads_its_shard_of_tfrecords_from_s3(sc, s3, s3a_conf, train_files, tmp_path, caplog):
    cluster = tfos.run(sc, _fit_from_s3, {"pattern": train_files, "out": str(tmp_path)}, num_executors=2,
                       env={"AWS_EC2_METADATA_DISABLED": "true"})  # credentials come from the s3a conf
    cluster.shutdown(timeout=180)
    reports = {p.stem: json.loads(p.read_text()) for p in tmp_path.glob("*.json")}
    assert sorted(reports) == ["chief", "worker"]
    assert reports["chief"]["files"] == [f"s3://{BUCKET}/train/part-00000", f"s3://{BUCKET}/train/part-00002"]
    assert reports["worker"]["files"] == [f"s3://{BUCKET}/train/part-00001", f"s3://{BUCKET}/train/part-00003"]
    assert [r["records"] for r in reports.values()] == [2 * RECORDS] * 2
    for report in reports.values():
        assert report["loss"][-1] < report["loss"][0]
        assert report["staged"] and not os.path.exists(report["stage_dir"])  # gone with the node
    assert s3.secret_key not in caplog.text and s3.secret_key not in repr(cluster.config)


def _plain_epochs(args, ctx):
    """A Keras fit as users write it: no repeat(), no steps_per_epoch; an epoch ends with the data."""
    import json as _json
    import os as _os

    import tensorflow as tf

    model = _mwms_linear_model()
    records = ctx.tfrecord_dataset(ctx.shard_files(args["pattern"]), compression_type="GZIP")
    dataset = _examples(records)
    steps: list[int] = []

    class Steps(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            steps.append(0)

        def on_train_batch_end(self, batch, logs=None):
            steps[-1] += 1

    model.fit(dataset.batch(args["batch"]), epochs=2, verbose=0, callbacks=[Steps()])
    policy = records.options().experimental_distribute.auto_shard_policy
    with open(_os.path.join(args["out"], f"{ctx.job_name}.json"), "w") as f:
        _json.dump({"steps": steps, "unsharded": policy == tf.data.experimental.AutoShardPolicy.OFF}, f)


def test_an_mwms_epoch_over_ctx_tfrecord_dataset_reads_each_nodes_whole_share(sc, s3, train_files, tmp_path):
    # MWMS shards a dataset again unless auto-sharding is off: each node would read half its
    # files, and a fit without steps_per_epoch would quietly train on half the data
    batch = 16
    cluster = tfos.run(sc, _plain_epochs, {"pattern": train_files, "out": str(tmp_path), "batch": batch},
                       num_executors=2, env=s3.env())
    cluster.shutdown(timeout=180)
    reports = {p.stem: json.loads(p.read_text()) for p in tmp_path.glob("*.json")}
    assert sorted(reports) == ["chief", "worker"]
    per_replica = batch // 2  # the global batch is split over the 2 workers
    for report in reports.values():
        assert report["unsharded"]
        assert report["steps"] == [2 * RECORDS // per_replica] * 2  # each node's 2 files, both epochs


def _train_with_storage(args, ctx):
    import json as _json
    import os as _os
    import signal as _signal
    import time as _time

    import tensorflow as tf

    model = _mwms_linear_model()
    dataset = _examples(ctx.tfrecord_dataset(ctx.shard_files(args["pattern"]), compression_type="GZIP"))
    epochs_run = []

    class Record(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            epochs_run.append(epoch)

        def on_epoch_end(self, epoch, logs=None):
            if ctx.attempt == 0 and ctx.job_name == "worker" and epoch == 1:
                _time.sleep(args["mirror_lag_s"])  # the chief's epoch-1 backup reaches storage
                _os.kill(_os.getpid(), _signal.SIGKILL)

    callbacks = [tf.keras.callbacks.BackupAndRestore(ctx.local_dir("backup")),
                 tf.keras.callbacks.TensorBoard(ctx.log_dir), Record()]
    model.fit(dataset.batch(16).repeat(), steps_per_epoch=4, epochs=4, verbose=0, callbacks=callbacks)
    if ctx.is_chief:
        model.save(_os.path.join(ctx.local_dir("export"), "model.keras"))
    with open(_os.path.join(args["out"], f"{ctx.job_name}-{ctx.attempt}.json"), "w") as f:
        _json.dump({"epochs": epochs_run}, f)


def test_checkpoints_exports_and_events_reach_storage_and_a_restart_resumes(sc, s3, train_files, tmp_path,
                                                                           monkeypatch):
    import pyarrow.fs as pafs

    for name, value in s3.env().items():  # the driver checks it can write there before starting
        monkeypatch.setenv(name, value)
    from tfos.storage.mirror import INTERVAL_S

    storage = f"s3://{BUCKET}/runs/run-1"
    args = {"pattern": train_files, "out": str(tmp_path), "mirror_lag_s": INTERVAL_S + 3}
    cluster = tfos.run(sc, _train_with_storage, args, num_executors=2, env=s3.env(), storage=storage,
                       tensorboard=True, max_restarts=1)
    cluster.shutdown(timeout=200)
    reports = {p.stem: json.loads(p.read_text()) for p in tmp_path.glob("*.json")}
    assert sorted(reports) == ["chief-1", "worker-1"]  # attempt 0 never finished
    assert reports["chief-1"]["epochs"][0] >= 2, reports  # resumed from the restored backup
    fs = s3.filesystem()
    names = [i.path.split(f"{BUCKET}/runs/run-1/", 1)[1] for i in
             fs.get_file_info(pafs.FileSelector(f"{BUCKET}/runs/run-1", recursive=True))
             if i.type == pafs.FileType.File]
    assert "export/model.keras" in names
    assert any(n.startswith("tensorboard/") and "events.out.tfevents" in n for n in names), names
    assert not any(n.startswith("backup/") for n in names), names  # BackupAndRestore removes it after training


@pytest.fixture
def executors_reach_s3(sc, s3, monkeypatch):
    """The S3 environment in the driver and in the executors' Python workers (sc.environment)."""
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    sc.environment.update(s3.env())
    yield
    for name in s3.env():
        sc.environment.pop(name, None)


def test_save_and_load_tfrecords_on_s3_through_the_storage_layer(spark, s3, executors_reach_s3):
    import pyarrow.fs as pafs

    from tfos import dfutil
    from tfos.storage import glob, tfrecord_dataset

    df = spark.range(0, 500, 1, numPartitions=4).selectExpr("id", "cast(id * 2 as double) as twice")
    target = f"s3a://{BUCKET}/frames/out"
    saved = dfutil.save_as_tfrecords(df, target, compression="GZIP")
    assert saved.total_records == 500 and len(saved.files) == 4
    parts = glob(f"s3://{BUCKET}/frames/out/part-*")
    assert [p.rsplit("/", 1)[1] for p in parts] == [f"part-{i:05d}.tfrecord.gz" for i in range(4)]
    fs = s3.filesystem()
    names = {i.path.rsplit("/", 1)[1] for i in fs.get_file_info(pafs.FileSelector(f"{BUCKET}/frames/out"))}
    assert names == {"_SUCCESS", "_tfos_schema.json", *(p.rsplit("/", 1)[1] for p in parts)}  # no temp left
    assert sum(1 for _ in tfrecord_dataset(parts, compression_type="GZIP")) == 500
    # pip's pyspark has no Hadoop file system for s3a://: load_tfrecords reads through the storage layer
    loaded = dfutil.load_tfrecords(spark, target)
    assert loaded.schema == df.schema  # from the saved _tfos_schema.json
    assert sorted(tuple(r) for r in loaded.collect()) == sorted(tuple(r) for r in df.collect())
    with pytest.raises(tfos.DataError, match="already exists and is not empty"):
        dfutil.save_as_tfrecords(df, target)
    assert dfutil.save_as_tfrecords(df.limit(10), target, overwrite=True).total_records == 10
