"""InputMode.SPARK on a real 2-executor Spark application: exactly-once feeding, equal steps,
inference order, DataFrames, terminate, and fast failure."""

from __future__ import annotations

import collections
import json
import sys
import time

import cloudpickle
import pytest

import tfos
from tests.integration.node_functions import answer_from_columns, collect_ids

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
cloudpickle.register_pickle_by_value(sys.modules[__name__])

SPARK = tfos.InputMode.SPARK


def _skewed(sc, sizes):
    """An RDD of (id, payload) with the given partition sizes (ids are unique)."""
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    return sc.parallelize(range(len(sizes)), len(sizes)).mapPartitionsWithIndex(
        lambda i, _it: ((offsets[i] + k, b"r" * 16) for k in range(sizes[i]))
    )


@pytest.mark.parametrize("sizes", [
    [0, 5000, 0, 3, 0, 17],          # empty partitions, one huge, more partitions than nodes
    # fewer records than nodes: one node gets nothing (CI time: the plan is unit-tested for it)
    pytest.param([1], marks=pytest.mark.slow),
])
def test_every_record_reaches_exactly_one_node_once_per_epoch(sc, tmp_path, sizes):
    cluster = tfos.run(sc, collect_ids, str(tmp_path), num_executors=2, input_mode=SPARK)
    report = cluster.train(_skewed(sc, sizes), num_epochs=2)
    cluster.shutdown(timeout=120)
    seen = []
    for name in ("chief", "worker"):
        seen += json.loads((tmp_path / f"{name}.json").read_text())
    counts = collections.Counter(seen)
    assert set(counts) == set(range(sum(sizes)))
    assert set(counts.values()) == {2}
    assert report.records_per_epoch == sum(sizes)
    assert sorted(report.records_per_node) == sorted([sum(sizes) // 2, sum(sizes) - sum(sizes) // 2])
    assert report.epochs_fed == 2 and cluster.feed_reports == [report]
    assert report.transport == "records"  # an uncached map chain: its function runs in the feeding task


def test_a_cached_rdd_is_counted_once_across_train_calls_and_read_by_one_task_per_slot(sc, tmp_path):
    rdd = _skewed(sc, [40, 0, 25]).cache()
    cluster = tfos.run(sc, collect_ids, str(tmp_path), num_executors=2, input_mode=SPARK)
    jobs: list[str] = []
    original = cluster._run_feed_job

    def recording(description, thunk):
        jobs.append(description)
        return original(description, thunk)

    cluster._run_feed_job = recording
    cluster.train(rdd, num_epochs=1)
    cluster.train(rdd, num_epochs=2)
    cluster.shutdown(timeout=120)
    assert jobs == ["tfos: count partitions", "tfos: feed epoch 1/1", "tfos: feed epoch 1/2",
                    "tfos: feed epoch 2/2"]
    # 3 cached partitions on 2 task slots: coalesced, one feeding task per slot
    assert sc.defaultParallelism == 2
    assert [len(r.partition_sizes) for r in cluster.feed_reports] == [2, 2]
    # pyspark's stored batches were forwarded, not unpickled and re-pickled
    assert [r.transport for r in cluster.feed_reports] == ["pickled batches"] * 2
    assert sum(cluster.feed_reports[0].partition_sizes) == 65
    seen = []
    for name in ("chief", "worker"):
        seen += json.loads((tmp_path / f"{name}.json").read_text())
    assert collections.Counter(seen) == {i: 3 for i in range(65)}


def _one_more_record_each_read(marker_dir: str):
    """Partition ``i`` holds 5 + (times it was read) records: data that changes between jobs."""

    def records(index, _it):
        import os as _os
        import uuid as _uuid

        open(_os.path.join(marker_dir, f"{index}-{_uuid.uuid4().hex}"), "w").close()
        reads = sum(1 for f in _os.listdir(marker_dir) if f.startswith(f"{index}-"))
        return iter((100 * index + k, b"r") for k in range(5 + reads))

    return records


def test_data_that_changes_between_the_count_and_the_feed_fails_the_epoch_and_says_why(sc, tmp_path):
    markers = tmp_path / "reads"
    markers.mkdir()
    rdd = sc.parallelize(range(2), 2).mapPartitionsWithIndex(_one_more_record_each_read(str(markers)))
    cluster = tfos.run(sc, collect_ids, str(tmp_path), num_executors=2, input_mode=SPARK)
    try:
        with pytest.raises(tfos.FeedError) as error:
            cluster.train(rdd, num_epochs=2)
    finally:
        cluster.shutdown(timeout=120)
    assert str(error.value) == ("epoch 1 fed 14 records but the count job saw 12 (per partition: [7, 7] vs "
                                "[6, 6]); the data is not deterministic: cache() it")
    assert cluster.feed_reports[0].epochs_fed == 1


def _answer_doubled(args, ctx):
    feed = ctx.get_data_feed(train_mode=False)
    while not feed.should_stop():
        batch = feed.next_batch(333)
        if batch:
            feed.batch_results([2 * x for x in batch])


def test_inference_returns_one_result_per_record_in_input_order(sc):
    cluster = tfos.run(sc, _answer_doubled, None, num_executors=2, input_mode=SPARK)
    n = 100_000
    results = cluster.inference(sc.parallelize(range(n), 9)).collect()
    empty = cluster.inference(sc.parallelize([], 3)).collect()
    cluster.shutdown(timeout=120)
    assert results == [2 * i for i in range(n)]
    assert empty == []


def _mapped_columns(args, ctx):
    import json as _json
    import os as _os

    feed = ctx.get_data_feed(train_mode=True, input_mapping={"x": "features", "label": "y", "name": "who"})
    got = collections.defaultdict(list)
    while not feed.should_stop():
        batch = feed.next_batch(7)
        for key, values in batch.items():
            got[key].extend(values.tolist() if hasattr(values, "tolist") else values)
    with open(_os.path.join(args, f"{ctx.job_name}.json"), "w") as f:
        _json.dump(got, f)


@pytest.mark.slow  # CI time; covered in the default run by input_mapping in test_connect's inference and test_pipeline
def test_dataframe_columns_reach_the_tensors_named_by_input_mapping(spark, sc, tmp_path):
    rows = [(i, float(i) / 2, [i, i + 1], f"n{i}", i % 2 == 0) for i in range(50)]
    df = spark.createDataFrame(rows, "label long, x double, arr array<int>, name string, flag boolean")
    cluster = tfos.run(sc, _mapped_columns, str(tmp_path), num_executors=2, input_mode=SPARK)
    cluster.train(df.repartition(3), num_epochs=1)
    cluster.shutdown(timeout=120)
    got = collections.defaultdict(list)
    for name in ("chief", "worker"):
        for key, values in json.loads((tmp_path / f"{name}.json").read_text()).items():
            got[key].extend(values)
    assert sorted(got) == ["features", "who", "y"]
    by_label = dict(zip(got["y"], zip(got["features"], got["who"], strict=True), strict=True))
    assert by_label == {i: (float(i) / 2, f"n{i}") for i in range(50)}


def _dataset_of_dataframe(args, ctx):
    """Epoch 1 through the spec inferred from the schema, epoch 2 through a declared one."""
    import json as _json
    import os as _os

    import tensorflow as tf

    inferred = ctx.dataset(batch_size=64)
    spec = {k: [v.dtype.name, v.shape.as_list()] for k, v in inferred.element_spec.items()}
    ids = [int(i) for batch in inferred for i in batch["id"].numpy()]
    declared = ctx.dataset({"id": tf.TensorSpec((), tf.int64), "img": tf.TensorSpec((4,), tf.uint8),
                            "arr": tf.TensorSpec((3,), tf.float32)})
    pixels_ok = all(list(r["img"].numpy()) == [int(r["id"]) % 251, 1, 2, 3] and
                    float(r["arr"][2]) == float(r["id"]) for r in declared)
    with open(_os.path.join(args, f"{ctx.job_name}.json"), "w") as f:
        _json.dump({"spec": spec, "ids": ids, "pixels_ok": pixels_ok}, f)


def test_a_dataframe_feeds_ctx_dataset_with_a_spec_inferred_from_its_schema(spark, sc, tmp_path):
    sizes = [0, 3000, 0, 3, 17]
    rows = _skewed(sc, sizes).map(lambda r: (r[0], r[0] / 2, bytes([r[0] % 251, 1, 2, 3]),
                                             [0.5, 1.0, float(r[0])], f"n{r[0]}", r[0] % 2 == 0))
    df = spark.createDataFrame(rows, "id long, x double, img binary, arr array<float>, name string, flag boolean")
    df.cache().count()
    kept_before = set(sc._jsc.getPersistentRDDs().keys())
    cluster = tfos.run(sc, _dataset_of_dataframe, str(tmp_path), num_executors=2, input_mode=SPARK)
    report = cluster.train(df, num_epochs=2)
    cluster.shutdown(timeout=120)
    # the Arrow batches Spark kept for the call's reads are released when it returns
    deadline = time.monotonic() + 15
    # (only new ones count: Spark's cleaner may drop RDDs of earlier tests meanwhile)
    while set(sc._jsc.getPersistentRDDs().keys()) - kept_before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert set(sc._jsc.getPersistentRDDs().keys()) - kept_before == set()
    results = [json.loads((tmp_path / f"{name}.json").read_text()) for name in ("chief", "worker")]
    assert results[0]["spec"] == {  # batches of the inferred per-record spec
        "id": ["int64", [None]], "x": ["float64", [None]], "img": ["string", [None]], "arr": ["float32", [None, 3]],
        "name": ["string", [None]], "flag": ["bool", [None]],
    }
    seen = results[0]["ids"] + results[1]["ids"]
    assert len(seen) == len(set(seen)) == 2 * report.quota_per_node == sum(sizes) - report.dropped_per_epoch
    assert set(seen) <= set(range(sum(sizes)))
    assert all(r["pixels_ok"] for r in results)
    # read by one task per slot: the 5 partitions' Arrow batches coalesced to 2
    assert report.transport == "arrow" and len(report.partition_sizes) == 2
    assert sum(report.partition_sizes) == sum(sizes)


def test_a_dataframe_becomes_the_same_arrow_batches_from_the_jvm_or_through_map_in_arrow(spark):
    from tfos.feed.arrow_export import arrow_batches, decode

    df = spark.createDataFrame(
        [(i, i / 2, bytes([i, 1]), [float(i)] * 2, f"n{i}", None if i % 3 else True, [i] if i % 2 else None)
         for i in range(40)],
        "id long, x double, img binary, arr array<float>, name string, flag boolean, maybe array<int>",
    ).repartition(3)
    tables = {}
    for from_jvm in (True, False):
        blobs, schema = arrow_batches(df, from_jvm=from_jvm)
        rows = [row for blob in blobs.collect() for row in decode(blob, schema).to_pylist()]
        tables[from_jvm] = sorted(rows, key=lambda r: r["id"])
    assert tables[True] == tables[False]
    assert [r["id"] for r in tables[True]] == list(range(40))
    assert tables[True][7] == {"id": 7, "x": 3.5, "img": b"\x07\x01", "arr": [7.0, 7.0], "name": "n7", "flag": None,
                               "maybe": [7]}


def test_dataframe_inference_keeps_order_and_can_add_columns_to_the_rows(spark, sc):
    df = spark.range(0, 20_000, numPartitions=5).selectExpr("id", "concat('r', id) as name", "id % 3 as k")
    cluster = tfos.run(sc, answer_from_columns, None, num_executors=2, input_mode=SPARK)
    as_rdd = cluster.inference(df).collect()
    as_df = cluster.inference(df, output_schema="times_ten long, shout string").collect()
    with pytest.raises(tfos.FeedError, match="already exist"):
        cluster.inference(df, output_schema="k long")
    cluster.shutdown(timeout=120)
    assert as_rdd == [(i * 10, f"r{i}!") for i in range(20_000)]
    assert [tuple(r) for r in as_df] == [(i, f"r{i}", i % 3, i * 10, f"r{i}!") for i in range(20_000)]


def _stop_early(args, ctx):
    import json as _json
    import os as _os

    feed = ctx.get_data_feed(train_mode=True)
    taken = len(feed.next_batch(10))
    feed.terminate()
    with open(_os.path.join(args, f"{ctx.job_name}.json"), "w") as f:
        _json.dump({"taken": taken, "stop": feed.should_stop()}, f)


def test_terminate_skips_the_rest_of_the_feed_promptly(sc, tmp_path):
    cluster = tfos.run(sc, _stop_early, str(tmp_path), num_executors=2, input_mode=SPARK)
    start = time.monotonic()
    report = cluster.train(_skewed(sc, [200_000, 200_000]), num_epochs=3, feed_timeout=60)
    elapsed = time.monotonic() - start
    cluster.shutdown(timeout=120)
    assert report.terminated
    assert report.epochs_fed == 1
    assert elapsed < 30
    for name in ("chief", "worker"):
        assert json.loads((tmp_path / f"{name}.json").read_text()) == {"taken": 10, "stop": True}


def _fail_after_some(args, ctx):
    import time as _time

    feed = ctx.get_data_feed(train_mode=True)
    feed.next_batch(100)
    if ctx.job_name == "worker":
        with open(args, "w") as f:
            f.write(repr(_time.time()))
        raise RuntimeError("model diverged (raised on purpose)")
    while not feed.should_stop():
        feed.next_batch(100)


def test_a_node_failing_mid_feed_ends_train_with_its_traceback_in_seconds(sc, tmp_path):
    marker = str(tmp_path / "raised")
    cluster = tfos.run(sc, _fail_after_some, marker, num_executors=2, input_mode=SPARK)
    with pytest.raises(tfos.ClusterFailedError) as err:
        cluster.train(_skewed(sc, [300_000, 300_000]), num_epochs=5, feed_timeout=600)
    caught = time.time()
    assert caught - float(open(marker).read()) < 10
    assert "node worker:0" in str(err.value)
    assert 'raise RuntimeError("model diverged (raised on purpose)")' in str(err.value)
    with pytest.raises(tfos.ClusterFailedError):
        cluster.shutdown(timeout=60)


def _fail_before_reading(args, ctx):
    import time as _time

    if ctx.job_name == "worker":
        _time.sleep(2)  # after tfos.run returned: while train() counts and opens the feed
        raise RuntimeError("bad input pipeline (raised on purpose)")
    feed = ctx.get_data_feed(train_mode=True)
    while not feed.should_stop():
        feed.next_batch(100)


@pytest.mark.slow  # CI time; covered in the default run by a node failing while fed: the mid-feed test
def test_a_node_failing_as_the_feed_starts_ends_train_with_its_traceback_not_a_feed_error(sc):
    # the worker's feed endpoint goes while train() counts the data and opens its channels:
    # the feed's own error (NodeGone, refused connections) must give way to the node's report
    cluster = tfos.run(sc, _fail_before_reading, None, num_executors=2, input_mode=SPARK)
    started = time.monotonic()
    with pytest.raises(tfos.ClusterFailedError) as err:
        cluster.train(_skewed(sc, [5_000, 5_000]), num_epochs=2, feed_timeout=600)
    assert time.monotonic() - started < 30
    assert "node worker:0" in str(err.value)
    assert 'raise RuntimeError("bad input pipeline (raised on purpose)")' in str(err.value)
    with pytest.raises(tfos.ClusterFailedError):
        cluster.shutdown(timeout=60)


def _mwms_fit_on_feed(args, ctx):
    import json as _json
    import os as _os

    import keras
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
        model.compile(optimizer="adam", loss="mse")
    sig = (tf.TensorSpec((4,), tf.float32), tf.TensorSpec((), tf.float32))
    steps: list[int] = []

    class CountSteps(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            steps.append(0)

        def on_train_batch_end(self, batch, logs=None):
            steps[-1] += 1

    history = model.fit(ctx.dataset(sig).batch(16), epochs=args["epochs"], verbose=0, callbacks=[CountSteps()])
    with open(_os.path.join(args["dir"], f"{ctx.job_name}.json"), "w") as f:
        _json.dump({"loss": history.history["loss"], "steps": steps}, f)


def test_mwms_fit_on_skewed_partitions_finishes_with_equal_steps(sc, tmp_path):
    import random

    rng = random.Random(0)
    sizes = [0, 700, 5, 0, 90]
    data = _skewed(sc, sizes).map(
        lambda r: ([float(r[0] % 7), 1.0, float(r[0] % 3), 0.5], float(r[0] % 7) * 0.3)
    )
    del rng
    cluster = tfos.run(sc, _mwms_fit_on_feed, {"dir": str(tmp_path), "epochs": 3}, num_executors=2,
                       input_mode=SPARK)
    report = cluster.train(data, num_epochs=3)
    cluster.shutdown(timeout=180)
    assert report.dropped_per_epoch == sum(sizes) % 2
    # every fed epoch reaches its own Keras epoch (Keras' build pass must not eat one); MWMS
    # takes the batch of 16 as the global batch: each of the 2 nodes steps through 8 records
    expected_steps = -(-report.quota_per_node // 8)
    for name in ("chief", "worker"):
        result = json.loads((tmp_path / f"{name}.json").read_text())
        assert result["steps"] == [expected_steps] * 3
        assert len(result["loss"]) == 3 and 0 < result["loss"][-1] < result["loss"][0]


def _mwms_fit_on_data_feed(args, ctx):
    """TensorFlowOnSpark's mnist_spark.py shape: DataFeed.next_batch(1) in a generator, MWMS fit
    for 90% of the node's share, then terminate()."""
    import json as _json
    import os as _os

    import keras
    import numpy as np
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    feed = ctx.get_data_feed(train_mode=True)

    def records():
        while not feed.should_stop():
            batch = feed.next_batch(1)
            if not batch:
                return
            pixels, label = batch[0]
            yield np.asarray(pixels, np.float32) / 255.0, np.float32(label)

    ds = tf.data.Dataset.from_generator(
        records, output_signature=(tf.TensorSpec((784,), tf.float32), tf.TensorSpec((), tf.float32)))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    ds = ds.batch(args["batch"]).with_options(options)
    with strategy.scope():
        model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(16, activation="relu"),
                                  keras.layers.Dense(1)])
        model.compile(optimizer="adam", loss="mse")
    # the batch is global: each node steps through batch / num_workers of its own records
    steps = int(0.9 * args["per_node"] / (args["batch"] // ctx.num_workers))
    history = model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
    feed.terminate()
    with open(_os.path.join(args["dir"], f"{ctx.job_name}.json"), "w") as f:
        _json.dump({"records": feed.records, "steps": steps, "loss": history.history["loss"]}, f)


@pytest.mark.slow  # CI time; covered in the default run by MWMS on uneven partitions: test_mwms_fit_on_skewed_partitions_finishes_with_equal_steps
def test_mwms_fit_on_a_data_feed_of_wide_records_in_uneven_partitions_finishes(sc, tmp_path):
    """The TensorFlowOnSpark example's deadlock: more partitions than task slots, uneven, each
    node's share many times its buffer (MNIST-CSV-sized records), nodes advancing in lockstep."""
    sizes = [9000, 300, 6500, 0, 3500, 7200, 1500, 2000]  # 30,000 records of ~1.6 kB pickled
    data = _skewed(sc, sizes).map(lambda r: ([(r[0] * 7 + k) % 256 for k in range(784)], float(r[0] % 10)))
    args = {"dir": str(tmp_path), "batch": 64, "per_node": sum(sizes) // 2}
    cluster = tfos.run(sc, _mwms_fit_on_data_feed, args, num_executors=2, input_mode=SPARK)
    report = cluster.train(data, num_epochs=1, feed_timeout=120)  # a stalled feed fails in 120 s
    cluster.shutdown(timeout=120)
    assert report.terminated or report.epochs_fed == 1
    for name in ("chief", "worker"):
        result = json.loads((tmp_path / f"{name}.json").read_text())
        assert result["steps"] == int(0.9 * args["per_node"] / 32)
        assert result["records"] >= result["steps"] * 32  # 90% of its share, read in lockstep
        assert len(result["loss"]) == 1
