"""The node's running commentary for the driver: the TF process's output lines and its
progress records, batched and sent with the reservation client's ``Observe`` call.

Best effort by design: a bounded buffer (lines past it are counted as dropped, never
waited for), one short call per batch, failures swallowed. Training can never block on
it; the full output is still in the executor's log.
"""

from __future__ import annotations

import collections
import json
import logging
import threading

from tfos.errors import ReservationError
from tfos.node.process import is_tf_noise
from tfos.reservation import messages as m

log = logging.getLogger(__name__)


class Observer:
    """Buffers lines and progress records; a thread sends them every ``interval_s`` once started."""

    def __init__(self, client, interval_s: float = 0.5, max_lines: int = 5000):
        self._client = client
        self._interval_s = interval_s
        self._max_lines = max_lines
        self._lines: collections.deque[str] = collections.deque()
        self._progress: collections.deque[str] = collections.deque(maxlen=200)
        self._dropped = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent_lines = 0

    def line(self, text: str) -> None:
        if is_tf_noise(text):
            return  # still in the executor's log; the driver's log gets what the user printed
        with self._lock:
            if len(self._lines) >= self._max_lines:
                self._dropped += 1
            else:
                self._lines.append(text[:m.MAX_LINE_CHARS])

    def progress(self, record: dict) -> None:
        text = json.dumps(record, default=str)
        if len(text) <= m.MAX_PROGRESS_CHARS:
            with self._lock:
                self._progress.append(text)

    def start(self) -> None:
        """Begin sending (after the node registered: the server refuses news from strangers)."""
        self._thread = threading.Thread(target=self._run, name="tfos-observe", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 2.0) -> None:
        """Send what is left (the last lines before the process ended), then stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.flush()

    def flush(self) -> None:
        while True:
            with self._lock:
                lines = [self._lines.popleft() for _ in range(min(len(self._lines), m.MAX_OBSERVE_LINES))]
                progress = list(self._progress)
                self._progress.clear()
                dropped, self._dropped = self._dropped, 0
            if not (lines or progress or dropped):
                return
            try:
                self._client.observe(lines, dropped, progress, timeout_s=2.0)
                self.sent_lines += len(lines)
            except ReservationError as exc:
                log.debug("output for the driver dropped (%d lines): %s", len(lines), exc)
                with self._lock:
                    self._dropped += len(lines)
                return
            if len(lines) < m.MAX_OBSERVE_LINES:
                return
