"""`tfos submit`: argv -> SubmitConfig -> spark-submit command, for every master and deploy mode,
and the script's own command with --remote (a Spark Connect server).

No process is started here: parse_submit_args and build_command are pure, and the CLI tests
only use --dry-run, --help and usage errors.
"""

from __future__ import annotations

import json
import shlex

import pytest

from tfos import cli
from tfos.errors import ConfigError
from tfos.spark.conf import conf_from_environment, run_options
from tfos.submit import (
    ConfEntry,
    SubmitCommand,
    SubmitConfig,
    SubmitError,
    build_command,
    hdfs_environment,
    parse_submit_args,
    wants_help,
)
from tfos.submit import args as submit_args

pytestmark = pytest.mark.timeout(60)

SUBMIT = "/opt/spark/bin/spark-submit"
PY = "/venv/bin/python"
TFOS_NEEDS = ["--conf", "spark.dynamicAllocation.enabled=false", "--conf", "spark.task.maxFailures=1",
              "--conf", "spark.stage.maxConsecutiveAttempts=1"]
#: and on YARN, no second application attempt
YARN_NEEDS = [*TFOS_NEEDS, "--conf", "spark.yarn.maxAppAttempts=1"]


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Run in a scratch directory holding train.py, an archive and two environments."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text("print('hi')\n")
    (tmp_path / "env.tar.gz").write_bytes(b"")
    (tmp_path / "venv").mkdir()
    (tmp_path / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (tmp_path / "conda" / "conda-meta").mkdir(parents=True)
    (tmp_path / "plain").mkdir()
    return tmp_path


def installed(*tools):
    return lambda name: f"/usr/bin/{name}" if name in tools else None


BOTH_PACKERS = installed("venv-pack", "conda-pack")


def command(argv: str, environ=None, hdfs_env=None, which=BOTH_PACKERS) -> SubmitCommand:
    config = parse_submit_args(shlex.split(argv))
    return build_command(config, spark_submit=SUBMIT, python=PY, environ=environ or {},
                         hdfs_env=hdfs_env, which=which)


def confs(*pairs: str) -> list[str]:
    return [word for pair in pairs for word in ("--conf", pair)]


# --------------------------------------------------------------------------- command lines

COMMANDS = [
    # (id, argv, environ, expected argv after spark-submit, expected env)
    ("embedded_default", "train.py --epochs 3", {},
     ["--master", "local-cluster[2,1,1024]",
      *confs("spark.tfos.clusterSize=2", "spark.task.cpus=1"), *TFOS_NEEDS,
      *confs(f"spark.pyspark.python={PY}", f"spark.pyspark.driver.python={PY}"),
      "train.py", "--epochs", "3"],
     {"SPARK_LOCAL_IP": "127.0.0.1"}),
    ("embedded_keeps_callers_local_ip", "--cluster-size 3 train.py", {"SPARK_LOCAL_IP": "10.0.0.5"},
     ["--master", "local-cluster[3,1,1024]",
      *confs("spark.tfos.clusterSize=3", "spark.task.cpus=1"), *TFOS_NEEDS,
      *confs(f"spark.pyspark.python={PY}", f"spark.pyspark.driver.python={PY}"), "train.py"],
     {}),
    ("embedded_cores_and_memory",
     "--cluster-size 3 --executor-cores 2 --executor-memory 2g --keras keras3 train.py", {},
     ["--master", "local-cluster[3,2,2048]", "--executor-cores", "2", "--executor-memory", "2g",
      *confs("spark.tfos.clusterSize=3", "spark.task.cpus=2"), *TFOS_NEEDS,
      *confs(f"spark.pyspark.python={PY}", f"spark.pyspark.driver.python={PY}",
             "spark.tfos.keras=keras3", "spark.executorEnv.TF_USE_LEGACY_KERAS=0"), "train.py"],
     {"TF_USE_LEGACY_KERAS": "0", "SPARK_LOCAL_IP": "127.0.0.1"}),
    ("explicit_local_cluster", "--master local-cluster[3,1,2048] train.py", {},
     ["--master", "local-cluster[3,1,2048]",
      *confs("spark.tfos.clusterSize=3", "spark.task.cpus=1"), *TFOS_NEEDS,
      *confs(f"spark.pyspark.python={PY}", f"spark.pyspark.driver.python={PY}"), "train.py"],
     {"SPARK_LOCAL_IP": "127.0.0.1"}),
    ("standalone", "--master spark://m:7077 --cluster-size 4 --executor-cores 2 --env A=b train.py", {},
     ["--master", "spark://m:7077", "--deploy-mode", "client", "--executor-cores", "2",
      *confs("spark.tfos.clusterSize=4", "spark.cores.max=8", "spark.task.cpus=2"), *TFOS_NEEDS,
      *confs(f"spark.pyspark.python={PY}", f"spark.pyspark.driver.python={PY}", "spark.executorEnv.A=b"),
      "train.py"],
     {}),
    ("standalone_on_loopback", "--master spark://127.0.0.1:7077 --cluster-size 2 --python /w/py train.py", {},
     ["--master", "spark://127.0.0.1:7077", "--deploy-mode", "client",
      *confs("spark.tfos.clusterSize=2", "spark.cores.max=2", "spark.executor.cores=1",
             "spark.task.cpus=1"), *TFOS_NEEDS,
      *confs("spark.pyspark.python=/w/py", f"spark.pyspark.driver.python={PY}"), "train.py"],
     {"SPARK_LOCAL_IP": "127.0.0.1"}),
    ("yarn_client", "--master yarn --cluster-size 4 --queue q --keras tf_keras train.py", {},
     ["--master", "yarn", "--deploy-mode", "client", "--queue", "q",
      *confs("spark.tfos.clusterSize=4", "spark.executor.instances=4", "spark.executor.cores=1",
             "spark.task.cpus=1"), *YARN_NEEDS,
      *confs(f"spark.pyspark.driver.python={PY}", "spark.tfos.keras=tf_keras",
             "spark.executorEnv.TF_USE_LEGACY_KERAS=1"), "train.py"],
     {"TF_USE_LEGACY_KERAS": "1"}),
    ("yarn_client_packed", "--master yarn --cluster-size 2 --pack-env env.tar.gz --archives d.zip train.py", {},
     ["--master", "yarn", "--deploy-mode", "client", "--archives", "d.zip,env.tar.gz#environment",
      *confs("spark.tfos.clusterSize=2", "spark.executor.instances=2", "spark.executor.cores=1",
             "spark.task.cpus=1"), *YARN_NEEDS,
      *confs("spark.pyspark.python=./environment/bin/python",
             "spark.executorEnv.PYSPARK_PYTHON=./environment/bin/python",
             f"spark.pyspark.driver.python={PY}"), "train.py"],
     {}),
    ("yarn_cluster_packed_keras",
     "--master yarn --deploy-mode cluster --cluster-size 4 --executor-cores 4 --pack-env env.tar.gz "
     "--keras tf_keras train.py --epochs 1", {},
     ["--master", "yarn", "--deploy-mode", "cluster", "--executor-cores", "4",
      "--archives", "env.tar.gz#environment",
      *confs("spark.tfos.clusterSize=4", "spark.executor.instances=4", "spark.task.cpus=4"), *YARN_NEEDS,
      *confs("spark.pyspark.python=./environment/bin/python",
             "spark.executorEnv.PYSPARK_PYTHON=./environment/bin/python",
             "spark.pyspark.driver.python=./environment/bin/python",
             "spark.yarn.appMasterEnv.PYSPARK_PYTHON=./environment/bin/python",
             "spark.tfos.keras=tf_keras", "spark.executorEnv.TF_USE_LEGACY_KERAS=1",
             "spark.yarn.appMasterEnv.TF_USE_LEGACY_KERAS=1"),
      "train.py", "--epochs", "1"],
     {}),
    ("yarn_cluster_hdfs_archive_on_hdfs",
     "--master yarn --deploy-mode cluster --cluster-size 2 --hdfs --pack-env hdfs:///envs/tfos.tgz train.py", {},
     ["--master", "yarn", "--deploy-mode", "cluster", "--archives", "hdfs:///envs/tfos.tgz#environment",
      *confs("spark.tfos.clusterSize=2", "spark.executor.instances=2", "spark.executor.cores=1",
             "spark.task.cpus=1"), *YARN_NEEDS,
      *confs("spark.pyspark.python=./environment/bin/python",
             "spark.executorEnv.PYSPARK_PYTHON=./environment/bin/python",
             "spark.pyspark.driver.python=./environment/bin/python",
             "spark.yarn.appMasterEnv.PYSPARK_PYTHON=./environment/bin/python",
             "spark.executorEnv.CLASSPATH=/h/a.jar:/h/b.jar",
             "spark.executorEnv.LD_LIBRARY_PATH=/jdk/lib/server:/h/lib/native",
             "spark.yarn.appMasterEnv.CLASSPATH=/h/a.jar:/h/b.jar",
             "spark.yarn.appMasterEnv.LD_LIBRARY_PATH=/jdk/lib/server:/h/lib/native"),
      "train.py"],
     {}),
    ("yarn_client_hdfs_driver_env", "--master yarn --cluster-size 2 --hdfs train.py",
     {"LD_LIBRARY_PATH": "/usr/local/lib"},
     ["--master", "yarn", "--deploy-mode", "client",
      *confs("spark.tfos.clusterSize=2", "spark.executor.instances=2", "spark.executor.cores=1",
             "spark.task.cpus=1"), *YARN_NEEDS,
      *confs(f"spark.pyspark.driver.python={PY}", "spark.executorEnv.CLASSPATH=/h/a.jar:/h/b.jar",
             "spark.executorEnv.LD_LIBRARY_PATH=/jdk/lib/server:/h/lib/native"), "train.py"],
     {"CLASSPATH": "/h/a.jar:/h/b.jar", "LD_LIBRARY_PATH": "/jdk/lib/server:/h/lib/native:/usr/local/lib"}),
    ("k8s_cluster", "--master k8s://https://api:6443 --deploy-mode cluster --cluster-size 4 "
     "--image reg/tfos:0.1.0 --keras keras3 local:///opt/app/train.py", {},
     ["--master", "k8s://https://api:6443", "--deploy-mode", "cluster",
      *confs("spark.tfos.clusterSize=4", "spark.executor.instances=4", "spark.executor.cores=1",
             "spark.task.cpus=1"), *TFOS_NEEDS,
      *confs("spark.tfos.keras=keras3", "spark.executorEnv.TF_USE_LEGACY_KERAS=0",
             "spark.kubernetes.container.image=reg/tfos:0.1.0",
             "spark.kubernetes.driverEnv.TF_USE_LEGACY_KERAS=0"),
      "local:///opt/app/train.py"],
     {}),
    ("k8s_client_gpus", "--master k8s://https://api:6443 --cluster-size 2 --gpus-per-node 1 "
     "--gpu-discovery-script /opt/gpus.sh --conf spark.kubernetes.container.image=reg/tfos train.py", {},
     ["--master", "k8s://https://api:6443", "--deploy-mode", "client",
      "--conf", "spark.kubernetes.container.image=reg/tfos",
      *confs("spark.tfos.clusterSize=2", "spark.executor.instances=2", "spark.executor.cores=1",
             "spark.task.cpus=1"), *TFOS_NEEDS,
      *confs(f"spark.pyspark.driver.python={PY}", "spark.executor.resource.gpu.amount=1",
             "spark.task.resource.gpu.amount=1", "spark.executor.resource.gpu.discoveryScript=/opt/gpus.sh",
             "spark.executor.resource.gpu.vendor=nvidia.com"), "train.py"],
     {}),
    ("embedded_fake_gpus", "--gpus-per-node 2 --gpu-discovery-script /t/gpus.sh train.py",
     {"SPARK_LOCAL_IP": "127.0.0.1"},
     ["--master", "local-cluster[2,1,1024]",
      *confs("spark.tfos.clusterSize=2", "spark.task.cpus=1"), *TFOS_NEEDS,
      *confs(f"spark.pyspark.python={PY}", f"spark.pyspark.driver.python={PY}",
             "spark.executor.resource.gpu.amount=2", "spark.task.resource.gpu.amount=2",
             "spark.executor.resource.gpu.discoveryScript=/t/gpus.sh",
             "spark.worker.resource.gpu.amount=2", "spark.worker.resource.gpu.discoveryScript=/t/gpus.sh"),
      "train.py"],
     {}),
    ("standalone_gpus_from_workers", "--master spark://m:7077 --cluster-size 2 --gpus-per-node 1 train.py", {},
     ["--master", "spark://m:7077", "--deploy-mode", "client",
      *confs("spark.tfos.clusterSize=2", "spark.cores.max=2", "spark.executor.cores=1",
             "spark.task.cpus=1"), *TFOS_NEEDS,
      *confs(f"spark.pyspark.python={PY}", f"spark.pyspark.driver.python={PY}",
             "spark.executor.resource.gpu.amount=1", "spark.task.resource.gpu.amount=1"), "train.py"],
     {}),
    ("pass_through_in_order_and_script_options_untouched",
     "--name run1 --py-files a.py,b.zip -v --jars x.jar --driver-memory 4g --conf spark.ui.port=4050 "
     "-c spark.eventLog.enabled=true --files=f.txt train.py --master local --help --cluster-size 9",
     {"SPARK_LOCAL_IP": "127.0.0.1"},
     ["--master", "local-cluster[2,1,1024]", "--name", "run1", "--py-files", "a.py,b.zip", "-v",
      "--jars", "x.jar", "--driver-memory", "4g", "--files", "f.txt",
      "--conf", "spark.ui.port=4050", "--conf", "spark.eventLog.enabled=true",
      *confs("spark.tfos.clusterSize=2", "spark.task.cpus=1"), *TFOS_NEEDS,
      *confs(f"spark.pyspark.python={PY}", f"spark.pyspark.driver.python={PY}"),
      "train.py", "--master", "local", "--help", "--cluster-size", "9"],
     {}),
    ("user_defaults_win_over_soft_settings",
     "--conf spark.task.maxFailures=4 --conf spark.pyspark.python=/other/py train.py",
     {"SPARK_LOCAL_IP": "127.0.0.1"},
     ["--master", "local-cluster[2,1,1024]",
      "--conf", "spark.task.maxFailures=4", "--conf", "spark.pyspark.python=/other/py",
      *confs("spark.tfos.clusterSize=2", "spark.task.cpus=1", "spark.dynamicAllocation.enabled=false",
             "spark.stage.maxConsecutiveAttempts=1", f"spark.pyspark.driver.python={PY}"), "train.py"],
     {}),
    ("exported_pyspark_pythons_are_kept", "--master spark://m:7077 --cluster-size 2 train.py",
     {"PYSPARK_PYTHON": "/env/py", "PYSPARK_DRIVER_PYTHON": "/env/py"},
     ["--master", "spark://m:7077", "--deploy-mode", "client",
      *confs("spark.tfos.clusterSize=2", "spark.cores.max=2", "spark.executor.cores=1",
             "spark.task.cpus=1"), *TFOS_NEEDS, "train.py"],
     {}),
    ("agreeing_options_are_not_repeated",
     "--master yarn --cluster-size 3 --num-executors 3 --conf spark.dynamicAllocation.enabled=False "
     "--conf spark.task.cpus=1 train.py", {},
     ["--master", "yarn", "--deploy-mode", "client", "--num-executors", "3",
      "--conf", "spark.dynamicAllocation.enabled=False", "--conf", "spark.task.cpus=1",
      *confs("spark.tfos.clusterSize=3", "spark.executor.cores=1", "spark.task.maxFailures=1",
             "spark.stage.maxConsecutiveAttempts=1", "spark.yarn.maxAppAttempts=1",
             f"spark.pyspark.driver.python={PY}"), "train.py"],
     {}),
]


@pytest.mark.parametrize("argv,environ,expected,env", [c[1:] for c in COMMANDS], ids=[c[0] for c in COMMANDS])
def test_command_for_each_master_and_mode(argv, environ, expected, env):
    hdfs = {"CLASSPATH": "/h/a.jar:/h/b.jar", "LD_LIBRARY_PATH": "/jdk/lib/server:/h/lib/native"}
    cmd = command(argv, environ, hdfs_env=hdfs if "--hdfs" in argv else None)
    assert list(cmd.argv) == [SUBMIT, *expected]
    assert cmd.env == env
    assert cmd.pack == ()


@pytest.mark.parametrize("env_dir,tool", [("venv", "venv-pack"), ("conda", "conda-pack")])
def test_pack_env_directory_is_packed_first_and_shipped(env_dir, tool):
    cmd = command(f"--master yarn --deploy-mode cluster --cluster-size 2 --pack-env {env_dir} "
                  f"--pack-output out/e.tar.gz train.py")
    assert cmd.pack == (tool, "-p", env_dir, "-o", "out/e.tar.gz", "--force")
    i = cmd.argv.index("--archives")
    assert cmd.argv[i + 1] == "out/e.tar.gz#environment"
    assert "spark.yarn.appMasterEnv.PYSPARK_PYTHON=./environment/bin/python" in cmd.argv


def test_dry_run_prints_the_exact_shell_lines():
    cmd = command("--dry-run --master yarn --cluster-size 2 --pack-env venv --name 'my run' train.py --msg 'a b'",
                  environ={}, which=installed("venv-pack"))
    assert cmd.shell() == (
        "venv-pack -p venv -o tfos-env.tar.gz --force\n"
        f"{SUBMIT} --master yarn --deploy-mode client --name 'my run' "
        "--archives 'tfos-env.tar.gz#environment' --conf spark.tfos.clusterSize=2 "
        "--conf spark.executor.instances=2 --conf spark.executor.cores=1 --conf spark.task.cpus=1 "
        "--conf spark.dynamicAllocation.enabled=false --conf spark.task.maxFailures=1 "
        "--conf spark.stage.maxConsecutiveAttempts=1 --conf spark.yarn.maxAppAttempts=1 "
        "--conf spark.pyspark.python=./environment/bin/python "
        "--conf spark.executorEnv.PYSPARK_PYTHON=./environment/bin/python "
        f"--conf spark.pyspark.driver.python={PY} train.py --msg 'a b'"
    )
    embedded = command("train.py", environ={})
    assert embedded.shell().startswith(f"SPARK_LOCAL_IP=127.0.0.1 {SUBMIT} --master 'local-cluster[2,1,1024]' ")
    # the printed line, split by a shell, is the command itself
    assert shlex.split(embedded.shell()) == ["SPARK_LOCAL_IP=127.0.0.1", *embedded.argv]


def test_parse_keeps_what_it_was_given():
    config = parse_submit_args(shlex.split(
        "--cluster-size 3 --dry-run --env A=1 --env B=x=y --executor-memory 3g --keras tf_keras "
        "--master yarn train.py a -b"))
    assert (config.cluster_size, config.dry_run, config.master, config.keras) == (3, True, "yarn", "tf_keras")
    assert config.node_env == (("A", "1"), ("B", "x=y"))
    assert (config.executor_cores, config.executor_memory_mb) == (1, 3072)
    assert (config.script, config.script_args) == ("train.py", ("a", "-b"))
    assert config.master_kind == "yarn"


def test_storage_becomes_the_spark_tfos_storage_key():
    cmd = command("--storage s3://bucket/runs train.py", environ={})
    assert "--conf spark.tfos.storage=s3://bucket/runs" in cmd.shell()
    assert parse_submit_args(["--storage", "hdfs:///r", "t.py"]).storage == "hdfs:///r"


@pytest.mark.parametrize("argv,expected", [
    ("--help", True), ("-h train.py", True), ("--master yarn --help", True),
    ("train.py --help", False), ("train.py", False), ("--bogus --help", False),
])
def test_help_only_before_the_script(argv, expected):
    assert wants_help(shlex.split(argv)) is expected


# ------------------------------------------------------------------------------------ errors

ERRORS = [
    ("unknown_option", "--epochs 3 train.py",
     "unknown option --epochs; tfos submit takes its own options (--cluster-size, --keras, "
     "--gpus-per-node, --gpu-discovery-script, --pack-env, --pack-output, --image, --python, --env, --storage, "
     "--dry-run, --hdfs, --help, -h) and spark-submit's before the script (see tfos submit --help)"),
    ("no_script", "--cluster-size 2", "no script given: tfos submit [options] script.py [script args]"),
    ("missing_value", "--cluster-size", "--cluster-size needs a value"),
    ("not_python", "app.jar", "tfos submit runs a Python script (.py); received: 'app.jar'"),
    ("zero_size", "--cluster-size 0 train.py",
     "--cluster-size must be a whole number >= 1; received: '0'"),
    ("word_size", "--cluster-size two train.py",
     "--cluster-size must be a whole number >= 1; received: 'two'"),
    ("repeated_size", "--cluster-size 2 --cluster-size 3 train.py",
     "conflicting options: --cluster-size 2 and --cluster-size 3"),
    ("local_master", "--master local[*] train.py",
     "--master local[*] runs every task inside the driver's JVM, but tfos needs 2 executor processes "
     "(one TF node each); leave --master out (an embedded local-cluster) or give --master "
     "'local-cluster[2,1,1024]'"),
    ("mesos", "--master mesos://m:5050 --cluster-size 2 train.py",
     "--master must be spark://host:port, yarn, k8s://https://host:port or local-cluster[N,C,MB] "
     "(or left out); received: --master mesos://m:5050"),
    ("remote_master_needs_size", "--master yarn train.py",
     "--cluster-size N is required with --master yarn (the number of TF nodes, one per executor)"),
    ("deploy_mode_word", "--deploy-mode server train.py",
     "--deploy-mode must be client or cluster; received: --deploy-mode server"),
    ("cluster_mode_embedded", "--deploy-mode cluster train.py",
     "--deploy-mode cluster needs --master yarn or k8s://...: a local-cluster driver runs on this machine"),
    ("cluster_mode_standalone", "--master spark://m:7077 --cluster-size 2 --deploy-mode cluster train.py",
     "--deploy-mode cluster is not supported for Python scripts on a standalone master (spark-submit "
     "refuses it); use --deploy-mode client"),
    ("keras_word", "--keras keras2 train.py", "--keras must be one of keras3, tf_keras; received: --keras keras2"),
    ("class", "--class org.X train.py",
     "--class is not supported by tfos submit: tfos submit runs Python scripts; --class is for JVM applications"),
    # --remote: the Connect server's application is not ours to set
    ("remote_needs_size", "--remote sc://h:15002 train.py",
     "--cluster-size N is required with --remote (the number of TF nodes; the Connect server needs that "
     "many executors, one task slot each)"),
    ("remote_not_a_url", "--remote h:15002 --cluster-size 2 train.py",
     "--remote takes a Spark Connect URL, sc://host[:port][/;param=value...]; received: --remote h:15002"),
    ("remote_with_a_path", "--remote sc://h:15002/db --cluster-size 2 train.py",
     "--remote takes a Spark Connect URL, sc://host[:port][/;param=value...]; received: --remote sc://h:15002/db"),
    ("remote_local", "--remote local[2] --cluster-size 2 train.py",
     "--remote local[2] starts a Spark Connect server inside the script's own process, with no executor "
     "processes; tfos submit --remote takes a running server's sc://host:port (on one machine, leave "
     "--remote out: an embedded local-cluster)"),
    ("remote_twice", "--remote sc://a --remote sc://b --cluster-size 2 train.py",
     "conflicting options: --remote sc://a and --remote sc://b"),
    ("remote_and_master", "--master yarn --remote sc://h:15002 --cluster-size 2 train.py",
     "--master does not apply with --remote (a Spark Connect server): the Connect server has its master; "
     "give --master when starting the server"),
    ("remote_deploy_mode", "--remote sc://h --cluster-size 2 --deploy-mode client train.py",
     "--deploy-mode does not apply with --remote (a Spark Connect server): the script runs here, as a "
     "Spark Connect client; the server's driver is already running"),
    ("remote_executors", "--remote sc://h --cluster-size 2 --num-executors 2 train.py",
     "--num-executors does not apply with --remote (a Spark Connect server): the executors are the Connect "
     "server's: start it with one executor per TF node, each with one task slot (spark.executor.instances, "
     "spark.executor.cores = spark.task.cpus, spark.dynamicAllocation.enabled=false)"),
    ("remote_executor_memory", "--remote sc://h --cluster-size 2 --executor-memory 2g train.py",
     "--executor-memory does not apply with --remote (a Spark Connect server): the executors are the "
     "Connect server's: start it with one executor per TF node, each with one task slot "
     "(spark.executor.instances, spark.executor.cores = spark.task.cpus, "
     "spark.dynamicAllocation.enabled=false)"),
    ("remote_python", "--remote sc://h --cluster-size 2 --python /p train.py",
     "--python does not apply with --remote (a Spark Connect server): the executors' Python is the Connect "
     "server's spark.pyspark.python (give it when starting the server); the script runs with this Python"),
    ("remote_gpus", "--remote sc://h --cluster-size 2 --gpus-per-node 1 train.py",
     "--gpus-per-node does not apply with --remote (a Spark Connect server): GPUs are the Connect server's "
     "executors': start it with spark.executor.resource.gpu.* and spark.task.resource.gpu.amount"),
    ("remote_pack_env", "--remote sc://h --cluster-size 2 --pack-env env.tar.gz train.py",
     "--pack-env does not apply with --remote (a Spark Connect server): the executors' environment is the "
     "Connect server's: ship or install it when starting the server (or spark.addArtifacts(path, "
     "archive=True) in the script)"),
    ("remote_image", "--remote sc://h --cluster-size 2 --image reg/tfos train.py",
     "--image does not apply with --remote (a Spark Connect server): the Kubernetes image is chosen when "
     "starting the Connect server"),
    ("remote_hdfs", "--remote sc://h --cluster-size 2 --hdfs train.py",
     "--hdfs does not apply with --remote (a Spark Connect server): the executors' CLASSPATH and "
     "LD_LIBRARY_PATH are the Connect server's: start it with spark.executorEnv.CLASSPATH and "
     "spark.executorEnv.LD_LIBRARY_PATH (docs/deployment.md#hdfs)"),
    ("remote_py_files", "--remote sc://h --cluster-size 2 --py-files lib.zip train.py",
     "--py-files does not apply with --remote (a Spark Connect server): ship them in the script, Spark "
     "Connect's way: spark.addArtifacts(path, pyfile=True) or spark.addArtifacts(path, file=True)"),
    ("remote_jars", "--remote sc://h --cluster-size 2 --jars x.jar train.py",
     "--jars does not apply with --remote (a Spark Connect server): JVM code runs in the Connect server: "
     "give it when starting the server"),
    ("remote_name", "--remote sc://h --cluster-size 2 --name run1 train.py",
     "--name does not apply with --remote (a Spark Connect server): a setting of the Connect server's own "
     "Spark application: give it when starting the server"),
    ("remote_verbose", "--remote sc://h --cluster-size 2 -v train.py",
     "-v does not apply with --remote (a Spark Connect server): no spark-submit runs; --dry-run prints "
     "the command"),
    ("remote_spark_conf", "--remote sc://h --cluster-size 2 --conf spark.executor.cores=2 train.py",
     "--conf spark.executor.cores=2 does not apply with --remote: only spark.tfos.* settings reach the "
     "script (through TFOS_CONF); set other Spark settings when starting the Connect server, or in the "
     "script with spark.conf.set for runtime SQL settings"),
    ("remote_tfos_conf_vs_size", "--remote sc://h --cluster-size 2 -c spark.tfos.clusterSize=3 train.py",
     "conflicting options: -c spark.tfos.clusterSize=3, but tfos needs spark.tfos.clusterSize=2 (tfos.run's "
     "num_executors default (--cluster-size)); drop the option or change the tfos option it contradicts"),
    ("remote_env_twice", "--remote sc://h --cluster-size 2 --env A=1 --env A=2 train.py",
     "conflicting options: --env A=1 and --env A=2"),
    ("remote_keras_vs_env", "--remote sc://h --cluster-size 2 --keras keras3 --env TF_USE_LEGACY_KERAS=1 train.py",
     "conflicting options: --env TF_USE_LEGACY_KERAS=1 and --keras keras3 both set the nodes' "
     "TF_USE_LEGACY_KERAS (1 and 0)"),
    ("remote_script_by_url", "--remote sc://h --cluster-size 2 hdfs:///apps/train.py",
     "with --remote the script runs here, with this Python: give a local path; received: hdfs:///apps/train.py"),
    ("remote_missing_script", "--remote sc://h --cluster-size 2 nothere.py", "script not found: nothere.py"),
    # a token in the URL is a credential: never in a message
    ("remote_bad_url_token_hidden", "--remote 'h:15002/;token=s3cret' --cluster-size 2 train.py",
     "--remote takes a Spark Connect URL, sc://host[:port][/;param=value...]; received: "
     "--remote h:15002/;token=<redacted>"),
    ("remote_twice_tokens_hidden", "--remote 'sc://a/;token=s3cret' --remote 'sc://a/;token=other' "
     "--cluster-size 2 train.py",
     "conflicting options: --remote sc://a/;token=<redacted> and --remote sc://a/;token=<redacted>"),
    ("remote_local_token_hidden", "--remote 'local[2]/;token=s3cret' --cluster-size 2 train.py",
     "--remote local[2]/;token=<redacted> starts a Spark Connect server inside the script's own process, "
     "with no executor processes; tfos submit --remote takes a running server's sc://host:port (on one "
     "machine, leave --remote out: an embedded local-cluster)"),
    ("remote_conf_spark_remote", "--remote sc://h --cluster-size 2 --conf 'spark.remote=sc://x/;token=s3cret' "
     "train.py",
     "--conf spark.remote=sc://x/;token=<redacted> does not apply with --remote: only spark.tfos.* settings "
     "reach the script (through TFOS_CONF); set other Spark settings when starting the Connect server, or in "
     "the script with spark.conf.set for runtime SQL settings"),
    ("spark_remote_as_conf", "--conf 'spark.remote=sc://x/;token=s3cret' train.py",
     "give spark.remote with --remote, not --conf spark.remote=sc://x/;token=<redacted>"),
    ("master_as_conf", "--conf spark.master=yarn train.py",
     "give spark.master with --master, not --conf spark.master=yarn"),
    ("conf_without_value", "--conf spark.ui.port train.py",
     "--conf takes KEY=VALUE; received: --conf spark.ui.port"),
    ("env_bad_name", "--env 1A=x train.py", "--env takes NAME=VALUE; received: --env 1A=x"),
    ("pack_env_standalone", "--master spark://m:7077 --cluster-size 2 --pack-env env.tar.gz train.py",
     "--pack-env ships the environment to YARN containers and needs --master yarn; on a standalone "
     "cluster install it on the workers (and give --python), on Kubernetes put it in the image"),
    ("pack_env_and_python", "--master yarn --cluster-size 2 --pack-env env.tar.gz --python /p train.py",
     "--python and --pack-env both choose the executors' Python; with --pack-env it is "
     "./environment/bin/python (from the archive): drop --python"),
    ("image_off_k8s", "--image reg/tfos train.py",
     "--image is the Kubernetes container image and needs --master k8s://..."),
    ("discovery_without_gpus", "--gpu-discovery-script g.sh train.py",
     "--gpu-discovery-script needs --gpus-per-node G (G >= 1)"),
    ("bad_memory", "--executor-memory lots train.py",
     "spark.executor.memory (--executor-memory) must be a size like 1024m or 2g; received: 'lots'"),
    ("local_cluster_vs_size", "--master local-cluster[2,1,1024] --cluster-size 3 train.py",
     "conflicting options: --master local-cluster[2,1,1024] starts 2 executor(s) of 1 core(s) and "
     "1024 MB, but --cluster-size is 3; leave --master out to get local-cluster[3,1,1024]"),
    ("local_cluster_vs_memory", "--master local-cluster[2,1,1024] --executor-memory 2g train.py",
     "conflicting options: --master local-cluster[2,1,1024] starts 2 executor(s) of 1 core(s) and "
     "1024 MB, but each executor asks for 2048 MB (--executor-memory); the executors would never start"),
    # found while building the command
    ("executors_vs_size", "--master yarn --cluster-size 2 --num-executors 3 train.py",
     "conflicting options: --num-executors 3, but tfos needs spark.executor.instances=2 (one executor "
     "per TF node (--cluster-size 2)); drop the option or change the tfos option it contradicts"),
    ("embedded_executors_vs_size", "--conf spark.executor.instances=5 train.py",
     "conflicting options: --conf spark.executor.instances=5, but tfos needs spark.executor.instances=2 "
     "(one executor per TF node (--cluster-size 2)); drop the option or change the tfos option it "
     "contradicts"),
    ("dynamic_allocation", "--conf spark.dynamicAllocation.enabled=true train.py",
     "conflicting options: --conf spark.dynamicAllocation.enabled=true, but tfos needs "
     "spark.dynamicAllocation.enabled=false (executors must not come and go under a running TF "
     "cluster); drop the option or change the tfos option it contradicts"),
    ("two_slots", "--executor-cores 2 --master yarn --cluster-size 2 --conf spark.task.cpus=1 train.py",
     "conflicting options: --conf spark.task.cpus=1, but tfos needs spark.task.cpus=2 (one task slot "
     "per executor: spark.task.cpus must equal the executor cores (--executor-cores 2)); drop the "
     "option or change the tfos option it contradicts"),
    ("total_cores", "--master spark://m:7077 --cluster-size 2 --total-executor-cores 3 train.py",
     "conflicting options: --total-executor-cores 3, but tfos needs spark.cores.max=2 (2 executors of "
     "1 core(s) (--cluster-size 2, --executor-cores 1)); drop the option or change the tfos option "
     "it contradicts"),
    ("keras_vs_env", "--keras tf_keras --env TF_USE_LEGACY_KERAS=0 train.py",
     "conflicting options: --env TF_USE_LEGACY_KERAS=0 and --keras tf_keras both set "
     "spark.executorEnv.TF_USE_LEGACY_KERAS (0 and 1)"),
    ("k8s_without_image", "--master k8s://https://api:6443 --cluster-size 2 train.py",
     "--master k8s://... needs --image IMAGE (a Spark image with Python, TensorFlow and tfos)"),
    ("k8s_cluster_local_script",
     "--master k8s://https://api:6443 --deploy-mode cluster --cluster-size 2 --image i train.py",
     "in Kubernetes cluster mode the script must be in the image (local:///path/train.py) or reachable "
     "by URL, or set --conf spark.kubernetes.file.upload.path=...; received: train.py"),
    ("gpus_without_discovery", "--gpus-per-node 1 train.py",
     "--gpus-per-node on the embedded local-cluster needs --gpu-discovery-script PATH: a script "
     "printing {\"name\": \"gpu\", \"addresses\": [...]} (Spark's getGpusResources.sh runs nvidia-smi)"),
    ("pack_env_not_an_env", "--master yarn --cluster-size 2 --pack-env plain train.py",
     "--pack-env plain is neither a virtualenv (no pyvenv.cfg) nor a conda environment (no conda-meta/)"),
    ("pack_env_missing_archive", "--master yarn --cluster-size 2 --pack-env gone.tar.gz train.py",
     "--pack-env gone.tar.gz: no such archive"),
    ("missing_script", "nothere.py", "script not found: nothere.py"),
]


@pytest.mark.parametrize("argv,message", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_bad_arguments_are_refused_with_the_reason(argv, message):
    with pytest.raises(SubmitError) as err:
        command(argv)
    assert str(err.value) == message
    assert isinstance(err.value, ConfigError)


# ------------------------------------------------------------------------ --remote (Spark Connect)

REMOTE = [
    # (id, argv, expected argv after this Python, expected TFOS_CONF, other expected env)
    ("size_only", "--remote sc://10.0.0.7:15002 --cluster-size 2 train.py --epochs 3",
     ["train.py", "--epochs", "3"], {"spark.tfos.clusterSize": "2"}, {}),
    ("tfos_settings", "--remote=sc://[::1]:15002 --cluster-size 4 --keras tf_keras --storage s3://b/runs "
     "--env A=1 --env B=x=y train.py",
     ["train.py"],
     {"spark.tfos.clusterSize": "4", "spark.tfos.keras": "tf_keras", "spark.tfos.storage": "s3://b/runs",
      "spark.tfos.env": '{"A":"1","B":"x=y"}'},
     {"TF_USE_LEGACY_KERAS": "1"}),
    ("tfos_conf_keys_pass", "--cluster-size 2 --conf spark.tfos.portRange=41000-41010 -c spark.tfos.clusterSize=2 "
     "--remote sc://h train.py",
     ["train.py"], {"spark.tfos.portRange": "41000-41010", "spark.tfos.clusterSize": "2"}, {}),
    ("url_params_and_script_options_untouched",
     "--remote sc://h:443/;use_ssl=true;user_id=me --cluster-size 2 --dry-run train.py --master yarn --remote x",
     ["train.py", "--master", "yarn", "--remote", "x"], {"spark.tfos.clusterSize": "2"}, {}),
]


@pytest.mark.parametrize("argv,expected,tfos_conf,env", [c[1:] for c in REMOTE], ids=[c[0] for c in REMOTE])
def test_remote_runs_the_script_with_this_python_and_hands_tfos_settings_over(argv, expected, tfos_conf, env):
    config = parse_submit_args(shlex.split(argv))
    cmd = command(argv, environ={"SPARK_LOCAL_IP": "127.0.0.1"})
    assert list(cmd.argv) == [PY, *expected]  # no spark-submit: it would not connect getOrCreate()
    assert cmd.env == {"SPARK_REMOTE": config.remote, "TFOS_CONF": json.dumps(tfos_conf, separators=(",", ":")),
                       **env}
    assert cmd.pack == ()
    # what the script's session will fall back on, read the way tfos.run reads it
    assert conf_from_environment(cmd.env) == tfos_conf


def test_remote_settings_become_tfos_run_options():
    cmd = command("--remote sc://h --cluster-size 3 --keras keras3 --env TFOS_PROBE=yes --storage /mnt/runs "
                  "train.py")
    conf = conf_from_environment(cmd.env)
    assert run_options(conf.get) == {"num_executors": 3, "keras": "keras3", "storage": "/mnt/runs",
                                     "env": {"TFOS_PROBE": "yes"}}


def test_remote_dry_run_prints_the_environment_and_hides_a_token():
    cmd = command("--dry-run --remote 'sc://h:15002/;token=abc;use_ssl=true' --cluster-size 2 train.py --msg 'a b'")
    assert cmd.env["SPARK_REMOTE"] == "sc://h:15002/;token=abc;use_ssl=true"  # the script gets the token
    assert cmd.shell() == ("'SPARK_REMOTE=sc://h:15002/;token=<redacted>;use_ssl=true' "
                           "'TFOS_CONF={\"spark.tfos.clusterSize\":\"2\"}' "
                           f"{PY} train.py --msg 'a b'")
    plain = command("--remote sc://h:15002 --cluster-size 2 train.py")
    assert shlex.split(plain.shell()) == [f"{k}={v}" for k, v in plain.env.items()] + list(plain.argv)


@pytest.mark.parametrize("master", ["yarn", ""])
def test_remote_refuses_an_exported_master(master):
    with pytest.raises(SubmitError) as err:
        command("--remote sc://h --cluster-size 2 train.py", environ={"MASTER": master})
    assert str(err.value) == (f"MASTER={master} is set in the environment, and pyspark refuses a master next "
                              f"to a Spark Connect URL: unset MASTER to use --remote")


CONNECT_URLS_ACCEPTED = ["sc://h", "sc://h:15002", "sc://10.0.0.7:15002", "sc://[::1]:15002", "sc://h/",
                         "sc://conn.example.com:443/;use_ssl=true;token=abc;user_id=me", "sc://h/;user_agent="]
CONNECT_URLS_REFUSED = ["h:15002", "http://h:15002", "sc://", "sc://:15002", "sc://h:port", "sc://h:0",
                        "sc://h:70000", "sc://h/db", "sc://h/;use_ssl", "sc://h/;user_id=a=b", "sc://h;user_id=a",
                        "sc://h :1", "sc://[::1", "SC://h"]


@pytest.mark.parametrize("url", CONNECT_URLS_ACCEPTED)
def test_remote_takes_a_spark_connect_url_as_pyspark_reads_it(url):
    assert parse_submit_args(["--remote", url, "--cluster-size", "2", "train.py"]).remote == url
    core = pytest.importorskip("pyspark.sql.connect.client.core")  # needs grpc
    core.DefaultChannelBuilder(url)  # pyspark's client takes it too


@pytest.mark.parametrize("url", CONNECT_URLS_REFUSED)
def test_remote_refuses_what_is_not_a_spark_connect_url(url):
    with pytest.raises(SubmitError) as err:
        parse_submit_args(["--remote", url, "--cluster-size", "2", "train.py"])
    assert str(err.value) == ("--remote takes a Spark Connect URL, sc://host[:port][/;param=value...]; "
                              f"received: --remote {url}")


#: every option tfos submit reads, but --remote's own, those refused anyway, and --conf (by key)
SERVER_SIDE = sorted((submit_args._VALUE_OPTIONS | submit_args._SWITCHES) - submit_args._REMOTE_OK
                     - set(submit_args._REFUSED))


@pytest.mark.parametrize("option", SERVER_SIDE)
def test_remote_refuses_every_option_of_the_servers_application(option):
    value = [] if option in submit_args._SWITCHES else ["x"]
    with pytest.raises(SubmitError) as err:
        parse_submit_args(["--remote", "sc://h", "--cluster-size", "2", option, *value, "train.py"])
    prefix, _, instead = str(err.value).partition(" (a Spark Connect server): ")
    assert prefix == f"{option} does not apply with --remote"
    assert any(w in instead for w in ("server", "--dry-run", "in the script")), \
        "the message says where the setting goes instead"


def test_a_remote_config_built_in_code_is_checked_too():
    with pytest.raises(SubmitError) as err:
        SubmitConfig(script="train.py", remote="sc://h", master="yarn", hdfs=True, spark_args=("--name", "x"),
                     gpu_discovery_script="gpus.sh", conf=(ConfEntry("spark.executor.cores", "2",
                                                                     ("--executor-cores", "2")),))
    assert str(err.value) == ("--master, --gpu-discovery-script, --hdfs, --name x, --executor-cores 2 cannot "
                              "apply with --remote: the Connect server's application is set when starting "
                              "the server")
    assert SubmitConfig(script="train.py", remote="sc://h").remote == "sc://h"


def test_pack_env_without_the_packer_says_how_to_get_it():
    with pytest.raises(SubmitError) as err:
        command("--master yarn --cluster-size 2 --pack-env venv train.py", which=installed("conda-pack"))
    assert str(err.value) == (
        "--pack-env venv is a virtualenv, but venv-pack is not installed; python -m pip install "
        "venv-pack, or pack it elsewhere and give the archive")


def test_hdfs_environment_reads_hadoop_classpath_glob():
    calls = []

    def run(argv):
        calls.append(argv)
        return "/h/share/a.jar:/h/share/b.jar\n"

    env = hdfs_environment({"JAVA_HOME": "/jdk", "HADOOP_HOME": "/h"}, run)
    assert calls == [["/h/bin/hadoop", "classpath", "--glob"]]
    assert env == {"CLASSPATH": "/h/share/a.jar:/h/share/b.jar",
                   "LD_LIBRARY_PATH": "/jdk/lib/server:/h/lib/native"}


def test_hdfs_environment_errors():
    with pytest.raises(SubmitError) as err:
        hdfs_environment({"JAVA_HOME": "/jdk"}, lambda argv: "")
    assert str(err.value) == ("--hdfs needs HADOOP_HOME set (libjvm.so is under $JAVA_HOME/lib/server, "
                              "libhdfs.so under $HADOOP_HOME/lib/native)")

    def fail(argv):
        raise OSError("No such file or directory: '/h/bin/hadoop'")

    with pytest.raises(SubmitError) as err:
        hdfs_environment({"JAVA_HOME": "/jdk", "HADOOP_HOME": "/h"}, fail)
    assert str(err.value) == ("--hdfs: `/h/bin/hadoop classpath --glob` failed: "
                              "No such file or directory: '/h/bin/hadoop'")


# ------------------------------------------------------------------------- the CLI, no Spark


def test_cli_dry_run_prints_and_runs_nothing(capsys, monkeypatch):
    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
    monkeypatch.setattr(cli.subprocess, "Popen", _no_process)
    assert cli.main(["submit", "--dry-run", "--cluster-size", "3", "train.py", "--x", "1"]) == 0
    out = capsys.readouterr().out
    words = shlex.split(out)
    assert words[0].endswith("/bin/spark-submit")
    assert words[1:3] == ["--master", "local-cluster[3,1,1024]"]
    assert words[-3:] == ["train.py", "--x", "1"]
    assert "spark.tfos.clusterSize=3" in words


def test_cli_remote_dry_run_prints_and_runs_nothing(capsys, monkeypatch):
    monkeypatch.delenv("MASTER", raising=False)
    monkeypatch.setattr(cli.subprocess, "Popen", _no_process)
    assert cli.main(["submit", "--dry-run", "--remote", "sc://h:15002", "--cluster-size", "3", "train.py"]) == 0
    words = shlex.split(capsys.readouterr().out)
    assert words[:2] == ["SPARK_REMOTE=sc://h:15002", 'TFOS_CONF={"spark.tfos.clusterSize":"3"}']
    assert words[-1] == "train.py" and not any("spark-submit" in w for w in words)


@pytest.mark.parametrize("argv,stderr", [
    (["submit", "--bogus", "train.py"], "tfos submit: error: unknown option --bogus;"),
    (["submit", "--remote", "sc://h", "--cluster-size", "2", "--master", "yarn", "train.py"],
     "tfos submit: error: --master does not apply with --remote (a Spark Connect server)"),
    (["submit", "--master", "yarn", "--cluster-size", "2", "--num-executors", "5", "train.py"],
     "tfos submit: error: conflicting options: --num-executors 5, but tfos needs spark.executor.instances=2"),
    (["submit"], "tfos submit: error: no script given"),
])
def test_cli_usage_errors_exit_2_and_run_nothing(argv, stderr, capsys, monkeypatch):
    monkeypatch.setattr(cli.subprocess, "Popen", _no_process)
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(stderr)
    assert captured.out == ""


def test_cli_help(capsys):
    assert cli.main(["submit", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: tfos submit [tfos options] [spark-submit options] script.py [script args]")
    assert "--cluster-size N" in out and "--pack-env PATH" in out and "--remote sc://HOST:PORT" in out
    assert cli.main([]) == 0
    assert "submit" in capsys.readouterr().out


def _no_process(*args, **kwargs):
    raise AssertionError(f"no process may start: {args}")
