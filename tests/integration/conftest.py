"""Integration fixtures: every test must leave no tfos node process behind."""

from __future__ import annotations

import pytest

from tests.integration.spark_helpers import wait_no_node_processes


@pytest.fixture(autouse=True)
def no_leftovers():
    yield
    assert wait_no_node_processes() == []
