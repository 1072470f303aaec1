"""Integration fixtures: every test must leave no tfos node process behind."""

from __future__ import annotations

import os

import pytest

from tests.connect_server import ConnectServer, connect_session
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


#: the Spark Connect server of the modules that use ``connect_server`` (run in a row: see
#: tests/conftest.py); started by the first, stopped after the last
_connect: dict = {"server": None}


@pytest.fixture
def connect_server() -> ConnectServer:
    """A running Spark Connect server on loopback (local-cluster[2,1,1024]), shared by every
    test that asks for it in a row; started on first use (12-15 s)."""
    if _connect["server"] is None:
        _connect["server"] = ConnectServer(executors=2).start()
    return _connect["server"]


@pytest.fixture
def remote(connect_server):
    """A fresh client session on the shared Connect server, stopped after the test.

    pyspark marks the whole process as Spark Connect once a Connect session exists
    (``SPARK_CONNECT_MODE_ENABLED`` in ``os.environ``, which its builder then prefers over
    any master): put it back as it was, or the classic modules after this one could not
    start their SparkContext.
    """
    had = "SPARK_CONNECT_MODE_ENABLED" in os.environ
    session = connect_session(connect_server.url)
    try:
        yield session
    finally:
        session.stop()
        if not had:
            os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)


def stop_connect_server() -> None:
    server, _connect["server"] = _connect["server"], None
    if server is not None:
        server.stop()
        left = server.group_members()
        assert left == [], f"the Spark Connect server left processes behind: {left}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """Stop the Connect server once no later test needs it (its JVMs hold 3 GB): after the
    test's own fixtures are finalized, since a client session's ``stop()`` needs the server
    (pyspark retries a release against a stopped server for minutes)."""
    try:
        return (yield)
    finally:
        if _connect["server"] is not None and (nextitem is None or "connect_server" not in nextitem.fixturenames):
            stop_connect_server()
