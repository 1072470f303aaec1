"""Ctrl-C in a Cluster's calls, and its repr, without Spark: a fake SparkApp runs the
node job as threads that talk to the run's real reservation server as node supervisors
do (register, await the cluster, report running, long-poll heartbeats, report stopped).

A node whose Spark task is killed (the fake's cancel) before the driver's stop order
reached it reports a failure, as a real supervisor does when its task dies: so "no
failures" below also says the stop order went out before Spark's cancel.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from tfos.cluster import Cluster
from tfos.config import RunConfig
from tfos.reservation.client import ReservationClient
from tfos.spark.app import SparkApp
from tfos.spark.env import SparkFacts
from tfos.user_code import pack_main_fun

pytestmark = pytest.mark.timeout(60)


def _main_fun(args, ctx):  # never runs: the fake nodes do not call it
    return None


class _FakeNode(threading.Thread):
    """Trains ``train_s`` seconds (forever: None), then reports done; stops on the stop order."""

    def __init__(self, cluster: Cluster, slot: int, killed: threading.Event, stop_delay_s: float,
                 train_s: float | None):
        super().__init__(name=f"fake-node-{slot}", daemon=True)
        self.cluster, self.slot, self.killed, self.stop_delay_s = cluster, slot, killed, stop_delay_s
        self.train_s = train_s
        self.outcome = ""

    def run(self) -> None:
        c = self.cluster
        with ReservationClient(c.server.address, c._secret, c.run_id, self.slot) as client:
            client.register(executor_id=str(self.slot), host="127.0.0.1", port=30000 + self.slot,
                            pid=os.getpid(), tensorboard_port=36006 if self.slot == 0 else 0, timeout_s=10)
            reply = client.await_cluster(timeout_s=30, poll_s=0.5)
            if not reply.ready:
                self.outcome = "aborted"  # a real supervisor aborts without a report
                return
            client.report("running")
            trained = time.monotonic() + (self.train_s if self.train_s is not None else 1e9)
            while True:
                if time.monotonic() > trained:
                    record = {"epoch": 1, "epochs": 1, "metrics": {"loss": 0.5}, "epoch_end": True}
                    client.observe([f"slot {self.slot} trained"], progress=[json.dumps(record)])
                    client.report("done", exit_code=0, timeout_s=2)
                    self.outcome = "done"
                    return
                if self.killed.is_set():
                    client.report("failed", message="parent process (the Spark task) is gone", timeout_s=2)
                    self.outcome = "killed"
                    return
                if client.heartbeat("running", wait_s=0.2).stop:
                    time.sleep(self.stop_delay_s)  # a TF process that takes its time to exit
                    client.report("stopped", timeout_s=2)
                    self.outcome = "stopped"
                    return


class _FakeApp(SparkApp):
    """``run_barrier`` starts ``started`` fake nodes (the others stay pending in "Spark") and
    returns when they end; ``cancel`` kills them, and the job raises as Spark's does."""

    def __init__(self, started: int = 2, stop_delay_s: float = 0.0, hang_after_nodes: bool = False,
                 train_s: float | None = None):
        self.sc = None
        self.started, self.stop_delay_s, self.hang_after_nodes = started, stop_delay_s, hang_after_nodes
        self.train_s = train_s
        self.cluster: Cluster | None = None
        self.nodes: list[_FakeNode] = []
        self.cancels: list[tuple[str, float]] = []
        self._killed = threading.Event()

    def get(self, key, default=None):
        return default

    def set_group(self, group, description):
        pass

    def run_barrier(self, n, task, description):
        self.nodes = [_FakeNode(self.cluster, slot, self._killed, self.stop_delay_s, self.train_s)
                      for slot in range(self.started)]
        for node in self.nodes:
            node.start()
        if self.started < n or self.hang_after_nodes:
            self._killed.wait()
        for node in self.nodes:
            node.join(10)
        if self._killed.is_set():
            raise RuntimeError(f"Job group {self.cluster.job_group} cancelled")
        return [{"slot": i, "outcome": node.outcome} for i, node in enumerate(self.nodes)]

    def cancel(self, group):
        self.cancels.append((group, time.monotonic()))
        self._killed.set()


def _cluster(app: _FakeApp, **options) -> Cluster:
    facts = SparkFacts(master="local-cluster[2,1,1024]", executor_cores=1, task_cpus=1, dynamic_allocation=False,
                       configured_executors=2, driver_host="127.0.0.1", default_fs="file:///",
                       omp_num_threads_set=False)
    config = RunConfig(num_executors=2, heartbeat_interval_s=0.2, heartbeat_timeout_s=10.0,
                       stop_grace_s=1.0, reservation_timeout=30, **options)
    cluster = Cluster(app, config, facts, pack_main_fun(_main_fun, None))
    app.cluster = cluster
    return cluster


