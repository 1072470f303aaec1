"""Spark preconditions: each refusal says what it found and what to change."""

from __future__ import annotations

import pytest

from tfos.errors import SparkPreconditionError
from tfos.net import PortRange
from tfos.spark.env import SparkFacts, _server_port, check_preconditions

pytestmark = pytest.mark.timeout(30)


def facts(**overrides) -> SparkFacts:
    base = dict(master="local-cluster[2,1,1024]", executor_cores=1, task_cpus=1, dynamic_allocation=False,
                configured_executors=2, driver_host="127.0.0.1", default_fs="file:///",
                omp_num_threads_set=False)
    base.update(overrides)
    return SparkFacts(**base)


@pytest.mark.parametrize("overrides,num_executors,message", [
    ({"master": "local[*]", "configured_executors": None}, 2,
     "spark.master is 'local[*]': local mode runs every task inside the driver's JVM, but tfos needs 2 "
     "separate executor processes (one TF node each); use --master 'local-cluster[2,1,1024]' on one "
     "machine, or a real cluster"),
    ({"master": "local", "configured_executors": None}, 1,
     "spark.master is 'local': local mode runs every task inside the driver's JVM, but tfos needs 1 "
     "separate executor processes (one TF node each); use --master 'local-cluster[1,1,1024]' on one "
     "machine, or a real cluster"),
    ({"dynamic_allocation": True}, 2,
     "spark.dynamicAllocation.enabled is true: executors could come and go under a running TF cluster; "
     "set spark.dynamicAllocation.enabled=false and spark.executor.instances=2"),
    ({"executor_cores": 4, "task_cpus": 1}, 2,
     "each executor has 4 task slots (spark.executor.cores=4, spark.task.cpus=1), so two TF nodes could "
     "land on one executor; set spark.task.cpus=4 (one slot per executor)"),
    ({}, 3,
     "num_executors=3 but the Spark application is configured for 2 executor(s) (master "
     "local-cluster[2,1,1024]); ask Spark for 3 executors or lower num_executors"),
    ({"master": "spark://m:7077", "configured_executors": 2}, 4,
     "num_executors=4 but the Spark application is configured for 2 executor(s) "
     "(spark.executor.instances); ask Spark for 4 executors or lower num_executors"),
])
def test_unusable_spark_settings_are_refused_with_the_fix(overrides, num_executors, message):
    with pytest.raises(SparkPreconditionError) as err:
        check_preconditions(facts(**overrides), num_executors)
    assert str(err.value) == message


@pytest.mark.parametrize("overrides", [
    {},
    {"executor_cores": 4, "task_cpus": 4},
    {"master": "yarn", "executor_cores": None, "configured_executors": None},
    {"master": "spark://m:7077", "configured_executors": 8},
])
def test_usable_spark_settings_pass(overrides):
    check_preconditions(facts(**overrides), 2)


@pytest.mark.parametrize("value, expected", [
    ("9999", {"server_port": 9999}),
    ("0", {"server_port": 0}),
    ("9997-9999", {"server_port_range": PortRange(9997, 9999)}),
    ("", {}),
])
def test_tfos_server_port_is_a_port_or_a_range(value, expected):
    assert _server_port(value) == expected


@pytest.mark.parametrize("value", ["http", "70000", "9999-9997", "-1", "1-2-3"])
def test_a_bad_tfos_server_port_names_the_value(value):
    with pytest.raises(SparkPreconditionError) as info:
        _server_port(value)
    assert str(info.value) == (
        f"TFOS_SERVER_PORT must be a TCP port (0..65535) or a range FIRST-LAST; received: {value!r}")


# ------------------------------------------------------------------ Spark's own RPC security

class _Conf:
    def __init__(self, values: dict):
        self._values = values

    def get(self, key, default=None):
        return self._values.get(key, default)


class _FakeContext:
    """What read_facts reads: the conf; no JVM (so fs.defaultFS falls back to file:///)."""

    def __init__(self, master: str, **conf):
        self.master = master
        self._conf = _Conf({"spark.master": master, "spark.driver.host": "10.0.0.5", **conf})

    def getConf(self):
        return self._conf


SECURE = {"spark.authenticate": "true", "spark.network.crypto.enabled": "true"}
OPEN_RPC = ("Spark's RPC on yarn is not authenticated (anyone who reaches Spark's ports can run code in this "
            "application) and not encrypted (the run's secret and any storage keys travel in the task closure, "
            "readable on the network); set spark.authenticate=true and spark.network.crypto.enabled=true (on YARN "
            "Spark makes the secret; standalone and Kubernetes also need spark.authenticate.secret), see "
            "docs/security.md")


