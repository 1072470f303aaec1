"""Node output from the reservation server's request threads to the driver's log, through one thread.

Observers (the driver's log handlers, the terminal display, a user's handler behind
``logging``) may be slow or may block: a remote log shipper, a full pipe. Called from the
gRPC request threads, one such handler held every worker and hung the control plane
(heartbeats, reports, the stop order), not only the log. So an Observe call only puts its
lines on a bounded queue and returns; one daemon thread hands them to the observers.
When the queue is full the call's lines are dropped and counted, and the count reaches
the observers with that node's next delivered lines, as the node's own drops do.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading

from tfos.deadline import Deadline

log = logging.getLogger(__name__)

#: Observe calls queued at most (each at most MAX_OBSERVE_LINES lines of MAX_LINE_CHARS)
MAX_QUEUED_CALLS = 256
#: seconds the thread waits for work before it ends (the next call starts it again)
IDLE_S = 5.0


class OutputRelay:
    """``put`` never blocks; observers run in one thread, in the order the calls came."""

    def __init__(self, max_queued: int = MAX_QUEUED_CALLS):
        self._observers: list = []
        self._queue: queue.Queue = queue.Queue(maxsize=max_queued)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._held: collections.Counter = collections.Counter()  # node -> lines dropped here, not yet told
        #: lines dropped because the queue was full, over the relay's life
        self.dropped_lines = 0
        self._pending = 0  # put and not yet delivered
        self._idle = threading.Condition(self._lock)

    def add(self, callback) -> None:
        """``callback(node_name, lines, dropped_lines, progress_records)`` for every Observe call."""
        self._observers.append(callback)

    def put(self, node: str, lines: list[str], dropped: int, records: list[dict]) -> None:
        if not self._observers:
            return
        with self._lock:
            try:
                self._queue.put_nowait((node, lines, dropped, records))
            except queue.Full:
                self._held[node] += len(lines) + dropped
                self.dropped_lines += len(lines) + dropped
                return
            self._pending += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tfos-output-relay", daemon=True)
                self._thread.start()

    def flush(self, timeout_s: float = 2.0) -> bool:
        """Wait (at most ``timeout_s``) until every queued call reached the observers."""
        deadline = Deadline(timeout_s, "node output to reach the driver's log")
        with self._idle:
            return deadline.wait_for(self._idle, lambda: self._pending == 0)

    def _run(self) -> None:
        while True:
            try:
                node, lines, dropped, records = self._queue.get(timeout=IDLE_S)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            with self._lock:
                dropped += self._held.pop(node, 0)
            for observer in list(self._observers):
                try:
                    observer(node, lines, dropped, records)
                except Exception:  # noqa: BLE001 - watching must never stop the relay
                    log.exception("an output observer failed")
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()
