"""The reservation server's state machine, without gRPC.

One instance per run. Every call is idempotent: a retried registration for the
same slot from the same executor replaces nothing and adds no node. All methods
are thread-safe. Nothing is logged and no listener is called while the state's lock is
held: the calls come on gRPC request threads, and a slow log handler (a user's, a log
shipper) would hold every other call (a heartbeat) behind it. The driver (``Cluster``, ``RestartingCluster``) uses the public
surface only: the queries, :meth:`wait_until` and :meth:`notify`; the states and
their moves are drawn in ``states.py``.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tfos.errors import NodeFailure, ReservationError
from tfos.reservation import messages as m
from tfos.reservation.output_relay import OutputRelay
from tfos.reservation.states import NodeState, RunState
from tfos.roles import Role

log = logging.getLogger(__name__)

MAX_HOST_CHARS = 255
#: progress records kept per node
MAX_PROGRESS_RECORDS = 1000
MAX_ID_CHARS = 128


class ProtocolError(ReservationError):
    """A request the server refuses; ``code`` is the gRPC status name to reply with."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class NodeRecord:
    slot: int
    role: Role
    executor_id: str = ""
    host: str = ""
    port: int = 0
    pid: int = 0
    tensorboard_port: int = 0
    feed_port: int = 0
    state: NodeState = NodeState.UNREGISTERED
    last_seen: float = 0.0
    stop_requested: bool = False
    events: list[str] = field(default_factory=list)
    #: progress records the node reported (the last ``MAX_PROGRESS_RECORDS``)
    progress: list[dict] = field(default_factory=list)

    def to_message(self):
        return m.Node(
            slot=self.slot, job_name=self.role.job_name, task_index=self.role.task_index,
            host=self.host, port=self.port, executor_id=self.executor_id, pid=self.pid,
            tensorboard_port=self.tensorboard_port, feed_port=self.feed_port, state=self.state,
        )