@pytest.mark.parametrize(("master", "conf", "mode", "tls", "outcome"), [
    ("yarn", {}, "warn", False, "warn"),
    ("yarn", {}, "warn", True, "refuse"),  # tls= asks for a secure run: an open Spark RPC defeats it
    ("yarn", {}, "require", False, "refuse"),
    ("yarn", {}, "ignore", True, "quiet"),
    ("yarn", SECURE, "require", True, "quiet"),
    ("k8s://https://api:6443", {"spark.authenticate": "TRUE", "spark.ssl.rpc.enabled": "true"}, "require", False,
     "quiet"),
    ("spark://m:7077", {"spark.authenticate": "true"}, "require", False, "refuse"),  # authenticated, in clear
    ("spark://m:7077", {"spark.network.crypto.enabled": "true"}, "require", False, "refuse"),
    ("local-cluster[2,1,1024]", {}, "require", True, "quiet"),  # one machine
    ("spark://127.0.0.1:7077", {}, "require", False, "quiet"),
])
def test_spark_rpc_security_is_checked_on_cluster_masters(master, conf, mode, tls, outcome, caplog, monkeypatch):
    from tfos.spark import env as spark_env

    monkeypatch.setattr(spark_env, "_warned_security", set())
    facts = spark_env.read_facts(_FakeContext(master, **conf))
    with caplog.at_level("WARNING", logger="tfos.spark.env"):
        if outcome == "refuse":
            with pytest.raises(SparkPreconditionError) as error:
                spark_env.check_spark_security(facts, mode, tls)
            assert "Refused because" in str(error.value)
        else:
            spark_env.check_spark_security(facts, mode, tls)
            spark_env.check_spark_security(facts, mode, tls)  # a second run warns no more
    warnings = [r.getMessage() for r in caplog.records if r.name == "tfos.spark.env" and "RPC" in r.getMessage()]
    assert len(warnings) == (1 if outcome == "warn" else 0)


def test_the_open_rpc_message_names_both_settings_and_the_way_out(monkeypatch):
    from tfos.spark import env as spark_env

    facts = spark_env.read_facts(_FakeContext("yarn"))
    with pytest.raises(SparkPreconditionError) as error:
        spark_env.check_spark_security(facts, "warn", tls=True)
    assert str(error.value) == (OPEN_RPC + ". Refused because tls= is set; spark_security='ignore' "
                                "(spark.tfos.sparkSecurity=ignore) accepts an isolated network")


def test_spark_security_comes_from_the_spark_conf_and_bad_values_are_refused():
    from tfos.config import RunConfig
    from tfos.errors import ConfigError
    from tfos.spark.conf import run_options

    assert run_options({"spark.tfos.sparkSecurity": " Require "}.get) == {"spark_security": "require"}
    with pytest.raises(ConfigError, match="spark_security must be one of warn, require, ignore; received: "
                                          "spark_security='strict'"):
        RunConfig(num_executors=2, spark_security="strict")


def test_spark_app_takes_a_context_a_classic_or_a_connect_session_and_refuses_the_rest():
    from tfos.errors import ConfigError
    from tfos.spark.app import ClassicApp, ConnectApp, spark_app

    class Context:
        def parallelize(self, *a):
            pass

        def getConf(self):
            pass

    class Session:
        sparkContext = Context()

    class RemoteSession:  # what SparkSession.builder.remote(...) returns
        pass

    RemoteSession.__module__ = "pyspark.sql.connect.session"
    context = Context()
    assert isinstance(spark_app(context), ClassicApp) and spark_app(context).sc is context
    assert spark_app(Session()).sc is Session.sparkContext and not spark_app(Session()).remote
    remote = spark_app(RemoteSession())
    assert isinstance(remote, ConnectApp) and remote.remote
    with pytest.raises(ConfigError, match="takes a SparkContext or a SparkSession .classic or Spark Connect.; "
                                          "received: str"):
        spark_app("local[2]")


@pytest.mark.parametrize(("infos", "driver_host", "executors"), [
    # the driver has a host of its own: it goes wherever the tracker lists it
    ([("10.0.0.1", 7078), ("10.0.0.5", 41000), ("10.0.0.6", 41000)], "10.0.0.1", ["10.0.0.5:41000", "10.0.0.6:41000"]),
    ([("10.0.0.5", 41000), ("10.0.0.6", 41000), ("10.0.0.1", 7078)], "10.0.0.1", ["10.0.0.5:41000", "10.0.0.6:41000"]),
    ([("10.0.0.5", 41000), ("10.0.0.1", 7078), ("10.0.0.6", 41000)], "10.0.0.1", ["10.0.0.5:41000", "10.0.0.6:41000"]),
    # one host for all (local-cluster): the count is exact
    ([("127.0.0.1", 40001), ("127.0.0.1", 40002), ("127.0.0.1", 7078)], "127.0.0.1", ["127.0.0.1:40001", "127.0.0.1:40002"]),
    ([("127.0.0.1", 7078)], "127.0.0.1", []),
    ([], "127.0.0.1", []),
])
def test_the_status_trackers_executor_list_loses_the_driver_wherever_it_is_listed(infos, driver_host, executors):
    from collections import namedtuple

    from tfos.spark.env import _executors_without_the_driver

    info = namedtuple("SparkExecutorInfo", "host port")
    assert _executors_without_the_driver([info(*i) for i in infos], driver_host) == executors
