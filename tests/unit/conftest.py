"""Unit-test fixtures: a real reservation server on 127.0.0.1, one per test module that asks;
``closing``, which closes a test's sockets and channels when it ends, pass or fail."""

from __future__ import annotations

import grpc
import pytest

from tests.unit.reservation_wire import SECRET, SwappableState


@pytest.fixture(scope="module")
def swappable() -> SwappableState:
    return SwappableState()


@pytest.fixture(scope="module")
def server(swappable):
    """One real server on 127.0.0.1 per test module; tests install their state in ``swappable``."""
    from tfos.reservation.server import ReservationServer

    srv = ReservationServer(swappable, SECRET, "127.0.0.1", max_workers=32)
    srv.start()
    yield srv
    srv.stop(0.2)


@pytest.fixture(scope="module")
def raw_channel(server):
    channel = grpc.insecure_channel(server.address)
    yield channel
    channel.close()


@pytest.fixture
def closing():
    """``closing(a, b, ...)`` has each closed when the test ends, in that order, pass or fail:
    the try/finally every socket test would otherwise repeat."""
    things: list = []
    yield lambda *objects: things.extend(objects)
    for thing in things:
        thing.close()
