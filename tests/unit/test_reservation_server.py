"""The reservation server over real gRPC on 127.0.0.1, driven by ReservationClient and raw calls.

One server serves the whole module; each test installs a fresh ReservationState behind it
(``SwappableState``). Generated attacks on the same server are in test_reservation_attack.py.
"""

from __future__ import annotations

import logging
import pickle
import re
import socket
import threading
import time
from concurrent import futures

import grpc
import pytest

from tests.unit.reservation_wire import (
    RUN_ID,
    SECRET,
    assert_no_secret,
    client,
    form_cluster,
    raw_call,
    register_node,
    rpc_error,
)
from tfos.errors import AuthenticationError, ReservationError, ReservationTimeout
from tfos.node.launch import NodeLaunch
from tfos.reservation import auth
from tfos.reservation import messages as m
from tfos.reservation.client import ReservationClient
from tfos.reservation.server import ReservationServer
from tfos.reservation.state import ReservationState
from tfos.roles import plan_roles

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def state(swappable, server) -> ReservationState:
    """A fresh 3-node run (ps:0, chief:0, worker:0) behind the module's server."""
    return swappable.install(ReservationState(RUN_ID, plan_roles(3, 1)))



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
    body = m.RegisterRequest(run_id=RUN_ID, slot=0, executor_id="exec-0", host="host-0", port=5000,
                             pid=1).SerializeToString()
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


def test_client_refuses_an_oversized_request_at_once_not_retrying_it_until_its_deadline(server):
    # RESOURCE_EXHAUSTED is retried when it is the server's concurrency limit (a flood), never
    # for a message over the size limit: that fails the same way every time
    started = time.monotonic()
    with client(server, 0) as c, pytest.raises(ReservationError, match="RESOURCE_EXHAUSTED") as info:
        c.register(executor_id="exec-0", host="h" * m.MAX_REQUEST_BYTES, port=5000, pid=1, timeout_s=30)
    assert time.monotonic() - started < 5, info.value
    assert not isinstance(info.value, ReservationTimeout)


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


def test_secret_never_shows_in_repr_or_str(server):
    launch = NodeLaunch(
        run_id=RUN_ID, server_address="127.0.0.1:1", secret=SECRET, input_mode=0,
        tensorboard=False, log_dir="", keras="auto", default_fs="file://", reservation_timeout=60.0,
        heartbeat_interval_s=1.0, heartbeat_timeout_s=10.0, stop_grace_s=3.0, keep_omp_num_threads=False,
    )
    for text in (repr(SECRET), str(SECRET), repr(launch), str(launch), f"{launch}", f"{SECRET!r}"):
        assert_no_secret(text)
    with client(server, 0) as c:
        holders = [c, server, server._verifier]
        for obj in holders:  # what a debugger, a traceback with locals or a careless log would print
            assert_no_secret(repr(obj) + repr(vars(obj) if hasattr(obj, "__dict__") else ""))
    assert repr(SECRET) == str(SECRET) == "Secret(***)"
    assert "secret=Secret(***)" in repr(launch)
    assert pickle.loads(pickle.dumps(SECRET)).value == SECRET.value


# ------------------------------------------------------------------ signature tokens


class FakeWallClock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_verifier_forgets_nonces_once_their_window_passed():
    clock = FakeWallClock()
    verifier = auth.Verifier(SECRET, window_s=10, clock=clock, monotonic=clock)
    tokens = [auth.sign(SECRET.value, "/m", b"body", now=clock.now) for _ in range(100)]
    assert [verifier.check("/m", b"body", t) for t in tokens] == [None] * 100
    assert verifier.check("/m", b"body", tokens[0]) == auth.REPLAYED
    assert verifier.remembered == 100
    clock.now += 11
    assert verifier.check("/m", b"body", tokens[0]) == (  # its timestamp is refused now
        "request signed 11 s behind the driver's clock (at most 10 s allowed): a replayed request, or the "
        "clocks of the driver and this executor's host disagree (run NTP on both)"
    )
    clock.now += 10  # two windows of steady time: the 100 old nonces go
    fresh_token = auth.sign(SECRET.value, "/m", b"body", now=clock.now)
    assert verifier.check("/m", b"body", fresh_token) is None
    assert verifier.remembered == 1


def test_a_wall_clock_stepped_forward_and_back_does_not_reopen_replays():
    wall, steady = FakeWallClock(), FakeWallClock()
    verifier = auth.Verifier(SECRET, window_s=10, clock=wall, monotonic=steady)
    token = auth.sign(SECRET.value, "/m", b"body", now=wall.now)
    assert verifier.check("/m", b"body", token) is None
    wall.now += 100  # NTP steps the clock forward; a call comes in
    steady.now += 1
    assert verifier.check("/m", b"body", auth.sign(SECRET.value, "/m", b"body", now=wall.now)) is None
    wall.now -= 100  # and back: the old token is inside the window again
    steady.now += 1
    assert verifier.check("/m", b"body", token) == auth.REPLAYED


def test_verifier_accepts_a_clock_skew_inside_the_window():
    clock = FakeWallClock()
    verifier = auth.Verifier(SECRET, window_s=300, clock=clock)
    for skew in (-299, 0, 299):
        assert verifier.check("/m", b"", auth.sign(SECRET.value, "/m", b"", now=clock.now + skew)) is None


