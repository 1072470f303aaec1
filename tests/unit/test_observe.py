"""Node output and progress for the driver: the server's checks on Observe, and the
node-side buffer that never blocks and counts what it drops."""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests.unit.reservation_wire import SECRET
from tfos.errors import ReservationError
from tfos.node.observe import Observer
from tfos.reservation import messages as m
from tfos.reservation import output_relay as relay
from tfos.reservation.client import ReservationClient
from tfos.reservation.state import ProtocolError, ReservationState
from tfos.roles import plan_roles


def registered_state():
    state = ReservationState("run", plan_roles(2, 0, "chief", False), False, "")
    for slot in range(2):
        state.register(m.RegisterRequest(run_id="run", slot=slot, executor_id=str(slot), host="127.0.0.1",
                                         port=4000 + slot, pid=10 + slot))
    return state


def test_observed_lines_and_progress_reach_the_observers_tagged_with_the_role():
    state = registered_state()
    seen = []
    state.add_observer(lambda *args: seen.append(args))
    state.observe(m.ObserveRequest(run_id="run", slot=1, lines=["hello", "x" * 5000], dropped_lines=3,
                                   progress=[json.dumps({"epoch": 1})]))
    assert state.output.flush(5)
    (node, lines, dropped, records), = seen
    assert node == "worker:0" and lines[0] == "hello" and len(lines[1]) == m.MAX_LINE_CHARS
    assert dropped == 3 and records == [{"epoch": 1}]
    assert state.snapshot()[1].progress == [{"epoch": 1}]


@pytest.mark.parametrize("request_fields, code", [
    ({"slot": 0, "progress": ["not json"]}, "INVALID_ARGUMENT"),
    ({"slot": 0, "progress": ["[1, 2]"]}, "INVALID_ARGUMENT"),
    ({"slot": 0, "progress": [json.dumps({"k": "v" * m.MAX_PROGRESS_CHARS})]}, "INVALID_ARGUMENT"),
    ({"slot": 0, "lines": ["l"] * (m.MAX_OBSERVE_LINES + 1)}, "INVALID_ARGUMENT"),
    ({"slot": 0, "dropped_lines": -1}, "INVALID_ARGUMENT"),
    ({"slot": 7}, "INVALID_ARGUMENT"),
])
def test_bad_observe_calls_are_refused_and_change_nothing(request_fields, code):
    state = registered_state()
    before = [n.progress[:] for n in state.snapshot()]
    with pytest.raises(ProtocolError) as err:
        state.observe(m.ObserveRequest(run_id="run", **request_fields))
    assert err.value.code == code
    assert [n.progress for n in state.snapshot()] == before


class FakeClient:
    def __init__(self, fail: bool = False):
        self.calls = []
        self.fail = fail

    def observe(self, lines, dropped, progress, timeout_s):
        if self.fail:
            raise ReservationError("server gone")
        self.calls.append((list(lines), dropped, list(progress)))


def test_the_buffer_is_bounded_and_counts_what_it_drops():
    client = FakeClient()
    observer = Observer(client, max_lines=3)
    for i in range(5):
        observer.line(f"line {i}")
    observer.progress({"epoch": 1})
    observer.flush()
    assert client.calls == [(["line 0", "line 1", "line 2"], 2, ['{"epoch": 1}'])]


def test_lines_that_cannot_be_sent_are_counted_not_retried_forever():
    client = FakeClient(fail=True)
    observer = Observer(client)
    observer.line("a")
    observer.flush()  # returns: best effort
    client.fail = False
    observer.line("b")
    observer.flush()
    assert client.calls == [(["b"], 1, [])]


def test_big_backlogs_go_in_several_calls():
    client = FakeClient()
    observer = Observer(client, max_lines=10_000)
    for i in range(m.MAX_OBSERVE_LINES + 10):
        observer.line(str(i))
    observer.flush()
    assert [len(lines) for lines, _, _ in client.calls] == [m.MAX_OBSERVE_LINES, 10]


def test_a_blocked_output_handler_stalls_neither_observe_nor_the_control_plane(server, swappable):
    state = swappable.install(registered_state())
    release = threading.Event()
    seen = []

    def blocked_handler(node, lines, dropped, records):  # a log shipper that hangs
        release.wait(30)
        seen.append((node, len(lines), dropped))

    state.add_observer(blocked_handler)
    calls = relay.MAX_QUEUED_CALLS + 100
    with ReservationClient(server.address, SECRET, "run", 1) as c:
        started = time.monotonic()
        for _ in range(calls):
            c.observe(["line"] * 10, timeout_s=5)
        assert c.heartbeat("running", timeout_s=5).run_state == "ready"
        took = time.monotonic() - started
        # while the handler is stuck, every call was answered, and the overflow was counted, not queued
        assert state.output.dropped_lines >= (calls - relay.MAX_QUEUED_CALLS - 1) * 10
        release.set()
        assert state.output.flush(10)
        c.observe(["after"], timeout_s=5)
        assert state.output.flush(10)
    assert took < 20, f"{calls} Observe calls took {took:.1f} s behind a blocked handler"
    delivered_lines = sum(n for _, n, _ in seen)
    told_dropped = sum(d for _, _, d in seen)
    # nothing vanished: every line was delivered or reported as dropped with a later call
    assert delivered_lines + told_dropped == calls * 10 + 1
    assert seen[-1][0] == "worker:0"
