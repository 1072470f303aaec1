"""Restarting a run from its last checkpoint: ``tfos.run(..., max_restarts=N)``.

A collective cannot go on with a member gone, so a failure anywhere ends the whole
attempt: every node is stopped, then a new cluster (new reservation, new ports, same
secret) starts on the executors and runs ``main_fun`` again with ``ctx.attempt`` one
higher. Resuming is the user's part: a checkpoint (``BackupAndRestore``,
``tf.train.CheckpointManager``) that ``main_fun`` restores when it starts.

In SPARK mode, ``train()`` resumes the feed at the epoch that was interrupted: epochs
that were fed completely are not fed again, the interrupted one is fed from its start.
``inference()`` is not restarted (its RDD is tied to one attempt's nodes).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from tfos.config import DEFAULT_SHUTDOWN_TIMEOUT_S
from tfos.deadline import Deadline
from tfos.errors import ClusterFailedError, ClusterTimeout, NodeFailure, TfosError

log = logging.getLogger(__name__)


class RestartingCluster:
    """The :class:`~tfos.cluster.Cluster` API over a sequence of attempts."""

    def __init__(self, start_attempt: Callable[[int], object], max_restarts: int):
        self._start_attempt = start_attempt  # attempt number -> a started Cluster (or raises)
        self.max_restarts = max_restarts
        self._cond = threading.Condition()
        self._current = None
        self._attempt = 0
        self._exhausted = False
        self._closing = False
        #: one entry per failed attempt: its failures, root cause first
        self.attempt_failures: list[list[NodeFailure]] = []
        #: (attempt, seconds from the failure to the new attempt's nodes running)
        self.restart_times: list[tuple[int, float]] = []
        self._finished_reports: list = []

    # ----------------------------------------------------------------- start

    def start(self) -> None:
        cluster = self._first_attempt()
        with self._cond:
            self._current = cluster
        threading.Thread(target=self._watch, name="tfos-restarts", daemon=True).start()

    def _first_attempt(self):
        while True:
            try:
                return self._start_attempt(self._attempt)
            except ClusterFailedError as exc:
                if not self._may_restart(exc.failures):
                    raise self._final_error("while the cluster formed") from exc

    def _may_restart(self, failures: list[NodeFailure]) -> bool:
        """Record an attempt's failure; True when another attempt may start."""
        with self._cond:
            self.attempt_failures.append(list(failures))
            if self._closing or self._attempt >= self.max_restarts:
                self._exhausted = True
                self._cond.notify_all()
                return False
            self._attempt += 1
            log.warning("tfos attempt %d failed (%s); restarting (%d of %d restarts)", self._attempt - 1,
                        failures[0].describe().splitlines()[0] if failures else "?", self._attempt,
                        self.max_restarts)
            return True

    def _watch(self) -> None:
        """Restart as soon as the current attempt fails, not when the user next calls us."""
        while True:
            with self._cond:
                cluster = self._current
                if self._closing or self._exhausted:
                    return
            state = cluster.state
            with state.cond:
                state.cond.wait_for(lambda c=cluster: bool(c.state.failures) or c._closed, timeout=1.0)
                failures = list(state.failures)
            if not failures:
                if cluster._closed:  # shut down cleanly: wait for the next attempt or the end
                    with self._cond:
                        self._cond.wait(timeout=1.0)
                continue
            failed_at = time.monotonic()
            cluster._teardown()  # every node of the attempt stopped, its server closed
            self._finished_reports += cluster.feed_reports
            if not self._may_restart(failures):
                return
            while True:
                try:
                    replacement = self._start_attempt(self._attempt)
                    break
                except TfosError as exc:
                    more = exc.failures if isinstance(exc, ClusterFailedError) else [
                        NodeFailure("driver", 0, "", "", f"attempt {self._attempt} did not start: {exc}")]
                    if not self._may_restart(more):
                        return
            with self._cond:
                self.restart_times.append((self._attempt, time.monotonic() - failed_at))
                self._current = replacement
                self._cond.notify_all()

    # ------------------------------------------------------------ attempts

    @property
    def attempt(self) -> int:
        """The current attempt (0 before any restart)."""
        return self._attempt

    def _next_cluster(self, failed, deadline: Deadline | None = None):
        """After ``failed`` raised: the replacement attempt, or the final error."""
        with self._cond:
            ok = self._cond.wait_for(lambda: self._current is not failed or self._exhausted,
                                     timeout=deadline.remaining() if deadline else None)
            if self._current is not failed:
                return self._current
            if not ok:
                raise ClusterTimeout(deadline.message("no new attempt started", "raise the timeout"))
        raise self._final_error("after every restart")

    def _final_error(self, context: str) -> ClusterFailedError:
        roots = [failures[0] for failures in self.attempt_failures if failures]
        return ClusterFailedError(roots, f"{context}; {len(self.attempt_failures)} attempt(s), root cause of "
                                         f"each listed in order")

    # ------------------------------------------------------------------ API

    def train(self, data, num_epochs: int = 1, feed_timeout: float = 600, qname: str = "input"):
        """``Cluster.train``; after a restart, feeding goes on from the interrupted epoch."""
        done = 0
        while True:
            cluster = self._current
            try:
                return cluster.train(data, num_epochs - done, feed_timeout, qname)
            except ClusterFailedError:
                reports = cluster.feed_reports
                done += reports[-1].epochs_fed if reports and reports[-1].qname == qname else 0
                self._next_cluster(cluster)
                log.warning("feed resumes at epoch %d of %d on attempt %d", done + 1, num_epochs, self._attempt)
                if done >= num_epochs:
                    return reports[-1]

    def inference(self, data, feed_timeout: float = 600, qname: str = "input", output_schema=None):
        return self._current.inference(data, feed_timeout, qname, output_schema)

    def shutdown(self, grace_secs: float = 0, timeout: float | None = DEFAULT_SHUTDOWN_TIMEOUT_S, **kwargs) -> None:
        """``Cluster.shutdown`` of the attempt that runs, restarting while restarts remain."""
        deadline = Deadline(timeout if timeout and timeout > 0 else None, "the run to finish")
        while True:
            cluster = self._current
            try:
                cluster.shutdown(grace_secs, deadline.remaining(), **kwargs)
                with self._cond:
                    self._closing = True
                    self._cond.notify_all()
                return
            except ClusterFailedError:
                self._next_cluster(cluster, deadline)

    @property
    def feed_reports(self) -> list:
        return self._finished_reports + self._current.feed_reports

    @property
    def failures(self) -> list[NodeFailure]:
        """Every failure of every attempt, in order."""
        earlier = [f for failures in self.attempt_failures for f in failures]
        current = self._current.failures if self._current is not None else []
        return earlier + [f for f in current if f not in earlier]

    def __getattr__(self, name):
        # cluster_info, cluster_spec, tensorboard_url, run_id, state...: the current attempt's
        current = self.__dict__.get("_current")
        if current is None:
            raise AttributeError(name)
        return getattr(current, name)

    def __repr__(self) -> str:
        return f"RestartingCluster(attempt={self._attempt}, max_restarts={self.max_restarts}, current={self._current!r})"
