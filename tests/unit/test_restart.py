"""RestartingCluster's bookkeeping, with stand-in attempts (no Spark): when it restarts,
where the feed resumes, and what the final error says; and the hangs it must not have:
a restart that raises or never returns, a node that dies at an epoch boundary, two
teardowns at once, a feed job that outlives a failure."""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass

import pytest

from tests.unit.threads import Background
from tfos.errors import ClusterFailedError, ClusterTimeout, FeedError
from tfos.reservation.state import ReservationState
from tfos.restart import RestartingCluster
from tfos.roles import Role
from tfos.spark.app import ClassicApp
from tfos.spark.jobs import JobOutcome

pytestmark = pytest.mark.timeout(60)


@dataclass
class Report:
    qname: str
    epochs_fed: int


def State():
    """A real reservation state of one worker, never served: what RestartingCluster reads."""
    return ReservationState("fake", [Role("worker", 0)])


class Attempt:
    """A started cluster that fails on cue: ``fail_after`` epochs into ``train``, or in ``shutdown``."""

    def __init__(self, number: int, fail_after: int | None = None, fail_shutdown: bool = False,
                 fail_before_feed: bool = False, teardown_error: BaseException | None = None,
                 shutdown_error: BaseException | None = None):
        self.number = number
        self.fail_after = fail_after
        self.fail_shutdown = fail_shutdown
        self.fail_before_feed = fail_before_feed  # fails while counting: no report for this call
        self.teardown_error = teardown_error
        self.shutdown_error = shutdown_error  # raised by shutdown (a timeout, an interrupt), no failure
        self.state = State()
        self.closed = False
        self.feed_reports: list[Report] = []
        self.trained: list[int] = []

    def failures_(self):
        return list(self.state.failures)

    failures = property(failures_)

    def _fail(self, reason: str):
        self.state.fail(0, f"{reason} (attempt {self.number})")
        raise ClusterFailedError(self.state.failures, "fake")

    def train(self, data, num_epochs, feed_timeout, qname):
        self.trained.append(num_epochs)
        if self.fail_before_feed:
            self._fail("died while the data was counted")
        report = Report(qname, 0)
        self.feed_reports.append(report)
        for _ in range(num_epochs):
            if self.fail_after is not None and report.epochs_fed == self.fail_after:
                self._fail("died mid-feed")
            report.epochs_fed += 1
        return report

    def shutdown(self, grace_secs, timeout, **kwargs):
        if self.fail_shutdown:
            self._fail("raised in main_fun")
        if self.shutdown_error is not None:
            raise self.shutdown_error
        if self.state.failures:  # as Cluster.shutdown of a failed (maybe torn down) attempt
            raise ClusterFailedError(self.state.failures, "during the run")
        self.closed = True

    def teardown(self):
        self.closed = True
        if self.teardown_error is not None:
            raise self.teardown_error


def make(plans: list):
    """A start_attempt over ``plans``: a dict makes an Attempt, an exception is raised, a
    callable is called (and its result returned)."""
    made: list[Attempt] = []

    def start(number: int) -> Attempt:
        plan = plans[number]
        if isinstance(plan, BaseException):
            raise plan
        if callable(plan):
            return plan(number)
        attempt = Attempt(number, **plan)
        made.append(attempt)
        return attempt

    return start, made


def test_the_feed_resumes_at_the_interrupted_epoch_on_the_next_attempt():
    start, made = make([{"fail_after": 2}, {}])
    cluster = RestartingCluster(start, max_restarts=1)
    cluster.start()
    report = cluster.train("data", num_epochs=5, feed_timeout=10, qname="input")
    cluster.shutdown(timeout=10)
    assert [a.trained for a in made] == [[5], [3]]  # epochs 1-2 fed once, 3-5 on attempt 1
    assert report.epochs_fed == 3
    assert made[0].closed  # the failed attempt was torn down
    assert len(cluster.attempt_failures) == 1 and cluster.attempt == 1


