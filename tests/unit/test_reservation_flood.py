"""A flood of unsigned calls at the reservation server while a run forms and runs
(issue 33 item 1): the signed calls still get through, the run finishes in a few times
its quiet duration, and the refusal log stays a few lines.

The server and the nodes (threads with real ReservationClients) are in this process on
127.0.0.1; the flood comes from another process (tests/unit/flood.py), thousands of calls
pipelined on one connection.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time

import pytest

from tfos.reservation.auth import Secret, new_secret
from tfos.reservation.client import ReservationClient
from tfos.reservation.server import ReservationServer
from tfos.reservation.state import ReservationState
from tfos.reservation.states import NodeState, RunState
from tfos.roles import plan_roles

pytestmark = pytest.mark.timeout(240)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUM_NODES = 8
HEARTBEATS = 10
BEAT_S = 0.2
#: the flooded run may take this many times the quiet one (both measured here, same machine)
MAX_SLOWDOWN = 4.0


def run_nodes(flood_s: float = 0.0, connections: int = 1) -> dict:
    """A run of NUM_NODES node threads: register, await the cluster, report running, HEARTBEATS
    long-poll beats, report done. With ``flood_s``, a flooding process starts first."""
    secret = Secret(new_secret())
    state = ReservationState("run-flood", plan_roles(NUM_NODES, 1, "chief"))
    server = ReservationServer(state, secret, "127.0.0.1")
    server.start()
    flood = None
    errors: list[str] = []
    try:
        if flood_s:
            flood = subprocess.Popen([sys.executable, "-m", "tests.unit.flood", server.address, str(flood_s), "2000",
                                      str(connections)],
                                     cwd=ROOT, stdout=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 30
            while server.refusals < 1000:  # the flood is under way
                assert flood.poll() is None and time.monotonic() < deadline, "the flood did not start"
                time.sleep(0.05)

        def node(slot: int) -> None:
            try:
                with ReservationClient(server.address, secret, "run-flood", slot) as client:
                    client.register(executor_id=f"exec-{slot}", host="127.0.0.1", port=20000 + slot,
                                    pid=os.getpid(), timeout_s=60)
                    client.await_cluster(timeout_s=60, poll_s=5)
                    client.report("running")
                    for _ in range(HEARTBEATS):
                        assert not client.heartbeat("running", wait_s=BEAT_S).stop
                    client.report("done", exit_code=0)
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                errors.append(f"slot {slot}: {type(exc).__name__}: {exc}")

        began = time.perf_counter()
        nodes = [threading.Thread(target=node, args=(slot,), daemon=True) for slot in range(NUM_NODES)]
        for thread in nodes:
            thread.start()
        for thread in nodes:
            thread.join(120)
        took = time.perf_counter() - began
        refused_during_run = server.refusals
    finally:
        if flood is not None:
            flood.terminate()
        server.stop(0.2)
        flooded = json.loads(flood.communicate(timeout=60)[0]) if flood else None
    return {"seconds": took, "errors": errors, "state": state, "flood": flooded, "refusals": refused_during_run}


@pytest.fixture(scope="module")
def quiet() -> dict:
    run = run_nodes()
    assert run["errors"] == [], run["errors"]
    return run


@pytest.mark.parametrize("connections", [1, 20])
def test_a_flood_of_unsigned_calls_while_the_run_forms_neither_fails_nor_stalls_it(quiet, connections, caplog):
    caplog.set_level(logging.INFO, logger="tfos.reservation.server")
    flooded = run_nodes(flood_s=30.0, connections=connections)
    print(f"\n{connections} flooding connection(s): quiet run {quiet['seconds']:.2f} s; under the flood {flooded['seconds']:.2f} s "
          f"({flooded['seconds'] / quiet['seconds']:.2f}x), {flooded['refusals']} unsigned calls refused meanwhile; "
          f"flood: {flooded['flood']}")
    assert flooded["errors"] == [], flooded["errors"]
    state = flooded["state"]
    assert state.failures == [] and state.run_state == RunState.READY
    assert all(n.state == NodeState.DONE for n in state.snapshot())
    assert flooded["refusals"] > 10 * NUM_NODES * HEARTBEATS  # the flood did reach the server meanwhile
    assert flooded["seconds"] < MAX_SLOWDOWN * quiet["seconds"], (flooded["seconds"], quiet["seconds"])
    # the refusal log: a line per 10 s (and the count of the rest), not a line per refusal
    refusal_lines = [r for r in caplog.records if "refused" in r.getMessage()]
    assert 1 <= len(refusal_lines) <= 6, [r.getMessage()[:120] for r in refusal_lines]
