"""Integration fixtures: every test must leave no tfos node process behind."""

from __future__ import annotations

import pytest

from tests.integration.spark_helpers import start_spark, wait_no_node_processes


@pytest.fixture(autouse=True)
def no_leftovers():
    yield
    assert wait_no_node_processes() == []


@pytest.fixture(scope="module")
def spark(request):
    """One Spark application per test module: ``SPARK_EXECUTORS`` executors (default 2),
    with the module's ``SPARK_CONF`` dict added to the conf."""
    executors = getattr(request.module, "SPARK_EXECUTORS", 2)
    session = start_spark(executors, f"tfos-test-{request.module.__name__.rsplit('.', 1)[-1]}",
                          getattr(request.module, "SPARK_CONF", None))
    yield session
    session.stop()


@pytest.fixture(scope="module")
def sc(spark):
    return spark.sparkContext
