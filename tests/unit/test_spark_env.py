"""Spark preconditions: each refusal says what it found and what to change."""

from __future__ import annotations

import pytest

from tfos.errors import SparkPreconditionError
from tfos.ports import PortRange
from tfos.spark_env import SparkFacts, _server_port, check_preconditions

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
