"""The node supervisor: one light process per node, started by the Spark node task.

It registers the node, starts the TF process early (so TensorFlow imports while
the other nodes register), hands it the cluster, heartbeats, starts TensorBoard
on the TensorBoard node, and reports the TF process's end (with its traceback and
output tail) to the driver the moment it happens. It never imports TensorFlow or
user code, and it never outlives the executor JVM (nor, in TENSORFLOW mode, the
Spark task that started it).

Run as ``python -m tfos.node.supervisor --status-fd N`` with the launch frames on stdin.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from tfos.errors import ReservationError
from tfos.net import PORTS_PER_NODE, PortRange, join_host_port, listen, pick, reserve
from tfos.node import frames
from tfos.node.child_env import child_environment
from tfos.node.observe import Observer
from tfos.node.process import OutputTail, PidWatch, describe_exit, terminate
from tfos.reservation.auth import Secret
from tfos.reservation.client import ReservationClient
from tfos.reservation.states import NodeState, RunState
from tfos.reservation.tls import ClientTLS
from tfos.roles import Role, cluster_spec, lead_slot, tf_config, training_rank
from tfos.storage.credentials import apply_missing

log = logging.getLogger("tfos.node")


@dataclass
class _Outcome:
    event: str  # done | failed | stopped | aborted
    message: str = ""
    exit_code: int | None = None


class Supervisor:
    def __init__(self, header: dict, payload: bytes, status_out):
        self.h = header
        self.payload = payload
        self.status_out = status_out
        self.slot = header["slot"]
        self.tag = f"[slot:{self.slot}]"
        tls = header.get("tls")
        self.client = ReservationClient(
            header["server_address"], Secret(bytes.fromhex(header["secret"])), header["run_id"], self.slot,
            tls=ClientTLS(tls["root_certificates"].encode("ascii"), tls["server_name"]) if tls else None,
        )
        self.observer = Observer(self.client)  # output lines and progress for the driver
        self.child: subprocess.Popen | None = None
        self.tensorboard: subprocess.Popen | None = None
        self.tail: OutputTail | None = None
        self.role: Role | None = None
        self.state = NodeState.REGISTERED  # what heartbeats say until the TF process runs
        self.traceback = ""
        self.child_message = ""
        self.stop_reason = ""
        self.stop_ordered = False
        self.failure_reported = False  # the driver has this node's failure (traceback and tail)
        self.feed_listener: socket.socket | None = None
        self.port_holder: socket.socket | None = None
        self.local_root = ""
        self.mirror = None  # the lead node's Mirror, with storage=
        self.feed_port = 0
        self._group_watch = -1  # write end of the TF process group's reaper pipe: never written, never closed
        self._stop = threading.Event()
        self._events_done = threading.Event()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ steps

    @property
    def _fed(self) -> bool:
        """Whether Spark feeds this node: only those get a feed endpoint and the run's secret."""
        return self.slot in self.h.get("fed_slots", ())

    def run(self) -> _Outcome:
        self._start_watchdog()
        # storage settings from the Spark conf, where the executor's environment has none
        apply_missing(os.environ, self.h.get("storage_env") or {})
        host = self.h["host"]
        # in a port range, each slot starts at its own offset: nodes sharing a host try different ports
        ports = PortRange.parse(self.h["port_range"]) if self.h.get("port_range") else None
        offset = self.slot * PORTS_PER_NODE
        # held (bound) until the TF process is about to run main_fun, or until ctx.release_port()
        self.port_holder = reserve(host, ports, offset)
        port = self.port_holder.getsockname()[1]
        tb_port = pick(host, ports, offset + 1, exclude=[port]) if self.h["tensorboard"] else 0
        if self._fed:
            # bound here, inherited by the TF process: the port is never free for a moment
            self.feed_listener = listen(host, ports, offset + 2, exclude=[port, tb_port])
            self.feed_port = self.feed_listener.getsockname()[1]
        self._start_child()
        reply = self.client.register(
            executor_id=self.h["executor_id"], host=host, port=port, pid=os.getpid(),
            tensorboard_port=tb_port, task_attempt=self.h.get("task_attempt", 0),
            feed_port=self.feed_port,
            # the server is up before any node task starts: if it does not answer, the run is over
            timeout_s=max(10.0, self.h["heartbeat_timeout_s"]),
        )
        if not RunState(reply.run_state).accepts_nodes:
            return self._abort(f"the run is {reply.run_state}; this node task is not needed")
        self.observer.start()
        cluster = self.client.await_cluster(self.h["reservation_timeout"])
        if not cluster.ready:
            return self._abort(f"the run is {cluster.run_state} before the cluster formed")
        self._hand_cluster(cluster, host, tb_port)
        threading.Thread(target=self._heartbeat_loop, name="tfos-heartbeat", daemon=True).start()
        return self._saved(self._wait_child())

    def _saved(self, outcome: _Outcome) -> _Outcome:
        """The last mirror pass, after the TF process ended (even when it failed or was
        killed): the node ends only once its files are in storage, or fails naming them."""
        if self.mirror is not None:
            from tfos.errors import StorageError

            try:
                self.mirror.finish()
            except StorageError as exc:
                log.error("%s %s", self.tag, exc)
                if outcome.event in (NodeState.DONE, NodeState.STOPPED):
                    return _Outcome(NodeState.FAILED, str(exc), outcome.exit_code)
        if self.local_root:
            shutil.rmtree(self.local_root, ignore_errors=True)
        return outcome

    def _start_child(self) -> None:
        env = child_environment(os.environ, keep_omp_num_threads=self.h["keep_omp_num_threads"],
                                user_env=self.h["env"], gpus=self.h.get("gpus") or [])
        read_fd, write_fd = os.pipe()
        # the TF process's reaper reads EOF here when this process is gone, however it died,
        # and kills the TF process's whole group (process.start_group_reaper)
        watch_read, self._group_watch = os.pipe()
        fds = [write_fd, watch_read, self.port_holder.fileno()]
        feed_fd = -1
        if self.feed_listener is not None:
            feed_fd = self.feed_listener.fileno()
            fds.append(feed_fd)
        self.child = subprocess.Popen(
            [sys.executable, "-m", "tfos.node.tf_process", "--status-fd", str(write_fd),
             "--parent-pid", str(os.getpid()), "--feed-fd", str(feed_fd),
             "--port-fd", str(self.port_holder.fileno()), "--watch-fd", str(watch_read)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            pass_fds=tuple(fds), cwd=self.h["working_dir"], env=env, start_new_session=True,
        )
        os.close(write_fd)
        os.close(watch_read)
        self.port_holder.close()  # the TF process holds the TF port now
        if self.feed_listener is not None:
            self.feed_listener.close()  # the TF process owns it now
        self.tail = OutputTail(self.child.stdout, self.tag, on_line=self.observer.line)
        threading.Thread(target=self._read_child_events, args=(os.fdopen(read_fd, "rb"),),
                         name="tfos-child-events", daemon=True).start()
        child_header = {k: self.h[k] for k in ("run_id", "slot", "executor_id", "host", "working_dir",
                                               "default_fs", "keras", "input_mode", "release_port")}
        child_header["gpus"] = self.h.get("gpus") or []
        child_header["attempt"] = self.h.get("attempt", 0)
        try:
            frames.write_json(self.child.stdin, child_header)
            frames.write_frame(self.child.stdin, self.payload)
        except BrokenPipeError:
            pass  # the child died at once; _wait_child reports how

    def _hand_cluster(self, cluster, host: str, tb_port: int) -> None:
        nodes = sorted(cluster.nodes, key=lambda n: n.slot)
        roles = [Role(n.job_name, n.task_index) for n in nodes]
        me = nodes[self.slot]
        self.role = roles[self.slot]
        self.tag = f"[{self.role}]"
        if self.tail:
            self.tail.tag = self.tag
        spec = cluster_spec(roles, [join_host_port(n.host, n.port) for n in nodes])
        worker_num, num_workers = training_rank(roles, self.role)
        tb_node = lead_slot(roles)
        storage = self.h.get("storage") or ""
        self.local_root = _local_root(self.h["run_id"], self.slot)
        lead = self.slot == tb_node  # writes checkpoints, exports and events: its tree is mirrored
        if storage and not cluster.log_dir:
            # events go to a local dir TensorBoard serves as written; the lead's is mirrored
            log_dir = os.path.join(self.local_root, "tensorboard")
        else:
            log_dir = cluster.log_dir or os.path.join(self.h["working_dir"], "tensorboard")
        if storage and lead:
            from tfos.storage.mirror import Mirror

            # the run's env= reaches the mirror too: storage credentials and endpoints live there
            os.environ.update(self.h["env"])
            self.mirror = Mirror(self.local_root, storage)
            self.mirror.start()
        message = {
            "job_name": self.role.job_name, "task_index": self.role.task_index,
            "cluster_spec": spec, "tf_config": tf_config(spec, self.role),
            "worker_num": worker_num, "num_workers": num_workers, "log_dir": log_dir,
            "local_root": self.local_root, "storage": storage,
            "server_address": self.h["server_address"],
            # the TF process checks feeding connections with it: fed nodes only (SPARK mode's
            # chief and workers); a ps or evaluator never sees it
            "secret": self.h["secret"] if self._fed else "",
            "nodes": [{"job_name": n.job_name, "task_index": n.task_index, "host": n.host,
                       "port": n.port, "executor_id": n.executor_id} for n in nodes],
        }
        log.info("%s cluster formed: %s", self.tag, spec)
        if cluster.tensorboard and self.slot == tb_node:
            self._start_tensorboard(log_dir, host, me.tensorboard_port or tb_port)
        try:
            frames.write_json(self.child.stdin, message)
            self.child.stdin.close()
        except (BrokenPipeError, ValueError):
            pass

    def _start_tensorboard(self, log_dir: str, host: str, port: int) -> None:
        if "://" not in log_dir:
            os.makedirs(log_dir, exist_ok=True)
        self.tensorboard = subprocess.Popen(
            [sys.executable, "-m", "tfos.node.guarded", str(os.getpid()), "tensorboard.main",
             "--logdir", log_dir, "--host", host, "--port", str(port), "--reload_interval", "5"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,
            # the run's env= too: a remote log_dir may need its credentials; no GPU for it
            env=child_environment(os.environ, keep_omp_num_threads=self.h["keep_omp_num_threads"],
                                  user_env=self.h["env"], no_gpu=True),
        )
        OutputTail(self.tensorboard.stdout, f"{self.tag}[tensorboard]", max_lines=20)
        log.info("%s TensorBoard on http://%s serving %s", self.tag, join_host_port(host, port), log_dir)

    def _wait_child(self) -> _Outcome:
        code = self.child.wait()
        if self.tail:
            self.tail.join(2.0)
        self._events_done.wait(2.0)
        self.observer.close(1.0)  # the last lines reach the driver before the node's end does
        if self.stop_reason:
            return _Outcome(NodeState.STOPPED, self.stop_reason, code)
        if code == 0:
            return _Outcome(NodeState.DONE, "", 0)
        message = self.child_message or f"TF process {describe_exit(code)}"
        return _Outcome(NodeState.FAILED, message, code)

    def _abort(self, reason: str) -> _Outcome:
        log.info("%s %s", self.tag, reason)
        terminate(self.child, 0.5, "TF process")
        return _Outcome("aborted", reason)

    # ------------------------------------------------------------- background

    def _read_child_events(self, stream) -> None:
        try:
            for event in frames.read_events(stream):
                kind = event.get("event")
                if kind in (NodeState.RUNNING, NodeState.SERVING):
                    self.state = kind
                    self._report(kind)
                    self._signal_task({"event": "running"})
                elif kind == "progress":
                    self.observer.progress(event.get("record") or {})
                elif kind == NodeState.FAILED:
                    self.traceback = event.get("traceback", "")
                    self.child_message = event.get("message", "")
                    # report now: the TF process may take a second to tear TensorFlow down
                    # before it exits (with code 1, as tf_process does after a raise)
                    if self.tail:
                        self.tail.join(0.1)  # let the traceback's lines reach the tail
                    self.failure_reported = self._report(
                        NodeState.FAILED, exit_code=1, message=self.child_message, traceback=self.traceback,
                        output_tail=self.tail.text() if self.tail else "")
        finally:
            self._events_done.set()

    def _heartbeat_loop(self) -> None:
        interval = self.h["heartbeat_interval_s"]
        last_ok = time.monotonic()
        while not self._stop.is_set():
            try:
                reply = self.client.heartbeat(self.state, wait_s=interval, timeout_s=max(interval * 3, 2.0))
                last_ok = time.monotonic()
                if reply.stop:
                    self.stop("stopped by the driver", ordered=True)
                    return
            except ReservationError as exc:
                if time.monotonic() - last_ok > self.h["heartbeat_timeout_s"]:
                    self.stop(f"lost contact with the driver: {exc}")
                    return
                self._stop.wait(interval)

    def _start_watchdog(self) -> None:
        watched = [p for p in (self.h.get("jvm_pid"), self.h.get("task_pid")) if p]
        if watched:
            PidWatch(watched, self._parent_gone).start()

    def _parent_gone(self, pid: int) -> None:
        """The executor or the Spark task died: stop everything and leave now, whatever the
        main thread is doing (it may be waiting on a driver that is gone too)."""
        self.stop(f"parent process {pid} (executor or task) is gone")
        if self.mirror is not None:  # the host may still reach storage: save what the node wrote
            from tfos.storage.mirror import FINAL_PASS_S

            last = threading.Thread(target=self._last_pass, name="tfos-mirror-last", daemon=True)
            last.start()
            last.join(FINAL_PASS_S)
        sys.stderr.flush()
        os._exit(3)

    def _last_pass(self) -> None:
        if self.child is not None:
            try:
                self.child.wait(self.h["stop_grace_s"] + 2)
            except subprocess.TimeoutExpired:
                pass
        try:
            self.mirror.finish()
        except Exception as exc:  # noqa: BLE001 - leaving anyway; say what was not saved
            log.error("%s %s", self.tag, exc)

    def stop(self, reason: str, ordered: bool = False) -> None:
        """Stop the TF process and TensorBoard (idempotent, any thread).

        ``ordered``: the driver asked for it. Otherwise this is a failure (parent gone,
        driver unreachable), reported first so the driver hears it before Spark's summary.
        """
        with self._lock:
            if self.stop_reason:
                return
            if ordered and self.child is not None and self.child.poll() is not None:
                return  # the TF process already ended on its own; nothing to stop
            self.stop_reason = reason
            self.stop_ordered = ordered
        log.info("%s stopping: %s", self.tag, reason)
        if not ordered:
            self._report(NodeState.FAILED, message=reason, output_tail=self.tail.text() if self.tail else "",
                         timeout_s=5.0)
        self._stop.set()
        terminate(self.child, self.h["stop_grace_s"], "TF process")
        terminate(self.tensorboard, 1.0, "TensorBoard")

    # -------------------------------------------------------------- reporting

    def _report(self, event: str, **kw) -> bool:
        """True when the driver has it."""
        try:
            self.client.report(event, **kw)
            return True
        except ReservationError as exc:
            log.warning("%s could not report %s to the driver: %s", self.tag, event, exc)
            return False

    def _signal_task(self, obj: dict) -> None:
        if self.status_out is None:
            return
        try:
            frames.write_json(self.status_out, obj)
        except (OSError, ValueError):
            self.status_out = None  # the task returned (SPARK mode) or died

    def finish(self, outcome: _Outcome) -> None:
        self._stop.set()
        terminate(self.tensorboard, 1.0, "TensorBoard")
        # once the driver has the failure, it may end the run and close its server before
        # the TF process is down: a last report would only retry against nothing for 15 s
        if outcome.event != "aborted" and not self.failure_reported:
            self._report(
                outcome.event, exit_code=outcome.exit_code, message=outcome.message,
                traceback=self.traceback if outcome.event == NodeState.FAILED else "",
                output_tail=self.tail.text() if (self.tail and outcome.event == NodeState.FAILED) else "",
            )
        self._signal_task({"event": "result", "outcome": outcome.event, "message": outcome.message,
                           "exit_code": outcome.exit_code, "role": str(self.role or self.tag)})
        self.client.close()


def _local_root(run_id: str, slot: int) -> str:
    """This node's local directories (``ctx.local_dir``): Spark's scratch dir, else the temp dir."""
    from tfos.storage.records import local_scratch_dir

    return os.path.join(local_scratch_dir(), f"tfos-local-{run_id}-{slot}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--status-fd", type=int, required=True)
    args = parser.parse_args()
    logging.raiseExceptions = False
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s tfos.supervisor: %(message)s")
    status_out = os.fdopen(args.status_fd, "wb")
    stdin = sys.stdin.buffer
    header = frames.read_json(stdin)
    payload = frames.read_frame(stdin)
    sup = Supervisor(header, payload, status_out)
    try:
        outcome = sup.run()
    except BaseException as exc:  # noqa: BLE001 - anything here ends the node; report it
        reason = f"node supervisor failed: {type(exc).__name__}: {exc}"
        log.error("%s %s", sup.tag, reason)
        terminate(sup.child, 1.0, "TF process")
        outcome = _Outcome(NodeState.FAILED, reason)
    sup.finish(outcome)
    return 0 if outcome.event in (NodeState.DONE, NodeState.STOPPED, "aborted") else 1


if __name__ == "__main__":
    sys.exit(main())