def test_an_attempt_restarted_after_train_returned_is_fed_the_last_epoch_again_by_shutdown():
    # attempt 0 took every epoch, then failed while its nodes still trained on them: the
    # replacement must get data, or its nodes wait on their feeds until shutdown's timeout
    start, made = make([{"fail_shutdown": True}, {}])
    cluster = RestartingCluster(start, max_restarts=1)
    cluster.start()
    cluster.train("data", num_epochs=4, feed_timeout=10, qname="input")
    cluster.shutdown(timeout=10)
    assert [a.trained for a in made] == [[4], [1]]
    assert made[1].closed and cluster.attempt == 1


@pytest.mark.timeout(20)
def test_when_restarts_run_out_every_attempts_root_cause_is_in_the_error():
    start, made = make([{"fail_shutdown": True}] * 3)
    cluster = RestartingCluster(start, max_restarts=2)
    cluster.start()
    with pytest.raises(ClusterFailedError) as err:
        cluster.shutdown(timeout=10)
    assert len(made) == 3
    text = str(err.value)
    assert "3 attempt(s)" in text
    assert [f.reason for f in err.value.failures] == [f"raised in main_fun (attempt {i})" for i in range(3)]


def test_no_restart_is_attempted_after_a_clean_shutdown():
    start, made = make([{}])
    cluster = RestartingCluster(start, max_restarts=3)
    cluster.start()
    cluster.shutdown(timeout=10)
    assert len(made) == 1 and cluster.attempt_failures == [] and cluster.restart_times == []


@pytest.mark.parametrize("gave_up", [ClusterTimeout("waited 1 s for the run to finish"), KeyboardInterrupt()],
                         ids=["timeout", "interrupt"])
def test_no_attempt_starts_after_shutdown_gave_up_even_when_the_attempt_fails_late(gave_up):
    # shutdown() ends without the run finishing; then the attempt fails (an MWMS peer
    # failing while it is being stopped): a new attempt would run with nobody to stop it
    start, made = make([{"shutdown_error": gave_up}, {}])
    cluster = RestartingCluster(start, max_restarts=3)
    cluster.start()
    with pytest.raises(type(gave_up)):
        cluster.shutdown(timeout=1)
    made[0].state.fail(0, "peer gone while being stopped")
    cluster._watcher.join(10)
    assert not cluster._watcher.is_alive()
    assert len(made) == 1 and cluster.attempt == 0 and cluster.restart_times == []


def test_the_feed_resumes_at_its_first_epoch_when_an_attempt_failed_before_feeding_it():
    # the second train() call fails while counting, before it has a report: the first
    # call's report (1 epoch fed) must not count as progress of the second
    start, made = make([{"fail_before_feed": False}, {}])
    cluster = RestartingCluster(start, max_restarts=1)
    cluster.start()
    cluster.train("data", num_epochs=1, feed_timeout=10, qname="input")
    made[0].fail_before_feed = True
    report = cluster.train("data", num_epochs=3, feed_timeout=10, qname="input")
    cluster.shutdown(timeout=10)
    assert [a.trained for a in made] == [[1, 3], [3]]
    assert report.epochs_fed == 3


@pytest.mark.parametrize("plans,cause", [
    # a replacement attempt whose start raises something that is no tfos error (a bug, py4j...)
    ([{"fail_after": 1}, RuntimeError("py4j gateway gone")], "RuntimeError: py4j gateway gone"),
    # the failed attempt's teardown raises
    ([{"fail_after": 1, "teardown_error": OSError("disk full")}, {}], "OSError: disk full"),
])
def test_a_restart_that_raises_ends_train_with_the_restart_failure_and_its_cause(plans, cause):
    start, _ = make(plans)
    cluster = RestartingCluster(start, max_restarts=3)
    cluster.start()
    call = Background(cluster.train, "data", num_epochs=3, feed_timeout=10, qname="input")
    with pytest.raises(ClusterFailedError) as err:
        call.result(timeout_s=10)
    text = str(err.value)
    assert text.startswith(f"TF cluster failed (the restart failed: attempt 1 could not start ({cause}); "
                           "2 attempt(s), root cause of each listed in order): node worker:0 "), text
    assert [f.reason for f in err.value.failures] == [
        "died mid-feed (attempt 0)", f"attempt 1 could not start ({cause})"]
    assert type(err.value.__cause__).__name__ == cause.split(":")[0]
    with pytest.raises(ClusterFailedError):  # and shutdown says the same at once, no hang either
        Background(cluster.shutdown, timeout=None).result(timeout_s=10)