def test_client_retry_after_a_lost_reply_is_not_taken_for_a_replay(server, state):
    # the first attempt reaches the server, its reply is lost (deadline), the retry must still pass
    form_cluster(server, 3)
    with client(server, 0) as c:
        calls = c._calls
        real = calls["Heartbeat"]
        attempts = []

        class Lossy:
            @staticmethod
            def with_call(body, timeout, metadata):
                attempts.append(metadata)
                reply = real.with_call(body, timeout=timeout, metadata=metadata)
                if len(attempts) == 1:
                    raise _DeadlineExceeded()
                return reply

        calls["Heartbeat"] = Lossy
        reply = c.heartbeat("running", timeout_s=5)
    assert len(attempts) == 2 and attempts[0] != attempts[1]
    assert reply.run_state == "ready"


class _DeadlineExceeded(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.DEADLINE_EXCEEDED

    def details(self):
        return "Deadline Exceeded"


# ------------------------------------------------------------------ replies are signed


class TamperingProxy:
    """A man in the middle at the gRPC layer: forwards every call (metadata too) to the real
    server and hands back its reply and trailing metadata, after ``tamper(method, reply)``."""

    def __init__(self, upstream: str, tamper):
        self._channel = grpc.insecure_channel(upstream)
        self._tamper = tamper
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        handlers = {name: grpc.unary_unary_rpc_method_handler(self._forwarder(name), request_deserializer=None,
                                                              response_serializer=None)
                    for name in m.METHODS}
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(m.SERVICE, handlers),))
        self.address = f"127.0.0.1:{self._server.add_insecure_port('127.0.0.1:0')}"
        self._server.start()

    def _forwarder(self, name: str):
        upstream = self._channel.unary_unary(m.method_path(name), request_serializer=None, response_deserializer=None)

        def forward(raw: bytes, context):
            metadata = tuple((k, v) for k, v in context.invocation_metadata() if k.startswith("tfos-"))
            reply, call = upstream.with_call(raw, timeout=10, metadata=metadata)
            context.set_trailing_metadata(tuple((k, v) for k, v in call.trailing_metadata() if k.startswith("tfos-")))
            return self._tamper(name, reply)

        return forward

    def close(self) -> None:
        self._server.stop(0).wait(5)
        self._channel.close()


def _stop_order(method: str, reply: bytes) -> bytes:
    if method != "Heartbeat":
        return reply
    message = m.HeartbeatReply.FromString(reply)
    message.stop = True
    return message.SerializeToString()


def _flip_last_byte(method: str, reply: bytes) -> bytes:
    return reply[:-1] + bytes([reply[-1] ^ 0x01]) if reply else b"\x00"


@pytest.mark.parametrize(("tamper", "method"), [(_stop_order, "Heartbeat"), (_flip_last_byte, "AwaitCluster"),
                                                (_flip_last_byte, "Register")])
def test_a_reply_altered_in_transit_is_refused_by_the_node(server, state, tamper, method):
    if method != "Register":
        form_cluster(server, 3)
    proxy = TamperingProxy(server.address, tamper)
    try:
        with ReservationClient(proxy.address, SECRET, RUN_ID, 0) as c, pytest.raises(AuthenticationError) as info:
            {"Heartbeat": lambda: c.heartbeat("running", timeout_s=5),
             "AwaitCluster": lambda: c.await_cluster(timeout_s=5),
             "Register": lambda: c.register(executor_id="exec-0", host="host-0", port=5000, pid=1, timeout_s=5),
             }[method]()
    finally:
        proxy.close()
    assert str(info.value) == (f"{method} reply from {proxy.address} refused: reply not signed with this run's "
                               "secret for this request (altered in transit, or another server answered)")


def test_an_untouched_proxy_passes_and_a_reply_to_another_request_does_not(server, state):
    form_cluster(server, 3)
    recorded: dict[str, bytes] = {}

    def replay_first(method: str, reply: bytes) -> bytes:
        return recorded.setdefault(method, reply)  # every later call gets the first call's reply

    proxy = TamperingProxy(server.address, replay_first)
    try:
        with ReservationClient(proxy.address, SECRET, RUN_ID, 0) as c:
            assert c.heartbeat("running", timeout_s=5).run_state == "ready"  # first: the real reply
            server.state.current.report(m.ReportRequest(run_id=RUN_ID, slot=1, event="failed", message="x"))
            # the real reply now says "failed"; the proxy sends the old "ready" with the new signature
            with pytest.raises(AuthenticationError, match="reply not signed"):
                c.heartbeat("running", timeout_s=5)
    finally:
        proxy.close()


def test_a_flood_of_unauthenticated_calls_writes_a_bounded_number_of_log_lines(server, state, raw_channel, caplog):
    body = m.HeartbeatRequest(run_id=RUN_ID, slot=0).SerializeToString()
    counted = server._refusals.total
    with caplog.at_level(logging.WARNING, logger="tfos.reservation.server"):
        for _ in range(2000):
            rpc_error(raw_call, raw_channel, "Heartbeat", body, signed=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "tfos.reservation.server"]
    # the module's server may have logged a refusal for an earlier test within the interval
    assert len(lines) <= 2, len(lines)
    assert all(line.startswith("refused Heartbeat from ") for line in lines)
    assert server._refusals.total - counted == 2000  # every refusal counted, not logged


def test_a_bind_failure_on_an_ipv6_address_names_it_in_brackets():
    state = ReservationState(RUN_ID, plan_roles(1, 0))
    # documentation prefix (RFC 3849): never an address of this host, so the bind fails
    with pytest.raises(ReservationError) as info:
        ReservationServer(state, SECRET, "2001:db8::7", port=40123)
    assert str(info.value).startswith("could not bind the reservation server to [2001:db8::7]:40123; "), info.value
