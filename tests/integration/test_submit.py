"""`tfos submit` through the installed console script, with real spark-submit and real Spark.

- --dry-run and usage errors: the exact command printed, exit codes, nothing started;
- a TENSORFLOW-mode script (tests/integration/scripts/submit_probe.py, which calls
  tfos.run without num_executors) on the embedded local-cluster default;
- the same script against a standalone master with 2 workers started by
  scripts/start-cluster.sh, stopped by scripts/stop-cluster.sh, nothing left running.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys

import psutil
import pytest

from tests.integration.spark_helpers import wait_no_node_processes

pytestmark = pytest.mark.integration

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROBE = os.path.join(ROOT, "tests", "integration", "scripts", "submit_probe.py")
SCRIPTS = os.path.join(ROOT, "scripts")
# quiet nodes, no GPU probing; --env is tfos submit's spark.executorEnv.*
NODE_ENV = ["--env", "TF_CPP_MIN_LOG_LEVEL=2", "--env", "CUDA_VISIBLE_DEVICES=", "--env", "TFOS_PROBE=yes"]


def tfos_command() -> str:
    """The `tfos` console script installed next to this Python (pip install -e .)."""
    path = os.path.join(os.path.dirname(sys.executable), "tfos")
    return path if os.path.exists(path) else shutil.which("tfos")


def run(args: list[str], timeout_s: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command in its own session; on timeout kill the whole session, then fail."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", **(env or {})},
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{shlex.join(args)} ran over {timeout_s} s\n{out[-2000:]}\n{err[-4000:]}")
    except BaseException:  # an interrupted test leaves no spark-submit behind
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def probe_result(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("PROBE ")]
    assert len(lines) == 1, result.stdout[-3000:]
    return json.loads(lines[0][len("PROBE "):])


def assert_one_tf_cluster(probe: dict, nodes: int) -> None:
    """Every node ran, with a unique (job, index), and all saw the same cluster spec."""
    records = probe["records"]
    assert probe["nodes"] == nodes
    assert sorted((r["job_name"], r["task_index"]) for r in records) == \
        [("chief", 0)] + [("worker", i) for i in range(nodes - 1)]
    specs = {json.dumps(r["tf_config"]["cluster"], sort_keys=True) for r in records}
    assert len(specs) == 1
    assert all(r["total"] == sum(range(r["task_index"] + 4)) for r in records)  # TF ran
    assert len({r["executor_id"] for r in records}) == nodes


# ------------------------------------------------------------------------------ dry run


@pytest.mark.timeout(60)
def test_dry_run_prints_the_exact_command_and_starts_nothing(tmp_path):
    archive = tmp_path / "env.tar.gz"
    archive.write_bytes(b"")
    before = {p.pid for p in psutil.process_iter()}
    result = run([tfos_command(), "submit", "--dry-run", "--master", "yarn", "--deploy-mode", "cluster",
                  "--cluster-size", "3", "--executor-cores", "2", "--pack-env", str(archive),
                  "--keras", "tf_keras", PROBE, "--out", "/tmp/x y"], timeout_s=50)
    assert result.returncode == 0, result.stderr
    words = shlex.split(result.stdout)
    assert words[0].endswith("/bin/spark-submit") and os.access(words[0], os.X_OK)
    assert words[1:6] == ["--master", "yarn", "--deploy-mode", "cluster", "--executor-cores"]
    for expected in ("spark.tfos.clusterSize=3", "spark.executor.instances=3", "spark.task.cpus=2",
                     "spark.dynamicAllocation.enabled=false",
                     "spark.yarn.appMasterEnv.PYSPARK_PYTHON=./environment/bin/python",
                     "spark.executorEnv.TF_USE_LEGACY_KERAS=1"):
        assert expected in words
    assert f"{archive}#environment" in words
    assert words[-3:] == [PROBE, "--out", "/tmp/x y"]
    started = [p for p in psutil.process_iter(["cmdline"]) if p.pid not in before
               and "SparkSubmit" in " ".join(p.info["cmdline"] or [])]
    assert started == []

    k8s = run([tfos_command(), "submit", "--dry-run", "--master", "k8s://https://api:6443",
               "--deploy-mode", "cluster", "--cluster-size", "2", "--image", "reg/tfos:0.1.0",
               "local:///opt/tfos/train.py"], timeout_s=50)
    assert k8s.returncode == 0, k8s.stderr
    assert "--conf spark.kubernetes.container.image=reg/tfos:0.1.0" in k8s.stdout


@pytest.mark.timeout(60)
def test_conflicting_options_exit_2_with_the_reason():
    result = run([tfos_command(), "submit", "--cluster-size", "2",
                  "--conf", "spark.dynamicAllocation.enabled=true", PROBE], timeout_s=50)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "tfos submit: error: conflicting options: --conf spark.dynamicAllocation.enabled=true, but tfos "
        "needs spark.dynamicAllocation.enabled=false (executors must not come and go under a running TF "
        "cluster); drop the option or change the tfos option it contradicts\n")


# --------------------------------------------------------------------------- real runs


@pytest.mark.timeout(300)
@pytest.mark.slow  # CI time; the CLI end to end runs in the default run in test_submit_remote; its spark-submit lines in tests/unit/test_submit.py
def test_submit_on_the_embedded_local_cluster(tmp_path):
    out = tmp_path / "nodes"
    out.mkdir()
    result = run([tfos_command(), "submit", "--keras", "tf_keras", *NODE_ENV, PROBE,
                  "--out", str(out), "--marker", "embedded run"], timeout_s=240)
    probe = probe_result(result)
    assert_one_tf_cluster(probe, nodes=2)
    assert probe["conf"]["spark.master"] == "local-cluster[2,1,1024]"
    assert probe["conf"]["spark.tfos.clusterSize"] == "2"
    assert probe["conf"]["spark.task.maxFailures"] == "1"
    # --keras reaches the nodes (spark.executorEnv) and the driver (its environment)
    assert [r["tf_use_legacy_keras"] for r in probe["records"]] == ["1", "1"]
    assert probe["driver_keras"] == "1"
    assert {r["probe_env"] for r in probe["records"]} == {"yes"}
    assert {r["marker"] for r in probe["records"]} == {"embedded run"}  # script args passed on
    assert "tfos submit: SPARK_LOCAL_IP=127.0.0.1" not in result.stderr  # the caller's value kept
    assert wait_no_node_processes() == []


@pytest.fixture
def standalone(tmp_path):
    """A master and 2 one-core workers from scripts/start-cluster.sh; stopped, and checked gone."""
    state = tmp_path / "standalone"
    started = run([os.path.join(SCRIPTS, "start-cluster.sh"), "-n", "2", "-p", "0", "-u", "0",
                   "-m", "1536m", "-d", str(state)], timeout_s=150, env={"PYTHON": sys.executable})
    pids = [int((state / f"{name}.pid").read_text()) for name in ("master", "worker-1", "worker-2")
            if (state / f"{name}.pid").exists()]
    try:
        assert started.returncode == 0, started.stderr[-4000:]
        url = started.stdout.strip().splitlines()[-1]
        assert url.startswith("spark://127.0.0.1:") and (state / "master-url").read_text().strip() == url
        assert len(pids) == 3
        yield url, state
    finally:
        stopped = run([os.path.join(SCRIPTS, "stop-cluster.sh"), "-d", str(state)], timeout_s=60)
        assert stopped.returncode == 0, stopped.stderr
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        assert alive == []
        leftovers = [p.pid for p in psutil.process_iter(["cmdline"])
                     if str(state) in " ".join(p.info["cmdline"] or [])]
        assert leftovers == []


@pytest.mark.slow  # starts a standalone master and 2 workers: run on demand (python -m pytest -m slow)
@pytest.mark.timeout(400)
def test_submit_against_a_standalone_cluster_from_the_scripts(standalone, tmp_path):
    url, state = standalone
    out = tmp_path / "nodes"
    out.mkdir()
    result = run([tfos_command(), "submit", "--master", url, "--cluster-size", "2", *NODE_ENV, PROBE,
                  "--out", str(out)], timeout_s=240)
    probe = probe_result(result)
    assert_one_tf_cluster(probe, nodes=2)
    assert probe["conf"]["spark.master"] == url
    assert (probe["conf"]["spark.cores.max"], probe["conf"]["spark.executor.cores"]) == ("2", "1")
    # one node on each worker: their executors run in the workers' own work dirs
    work_dirs = sorted(os.path.relpath(r["cwd"], state).split(os.sep)[0] for r in probe["records"])
    assert work_dirs == ["work-1", "work-2"]
    assert wait_no_node_processes() == []