def _interrupt_after(delay_s: float, times: int = 1, every_s: float = 0.3) -> list[float]:
    """SIGINT to this process (the main thread raises KeyboardInterrupt) after ``delay_s``."""
    sent: list[float] = []

    def send():
        time.sleep(delay_s)
        for _ in range(times):
            sent.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(every_s)

    threading.Thread(target=send, daemon=True).start()
    return sent


def _assert_all_stopped(cluster: Cluster, app: _FakeApp) -> None:
    assert cluster.closed
    assert cluster.failures == []  # an interrupt is no node failure, and no node was killed first
    assert [n.outcome for n in app.nodes] == ["stopped"] * len(app.nodes)
    assert [g for g, _ in app.cancels][:1] == [cluster.job_group]
    assert not any(n.is_alive() for n in app.nodes)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


def test_ctrl_c_in_shutdown_cancels_the_job_stops_every_node_and_raises_in_seconds():
    app = _FakeApp()
    cluster = _cluster(app)
    cluster.start()
    sent = _interrupt_after(0.5)
    with pytest.raises(KeyboardInterrupt):
        cluster.shutdown()  # the fake nodes would train forever
    raised_after = time.monotonic() - sent[0]
    assert raised_after < 3.0, raised_after
    _assert_all_stopped(cluster, app)
    assert "interrupted" in repr(cluster)
    cluster.shutdown()  # a second call returns: nothing failed, nothing to do


def test_ctrl_c_while_the_cluster_forms_cancels_the_pending_node_job():
    app = _FakeApp(started=1)  # the second node task never starts (no free executor)
    cluster = _cluster(app)
    sent = _interrupt_after(1.0)
    with pytest.raises(KeyboardInterrupt):
        cluster.start()
    assert time.monotonic() - sent[0] < 3.0
    assert cluster.closed and cluster.failures == []
    assert [g for g, _ in app.cancels][:1] == [cluster.job_group]
    assert [n.outcome for n in app.nodes] == ["aborted"]


def test_a_second_ctrl_c_during_the_teardown_is_deferred_and_nothing_is_left():
    app = _FakeApp(stop_delay_s=1.0)  # the nodes take a second to stop: the second Ctrl-C lands in teardown
    cluster = _cluster(app)
    cluster.start()
    sent = _interrupt_after(0.5, times=3, every_s=0.3)
    with pytest.raises(KeyboardInterrupt):
        cluster.shutdown()
    assert len(sent) >= 2
    assert time.monotonic() - sent[0] < 4.0
    _assert_all_stopped(cluster, app)


def test_teardown_cancels_a_node_job_that_outlives_its_stopped_nodes(monkeypatch):
    monkeypatch.setattr(Cluster, "_UNCANCELLED_JOB_S", 1.0)
    app = _FakeApp(hang_after_nodes=True, train_s=0.3)  # its tasks do not return when the nodes ended
    cluster = _cluster(app)
    cluster.start()
    start = time.monotonic()
    cluster.shutdown()  # not failed, not interrupted: still cancels the stuck job
    assert [g for g, _ in app.cancels] == [cluster.job_group]
    assert app.cancels[0][1] - start < 3.0
    assert cluster.failures == [] and [n.outcome for n in app.nodes] == ["done", "done"]


def test_ctrl_c_during_a_normal_teardown_cuts_it_short_and_raises(monkeypatch):
    monkeypatch.setattr(Cluster, "_UNCANCELLED_JOB_S", 30.0)
    app = _FakeApp(hang_after_nodes=True, train_s=0.3)
    cluster = _cluster(app)
    cluster.start()
    sent = _interrupt_after(1.5)  # shutdown's own waits are over by then: its teardown waits on the job
    with pytest.raises(KeyboardInterrupt):
        cluster.shutdown()
    assert sent and time.monotonic() - sent[0] < 3.0
    assert [g for g, _ in app.cancels][:1] == [cluster.job_group]
    assert cluster.failures == []


def _running(cluster: Cluster) -> None:
    assert cluster.state.wait_until(lambda: cluster.state.all_nodes(lambda n: n.state == "running"), 10)


def test_repr_of_a_fresh_cluster_lists_its_roles_unregistered():
    cluster = _cluster(_FakeApp())
    assert repr(cluster) == (f"Cluster(run {cluster.run_id}, reserving, 2 nodes)\n"
                             "  chief:0   -  -  unregistered\n"
                             "  worker:0  -  -  unregistered")


