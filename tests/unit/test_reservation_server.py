"""The reservation server over real gRPC on 127.0.0.1, driven by ReservationClient and raw calls.

One server serves the whole module; each test installs a fresh ReservationState behind it
(``SwappableState``), so tests do not see each other's registrations.
"""

from __future__ import annotations

import logging
import pickle
import re
import socket
import threading
import time

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfos.errors import AuthenticationError, ReservationError, ReservationTimeout
from tfos.node.launch import NodeLaunch
from tfos.reservation import auth
from tfos.reservation import messages as m
from tfos.reservation.client import ReservationClient
from tfos.reservation.server import ReservationServer
from tfos.reservation.state import ReservationState
from tfos.roles import plan_roles

pytestmark = pytest.mark.timeout(60)

RUN_ID = "run-server-test"
SECRET = auth.Secret(auth.new_secret())
#: status codes a well-formed refusal may carry; anything else (UNKNOWN, INTERNAL) means a handler crashed
REFUSALS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION}
REPLY_TYPES = {name: m.message_type(reply) for name, (_req, reply) in m.METHODS.items()}


class SwappableState:
    """Forwards the server's calls to the ReservationState the current test installed."""

    nodes = range(8)  # sizes the server's thread pool

    def __init__(self) -> None:
        self.current: ReservationState | None = None

    def install(self, state: ReservationState) -> ReservationState:
        self.current = state
        return state

    def register(self, req):
        return self.current.register(req)

    def await_cluster(self, req):
        return self.current.await_cluster(req)

    def heartbeat(self, req):
        return self.current.heartbeat(req)

    def report(self, req):
        return self.current.report(req)


@pytest.fixture(scope="module")
def swappable() -> SwappableState:
    return SwappableState()


@pytest.fixture(scope="module")
def server(swappable):
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
def state(swappable, server) -> ReservationState:
    """A fresh 3-node run (ps:0, chief:0, worker:0) behind the module's server."""
    return swappable.install(ReservationState(RUN_ID, plan_roles(3, 1)))


def client(server, slot: int, secret: auth.Secret = SECRET, run_id: str = RUN_ID) -> ReservationClient:
    return ReservationClient(server.address, secret, run_id, slot)


def raw_call(channel, method: str, body: bytes, signed: bool = True, timeout: float = 10.0) -> bytes:
    call = channel.unary_unary(m.method_path(method), request_serializer=None, response_deserializer=None)
    metadata = ((auth.METADATA_KEY, auth.sign(SECRET.value, m.method_path(method), body)),) if signed else None
    return call(body, timeout=timeout, metadata=metadata)


