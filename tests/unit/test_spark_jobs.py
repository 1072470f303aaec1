"""Reading the executor's Python error out of Spark's wrapping (the shape is Spark 4.x's, as a
local job that raised FeedTimeout printed it), and a job run under a job group."""

from __future__ import annotations

import threading

import pytest

from tfos.spark.app import ClassicApp
from tfos.spark.jobs import cancel_job_group, failed_partition, first_line, task_error

pytestmark = pytest.mark.timeout(30)

MESSAGE = ("waited 5 s for node worker:0 (executor 1) to read its feed (3 records of partition 0 sent to it); "
           "did the node hang?")
SPARK_TEXT = f"""An error occurred while calling z:org.apache.spark.api.python.PythonRDD.collectAndServe.
: org.apache.spark.api.python.PythonException: [PYTHON_EXCEPTION] An exception was thrown from the Python worker: \
Traceback (most recent call last):
  File "/x/pyspark.zip/pyspark/worker.py", line 4327, in invoke_udf
  File "/tmp/job.py", line 8, in f
    raise FeedTimeout("...")
tfos.errors.FeedTimeout: {MESSAGE}
 SQLSTATE: 38000
\tat org.apache.spark.api.python.BasePythonRunner$ReaderIterator.handlePythonException(PythonRunner.scala:1097)
\tat org.apache.spark.api.python.PythonRunner$$anon$5.read(PythonRunner.scala:1642)
"""


class Wrapped(Exception):
    """Stands for Py4JJavaError: its str() is Spark's text."""


@pytest.mark.parametrize("text,expected", [
    (SPARK_TEXT, ("FeedTimeout", MESSAGE)),
    # a message over several lines, up to the blank line
    ("py4j.protocol.Py4JJavaError: An error occurred\ntfos.errors.DataError: column 'x' is null\n  in row 3\n\n"
     "\tat org.apache.spark.Foo", ("DataError", "column 'x' is null\n  in row 3")),
    # the last Python error wins over Spark's and Java's own
    ("org.apache.spark.SparkException: Job aborted\nValueError: first\nKeyError: 'second'",
     ("KeyError", "'second'")),
    ("org.apache.spark.SparkException: Job 3 cancelled part of cancelled job group tfos-1", None),
])
def test_task_error_is_the_executors_python_error(text, expected):
    assert task_error(Wrapped(text)) == expected


def test_first_line_and_failed_partition_read_sparks_summary():
    text = ("org.apache.spark.SparkException: Job aborted due to stage failure: Could not recover from a failed "
            "barrier ResultStage. Most recent failure reason: Stage failed because barrier task "
            "ResultTask(147, 1) finished unsuccessfully.")
    assert first_line(Wrapped("\n: " + text)) == text[:500]
    assert failed_partition(Wrapped(text), 2) == 1
    assert failed_partition(Wrapped(text), 1) is None  # not a slot of this run


class StandInSpark:
    def __init__(self, fail_cancel: bool = False):
        self.groups: list[tuple] = []
        self.fail_cancel = fail_cancel

    def setJobGroup(self, group, description, interruptOnCancel=False):
        self.groups.append((group, description, interruptOnCancel, threading.current_thread().name))

    def cancelJobGroup(self, group):
        if self.fail_cancel:
            raise RuntimeError("SparkContext stopped")


def test_a_job_runs_in_its_own_thread_under_the_group_and_reports_its_end():
    sc, ended = StandInSpark(), threading.Event()
    ok = ClassicApp(sc).start_job("g1", "tfos: feed", lambda: 42, name="tfos-feed-x", on_end=ended.set)
    assert ok.done.wait(10) and ended.is_set()
    assert (ok.value, ok.error) == (42, None)
    assert sc.groups == [("g1", "tfos: feed", True, "tfos-feed-x")]

    def boom():
        raise KeyError("lost")

    bad = ClassicApp(sc).start_job("g2", "d", boom, name="t")
    assert bad.done.wait(10) and isinstance(bad.error, KeyError) and bad.value is None
    cancel_job_group(StandInSpark(fail_cancel=True), "g2")  # a stopping context: quiet
