"""Three hosts on one machine: nothing in tfos may assume localhost.

The driver (this process) and a standalone master sit on a bridge in the root network
namespace (``10.x.y.1``); two Spark workers run in namespaces of their own (``10.x.y.2``,
``10.x.y.3``) behind veth pairs, with no route anywhere else, not even to the driver's
127.0.0.1. A 2-node tfos run then has to advertise and bind the veth addresses everywhere:
reservation server, cluster spec, TF's gRPC collectives, feed endpoints. See
tests/integration/netns_cluster.py for the network and the daemons.

Skips (with the reason) when not root, without iproute2, or where ``ip netns add`` or a
bridge or veth pair is refused (an unprivileged container).
"""

from __future__ import annotations

import json
import os
import sys

import cloudpickle
import pytest

import tfos
from tests.integration import netns_cluster
from tests.integration.spark_helpers import release_shared_spark, wait_no_node_processes
from tfos.spark.env import wait_for_executors

# ~80 s (three more Spark JVMs): run on demand (python -m pytest -m slow), not in the default run
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def network():
    reason = netns_cluster.unavailable_reason()
    if reason:
        pytest.skip(f"multi-host test needs network namespaces: {reason}")
    try:
        net = netns_cluster.create_network(workers=2)
    except netns_cluster.NetnsUnavailable as exc:
        pytest.skip(f"multi-host test needs network namespaces: {exc}")
    try:
        netns_cluster.check_paths(net)
        yield net
    finally:
        errors = netns_cluster.delete_network(net)
        left = netns_cluster.leftovers(net)
        assert (errors, left) == ([], []), f"test network teardown: {errors}; still there: {left}"


@pytest.fixture(scope="module")
def standalone(network, tmp_path_factory):
    cluster = netns_cluster.StandaloneSpark(network, str(tmp_path_factory.mktemp("standalone")))
    try:
        cluster.launch()  # the spark fixture waits for the workers, after its own JVM work
        yield cluster
    finally:
        notes = cluster.stop()
        assert cluster.pids() == [], f"standalone daemons left processes: {notes}"