class ReservationState:
    """Registrations, roles, node states and failures of one run."""

    def __init__(
        self,
        run_id: str,
        roles: list[Role],
        tensorboard: bool = False,
        log_dir: str = "",
        clock=time.monotonic,
    ):
        self.run_id = run_id
        self.roles = list(roles)
        self.tensorboard = tensorboard
        self.log_dir = log_dir or ""
        self._clock = clock
        self._cond = threading.Condition()  # an RLock: queries may run inside wait_until predicates
        self._nodes = [NodeRecord(slot=i, role=r) for i, r in enumerate(self.roles)]
        self.run_state = RunState.RESERVING  # read-only outside this class; moves in states.RUN_MOVES
        self._failures: list[NodeFailure] = []
        #: failures reported after the run finished: logged, not the run's (states.py)
        self.late_failures: list[NodeFailure] = []
        self._listeners: list = []
        #: node output and progress, to the observers from a thread of its own (output_relay.py)
        self.output = OutputRelay()

    # ----------------------------------------------------------------- node calls

    def register(self, req) -> object:
        node = self._node(req.run_id, req.slot)
        host, executor_id = req.host.strip(), req.executor_id.strip()
        if not host or len(host) > MAX_HOST_CHARS:
            raise ProtocolError("INVALID_ARGUMENT", f"host must be 1..{MAX_HOST_CHARS} characters; received: {req.host!r:.300}")
        if not executor_id or len(executor_id) > MAX_ID_CHARS:
            raise ProtocolError("INVALID_ARGUMENT", f"executor_id must be 1..{MAX_ID_CHARS} characters; received: {req.executor_id!r:.300}")
        for name in ("port", "tensorboard_port", "feed_port"):
            value = getattr(req, name)
            if not (0 <= value <= 65535) or (name == "port" and value == 0):
                raise ProtocolError("INVALID_ARGUMENT", f"{name} must be a TCP port; received: {name}={value}")
        after: list[Callable[[], None]] = []  # logging and listeners, once the lock is released
        try:
            return self._register_locked(node, req, host, executor_id, after)
        finally:
            for call in after:
                call()

    def _register_locked(self, node: NodeRecord, req, host: str, executor_id: str, after: list):
        with self._cond:
            if not self.run_state.accepts_nodes:
                # a Spark retry of a node task after the run ended: tell it to go away
                return m.RegisterReply(run_state=self.run_state, registered=self._registered(), expected=len(self._nodes))
            for other in self._nodes:
                if other.slot != node.slot and other.executor_id == executor_id and other.host == host and other.state.registered:
                    raise ProtocolError(
                        "FAILED_PRECONDITION",
                        f"executor {executor_id} on {host} already runs node {other.role}; a second node "
                        f"(slot {node.slot}) cannot share it: tfos needs one task slot per executor "
                        f"(spark.task.cpus = spark.executor.cores)",
                    )
            same = (node.executor_id, node.host, node.port) == (executor_id, host, req.port)
            if node.state.registered and not same:
                if self.run_state == RunState.READY:
                    reason = (
                        f"slot {node.slot} ({node.role}) registered again from executor {executor_id} on "
                        f"{host} after the cluster had formed with it on executor {node.executor_id} on "
                        f"{node.host}; a retried node task cannot rejoin a running TF cluster"
                    )
                    after.append(self._fail_locked(node, reason))
                    raise ProtocolError("FAILED_PRECONDITION", reason)
                after.append(functools.partial(log.info, "slot %d re-registered from executor %s on %s (retried task)",
                                               node.slot, executor_id, host))
            node.executor_id, node.host, node.port = executor_id, host, req.port
            node.pid, node.tensorboard_port, node.feed_port = req.pid, req.tensorboard_port, req.feed_port
            if not node.state.registered:
                node.state = NodeState.REGISTERED
            node.last_seen = self._clock()
            if self.run_state == RunState.RESERVING and self._registered() == len(self._nodes):
                self._move_locked(RunState.READY)
                after.append(functools.partial(log.info, "all %d nodes registered; cluster formed", len(self._nodes)))
            self._cond.notify_all()
            return m.RegisterReply(run_state=self.run_state, registered=self._registered(), expected=len(self._nodes))

    def await_cluster(self, req):
        self._node(req.run_id, req.slot)
        wait_s = min(max(req.wait_ms, 0), 30_000) / 1000.0
        with self._cond:
            self._cond.wait_for(lambda: self.run_state != RunState.RESERVING, timeout=wait_s)
            ready = self.run_state != RunState.RESERVING
            reply = m.ClusterReply(
                ready=ready and self.run_state == RunState.READY, run_state=self.run_state,
                registered=self._registered(), expected=len(self._nodes),
                tensorboard=self.tensorboard, log_dir=self.log_dir,
            )
            if ready:
                reply.nodes.extend(n.to_message() for n in self._nodes)
            return reply

    def heartbeat(self, req):
        node = self._node(req.run_id, req.slot)
        wait_s = min(max(req.wait_ms, 0), 10_000) / 1000.0

        def stopping() -> bool:
            return node.stop_requested or self.run_state.terminal

        with self._cond:
            node.last_seen = self._clock()
            if req.state in (NodeState.RUNNING, NodeState.SERVING) and node.state == NodeState.REGISTERED:
                node.state = NodeState(req.state)
            if wait_s:
                # long poll: a stop order reaches the node at once, not at its next beat
                self._cond.wait_for(stopping, timeout=wait_s)
                node.last_seen = self._clock()
            return m.HeartbeatReply(stop=stopping(), run_state=self.run_state)

    def report(self, req):
        node = self._node(req.run_id, req.slot)
        if req.event not in m.EVENTS:
            raise ProtocolError("INVALID_ARGUMENT", f"event must be one of {', '.join(m.EVENTS)}; received: {req.event!r:.100}")
        if not 0 <= req.tensorboard_port <= 65535:
            raise ProtocolError("INVALID_ARGUMENT", f"tensorboard_port must be a TCP port; received: tensorboard_port={req.tensorboard_port}")
        after = _nothing  # logging and listeners, once the lock is released
        try:
            with self._cond:
                if not node.state.registered and req.event in (NodeState.RUNNING, NodeState.SERVING, NodeState.DONE):
                    # counting it as registered would form a cluster with no address for this slot
                    raise ProtocolError(
                        "FAILED_PRECONDITION",
                        f"slot {node.slot} ({node.role}) reported {req.event!r} before it registered; register first",
                    )
                node.last_seen = self._clock()
                if req.tensorboard_port:
                    node.tensorboard_port = req.tensorboard_port
                if node.state.terminal:
                    # a retried report, or news after the driver already declared it lost
                    return m.ReportReply(run_state=self.run_state, stop=True)
                event = NodeState(req.event)
                node.events.append(event)
                unasked = (event == NodeState.STOPPED and not node.stop_requested
                           and not self.run_state.terminal)
                if event == NodeState.FAILED or unasked:
                    reason = req.message or ("stopped before it was asked to" if unasked else "failed")
                    after = self._fail_locked(
                        node, reason,
                        exit_code=req.exit_code if req.has_exit_code else None,
                        traceback=req.traceback, output_tail=req.output_tail,
                    )
                    node.state = NodeState.FAILED
                else:
                    node.state = event
                    after = functools.partial(log.debug, "[%s] %s", node.role, event)
                self._cond.notify_all()
                stop = node.stop_requested or self.run_state.terminal
                return m.ReportReply(run_state=self.run_state, stop=stop)
        finally:
            after()

    def observe(self, req):
        """Output lines and progress records: for the driver's log and ``cluster.progress``."""
        node = self._node(req.run_id, req.slot)
        if len(req.lines) > m.MAX_OBSERVE_LINES:
            raise ProtocolError("INVALID_ARGUMENT", f"at most {m.MAX_OBSERVE_LINES} lines per call; "
                                                    f"received: {len(req.lines)}")
        if req.dropped_lines < 0:
            raise ProtocolError("INVALID_ARGUMENT", f"dropped_lines must be >= 0; received: {req.dropped_lines}")
        records = []
        for text in req.progress:
            try:
                record = json.loads(text) if len(text) <= m.MAX_PROGRESS_CHARS else None
            except (ValueError, RecursionError):  # deep nesting fits in the size limit
                record = None
            if not isinstance(record, dict):
                raise ProtocolError("INVALID_ARGUMENT", f"a progress record must be a JSON object of at most "
                                                        f"{m.MAX_PROGRESS_CHARS} characters; received: {text[:80]!r}")
            records.append(record)
        lines = [line[:m.MAX_LINE_CHARS] for line in req.lines]
        with self._cond:
            if not node.state.registered:
                raise ProtocolError("FAILED_PRECONDITION", f"slot {node.slot} sent output before it registered")
            node.last_seen = self._clock()
            node.progress.extend(records)
            del node.progress[:-MAX_PROGRESS_RECORDS]
            run_state = self.run_state
        self.output.put(str(node.role), lines, req.dropped_lines, records)
        return m.ObserveReply(run_state=run_state)

    # ---------------------------------------------------------------- driver side

    def add_observer(self, callback) -> None:
        """``callback(node_name, lines, dropped_lines, progress_records)`` for every Observe call,
        from the relay's thread (never a request thread: a slow callback cannot stall the server)."""
        self.output.add(callback)

    def add_listener(self, callback) -> None:
        """``callback(failure)`` is called (outside the lock) for the first failure of the run."""
        self._listeners.append(callback)

    def fail(self, slot: int | None, reason: str, lost: bool = False, **evidence) -> None:
        """Record a failure the driver observed (``lost``: heartbeat silence; else a Spark task error)."""
        with self._cond:
            node = self._nodes[slot] if slot is not None else None
            after = self._fail_locked(node, reason, **evidence)
            if node is not None and not node.state.terminal:
                node.state = NodeState.LOST if lost else NodeState.FAILED
            self._cond.notify_all()
        after()

    def request_stop(self, predicate) -> list[NodeRecord]:
        """Order the nodes for which ``predicate(node)`` holds to stop; returns them."""
        with self._cond:
            chosen = [n for n in self._nodes if predicate(n)]
            for n in chosen:
                n.stop_requested = True
            if chosen and self.run_state == RunState.READY:
                self._move_locked(RunState.STOPPING)
            self._cond.notify_all()
            return chosen

    def finish(self) -> None:
        """The run is over (the driver tears it down): FINISHED unless it failed; every node is told to stop."""
        with self._cond:
            if not self.run_state.terminal:
                self._move_locked(RunState.FINISHED)
            for n in self._nodes:
                n.stop_requested = True
            self._cond.notify_all()

    def lost_nodes(self, timeout_s: float) -> list[NodeRecord]:
        """Registered, unfinished nodes not heard from for ``timeout_s``."""
        now = self._clock()
        with self._cond:
            return [n for n in self._nodes if n.state.active and now - n.last_seen > timeout_s]

    def declare_lost(self, timeout_s: float) -> list[NodeRecord]:
        """Fail every node :meth:`lost_nodes` names (the driver's heartbeat check); returns them.

        Never blocks beyond the state's lock; a node already declared is not declared again.
        """
        lost = self.lost_nodes(timeout_s)
        for node in lost:
            self.fail(node.slot, f"no heartbeat for {timeout_s:g} s (node process or executor died?)", lost=True)
        return lost

    # ------------------------------------------------------------ queries and waits

    def snapshot(self) -> list[NodeRecord]:
        """A copy of every node's record, in slot order."""
        with self._cond:
            return [NodeRecord(**{k: getattr(n, k) for k in n.__dataclass_fields__}) for n in self._nodes]

    def node(self, slot: int) -> NodeRecord:
        """A copy of one node's record."""
        with self._cond:
            n = self._nodes[slot]
            return NodeRecord(**{k: getattr(n, k) for k in n.__dataclass_fields__})

    def slot_of(self, name: str) -> int | None:
        """The slot of the node named ``name`` (``"worker:1"``), or ``None``."""
        return next((n.slot for n in self._nodes if str(n.role) == name), None)

    def all_nodes(self, predicate) -> bool:
        """Whether ``predicate(record)`` holds for every node (live records: do not keep them)."""
        with self._cond:
            return all(predicate(n) for n in self._nodes)

    @property
    def failures(self) -> list[NodeFailure]:
        """Every failure so far, root cause first (a copy)."""
        with self._cond:
            return list(self._failures)

    @property
    def failed(self) -> bool:
        return bool(self._failures)

    def wait_until(self, predicate, timeout: float | None) -> bool:
        """Block until ``predicate()`` holds (checked under the state's lock at every change
        and every :meth:`notify`), at most ``timeout`` seconds; returns its last value."""
        with self._cond:
            return bool(self._cond.wait_for(predicate, timeout=timeout))

    def notify(self) -> None:
        """Wake every :meth:`wait_until`: something its predicate reads outside the state changed."""
        with self._cond:
            self._cond.notify_all()

    def registered_hosts(self) -> list[str]:
        with self._cond:
            return [f"{n.host} (executor {n.executor_id})" for n in self._nodes if n.state.registered]

    # ------------------------------------------------------------------ internals

    def _registered(self) -> int:
        return sum(1 for n in self._nodes if n.state.registered)

    def _node(self, run_id: str, slot: int) -> NodeRecord:
        if run_id != self.run_id:
            raise ProtocolError(
                "FAILED_PRECONDITION",
                f"request for run {run_id!r:.80} reached the server of run {self.run_id!r} "
                f"(a node task left over from an earlier run?)",
            )
        if not 0 <= slot < len(self._nodes):
            raise ProtocolError(
                "INVALID_ARGUMENT",
                f"slot must be 0..{len(self._nodes) - 1} (this run has {len(self._nodes)} nodes); received: slot={slot}",
            )
        return self._nodes[slot]

    def _move_locked(self, new: RunState) -> None:
        """Move the run to ``new``, a move ``states.RUN_MOVES`` draws (held: ``_cond``)."""
        if not self.run_state.may_become(new):
            raise AssertionError(f"the run cannot go from {self.run_state} to {new} (states.RUN_MOVES)")
        self.run_state = new

    def _fail_locked(self, node: NodeRecord | None, reason: str, exit_code=None, traceback="",
                     output_tail="") -> Callable[[], None]:
        """Record a failure (held: ``_cond``); returns what to do once the lock is released
        (log it; for the run's first failure, call the listeners).

        After FINISHED a failure is not the run's (states.py): it goes to ``late_failures``.
        """
        failure = NodeFailure(
            job_name=node.role.job_name if node else "driver",
            task_index=node.role.task_index if node else 0,
            host=node.host if node else "",
            executor_id=node.executor_id if node else "",
            reason=reason, exit_code=exit_code, traceback=traceback, output_tail=output_tail,
            at=time.time(),
        )
        if self.run_state == RunState.FINISHED:
            self.late_failures.append(failure)
            return functools.partial(log.warning, "node %s failed after the run had finished (the run stays "
                                                  "finished): %s", failure.name, reason)
        first = not self._failures
        self._failures.append(failure)
        if self.run_state != RunState.FAILED:
            self._move_locked(RunState.FAILED)
        if not first:
            return functools.partial(log.info, "node %s failed too: %s", failure.name, reason)
        listeners = list(self._listeners)

        def announce() -> None:
            log.error("node %s failed: %s", failure.name, reason)
            # on a thread of their own: a listener may call back into the state, or be slow
            threading.Thread(
                target=lambda: [cb(failure) for cb in listeners], name="tfos-failure-listeners", daemon=True
            ).start()

        return announce


def _nothing() -> None:
    pass
