"""The states of a node and of a run, and the moves between them.

Both are ``str`` enums: the wire (``Node.state``, ``*.run_state``, report events) carries
their values unchanged, and a state compares equal to its string.

A node (one slot of the run)::

    UNREGISTERED --Register--> REGISTERED --report/beat "running"--> RUNNING --"done"--> DONE
                                    |                                 |
                                    +--report/beat "serving"--> SERVING (ps, ctx.serve())
    any state not terminal --"failed", or "stopped" not asked for--> FAILED
    any state not terminal --"stopped" after a stop order-----------> STOPPED
    any registered state not terminal --no heartbeat (driver)-------> LOST

DONE, FAILED, STOPPED and LOST are terminal: later news of the node changes nothing.

A run (``RUN_MOVES``; :meth:`RunState.may_become` refuses every move not drawn here)::

    RESERVING --every slot registered--> READY --stop order (shutdown)--> STOPPING --finish--> FINISHED
        |                                  |                                 |                   ^
        |                                  +--finish (every node had ended)-------------------->|
        +--finish (torn down before it formed: an interrupt, a start that timed out)----------->+
        |                                  |                                 |
        +---------------- a node failed (RESERVING, READY or STOPPING) -----+--> FAILED

FAILED and FINISHED are terminal. FAILED stays FAILED when the run is torn down (the failure
is the run's outcome); a failure that comes after FINISHED (a node declared lost, or a late
"failed" report, while the finished run's nodes are being stopped) is not the run's: it is
logged and kept apart (``ReservationState.late_failures``), and the run stays FINISHED.
"""

from __future__ import annotations

import enum


class _StrState(str, enum.Enum):
    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    def __repr__(self) -> str:
        return repr(self.value)


class NodeState(_StrState):
    UNREGISTERED = "unregistered"
    REGISTERED = "registered"
    RUNNING = "running"
    SERVING = "serving"
    DONE = "done"
    FAILED = "failed"
    STOPPED = "stopped"
    LOST = "lost"

    @property
    def terminal(self) -> bool:
        """The node's process is gone (or given up on): nothing it sends changes the run."""
        return self in _TERMINAL

    @property
    def registered(self) -> bool:
        return self is not NodeState.UNREGISTERED

    @property
    def active(self) -> bool:
        """Registered and not ended: a process the run waits for or must stop."""
        return self.registered and not self.terminal

    @property
    def finished_training(self) -> bool:
        """Out of the training loop: ended, or serving (a ps, ``ctx.serve()``) until stopped."""
        return self.terminal or self is NodeState.SERVING


_TERMINAL = frozenset({NodeState.DONE, NodeState.FAILED, NodeState.STOPPED, NodeState.LOST})
#: what a node may report (``Report.event``); heartbeats carry RUNNING or SERVING
EVENTS = (NodeState.RUNNING, NodeState.SERVING, NodeState.DONE, NodeState.FAILED, NodeState.STOPPED)


class RunState(_StrState):
    RESERVING = "reserving"
    READY = "ready"
    STOPPING = "stopping"
    FAILED = "failed"
    FINISHED = "finished"

    @property
    def accepts_nodes(self) -> bool:
        """Still forming or running: a node task that registers later (a Spark retry) is told to go."""
        return self in (RunState.RESERVING, RunState.READY)

    @property
    def terminal(self) -> bool:
        return not RUN_MOVES[self]

    def may_become(self, new: RunState) -> bool:
        """Whether the diagram above draws the move from this state to ``new``."""
        return new in RUN_MOVES[self]


#: every move a run's state may make (the diagram in the module's docstring)
RUN_MOVES: dict[RunState, frozenset[RunState]] = {
    RunState.RESERVING: frozenset({RunState.READY, RunState.FAILED, RunState.FINISHED}),
    RunState.READY: frozenset({RunState.STOPPING, RunState.FAILED, RunState.FINISHED}),
    RunState.STOPPING: frozenset({RunState.FINISHED, RunState.FAILED}),
    RunState.FAILED: frozenset(),
    RunState.FINISHED: frozenset(),
}