def test_repr_of_a_running_cluster_has_addresses_executors_states_progress_and_tensorboard():
    app = _FakeApp(train_s=1.0)
    cluster = _cluster(app, tensorboard=True)
    cluster.start()
    try:
        _running(cluster)
        assert repr(cluster) == (f"Cluster(run {cluster.run_id}, ready, 2 nodes)\n"
                                 "  chief:0   127.0.0.1:30000  executor 0  running\n"
                                 "  worker:0  127.0.0.1:30001  executor 1  running\n"
                                 "  TensorBoard: http://127.0.0.1:36006")
        assert cluster._repr_html_() == (
            f"<div><b>Cluster(run {cluster.run_id}, ready, 2 nodes)</b><table><tr><th>node</th>"
            "<th>address</th><th>executor</th><th>state</th><th>progress</th></tr>"
            "<tr><td><b>chief:0</b></td><td><code>127.0.0.1:30000</code></td><td>executor 0</td><td>running</td>"
            "<td></td></tr>"
            "<tr><td><b>worker:0</b></td><td><code>127.0.0.1:30001</code></td><td>executor 1</td><td>running</td>"
            "<td></td></tr>"
            "</table><div>TensorBoard: <a href=\"http://127.0.0.1:36006\" target=\"_blank\">"
            "http://127.0.0.1:36006</a></div></div>")
    finally:
        cluster.shutdown()
    # with each node's last progress record
    assert repr(cluster) == (f"Cluster(run {cluster.run_id}, finished, 2 nodes)\n"
                             "  chief:0   127.0.0.1:30000  executor 0  done  epoch 1/1 loss=0.5\n"
                             "  worker:0  127.0.0.1:30001  executor 1  done  epoch 1/1 loss=0.5\n"
                             "  TensorBoard: http://127.0.0.1:36006")


def test_repr_of_a_failed_cluster_names_the_root_cause():
    from tfos.errors import ClusterFailedError

    app = _FakeApp()
    cluster = _cluster(app)
    cluster.start()
    _running(cluster)
    cluster.state.fail(1, "raised ValueError in main_fun\nTraceback ...")
    with pytest.raises(ClusterFailedError):
        cluster.shutdown()
    lines = repr(cluster).splitlines()
    assert lines[0] == f"Cluster(run {cluster.run_id}, failed, 2 nodes; failed at worker:0: raised ValueError in main_fun)"
    assert lines[2] == "  worker:0  127.0.0.1:30001  executor 1  failed"  # the chief: stopped, or killed by the cancel


def test_repr_of_a_torn_down_cluster_says_finished_and_an_interrupted_one_says_so():
    cluster = _cluster(_FakeApp())
    cluster.teardown()  # never started: nothing ran, nothing to stop
    assert repr(cluster).splitlines()[0] == f"Cluster(run {cluster.run_id}, finished, 2 nodes)"
    cluster = _cluster(_FakeApp())
    cluster._interrupt()
    assert repr(cluster).splitlines()[0] == f"Cluster(run {cluster.run_id}, finished, interrupted, 2 nodes)"


def test_repr_never_raises(monkeypatch):
    cluster = _cluster(_FakeApp())

    def broken():
        raise RuntimeError("state gone")

    monkeypatch.setattr(cluster.state, "snapshot", broken)
    assert repr(cluster) == f"Cluster(run_id={cluster.run_id!r}, nodes=2)"
    assert cluster._repr_html_() == f"<pre>Cluster(run_id=&#x27;{cluster.run_id}&#x27;, nodes=2)</pre>"


class _RecordingDisplay:
    """A live display (tfos.progress) that keeps what the Cluster told it."""

    def __init__(self):
        self.events: list[tuple] = []

    def show(self):
        self.events.append(("show",))

    def set_states(self, states):
        if not self.events or self.events[-1] != ("states", states):
            self.events.append(("states", dict(states)))

    def update(self, node, record):
        self.events.append(("update", node, record.get("metrics")))

    def close(self, states=None):
        self.events.append(("close", states))


def test_the_live_display_follows_states_and_progress_from_start_to_the_final_states(monkeypatch):
    import tfos.progress

    made: list[_RecordingDisplay] = []
    monkeypatch.setattr(tfos.progress, "live_display", lambda: made.append(_RecordingDisplay()) or made[-1])
    app = _FakeApp(train_s=1.0)
    cluster = _cluster(app)
    cluster.start()
    cluster.shutdown()
    assert len(made) == 1  # one display per run, chosen in start()
    events = made[0].events
    assert events[0] == ("states", {"chief:0": "unregistered", "worker:0": "unregistered"})
    assert ("states", {"chief:0": "running", "worker:0": "running"}) in events
    assert ("show",) in events  # shutdown() shows it again (a notebook: in its own cell)
    assert sorted(e[1] for e in events if e[0] == "update") == ["chief:0", "worker:0"]
    assert events[-1] == ("close", {"chief:0": "done", "worker:0": "done"})
