"""Length-prefixed frames over a local pipe between a node's own processes."""

from __future__ import annotations

import json
import struct

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