def test_a_restart_that_never_returns_ends_train_at_its_deadline_and_the_late_attempt_is_torn_down():
    release = threading.Event()
    late: list[Attempt] = []

    def slow_start(number):
        release.wait(30)
        late.append(Attempt(number))
        return late[-1]

    start, _ = make([{"fail_after": 0}, slow_start])
    cluster = RestartingCluster(start, max_restarts=1, restart_timeout_s=1.0)
    cluster.start()
    began = time.monotonic()
    with pytest.raises(ClusterTimeout) as err:
        Background(cluster.train, "data", num_epochs=2, feed_timeout=10, qname="input").result(timeout_s=10)
    assert time.monotonic() - began < 5
    assert str(err.value) == ("waited 1 s for attempt 1 to start; it has not formed; the executors may be "
                              "busy or gone: see the Spark UI, or raise executor_wait_timeout / "
                              "reservation_timeout")
    release.set()
    deadline = time.monotonic() + 10
    while not (late and late[0].closed) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert late and late[0].closed  # nobody will shut it down: the watcher did


# ------------------------------------------------- a real Cluster on a stand-in SparkContext


class StandInSpark:
    """The few SparkContext calls a Cluster makes outside its Spark jobs."""

    master = "local-cluster[2,1,1024]"

    def __init__(self):
        self.cancelled: list[str] = []
        self.cancel = threading.Event()

    def getConf(self):
        return self

    def get(self, key, default=None):
        return default

    def setJobGroup(self, *args, **kwargs):
        pass

    def cancelJobGroup(self, group):
        self.cancelled.append(group)
        self.cancel.set()


@pytest.fixture
def spark_cluster():
    """A Cluster of chief:0 and worker:0 (InputMode.SPARK), never started; torn down after."""
    from tfos.cluster import Cluster
    from tfos.config import RunConfig
    from tfos.input_mode import InputMode
    from tfos.spark.env import SparkFacts

    facts = SparkFacts(master=StandInSpark.master, executor_cores=1, task_cpus=1, dynamic_allocation=False,
                       configured_executors=2, driver_host="127.0.0.1", default_fs="file:///",
                       omp_num_threads_set=False)
    config = RunConfig(num_executors=2, input_mode=InputMode.SPARK, stop_grace_s=0)


    cluster = Cluster(ClassicApp(StandInSpark()), config, facts, lambda args, ctx: None, None)
    yield cluster
    cluster.teardown()


def test_two_teardowns_at_once_do_the_work_once_and_both_return_after_it(spark_cluster):
    # the restart watcher and a failing shutdown() tear the same attempt down together: the
    # second must not return (and start the next attempt) while the first still stops nodes
    cluster = spark_cluster
    cluster.state.fail(1, "raised in main_fun")
    job_ended: list[float] = []

    def node_job():  # the run's Spark job, 1 s from its cancellation to its end
        cluster.sc.cancel.wait(10)
        time.sleep(1.0)
        job_ended.append(time.monotonic())

    cluster._node_job = outcome = JobOutcome()  # as SparkApp.start_job makes it, without a SparkContext
    threading.Thread(target=lambda: (node_job(), outcome.done.set()), daemon=True).start()
    go = threading.Barrier(2)

    def teardown():
        go.wait()
        cluster.teardown()
        return time.monotonic()

    calls = [Background(teardown), Background(teardown)]
    returned = [call.result(timeout_s=20) for call in calls]
    assert cluster.sc.cancelled == [cluster.job_group]  # one teardown cancelled the run's jobs
    assert job_ended and min(returned) >= job_ended[0]