def rpc_error(fn, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn(*args, **kwargs)
    return info.value


SECRET_FORMS = (SECRET.value.hex(), repr(SECRET.value), SECRET.value.decode("latin-1"))


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


# ------------------------------------------------------------------ a healthy run


def test_concurrent_nodes_all_get_the_same_cluster_with_unique_roles(server, state):
    replies = form_cluster(server, 3)
    assert all(r.ready and r.run_state == "ready" for r in replies)
    wire = [[n.SerializeToString() for n in r.nodes] for r in replies]
    assert wire[0] == wire[1] == wire[2]
    nodes = replies[0].nodes
    assert sorted((n.job_name, n.task_index) for n in nodes) == [("chief", 0), ("ps", 0), ("worker", 0)]
    assert len({(n.host, n.port) for n in nodes}) == 3
    assert [(n.slot, n.host, n.port, n.executor_id) for n in nodes] == [
        (s, f"host-{s}", 5000 + s, f"exec-{s}") for s in range(3)
    ]


def test_retried_registration_over_the_wire_adds_no_node(server, state):
    first = register_node(server, 0)
    again = register_node(server, 0)
    assert (first.registered, again.registered, again.expected) == (1, 1, 3)


def test_heartbeat_long_poll_over_the_wire_returns_early_on_stop(server, state):
    form_cluster(server, 3)
    wait_s = 8.0
    threading.Timer(0.2, lambda: state.request_stop(lambda n: n.slot == 1)).start()
    started = time.monotonic()
    with client(server, 1) as c:
        reply = c.heartbeat("running", wait_s=wait_s)
    assert time.monotonic() - started < wait_s / 2
    assert (reply.stop, reply.run_state) == (True, "stopping")


def test_reported_traceback_is_cut_to_its_end_and_still_fits(server, state):
    form_cluster(server, 3)
    traceback = "frame\n" * 100_000 + "ValueError: the root cause\n"
    with client(server, 2) as c:
        reply = c.report("failed", exit_code=1, message="ValueError: the root cause", traceback=traceback)
    assert reply.run_state == "failed"
    [failure] = state.failures
    assert failure.traceback.startswith("[... truncated ...]\n")
    assert failure.traceback.endswith("ValueError: the root cause\n")
    assert len(failure.traceback) <= m.MAX_TEXT_CHARS + 100
    assert (failure.name, failure.exit_code) == ("worker:0", 1)


def test_refusal_reaches_the_client_with_the_servers_words(server, state):
    with client(server, 0, run_id="run-old") as c, pytest.raises(ReservationError) as info:
        c.register(executor_id="e", host="h", port=1, pid=1, timeout_s=10)
    assert type(info.value) is ReservationError
    assert str(info.value) == (
        f"Register refused by {server.address} (FAILED_PRECONDITION): request for run 'run-old' reached "
        f"the server of run '{RUN_ID}' (a node task left over from an earlier run?)"
    )
    assert_no_secret(str(info.value))


# ------------------------------------------------------------------ refused input


def test_wrong_secret_is_refused_and_changes_nothing(server, state, caplog):
    caplog.set_level(logging.DEBUG)
    other = auth.Secret(auth.new_secret())
    with client(server, 0, secret=other) as c, pytest.raises(AuthenticationError) as info:
        c.register(executor_id="exec-0", host="host-0", port=5000, pid=1, timeout_s=10)
    assert str(info.value) == f"Register refused by {server.address}: request not signed with this run's secret"
    assert [n.state for n in state.snapshot()] == ["unregistered"] * 3
    assert state.run_state == "reserving"
    for text in (str(info.value), caplog.text):
        assert_no_secret(text)
        assert other.value.hex() not in text


@pytest.mark.parametrize("method", sorted(m.METHODS))
def test_call_without_signature_is_unauthenticated(server, state, raw_channel, method):
    body = m.message_type(m.METHODS[method][0])(run_id=RUN_ID, slot=0).SerializeToString()
    err = rpc_error(raw_call, raw_channel, method, body, signed=False)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.details() == "request not signed with this run's secret"
    assert state.snapshot()[0].last_seen == 0.0


def test_signature_for_another_method_is_refused(server, state, raw_channel):
    body = reg_body(0)
    call = raw_channel.unary_unary(m.method_path("Register"), request_serializer=None, response_deserializer=None)
    wrong = auth.sign(SECRET.value, m.method_path("Report"), body)
    err = rpc_error(call, body, timeout=10, metadata=((auth.METADATA_KEY, wrong),))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert state.snapshot()[0].state == "unregistered"


@pytest.mark.parametrize("body", [b"\n\x05ab", b"\xff\xff\xff\xff", b"\n\x02\xff\xfe", b"\x07"],
                         ids=["truncated", "bad_tag", "bad_utf8", "bad_wire_type"])
@pytest.mark.parametrize("method", sorted(m.METHODS))
def test_signed_malformed_body_is_invalid_argument_and_the_server_keeps_serving(
    server, state, raw_channel, method, body
):
    err = rpc_error(raw_call, raw_channel, method, body)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith(f"malformed {method} request: Error parsing message")
    assert_no_secret(err.details())
    assert register_node(server, 0).registered == 1


@pytest.mark.parametrize("size", [m.MAX_REQUEST_BYTES + 1, 4 * m.MAX_REQUEST_BYTES])
def test_oversize_body_is_resource_exhausted_and_the_server_keeps_serving(server, state, raw_channel, size):
    body = b"\n" + b"\xff" * (size - 1)
    err = rpc_error(raw_call, raw_channel, "Register", body)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert_no_secret(err.details() or "")
    assert register_node(server, 0).registered == 1


def test_client_of_a_closed_port_times_out_naming_the_address():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    timeout_s = 1.0
    started = time.monotonic()
    with ReservationClient(address, SECRET, RUN_ID, 0) as c, pytest.raises(ReservationTimeout) as info:
        c.register(executor_id="exec-0", host="host-0", port=5000, pid=1, timeout_s=timeout_s)
    assert time.monotonic() - started < timeout_s + 5
    pattern = (
        re.escape("waited 1 s for the reservation server to answer Register; last error UNAVAILABLE: ")
        + ".+"
        + re.escape(f"; is the driver's reservation server at {address} reachable from this host?")
    )
    assert re.fullmatch(pattern, str(info.value), flags=re.DOTALL), str(info.value)
    assert_no_secret(str(info.value))


# ------------------------------------------------------------------ the secret stays hidden


def test_secret_never_shows_in_repr_or_str():
    launch = NodeLaunch(
        run_id=RUN_ID, server_address="127.0.0.1:1", secret=SECRET, input_mode=0,
        tensorboard=False, log_dir="", keras="auto", default_fs="file://", reservation_timeout=60.0,
        heartbeat_interval_s=1.0, heartbeat_timeout_s=10.0, stop_grace_s=3.0, keep_omp_num_threads=False,
    )
    for text in (repr(SECRET), str(SECRET), repr(launch), str(launch), f"{launch}", f"{SECRET!r}"):
        assert_no_secret(text)
    assert repr(SECRET) == str(SECRET) == "Secret(***)"
    assert "secret=Secret(***)" in repr(launch)
    assert pickle.loads(pickle.dumps(SECRET)).value == SECRET.value


# ------------------------------------------------------------------ fuzzing


def reg_body(slot: int) -> bytes:
    return m.RegisterRequest(run_id=RUN_ID, slot=slot, executor_id=f"exec-{slot}", host=f"host-{slot}",
                             port=5000 + slot, pid=1).SerializeToString()


def check_answer(method: str, call) -> None:
    """``call()`` must give a parseable reply or a refusal; never a crash status."""
    try:
        raw = call()
    except grpc.RpcError as err:
        assert err.code() in REFUSALS, (err.code(), err.details())
        assert_no_secret(err.details() or "")
        return
    REPLY_TYPES[method].FromString(raw)


def check_invariants(state: ReservationState) -> None:
    nodes = state.snapshot()
    assert state.run_state in ("reserving", "ready", "stopping", "failed", "finished")
    if state.run_state in ("ready", "stopping"):
        assert all(n.host and 0 < n.port <= 65535 for n in nodes)
    for n in nodes:
        assert 0 <= n.tensorboard_port <= 65535 and 0 <= n.feed_port <= 65535


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=512))
def test_signed_random_bytes_get_an_answer_from_every_method(swappable, server, raw_channel, body):
    state = swappable.install(ReservationState(RUN_ID, plan_roles(3, 1)))
    for method in m.METHODS:
        check_answer(method, lambda method=method: raw_call(raw_channel, method, body))
    check_invariants(state)


