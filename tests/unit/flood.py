"""An unauthenticated flood of a reservation server, in a process of its own:
``python -m tests.unit.flood HOST:PORT SECONDS [IN_FLIGHT [CONNECTIONS]]``.

Keeps ``IN_FLIGHT`` unsigned ``Register`` calls pipelined on ``CONNECTIONS`` HTTP/2
connections (as a hostile peer on the network could) until ``SECONDS`` pass; prints the calls sent and how
they ended, as JSON, on stdout; SIGTERM ends it sooner.
"""

from __future__ import annotations

import collections
import json
import signal
import sys
import threading
import time

import grpc

from tfos.reservation import messages as m


def flood(address: str, seconds: float, in_flight: int, connections: int = 1) -> dict:
    # a local subchannel pool per channel: a connection each, not one shared by all
    channels = [grpc.insecure_channel(address, options=[("grpc.enable_retries", 0),
                                                        ("grpc.use_local_subchannel_pool", 1)])
                for _ in range(connections)]
    calls = [c.unary_unary(m.method_path("Register"), request_serializer=None, response_deserializer=None)
             for c in channels]
    body = m.RegisterRequest(run_id="flood", slot=0, executor_id="x", host="h", port=1).SerializeToString()
    slots = threading.BoundedSemaphore(in_flight)
    codes: collections.Counter = collections.Counter()
    lock = threading.Lock()

    def done(future) -> None:
        code = future.code() if future.exception() is not None else grpc.StatusCode.OK
        with lock:
            codes[code.name] += 1
        slots.release()

    end = time.monotonic() + seconds
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    sent = 0
    while time.monotonic() < end and not stop.is_set():
        if not slots.acquire(timeout=0.1):
            continue
        # well-formed and fresh, with a wrong mac: the server computes the HMAC before refusing
        token = f"v1.{int(time.time() * 1000)}.{sent:024x}.{'0' * 64}"
        future = calls[sent % connections].future(body, timeout=30, metadata=(("tfos-signature", token),))
        future.add_done_callback(done)
        sent += 1
    for _ in range(in_flight):  # the calls still out end (or time out)
        slots.acquire(timeout=10)
    for channel in channels:
        channel.close()
    return {"sent": sent, "codes": dict(codes)}


if __name__ == "__main__":
    address, seconds = sys.argv[1], float(sys.argv[2])
    in_flight = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    connections = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    print(json.dumps(flood(address, seconds, in_flight, connections)), flush=True)
