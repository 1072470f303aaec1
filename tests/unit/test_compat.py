"""tfos.compat: TensorFlowOnSpark's names and argument orders mapped onto tfos, without Spark.

The driver side is checked against a recording stand-in for ``tfos.run`` (the mapping is the
point, not the cluster); the node side uses real NodeContexts and a real FeedServer fed over
127.0.0.1 by tfos's own feeding code.
"""

from __future__ import annotations

import argparse
import inspect
import os
import socket
import subprocess
import sys

import pytest

from tests.unit.threads import Background
from tfos.cluster import NodeInfo
from tfos.compat import TFCluster, TFNode, TFParallel
from tfos.context import NodeContext
from tfos.errors import ConfigError, FeedError
from tfos.feed.client import ControlChannel, FeedTarget, infer_partition
from tfos.feed.node_feed import DataFeed as TfosDataFeed
from tfos.feed.node_feed import FeedServer
from tfos.input_mode import InputMode

pytestmark = pytest.mark.timeout(60)

SECRET = os.urandom(32)

# TensorFlowOnSpark 2.2.5's signatures (tensorflowonspark/TFCluster.py, TFNode.py, TFParallel.py)
TFOS_RUN_PARAMS = ["sc", "map_fun", "tf_args", "num_executors", "num_ps", "tensorboard", "input_mode", "log_dir",
                   "driver_ps_nodes", "master_node", "reservation_timeout", "queues", "eval_node", "release_port"]


# ------------------------------------------------------------------------- driver side


class FakeServer:
    address = "127.0.0.1:40123"


class FakeFacts:
    default_fs = "hdfs://nn:8020"


class FakeConfig:
    num_executors = 3


