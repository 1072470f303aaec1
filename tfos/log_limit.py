"""Logging that an unauthenticated peer cannot turn into a flood.

Refusals of unauthenticated input are worth a log line (they are how an operator learns
of a misconfigured or hostile client), but one line per refusal lets any peer that can
reach a port write thousands of lines a second into the driver's or an executor's log.
A :class:`RateLimitedLog` writes the first refusal of each interval in full, counts the
rest, and says how many it held back with the next line it writes (or at ``flush``).
"""

from __future__ import annotations

import logging
import threading
import time

#: seconds between full lines of one RateLimitedLog
INTERVAL_S = 10.0


class RateLimitedLog:
    """At most one line per ``interval_s`` for one kind of event; the rest are counted. Thread-safe.

    Args:
        logger: where lines go.
        what: the event in the plural, for the summary ("refused feed connections").
        interval_s: seconds between full lines.
        clock: monotonic seconds; a parameter for tests.
    """

    def __init__(self, logger: logging.Logger, what: str, interval_s: float = INTERVAL_S,
                 level: int = logging.WARNING, clock=time.monotonic):
        self._logger = logger
        self._what = what
        self._interval_s = interval_s
        self._level = level
        self._clock = clock
        self._lock = threading.Lock()
        self._next_at = float("-inf")
        self._held = 0
        #: every event seen, logged or held back
        self.total = 0

    def log(self, msg: str, *args) -> None:
        with self._lock:
            self.total += 1
            now = self._clock()
            if now < self._next_at:
                self._held += 1
                return
            held, self._held = self._held, 0
            self._next_at = now + self._interval_s
        if held:
            msg += " (and %d more %s in the last %g s, not logged one by one)"
            args = (*args, held, self._what, self._interval_s)
        self._logger.log(self._level, msg, *args)

    def flush(self) -> None:
        """Say how many events were held back since the last line, if any."""
        with self._lock:
            held, self._held = self._held, 0
        if held:
            self._logger.log(self._level, "%d more %s, not logged one by one", held, self._what)
