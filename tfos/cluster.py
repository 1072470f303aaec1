"""The driver side of a run: ``tfos.run`` starts a TF cluster on the executors and
returns a :class:`Cluster` to feed, watch and shut it down.
"""

from __future__ import annotations

import logging
import os
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
from tfos.reservation.auth import Secret, new_secret
from tfos.reservation.server import ReservationServer
from tfos.reservation.state import ReservationState
from tfos.reservation.states import NodeState, RunState
from tfos.roles import TRAINING_JOBS, cluster_spec, lead_slot
from tfos.spark_app import spark_app
from tfos.spark_conf import run_options
from tfos.spark_env import (
    SparkFacts,
    check_preconditions,
    check_slots_per_executor,
    check_spark_security,
    read_facts,
    wait_for_executors,
)
from tfos.spark_jobs import (
    error_text,
    failed_partition,
    first_line,
    task_error,
)
from tfos.storage.credentials import apply_missing, storage_env_from_conf
from tfos.user_code import describe_source

log = logging.getLogger(__name__)
#: the nodes' output lines and progress, tagged ``[chief:0]``
node_log = logging.getLogger("tfos.nodes")


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
    check_preconditions(facts, config.num_executors)
    check_spark_security(facts, config.spark_security, tls=config.tls is not None)
    if config.storage:
        from tfos.storage.filesystems import check_writable

        # spark.hadoop.fs.s3a.* -> AWS_*, as the nodes will see them; credentials, bucket and
        # endpoint checked before any node starts
        environ = dict(os.environ)
        apply_missing(environ, storage_env_from_conf(app.get))
        check_writable(config.storage, environ)
    if app.remote and config.input_mode == InputMode.SPARK:
        raise ConfigError("input_mode=InputMode.SPARK over a Spark Connect session is not supported yet: "
                          "the nodes can read their data themselves (InputMode.TENSORFLOW, e.g. TFRecords "
                          "written with tfos.dfutil), or run the script with spark-submit / tfos submit")
    wait_for_executors(app, config.num_executors, min(config.executor_wait_timeout, config.reservation_timeout))
    check_slots_per_executor(app, facts, config.num_executors)
    if config.max_restarts:
        from tfos.restart import RestartingCluster

        def start_attempt(attempt: int) -> Cluster:
            if attempt:
                wait_for_executors(app, config.num_executors, config.executor_wait_timeout)
            cluster = Cluster(app, config, facts, main_fun, tf_args, attempt=attempt)
            cluster.start()
            return cluster

        # a replacement's longest start: its executors, its nodes forming, a teardown if it fails
        restart_timeout_s = (config.executor_wait_timeout + config.reservation_timeout
                             + 3 * config.stop_grace_s + 60)
        restarting = RestartingCluster(start_attempt, config.max_restarts, restart_timeout_s)
        restarting.start()
        return restarting
    cluster = Cluster(app, config, facts, main_fun, tf_args)
    cluster.start()
    return cluster


