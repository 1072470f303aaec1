"""tfos's Spark jobs: each runs in a thread of its own under the run's job group
(``SparkApp.start_job``, tfos/spark/app.py), can be cancelled quietly, and its failure
is read for the error the executor's Python raised.

A job runs in a thread so the caller can watch node failures (and a notebook's
interrupt) while it runs, and cancel it; the thread carries Spark's local properties
(``pyspark.InheritableThread``), so the job group reaches the job under pinned threads.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

#: characters of Spark's error text kept as a failure's traceback
ERROR_TEXT_CHARS = 8000

_BARRIER_TASK = re.compile(r"barrier task ResultTask\(\d+, (\d+)\)")
#: ``tfos.errors.FeedTimeout: waited ...``: a Python error's line in the traceback Spark wraps
_PY_ERROR = re.compile(r"^\s*((?:[\w.]+\.)?(\w+(?:Error|Exception|Timeout|Gone))): (.*)$", re.M)
#: qualified names of Spark's and Java's own exceptions (not the executor's Python error)
_JVM_PREFIXES = ("org.", "java.", "javax.", "scala.", "py4j.", "pyspark.")
#: where a message's continuation lines end: a blank line, a Java frame, Spark 4's SQLSTATE
_MESSAGE_END = re.compile(r"^\s*$|^\s+at |^\s*SQLSTATE: ")

def spark_thread(target: Callable[[], None], name: str, session: Any = None) -> threading.Thread:
    """A daemon thread that carries Spark's local properties (job group) under pinned threads;
    over Spark Connect (``session`` given) it starts with the caller's operation tags."""
    try:
        from pyspark import InheritableThread

        if session is not None:
            return InheritableThread(target=target, name=name, daemon=True, session=session)
        return InheritableThread(target=target, name=name, daemon=True)
    except ImportError:  # pragma: no cover - pyspark is a dependency
        return threading.Thread(target=target, name=name, daemon=True)


@dataclass
class JobOutcome:
    """What a job run by :func:`start_job` ended with; ``done`` is set when it ended."""

    value: Any = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


def cancel_job_group(sc, group: str) -> None:
    """Cancel every job of ``group``; quiet when the SparkContext is stopping or gone."""
    try:
        sc.cancelJobGroup(group)
    except Exception as exc:  # noqa: BLE001 - a stopping context cannot cancel; nothing runs then
        log.debug("cancelJobGroup(%s) failed: %s", group, exc)


def first_line(exc: BaseException) -> str:
    """The line of Spark's (long, Java-wrapped) error text that names the error."""
    lines = [line.strip(" :") for line in str(exc).strip().splitlines() if line.strip(" :")]
    for line in lines:
        if "Exception" in line or "Error" in line:
            return line[:500]
    return (lines[0] if lines else type(exc).__name__)[:500]


def error_text(exc: BaseException) -> str:
    """Spark's error text, cut to :data:`ERROR_TEXT_CHARS`, for a failure's traceback field."""
    return str(exc)[:ERROR_TEXT_CHARS]


def task_error(exc: BaseException) -> tuple[str, str] | None:
    """``(class name, message)`` of the Python error an executor raised, out of Spark's
    wrapping, e.g. ``("FeedTimeout", "waited 600 s for node worker:0 ...")``; ``None`` when
    the text has none. The last one wins: Spark's own exceptions come first."""
    text = str(exc)
    found = [m for m in _PY_ERROR.finditer(text) if not m.group(1).startswith(_JVM_PREFIXES)]
    if not found:
        return None
    last = found[-1]
    message = [last.group(3)]
    for line in text[last.end():].splitlines()[1:]:
        if _MESSAGE_END.match(line) or _PY_ERROR.match(line):
            break
        message.append(line)
    return last.group(2), "\n".join(message).strip()

def failed_partition(exc: BaseException, num_partitions: int) -> int | None:
    """The partition (node slot) Spark names in a failed barrier stage's message, if any."""
    match = _BARRIER_TASK.search(str(exc))
    if match and int(match.group(1)) < num_partitions:
        return int(match.group(1))
    return None


__all__ = ["JobOutcome", "cancel_job_group", "error_text", "failed_partition", "first_line", "spark_thread",
           "task_error"]
