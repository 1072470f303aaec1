"""Helpers for tests that drive a real ReservationServer over gRPC on 127.0.0.1.

One server can serve a whole test module (the ``swappable``, ``server`` and ``raw_channel``
fixtures in conftest.py): each test installs a fresh ReservationState behind it
(``SwappableState``), so tests do not see each other's registrations.
"""

from __future__ import annotations

import dataclasses
import threading

import grpc
import pytest

from tfos.reservation import auth
from tfos.reservation import messages as m
from tfos.reservation.client import ReservationClient
from tfos.reservation.state import NodeRecord, ReservationState

RUN_ID = "run-server-test"
SECRET = auth.Secret(auth.new_secret())
#: every form the secret could take in a text
SECRET_FORMS = (SECRET.value.hex(), repr(SECRET.value), SECRET.value.decode("latin-1"))


class SwappableState:
    """Forwards the server's calls to the ReservationState the current test installed."""

    roles = range(8)  # sizes the server's thread pool

    def __init__(self) -> None:
        self.current: ReservationState | None = None

    def install(self, state: ReservationState) -> ReservationState:
        self.current = state
        return state

    def __getattr__(self, name: str):
        # every call the server makes (register, heartbeat, ...) goes to the installed state
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda req: getattr(self.current, name)(req)


def client(server, slot: int, secret: auth.Secret = SECRET, run_id: str = RUN_ID, **kw) -> ReservationClient:
    return ReservationClient(server.address, secret, run_id, slot, **kw)


def raw_call(channel, method: str, body: bytes, signed: bool = True, timeout: float = 10.0, token=None) -> bytes:
    """Call ``method`` with raw ``body``; signed afresh unless ``token`` (or ``signed=False``) says otherwise."""
    call = channel.unary_unary(m.method_path(method), request_serializer=None, response_deserializer=None)
    if token is None and signed:
        token = auth.sign(SECRET.value, m.method_path(method), body)
    metadata = ((auth.METADATA_KEY, token),) if token is not None else None
    return call(body, timeout=timeout, metadata=metadata)


def rpc_error(fn, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn(*args, **kwargs)
    return info.value


def assert_no_secret(text: str) -> None:
    for form in SECRET_FORMS:
        assert form not in text


def register_node(server, slot: int, **kw):
    with client(server, slot) as c:
        return c.register(executor_id=f"exec-{slot}", host=f"host-{slot}", port=5000 + slot, pid=10 + slot,
                          timeout_s=10, **kw)


def form_cluster(server, num_nodes: int) -> list:
    """Register and await ``num_nodes`` slots from concurrent threads; return each slot's ClusterReply."""
    replies: list = [None] * num_nodes
    errors: list[BaseException] = []

    def node(slot: int) -> None:
        try:
            register_node(server, slot)
            with client(server, slot) as c:
                replies[slot] = c.await_cluster(timeout_s=30, poll_s=2)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=node, args=(slot,)) for slot in range(num_nodes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(45)
    assert errors == []
    return replies


_NODE_FIELDS = tuple(f.name for f in dataclasses.fields(NodeRecord))


def state_snapshot(state: ReservationState, skip: tuple[str, ...] = ()) -> tuple:
    """Everything a call could change: run state, failures, every node field but ``skip`` (copies)."""
    names = [f for f in _NODE_FIELDS if f not in skip]
    nodes = tuple(tuple(tuple(v) if isinstance(v, list) else v for v in (getattr(n, f) for f in names))
                  for n in state.snapshot())
    return state.run_state, len(state.failures), nodes
