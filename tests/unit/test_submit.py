"""`tfos submit`: argv -> SubmitConfig -> spark-submit command, for every master and deploy mode.

No process is started here: parse_submit_args and build_command are pure, and the CLI tests
only use --dry-run, --help and usage errors.
"""

from __future__ import annotations

import shlex

import pytest

from tfos import cli
from tfos.errors import ConfigError
from tfos.submit import (
    SubmitCommand,
    SubmitError,
    build_command,
    hdfs_environment,
    parse_submit_args,
    wants_help,
)

pytestmark = pytest.mark.timeout(60)

SUBMIT = "/opt/spark/bin/spark-submit"
PY = "/venv/bin/python"
TFOS_NEEDS = ["--conf", "spark.dynamicAllocation.enabled=false", "--conf", "spark.task.maxFailures=1",
              "--conf", "spark.stage.maxConsecutiveAttempts=1"]


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
             "spark.task.cpus=1"), *TFOS_NEEDS,
      *confs(f"spark.pyspark.driver.python={PY}", "spark.tfos.keras=tf_keras",
             "spark.executorEnv.TF_USE_LEGACY_KERAS=1"), "train.py"],
     {"TF_USE_LEGACY_KERAS": "1"}),
    ("yarn_client_packed", "--master yarn --cluster-size 2 --pack-env env.tar.gz --archives d.zip train.py", {},
     ["--master", "yarn", "--deploy-mode", "client", "--archives", "d.zip,env.tar.gz#environment",
      *confs("spark.tfos.clusterSize=2", "spark.executor.instances=2", "spark.executor.cores=1",
             "spark.task.cpus=1"), *TFOS_NEEDS,
      *confs("spark.pyspark.python=./environment/bin/python",
             "spark.executorEnv.PYSPARK_PYTHON=./environment/bin/python",
             f"spark.pyspark.driver.python={PY}"), "train.py"],
     {}),
    ("yarn_cluster_packed_keras",
     "--master yarn --deploy-mode cluster --cluster-size 4 --executor-cores 4 --pack-env env.tar.gz "
     "--keras tf_keras train.py --epochs 1", {},
     ["--master", "yarn", "--deploy-mode", "cluster", "--executor-cores", "4",
      "--archives", "env.tar.gz#environment",
      *confs("spark.tfos.clusterSize=4", "spark.executor.instances=4", "spark.task.cpus=4"), *TFOS_NEEDS,
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
             "spark.task.cpus=1"), *TFOS_NEEDS,
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
             "spark.task.cpus=1"), *TFOS_NEEDS,
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
             "spark.stage.maxConsecutiveAttempts=1", f"spark.pyspark.driver.python={PY}"), "train.py"],
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
        "--conf spark.stage.maxConsecutiveAttempts=1 --conf spark.pyspark.python=./environment/bin/python "
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
    ("spark_connect", "--remote sc://h:15002 train.py",
     "--remote is not supported by tfos submit: tfos needs a classic SparkContext; Spark Connect "
     "(--remote) has no executors to start TF nodes on"),
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


@pytest.mark.parametrize("argv,stderr", [
    (["submit", "--bogus", "train.py"], "tfos submit: error: unknown option --bogus;"),
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
    assert "--cluster-size N" in out and "--pack-env PATH" in out
    assert cli.main([]) == 0
    assert "submit" in capsys.readouterr().out


def _no_process(*args, **kwargs):
    raise AssertionError(f"no process may start: {args}")