@pytest.fixture(scope="module")
def spark(network, standalone):
    """This module's application on the standalone master, with the driver on the bridge.

    First a loopback context is started and stopped in this same process (as earlier test
    modules do, SPARK_LOCAL_IP=127.0.0.1 included), so the test also shows that a new
    SparkContext in a reused JVM gateway advertises the new spark.driver.host.
    """
    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession

    release_shared_spark()  # one SparkContext per process: a kept loopback application must go
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"  # what spark_helpers.start_spark leaves behind
    loopback = SparkContext(conf=SparkConf().setMaster("local[1]").setAppName("tfos-test-multihost-before")
                            .set("spark.driver.host", "127.0.0.1").set("spark.ui.enabled", "false"))
    assert loopback.parallelize([1, 2]).sum() == 3
    loopback.stop()
    standalone.wait_ready(timeout_s=90)

    ip = network.driver_ip
    session = (
        SparkSession.builder.master(standalone.url)
        .appName("tfos-test-multihost")
        .config("spark.driver.host", ip)
        .config("spark.driver.bindAddress", ip)
        .config("spark.cores.max", "2")
        .config("spark.executor.cores", "1")
        .config("spark.task.cpus", "1")
        .config("spark.executor.memory", "1g")
        .config("spark.pyspark.python", sys.executable)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.executorEnv.TF_CPP_MIN_LOG_LEVEL", "2")
        .config("spark.executorEnv.CUDA_VISIBLE_DEVICES", "")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()


def _block_manager_hosts(sc) -> list[str]:
    """Hosts of every block manager, the driver's included, as the driver's JVM knows them."""
    status = sc._jsc.sc().getExecutorMemoryStatus()
    keys = status.keys().iterator()
    hosts = []
    while keys.hasNext():
        hosts.append(keys.next().rsplit(":", 1)[0])
    return sorted(hosts)


# ------------------------------------------------------------------------- node functions


def _train_and_report(out_dir, ctx):
    """MWMS fit of a tiny model: its all-reduces go node to node over the veths."""
    import json as _json
    import os as _os

    import numpy as np
    import psutil
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])
        model.compile(optimizer=tf.keras.optimizers.SGD(0.05), loss="mse")
    rng = np.random.default_rng(ctx.worker_num)  # different data per node: only the all-reduce syncs them
    x = rng.normal(size=(64, 4)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    data = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(16).with_options(options)
    history = model.fit(data, epochs=2, steps_per_epoch=4, verbose=0)
    addresses = sorted(a.address for addrs in psutil.net_if_addrs().values() for a in addrs
                       if a.family == 2)  # AF_INET: what this node's namespace has
    with open(_os.path.join(out_dir, f"{ctx.job_name}-{ctx.task_index}.json"), "w") as f:
        _json.dump({
            "job_name": ctx.job_name, "task_index": ctx.task_index, "host": ctx.host,
            "cluster_spec": ctx.cluster_spec, "tf_config": _json.loads(_os.environ["TF_CONFIG"]),
            "replicas": strategy.num_replicas_in_sync, "epochs": len(history.history["loss"]),
            "weights": [w.tolist() for w in model.get_weights()], "addresses": addresses,
        }, f)


def _count_feed(out_dir, ctx):
    import json as _json
    import os as _os

    feed = ctx.get_data_feed(train_mode=True)
    seen = []
    while not feed.should_stop():
        seen.extend(feed.next_batch(50))
    with open(_os.path.join(out_dir, f"feed-{ctx.job_name}.json"), "w") as f:
        _json.dump({"host": ctx.host, "records": seen}, f)


# ------------------------------------------------------------------------------- tests


def test_a_restarted_spark_context_advertises_the_bridge_address(sc, network):
    ip = network.driver_ip
    assert sc.getConf().get("spark.driver.host") == ip
    assert len(wait_for_executors(sc, 2, timeout_s=60)) == 2  # the executors reached the driver
    assert sc.parallelize(range(4), 4).map(lambda v: v * 2).sum() == 12
    assert _block_manager_hosts(sc) == sorted([ip, *network.worker_ips])


def test_mwms_training_runs_over_the_veth_addresses(sc, network, tmp_path):
    cluster = tfos.run(sc, _train_and_report, str(tmp_path), num_executors=2)
    server_address = cluster.server.address
    cluster.shutdown(timeout=120)

    assert server_address.startswith(f"{network.driver_ip}:")
    reports = {p.stem: json.loads(p.read_text()) for p in sorted(tmp_path.glob("*.json"))}
    assert sorted(reports) == ["chief-0", "worker-0"]
    spec = reports["chief-0"]["cluster_spec"]
    hosts = sorted(address.rsplit(":", 1)[0] for address in spec["chief"] + spec["worker"])
    assert hosts == network.worker_ips  # never 127.0.0.1, never the driver's bridge address
    for name, r in reports.items():
        assert r["cluster_spec"] == spec
        assert r["tf_config"] == {"cluster": spec, "task": {"type": r["job_name"], "index": r["task_index"]}}
        # each node ran inside its worker's namespace and advertised that namespace's address
        assert r["addresses"] == sorted(["127.0.0.1", r["host"]]), name
        assert r["host"] in network.worker_ips
        assert spec[r["job_name"]][r["task_index"]].startswith(f"{r['host']}:")
        assert (r["replicas"], r["epochs"]) == (2, 2)
    assert reports["chief-0"]["host"] != reports["worker-0"]["host"]
    # different data on each node, identical weights after fit: the all-reduces crossed the veths
    assert reports["chief-0"]["weights"] == reports["worker-0"]["weights"]

    info = cluster.cluster_info
    assert [(n.job_name, n.state) for n in info] == [("chief", "done"), ("worker", "done")]
    assert {(n.job_name, n.host) for n in info} == {(r["job_name"], r["host"]) for r in reports.values()}
    assert wait_no_node_processes() == []


def test_spark_feeds_reach_the_nodes_across_namespaces(sc, network, tmp_path):
    cluster = tfos.run(sc, _count_feed, str(tmp_path), num_executors=2, input_mode=tfos.InputMode.SPARK)
    report = cluster.train(sc.parallelize(range(200), 4), num_epochs=1)
    cluster.shutdown(timeout=120)

    fed = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("feed-*.json"))]
    assert sorted(r["host"] for r in fed) == network.worker_ips
    assert sorted(v for r in fed for v in r["records"]) == list(range(200))
    assert sorted(report.records_per_node) == [100, 100]
    assert sorted(n.host for n in cluster.cluster_info) == network.worker_ips
