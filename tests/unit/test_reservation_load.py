"""The reservation server under load: 64 simulated nodes (threads) over real gRPC on 127.0.0.1."""

from __future__ import annotations

import threading
import time

import pytest

from tests.unit.simulated_nodes import start_run

NUM_NODES = 64
SILENCED = [1, 3, 9, 22, 30, 38, 41, 50, 57, 63]  # a ps, the evaluator, workers; not the chief
INTERVAL_S = 0.25
TIMEOUT_S = 1.5


@pytest.fixture(scope="module")
def formed():
    run = start_run(NUM_NODES, interval_s=INTERVAL_S)
    try:
        seconds = run.form()
        print(f"\n{NUM_NODES} nodes registered and got the cluster in {seconds:.3f} s")
        yield run, seconds
    finally:
        run.close()


@pytest.mark.timeout(120)
def test_64_nodes_get_the_same_cluster_with_unique_roles(formed):
    run, seconds = formed
    assert seconds < 30  # the target is 5 s; a wide margin for a loaded CI machine (see bench/control_plane.py)
    # the cluster spec each node builds TF_CONFIG from (node states move on while others still wait)
    specs = {tuple((n.slot, n.job_name, n.task_index, n.host, n.port, n.executor_id) for n in node.cluster.nodes)
             for node in run.nodes}
    assert len(specs) == 1
    nodes = run.nodes[0].cluster.nodes
    roles = [(n.job_name, n.task_index) for n in nodes]
    assert len(set(roles)) == NUM_NODES
    assert roles == [("ps", 0), ("ps", 1), ("chief", 0), ("evaluator", 0)] + [("worker", i) for i in range(60)]
    assert [(n.slot, n.executor_id, n.port) for n in nodes] == [
        (s, f"exec-{s}", 20000 + s) for s in range(NUM_NODES)
    ]
    assert all(node.cluster.ready and node.cluster.run_state == "ready" for node in run.nodes)


@pytest.mark.timeout(120)
def test_driver_declares_exactly_the_silent_nodes_lost(formed):
    run, _ = formed
    state = run.state
    # every node heart-beats before any goes quiet
    deadline = time.monotonic() + 20
    while min(n.heartbeats for n in run.nodes) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert state.declare_lost(TIMEOUT_S) == []

    # the driver's monitor, as Cluster._monitor runs it
    declared: list[int] = []
    stop = threading.Event()

    def monitor() -> None:
        while not stop.wait(INTERVAL_S):
            declared.extend(n.slot for n in state.declare_lost(TIMEOUT_S))

    watcher = threading.Thread(target=monitor, daemon=True)
    watcher.start()
    silenced_at = time.monotonic()
    for slot in SILENCED:
        run.nodes[slot].silence()
    state.wait_until(lambda: len(state.failures) >= len(SILENCED), 20)
    detected_s = time.monotonic() - silenced_at
    time.sleep(2 * TIMEOUT_S)  # long enough for a wrongly silent node to be declared too
    stop.set()
    watcher.join(5)
    print(f"\n{len(SILENCED)} silent nodes declared lost {detected_s:.2f} s after they went quiet "
          f"(heartbeat timeout {TIMEOUT_S} s)")

    assert sorted(declared) == SILENCED
    lost = [f.name for f in state.failures]
    expected = [str(state.node(s).role) for s in SILENCED]
    assert sorted(lost) == sorted(expected)
    assert all(f.reason == f"no heartbeat for {TIMEOUT_S:g} s (node process or executor died?)" for f in state.failures)
    assert [n.slot for n in state.snapshot() if n.state == "lost"] == SILENCED
    assert state.run_state == "failed"
    assert TIMEOUT_S <= detected_s < TIMEOUT_S + 10
    assert not [n.error for n in run.nodes if n.error]