class StandInFeeder:
    """SparkFeeder's train, failing at an epoch boundary as a node's feed does."""

    def __init__(self, error):
        self.error = error
        self.reports = []

    def train(self, data, num_epochs, feed_timeout, qname):
        raise self.error

    def close(self):
        pass


def _node_reports_a_failure(cluster):
    time.sleep(0.3)
    cluster.state.fail(1, "raised RuntimeError in main_fun", traceback="Traceback...")


def _node_finishes(cluster):
    time.sleep(0.3)
    from tfos.reservation import messages as m

    run_id = cluster.state.run_id
    cluster.state.register(m.RegisterRequest(run_id=run_id, slot=1, host="h", executor_id="1", port=1))
    cluster.state.report(m.ReportRequest(run_id=run_id, slot=1, event="done"))


@pytest.mark.parametrize("node_does,raised,reason", [
    # its failure report comes within the grace period: that is the error
    (_node_reports_a_failure, ClusterFailedError, "raised RuntimeError in main_fun"),
    # silence (its TF process stuck, its executor's network gone): the node is failed for it
    (None, ClusterFailedError,
     "node worker:0's feed did not take epoch 2's plan (ConnectionResetError: [Errno 104] Connection reset "
     "by peer); it still runs, so its TF process is stuck or its feed broke"),
    # main_fun returned on its own before the feed ended: a feed error, no node failure
    (_node_finishes, FeedError, None),
])
def test_a_node_whose_feed_breaks_at_an_epoch_boundary_fails_the_run(spark_cluster, node_does, raised, reason):
    from tfos.errors import ControlChannelError

    cluster = spark_cluster
    try:
        raise ConnectionResetError(104, "Connection reset by peer")
    except ConnectionResetError as reset:
        error = ControlChannelError(f"node worker:0's feed did not take epoch 2's plan (ConnectionResetError: "
                                    f"{reset})", "worker:0", closed=True)
        error.__cause__ = reset
    cluster._feeder = StandInFeeder(error)
    if node_does is not None:
        threading.Thread(target=node_does, args=(cluster,), daemon=True).start()
    began = time.monotonic()
    with pytest.raises(raised) as err:
        cluster.train("data", num_epochs=3, feed_timeout=10)
    assert time.monotonic() - began < 5
    if reason is None:
        assert err.value is error and cluster.failures == []
    else:
        assert str(err.value).startswith("TF cluster failed (while feeding, at an epoch boundary): node worker:0")
        assert [(f.name, f.reason) for f in err.value.failures] == [("worker:0", reason)]
        assert err.value.__cause__ is error


class BrokenControl:
    """A node's control channel whose peer reset the connection after epoch 1."""

    def __init__(self):
        self.epochs = []
        self.timeouts = []
        self.closed = False

    def settimeout(self, feed_timeout):
        self.timeouts.append(feed_timeout)

    def epoch(self, info):
        if self.epochs:
            raise ConnectionResetError(104, "Connection reset by peer")
        self.epochs.append(info["epoch"])

    def close(self):
        self.closed = True


class AnsweringControl(BrokenControl):
    def epoch(self, info):
        self.epochs.append(info["epoch"])


