"""Independent single-node runs of ``main_fun(args, ctx)`` on the executors.

>>> results = tfos.parallel_run(sc, sweep_fun, [{"lr": 0.1}, {"lr": 0.01}], num_executors=2)

TensorFlowOnSpark's ``TFParallel.run``: N instances with no cluster between them
(``TF_CONFIG`` is unset), for hyper-parameter sweeps and embarrassingly parallel
inference. Each instance runs in a supervised child process of its Spark task, as a
cluster node does (parent-death signal, output tail, traceback on failure), with its
own index (``ctx.worker_num`` of ``ctx.num_workers``, so ``ctx.shard_files`` gives it its
share of the input) and the GPUs Spark assigned to its task, if any.

This module is the driver half; the executor half (the instance task and its child,
``python -m tfos.node.instance``) is :mod:`tfos.node.instance`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from tfos.errors import ClusterFailedError, ConfigError, NodeFailure, ParallelRunError
from tfos.node.instance import InstanceLaunch as _InstanceLaunch
from tfos.node.instance import run_instance_task


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
    (``spark.task.resource.gpu.amount``), ``ctx.gpus`` lists their addresses and
    ``CUDA_VISIBLE_DEVICES`` holds them, mapped through the executor's own, as on a
    cluster's nodes.

    Args:
        sc: a ``SparkContext``, a classic ``SparkSession`` or a Spark Connect session (the
            job is then a ``mapInPandas`` over ``spark.range``, under an operation tag).
        main_fun: the function to run; its return value (picklable) comes back.
        tf_args: passed to ``main_fun`` unchanged.
        num_executors: number of instances (TensorFlowOnSpark's name); by default
            ``spark.executor.instances``.
        use_barrier: run the instances as one barrier stage, so they all start together
            (needs a free task slot per instance); otherwise as ordinary tasks that Spark
            may queue.
        timeout: seconds an instance may run before it is stopped and counted as failed
            (``None``: no limit).
        env: extra environment for the instances' processes; it wins over the executor's,
            as described in :mod:`tfos.node.child_env`.
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
    from tfos.config import check_int, check_positive
    from tfos.keras_compat import check_keras_choice
    from tfos.spark.app import spark_app
    from tfos.spark.env import read_facts, wait_for_executors
    from tfos.user_code import pack_main_fun

    app = spark_app(sc)
    facts = read_facts(app)
    if num_executors is None:
        num_executors = facts.configured_executors
        if num_executors is None:
            raise ConfigError("num_executors is required when spark.executor.instances is not set")
    check_int("num_executors", num_executors, 1)
    check_keras_choice(keras, "keras")
    if timeout is not None:
        check_positive("timeout", timeout)
    check_positive("stop_grace_s", stop_grace_s, allow_zero=True)
    payload = pack_main_fun(main_fun, tf_args)
    if facts.configured_executors:
        wait_for_executors(app, min(num_executors, facts.configured_executors), executor_wait_timeout)
    launch = _InstanceLaunch(
        run_id=uuid.uuid4().hex[:12], num_instances=num_executors, default_fs=facts.default_fs,
        keras=keras, timeout_s=timeout, stop_grace_s=stop_grace_s,
        keep_omp_num_threads=facts.omp_num_threads_set, env=dict(env or {}),
        payload=payload,
    )
    reports = _run_job(app, launch, use_barrier)
    return _results(reports, num_executors)


def _run_job(app, launch: _InstanceLaunch, use_barrier: bool) -> list[dict]:
    """The Spark job, in a thread under the run's job group (cancelled on interrupt)."""
    from tfos.spark.jobs import error_text, first_line

    n = launch.num_instances
    group = f"tfos-parallel-{launch.run_id}"

    def job():
        return app.run_tasks(n, lambda index: run_instance_task(launch, index), use_barrier)

    outcome = app.start_job(group, f"tfos: parallel run {launch.run_id} ({n} instances)", job,
                            name=f"tfos-parallel-{launch.run_id}")
    try:
        while not outcome.done.wait(0.5):
            pass
    except BaseException:
        app.cancel(group)
        raise
    if outcome.error is not None:
        failure = NodeFailure("driver", -1, "", "", f"the Spark job of parallel run {launch.run_id} failed "
                              f"before every instance reported: {first_line(outcome.error)}",
                              traceback=error_text(outcome.error), at=time.time())
        raise ClusterFailedError([failure], "parallel run") from outcome.error
    return outcome.value


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


run = parallel_run  # TensorFlowOnSpark's TFParallel.run

__all__ = ["parallel_run", "run", "run_instance_task"]

