"""RestartingCluster's bookkeeping, with stand-in attempts (no Spark): when it restarts,
where the feed resumes, and what the final error says."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest

from tfos.errors import ClusterFailedError, NodeFailure
from tfos.restart import RestartingCluster


@dataclass
class Report:
    qname: str
    epochs_fed: int


@dataclass
class State:
    cond: threading.Condition = field(default_factory=threading.Condition)
    failures: list = field(default_factory=list)


class Attempt:
    """A started cluster that fails on cue: ``fail_after`` epochs into ``train``, or in ``shutdown``."""

    def __init__(self, number: int, fail_after: int | None = None, fail_shutdown: bool = False):
        self.number = number
        self.fail_after = fail_after
        self.fail_shutdown = fail_shutdown
        self.state = State()
        self._closed = False
        self.feed_reports: list[Report] = []
        self.trained: list[int] = []

    def failures_(self):
        return list(self.state.failures)

    failures = property(failures_)

    def _fail(self, reason: str):
        with self.state.cond:
            self.state.failures.append(NodeFailure("worker", 0, "h", "1", f"{reason} (attempt {self.number})"))
            self.state.cond.notify_all()
        raise ClusterFailedError(self.state.failures, "fake")

    def train(self, data, num_epochs, feed_timeout, qname):
        self.trained.append(num_epochs)
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
        self._closed = True

    def _teardown(self):
        self._closed = True


def make(plans: list[dict]):
    made: list[Attempt] = []

    def start(number: int) -> Attempt:
        attempt = Attempt(number, **plans[number])
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
    assert made[0]._closed  # the failed attempt was torn down
    assert len(cluster.attempt_failures) == 1 and cluster.attempt == 1


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