def test_a_reset_control_connection_at_an_epoch_boundary_is_a_feed_error_naming_the_node():
    from tfos.errors import ControlChannelError
    from tfos.feed.client import FeedTarget
    from tfos.feed.driver import Prepared, SparkFeeder

    targets = [FeedTarget("chief:0", "127.0.0.1", 1, "0", "run-x"), FeedTarget("worker:0", "127.0.0.1", 2, "1", "run-x")]
    feeder = SparkFeeder(ClassicApp(StandInSpark()), targets, b"s" * 32, lambda description, thunk: [(10, False), (10, False)],
                         lambda: None)
    chief, worker = AnsweringControl(), BrokenControl()
    feeder._controls = {(0, "input"): chief, (1, "input"): worker}
    with pytest.raises(ControlChannelError) as err:
        feeder._train(None, Prepared(view=None, sizes=[10, 10], transport="records"), 3, 10.0, "input")
    assert str(err.value) == ("node worker:0's feed did not take epoch 2's plan (ConnectionResetError: "
                              "[Errno 104] Connection reset by peer)")
    assert (err.value.node, err.value.closed) == ("worker:0", True)
    assert isinstance(err.value.__cause__, ConnectionResetError)
    assert feeder.reports[-1].epochs_fed == 1  # the restart feeds epoch 2 again, not epoch 1
    assert worker.closed and (1, "input") not in feeder._controls  # the next use opens a fresh one
    assert chief.timeouts == [10.0, 10.0] and worker.timeouts == [10.0, 10.0]  # this call's feed_timeout


def test_a_feed_job_blocked_on_a_stuck_node_is_cancelled_when_a_node_fails(spark_cluster):
    cluster = spark_cluster

    def feed_job():  # a feeding task blocked on a stuck node: ends only when its job is cancelled
        if not cluster.sc.cancel.wait(30):
            return [(10, False)]
        raise RuntimeError("Job 7 cancelled part of cancelled job group")

    threading.Timer(0.3, lambda: cluster.state.fail(1, "no heartbeat for 10 s", lost=True)).start()
    began = time.monotonic()
    with pytest.raises(ClusterFailedError) as err:
        Background(cluster._run_feed_job, "tfos: feed epoch 1/1", feed_job).result(timeout_s=15)
    assert time.monotonic() - began < 5
    assert [f.reason for f in err.value.failures] == ["no heartbeat for 10 s"]
    assert cluster.sc.cancelled and cluster.sc.cancelled[0] == cluster.job_group


def test_a_control_channel_waits_by_the_feed_timeout_of_the_call_that_uses_it():
    # train(feed_timeout=5) after a train() with the default 600 s: a stuck node must be
    # given up on after 5 s, not 600 s
    import os
    import socket

    from tfos.feed.client import FeedTarget
    from tfos.feed.driver import SparkFeeder
    from tfos.feed.node_feed import FeedServer

    secret = os.urandom(32)
    server = FeedServer(socket.create_server(("127.0.0.1", 0)), secret, run_id="run-x", node="worker:0")
    try:
        feeder = SparkFeeder(ClassicApp(StandInSpark()), [FeedTarget("worker:0", "127.0.0.1", server.port, "1", "run-x")],
                             secret,
                             lambda description, thunk: None, lambda: None)
        first = feeder._control(0, "input", 600.0)
        assert first._channel.sock.gettimeout() == 600.0
        second = feeder._control(0, "input", 5.0)
        assert second is first and second._channel.sock.gettimeout() == 5.0  # one connection, this call's wait
        feeder.close()
    finally:
        server.close()


class FeederRunningAJob:
    """SparkFeeder's train: one feeding job through the cluster's job runner, failing as ``error``."""

    def __init__(self, cluster, error: BaseException):
        self.cluster, self.error, self.reports = cluster, error, []

    def train(self, data, num_epochs, feed_timeout, qname):
        def thunk():
            raise self.error
        return self.cluster._run_feed_job("tfos: feed epoch 1", thunk)

    def close(self):
        pass


class SparkWrapped(Exception):
    """Stands for Py4JJavaError: its str() is the text Spark wraps a task's Python error in."""


def _spark_text(error: str) -> str:
    return (": org.apache.spark.api.python.PythonException: [PYTHON_EXCEPTION] An exception was thrown from the "
            f"Python worker: Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n{error}\n"
            " SQLSTATE: 38000\n\tat org.apache.spark.api.python.BasePythonRunner.handlePythonException(x.scala:1)\n")


