"""Independent single-node runs of ``main_fun(args, ctx)`` on the executors.

>>> results = tfos.parallel_run(sc, sweep_fun, [{"lr": 0.1}, {"lr": 0.01}], num_executors=2)

TensorFlowOnSpark's ``TFParallel.run``: N instances with no cluster between them
(``TF_CONFIG`` is unset), for hyper-parameter sweeps and embarrassingly parallel
inference. Each instance runs in a supervised child process of its Spark task, as a
cluster node does (parent-death signal, output tail, traceback on failure), with its
own index (``ctx.worker_num`` of ``ctx.num_workers``, so ``ctx.shard_files`` gives it its
share of the input) and the GPUs Spark assigned to its task, if any.

Run as ``python -m tfos.parallel --status-fd N --parent-pid P`` for the child side.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tfos.errors import ClusterFailedError, ConfigError, NodeFailure, ParallelRunError
from tfos.node import frames

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _InstanceLaunch:
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


def parallel_run(
    sc,
    main_fun: Callable[[Any, Any], Any],
    tf_args: Any = None,
    num_executors: int | None = None,
    use_barrier: bool = True,
    timeout: float | None = None,
    env: dict[str, str] | None = None,
    keras: str = "auto",
    stop_grace_s: float = 3.0,
    executor_wait_timeout: float = 120.0,
) -> list:
    """Run ``main_fun(tf_args, ctx)`` as ``num_executors`` independent single-node instances.

    Blocks until every instance ended. Instance ``i`` gets ``ctx.worker_num == ctx.task_index
    == i``, ``ctx.num_workers == num_executors``, ``ctx.job_name == "worker"`` and an empty
    ``ctx.cluster_spec``; ``TF_CONFIG`` is not set. When the Spark task has GPUs
    (``spark.task.resource.gpu.amount``), ``CUDA_VISIBLE_DEVICES`` lists them.

    Args:
        sc: the ``SparkContext``.
        main_fun: the function to run; its return value (picklable) comes back.
        tf_args: passed to ``main_fun`` unchanged.
        num_executors: number of instances (TensorFlowOnSpark's name); by default
            ``spark.executor.instances``.
        use_barrier: run the instances as one barrier stage, so they all start together
            (needs a free task slot per instance); otherwise as ordinary tasks that Spark
            may queue.
        timeout: seconds an instance may run before it is stopped and counted as failed
            (``None``: no limit).
        env: extra environment for the instances' processes.
        keras: "auto", "keras3" or "tf_keras", as for :func:`tfos.run`.
        stop_grace_s: seconds between SIGTERM and SIGKILL when an instance is stopped.
        executor_wait_timeout: seconds to wait for the executors to register.

    Returns:
        The instances' return values, in index order.

    Raises:
        ConfigError: bad arguments.
        ParallelRunError: one or more instances failed; names each (index, host, executor)
            with its traceback and output tail, and keeps the others' results in ``.results``.
        ClusterFailedError: the Spark job itself failed (an executor lost, the job cancelled)
            before the instances reported.
    """
    import cloudpickle

    from tfos.config import KERAS_CHOICES
    from tfos.spark_env import read_facts, wait_for_executors
    from tfos.user_code import describe_source

    facts = read_facts(sc)
    if num_executors is None:
        num_executors = facts.configured_executors
        if num_executors is None:
            raise ConfigError("num_executors is required when spark.executor.instances is not set")
    if isinstance(num_executors, bool) or not isinstance(num_executors, int) or num_executors < 1:
        raise ConfigError(f"num_executors must be a positive int; received: num_executors={num_executors!r}")
    if keras not in KERAS_CHOICES:
        raise ConfigError(f"keras must be one of {', '.join(map(repr, KERAS_CHOICES))}; received: keras={keras!r}")
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"timeout must be positive seconds or None; received: timeout={timeout!r}")
    if facts.configured_executors:
        wait_for_executors(sc, min(num_executors, facts.configured_executors), executor_wait_timeout)
    launch = _InstanceLaunch(
        run_id=uuid.uuid4().hex[:12], num_instances=num_executors, default_fs=facts.default_fs,
        keras=keras, timeout_s=timeout, stop_grace_s=stop_grace_s,
        keep_omp_num_threads=facts.omp_num_threads_set, env=dict(env or {}),
        payload=cloudpickle.dumps((main_fun, tf_args, describe_source(main_fun))),
    )
    reports = _run_job(sc, launch, use_barrier)
    return _results(reports, num_executors)


def _run_job(sc, launch: _InstanceLaunch, use_barrier: bool) -> list[dict]:
    """The Spark job, in a thread under the run's job group (cancelled on interrupt)."""
    from tfos.cluster import _spark_thread

    n = launch.num_instances
    group = f"tfos-parallel-{launch.run_id}"
    outcome: dict = {}

    def instance(index, _iterator):
        yield run_instance_task(launch, index)

    def barrier_instance(_iterator):
        from pyspark import BarrierTaskContext

        yield run_instance_task(launch, BarrierTaskContext.get().partitionId())

    def job():
        try:
            sc.setJobGroup(group, f"tfos: parallel run {launch.run_id} ({n} instances)", interruptOnCancel=True)
            rdd = sc.parallelize(range(n), n)
            if use_barrier:
                outcome["reports"] = rdd.barrier().mapPartitions(barrier_instance).collect()
            else:
                outcome["reports"] = rdd.mapPartitionsWithIndex(instance).collect()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            outcome["error"] = exc

    thread = _spark_thread(job, name=f"tfos-parallel-{launch.run_id}")
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.5)
    except BaseException:
        sc.cancelJobGroup(group)
        raise
    if "error" in outcome:
        from tfos.cluster import _first_line, _spark_error_text

        failure = NodeFailure("driver", -1, "", "", f"the Spark job of parallel run {launch.run_id} failed "
                              f"before every instance reported: {_first_line(outcome['error'])}",
                              traceback=_spark_error_text(outcome["error"]), at=time.time())
        raise ClusterFailedError([failure], "parallel run") from outcome["error"]
    return outcome["reports"]


