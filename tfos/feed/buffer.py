"""A node's buffer of fed chunks, filled only into room it granted first.

Why grants: synchronous nodes (MultiWorkerMirroredStrategy) take data in lockstep, so a
feeding task that blocks on one node's full buffer while another node starves stops both
for good (TensorFlowOnSpark's feed deadlock). Here a feeding task holds a connection to
every node and sends a chunk only where it was granted room, so it never blocks on a full
node while another could take data; it waits only when every node that still wants
records is full, and full nodes are nodes with data to step on.

A grant reserves one chunk slot and up to ``max_records`` of the epoch's allowance (the
records the driver's plan gives this node per epoch), so concurrent feeding tasks never
overfill the node: when the allowance is used up the node has its whole share and refuses
more (``CAPPED``). States of one grant::

    grant() ──► reserved ──fill()──► queued ──get()──► read
                   └──release()──► returned (slot and unused records back)

Markers (the driver's epoch plans and end of feed) and inference chunks bypass grants:
markers always go in (tiny, and they must never wait behind data), inference chunks wait
for a free slot, as inference has no lockstep and no allowance.
"""

from __future__ import annotations

import collections
import queue
import threading
import time

from tfos.errors import FeedError

#: why ``grant`` gave no room: the node has its whole share of the epoch, or called terminate()
CAPPED, TERMINATED = "capped", "terminated"


class FeedBuffer:
    """Chunks of one queue name, at most ``capacity`` (queued plus reserved). Thread-safe."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise FeedError(f"a feed buffer needs room for one chunk at least; received: capacity={capacity}")
        self._capacity = capacity
        self._items: collections.deque = collections.deque()  # (is a chunk, item)
        self._chunks = 0  # chunks in _items (markers take no room)
        self._cond = threading.Condition()
        self._reserved_slots = 0
        self._reserved_records = 0
        self._allowance = 0  # records of the current epoch not granted yet
        self._terminated = False
        # what the buffer saw, for the errors that explain a stall
        self._epoch_expected = 0
        self._epoch_received = 0

    # ------------------------------------------------------------------ feeding side

    def grant(self, max_records: int, cancelled=lambda: False, poll_s: float = 0.2) -> tuple[int, str]:
        """Block until a chunk slot and some of the epoch's allowance are free; reserve them.

        Returns ``(records, "")``: the grant, at most ``max_records``; or ``(0, CAPPED)`` once
        every record of the epoch is in (nothing can be granted any more), or
        ``(0, TERMINATED)``; or ``(0, "")`` when ``cancelled()`` turned true.
        """
        with self._cond:
            while True:
                if self._terminated:
                    return 0, TERMINATED
                if cancelled():
                    return 0, ""
                if self._allowance <= 0 and self._reserved_records == 0:
                    return 0, CAPPED
                if self._allowance > 0 and self._chunks + self._reserved_slots < self._capacity:
                    records = min(max_records, self._allowance)
                    self._allowance -= records
                    self._reserved_slots += 1
                    self._reserved_records += records
                    return records, ""
                self._cond.wait(poll_s)

    def fill(self, granted: int, item, records: int, partition=None) -> None:
        """Queue ``item`` (``records`` records of ``partition``) into the slot of a
        ``granted``-record grant; more records than granted return the grant and raise."""
        with self._cond:
            if records > granted:
                # the grant's slot and records are returned; the connection is then dropped
                self._return(granted)
                raise FeedError(f"a feeding task sent {records} records of partition {partition} "
                                f"on a grant of {granted}")
            self._reserved_slots -= 1
            self._reserved_records -= granted
            self._allowance += granted - records
            self._epoch_received += records
            if not self._terminated:
                self._items.append((True, item))
                self._chunks += 1
            self._cond.notify_all()

    def release(self, granted: int) -> None:
        """Give back a grant that no chunk used (its connection ended)."""
        with self._cond:
            self._return(granted)
            self._cond.notify_all()

    def _return(self, granted: int) -> None:
        self._reserved_slots -= 1
        self._reserved_records -= granted
        self._allowance += granted

    def put(self, item, cancelled=lambda: False, poll_s: float = 0.2) -> bool:
        """Queue ``item`` once a slot is free (inference); False if cancelled or terminated first."""
        with self._cond:
            while self._chunks + self._reserved_slots >= self._capacity:
                if self._terminated or cancelled():
                    return False
                self._cond.wait(poll_s)
            if self._terminated:
                return False
            self._items.append((True, item))
            self._chunks += 1
            self._cond.notify_all()
            return True

    def put_marker(self, item, epoch_records: int | None = None) -> None:
        """Queue a marker now, whatever the room; an epoch's plan also opens its allowance."""
        with self._cond:
            if epoch_records is not None:
                self._allowance = epoch_records
                self._epoch_expected = epoch_records
                self._epoch_received = 0
            self._items.append((False, item))
            self._cond.notify_all()

    # ------------------------------------------------------------------- reading side

    def get(self, timeout_s: float):
        """The oldest item; raises ``queue.Empty`` after ``timeout_s`` with nothing queued."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not self._items:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise queue.Empty
                self._cond.wait(left)
            is_chunk, item = self._items.popleft()
            self._chunks -= is_chunk
            self._cond.notify_all()
            return item

    def wake(self) -> None:
        """Wake waiting grants and puts at once, to see their ``cancelled`` turn true."""
        with self._cond:
            self._cond.notify_all()

    def terminate(self) -> None:
        """Drop what is queued and refuse the rest: feeding tasks skip to their end."""
        with self._cond:
            self._terminated = True
            self._items.clear()
            self._chunks = 0
            self._cond.notify_all()

    @property
    def queued(self) -> int:
        """Chunks waiting to be read."""
        with self._cond:
            return self._chunks

    def describe(self) -> str:
        """The buffer's state, for errors that explain a stall."""
        with self._cond:
            return (f"{self._chunks} of {self._capacity} chunks queued, {self._reserved_slots} granted; "
                    f"{self._epoch_received} of {self._epoch_expected} records of the epoch in")
