"""YARN for real: ``tfos submit --master yarn`` against Hadoop's own MiniYARNCluster.

The fixture (tests/hadoop_cluster.py) runs a ResourceManager and a NodeManager on 127.0.0.1
beside a MiniDFSCluster (Spark's staging directory), and writes the ``HADOOP_CONF_DIR``
spark-submit reads. Every job goes through the installed ``tfos`` console script and pip's
pyspark (``spark-yarn_2.13``); its final state is read from the ResourceManager's REST API,
and the driver's output from its container's log files on the NodeManager:

- cluster mode: tests/integration/scripts/yarn_train.py, its driver in the application
  master's container and two executors, writes its data to HDFS, runs an MWMS ``fit`` whose
  nodes read their shards from there, with TensorBoard, mirrors the chief's directories to
  ``--storage hdfs://...`` and ends SUCCEEDED; the containers run the machine's interpreter
  (``--python``);
- cluster mode, a node that raises: the application ends FAILED, and the driver's container
  log holds the node's traceback;
- client mode with ``--pack-env ARCHIVE``: YARN unpacks the shipped virtualenv as
  ``./environment`` in each container, and the nodes run in it.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import tarfile
import urllib.request
import venv
import xml.etree.ElementTree as ElementTree

import pytest

from tests.hadoop_cluster import serve
from tests.integration.spark_helpers import wait_no_node_processes
from tests.integration.test_submit import ROOT, run, tfos_command

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900), pytest.mark.slow]

TRAIN = os.path.join(ROOT, "tests", "integration", "scripts", "yarn_train.py")
PROBE = os.path.join(ROOT, "tests", "integration", "scripts", "submit_probe.py")
#: seconds for one application, submission to its end
JOB_TIMEOUT_S = 420


@pytest.fixture(scope="module")
def yarn():
    yield from serve(yarn=True)


def _site(conf_dir: str, name: str) -> dict[str, str]:
    root = ElementTree.parse(os.path.join(conf_dir, name)).getroot()
    return {p.findtext("name"): p.findtext("value") for p in root.iter("property")}


def _rest(yarn, path: str) -> dict:
    web = _site(yarn.conf_dir, "yarn-site.xml")["yarn.resourcemanager.webapp.address"]
    with urllib.request.urlopen(f"http://{web}/ws/v1/cluster/{path}", timeout=30) as reply:
        return json.load(reply)


def _applications(yarn) -> dict[str, dict]:
    """Every application the ResourceManager knows, by id."""
    return {a["id"]: a for a in (_rest(yarn, "apps").get("apps") or {}).get("app", [])}


def _container_logs(yarn, app_id: str) -> dict[str, dict[str, str]]:
    """Each container's stdout and stderr on the NodeManager, by container id (the AM's first)."""
    logs: dict[str, dict[str, str]] = {}
    for directory in sorted(glob.glob(os.path.join(yarn.workdir, "**", app_id, "container_*"), recursive=True)):
        files = {}
        for stream in ("stdout", "stderr"):
            path = os.path.join(directory, stream)
            if os.path.exists(path):
                with open(path, errors="replace") as f:
                    files[stream] = f.read()
        logs[os.path.basename(directory)] = files
    return logs


def submit(yarn, name: str, options: list[str], script: list[str]) -> tuple:
    """``tfos submit --master yarn`` with this machine's loopback settings; returns the
    finished process, the application's REST record and its containers' logs."""
    jars = os.path.join(os.path.dirname(__import__("pyspark").__file__), "jars")
    command = [tfos_command(), "submit", "--master", "yarn", "--name", name, "--cluster-size", "2",
               # the NodeManager is on this machine: the containers read pip's Spark jars in
               # place instead of a 400 MB upload per application
               "--conf", f"spark.yarn.jars=local:{jars}/*",
               # loopback only: the driver (AM container) and the executors bind 127.0.0.1
               "--conf", "spark.yarn.appMasterEnv.SPARK_LOCAL_IP=127.0.0.1",
               "--conf", "spark.executorEnv.SPARK_LOCAL_IP=127.0.0.1",
               "--conf", "spark.ui.enabled=false",
               "--env", "TF_CPP_MIN_LOG_LEVEL=2", "--env", "CUDA_VISIBLE_DEVICES=",
               *options, *script]
    before = _applications(yarn)
    result = run(command, JOB_TIMEOUT_S, env={"HADOOP_CONF_DIR": yarn.conf_dir})
    assert wait_no_node_processes() == []
    # the one this submission made (in client mode the script's appName names it, not --name)
    new = [app for app_id, app in _applications(yarn).items() if app_id not in before]
    assert len(new) == 1, (new, result.stderr[-4000:])
    return result, new[0], _container_logs(yarn, new[0]["id"])


def test_the_resource_manager_serves_one_running_node_manager_and_the_conf_names_it(yarn):
    site = _site(yarn.conf_dir, "yarn-site.xml")
    assert site["yarn.resourcemanager.address"] == yarn.rm_address
    assert _site(yarn.conf_dir, "core-site.xml")["fs.defaultFS"] == yarn.uri
    assert _rest(yarn, "info")["clusterInfo"]["state"] == "STARTED"
    assert [n["state"] for n in _rest(yarn, "nodes")["nodes"]["node"]] == ["RUNNING"]


def test_cluster_mode_trains_mwms_on_hdfs_data_with_tensorboard_and_succeeds(yarn):
    storage, data = f"{yarn.uri}/tfos/runs/yarn-train", f"{yarn.uri}/tfos/data/train"
    result, app, logs = submit(
        yarn, "tfos-yarn-train",
        ["--deploy-mode", "cluster", "--python", sys.executable, "--storage", storage,
         # tfos's storage calls (driver and nodes) through hdfs-native: no libhdfs here
         "--env", "TFOS_FSSPEC_SCHEMES=hdfs", "--conf", "spark.yarn.appMasterEnv.TFOS_FSSPEC_SCHEMES=hdfs"],
        [TRAIN, "--data", data, "--epochs", "3"])
    assert result.returncode == 0, result.stderr[-6000:]
    assert (app["state"], app["finalStatus"]) == ("FINISHED", "SUCCEEDED"), app
    # the driver ran in the application master's container (the first), two executors beside it
    containers = sorted(logs)
    assert len(containers) == 3, containers
    driver = logs[containers[0]]
    line = next((x for x in driver["stdout"].splitlines() if x.startswith("RESULT ")), None)
    assert line is not None, driver["stdout"][-3000:] + driver["stderr"][-6000:]
    outcome = json.loads(line[len("RESULT "):])
    assert outcome["master"] == "yarn"
    assert outcome["num_workers"] == 2
    assert outcome["files"] == [f"{data}/part-00000.tfrecord", f"{data}/part-00002.tfrecord"]  # the chief's shard
    assert outcome["loss"][-1] < outcome["loss"][0] / 5, outcome["loss"]  # it learned y = w.x
    assert outcome["tensorboard_url"].startswith("http://127.0.0.1:") and outcome["tensorboard_status"] == 200
    assert any("/tensorboard/train/events.out.tfevents." in e for e in outcome["events"]), outcome["events"]
    assert f"{os.sep}appcache{os.sep}{app['id']}{os.sep}" in outcome["cwd"]  # the chief ran in a container


def test_cluster_mode_a_raising_node_fails_the_application_with_its_traceback_in_the_driver_log(yarn, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    result, app, logs = submit(
        yarn, "tfos-yarn-raises", ["--deploy-mode", "cluster", "--python", sys.executable],
        [PROBE, "--out", str(out), "--fail-on", "worker"])
    assert result.returncode != 0
    assert app["finalStatus"] == "FAILED", app
    driver = logs[sorted(logs)[0]]
    # Spark's PythonRunner sends the script's stderr to the container's stdout
    output = driver.get("stdout", "") + driver.get("stderr", "")
    assert "ClusterFailedError: TF cluster failed" in output, output[-8000:]
    assert "remote traceback:" in output
    assert "RuntimeError: probe: node worker:0 fails on purpose" in output
    assert "in main_fun" in output
    assert "User application exited with status 1" in driver.get("stderr", "")  # the AM's own report


def _packed_virtualenv(path) -> str:
    """A virtualenv over this machine's site-packages (TensorFlow, pyspark, tfos), packed as
    a tar.gz the way venv-pack lays one out: ``bin/python`` links to the machine's
    interpreter, which every NodeManager host must have at the same path."""
    home = path / "venv"
    venv.EnvBuilder(system_site_packages=True, symlinks=True, with_pip=False).create(home)
    archive = path / "tfos-env.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in sorted(os.listdir(home)):
            tar.add(home / name, arcname=name)
    return str(archive)


def test_client_mode_ships_a_packed_environment_and_the_nodes_run_in_it(yarn, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    archive = _packed_virtualenv(tmp_path)
    result, app, _ = submit(yarn, "tfos-yarn-client-packed", ["--deploy-mode", "client", "--pack-env", archive],
                            [PROBE, "--out", str(out), "--marker", "yarn"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert (app["state"], app["finalStatus"]) == ("FINISHED", "SUCCEEDED"), app
    line = next(x for x in result.stdout.splitlines() if x.startswith("PROBE "))
    probe = json.loads(line[len("PROBE "):])
    assert probe["conf"]["spark.master"] == "yarn"
    records = probe["records"]
    assert sorted((r["job_name"], r["task_index"]) for r in records) == [("chief", 0), ("worker", 0)]
    for record in records:
        # the node's Python is the unpacked archive in its container's working directory
        assert record["prefix"].endswith(f"{os.sep}environment"), record
        assert f"{os.sep}appcache{os.sep}{app['id']}{os.sep}" in record["prefix"], record
        assert record["marker"] == "yarn"
    assert len({r["executor_id"] for r in records}) == 2