class RecordingCluster:
    """Stands in for tfos.Cluster: records the calls the compat layer makes."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.config, self.facts, self.server = FakeConfig(), FakeFacts(), FakeServer()
        self.run_id = "abc123"
        self.feed_reports = ["report"]
        self.cluster_info = [
            NodeInfo("ps", 0, "h1", 2222, "7", 11, 0, "running"),
            NodeInfo("chief", 0, "h2", 2223, "8", 12, 6006, "running"),
            NodeInfo("worker", 0, "h3", 2224, "9", 13, 0, "running"),
        ]

    def train(self, data, **kwargs):
        self.calls.append(("train", data, kwargs))
        return "train-report"

    def inference(self, data, **kwargs):
        self.calls.append(("inference", data, kwargs))
        return "results-rdd"

    def shutdown(self, **kwargs):
        self.calls.append(("shutdown", kwargs))

    def tensorboard_url(self):
        return "http://h2:6006"


@pytest.fixture
def recorded(monkeypatch):
    """Replaces tfos.run under tfos.compat.TFCluster; yields the list of its calls."""
    calls: list[tuple] = []

    def fake_run(*args, **kwargs):
        calls.append((args, kwargs))
        return RecordingCluster()

    monkeypatch.setattr(TFCluster, "_tfos_run", fake_run)
    return calls


def test_run_keeps_tensorflowonspark_parameter_names_and_order():
    assert list(inspect.signature(TFCluster.run).parameters)[:len(TFOS_RUN_PARAMS)] == TFOS_RUN_PARAMS
    import tfos

    assert list(inspect.signature(tfos.run).parameters)[:len(TFOS_RUN_PARAMS) - 1] == \
        ["sc", "main_fun"] + TFOS_RUN_PARAMS[2:-1]


def test_run_passes_every_positional_argument_to_tfos_run_in_place(recorded, monkeypatch):
    monkeypatch.setenv("TF_USE_LEGACY_KERAS", "1")  # what importing tfos.compat.TFCluster sets
    fun = object()
    TFCluster.run("sc", fun, ["--x"], 3, 1, True, TFCluster.InputMode.SPARK, "/logs", False, "chief", 30,
                  ["input", "output"], True, False)
    (args, kwargs), = recorded
    assert args == ("sc", fun, ["--x"], 3, 1, True, InputMode.SPARK, "/logs", False, "chief", 30,
                    ["input", "output"], True, False)
    assert kwargs == {"keras": "tf_keras"}  # a TensorFlowOnSpark script is a Keras 2 script


def test_run_defaults_are_tensorflowonspark_s(recorded):
    TFCluster.run("sc", len, None, 2, keras="keras3")
    (args, kwargs), = recorded
    # num_ps=0, tensorboard=False, TENSORFLOW, log_dir=None, no driver ps, master_node=None (all workers),
    # 600 s reservation, the three queues, no evaluator, release_port=True
    assert args == ("sc", len, None, 2, 0, False, InputMode.TENSORFLOW, None, False, None, 600,
                    ("input", "output", "error"), False, True)
    assert kwargs == {"keras": "keras3"}


def test_input_mode_values_are_tensorflowonspark_s():
    assert (TFCluster.InputMode.TENSORFLOW, TFCluster.InputMode.SPARK) == (0, 1)


def test_driver_ps_nodes_is_refused_with_the_fix():
    with pytest.raises(ConfigError) as err:
        TFCluster.run(None, len, None, 2, 1, False, TFCluster.InputMode.TENSORFLOW, None, True)
    assert str(err.value) == ("driver_ps_nodes=True is not supported: tfos runs every node, ps included, on an "
                              "executor; ask Spark for num_ps more executors instead")


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda c: c.shutdown(), {"grace_secs": 0, "timeout": 259200.0, "ssc": None}),
        (lambda c: c.shutdown(None, 5), {"grace_secs": 5, "timeout": 259200.0, "ssc": None}),
        (lambda c: c.shutdown(None, 5, 120), {"grace_secs": 5, "timeout": 120, "ssc": None}),
        (lambda c: c.shutdown(grace_secs=2, timeout=-1), {"grace_secs": 2, "timeout": -1, "ssc": None}),
        (lambda c: c.shutdown("a-streaming-context"), {"grace_secs": 0, "timeout": 259200.0,
                                                       "ssc": "a-streaming-context"}),
    ],
)
def test_shutdown_takes_tensorflowonspark_s_positional_order(recorded, call, expected):
    cluster = TFCluster.run("sc", len, None, 3)
    call(cluster)
    assert cluster.cluster.calls == [("shutdown", expected)]


def test_tfos_shutdown_accepts_what_the_compat_layer_passes():
    params = inspect.signature(TFCluster.Cluster.shutdown).parameters
    assert list(params)[1:3] == ["grace_secs", "timeout"]
    assert params["ssc"].kind is inspect.Parameter.KEYWORD_ONLY


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda c: c.train("rdd"), ("train", "rdd", {"num_epochs": 10, "feed_timeout": 600, "qname": "input"})),
        (lambda c: c.train("rdd", 3, 30, "q2"), ("train", "rdd", {"num_epochs": 3, "feed_timeout": 30, "qname": "q2"})),
        (lambda c: c.inference("rdd"), ("inference", "rdd", {"feed_timeout": 600, "qname": "input"})),
        (lambda c: c.inference("rdd", 5, "q3"), ("inference", "rdd", {"feed_timeout": 5, "qname": "q3"})),
    ],
)
def test_train_and_inference_map_positionally_and_zero_epochs_means_ten(recorded, call, expected):
    cluster = TFCluster.run("sc", len, None, 3, 0, False, TFCluster.InputMode.SPARK)
    call(cluster)
    assert cluster.cluster.calls == [expected]


def test_cluster_info_is_tensorflowonspark_s_dicts_and_meta_is_filled_in(recorded):
    cluster = TFCluster.run("sc", len, None, 3, 1, True, release_port=False)
    assert cluster.cluster_info == [
        {"executor_id": 0, "host": "h1", "job_name": "ps", "task_index": 0, "port": 2222, "tb_port": 0,
         "spark_executor_id": "7"},
        {"executor_id": 1, "host": "h2", "job_name": "chief", "task_index": 0, "port": 2223, "tb_port": 6006,
         "spark_executor_id": "8"},
        {"executor_id": 2, "host": "h3", "job_name": "worker", "task_index": 0, "port": 2224, "tb_port": 0,
         "spark_executor_id": "9"},
    ]
    assert cluster.cluster_meta == {
        "id": "abc123", "cluster_template": {"ps": [0], "chief": [1], "worker": [2]}, "num_executors": 3,
        "default_fs": "hdfs://nn:8020", "working_dir": os.getcwd(), "server_addr": ("127.0.0.1", 40123),
        "release_port": False,
    }
    assert cluster.tensorboard_url() == "http://h2:6006"
    assert (cluster.defaultFS, cluster.num_executors, cluster.input_mode) == ("hdfs://nn:8020", 3, 0)
    assert cluster.feed_reports == ["report"]  # tfos's own views pass through
    with pytest.raises(AttributeError):
        cluster.no_such_thing  # noqa: B018


def test_tfparallel_run_maps_to_parallel_run(monkeypatch):
    seen = []
    monkeypatch.setattr(TFParallel, "parallel_run", lambda *a, **k: seen.append((a, k)) or ["r0", "r1"])
    assert TFParallel.run("sc", len, {"lr": 1}, 2, False, timeout=9) == ["r0", "r1"]
    assert seen == [(("sc", len, {"lr": 1}, 2, False), {"timeout": 9})]
    assert list(inspect.signature(TFParallel.run).parameters)[:5] == \
        ["sc", "map_fn", "tf_args", "num_executors", "use_barrier"]


def test_dfutil_keeps_tensorflowonspark_s_names():
    from tfos import dfutil as tfos_dfutil
    from tfos.compat import dfutil

    assert dfutil.saveAsTFRecords is tfos_dfutil.save_as_tfrecords
    assert dfutil.isLoadedDF is tfos_dfutil.is_loaded_df
    assert dfutil.loadedDF is tfos_dfutil.loadedDF
    assert list(inspect.signature(dfutil.loadTFRecords).parameters)[:3] == ["spark_or_sc", "input_dir",
                                                                           "binary_features"]


def test_importing_tfos_compat_loads_neither_tensorflow_nor_the_pipeline():
    code = ("import sys, tfos.compat; from tfos.compat import TFCluster, TFNode, TFParallel, compat, dfutil; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'tensorflow' or m in "
            "('tfos.pipeline', 'pyspark.ml', 'tfos.compat.pipeline')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50, check=True)
    assert out.stdout.strip() == "[]"


def test_compat_pipeline_is_tfos_pipeline():
    from tfos import pipeline as tfos_pipeline
    from tfos.compat import pipeline

    # the estimator is tfos's, picking tf-keras for its nodes (keras_default.py)
    assert issubclass(pipeline.TFEstimator, tfos_pipeline.TFEstimator)
    assert pipeline.TFModel is tfos_pipeline.TFModel
    with pytest.raises(AttributeError):
        pipeline.NoSuchStage  # noqa: B018


# --------------------------------------------------------------------------- node side


def context(default_fs="file:///", feed=None, job_name="worker") -> NodeContext:
    return NodeContext(job_name=job_name, task_index=0, cluster_spec={"worker": ["127.0.0.1:1"]}, num_workers=1,
                       worker_num=0, executor_id="0", default_fs=default_fs, working_dir="/work/dir", feed=feed)


@pytest.fixture
def feed_server():
    server = FeedServer(socket.create_server(("127.0.0.1", 0)), SECRET, run_id="run-compat", node="worker:0")
    yield server
    TfosDataFeed(server).terminate()
    server.close()


def test_ctx_mgr_is_the_context():
    ctx = context()
    assert ctx.mgr is ctx


def test_datafeed_of_ctx_mgr_is_the_node_s_feed_with_tensorflowonspark_s_arguments(feed_server):
    ctx = context(feed=feed_server)
    feed = TFNode.DataFeed(ctx.mgr, False, "in2", "out2", {"col": "x"})
    assert isinstance(feed, TfosDataFeed)
    assert (feed.train_mode, feed.qname_in, feed.qname_out, feed.input_mapping, feed.node_name) == \
        (False, "in2", "out2", {"col": "x"}, "worker:0")
    assert TFNode.DataFeed(ctx).qname_in == "input"  # the ctx itself works too


def test_datafeed_without_a_spark_feed_says_which_input_mode_it_needs():
    with pytest.raises(FeedError) as err:
        TFNode.DataFeed(context().mgr)
    assert str(err.value) == ("this node has no Spark feed: start the run with input_mode=tfos.InputMode.SPARK "
                              "(ps and evaluator nodes are never fed)")


def test_datafeed_refuses_something_that_is_not_a_context():
    with pytest.raises(ConfigError) as err:
        TFNode.DataFeed(object())
    assert str(err.value) == "TFNode.DataFeed takes ctx.mgr (or ctx) of a tfos node; received: object"


def test_functional_next_batch_and_batch_results_answer_an_inference_partition(feed_server):
    ctx = context(feed=feed_server)
    target = FeedTarget("worker:0", "127.0.0.1", feed_server.port, "0", "run-compat")

    def serve():
        answered = 0
        while answered < 7:
            batch = TFNode.next_batch(ctx.mgr, 3)
            TFNode.batch_results(ctx.mgr, [r * 10 for r in batch])
            answered += len(batch)
        return answered

    node = Background(serve)
    results = list(infer_partition(range(7), target, SECRET, {"qname": "input", "partition": 0},
                                   feed_timeout=10, chunk_records=2))
    assert results == [0, 10, 20, 30, 40, 50, 60]
    assert node.result() == 7
    control = ControlChannel(target, SECRET, "input", feed_timeout=10)
    control.end()
    control.close()
    TFNode.terminate(ctx.mgr)
    assert TFNode.next_batch(ctx.mgr, 3) == []


def test_batch_results_before_next_batch_is_a_feed_error(feed_server):
    with pytest.raises(FeedError) as err:
        TFNode.batch_results(context(feed=feed_server).mgr, [1], "results")
    assert str(err.value) == ("TFNode.batch_results(mgr, results, qname='results') before any TFNode.next_batch "
                              "on this node: take the records first (or use a DataFeed's batch_results)")


@pytest.mark.parametrize(
    ("default_fs", "path", "expected"),
    [
        ("file:///", "data/train", "file:///work/dir/data/train"),
        ("file:///", "/abs/train", "file:///abs/train"),
        ("file:///", "s3a://bucket/x", "s3a://bucket/x"),
        ("hdfs://nn:8020", "/abs/train", "hdfs://nn:8020/abs/train"),
        ("hdfs://nn:8020", "data", f"hdfs://nn:8020/user/{__import__('getpass').getuser()}/data"),
        ("hdfs://nn:8020", "viewfs://other/x", "viewfs://other/x"),
    ],
)
def test_hdfs_path_resolves_as_tensorflowonspark_did(default_fs, path, expected):
    assert TFNode.hdfs_path(context(default_fs), path) == expected


def test_hdfs_path_takes_tensorflowonspark_style_contexts_too():
    mock = type("MockContext", (), {"defaultFS": "viewfs://", "working_dir": "/work/dir"})
    user = __import__("getpass").getuser()
    assert TFNode.hdfs_path(mock, "foo/bar") == f"viewfs:///user/{user}/foo/bar"
    assert TFNode.hdfs_path(mock, "/foo/bar") == "viewfs:///foo/bar"


@pytest.mark.parametrize("call", ["start", "connect"])
def test_a_tfmanager_of_ones_own_is_refused_with_what_to_use(call):
    from tfos.compat import TFManager

    with pytest.raises(ConfigError) as err:
        getattr(TFManager, call)(b"abc", ["input"])
    assert f"TFManager.{call}(...): tfos has no per-executor TFManager: inside main_fun(args, ctx), ctx.mgr is " \
           "the node's context" in str(err.value)


def test_tf1_session_export_is_refused_with_the_tf2_form():
    with pytest.raises(ConfigError) as err:
        TFNode.export_saved_model("sess", "/tmp/x", "serve", {"sig": {}})
    assert str(err.value) == (
        "TFNode.export_saved_model(sess, export_dir, tag_set, signatures) is TensorFlow 1's session export; "
        "on TensorFlow 2 pass a Keras model: export_saved_model(model, export_dir, is_chief)")


def test_release_port_is_a_no_op():
    assert TFNode.release_port(context()) is None


# ------------------------------------------------------------------ compat (TensorFlow)


@pytest.fixture(scope="module")
def keras_model():
    import tensorflow as tf

    model = tf.keras.Sequential([tf.keras.Input(shape=(3,)), tf.keras.layers.Dense(2)])
    model.compile(loss="mse")
    return model


def test_export_saved_model_writes_a_servable_model_only_on_the_chief(keras_model, tmp_path, monkeypatch):
    import tempfile

    import numpy as np
    import tensorflow as tf

    from tfos.compat import compat

    written = []
    real_save = compat._save

    def save(model, target):
        real_save(model, target)
        written.append((target, sorted(os.listdir(target))))

    monkeypatch.setattr(compat, "_save", save)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert compat.export_saved_model(keras_model, str(tmp_path / "worker"), is_chief=False) is None
    assert not (tmp_path / "worker").exists()
    (target, files), = written
    assert os.path.basename(target).startswith("tfos-worker-model-") and "saved_model.pb" in files
    assert not os.path.exists(target)  # the non-chief wrote a full copy, then removed it

    assert compat.export_saved_model(keras_model, str(tmp_path / "chief"), True) == str(tmp_path / "chief")
    x = np.ones((4, 3), np.float32)
    loaded = tf.saved_model.load(str(tmp_path / "chief"))  # kept: its variables die with it
    served = loaded.serve(tf.constant(x)).numpy()
    np.testing.assert_allclose(served, keras_model.predict(x, verbose=0), rtol=1e-5)
    assert compat.keras_flavour(keras_model) == "keras3"


def test_disable_auto_shard_and_gpu_probe():
    import tensorflow as tf

    from tfos.compat import compat

    options = compat.disable_auto_shard(tf.data.Options())
    assert options.experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.OFF
    assert compat.is_gpu_available() == bool(tf.config.list_physical_devices("GPU"))


def test_util_single_node_env_leaves_tfos_s_gpu_choice(monkeypatch):
    from tfos.compat import util

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
    assert util.single_node_env() is None
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    assert util.get_ip_address() == "127.0.0.1"


# ------------------------------------------------------------------ pipeline's args helpers

def test_pipeline_namespace_behaves_as_tensorflowonspark_s_tests_expect():
    from tfos.compat.pipeline import Namespace

    d = {"string": "foo", "integer": 1, "float": 3.14, "array": [1, 2, 3], "map": {"a": 1, "b": 2}}
    for n in (Namespace(d), Namespace(Namespace(d)), Namespace(argparse.Namespace(**d))):
        assert (n.string, n.integer, n.float, n.array, n.map) == ("foo", 1, 3.14, [1, 2, 3], {"a": 1, "b": 2})
        assert "string" in n and "extra" not in n
        assert sorted(n) == sorted(d)
        assert n == Namespace(d) and n != Namespace({"string": "bar"})
    argv = ["--foo", "1", "--bar", "test", "--baz", "3.14"]
    n3 = Namespace(argv)
    assert n3.argv == argv and list(n3) == argv and "--bar" in n3 and n3 == argv
    assert repr(Namespace({"b": 2, "a": 1})) == "Namespace(a=1, b=2)"
    with pytest.raises(ConfigError, match="Namespace takes a dict, a list"):
        Namespace("--foo 1")


def test_tfparams_merges_namespace_args_with_the_params_set():
    from tfos.compat.pipeline import Namespace, TFParams
    from tfos.pipeline import HasBatchSize, HasSteps

    class Foo(TFParams, HasBatchSize, HasSteps):
        def __init__(self, args):
            super().__init__()
            self.args = args

    n = Namespace({"a": 1, "b": 2})
    merged = Foo(n).setBatchSize(10).setSteps(100).merge_args_params()
    assert merged == Namespace({"a": 1, "b": 2, "batch_size": 10, "steps": 100})
    assert n == Namespace({"a": 1, "b": 2})  # args themselves unchanged
