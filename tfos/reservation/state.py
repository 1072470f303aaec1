"""The reservation server's state machine, without gRPC.

One instance per run. Every call is idempotent: a retried registration for the
same slot from the same executor replaces nothing and adds no node. All methods
are thread-safe; waits use the condition with a deadline.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field

from tfos.errors import NodeFailure, ReservationError
from tfos.reservation import messages as m
from tfos.reservation.output_relay import OutputRelay
from tfos.roles import Role

log = logging.getLogger(__name__)

RESERVING, READY, STOPPING, FAILED, FINISHED = "reserving", "ready", "stopping", "failed", "finished"
TERMINAL_NODE_STATES = ("done", "failed", "stopped", "lost")
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
    state: str = "unregistered"
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
        self.cond = threading.Condition()
        self.nodes = [NodeRecord(slot=i, role=r) for i, r in enumerate(self.roles)]
        self.run_state = RESERVING
        self.failures: list[NodeFailure] = []
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
        with self.cond:
            if self.run_state in (FAILED, STOPPING, FINISHED):
                # a Spark retry of a node task after the run ended: tell it to go away
                return m.RegisterReply(run_state=self.run_state, registered=self._registered(), expected=len(self.nodes))
            for other in self.nodes:
                if other.slot != node.slot and other.executor_id == executor_id and other.host == host and other.state != "unregistered":
                    raise ProtocolError(
                        "FAILED_PRECONDITION",
                        f"executor {executor_id} on {host} already runs node {other.role}; a second node "
                        f"(slot {node.slot}) cannot share it: tfos needs one task slot per executor "
                        f"(spark.task.cpus = spark.executor.cores)",
                    )
            same = (node.executor_id, node.host, node.port) == (executor_id, host, req.port)
            if node.state != "unregistered" and not same:
                if self.run_state == READY:
                    reason = (
                        f"slot {node.slot} ({node.role}) registered again from executor {executor_id} on "
                        f"{host} after the cluster had formed with it on executor {node.executor_id} on "
                        f"{node.host}; a retried node task cannot rejoin a running TF cluster"
                    )
                    self._fail_locked(node, reason)
                    raise ProtocolError("FAILED_PRECONDITION", reason)
                log.info("slot %d re-registered from executor %s on %s (retried task)", node.slot, executor_id, host)
            node.executor_id, node.host, node.port = executor_id, host, req.port
            node.pid, node.tensorboard_port, node.feed_port = req.pid, req.tensorboard_port, req.feed_port
            if node.state == "unregistered":
                node.state = "registered"
            node.last_seen = self._clock()
            if self.run_state == RESERVING and self._registered() == len(self.nodes):
                self.run_state = READY
                log.info("all %d nodes registered; cluster formed", len(self.nodes))
            self.cond.notify_all()
            return m.RegisterReply(run_state=self.run_state, registered=self._registered(), expected=len(self.nodes))

    def await_cluster(self, req):
        self._node(req.run_id, req.slot)
        wait_s = min(max(req.wait_ms, 0), 30_000) / 1000.0
        with self.cond:
            self.cond.wait_for(lambda: self.run_state != RESERVING, timeout=wait_s)
            ready = self.run_state != RESERVING
            reply = m.ClusterReply(
                ready=ready and self.run_state == READY, run_state=self.run_state,
                registered=self._registered(), expected=len(self.nodes),
                tensorboard=self.tensorboard, log_dir=self.log_dir,
            )
            if ready:
                reply.nodes.extend(n.to_message() for n in self.nodes)
            return reply

    def heartbeat(self, req):
        node = self._node(req.run_id, req.slot)
        wait_s = min(max(req.wait_ms, 0), 10_000) / 1000.0

        def stopping() -> bool:
            return node.stop_requested or self.run_state in (FAILED, FINISHED)

        with self.cond:
            node.last_seen = self._clock()
            if req.state in ("running", "serving") and node.state == "registered":
                node.state = req.state
            if wait_s:
                # long poll: a stop order reaches the node at once, not at its next beat
                self.cond.wait_for(stopping, timeout=wait_s)
                node.last_seen = self._clock()
            return m.HeartbeatReply(stop=stopping(), run_state=self.run_state)

    def report(self, req):
        node = self._node(req.run_id, req.slot)
        if req.event not in m.EVENTS:
            raise ProtocolError("INVALID_ARGUMENT", f"event must be one of {', '.join(m.EVENTS)}; received: {req.event!r:.100}")
        if not 0 <= req.tensorboard_port <= 65535:
            raise ProtocolError("INVALID_ARGUMENT", f"tensorboard_port must be a TCP port; received: tensorboard_port={req.tensorboard_port}")
        with self.cond:
            if node.state == "unregistered" and req.event in ("running", "serving", "done"):
                # counting it as registered would form a cluster with no address for this slot
                raise ProtocolError(
                    "FAILED_PRECONDITION",
                    f"slot {node.slot} ({node.role}) reported {req.event!r} before it registered; register first",
                )
            node.last_seen = self._clock()
            if req.tensorboard_port:
                node.tensorboard_port = req.tensorboard_port
            if node.state in TERMINAL_NODE_STATES:
                # a retried report, or news after the driver already declared it lost
                return m.ReportReply(run_state=self.run_state, stop=True)
            node.events.append(req.event)
            if req.event == "failed" or (req.event == "stopped" and not node.stop_requested and self.run_state not in (FAILED, FINISHED)):
                reason = req.message or ("stopped before it was asked to" if req.event == "stopped" else "failed")
                self._fail_locked(
                    node, reason,
                    exit_code=req.exit_code if req.has_exit_code else None,
                    traceback=req.traceback, output_tail=req.output_tail,
                )
                node.state = "failed"
            else:
                node.state = req.event
                log.debug("[%s] %s", node.role, req.event)
            self.cond.notify_all()
            return m.ReportReply(run_state=self.run_state, stop=node.stop_requested or self.run_state in (FAILED, FINISHED))

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
        with self.cond:
            if node.state == "unregistered":
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
        with self.cond:
            node = self.nodes[slot] if slot is not None else None
            self._fail_locked(node, reason, **evidence)
            if node is not None and node.state not in TERMINAL_NODE_STATES:
                node.state = "lost" if lost else "failed"
            self.cond.notify_all()

    def request_stop(self, predicate) -> list[NodeRecord]:
        """Order the nodes for which ``predicate(node)`` holds to stop; returns them."""
        with self.cond:
            chosen = [n for n in self.nodes if predicate(n)]
            for n in chosen:
                n.stop_requested = True
            if chosen and self.run_state == READY:
                self.run_state = STOPPING
            self.cond.notify_all()
            return chosen

    def finish(self) -> None:
        with self.cond:
            if self.run_state != FAILED:
                self.run_state = FINISHED
            for n in self.nodes:
                n.stop_requested = True
            self.cond.notify_all()

    def lost_nodes(self, timeout_s: float) -> list[NodeRecord]:
        """Registered, unfinished nodes not heard from for ``timeout_s``."""
        now = self._clock()
        with self.cond:
            return [
                n for n in self.nodes
                if n.state not in ("unregistered", *TERMINAL_NODE_STATES) and now - n.last_seen > timeout_s
            ]

    def declare_lost(self, timeout_s: float) -> list[NodeRecord]:
        """Fail every node :meth:`lost_nodes` names (the driver's heartbeat check); returns them.

        Never blocks beyond the state's lock; a node already declared is not declared again.
        """
        lost = self.lost_nodes(timeout_s)
        for node in lost:
            self.fail(node.slot, f"no heartbeat for {timeout_s:g} s (node process or executor died?)", lost=True)
        return lost

    def snapshot(self) -> list[NodeRecord]:
        with self.cond:
            return [NodeRecord(**{k: getattr(n, k) for k in n.__dataclass_fields__}) for n in self.nodes]

    def registered_hosts(self) -> list[str]:
        with self.cond:
            return [f"{n.host} (executor {n.executor_id})" for n in self.nodes if n.state != "unregistered"]

    # ------------------------------------------------------------------ internals

    def _registered(self) -> int:
        return sum(1 for n in self.nodes if n.state != "unregistered")

    def _node(self, run_id: str, slot: int) -> NodeRecord:
        if run_id != self.run_id:
            raise ProtocolError(
                "FAILED_PRECONDITION",
                f"request for run {run_id!r:.80} reached the server of run {self.run_id!r} "
                f"(a node task left over from an earlier run?)",
            )
        if not 0 <= slot < len(self.nodes):
            raise ProtocolError(
                "INVALID_ARGUMENT",
                f"slot must be 0..{len(self.nodes) - 1} (this run has {len(self.nodes)} nodes); received: slot={slot}",
            )
        return self.nodes[slot]

    def _fail_locked(self, node: NodeRecord | None, reason: str, exit_code=None, traceback="", output_tail="") -> None:
        failure = NodeFailure(
            job_name=node.role.job_name if node else "driver",
            task_index=node.role.task_index if node else 0,
            host=node.host if node else "",
            executor_id=node.executor_id if node else "",
            reason=reason, exit_code=exit_code, traceback=traceback, output_tail=output_tail,
            at=time.time(),
        )
        first = not self.failures
        self.failures.append(failure)
        self.run_state = FAILED
        if first:
            log.error("node %s failed: %s", failure.name, reason)
            listeners = list(self._listeners)
            # run listeners outside the lock: they may call back into the state
            threading.Thread(
                target=lambda: [cb(failure) for cb in listeners], name="tfos-failure-listeners", daemon=True
            ).start()
