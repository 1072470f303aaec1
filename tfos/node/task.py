"""The Spark node task: runs on each executor, starts the node supervisor, and
(TENSORFLOW mode) holds the task slot until the node ends, or (SPARK mode) returns
once the TF process runs so feeding tasks can use the slot.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tfos.errors import NodeTaskError
from tfos.input_mode import InputMode
from tfos.node import frames
from tfos.node.gpus import task_gpus
from tfos.node.launch import NodeLaunch
from tfos.reservation.states import NodeState


def run_node_task(launch: NodeLaunch, slot: int, task_address: str | None, task_attempt: int) -> dict:
    """Start the node for ``slot`` on this executor; returns a small result dict."""
    from tfos.node.identity import current_executor

    me = current_executor(task_address)
    unreachable = _unreachable_server(launch, me.host)
    if unreachable:
        # a result, not a raise: Spark would retry the task (or the barrier stage) and each
        # retry would wait again; the driver turns this outcome into the run's failure
        return {"slot": slot, "executor_id": me.executor_id, "outcome": UNREACHABLE, "message": unreachable}
    header = launch.header()
    header.update(
        slot=slot, executor_id=me.executor_id, host=me.host, working_dir=me.working_dir,
        jvm_pid=me.jvm_pid, task_attempt=task_attempt, gpus=task_gpus(),
        # TENSORFLOW mode: the node lives and dies with this task
        task_pid=os.getpid() if launch.input_mode != InputMode.SPARK else None,
    )
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfos.node.supervisor", "--status-fd", str(write_fd)],
        stdin=subprocess.PIPE, pass_fds=(write_fd,), start_new_session=True,
        cwd=me.working_dir, env=_supervisor_env(),
    )
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as status:
        frames.write_json(proc.stdin, header)
        frames.write_frame(proc.stdin, launch.payload)
        proc.stdin.close()
        result = None
        for event in frames.read_events(status):
            if event.get("event") == NodeState.RUNNING and launch.input_mode == InputMode.SPARK:
                return {"slot": slot, "executor_id": me.executor_id, "outcome": "running"}
            if event.get("event") == "result":
                result = event
                break
    code = proc.wait()
    if result is None:
        from tfos.node.process import describe_exit

        message = f"node supervisor (pid {proc.pid}) {describe_exit(code)} before reporting a result"
        _report_lost_supervisor(launch, slot, message, code)
        raise NodeTaskError(f"slot {slot}: {message}")
    if result["outcome"] == NodeState.FAILED:
        raise NodeTaskError(f"node {result['role']} failed: {result['message']}")
    return {"slot": slot, "executor_id": me.executor_id, "outcome": result["outcome"]}


#: a node task's outcome when its executor cannot reach the reservation server
UNREACHABLE = "unreachable"
#: how long a node task waits for the reservation server to answer a connection
SERVER_PROBE_S = 10.0


def _unreachable_server(launch: NodeLaunch, host: str) -> str | None:
    """Why this executor cannot reach the reservation server, or None when it answers.

    The server runs in the process that called ``tfos.run`` (the driver; over Spark Connect,
    the client). A client the executors cannot reach (a laptop behind NAT, a notebook in a
    container) would otherwise leave every node retrying to register until its timeout.
    """
    from tfos.reservation.client import ReservationClient

    with ReservationClient(launch.server_address, launch.secret, launch.run_id, -1, tls=launch.tls) as client:
        if client.reachable(SERVER_PROBE_S):
            return None
    return (f"executor host {host} cannot reach tfos's reservation server at {launch.server_address} "
            f"(no answer within {SERVER_PROBE_S:.0f} s). It runs in the process that called tfos.run "
            f"(over Spark Connect, the client): run that process where the executors can connect to it, or set "
            f"TFOS_SERVER_HOST to an address of its host that they can reach (TFOS_SERVER_BIND_HOST "
            f"for the local address to bind when it differs, behind NAT or in a container; "
            f"TFOS_SERVER_PORT for a port the firewall lets through)")


def _report_lost_supervisor(launch: NodeLaunch, slot: int, message: str, code: int) -> None:
    """Tell the driver which node died, before Spark reports only that a task failed."""
    from tfos.errors import ReservationError
    from tfos.reservation.client import ReservationClient

    try:
        with ReservationClient(launch.server_address, launch.secret, launch.run_id, slot, tls=launch.tls) as client:
            client.report(NodeState.FAILED, exit_code=code, message=message, timeout_s=5.0)
    except ReservationError:
        pass  # the driver will still see the Spark task fail


def _supervisor_env() -> dict[str, str]:
    """The base layers only (no secrets, this worker's ``sys.path``): the supervisor applies
    the run's OMP, ``env=`` and GPU rules when it starts the TF process, on top of its own."""
    from tfos.node.child_env import child_environment

    return child_environment(os.environ, keep_omp_num_threads=True)