class Cluster:
    """A running TF cluster on Spark executors. Made by :func:`run`."""

    def __init__(self, spark, config: RunConfig, facts: SparkFacts, main_fun, tf_args, attempt: int = 0):
        import cloudpickle

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
            storage_env=storage_env_from_conf(self.app.get),
            attempt=attempt,
            payload=cloudpickle.dumps((main_fun, tf_args, describe_source(main_fun))),
        )
        self._job_thread: threading.Thread | None = None
        self._job_error: BaseException | None = None
        self._job_done = threading.Event()
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
        """Start the server, the node job and the monitor; block until the cluster is up."""
        self.started_at = time.monotonic()
        self.state.add_listener(self._on_failure)
        self.state.add_observer(self._on_output)
        self.server.start()
        self._job_thread = self.app.thread(self._run_node_job, name=f"tfos-nodes-{self.run_id}")
        self._job_thread.start()
        threading.Thread(target=self._monitor, name=f"tfos-monitor-{self.run_id}", daemon=True).start()
        try:
            self._wait_formed()
        except BaseException:
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
            description = f"tfos: nodes (run {self.run_id})"
            self.app.set_group(self.job_group, description)
            self.app.run_barrier(n, node, description)
        except BaseException as exc:  # noqa: BLE001 - reported through the state
            self._job_error = exc
            # a node's own report (traceback, output tail) beats Spark's summary: give it a moment
            self.state.wait_until(lambda: self.state.failed or self._closed, _NODE_REPORT_GRACE_S)
            benign = self.state.run_state == RunState.FAILED or self._closed
            if not benign:
                self.state.fail(failed_partition(exc, n), f"its Spark task failed: {first_line(exc)}",
                                traceback=error_text(exc))
        finally:
            self._job_done.set()
            self.state.notify()

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
                return self._job_done.is_set()
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
        if self._job_done.is_set():
            return
        self.app.cancel(self.job_group)

    def _on_output(self, node: str, lines: list[str], dropped: int, records: list[dict]) -> None:
        """Node output and progress, tagged with the node's role, into the driver's log."""
        from tfos.progress import TerminalDisplay, describe

        for line in lines:
            node_log.info("[%s] %s", node, line)
        if dropped:
            node_log.warning("[%s] %d output line(s) did not reach the driver (see the executor's log)", node, dropped)
        for record in records:
            node_log.info("[%s] %s", node, describe(record))
            with self._display_lock:
                if self._display is None and TerminalDisplay.wanted():
                    self._display = TerminalDisplay()
            if self._display is not None:
                self._display.update(node, record)

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
        """
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
        return self._require_feeder().inference(data, feed_timeout, qname, output_schema)

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
                FeedTarget(f"{n.role}", n.host, n.feed_port, n.executor_id)
                for n in self.state.snapshot()
                if n.role.job_name in TRAINING_JOBS and n.feed_port
            ]
            self._feeder = SparkFeeder(self.sc, targets, self._secret, self._run_feed_job,
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
        """
        if ssc is not None:
            raise ConfigError("shutdown(ssc=...) is not supported: tfos does not feed from Spark Streaming")
        if timeout is not None and timeout <= 0:
            timeout = None
        if self._closed:
            self._raise_if_failed("during the run")
            return
        try:
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
        return self.state.all_nodes(lambda n: n.state.finished_training or n.role.job_name == "ps")

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
        :meth:`_teardown_bound_s`, so no new attempt starts over nodes still stopping."""
        with self._teardown_lock:
            first = not self._closed
            self._closed = True
        if not first:
            if not self._torn_down.wait(self._teardown_bound_s()):
                log.warning("tfos run %s: another thread's teardown has not ended after %.0f s", self.run_id,
                            self._teardown_bound_s())
            return
        try:
            self._stop_everything()
        finally:
            self._torn_down.set()

    def _teardown_bound_s(self) -> float:
        """The longest :meth:`_stop_everything` takes: the sum of its bounded waits, plus a margin."""
        from tfos.storage.mirror import FINAL_PASS_S

        grace = self.config.stop_grace_s
        lead = grace + FINAL_PASS_S if self.config.storage else 0.0
        return lead + (grace + 5) + (grace + 15) + (_SERVER_STOP_S + 5) + _OUTPUT_FLUSH_S + 10

    def _stop_everything(self) -> None:
        failed = self.state.failed
        self.state.finish()  # every heartbeat now answers "stop"
        if failed:
            if self.config.storage:
                self._wait_lead_saved()
            self.app.cancel(self.job_group)
            self._wait_all_stopped(self.config.stop_grace_s + 5)
        if self._job_thread is not None:
            self._job_thread.join(self.config.stop_grace_s + 15)
        self._monitor_stop.set()
        if self._feeder is not None:
            self._feeder.close()
        self.server.stop(_SERVER_STOP_S)
        # the nodes' last lines are in the driver's log when shutdown() returns
        if not self.state.output.flush(_OUTPUT_FLUSH_S):
            log.warning("tfos run %s: node output still queued after %.0f s; a log handler is slow", self.run_id,
                        _OUTPUT_FLUSH_S)
        if self._display is not None:
            self._display.close()

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
        return f"Cluster(run_id={self.run_id!r}, nodes={self.config.num_executors}, state={self.state.run_state!r})"


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
