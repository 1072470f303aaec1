"""Integration fixtures: every test must leave no tfos node process behind."""

from __future__ import annotations

import pytest

from tests.integration.spark_helpers import (
    release_shared_spark,
    shared_spark,
    wait_no_node_processes,
)


@pytest.fixture(autouse=True)
def no_leftovers():
    yield
    assert wait_no_node_processes() == []


@pytest.fixture(scope="session", autouse=True)
def stop_shared_spark():
    yield
    release_shared_spark()


@pytest.fixture(scope="module")
def spark(request):
    """The Spark application of a test module: ``SPARK_EXECUTORS`` executors (default 2),
    with the module's ``SPARK_CONF`` dict added to the conf; shared with the modules before
    and after it that ask for the same (see ``pytest_collection_modifyitems`` in
    tests/conftest.py, which runs those in a row)."""
    executors = getattr(request.module, "SPARK_EXECUTORS", 2)
    return shared_spark(executors, "tfos-test", getattr(request.module, "SPARK_CONF", None))


@pytest.fixture(scope="module")
def sc(spark):
    return spark.sparkContext
