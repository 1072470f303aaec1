"""What peers without the secret cost tfos's endpoints, as a ratio to a quiet run.

Feed: a real ``FeedServer`` on 127.0.0.1; the figure is a real feeder's handshake time
while ``--peers`` idle connections are held open, against the same handshake with no
flood (reference, same run), plus the connection threads the flood holds and the log
lines its refusals write. Reservation: unauthenticated calls from one client against a
real server: the rate it refuses them, and the log lines they write.

Usage: python bench/preauth.py [--peers 1000] [--handshakes 200] [--calls 5000]
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import socket
import statistics
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import grpc  # noqa: E402

from tfos.feed import protocol as p  # noqa: E402
from tfos.feed.node_feed import FeedServer  # noqa: E402
from tfos.reservation import auth  # noqa: E402
from tfos.reservation import messages as m  # noqa: E402
from tfos.reservation.server import ReservationServer  # noqa: E402
from tfos.reservation.state import ReservationState  # noqa: E402
from tfos.roles import plan_roles  # noqa: E402

BOUND_TO = p.binding("run-bench", "worker:0")


def _handshake_ms(port: int, secret: bytes, count: int) -> float:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        p.FeedChannel.connect(("127.0.0.1", port), secret, BOUND_TO, timeout_s=5).close()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def _connection_threads() -> int:
    return sum(t.name == "tfos-feed-conn" for t in threading.enumerate())


def feed(peers: int, handshakes: int) -> None:
    secret = os.urandom(32)
    server = FeedServer(socket.create_server(("127.0.0.1", 0), backlog=4096), secret, run_id="run-bench",
                        node="worker:0")
    quiet = _handshake_ms(server.port, secret, handshakes)
    before = _connection_threads()
    flood = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(peers)]
    time.sleep(1.0)
    held = _connection_threads() - before
    loaded = _handshake_ms(server.port, secret, handshakes)
    for sock in flood:
        sock.close()
    server.close()
    print(f"feed: {peers} idle peers hold {held} connection threads (cap {32})")
    print(f"feed: real handshake median {quiet:.2f} ms quiet, {loaded:.2f} ms under the flood: "
          f"{loaded / quiet:.2f}x")


def reservation(calls: int) -> None:
    state = ReservationState("bench", plan_roles(2, 0))
    server = ReservationServer(state, auth.Secret(auth.new_secret()), "127.0.0.1")
    server.start()
    channel = grpc.insecure_channel(server.address)
    call = channel.unary_unary(m.method_path("Heartbeat"), request_serializer=None, response_deserializer=None)
    body = m.HeartbeatRequest(run_id="bench", slot=0).SerializeToString()
    forged = (("tfos-signature", "v1.1.abcdefabcdefabcd." + "0" * 64),)
    started = time.perf_counter()
    for _ in range(calls):
        try:
            call(body, timeout=5, metadata=forged)
        except grpc.RpcError:
            pass
    took = time.perf_counter() - started
    channel.close()
    server.stop()
    print(f"reservation: {calls} unauthenticated calls refused at {calls / took:.0f}/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=1000)
    parser.add_argument("--handshakes", type=int, default=200)
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args()
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    logging.getLogger("tfos").addHandler(handler)
    logging.getLogger("tfos").setLevel(logging.WARNING)
    feed(args.peers, args.handshakes)
    # the bench's own handshakes (they send no OPEN) are authenticated: their lines do not count
    feed_lines = sum("refused" in line for line in lines.getvalue().splitlines())
    print(f"feed: {feed_lines} log line(s) for {args.peers} refused peers")
    before = len(lines.getvalue().splitlines())
    reservation(args.calls)
    print(f"reservation: {len(lines.getvalue().splitlines()) - before} log line(s) for {args.calls} refusals")


if __name__ == "__main__":
    main()
