"""ReservationState, the server's state machine, called directly (no gRPC)."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from tfos.errors import NodeFailure
from tfos.reservation import messages as m
from tfos.reservation.state import ProtocolError, ReservationState
from tfos.reservation.states import RUN_MOVES, RunState
from tfos.roles import plan_roles

pytestmark = pytest.mark.timeout(60)

RUN_ID = "run-test-1"


class FakeClock:
    def __init__(self, now: float = 100.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_state(num_executors: int = 3, num_ps: int = 1, clock=time.monotonic, **kw) -> ReservationState:
    return ReservationState(RUN_ID, plan_roles(num_executors, num_ps), clock=clock, **kw)


def reg(slot: int, executor_id: str | None = None, host: str | None = None, port: int | None = None,
        **kw) -> object:
    fields = dict(
        run_id=RUN_ID, slot=slot, executor_id=executor_id or f"exec-{slot}", host=host or f"host-{slot}",
        port=port if port is not None else 4000 + slot, pid=100 + slot,
    )
    fields.update(kw)
    return m.RegisterRequest(**fields)


def register_all(state: ReservationState) -> None:
    for slot in range(len(state.roles)):
        state.register(reg(slot))


def report(slot: int, event: str, **kw) -> object:
    return m.ReportRequest(run_id=RUN_ID, slot=slot, event=event, **kw)


def protocol_error(call, request) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        call(request)
    return info.value


# ------------------------------------------------------------------ registration


def test_retried_registration_adds_no_node():
    state = make_state()
    first = state.register(reg(0))
    again = state.register(reg(0))
    assert (first.registered, again.registered, again.expected) == (1, 1, 3)
    assert again.run_state == "reserving"
    assert [n.state for n in state.snapshot()] == ["registered", "unregistered", "unregistered"]


def test_retried_registration_after_the_cluster_formed_is_accepted():
    state = make_state()
    register_all(state)
    reply = state.register(reg(1))
    assert (reply.run_state, reply.registered, reply.expected) == ("ready", 3, 3)
    assert state.failures == []


def test_reregistration_from_a_new_port_before_ready_replaces_the_old_one():
    state = make_state()
    state.register(reg(0, executor_id="exec-a", host="host-a", port=5000))
    reply = state.register(reg(0, executor_id="exec-b", host="host-b", port=6000, pid=7))
    assert reply.registered == 1
    node = state.snapshot()[0]
    assert (node.executor_id, node.host, node.port, node.pid) == ("exec-b", "host-b", 6000, 7)
    assert state.run_state == "reserving"


def test_reregistration_from_another_executor_after_ready_fails_the_run():
    state = make_state()
    register_all(state)
    err = protocol_error(state.register, reg(2, executor_id="exec-9", host="host-9"))
    reason = (
        "slot 2 (worker:0) registered again from executor exec-9 on host-9 after the cluster had "
        "formed with it on executor exec-2 on host-2; a retried node task cannot rejoin a running TF cluster"
    )
    assert (err.code, str(err)) == ("FAILED_PRECONDITION", reason)
    assert state.run_state == "failed"
    assert [(f.name, f.host, f.executor_id, f.reason) for f in state.failures] == [
        ("worker:0", "host-2", "exec-2", reason)
    ]


def test_two_slots_from_one_executor_are_refused():
    state = make_state()
    state.register(reg(0, executor_id="exec-a", host="host-a"))
    err = protocol_error(state.register, reg(1, executor_id="exec-a", host="host-a"))
    assert err.code == "FAILED_PRECONDITION"
    assert str(err) == (
        "executor exec-a on host-a already runs node ps:0; a second node (slot 1) cannot share it: "
        "tfos needs one task slot per executor (spark.task.cpus = spark.executor.cores)"
    )
    assert [n.state for n in state.snapshot()] == ["registered", "unregistered", "unregistered"]


def test_same_executor_id_on_another_host_is_a_different_executor():
    state = make_state()
    state.register(reg(0, executor_id="1", host="host-a"))
    assert state.register(reg(1, executor_id="1", host="host-b")).registered == 2


def test_last_registration_forms_the_cluster():
    state = make_state()
    replies = [state.register(reg(slot)) for slot in range(3)]
    assert [(r.run_state, r.registered) for r in replies] == [
        ("reserving", 1), ("reserving", 2), ("ready", 3)
    ]


def test_registration_after_the_run_failed_tells_the_task_to_go_away():
    state = make_state()
    state.fail(None, "the Spark job failed")
    reply = state.register(reg(0))
    assert (reply.run_state, reply.registered) == ("failed", 0)


BAD_REQUESTS = [
    # (id, request, code, whole message)
    ("wrong_run", m.RegisterRequest(run_id="run-old", slot=0, executor_id="e", host="h", port=1),
     "FAILED_PRECONDITION",
     "request for run 'run-old' reached the server of run 'run-test-1' "
     "(a node task left over from an earlier run?)"),
    ("slot_too_big", reg(3), "INVALID_ARGUMENT",
     "slot must be 0..2 (this run has 3 nodes); received: slot=3"),
    ("negative_slot", reg(-1), "INVALID_ARGUMENT",
     "slot must be 0..2 (this run has 3 nodes); received: slot=-1"),
    ("blank_host", reg(0, host="   "), "INVALID_ARGUMENT",
     "host must be 1..255 characters; received: '   '"),
    ("host_too_long", reg(0, host="h" * 256), "INVALID_ARGUMENT",
     "host must be 1..255 characters; received: " + repr("h" * 256)),
    ("blank_executor", m.RegisterRequest(run_id=RUN_ID, slot=0, executor_id="", host="h", port=1),
     "INVALID_ARGUMENT", "executor_id must be 1..128 characters; received: ''"),
    ("port_zero", reg(0, port=0), "INVALID_ARGUMENT", "port must be a TCP port; received: port=0"),
    ("port_too_big", reg(0, port=65536), "INVALID_ARGUMENT",
     "port must be a TCP port; received: port=65536"),
    ("negative_port", reg(0, port=-5), "INVALID_ARGUMENT", "port must be a TCP port; received: port=-5"),
    ("negative_feed_port", reg(0, feed_port=-1), "INVALID_ARGUMENT",
     "feed_port must be a TCP port; received: feed_port=-1"),
    ("tensorboard_port_too_big", reg(0, tensorboard_port=70000), "INVALID_ARGUMENT",
     "tensorboard_port must be a TCP port; received: tensorboard_port=70000"),
]


@pytest.mark.parametrize(
    ("request_", "code", "message"), [c[1:] for c in BAD_REQUESTS], ids=[c[0] for c in BAD_REQUESTS]
)
def test_bad_registration_is_refused_with_a_status_and_the_value(request_, code, message):
    state = make_state()
    err = protocol_error(state.register, request_)
    assert (err.code, str(err)) == (code, message)
    assert state.snapshot()[0].state == "unregistered"
    assert state.run_state == "reserving"


def test_huge_host_is_cut_in_the_error_message():
    err = protocol_error(make_state().register, reg(0, host="x" * 100_000))
    assert len(str(err)) < 400


@pytest.mark.parametrize(
    ("method", "request_", "code", "message"),
    [
        ("await_cluster", m.AwaitClusterRequest(run_id="other", slot=0), "FAILED_PRECONDITION",
         "request for run 'other' reached the server of run 'run-test-1' (a node task left over from an earlier run?)"),
        ("heartbeat", m.HeartbeatRequest(run_id=RUN_ID, slot=7), "INVALID_ARGUMENT",
         "slot must be 0..2 (this run has 3 nodes); received: slot=7"),
        ("report", report(0, "exploded"), "INVALID_ARGUMENT",
         "event must be one of running, serving, done, failed, stopped; received: 'exploded'"),
        ("report", report(0, "failed", tensorboard_port=-2), "INVALID_ARGUMENT",
         "tensorboard_port must be a TCP port; received: tensorboard_port=-2"),
        ("report", report(0, "running"), "FAILED_PRECONDITION",
         "slot 0 (ps:0) reported 'running' before it registered; register first"),
        ("report", report(2, "done"), "FAILED_PRECONDITION",
         "slot 2 (worker:0) reported 'done' before it registered; register first"),
    ],
)
def test_bad_node_call_is_refused_with_a_status_and_the_value(method, request_, code, message):
    state = make_state()
    err = protocol_error(getattr(state, method), request_)
    assert (err.code, str(err)) == (code, message)
    assert state.run_state == "reserving"
    assert state.failures == []


def test_progress_reported_before_registering_never_forms_a_cluster_without_an_address():
    state = make_state(num_executors=2, num_ps=0)
    with pytest.raises(ProtocolError):
        state.report(report(0, "running"))
    assert state.register(reg(1)).run_state == "reserving"
    assert state.register(reg(0)).run_state == "ready"
    assert all(n.host and n.port for n in state.snapshot())


def test_failure_reported_before_registering_still_fails_the_run():
    state = make_state()
    state.report(report(1, "failed", message="could not bind a port"))
    assert state.run_state == "failed"
    assert [(f.name, f.reason) for f in state.failures] == [("chief:0", "could not bind a port")]


# ------------------------------------------------------------------ await cluster


def test_await_cluster_gives_every_slot_the_same_ready_cluster():
    state = make_state(num_executors=4, num_ps=1)
    register_all(state)
    replies = [state.await_cluster(m.AwaitClusterRequest(run_id=RUN_ID, slot=s, wait_ms=0)) for s in range(4)]
    assert all(r.ready and r.run_state == "ready" for r in replies)
    assert all((r.registered, r.expected) == (4, 4) for r in replies)
    lists = [[m.Node.SerializeToString(n) for n in r.nodes] for r in replies]
    assert all(lst == lists[0] for lst in lists)
    nodes = replies[0].nodes
    assert [(n.slot, n.job_name, n.task_index, n.host, n.port, n.executor_id) for n in nodes] == [
        (0, "ps", 0, "host-0", 4000, "exec-0"),
        (1, "chief", 0, "host-1", 4001, "exec-1"),
        (2, "worker", 0, "host-2", 4002, "exec-2"),
        (3, "worker", 1, "host-3", 4003, "exec-3"),
    ]


def test_await_cluster_before_everyone_registered_times_out_without_nodes():
    state = make_state()
    state.register(reg(0))
    started = time.monotonic()
    reply = state.await_cluster(m.AwaitClusterRequest(run_id=RUN_ID, slot=0, wait_ms=50))
    assert time.monotonic() - started >= 0.05
    assert (reply.ready, reply.run_state, reply.registered, reply.expected) == (False, "reserving", 1, 3)
    assert len(reply.nodes) == 0


def test_await_cluster_wakes_when_the_last_node_registers():
    state = make_state()
    state.register(reg(0))
    state.register(reg(1))
    threading.Timer(0.1, lambda: state.register(reg(2))).start()
    started = time.monotonic()
    reply = state.await_cluster(m.AwaitClusterRequest(run_id=RUN_ID, slot=0, wait_ms=30_000))
    assert time.monotonic() - started < 15.0
    assert reply.ready and len(reply.nodes) == 3


def test_await_cluster_returns_not_ready_when_the_run_failed_while_waiting():
    state = make_state(tensorboard=True, log_dir="/logs")
    threading.Timer(0.1, lambda: state.fail(None, "the Spark job failed")).start()
    reply = state.await_cluster(m.AwaitClusterRequest(run_id=RUN_ID, slot=0, wait_ms=30_000))
    assert (reply.ready, reply.run_state) == (False, "failed")
    assert (reply.tensorboard, reply.log_dir) == (True, "/logs")


# ------------------------------------------------------------------ heartbeat


def test_heartbeat_long_poll_returns_early_on_a_stop_order():
    state = make_state()
    register_all(state)
    wait_s = 8.0
    threading.Timer(0.2, lambda: state.request_stop(lambda n: n.slot == 0)).start()
    started = time.monotonic()
    reply = state.heartbeat(m.HeartbeatRequest(run_id=RUN_ID, slot=0, state="serving", wait_ms=int(wait_s * 1000)))
    assert time.monotonic() - started < wait_s / 2
    assert reply.stop is True
    assert reply.run_state == "stopping"


def test_heartbeat_wait_is_capped_by_the_server():
    state = make_state()
    register_all(state)
    threading.Timer(0.2, state.finish).start()
    started = time.monotonic()
    reply = state.heartbeat(m.HeartbeatRequest(run_id=RUN_ID, slot=1, state="running", wait_ms=2**31 - 1))
    assert time.monotonic() - started < 10.0 / 2
    assert (reply.stop, reply.run_state) == (True, "finished")


def test_heartbeat_without_wait_answers_at_once_and_moves_the_node_to_running():
    state = make_state()
    register_all(state)
    reply = state.heartbeat(m.HeartbeatRequest(run_id=RUN_ID, slot=1, state="running"))
    assert (reply.stop, reply.run_state) == (False, "ready")
    assert state.snapshot()[1].state == "running"


def test_heartbeat_of_other_nodes_is_not_stopped_by_a_stop_order_for_one():
    state = make_state()
    register_all(state)
    state.request_stop(lambda n: n.role.job_name == "ps")
    reply = state.heartbeat(m.HeartbeatRequest(run_id=RUN_ID, slot=1, state="running", wait_ms=20))
    assert reply.stop is False


# ------------------------------------------------------------------ reports and failures


def test_reported_failure_carries_the_node_and_its_traceback():
    state = make_state()
    register_all(state)
    reply = state.report(report(
        1, "failed", message="ValueError: bad shape", exit_code=1, has_exit_code=True,
        traceback="Traceback (most recent call last):\n  ...\nValueError: bad shape\n", output_tail="epoch 1\n",
    ))
    assert (reply.run_state, reply.stop) == ("failed", True)
    assert state.run_state == "failed"
    [failure] = state.failures
    assert failure == NodeFailure(
        job_name="chief", task_index=0, host="host-1", executor_id="exec-1", reason="ValueError: bad shape",
        exit_code=1, traceback="Traceback (most recent call last):\n  ...\nValueError: bad shape\n",
        output_tail="epoch 1\n", at=failure.at,
    )
    assert state.snapshot()[1].state == "failed"


def test_failure_without_exit_code_keeps_none():
    state = make_state()
    register_all(state)
    state.report(report(2, "failed", exit_code=0, has_exit_code=False))
    assert state.failures[0].exit_code is None
    assert state.failures[0].reason == "failed"


def test_listener_hears_only_the_first_failure():
    state = make_state()
    register_all(state)
    heard: list[NodeFailure] = []
    first_heard = threading.Event()

    def listener(failure: NodeFailure) -> None:
        heard.append(failure)
        first_heard.set()

    state.add_listener(listener)
    state.report(report(1, "failed", message="root cause"))
    state.report(report(2, "failed", message="fallout"))
    assert first_heard.wait(10)
    for thread in threading.enumerate():
        if thread.name == "tfos-failure-listeners":
            thread.join(10)
    assert [f.reason for f in heard] == ["root cause"]
    assert [f.reason for f in state.failures] == ["root cause", "fallout"]


def test_stopping_without_a_stop_order_counts_as_a_failure():
    state = make_state()
    register_all(state)
    state.report(report(0, "serving"))
    reply = state.report(report(0, "stopped", exit_code=0, has_exit_code=True))
    assert reply.run_state == "failed"
    assert [(f.name, f.reason, f.exit_code) for f in state.failures] == [
        ("ps:0", "stopped before it was asked to", 0)
    ]


def test_stopping_after_a_stop_order_is_no_failure():
    state = make_state()
    register_all(state)
    state.report(report(0, "serving"))
    stopped = state.request_stop(lambda n: n.role.job_name == "ps")
    assert [n.slot for n in stopped] == [0]
    reply = state.report(report(0, "stopped"))
    assert (reply.run_state, reply.stop) == ("stopping", True)
    assert state.failures == []
    assert state.snapshot()[0].state == "stopped"


def test_report_after_a_terminal_state_changes_nothing():
    state = make_state()
    register_all(state)
    state.report(report(1, "done"))
    reply = state.report(report(1, "failed", message="late news"))
    assert reply.stop is True
    assert state.failures == []
    assert state.snapshot()[1].events == ["done"]


def test_healthy_node_reports_running_then_done():
    state = make_state()
    register_all(state)
    state.report(report(2, "running"))
    reply = state.report(report(2, "done", exit_code=0, has_exit_code=True))
    assert (reply.run_state, reply.stop) == ("ready", False)
    assert state.snapshot()[2].events == ["running", "done"]
    assert state.failures == []


# ------------------------------------------------------------------ lost nodes


def test_lost_nodes_are_the_registered_unfinished_ones_not_heard_from():
    clock = FakeClock()
    state = make_state(num_executors=4, num_ps=1, clock=clock)
    register_all(state)  # every node last seen at 100
    clock.now = 105.0
    state.heartbeat(m.HeartbeatRequest(run_id=RUN_ID, slot=1, state="running"))
    state.report(report(2, "done"))
    clock.now = 111.0
    assert [n.slot for n in state.lost_nodes(10.0)] == [0, 3]
    assert state.lost_nodes(11.0) == []
    clock.now = 115.5
    assert [n.slot for n in state.lost_nodes(10.0)] == [0, 1, 3]


def test_unregistered_nodes_are_never_lost():
    clock = FakeClock()
    state = make_state(clock=clock)
    state.register(reg(0))
    clock.now = 1e6
    assert [n.slot for n in state.lost_nodes(1.0)] == [0]


def test_driver_declares_a_silent_node_lost():
    state = make_state()
    register_all(state)
    state.fail(2, "no heartbeat for 10 s (node process or executor died?)", lost=True)
    assert state.snapshot()[2].state == "lost"
    assert [(f.name, f.host, f.executor_id) for f in state.failures] == [("worker:0", "host-2", "exec-2")]
    assert 2 not in [n.slot for n in state.lost_nodes(0.0)]


# ------------------------------------------------------------------ the run's moves (states.RUN_MOVES)


def _failed_report(state):
    state.report(report(1, "failed", message="boom"))


#: (from, to) -> how the state's own calls make that move, starting from a fresh 3-node run
DRAWN_MOVES = {
    ("reserving", "ready"): [register_all],
    ("reserving", "failed"): [lambda s: s.register(reg(1)), _failed_report],
    ("reserving", "finished"): [lambda s: s.register(reg(0)), ReservationState.finish],
    ("ready", "stopping"): [register_all, lambda s: s.request_stop(lambda n: n.slot == 0)],
    ("ready", "failed"): [register_all, _failed_report],
    ("ready", "finished"): [register_all, ReservationState.finish],
    ("stopping", "finished"): [register_all, lambda s: s.request_stop(lambda n: n.slot == 0), ReservationState.finish],
    ("stopping", "failed"): [register_all, lambda s: s.request_stop(lambda n: n.slot == 0), _failed_report],
}


def test_every_drawn_move_of_a_run_is_tested():
    drawn = {(str(a), str(b)) for a, moves in RUN_MOVES.items() for b in moves}
    assert drawn == set(DRAWN_MOVES)


@pytest.mark.parametrize("move", sorted(DRAWN_MOVES), ids="->".join)
def test_each_drawn_move_of_a_run_happens(move):
    state = make_state()
    seen = [state.run_state]
    for call in DRAWN_MOVES[move]:
        call(state)
        if state.run_state != seen[-1]:
            seen.append(state.run_state)
    assert tuple(seen[-2:]) == move, seen


def _every_call(state) -> None:
    """Everything that could move a run: a node registering, failing, lost, a stop order, finish."""
    state.register(reg(0, executor_id="exec-new", host="host-new"))
    state.report(report(1, "failed", message="late failure"))
    state.report(report(2, "stopped"))
    state.fail(0, "no heartbeat for 10 s", lost=True)
    state.fail(None, "driver gave up")
    state.request_stop(lambda n: True)
    state.finish()


def test_a_finished_run_never_becomes_failed_and_keeps_late_failures_apart():
    state = make_state()
    register_all(state)
    heard = []
    state.add_listener(heard.append)
    state.report(report(1, "running"))
    state.finish()
    _every_call(state)
    assert state.run_state == "finished"
    assert state.failures == [] and not state.failed
    assert [f.reason for f in state.late_failures] == ["late failure", "no heartbeat for 10 s", "driver gave up"]
    assert [(n.slot, n.state) for n in state.snapshot()] == [(0, "lost"), (1, "failed"), (2, "stopped")]
    time.sleep(0.2)
    assert heard == []  # no listener (a restart watcher) hears of a finished run's late failure
    reply = state.heartbeat(m.HeartbeatRequest(run_id=RUN_ID, slot=1, state="running"))
    assert (reply.stop, reply.run_state) == (True, "finished")


def test_a_failed_run_stays_failed_whatever_comes_next():
    state = make_state()
    register_all(state)
    state.report(report(1, "failed", message="root cause"))
    _every_call(state)
    assert state.run_state == "failed"
    assert state.failures[0].reason == "root cause" and state.late_failures == []


def test_the_state_machine_refuses_a_move_it_does_not_draw():
    state = make_state()
    register_all(state)
    state.finish()
    with pytest.raises(AssertionError, match="cannot go from finished to failed"):
        with state._cond:
            state._move_locked(RunState.FAILED)
    assert state.run_state == "finished"


# ------------------------------------------------------------------ logging outside the lock


class _BlockingHandler(logging.Handler):
    """A log handler that blocks (a stuck log shipper) until released."""

    def __init__(self):
        super().__init__()
        self.entered = threading.Event()
        self.unblock = threading.Event()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())
        self.entered.set()
        self.unblock.wait(30)


@pytest.mark.parametrize("logs", ["a failure", "the cluster forming", "a re-registration"])
def test_a_blocked_log_handler_never_holds_other_calls(logs):
    state = make_state()
    for slot in range(len(state.roles) - 1):
        state.register(reg(slot))
    if logs == "a failure":
        state.register(reg(2))
    logger = logging.getLogger("tfos.reservation.state")
    handler, level = _BlockingHandler(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        call = {
            "a failure": lambda: state.report(report(1, "failed", message="boom")),
            "the cluster forming": lambda: state.register(reg(2)),
            "a re-registration": lambda: state.register(reg(0, executor_id="exec-b", host="host-b")),
        }[logs]
        logging_call = threading.Thread(target=call, daemon=True)
        logging_call.start()
        assert handler.entered.wait(10), "nothing was logged"
        # the logging call is stuck in the handler: every other call still answers at once
        answered = threading.Event()

        def others():
            state.heartbeat(m.HeartbeatRequest(run_id=RUN_ID, slot=0, state="running"))
            state.snapshot()
            state.report(report(0, "running"))
            answered.set()

        threading.Thread(target=others, daemon=True).start()
        assert answered.wait(5), f"a call waited behind the log handler logging {logs}: {handler.messages}"
    finally:
        handler.unblock.set()
        logger.removeHandler(handler)
        logger.setLevel(level)
    logging_call.join(10)
    assert not logging_call.is_alive()
