"""Simulated nodes (threads, no Spark): each registers, awaits the cluster, reports
``running`` and heartbeats against a real ReservationServer, as a node supervisor does.

Used by the load test and by ``bench/control_plane.py``.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from tfos.reservation.auth import Secret, new_secret
from tfos.reservation.client import ReservationClient
from tfos.reservation.server import ReservationServer
from tfos.reservation.state import ReservationState
from tfos.roles import plan_roles


class SimulatedNode(threading.Thread):
    """One node slot. ``silence()`` makes it stop heart-beating (as a node whose process hung)."""

    def __init__(self, address: str, secret: Secret, run_id: str, slot: int, go: threading.Barrier,
                 interval_s: float, **client_kw):
        super().__init__(name=f"simulated-node-{slot}", daemon=True)
        self.slot = slot
        self.client = ReservationClient(address, secret, run_id, slot, **client_kw)
        self._go = go
        self._interval_s = interval_s
        self._silent = threading.Event()
        self._end = threading.Event()
        self.cluster = None
        self.formed_at = 0.0
        self.heartbeats = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._go.wait(30)
            self.client.register(executor_id=f"exec-{self.slot}", host="127.0.0.1", port=20000 + self.slot,
                                 pid=os.getpid(), timeout_s=30)
            self.cluster = self.client.await_cluster(timeout_s=60, poll_s=5)
            self.formed_at = time.perf_counter()
            self.client.report("running")
            while not (self._silent.is_set() or self._end.is_set()):
                reply = self.client.heartbeat("running", wait_s=self._interval_s)
                self.heartbeats += 1
                if reply.stop:  # the run ended or failed: the long poll answers at once, so pace it
                    self._end.wait(self._interval_s)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            self.error = exc
        finally:
            self.client.close()

    def silence(self) -> None:
        self._silent.set()

    def end(self) -> None:
        self._end.set()


@dataclass
class SimulatedRun:
    state: ReservationState
    server: ReservationServer
    nodes: list[SimulatedNode]
    started_at: float = 0.0

    def form(self, timeout_s: float = 60.0) -> float:
        """Release every node at once; block until all have the cluster; returns the seconds it took."""
        self.started_at = time.perf_counter()
        self.nodes[0]._go.wait(timeout_s)
        deadline = time.monotonic() + timeout_s
        for node in self.nodes:
            while node.is_alive() and not node.formed_at and time.monotonic() < deadline:
                time.sleep(0.005)
        errors = [f"slot {n.slot}: {n.error!r}" for n in self.nodes if n.error]
        if errors or not all(n.formed_at for n in self.nodes):
            raise AssertionError(f"cluster did not form: {errors or 'timed out'}")
        return max(n.formed_at for n in self.nodes) - self.started_at

    def close(self) -> None:
        for node in self.nodes:
            node.end()
        for node in self.nodes:
            node.join(10)
        self.server.stop(0.2)


def start_run(num_nodes: int, num_ps: int = 2, interval_s: float = 0.25, run_id: str = "run-load",
              client_kw: dict | None = None, **server_kw) -> SimulatedRun:
    """A real server on 127.0.0.1 and ``num_nodes`` started node threads waiting at the barrier.

    ``client_kw`` goes to each node's ReservationClient, ``server_kw`` to the ReservationServer.
    """
    secret = Secret(new_secret())
    state = ReservationState(run_id, plan_roles(num_nodes, num_ps, "chief", eval_node=True))
    server = ReservationServer(state, secret, "127.0.0.1", **server_kw)
    server.start()
    go = threading.Barrier(num_nodes + 1)
    nodes = [SimulatedNode(server.address, secret, run_id, slot, go, interval_s, **(client_kw or {}))
             for slot in range(num_nodes)]
    for node in nodes:
        node.start()
    return SimulatedRun(state, server, nodes)
