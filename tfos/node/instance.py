"""The executor half of ``tfos.parallel_run``: one independent instance of ``main_fun`` per
Spark task, in a supervised child process.

The Spark task (:func:`run_instance_task`) starts the child with the environment every
tfos child gets (:func:`tfos.node.child_env.child_environment`: the task's GPUs mapped
through the executor's ``CUDA_VISIBLE_DEVICES``), hands it a header and the payload on
stdin, waits for it within the run's timeout, stops its process group, and returns a
report; the child (``python -m tfos.node.instance --status-fd N --parent-pid P``) runs
``main_fun`` as a cluster's TF process does (:mod:`tfos.node.user_function`) and sends
``done`` with the pickled result, or ``failed``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from tfos.errors import ConfigError
from tfos.node import frames
from tfos.node.frames import EventWriter


@dataclass(frozen=True)
class InstanceLaunch:
    """What each instance task gets in its Spark closure."""

    run_id: str
    num_instances: int
    default_fs: str
    keras: str
    timeout_s: float | None
    stop_grace_s: float
    keep_omp_num_threads: bool
    env: dict[str, str] = field(default_factory=dict)
    payload: bytes = field(default=b"", repr=False)


def run_instance_task(launch: InstanceLaunch, index: int) -> dict:
    """Spark task: run instance ``index`` in a supervised child; return its report.

    Blocks until the child ended (or was stopped at ``launch.timeout_s``), its process
    group included. Never raises for the instance's own failure, so the other instances
    run on: the report's ``outcome`` is "done" (with the pickled ``result``) or "failed"
    (with ``message``, ``traceback``, ``output_tail`` and ``exit_code``).
    """
    from tfos.node.child_env import child_environment
    from tfos.node.gpus import task_gpus
    from tfos.node.identity import current_executor

    me = current_executor()
    report = {"index": index, "executor_id": me.executor_id, "host": me.host, "outcome": "failed",
              "result": None, "message": "", "traceback": "", "output_tail": "", "exit_code": None,
              "ended_at": 0.0}
    gpus = task_gpus()
    try:
        env = child_environment(os.environ, keep_omp_num_threads=launch.keep_omp_num_threads,
                                user_env=launch.env, gpus=gpus)
    except ConfigError as exc:  # Spark's GPU addresses do not fit the executor's
        report.update(message=str(exc), ended_at=time.time())
        return report
    header = {"index": index, "num_instances": launch.num_instances, "run_id": launch.run_id,
              "executor_id": me.executor_id, "host": me.host, "working_dir": me.working_dir,
              "default_fs": launch.default_fs, "keras": launch.keras, "gpus": gpus}
    report.update(_run_child(launch, index, header, env, me.working_dir))
    return report


def _run_child(launch: InstanceLaunch, index: int, header: dict, env: dict[str, str], cwd: str) -> dict:
    """Start the child, feed it, wait for it, stop its group: the report's outcome fields."""
    from tfos.node.process import OutputTail, describe_exit, terminate

    read_fd, write_fd = os.pipe()
    # the child's group reaper reads EOF here when this task's Python worker is gone, however
    # it died, and kills what main_fun started too (process.start_group_reaper)
    watch_read, group_watch = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfos.node.instance", "--status-fd", str(write_fd), "--parent-pid", str(os.getpid()),
         "--watch-fd", str(watch_read)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, pass_fds=(write_fd, watch_read),
        cwd=cwd, env=env, start_new_session=True,
    )
    os.close(write_fd)
    os.close(watch_read)
    tail = OutputTail(proc.stdout, f"[instance:{index}]")
    events: dict = {}
    reader = threading.Thread(target=_collect_events, args=(os.fdopen(read_fd, "rb"), events),
                              name="tfos-instance-events", daemon=True)
    reader.start()
    try:
        frames.write_json(proc.stdin, header)
        frames.write_frame(proc.stdin, launch.payload)
        proc.stdin.close()
    except BrokenPipeError:
        pass  # the child died at once; its exit code says how
    timed_out = False
    try:
        code = proc.wait(timeout=launch.timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        code = terminate(proc, launch.stop_grace_s, f"instance {index}")
    terminate(proc, 0.0, f"instance {index}")  # its process group too
    os.close(group_watch)  # the reaper ends with the group (or now, if something escaped terminate)
    reader.join(5.0)
    tail.join(2.0)
    out = {"ended_at": time.time(), "exit_code": code}
    if timed_out:
        out["message"] = f"did not finish within timeout={launch.timeout_s:g} s; stopped"
    elif code == 0 and "done" in events:
        return {**out, "outcome": "done", "result": events["done"].get("attachment")}
    elif "failed" in events:
        out.update(message=events["failed"]["message"], traceback=events["failed"].get("traceback", ""))
    else:
        out["message"] = f"instance process {describe_exit(code)}"
    out["output_tail"] = tail.text()
    return out


def _collect_events(stream, events: dict) -> None:
    """The child's last event of each kind, by kind."""
    for event in frames.read_events(stream):
        events[event.get("event")] = event


# ------------------------------------------------------------------ child side


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--status-fd", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--watch-fd", type=int, default=-1)
    opts = parser.parse_args()
    from tfos.node.process import die_with_parent, start_group_reaper

    if opts.watch_fd >= 0:
        start_group_reaper(opts.watch_fd)  # first: no thread runs yet
    if not die_with_parent(opts.parent_pid):
        return 70  # the Spark task is already gone
    events = EventWriter(os.fdopen(opts.status_fd, "wb"))
    header = frames.read_json(sys.stdin.buffer)
    payload = frames.read_frame(sys.stdin.buffer)
    if header is None or payload is None:
        return 70
    from tfos.node.user_function import prepare_interpreter, run_user_function

    prepare_interpreter(header["keras"])
    outcome = run_user_function(payload, lambda: _context(header), events, _call_and_pickle)
    if outcome.exit_code:
        return outcome.exit_code
    import cloudpickle

    # None after SystemExit(0): the instance returned nothing
    events("done", attachment=outcome.value if outcome.value is not None else cloudpickle.dumps(None))
    return 0


def _context(header: dict):
    from tfos.context import NodeContext
    from tfos.roles import WORKER_JOB

    i = header["index"]
    return NodeContext(job_name=WORKER_JOB, task_index=i, cluster_spec={}, num_workers=header["num_instances"],
                       worker_num=i, executor_id=header["executor_id"], default_fs=header["default_fs"],
                       working_dir=header["working_dir"], run_id=header["run_id"], host=header["host"],
                       gpus=list(header.get("gpus", [])))


def _call_and_pickle(main_fun, args, ctx) -> bytes:
    """``main_fun``'s return value, pickled for the driver; one that does not pickle fails the instance."""
    import cloudpickle

    result = main_fun(args, ctx)
    try:
        return cloudpickle.dumps(result)
    except Exception as exc:  # noqa: BLE001 - any pickling error: say what was returned
        from tfos.node.user_function import AfterMainFun

        raise AfterMainFun(f"main_fun returned a {type(result).__name__} that cannot be pickled back to the "
                           f"driver ({type(exc).__name__}: {exc}); return plain data (numbers, lists, dicts, "
                           f"numpy arrays)") from exc


if __name__ == "__main__":
    from tfos.node.process import exit_within

    exit_within(main())
