"""The tfos exception family: one root, one subclass per subsystem.

Callers catch :class:`TfosError` for "anything tfos raised"; the subclasses say
which part failed so a handler can tell a bad argument from a crashed node.

The family, with the subsystem errors defined next to their code::

    TfosError
    ├── ConfigError (ValueError)
    │   ├── SparkPreconditionError
    │   └── SubmitError ............... tfos/submit: a command line that cannot work
    ├── ReservationError
    │   ├── ReservationTimeout (TimeoutError)
    │   ├── AuthenticationError
    │   ├── ProtocolError ............. reservation/state.py: a request the server refuses
    │   └── TLSError .................. reservation/tls.py: certificates that cannot work
    ├── ClusterTimeout (TimeoutError)
    ├── ClusterFailedError ............ the nodes' failures (NodeFailure), root cause first
    │   └── ParallelRunError
    ├── NodeTaskError (RuntimeError) .. raised in a node's Spark task, for the Spark UI
    ├── FeedError
    │   ├── FeedAuthenticationError (AuthenticationError)
    │   ├── FeedTimeout (TimeoutError)
    │   ├── FeedConnectionError ....... a node's feed connection broke (not the data)
    │   ├── ControlChannelError ....... a node's feed did not take a control frame
    │   └── NodeGone .................. feed/client.py: a node closed its feed
    ├── DataError (ValueError)
    ├── StorageError (OSError)
    └── GPUUnavailable ................ compat/gpu_info.py (TensorFlowOnSpark's gpu_info)
"""

from __future__ import annotations

from dataclasses import dataclass


class TfosError(Exception):
    """Root of every error tfos raises on purpose."""


class ConfigError(TfosError, ValueError):
    """An argument or a Spark setting cannot work; the message says how to fix it."""


class SparkPreconditionError(ConfigError):
    """The Spark application cannot host a TF cluster as configured."""


class ReservationError(TfosError):
    """The driver/executor rendezvous failed (refused call, protocol error)."""


class ReservationTimeout(ReservationError, TimeoutError):
    """A rendezvous wait ran out; the message says what arrived and what did not."""


class AuthenticationError(ReservationError):
    """A call did not carry this run's secret."""


class ClusterTimeout(TfosError, TimeoutError):
    """The nodes did not finish within the time the caller allowed."""


class FeedError(TfosError):
    """Feeding Spark data to the TF nodes failed."""


class FeedAuthenticationError(FeedError, AuthenticationError):
    """A feed connection or frame was not signed with this run's secret."""


class FeedTimeout(FeedError, TimeoutError):
    """A feed wait ran out."""


class FeedConnectionError(FeedError):
    """The connection to a node's feed could not be opened or broke mid-partition: the node
    (or the network to it) is in trouble, not the data."""


class ControlChannelError(FeedError):
    """A node's feed did not take a control frame (an epoch's plan, the end of the feed).

    The cluster turns it into the node's failure, so a restart resumes the feed.

    Attributes:
        node: the node's name, ``"worker:0"``.
        closed: the node closed the connection (else it did not answer in time).
    """

    def __init__(self, message: str, node: str, closed: bool):
        super().__init__(message)
        self.node = node
        self.closed = closed


class NodeTaskError(TfosError, RuntimeError):
    """Raised inside a node's Spark task so the Spark UI shows the node failed.

    The driver gets the full story (traceback, output tail) from the reservation
    server; this message is the short version.
    """


class DataError(TfosError, ValueError):
    """Data cannot be converted between Spark and TFRecords (type, null, corrupt file)."""


class StorageError(TfosError, OSError):
    """Cluster storage (HDFS, S3, GCS, ABFS, local) refused or failed an operation; the
    message names the URI (credentials redacted) and what to set."""


@dataclass(frozen=True)
class NodeFailure:
    """What one node reported (or what was observed) when it failed."""

    job_name: str
    task_index: int
    host: str
    executor_id: str
    reason: str
    exit_code: int | None = None
    traceback: str = ""
    output_tail: str = ""
    at: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.job_name}:{self.task_index}"

    def describe(self) -> str:
        exit_part = "" if self.exit_code is None else f", exit code {self.exit_code}"
        if self.job_name == "driver":
            lines = [f"driver: {self.reason}"]
        else:
            where = (f"host {self.host}, executor {self.executor_id}" if self.host
                     else "before it registered")
            lines = [f"node {self.name} ({where}{exit_part}): {self.reason}"]
        if self.traceback:
            lines.append("remote traceback:\n" + self.traceback.rstrip())
        if self.output_tail:
            lines.append("last output lines:\n" + self.output_tail.rstrip())
        return "\n".join(lines)


class ClusterFailedError(TfosError):
    """One or more TF nodes failed; the first failure (the root cause) comes first.

    Attributes:
        failures: every failure seen, in the order they were observed.
    """

    def __init__(self, failures: list[NodeFailure], context: str = ""):
        self.failures = list(failures)
        first = self.failures[0] if self.failures else None
        head = "TF cluster failed"
        if context:
            head += f" ({context})"
        if first is None:
            message = head
        else:
            parts = [f"{head}: {first.describe()}"]
            others = self.failures[1:]
            if others:
                parts.append(f"{len(others)} more node(s) failed after it:")
                parts.extend("  " + f.describe().splitlines()[0] for f in others)
            message = "\n".join(parts)
        super().__init__(message)

    @property
    def root_cause(self) -> NodeFailure | None:
        return self.failures[0] if self.failures else None


class ParallelRunError(ClusterFailedError):
    """One or more instances of ``tfos.parallel_run`` failed; the others ran to the end.

    Attributes:
        failures: the failed instances (``job_name == "instance"``, ``task_index`` = the
            instance index), lowest index first.
        results: every instance's return value in index order; ``None`` for failed ones.
    """

    def __init__(self, failures: list[NodeFailure], results: list, context: str = ""):
        super().__init__(failures, context)
        self.results = list(results)
