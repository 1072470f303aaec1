"""Deadlines as objects: every wait in tfos has one, and its error names what it waited for."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Deadline:
    """A point in monotonic time plus the words its timeout error will use.

    Args:
        timeout_s: seconds from now; ``None`` means "no limit" and is only for
            waits whose caller gave no limit on purpose.
        what: what is being waited for, e.g. "4 executors to register".
    """

    def __init__(self, timeout_s: float | None, what: str):
        self.timeout_s = timeout_s
        self.what = what
        self._start = time.monotonic()
        self._end = None if timeout_s is None else self._start + timeout_s

    def remaining(self) -> float | None:
        """Seconds left (never negative), or ``None`` when unlimited."""
        if self._end is None:
            return None
        return max(0.0, self._end - time.monotonic())

    def expired(self) -> bool:
        return self._end is not None and time.monotonic() >= self._end

    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def slice(self, at_most: float) -> float:
        """The time to block now: the remaining time capped at ``at_most``."""
        left = self.remaining()
        return at_most if left is None else min(left, at_most)

    def wait_for(self, cond: threading.Condition, predicate: Callable[[], T]) -> T:
        """Wait on ``cond`` (held by the caller) until ``predicate()`` is truthy or time runs out.

        Returns the predicate's last value (falsy when the deadline passed).
        """
        return cond.wait_for(predicate, timeout=self.remaining())

    def message(self, progress: str, hint: str = "") -> str:
        """The timeout error text: what, how long, what arrived, what to check."""
        waited = self.elapsed() if self.timeout_s is None else self.timeout_s
        text = f"waited {waited:g} s for {self.what}; {progress}"
        if hint:
            text += f"; {hint}"
        return text