STUCK = ("tfos.errors.FeedTimeout: waited 5 s for node worker:0 (executor 1) to read its feed (3 records of "
         "partition 0 sent to it); did the node hang?")


def _finish_worker(cluster):
    from tfos.reservation import messages as m

    run_id = cluster.state.run_id
    cluster.state.register(m.RegisterRequest(run_id=run_id, slot=1, host="h", executor_id="1", port=1))
    cluster.state.report(m.ReportRequest(run_id=run_id, slot=1, event="done"))


@pytest.mark.parametrize("error,before,failed", [
    # a node that still runs stopped reading mid-epoch, and reported nothing: it is failed (a restart follows)
    (STUCK, None, "worker:0"),
    ("tfos.errors.FeedConnectionError: feed to node worker:0 broke after 7 records of partition 2: [Errno 104] "
     "Connection reset by peer; did the node fail?", None, "worker:0"),
    # every node full, none named: the run fails
    ("tfos.errors.FeedTimeout: waited 5 s for room on any node to feed partition 0: ...", None, "driver:0"),
    # the node finished main_fun: a feed error, nobody to restart
    (STUCK, _finish_worker, None),
    # the data, not a node: a feed error
    ("tfos.errors.FeedError: a record of 9,000,000 bytes pickled is over the feed's frame limit", None, None),
])
def test_a_feed_that_breaks_mid_epoch_on_a_running_node_fails_the_run(spark_cluster, monkeypatch, error, before,
                                                                      failed):
    import tfos.cluster

    monkeypatch.setattr(tfos.cluster, "_NODE_REPORT_GRACE_S", 0.2)
    cluster = spark_cluster
    if before is not None:
        before(cluster)
    cluster._feeder = FeederRunningAJob(cluster, SparkWrapped(_spark_text(error)))
    with pytest.raises((ClusterFailedError, FeedError)) as err:
        cluster.train("data", num_epochs=1, feed_timeout=5)
    if failed is None:
        assert type(err.value) is FeedError and cluster.failures == []
        assert str(err.value).startswith("tfos: feed epoch 1 failed: org.apache.spark.api.python.PythonException")
    else:
        assert isinstance(err.value, ClusterFailedError) and [f.name for f in err.value.failures] == [failed]
        reason = err.value.failures[0].reason
        assert reason.startswith(f"{error.split(': ')[0].split('.')[-1]} tfos: feed epoch 1: ") and "stuck" in reason
        assert isinstance(err.value.__cause__, FeedError)


def test_the_drivers_cluster_spec_and_tensorboard_url_bracket_ipv6_hosts_as_tf_config_does(spark_cluster):
    from tfos.net import join_host_port
    from tfos.reservation import messages as m
    from tfos.roles import cluster_spec

    cluster, run_id = spark_cluster, spark_cluster.state.run_id
    for slot, host in ((0, "fd00::1"), (1, "fd00::2")):
        cluster.state.register(m.RegisterRequest(run_id=run_id, slot=slot, host=host, executor_id=str(slot),
                                                 port=2000 + slot, tensorboard_port=6006 if slot == 0 else 0))
    nodes = cluster.state.snapshot()
    # what each node's TF_CONFIG holds (node/supervisor.py builds it this way)
    tf_config_spec = cluster_spec([n.role for n in nodes], [join_host_port(n.host, n.port) for n in nodes])
    assert cluster.cluster_spec == tf_config_spec == {"chief": ["[fd00::1]:2000"], "worker": ["[fd00::2]:2001"]}
    assert [n.address for n in cluster.cluster_info] == ["[fd00::1]:2000", "[fd00::2]:2001"]
    cluster.config = dataclasses.replace(cluster.config, tensorboard=True)
    assert cluster.tensorboard_url() == "http://[fd00::1]:6006"
