"""Length-prefixed frames over a local pipe between a node's own processes, and the
events its children report on them.

An event is one JSON frame ``{"event": kind, ...}``; one marked ``"attached": true`` is
followed by one raw frame (an instance's pickled result), which the reader puts in
``event["attachment"]``. Written by :class:`EventWriter`, read by :func:`read_events`:
the TF process and a ``parallel_run`` instance to their parent, the supervisor to its
node task.
"""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Iterator

_LEN = struct.Struct(">I")
MAX_FRAME = 1 << 30


def write_frame(stream, data: bytes) -> None:
    stream.write(_LEN.pack(len(data)))
    stream.write(data)
    stream.flush()


def read_frame(stream) -> bytes | None:
    """The next frame, or ``None`` at end of stream."""
    head = _read_exact(stream, _LEN.size)
    if head is None:
        return None
    (size,) = _LEN.unpack(head)
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes exceeds {MAX_FRAME}")
    body = _read_exact(stream, size)
    if body is None:
        raise EOFError("stream ended inside a frame")
    return body


def write_json(stream, obj) -> None:
    write_frame(stream, json.dumps(obj).encode())


def read_json(stream):
    data = read_frame(stream)
    return None if data is None else json.loads(data)


def _read_exact(stream, size: int) -> bytes | None:
    chunks, got = [], 0
    while got < size:
        chunk = stream.read(size - got)
        if not chunk:
            if got == 0:
                return None
            raise EOFError("stream ended inside a frame")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


class EventWriter:
    """Writes events to a child's status pipe; callable from any thread.

    Never raises: a parent that is gone cannot hear the event anyway, and the child's exit
    code still tells its story.
    """

    def __init__(self, stream):
        self._stream = stream
        self._lock = threading.Lock()

    def __call__(self, event: str, *, attachment: bytes | None = None, **fields) -> None:
        """Send ``{"event": event, **fields}``, then ``attachment`` as a frame of its own."""
        message = {"event": event, **fields}
        if attachment is not None:
            message["attached"] = True
        with self._lock:
            try:
                write_json(self._stream, message)
                if attachment is not None:
                    write_frame(self._stream, attachment)
            except (OSError, ValueError):
                pass


def read_events(stream) -> Iterator[dict]:
    """The events on ``stream`` in order, each with its attachment; blocks for each.

    Ends when the writer closes its end, or the stream breaks or carries a malformed
    frame (the writer died mid-write: its exit code is the news then); closes ``stream``.
    """
    with stream:
        while True:
            try:
                event = read_json(stream)
                if event is None:
                    return
                if event.pop("attached", False):
                    event["attachment"] = read_frame(stream)
            except (OSError, ValueError, EOFError):
                return
            yield event
