"""Restarting a run from its last checkpoint: ``tfos.run(..., max_restarts=N)``.

A collective cannot go on with a member gone, so a failure anywhere ends the whole
attempt: every node is stopped, then a new cluster (new reservation, new ports, same
secret) starts on the executors and runs ``main_fun`` again with ``ctx.attempt`` one
higher. Resuming is the user's part: a checkpoint (``BackupAndRestore``,
``tf.train.CheckpointManager``) that ``main_fun`` restores when it starts.

In SPARK mode, ``train()`` resumes the feed at the epoch that was interrupted: epochs
that were fed completely are not fed again, the interrupted one is fed from its start.
An attempt that fails after ``train()`` returned (its nodes still training on the data in
their feeds) is restarted by ``shutdown()``, which feeds the new attempt the last epoch of
the last ``train()`` call again before it waits for the nodes.
``inference()`` is not restarted (its RDD is tied to one attempt's nodes).

No wait here is unbounded by accident: a replacement attempt that raises anything ends
``train()``/``shutdown()`` with the restart's failure (the cause chained), and one that does
not form within ``restart_timeout_s`` ends them with :class:`~tfos.errors.ClusterTimeout`.
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
    """The :class:`~tfos.cluster.Cluster` API over a sequence of attempts.

    Args:
        start_attempt: attempt number -> a started Cluster (or raises).
        max_restarts: attempts after the first.
        restart_timeout_s: how long a caller waits for one replacement attempt to start;
            ``None``: as long as ``start_attempt`` takes (it has its own deadlines).
    """

    def __init__(self, start_attempt: Callable[[int], object], max_restarts: int,
                 restart_timeout_s: float | None = None):
        self._start_attempt = start_attempt
        self.max_restarts = max_restarts
        self.restart_timeout_s = restart_timeout_s
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
        #: why restarting ended other than by failures (a start that raised, a caller that gave up)
        self._fatal: BaseException | None = None
        #: while the watcher starts an attempt: how long callers wait for it
        self._starting: Deadline | None = None
        self._watcher: threading.Thread | None = None
        #: (data, feed_timeout, qname) of the last train() call: what a restart in shutdown() feeds
        self._last_train: tuple | None = None

    # ----------------------------------------------------------------- start

    def start(self) -> None:
        cluster = self._first_attempt()
        with self._cond:
            self._current = cluster
        self._watcher = threading.Thread(target=self._watch, name="tfos-restarts", daemon=True)
        self._watcher.start()

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
        """Restart as soon as the current attempt fails, not when the user next calls us.

        Anything raised here ends restarting and is what waiting callers raise (chained),
        so a restart that breaks never leaves them waiting.
        """
        try:
            self._restart_on_failures()
        except BaseException as exc:  # noqa: BLE001 - handed to every waiting caller
            log.error("tfos: restarting attempt %d failed: %s: %s", self._attempt, type(exc).__name__, exc)
            with self._cond:
                self.attempt_failures.append([NodeFailure(
                    "driver", 0, "", "", f"attempt {self._attempt} could not start ({type(exc).__name__}: {exc})")])
                self._fatal = exc
                self._exhausted = True
                self._cond.notify_all()

    def _restart_on_failures(self) -> None:
        while True:
            with self._cond:
                cluster = self._current
                if self._closing or self._exhausted:
                    return
            cluster.state.wait_until(lambda c=cluster: c.state.failed or c.closed, 1.0)
            failures = cluster.state.failures
            if not failures:
                if cluster.closed:  # shut down cleanly: wait for the next attempt or the end
                    with self._cond:
                        self._cond.wait(timeout=1.0)
                continue
            failed_at = time.monotonic()
            try:
                cluster.teardown()  # every node of the attempt stopped, its server closed, before anyone hears
                self._finished_reports += cluster.feed_reports
            finally:  # recorded even when the teardown raises (which then ends restarting)
                restart = self._may_restart(failures)
            if not restart:
                return
            replacement = self._start_replacement()
            if replacement is None:
                return
            with self._cond:
                late = self._closing  # the caller stopped waiting for it (or shut down) meanwhile
                if not late:
                    self.restart_times.append((self._attempt, time.monotonic() - failed_at))
                    self._current = replacement
                    self._cond.notify_all()
            if late:
                log.warning("tfos attempt %d started after the run gave up on it; stopping it", self._attempt)
                replacement.teardown()
                return

    def _start_replacement(self):
        """Start attempts until one forms; ``None`` when restarts run out. Raises what is no tfos error."""
        while True:
            with self._cond:
                self._starting = Deadline(self.restart_timeout_s, f"attempt {self._attempt} to start")
                self._cond.notify_all()
            try:
                return self._start_attempt(self._attempt)
            except TfosError as exc:
                more = exc.failures if isinstance(exc, ClusterFailedError) else [
                    NodeFailure("driver", 0, "", "", f"attempt {self._attempt} did not start: {exc}")]
                if not self._may_restart(more):
                    return None
            finally:
                with self._cond:
                    self._starting = None

    # ------------------------------------------------------------ attempts

    @property
    def attempt(self) -> int:
        """The current attempt (0 before any restart)."""
        return self._attempt

    def _next_cluster(self, failed, deadline: Deadline | None = None):
        """After ``failed`` raised: the replacement attempt, or the final error.

        Blocks until the watcher replaced ``failed`` or gave up, at most until ``deadline``
        or the start deadline of the attempt being started.

        Raises:
            ClusterFailedError: restarts ran out, or the restart itself failed (chained).
            ClusterTimeout: ``deadline`` passed, or the replacement did not start in time.
        """
        with self._cond:
            while self._current is failed:
                if self._fatal is not None:
                    raise self._final_error(self._restart_failure()) from self._fatal
                if self._exhausted:
                    raise self._final_error("after every restart")
                starting = self._starting
                if starting is not None and starting.expired():
                    self._give_up(ClusterTimeout(starting.message(
                        "it has not formed", "the executors may be busy or gone: see the Spark UI, or raise "
                                             "executor_wait_timeout / reservation_timeout")))
                if deadline is not None and deadline.expired():
                    self._give_up(ClusterTimeout(deadline.message("no new attempt started", "raise the timeout")))
                if self._watcher is not None and not self._watcher.is_alive():
                    raise self._final_error("the restart watcher ended without a new attempt")
                slice_s = _POLL_S if starting is None else starting.slice(_POLL_S)
                self._cond.wait(slice_s if deadline is None else deadline.slice(slice_s))
            return self._current

    def _give_up(self, error: ClusterTimeout) -> None:
        """Stop waiting for restarts (held: ``_cond``); a late attempt is torn down by the watcher."""
        self._closing = True
        self._fatal = self._fatal or error
        self._cond.notify_all()
        raise error

    def _restart_failure(self) -> str:
        exc = self._fatal
        if isinstance(exc, ClusterTimeout):
            return f"gave up on restarting: {exc}"
        return f"the restart failed: attempt {self._attempt} could not start ({type(exc).__name__}: {exc})"

    def _final_error(self, context: str) -> ClusterFailedError:
        roots = [failures[0] for failures in self.attempt_failures if failures]
        return ClusterFailedError(roots, f"{context}; {len(self.attempt_failures)} attempt(s), root cause of "
                                         f"each listed in order")

    # ------------------------------------------------------------------ API

    def train(self, data, num_epochs: int = 1, feed_timeout: float = 600, qname: str = "input"):
        """``Cluster.train``; after a restart, feeding goes on from the interrupted epoch."""
        self._last_train = (data, feed_timeout, qname)
        done = 0
        while True:
            cluster = self._current
            before = len(cluster.feed_reports)  # a report of an earlier call is no progress of this one
            try:
                return cluster.train(data, num_epochs - done, feed_timeout, qname)
            except ClusterFailedError:
                reports = cluster.feed_reports[before:]
                done += reports[-1].epochs_fed if reports and reports[-1].qname == qname else 0
                self._next_cluster(cluster)
                log.warning("feed resumes at epoch %d of %d on attempt %d", done + 1, num_epochs, self._attempt)
                if done >= num_epochs:
                    return reports[-1]

    def inference(self, data, feed_timeout: float = 600, qname: str = "input", output_schema=None):
        return self._current.inference(data, feed_timeout, qname, output_schema)

    def shutdown(self, grace_secs: float = 0, timeout: float | None = DEFAULT_SHUTDOWN_TIMEOUT_S, **kwargs) -> None:
        """``Cluster.shutdown`` of the attempt that runs, restarting while restarts remain.

        However it ends (done, out of restarts, a timeout, an interrupt), no attempt starts
        after it: one would run with nobody left to stop it.
        """
        deadline = Deadline(timeout if timeout and timeout > 0 else None, "the run to finish")
        try:
            while True:
                cluster = self._current
                left = deadline.remaining()
                try:
                    self._refeed_last_epoch(cluster)  # a no-op unless this attempt replaced a fed one
                    # an expired deadline passed on as 0 would mean "no limit" to Cluster.shutdown
                    cluster.shutdown(grace_secs, None if left is None else max(left, 0.001), **kwargs)
                    return
                except ClusterFailedError:
                    self._next_cluster(cluster, deadline)
        finally:
            with self._cond:
                self._closing = True
                self._cond.notify_all()

    def _refeed_last_epoch(self, cluster) -> None:
        """An attempt restarted after ``train()`` returned waits for data it will never get:
        feed it the last epoch again, the one its nodes were most likely still training on
        (as ``train()`` resumes at the interrupted epoch)."""
        if self._last_train is None or cluster.feed_reports:
            return
        data, feed_timeout, qname = self._last_train
        log.warning("tfos attempt %d started after train() returned; feeding the last epoch again", self._attempt)
        cluster.train(data, 1, feed_timeout, qname)

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


#: how often a caller waiting for a restart rechecks the watcher and the start deadline
_POLL_S = 0.5
