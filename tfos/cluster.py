"""The driver side of a run: ``tfos.run`` starts a TF cluster on the executors and
returns a :class:`Cluster` to feed, watch and shut it down.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tfos.config import DEFAULT_SHUTDOWN_TIMEOUT_S, RunConfig
from tfos.deadline import Deadline
from tfos.errors import (
    ClusterFailedError,
    ClusterTimeout,
    ConfigError,
    ControlChannelError,
    FeedError,
    NodeFailure,
    ReservationTimeout,
)
from tfos.input_mode import InputMode
from tfos.net import join_host_port
from tfos.node.launch import NodeLaunch
from tfos.node.task import UNREACHABLE
from tfos.progress import PROGRESS_FLAG, describe, show_node_lines
from tfos.reservation.auth import Secret, new_secret
from tfos.reservation.server import ReservationServer
from tfos.reservation.state import ReservationState
from tfos.reservation.states import NodeState, RunState
from tfos.roles import TRAINING_JOBS, cluster_spec, lead_slot
from tfos.spark.app import spark_app
from tfos.spark.conf import run_options
from tfos.spark.env import (
    SparkFacts,
    check_preconditions,
    check_slots_per_executor,
    check_spark_security,
    read_facts,
    wait_for_executors,
)
from tfos.spark.jobs import (
    JobOutcome,
    error_text,
    failed_partition,
    first_line,
    task_error,
)
from tfos.storage.credentials import session_storage_env, storage_environ
from tfos.user_code import pack_main_fun

log = logging.getLogger(__name__)
#: the nodes' output lines and progress, tagged ``[chief:0]``
node_log = logging.getLogger("tfos.nodes")  # progress.NODE_LOGGER


@dataclass(frozen=True)
class NodeInfo:
    """One node of the cluster, as the driver knows it."""

    job_name: str
    task_index: int
    host: str
    port: int
    executor_id: str
    pid: int
    tensorboard_port: int
    state: NodeState

    @property
    def address(self) -> str:
        return join_host_port(self.host, self.port)


def run(
    sc,
    main_fun: Callable[[Any, Any], Any],
    tf_args: Any = None,
    num_executors: int | None = None,
    num_ps: int = 0,
    tensorboard: bool = False,
    input_mode: InputMode = InputMode.TENSORFLOW,
    log_dir: str | None = None,
    driver_ps_nodes: bool = False,
    master_node: str | None = "chief",
    reservation_timeout: float = 600,
    queues: Any = None,
    eval_node: bool = False,
    release_port: bool = True,
    **options: Any,
) -> Cluster:
    """Start a TF cluster: one node per executor, each running ``main_fun(tf_args, ctx)``.

    ``sc`` is the application's ``SparkContext`` (TensorFlowOnSpark's argument) or its
    classic ``SparkSession``.

    Blocks until every node registered and got its role (TENSORFLOW mode), or until every
    TF process runs (SPARK mode). Parameter names are TensorFlowOnSpark's; ``queues`` is accepted
    for porting and has no effect; ``release_port=False`` keeps each node's TF port held
    into ``main_fun`` until ``ctx.release_port()``. Extra keyword options
    are :class:`~tfos.config.RunConfig` fields (``keras``, ``env``, ``executor_wait_timeout``,
    ``heartbeat_timeout_s``...).

    Returns:
        A started :class:`Cluster`.

    Raises:
        ConfigError: bad arguments, or a Spark setting under which no cluster can form.
        ReservationTimeout: the nodes did not all register within ``reservation_timeout``.
        ClusterFailedError: a node failed while the cluster formed.
    """
    if driver_ps_nodes:
        raise ConfigError(
            "driver_ps_nodes=True is not supported: tfos runs every node, ps included, on an "
            "executor; ask Spark for num_ps more executors instead"
        )
    app = spark_app(sc)
    facts = read_facts(app)
    submitted = run_options(app.get)  # spark.tfos.* (tfos submit, spark-defaults.conf)
    if num_executors is None:
        num_executors = submitted.get("num_executors", facts.configured_executors)
        if num_executors is None:
            raise ConfigError("num_executors is required when spark.executor.instances is not set")
    options = {**{k: v for k, v in submitted.items() if k != "num_executors"}, **options}
    unknown = set(options) - set(RunConfig.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"unknown option(s) for tfos.run: {', '.join(sorted(unknown))}")
    config = RunConfig(
        num_executors=num_executors, num_ps=num_ps, tensorboard=tensorboard, input_mode=input_mode,
        log_dir=log_dir, master_node=master_node, eval_node=eval_node,
        reservation_timeout=reservation_timeout, release_port=release_port, **options,
    )
    payload = pack_main_fun(main_fun, tf_args)  # before anything starts: a closure that cannot travel fails here
    check_preconditions(facts, config.num_executors)
    check_spark_security(facts, config.spark_security, tls=config.tls is not None)
    if config.storage:
        from tfos.storage.filesystems import check_writable

        # spark.hadoop.fs.s3a.* -> AWS_*, as the nodes will see them; credentials, bucket and
        # endpoint checked before any node starts
        check_writable(config.storage, storage_environ(app))
    wait_for_executors(app, config.num_executors, min(config.executor_wait_timeout, config.reservation_timeout))
    check_slots_per_executor(app, facts, config.num_executors)
    if config.max_restarts:
        from tfos.restart import RestartingCluster

        def start_attempt(attempt: int) -> Cluster:
            if attempt:
                wait_for_executors(app, config.num_executors, config.executor_wait_timeout)
            cluster = Cluster(app, config, facts, payload, attempt=attempt)
            cluster.start()
            return cluster

        # a replacement's longest start: its executors, its nodes forming, a teardown if it fails
        restart_timeout_s = (config.executor_wait_timeout + config.reservation_timeout
                             + 3 * config.stop_grace_s + 60)
        restarting = RestartingCluster(start_attempt, config.max_restarts, restart_timeout_s)
        restarting.start()
        return restarting
    cluster = Cluster(app, config, facts, payload)
    cluster.start()
    return cluster


class Cluster:
    """A running TF cluster on Spark executors. Made by :func:`run`."""

    def __init__(self, spark, config: RunConfig, facts: SparkFacts, payload: bytes, attempt: int = 0):
        """``payload``: ``main_fun`` and its args from :func:`tfos.user_code.pack_main_fun`."""
        self.app = spark_app(spark)
        #: the SparkContext (None over Spark Connect, which has none here)
        self.sc = None if self.app.remote else self.app.sc
        self.config = config
        self.facts = facts
        self.run_id = uuid.uuid4().hex[:12]
        self.job_group = f"tfos-{self.run_id}"
        self._secret = Secret(new_secret())
        self.state = ReservationState(self.run_id, config.roles(), config.tensorboard, config.log_dir or "")
        self.server = ReservationServer(self.state, self._secret, facts.server_host,
                                        port=facts.server_port, bind_host=facts.server_bind_host,
                                        tls=config.tls, port_range=facts.server_port_range or config.port_range)
        self._launch = NodeLaunch(
            run_id=self.run_id, server_address=self.server.address, secret=self._secret,
            input_mode=int(config.input_mode),
            tensorboard=config.tensorboard, log_dir=config.log_dir or "", keras=config.keras,
            default_fs=facts.default_fs, reservation_timeout=config.reservation_timeout,
            heartbeat_interval_s=config.heartbeat_interval_s, heartbeat_timeout_s=config.heartbeat_timeout_s,
            stop_grace_s=config.stop_grace_s, keep_omp_num_threads=facts.omp_num_threads_set,
            env=dict(config.env),
            tls=config.tls.client() if config.tls else None,
            port_range=str(config.port_range or ""),
            release_port=config.release_port,
            storage=config.storage or "",
            storage_env=session_storage_env(self.app),
            attempt=attempt,
            fed_slots=tuple(slot for slot, role in enumerate(self.state.roles) if role.trains)
            if config.input_mode == InputMode.SPARK else (),
            payload=payload,
        )
        #: the node job (one barrier task per node), run by ``SparkApp.start_job``; None before start()
        self._node_job: JobOutcome | None = None
        self._job_error: BaseException | None = None
        self._closed = False  # set (under _teardown_lock) by the first _teardown
        self._teardown_lock = threading.Lock()
        self._torn_down = threading.Event()
        self._feeder = None
        self._monitor_stop = threading.Event()
        self._display = None  # live progress lines, when the driver runs in a terminal
        self._display_lock = threading.Lock()
        self.started_at = 0.0

    # ------------------------------------------------------------------ start

    def start(self) -> None:
        """Start the server, the node job and the monitor; block until the cluster is up.

        Ctrl-C (KeyboardInterrupt) while it waits stops everything of this run within a few
        seconds (see :meth:`_interrupt`) and raises on: a notebook's interrupt leaves nothing.
        The live display (node states and progress: progress.py) starts here, in the caller's
        thread, so a notebook shows it in the cell that runs ``tfos.run``.
        """
        self.started_at = time.monotonic()
        self.state.add_listener(self._on_failure)
        self.state.add_observer(self._on_output)
        self.server.start()
        show_node_lines()
        self._open_display()
        self._node_job = self.app.start_job(self.job_group, f"tfos: nodes (run {self.run_id})", self._run_node_job,
                                            name=f"tfos-nodes-{self.run_id}", on_end=self.state.notify)
        threading.Thread(target=self._monitor, name=f"tfos-monitor-{self.run_id}", daemon=True).start()
        try:
            self._wait_formed()
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                self._note_interrupt()
            self.teardown()
            raise
        log.info("tfos run %s: %d nodes up in %.1f s", self.run_id, self.config.num_executors,
                 time.monotonic() - self.started_at)

    def _run_node_job(self) -> None:
        from tfos.node.task import run_node_task

        launch = self._launch
        n = self.config.num_executors

        def node(slot: int, address: str | None, attempt: int) -> dict:
            return run_node_task(launch, slot, address, attempt)

        try:
            results = self.app.run_barrier(n, node, f"tfos: nodes (run {self.run_id})")
            for result in results:
                if result.get("outcome") == UNREACHABLE and not self._closed:
                    self.state.fail(result["slot"], result["message"])
        except BaseException as exc:  # noqa: BLE001 - reported through the state
            self._job_error = exc
            # a node's own report (traceback, output tail) beats Spark's summary: give it a moment
            self.state.wait_until(lambda: self.state.failed or self._closed, _NODE_REPORT_GRACE_S)
            benign = self.state.run_state == RunState.FAILED or self._closed
            if not benign:
                self.state.fail(failed_partition(exc, n), f"its Spark task failed: {first_line(exc)}",
                                traceback=error_text(exc))

    def _node_job_ended(self) -> bool:
        return self._node_job is not None and self._node_job.done.is_set()

    def _wait_formed(self) -> None:
        deadline = Deadline(self.config.reservation_timeout, f"{self.config.num_executors} TF nodes to register")
        spark_mode = self.config.input_mode == InputMode.SPARK

        def formed() -> bool:
            if self.state.failed:
                return True
            if self.state.run_state == RunState.RESERVING:
                return False
            if spark_mode:
                # every TF process runs (and every node task returned its slot)
                return self._node_job_ended()
            return True

        ok = self.state.wait_until(formed, deadline.remaining())
        self._raise_if_failed("while the cluster formed")
        if not ok:
            registered = self.state.registered_hosts()
            raise ReservationTimeout(deadline.message(
                f"{len(registered)} of {self.config.num_executors} registered"
                + (f" ({', '.join(registered)})" if registered else ""),
                "are all executors free (no other job holding their task slots) and able to start "
                "Python? see the executors' stderr logs",
            ))

    # --------------------------------------------------------------- watching

    def _monitor(self) -> None:
        timeout = self.config.heartbeat_timeout_s
        while not self._monitor_stop.wait(self.config.heartbeat_interval_s):
            self.state.declare_lost(timeout)

    def _on_failure(self, failure) -> None:
        log.error("tfos run %s failed at node %s; cancelling its Spark jobs", self.run_id, failure.name)
        if self._node_job_ended():
            return
        self.app.cancel(self.job_group)

    def _on_output(self, node: str, lines: list[str], dropped: int, records: list[dict]) -> None:
        """Node output and progress, tagged with the node's role, into the driver's log; progress
        also to the live display (a terminal's rich lines, a notebook's output: progress.py)."""
        for line in lines:
            node_log.info("[%s] %s", node, line)
        if dropped:
            node_log.warning("[%s] %d output line(s) did not reach the driver (see the executor's log)", node, dropped)
        display = self._display
        for record in records:
            node_log.info("[%s] %s", node, describe(record), extra={PROGRESS_FLAG: True})
            if display is not None:
                try:
                    display.update(node, record)
                except Exception:  # noqa: BLE001 - a broken display must not stop the log lines
                    log.debug("live display update failed", exc_info=True)

    @property
    def progress(self) -> dict[str, list[dict]]:
        """Progress records each node reported (``ctx.report_progress``, ``ctx.progress_callback()``)."""
        return {str(n.role): list(n.progress) for n in self.state.snapshot()}

    def _raise_if_failed(self, context: str) -> None:
        failures = self.state.failures
        if failures:
            raise ClusterFailedError(failures, context)

    def _raise_on_node_failure(self, context: str, cause: BaseException) -> None:
        """After ``cause`` broke a feed: raise the run's failure if a node reports one within a moment."""
        if self.state.wait_until(lambda: self.state.failed, _NODE_REPORT_GRACE_S):
            raise ClusterFailedError(self.state.failures, context) from cause

    # ------------------------------------------------------------------- feed

    def train(self, data, num_epochs: int = 1, feed_timeout: float = 600, qname: str = "input"):
        """Feed an RDD or DataFrame to the training nodes, ``num_epochs`` times (InputMode.SPARK).

        Blocks until every record of every epoch is in a node's feed. Records are split
        evenly over the nodes (whatever the partition skew); each epoch is one Spark job.

        Returns:
            A :class:`~tfos.feed.driver.FeedReport` (also kept in ``feed_reports``), saying
            how many records each node got and how many ``ctx.dataset`` drops per epoch to
            keep synchronous workers in step.

        Raises:
            ClusterFailedError: a node failed (its traceback, within seconds).
            FeedError / FeedTimeout: the feed itself failed.
            KeyboardInterrupt: Ctrl-C while it feeds: the run is stopped first (as in shutdown).
        """
        try:
            feeder = self._require_feeder()
            try:
                return feeder.train(data, num_epochs, feed_timeout, qname)
            except ControlChannelError as exc:
                self._fail_on_control_error(exc)
                raise
            except FeedError as exc:
                # the feed broke because a node failed (its control channel refused, its connection
                # dropped): the node's report, which may be a moment behind, is the error to raise
                self._raise_on_node_failure("while feeding", exc)
                raise
        except KeyboardInterrupt:
            self._interrupt()
            raise

    def inference(self, data, feed_timeout: float = 600, qname: str = "input", output_schema=None):
        """An RDD with one result per record of ``data``, in the same order (InputMode.SPARK).

        Lazy, like any RDD: the records are fed when the result is computed. The nodes
        answer through ``DataFeed.batch_results``.

        Args:
            output_schema: for a DataFrame ``data``, the result columns (a DDL string such as
                ``"prediction long"`` or a ``StructType``): returns a DataFrame of the input
                rows with these columns added (each result a value for one column; a tuple
                or dict for several) instead of an RDD.
        """
        try:
            return self._require_feeder().inference(data, feed_timeout, qname, output_schema)
        except KeyboardInterrupt:
            # only while the lazy result is built (a Connect session may ask for the schema);
            # an interrupt of its later collect() is Spark's to handle, and the run stays up
            self._interrupt()
            raise

    @property
    def feed_reports(self) -> list:
        """One :class:`~tfos.feed.driver.FeedReport` per ``train()`` call."""
        return list(self._feeder.reports) if self._feeder else []

    def _require_feeder(self):
        from tfos.feed.client import FeedTarget
        from tfos.feed.driver import SparkFeeder

        if self.config.input_mode != InputMode.SPARK:
            raise ConfigError("cluster.train/inference need tfos.run(..., input_mode=tfos.InputMode.SPARK)")
        if self._closed:
            raise ConfigError("this cluster was shut down; start a new one with tfos.run")
        self._raise_if_failed("before feeding")
        if self._feeder is None:
            targets = [
                FeedTarget(f"{n.role}", n.host, n.feed_port, n.executor_id, self.run_id)
                for n in self.state.snapshot()
                if n.role.trains and n.feed_port
            ]
            self._feeder = SparkFeeder(self.app, targets, self._secret, self._run_feed_job,
                                       self._check_nodes)
        return self._feeder

    def _fail_on_control_error(self, exc) -> None:
        """A node's feed refused a control frame: raise the run's failure (so a RestartingCluster
        restarts and resumes the feed). The node's own report wins if it comes within
        ``_NODE_REPORT_GRACE_S``; a node that still runs then is failed here. Returns only when
        the node finished ``main_fun`` on its own (the feed error stands)."""
        slot = self.state.slot_of(exc.node)

        def ended() -> bool:
            return slot is not None and self.state.node(slot).state.finished_training

        self.state.wait_until(lambda: self.state.failed or ended(), _NODE_REPORT_GRACE_S)
        if not self.state.failed and ended():
            return
        if not self.state.failed:
            self.state.fail(slot, f"{exc}; it still runs, so its TF process is stuck or its feed broke")
        raise ClusterFailedError(self.state.failures, "while feeding, at an epoch boundary") from exc

    def _check_nodes(self) -> None:
        """Raise the run's failure if a node reports one within a moment (after a node went quiet)."""
        self.state.wait_until(lambda: self.state.failed or self.state.all_nodes(
            lambda n: n.state.terminal or n.role.job_name not in TRAINING_JOBS), _NODE_REPORT_GRACE_S)
        self._raise_if_failed("while feeding")

    def _run_feed_job(self, description: str, thunk):
        """Run a feeding Spark job under the run's job group; a node failure wins over Spark's error."""
        outcome = self.app.start_job(self.job_group, description, thunk, name=f"tfos-feed-{self.run_id}",
                            on_end=self.state.notify)
        self._wait_feed_job(outcome, description)
        if outcome.error is not None:
            self._raise_on_node_failure(description, outcome.error)
            error = FeedError(f"{description} failed: {first_line(outcome.error)}")
            error.__cause__ = outcome.error
            self._fail_on_node_trouble(description, error)
            raise error
        return outcome.value

    def _fail_on_node_trouble(self, description: str, error: FeedError) -> None:
        """A feeding task timed out on a node, or its connection to one broke, and no node
        reported a failure: fail the node that still runs (its TF process is stuck, or its
        network is gone) so the run fails and a ``RestartingCluster`` restarts it; a timeout
        that names no one node (every node full) fails the run. A node that finished
        ``main_fun`` leaves the feed error as it is (no restart feeds a finished node)."""
        raised = task_error(error.__cause__)
        if raised is None or raised[0] not in _NODE_TROUBLE:
            return
        match = _NODE_NAME.search(raised[1])
        slot = self.state.slot_of(match.group(1)) if match else None
        if slot is None and raised[0] != "FeedTimeout":
            return
        if slot is not None and self.state.node(slot).state.finished_training:
            return
        who = "it still runs" if slot is not None else "no node reported a failure"
        self.state.fail(slot, f"{raised[0]} {description}: {raised[1]} ({who}, so a TF process is stuck or "
                              f"its feed connection broke)")
        raise ClusterFailedError(self.state.failures, "while feeding") from error

    def _wait_feed_job(self, outcome, description: str) -> None:
        """Wait for a feeding job; once a node failed (or the run closed), cancel it and wait
        at most ``_FEED_CANCEL_WAIT_S`` more: a feeding task blocked on a stuck node would
        otherwise hold ``train()`` for its whole ``feed_timeout``."""
        cancelled: Deadline | None = None

        def broken() -> bool:
            return self.state.failed or self._closed

        while True:
            self.state.wait_until(lambda w=cancelled is None: outcome.done.is_set() or (w and broken()),
                                  _FEED_POLL_S)
            if outcome.done.is_set():
                return
            cancel = cancelled is None and broken()
            if cancel:
                cancelled = Deadline(_FEED_CANCEL_WAIT_S, f"the cancelled job {description!r} to end")
                self.app.cancel(self.job_group)
            elif cancelled is not None and cancelled.expired():
                self._raise_if_failed(description)
                raise FeedError(cancelled.message("it is still running", "see the Spark UI"))

    # --------------------------------------------------------------- shutdown

    def shutdown(self, grace_secs: float = 0, timeout: float | None = DEFAULT_SHUTDOWN_TIMEOUT_S, *,
                 ssc: Any = None) -> None:
        """Wait for the training nodes to finish, then stop every node, TensorBoard and the server.

        Blocks until the chief and workers returned from ``main_fun`` (at most ``timeout``
        seconds), then gives the evaluator up to ``grace_secs`` to finish on its own, then
        stops ps, evaluator and serving nodes.

        Args:
            grace_secs: how long the evaluator may take to finish after training ends.
            timeout: seconds to wait for training; ``None`` or ``<= 0`` wait without limit
                (TensorFlowOnSpark's ``-1``).
            ssc: TensorFlowOnSpark's StreamingContext argument; Spark Streaming is not supported.

        Raises:
            ClusterFailedError: when any node failed (at once, not at the timeout).
            ClusterTimeout: when the training nodes are still running after ``timeout``.
            KeyboardInterrupt: Ctrl-C (a notebook's "interrupt kernel") while it waits: the
                run's Spark jobs are cancelled and every node stopped first, within seconds.
        """
        if ssc is not None:
            raise ConfigError("shutdown(ssc=...) is not supported: tfos does not feed from Spark Streaming")
        if timeout is not None and timeout <= 0:
            timeout = None
        if self._closed:
            self._raise_if_failed("during the run")
            return
        try:
            self._show_display()  # a notebook: in the cell running shutdown() too
            if self._feeder is not None:
                # DataFeed.should_stop() turns true once the data is read; a node that does not
                # take the end is stuck, and shutdown() would wait for it until its timeout
                for stuck in self._feeder.end():
                    self._fail_on_control_error(stuck)
            deadline = Deadline(timeout, "the chief and workers to finish main_fun")
            ok = self._wait_training_done(deadline)
            self._raise_if_failed("while waiting for the nodes to finish")
            if not ok:
                raise ClusterTimeout(deadline.message(f"still running: {', '.join(self._awaited())}",
                                                      "raise shutdown(timeout=...) for longer training"))
            if grace_secs:
                # the evaluator (and anything else not serving) may finish on its own meanwhile
                self.state.wait_until(lambda: self.state.failed or self._only_servers_left(), grace_secs)
                self._raise_if_failed("during the grace period")
            self.state.request_stop(lambda n: not n.state.terminal)
            self._wait_all_stopped(self.config.stop_grace_s + 10)
            self._raise_if_failed("while stopping the nodes")
        except KeyboardInterrupt:
            self._note_interrupt()  # the teardown below: at once
            raise
        finally:
            self.teardown()
        self._raise_if_failed("during the run")

    def _wait_training_done(self, deadline: Deadline) -> bool:
        """Wait for training to end (or a failure), logging every ``_WAIT_LOG_S`` what it waits on."""
        while True:
            done = self.state.wait_until(lambda: self.state.failed or self._training_done(),
                                         deadline.slice(_WAIT_LOG_S))
            if done or deadline.expired():
                return done
            log.info("shutdown() has waited %.0f s for %s to finish main_fun: %s", deadline.elapsed(),
                     "the chief (ParameterServerStrategy's coordinator)" if self.config.num_ps else
                     "the chief and workers", "; ".join(self._awaited(explain=True)))

    def _awaited(self, explain: bool = False) -> list[str]:
        """The training nodes shutdown() waits on, with their states (and, if asked, the likely cause)."""
        out = []
        for n in self._training_nodes(self.state.snapshot()):
            if not n.state.finished_training:
                cause = ""
                if explain:
                    cause = (" (not registered: its executor never started the task)" if not n.state.registered
                             else " (still in main_fun: still training, blocked reading a feed that ended, "
                                  "or waiting in a collective for a peer)")
                out.append(f"{n.role} ({n.state}){cause}")
        return out

    def _training_nodes(self, nodes) -> list:
        """The nodes whose end is the end of training. Under ParameterServerStrategy only the
        coordinator (the chief, or worker:0 without one): its workers and ps serve it, whether
        through ``ctx.serve()`` or TF's own ``tf.distribute.Server(...).join()``, and are
        stopped once it returns. Otherwise every chief and worker."""
        if self.config.num_ps:
            return [nodes[lead_slot([n.role for n in nodes])]]
        return [n for n in nodes if n.role.job_name in TRAINING_JOBS]

    def _training_done(self) -> bool:
        return all(n.state.finished_training for n in self._training_nodes(self.state.snapshot()))

    def _only_servers_left(self) -> bool:
        return self.state.all_nodes(lambda n: n.state.finished_training or n.role.is_ps)

    def _wait_all_stopped(self, timeout_s: float) -> bool:
        stopped = self.state.wait_until(lambda: self.state.all_nodes(lambda n: not n.state.active), timeout_s)
        if not stopped:
            running = [f"{n.role} ({n.state})" for n in self.state.snapshot() if n.state.active]
            log.warning("after %.0f s these nodes had not reported stopping: %s; their executors stop them "
                        "when the run's Spark job ends (a lost executor or a stuck TF process is the likely "
                        "cause)", timeout_s, ", ".join(running))
        return stopped

    def _wait_lead_saved(self) -> None:
        """Before Spark kills the node tasks: let the lead node stop and run its last mirror
        pass, so a restart (or a later run) restores what it wrote last."""
        from tfos.storage.mirror import FINAL_PASS_S

        slot = lead_slot(self.state.roles)
        lead = self.state.node(slot)
        saved = self.state.wait_until(lambda: not self.state.node(slot).state.active,
                                      self.config.stop_grace_s + FINAL_PASS_S)
        if not saved:
            log.warning("the lead node %s did not finish its last mirror pass within %.0f s; storage may "
                        "miss what it wrote last", lead.role, self.config.stop_grace_s + FINAL_PASS_S)

    @property
    def closed(self) -> bool:
        """True once :meth:`teardown` began (by ``shutdown()``, a failed start, or a restart)."""
        return self._closed

    def teardown(self) -> None:
        """Stop everything of this run now, failed or not (``shutdown()`` waits for training
        first). Idempotent and thread-safe: the first caller does the work; a concurrent one
        (the restart watcher beside ``shutdown()``) waits for it, at most
        :meth:`_teardown_bound_s`, so no new attempt starts over nodes still stopping.

        In the main thread a Ctrl-C during it is deferred, not raised (a raise midway would
        leave the server or nodes behind): it cuts the remaining waits short, cancels the
        node job, and KeyboardInterrupt is raised once everything is stopped."""
        with self._sigint_deferred() as deferred:
            with self._teardown_lock:
                first = not self._closed
                self._closed = True
            if not first:
                if not self._torn_down.wait(self._teardown_bound_s()):
                    log.warning("tfos run %s: another thread's teardown has not ended after %.0f s", self.run_id,
                                self._teardown_bound_s())
            else:
                try:
                    self._stop_everything()
                finally:
                    self._torn_down.set()
        if deferred and not self._propagating_interrupt:
            raise KeyboardInterrupt

    def _teardown_bound_s(self) -> float:
        """The longest :meth:`_stop_everything` takes: the sum of its bounded waits, plus a margin."""
        from tfos.storage.mirror import FINAL_PASS_S

        grace = self.config.stop_grace_s
        lead = grace + FINAL_PASS_S if self.config.storage else 0.0
        return lead + (grace + 5) + (grace + 15) + (_SERVER_STOP_S + 5) + _OUTPUT_FLUSH_S + 10

    def _stop_everything(self) -> None:
        """Stop order, then (failed or interrupted run, or a node job still running after
        its nodes stopped) Spark's cancel, then the server. An interrupted run gives its nodes
        ``stop_grace_s + 2`` s and its job ``_INTERRUPTED_JOB_S``: Ctrl-C must end in seconds."""
        failed = self.state.failed
        formed = self.state.run_state != RunState.RESERVING
        self.state.finish()  # every heartbeat now answers "stop"
        if failed and not self._interrupted:
            if self.config.storage:
                self._wait_lead_saved()
            self.app.cancel(self.job_group)
            self._wait_all_stopped(self.config.stop_grace_s + 5)
            self._end_node_job(cancelled=True, timeout_s=self.config.stop_grace_s + 15)
        else:
            # the stop order before the cancel: a node whose Spark task is killed before the
            # order reaches it (long-polled heartbeats carry it at once) reports a failure
            patience = self.config.stop_grace_s + (2 if self._interrupted else 5)
            if self._interrupted and not formed:
                # nodes that registered abort at the order, without a report (no TF process ran
                # yet): a moment for that, then the cancel ends the tasks still pending in Spark
                patience = min(patience, 1.0)
            if self.config.storage and not self._interrupted:
                from tfos.storage.mirror import FINAL_PASS_S

                patience += FINAL_PASS_S  # the lead node's last mirror pass
            if self._node_job is not None:  # else never started: no node of this run runs
                self._wait_stopping(lambda: self._nodes_gone(formed), patience)
            self._end_node_job(cancelled=False, timeout_s=self._UNCANCELLED_JOB_S)
        self._monitor_stop.set()
        if self._feeder is not None:
            self._feeder.close()
        self.server.stop(_SERVER_STOP_S)
        # the nodes' last lines are in the driver's log when shutdown() returns
        flush_s = self._INTERRUPTED_FLUSH_S if self._interrupted else _OUTPUT_FLUSH_S
        if not self.state.output.flush(flush_s):
            log.warning("tfos run %s: node output still queued after %.0f s; a log handler is slow", self.run_id,
                        flush_s)
        with self._display_lock:
            display, self._display_chosen = self._display, True  # no display starts after this
        if display is not None:
            try:
                display.close(self._node_states())
            except Exception:  # noqa: BLE001 - the run is stopped; only the drawing failed
                log.debug("live display close failed", exc_info=True)

    # ------------------------------------------------------------------ views

    @property
    def cluster_info(self) -> list[NodeInfo]:
        """Every node's role, address, executor and state, in slot order."""
        return [
            NodeInfo(n.role.job_name, n.role.task_index, n.host, n.port, n.executor_id, n.pid,
                     n.tensorboard_port, n.state)
            for n in self.state.snapshot()
        ]

    @property
    def failures(self) -> list[NodeFailure]:
        """Node failures seen so far, root cause first (empty while all is well); never blocks."""
        return self.state.failures

    @property
    def cluster_spec(self) -> dict[str, list[str]]:
        """The TF cluster spec, exactly as in the nodes' ``TF_CONFIG`` (roles.cluster_spec)."""
        nodes = self.state.snapshot()
        return cluster_spec([n.role for n in nodes], [join_host_port(n.host, n.port) for n in nodes])

    def tensorboard_url(self) -> str | None:
        """``http://host:port`` of the run's TensorBoard (on the lead node), or ``None`` when it has none."""
        if not self.config.tensorboard:
            return None
        nodes = self.state.snapshot()
        lead = nodes[lead_slot([n.role for n in nodes])]
        return f"http://{join_host_port(lead.host, lead.tensorboard_port)}" if lead.tensorboard_port else None

    def __repr__(self) -> str:
        """``Cluster(run 3f2a..., ready, 2 nodes)`` then one line per node (role, address,
        executor, state, its last progress) and the TensorBoard URL; never blocks, fine on a
        closed cluster."""
        try:
            head, rows, url = self._repr_parts()
        except Exception:  # noqa: BLE001 - a repr must not raise
            return f"Cluster(run_id={self.run_id!r}, nodes={self.config.num_executors})"
        width = max((len(r[0]) for r in rows), default=0)
        addr_width = max((len(r[1]) for r in rows), default=0)
        lines = [head] + [f"  {role:<{width}}  {address:<{addr_width}}  {executor}  {state}"
                          + (f"  {progress}" if progress else "")
                          for role, address, executor, state, progress in rows]
        if url:
            lines.append(f"  TensorBoard: {url}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """The same as a table, for Jupyter."""
        import html

        try:
            head, rows, url = self._repr_parts()
        except Exception:  # noqa: BLE001 - Jupyter falls back to __repr__
            return f"<pre>{html.escape(repr(self))}</pre>"
        cells = "".join(f"<tr><td><b>{html.escape(role)}</b></td><td><code>{html.escape(address)}</code></td>"
                        f"<td>{html.escape(executor)}</td><td>{html.escape(state)}</td>"
                        f"<td>{html.escape(progress)}</td></tr>"
                        for role, address, executor, state, progress in rows)
        link = (f'<div>TensorBoard: <a href="{html.escape(url)}" target="_blank">{html.escape(url)}</a></div>'
                if url else "")
        return (f"<div><b>{html.escape(head)}</b><table><tr><th>node</th><th>address</th><th>executor</th>"
                f"<th>state</th><th>progress</th></tr>{cells}</table>{link}</div>")

    # ------------------------------------------------------------- interrupts

    #: set when a Ctrl-C (KeyboardInterrupt) reached start/train/inference/shutdown or a teardown:
    #: the teardown then cancels the run's jobs and stops its nodes at once (not a node failure)
    _interrupted = False
    #: set once the live display was chosen (or teardown began): it is asked for once per run
    _display_chosen = False
    #: set by the paths that re-raise a KeyboardInterrupt themselves (teardown adds none)
    _propagating_interrupt = False
    #: teardown: how often its waits look for a deferred Ctrl-C; how long an interrupted run waits
    #: for its cancelled jobs and its last output; how long a job may outlive its stopped nodes
    #: before it is cancelled, then how long the cancelled job may take
    _STOP_POLL_S = 0.2
    _INTERRUPTED_JOB_S = 5.0
    _INTERRUPTED_FLUSH_S = 1.0
    _UNCANCELLED_JOB_S = 5.0
    _CANCELLED_JOB_S = 10.0

    def _interrupt(self) -> None:
        """A KeyboardInterrupt reached a call of this cluster: stop the whole run now (the
        caller re-raises). Spark's jobs of the run are cancelled, every node is stopped."""
        self._note_interrupt()
        self.teardown()

    def _note_interrupt(self) -> None:
        """A KeyboardInterrupt is on its way up: the teardown stops the run at once and adds none."""
        if not self._closed:
            log.warning("tfos run %s interrupted: cancelling its Spark jobs and stopping its nodes", self.run_id)
        self._interrupted = self._propagating_interrupt = True

    def _nodes_gone(self, formed: bool) -> bool:
        """Every node process of the run ended: all nodes reported an end, or (TENSORFLOW
        mode, or a cluster that never formed, so no TF process started) every node task
        returned, which each does only once its supervisor exited."""
        if self.state.all_nodes(lambda n: not n.state.active):
            return True
        return self._node_job_ended() and (self.config.input_mode != InputMode.SPARK or not formed)

    def _end_node_job(self, cancelled: bool, timeout_s: float) -> None:
        """Wait for the node job (and the run's feeding jobs) to end; cancel them if the run was
        interrupted, or if the job outlives its nodes' stop by ``timeout_s`` (a task stuck in
        Spark), then wait at most ``_INTERRUPTED_JOB_S`` (interrupted) or ``_CANCELLED_JOB_S``."""
        job = self._node_job

        def job_ended() -> bool:
            return job is None or job.done.is_set()

        if not cancelled:
            if not self._interrupted:
                self._wait_stopping(job_ended, timeout_s)
            if self._interrupted or not job_ended():
                self.app.cancel(self.job_group)  # every job of the run: the node job, a feed
                cancelled = True
                timeout_s = self._INTERRUPTED_JOB_S if self._interrupted else self._CANCELLED_JOB_S
        if job is None:
            return
        self._wait_stopping(job_ended, timeout_s)
        if not job_ended():
            log.warning("tfos run %s: its node job has not ended %.0f s after it was cancelled; Spark still "
                        "stops its tasks", self.run_id, timeout_s)

    def _wait_stopping(self, predicate, timeout_s: float) -> bool:
        """``state.wait_until`` in short slices: a Ctrl-C deferred during teardown only sets
        ``_interrupted`` (a signal handler must not take locks), which cuts the wait short."""
        deadline = Deadline(timeout_s, "the run to stop")
        hurried = self._interrupted
        while True:
            if self.state.wait_until(predicate, deadline.slice(self._STOP_POLL_S)):
                return True
            if self._interrupted and not hurried:
                hurried = True
                deadline = Deadline(min(deadline.remaining() or 0.0, self.config.stop_grace_s + 2),
                                    deadline.what)
                self.app.cancel(self.job_group)
            if deadline.expired():
                return False

    def _sigint_deferred(self):
        """A context manager: in the main thread, SIGINT only marks the run interrupted while
        it is in force; its value is a list that holds one entry per deferred Ctrl-C."""
        import contextlib
        import signal

        @contextlib.contextmanager
        def deferring():
            deferred: list[float] = []

            def note(signum, frame) -> None:
                deferred.append(time.monotonic())
                self._interrupted = True
                if len(deferred) == 1:
                    log.warning("tfos run %s: interrupted while stopping; finishing the stop first (a few "
                                "seconds), then KeyboardInterrupt", self.run_id)

            previous = None
            if threading.current_thread() is threading.main_thread():
                try:
                    previous = signal.getsignal(signal.SIGINT)
                    # None: a handler set outside Python, which could not be put back; SIG_IGN:
                    # Ctrl-C raises nothing here anyway
                    if previous is None or previous is signal.SIG_IGN:
                        previous = None
                    else:
                        signal.signal(signal.SIGINT, note)
                except (ValueError, TypeError):  # not the main interpreter: no signals here
                    previous = None
            try:
                yield deferred
            finally:
                if previous is not None:
                    signal.signal(signal.SIGINT, previous)

        return deferring()

    # --------------------------------------------------------------- display

    #: how often the live display's node states are refreshed
    _DISPLAY_REFRESH_S = 0.5

    def _node_states(self) -> dict[str, str]:
        return {str(n.role): str(n.state) for n in self.state.snapshot()}

    def _open_display(self) -> None:
        """Choose the live display once (progress.live_display: terminal, notebook or none),
        in the caller's thread, and keep its node states fresh until teardown."""
        from tfos.progress import live_display

        with self._display_lock:
            if self._display_chosen:
                return
            self._display_chosen = True  # asked once: the driver's terminal or kernel does not change
            try:
                self._display = live_display()
            except Exception:  # noqa: BLE001 - the log lines are the fallback
                log.debug("no live progress display", exc_info=True)
            display = self._display
        if display is None:
            return
        display.set_states(self._node_states())
        threading.Thread(target=self._refresh_display, args=(display,), name=f"tfos-display-{self.run_id}",
                         daemon=True).start()

    def _refresh_display(self, display) -> None:
        while not self._monitor_stop.wait(self._DISPLAY_REFRESH_S):
            try:
                display.set_states(self._node_states())
            except Exception:  # noqa: BLE001 - the log lines are the fallback
                log.debug("live display refresh failed", exc_info=True)
                return

    def _show_display(self) -> None:
        display = self._display
        if display is not None:
            try:
                display.show()
            except Exception:  # noqa: BLE001 - the log lines are the fallback
                log.debug("live display show failed", exc_info=True)

    # ------------------------------------------------------------------ repr

    def _repr_parts(self) -> tuple[str, list[tuple[str, str, str, str, str]], str | None]:
        """The repr's head line, its node rows ``(role, host:port, executor, state, last
        progress)`` and URL."""
        nodes = self.state.snapshot()
        state = str(self.state.run_state)
        if self._interrupted:
            state += ", interrupted"
        elif self._closed and self.state.run_state not in (RunState.FINISHED, RunState.FAILED):
            state += ", closed"
        head = f"Cluster(run {self.run_id}, {state}, {len(nodes)} nodes"
        failures = self.state.failures
        if failures:
            head += f"; failed at {failures[0].name}: {(failures[0].reason.splitlines() or [''])[0][:120]}"
        head += ")"
        rows = [(str(n.role), join_host_port(n.host, n.port) if n.host else "-",
                 f"executor {n.executor_id}" if n.executor_id else "-", str(n.state),
                 describe(n.progress[-1]) if n.progress else "") for n in nodes]
        try:
            url = self.tensorboard_url()
        except Exception:  # noqa: BLE001 - no lead node known yet
            url = None
        return head, rows, url


_NODE_REPORT_GRACE_S = 3.0
#: how often train() rechecks a feeding job, and how long a cancelled one may take to end
_FEED_POLL_S = 0.5
_FEED_CANCEL_WAIT_S = 30.0
#: the reservation server's stop grace (it blocks at most this + 5 s)
_SERVER_STOP_S = 0.5
#: seconds teardown waits for queued node output to reach the driver's log (output_relay.py)
_OUTPUT_FLUSH_S = 5.0
#: how often a shutdown() waiting on nodes says which, and why
_WAIT_LOG_S = 30.0
#: errors of a feeding task that say a node is in trouble (not the data): tfos/feed/client.py
_NODE_TROUBLE = ("FeedTimeout", "NodeGone", "FeedConnectionError")
_NODE_NAME = re.compile(r"\bnode (\w+:\d+)")


__all__ = ["Cluster", "NodeInfo", "run"]