INT32 = st.integers(-(2**31), 2**31 - 1)
SLOTS = st.one_of(st.integers(-2, 4), INT32)
PORTS = st.one_of(st.integers(-2, 70000), INT32)
RUN_IDS = st.one_of(st.just(RUN_ID), st.text(max_size=40))
#: long polls stay short: a wrong-but-valid request may be one the server waits on
WAITS = st.one_of(st.integers(-(2**31), 0), st.integers(0, 5))
TEXT = st.text(max_size=300)
EVENTS = st.one_of(st.sampled_from(m.EVENTS), st.text(max_size=20))

REQUESTS = st.one_of(
    st.builds(lambda **f: ("Register", m.RegisterRequest(**f)),
              run_id=RUN_IDS, slot=SLOTS, executor_id=st.one_of(st.sampled_from(["exec-0", "exec-1"]), TEXT),
              host=st.one_of(st.sampled_from(["host-0", "host-1"]), TEXT), port=PORTS, pid=INT32,
              tensorboard_port=PORTS, feed_port=PORTS, task_attempt=INT32),
    st.builds(lambda **f: ("AwaitCluster", m.AwaitClusterRequest(**f)), run_id=RUN_IDS, slot=SLOTS, wait_ms=WAITS),
    st.builds(lambda **f: ("Heartbeat", m.HeartbeatRequest(**f)),
              run_id=RUN_IDS, slot=SLOTS, state=EVENTS, wait_ms=WAITS),
    st.builds(lambda **f: ("Report", m.ReportRequest(**f)),
              run_id=RUN_IDS, slot=SLOTS, event=EVENTS, exit_code=INT32, has_exit_code=st.booleans(),
              message=TEXT, traceback=TEXT, output_tail=TEXT, tensorboard_port=PORTS),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls=st.lists(REQUESTS, min_size=1, max_size=6))
def test_signed_wrong_messages_get_a_reply_or_a_refusal(swappable, server, raw_channel, calls):
    state = swappable.install(ReservationState(RUN_ID, plan_roles(3, 1)))
    for method, request in calls:
        body = request.SerializeToString()
        check_answer(method, lambda method=method, body=body: raw_call(raw_channel, method, body))
        check_invariants(state)


def test_after_fuzzing_a_normal_run_still_forms(swappable, server, raw_channel):
    # the server that took the fuzzing above (module scope) still serves a whole run
    swappable.install(ReservationState(RUN_ID, plan_roles(3, 1)))
    check_answer("Register", lambda: raw_call(raw_channel, "Register", b"\xff" * 64))
    replies = form_cluster(server, 3)
    assert all(r.ready for r in replies)
    assert sorted((n.job_name, n.task_index) for n in replies[0].nodes) == [("chief", 0), ("ps", 0), ("worker", 0)]
