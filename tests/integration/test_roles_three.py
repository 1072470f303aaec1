"""Three executors: ps, evaluator and chief/worker roles, ParameterServerStrategy, evaluator sidecar."""

from __future__ import annotations

import json
import sys
import time

import cloudpickle
import pytest

import tfos

SPARK_EXECUTORS = 3
pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _report(out_dir, ctx):
    import json as _json
    import os as _os

    with open(_os.path.join(out_dir, f"{ctx.job_name}-{ctx.task_index}.json"), "w") as f:
        _json.dump({"spec": ctx.cluster_spec, "tf_config": _json.loads(_os.environ["TF_CONFIG"]),
                    "worker_num": ctx.worker_num, "num_workers": ctx.num_workers}, f)


@pytest.mark.parametrize("kwargs,roles", [
    # CI time: the planner is unit-tested (test_roles) and three executors form a cluster in the
    # default run's ps, evaluator and fed-node tests; all three variants run with -m slow
    pytest.param({}, [("chief", 0), ("worker", 0), ("worker", 1)], marks=pytest.mark.slow),
    # the planner's other outcomes are unit-tested (test_roles) and the evaluator runs in
    # test_evaluator_runs_main_fun_as_evaluator: these two end-to-end variants run on demand
    pytest.param({"eval_node": True}, [("chief", 0), ("evaluator", 0), ("worker", 0)], marks=pytest.mark.slow),
    pytest.param({"master_node": None}, [("worker", 0), ("worker", 1), ("worker", 2)], marks=pytest.mark.slow),
])
def test_three_executors_get_planned_roles_and_one_spec(sc, tmp_path, kwargs, roles):
    cluster = tfos.run(sc, _report, str(tmp_path), num_executors=3, **kwargs)
    cluster.shutdown(timeout=120)
    assert [(n.job_name, n.task_index) for n in cluster.cluster_info] == roles
    reports = {p.stem: json.loads(p.read_text()) for p in tmp_path.glob("*.json")}
    assert sorted(reports) == sorted(f"{j}-{i}" for j, i in roles)
    specs = {json.dumps(r["spec"], sort_keys=True) for r in reports.values()}
    assert len(specs) == 1
    spec = json.loads(specs.pop())
    assert "evaluator" not in spec
    addresses = [a for addrs in spec.values() for a in addrs]
    assert len(addresses) == len(set(addresses))
    for name, r in reports.items():
        job, index = name.rsplit("-", 1)
        assert r["tf_config"]["task"] == {"type": job, "index": int(index)}


def _ps_strategy(args, ctx):
    """Chief coordinates; the worker serves; the ps node is served by tfos without main_fun."""
    import json as _json
    import os as _os

    import tensorflow as tf

    if ctx.job_name == "worker":
        if args["serve"] == "ctx.serve":
            ctx.serve()
        else:  # TensorFlow's tutorial: the worker serves until the job is killed
            resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
            server = tf.distribute.Server(resolver.cluster_spec(), job_name=resolver.task_type,
                                          task_index=resolver.task_id, protocol="grpc", start=True)
            server.join()
        return

    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    strategy = tf.distribute.ParameterServerStrategy(resolver)
    coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
    with strategy.scope():
        total = tf.Variable(0.0)

    @tf.function
    def step():
        total.assign_add(1.0)
        return total.read_value()

    for _ in range(20):
        coordinator.schedule(step)
    coordinator.join()
    with open(_os.path.join(args["dir"], "chief.json"), "w") as f:
        _json.dump({"total": float(total.numpy()), "ps": ctx.cluster_spec["ps"],
                    "variable_device": total.device}, f)


@pytest.mark.parametrize("serve", [
    "ctx.serve",
    # CI time: the same ps path as ctx.serve, the worker serving by hand
    pytest.param("tf.distribute.Server.join", marks=pytest.mark.slow),
])
def test_parameter_server_strategy_run_ends_when_the_chief_is_done(sc, tmp_path, serve):
    # however the worker serves, the coordinator's end is the job's end: the worker is stopped
    cluster = tfos.run(sc, _ps_strategy, {"dir": str(tmp_path), "serve": serve}, num_executors=3, num_ps=1)
    assert [(n.job_name, n.task_index) for n in cluster.cluster_info] == [("ps", 0), ("chief", 0), ("worker", 0)]
    start = time.monotonic()
    cluster.shutdown(timeout=180)
    result = json.loads((tmp_path / "chief.json").read_text())
    assert result["total"] == 20.0
    assert "/job:ps" in result["variable_device"]
    states = {n.job_name: n.state for n in cluster.cluster_info}
    assert states == {"chief": "done", "ps": "stopped", "worker": "stopped"}
    assert time.monotonic() - start < 60