def _results(reports: list[dict], n: int) -> list:
    import cloudpickle

    by_index = {r["index"]: r for r in reports}
    results, failures = [], []
    for i in range(n):
        r = by_index[i]
        if r["outcome"] == "done":
            results.append(cloudpickle.loads(r["result"]) if r["result"] is not None else None)
        else:
            results.append(None)
            failures.append(NodeFailure(
                job_name="instance", task_index=i, host=r["host"], executor_id=r["executor_id"],
                reason=r["message"], exit_code=r["exit_code"], traceback=r["traceback"],
                output_tail=r["output_tail"], at=r["ended_at"],
            ))
    if failures:
        raise ParallelRunError(failures, results, f"parallel run: {len(failures)} of {n} instances failed")
    return results


# ------------------------------------------------------------------ executor side


def run_instance_task(launch: _InstanceLaunch, index: int) -> dict:
    """Spark task: run instance ``index`` in a supervised child; return its report (never raises
    for the instance's own failure, so the other instances run on)."""
    from tfos.node.identity import current_executor
    from tfos.node.process import OutputTail, describe_exit, terminate

    me = current_executor()
    report = {"index": index, "executor_id": me.executor_id, "host": me.host, "outcome": "failed",
              "result": None, "message": "", "traceback": "", "output_tail": "", "exit_code": None,
              "ended_at": 0.0}
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfos.parallel", "--status-fd", str(write_fd), "--parent-pid", str(os.getpid())],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, pass_fds=(write_fd,),
        cwd=me.working_dir, env=_child_env(launch), start_new_session=True,
    )
    os.close(write_fd)
    tag = f"[instance:{index}]"
    tail = OutputTail(proc.stdout, tag)
    events: dict = {}
    reader = threading.Thread(target=_read_events, args=(os.fdopen(read_fd, "rb"), events),
                              name="tfos-instance-events", daemon=True)
    reader.start()
    header = {"index": index, "num_instances": launch.num_instances, "run_id": launch.run_id,
              "executor_id": me.executor_id, "host": me.host, "working_dir": me.working_dir,
              "default_fs": launch.default_fs, "keras": launch.keras}
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
    reader.join(5.0)
    tail.join(2.0)
    report["ended_at"] = time.time()
    report["exit_code"] = code
    if timed_out:
        report["message"] = f"did not finish within timeout={launch.timeout_s:g} s; stopped"
    elif code == 0 and "done" in events:
        report.update(outcome="done", result=events.get("result"))
        return report
    elif "failed" in events:
        report.update(message=events["failed"]["message"], traceback=events["failed"].get("traceback", ""))
    else:
        report["message"] = f"instance process {describe_exit(code)}"
    report["output_tail"] = tail.text()
    return report


