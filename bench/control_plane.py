"""Control plane: registration of N simulated nodes against a real reservation server.

N threads (no Spark, no TensorFlow) each open a channel, then, released together,
register and await the cluster as a node supervisor does; the clock stops when the
last one holds the cluster spec. Reference, in the same run: N threads released
together each making two round trips (as register + await do) on a bare gRPC server
with the same thread pool, no signing and no state: the transport floor on this
machine. With ``--tls`` both sides use a self-signed certificate.

Usage: python bench/control_plane.py [--nodes 64 128] [--repeats 5] [--tls]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent import futures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402
from _common import summary  # noqa: E402

from tests.unit.simulated_nodes import start_run  # noqa: E402


def registration(num_nodes: int, tls_kw: dict) -> float:
    run = start_run(num_nodes, interval_s=1.0, **tls_kw.get("server", {}), client_kw=tls_kw.get("client", {}))
    try:
        return run.form()
    finally:
        run.close()


def transport_floor(num_nodes: int, tls_kw: dict) -> float:
    """N threads, released together, two unary round trips each on a bare echo server."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max(16, 2 * num_nodes + 8)))
    echo = grpc.unary_unary_rpc_method_handler(lambda raw, ctx: raw, request_deserializer=None,
                                               response_serializer=None)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Echo", {"Echo": echo}),))
    creds = tls_kw.get("floor_server")
    port = server.add_secure_port("127.0.0.1:0", creds) if creds else server.add_insecure_port("127.0.0.1:0")
    server.start()
    go = threading.Barrier(num_nodes + 1)
    done: list[float] = []

    def node() -> None:
        if "floor_client" in tls_kw:
            channel = grpc.secure_channel(f"127.0.0.1:{port}", tls_kw["floor_client"])
        else:
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        call = channel.unary_unary("/bench.Echo/Echo", request_serializer=None, response_deserializer=None)
        go.wait(30)
        call(b"x" * 64, timeout=30)
        call(b"x" * 64, timeout=30)
        done.append(time.perf_counter())
        channel.close()

    threads = [threading.Thread(target=node, daemon=True) for _ in range(num_nodes)]
    for t in threads:
        t.start()
    started = time.perf_counter()
    go.wait(30)
    for t in threads:
        t.join(60)
    server.stop(0)
    assert len(done) == num_nodes
    return max(done) - started


def tls_material(directory: str) -> dict:
    from tests.unit.certs import self_signed
    from tfos.reservation.tls import TLSConfig

    cert, key = self_signed(directory, "127.0.0.1")
    config = TLSConfig(cert_file=cert, key_file=key)
    client = config.client()
    return {
        "server": {"tls": config},
        "client": {"tls": client},
        "floor_server": config.server_credentials(),
        "floor_client": grpc.ssl_channel_credentials(client.root_certificates),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tls", action="store_true", help="TLS on both the reservation server and the floor")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tls_kw = tls_material(tmp) if args.tls else {}
        registration(8, tls_kw)  # warm up: imports, first channel
        for n in args.nodes:
            floor, reg = [], []
            for _ in range(args.repeats):  # interleaved, so both see the same machine load
                floor.append(transport_floor(n, tls_kw))
                reg.append(registration(n, tls_kw))
            ratio = statistics.median(reg) / statistics.median(floor)
            print(f"{n} nodes{' (TLS)' if args.tls else ''}:")
            print(f"  transport floor (2 bare round trips each, reference): {summary(floor)}")
            print(f"  register + await cluster:                              {summary(reg)}  -> {ratio:.1f}x the floor")


if __name__ == "__main__":
    main()