def _evaluator_sidecar(args, ctx):
    import os as _os
    import time as _time

    done = _os.path.join(args, "training-done")
    if ctx.job_name == "evaluator":
        seen = 0
        while not _os.path.exists(done):
            seen += 1
            _time.sleep(0.2)
        with open(_os.path.join(args, "evaluator"), "w") as f:
            f.write(f"{ctx.job_name}:{ctx.task_index} worker_num={ctx.worker_num}")
        return
    _time.sleep(1.0)
    if ctx.job_name == "chief":
        open(done, "w").close()


def test_evaluator_runs_main_fun_as_evaluator(sc, tmp_path):
    cluster = tfos.run(sc, _evaluator_sidecar, str(tmp_path), num_executors=3, eval_node=True)
    start = time.monotonic()
    cluster.shutdown(grace_secs=60, timeout=120)
    assert time.monotonic() - start < 30  # the grace period ends when the evaluator does
    assert (tmp_path / "evaluator").read_text() == "evaluator:0 worker_num=-1"
    assert {n.job_name: n.state for n in cluster.cluster_info}["evaluator"] == "done"


def _never_ending_evaluator(args, ctx):
    import time as _time

    if ctx.job_name == "evaluator":
        _time.sleep(300)


@pytest.mark.slow  # CI time; covered in the default run by stopping serving roles: the ps tests
def test_shutdown_stops_an_evaluator_that_would_run_forever(sc):
    cluster = tfos.run(sc, _never_ending_evaluator, None, num_executors=3, eval_node=True)
    start = time.monotonic()
    cluster.shutdown(timeout=120)
    assert time.monotonic() - start < 60
    assert {n.job_name: n.state for n in cluster.cluster_info}["evaluator"] == "stopped"


def _what_each_node_holds(out_dir, ctx):
    """Whether this node has a feed and holds the run's secret; on the chief, TensorBoard's GPUs."""
    import gc as _gc
    import json as _json
    import os as _os
    import time as _time

    import psutil

    from tfos.errors import FeedError
    from tfos.reservation.auth import Secret

    try:
        ctx.get_data_feed()
        fed = True
    except FeedError:
        fed = False
    secrets = sum(1 for o in _gc.get_objects() if isinstance(o, Secret) and o.value)
    tensorboard_gpus = None
    if ctx.job_name == "chief":  # TensorBoard runs beside the lead node, a child of its supervisor
        deadline = _time.monotonic() + 60
        while tensorboard_gpus is None and _time.monotonic() < deadline:
            for proc in psutil.Process(_os.getppid()).children():
                if "tensorboard.main" in " ".join(proc.cmdline()):
                    tensorboard_gpus = proc.environ().get("CUDA_VISIBLE_DEVICES", "<unset>")
            _time.sleep(0.2)
    with open(_os.path.join(out_dir, f"{ctx.job_name}.json"), "w") as f:
        _json.dump({"fed": fed, "secrets": secrets, "tensorboard_gpus": tensorboard_gpus}, f)


def test_in_spark_mode_only_the_fed_nodes_get_a_feed_and_the_secret_and_tensorboard_sees_no_gpu(sc, tmp_path):
    # the run's env= names a GPU list, as a user on a GPU cluster might: TensorBoard must not see it
    cluster = tfos.run(sc, _what_each_node_holds, str(tmp_path), num_executors=3, num_ps=1,
                       input_mode=tfos.InputMode.SPARK, tensorboard=True, env={"CUDA_VISIBLE_DEVICES": "0"})
    feed_ports = {str(n.role): n.feed_port for n in cluster.state.snapshot()}
    cluster.shutdown(timeout=120)
    reports = {p.stem: json.loads(p.read_text()) for p in tmp_path.glob("*.json")}
    assert reports == {"chief": {"fed": True, "secrets": 1, "tensorboard_gpus": "-1"},
                       "worker": {"fed": True, "secrets": 1, "tensorboard_gpus": None}}, reports
    # the ps runs no main_fun (tfos serves it): it registered no feed endpoint, and its TF
    # process got no secret (the supervisor hands both to fed slots only)
    assert feed_ports["chief:0"] > 0 and feed_ports["worker:0"] > 0 and feed_ports["ps:0"] == 0, feed_ports