def _read_events(stream, events: dict) -> None:
    try:
        while True:
            event = frames.read_json(stream)
            if event is None:
                return
            kind = event.get("event")
            if kind == "done":
                events["result"] = frames.read_frame(stream)
            events[kind] = event
    except (OSError, ValueError, EOFError):
        return


def _child_env(launch: _InstanceLaunch) -> dict[str, str]:
    from tfos.node.child_env import without_spark_secrets

    env = without_spark_secrets(os.environ)
    if not launch.keep_omp_num_threads:
        env.pop("OMP_NUM_THREADS", None)  # pyspark's per-task value would throttle TF
    env.pop("TF_CONFIG", None)
    gpus = _task_gpus()
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    env.update(launch.env)
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in sys.path if p))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _task_gpus() -> list[str] | None:
    """The GPU addresses Spark gave this task, or ``None`` when it schedules no GPUs."""
    try:
        from pyspark import TaskContext

        resources = TaskContext.get().resources()
    except Exception as exc:  # noqa: BLE001 - not in a Spark task, or an old pyspark
        log.debug("no task resources: %s", exc)
        return None
    gpu = resources.get("gpu")
    return list(gpu.addresses) if gpu is not None else None


# ------------------------------------------------------------------ child side


def _child_main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--status-fd", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    opts = parser.parse_args()
    from tfos.node.process import die_with_parent

    if not die_with_parent(opts.parent_pid):
        return 70  # the Spark task is already gone
    status = os.fdopen(opts.status_fd, "wb")
    header = frames.read_json(sys.stdin.buffer)
    payload = frames.read_frame(sys.stdin.buffer)
    if header is None or payload is None:
        return 70
    from tfos.node.tf_process import _prepare_environment

    _prepare_environment(header["keras"])
    import cloudpickle

    try:
        from tfos.context import NodeContext
        from tfos.user_code import restore_source

        main_fun, args, source = cloudpickle.loads(payload)
        restore_source(main_fun, source)
        i = header["index"]
        ctx = NodeContext(job_name="worker", task_index=i, cluster_spec={}, num_workers=header["num_instances"],
                          worker_num=i, executor_id=header["executor_id"], default_fs=header["default_fs"],
                          working_dir=header["working_dir"], run_id=header["run_id"], host=header["host"])
        if isinstance(args, list):
            sys.argv = list(args)  # TensorFlowOnSpark's convention for argv-style tf_args
        result = main_fun(args, ctx)
        try:
            data = cloudpickle.dumps(result)
        except Exception as exc:  # noqa: BLE001 - any pickling error: say what was returned
            raise TypeError(f"main_fun returned a {type(result).__name__} that cannot be pickled back to the "
                            f"driver ({exc}); return plain data (numbers, lists, dicts, numpy arrays)") from exc
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the driver
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            data = cloudpickle.dumps(None)
        else:
            tb = traceback.format_exc()
            sys.stderr.write(tb)
            sys.stderr.flush()
            frames.write_json(status, {"event": "failed", "message": f"main_fun raised {type(exc).__name__}: "
                                                                     f"{exc}"[:2000], "traceback": tb})
            return 1
    frames.write_json(status, {"event": "done"})
    frames.write_frame(status, data)
    return 0


run = parallel_run  # TensorFlowOnSpark's TFParallel.run

__all__ = ["parallel_run", "run", "run_instance_task"]


if __name__ == "__main__":
    from tfos.node.process import exit_within

    exit_within(_child_main())
