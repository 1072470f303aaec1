"""``tfos submit``: argv -> :class:`SubmitConfig` -> the ``spark-submit`` command and its environment.

Two pure steps the CLI chains, and tests call directly:

- :func:`parse_submit_args` reads ``[tfos options] [spark-submit options] script.py [args]``
  into a validated, frozen :class:`SubmitConfig`;
- :func:`build_command` turns it into a :class:`SubmitCommand`: the ``spark-submit``
  argv, the environment variables to add, and the packing command to run first, if any.

Neither starts a process. ``tfos/cli.py`` runs the result. What the Spark application
must look like for tfos (one executor per node, one task slot per executor, no dynamic
allocation) is set here, and a user option that contradicts it is refused with the reason.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tfos.errors import ConfigError
from tfos.keras_compat import KERAS_BACKEND_CHOICES, configure_keras_backend
from tfos.spark_env import LOCAL_CLUSTER_MASTER, LOCAL_MASTER
from tfos.submit_conf import CLUSTER_SIZE_KEY, KERAS_KEY

DEFAULT_CLUSTER_SIZE = 2
DEFAULT_EXECUTOR_MB = 1024
DEFAULT_PACK_OUTPUT = "tfos-env.tar.gz"
#: where YARN unpacks the shipped environment in every container (``--archives x#environment``)
ENV_LINK = "environment"
ENV_PYTHON = f"./{ENV_LINK}/bin/python"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
DEPLOY_MODES = ("client", "cluster")

# spark-submit's own options (pyspark 4.3's SparkSubmitOptionParser), by how tfos treats them.
_PASS_VALUE = (
    "--name", "--jars", "--packages", "--exclude-packages", "--repositories", "--py-files",
    "--files", "--properties-file", "--extra-properties-file", "--driver-memory",
    "--driver-java-options", "--driver-library-path", "--driver-class-path",
    "--driver-default-class-path", "--driver-cores", "--proxy-user", "--principal", "--keytab",
    "--queue",
)
_PASS_SWITCH = ("--verbose", "-v", "--supervise", "--load-spark-defaults")
#: spark-submit options tfos reads, each standing for a Spark conf key
_AS_CONF = {
    "--num-executors": "spark.executor.instances",
    "--executor-cores": "spark.executor.cores",
    "--total-executor-cores": "spark.cores.max",
    "--executor-memory": "spark.executor.memory",
}
_REFUSED = {
    "--class": "tfos submit runs Python scripts; --class is for JVM applications",
    "--kill": "use spark-submit --kill directly",
    "--status": "use spark-submit --status directly",
    "--remote": "tfos needs a classic SparkContext; Spark Connect (--remote) has no executors to "
                "start TF nodes on",
    "--version": "use spark-submit --version",
    "--usage-error": "an internal spark-submit option",
}
_TFOS_VALUE = ("--cluster-size", "--keras", "--gpus-per-node", "--gpu-discovery-script", "--pack-env",
               "--pack-output", "--image", "--python", "--env", "--storage")
_TFOS_SWITCH = ("--dry-run", "--hdfs", "--help", "-h")
_VALUE_OPTIONS = frozenset(_PASS_VALUE + _TFOS_VALUE + tuple(_AS_CONF) + tuple(_REFUSED)
                           + ("--master", "--deploy-mode", "--conf", "-c", "--archives"))
_SWITCHES = frozenset(_PASS_SWITCH + _TFOS_SWITCH)
#: tfos options that may be given once
_SINGLE = frozenset(_TFOS_VALUE) - {"--env"} | {"--master", "--deploy-mode"}
#: conf keys that have their own option
_OWN_OPTION = {"spark.master": "--master", "spark.submit.deployMode": "--deploy-mode"}

_MEMORY = re.compile(r"^(\d+)\s*([kmgtp]?)b?$", re.IGNORECASE)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")

USAGE = f"""\
usage: tfos submit [tfos options] [spark-submit options] script.py [script args]

Runs script.py with spark-submit, with the Spark settings a tfos cluster needs: one executor
per TF node (--cluster-size), one task slot per executor, dynamic allocation off, no task
retries. tfos.run(sc, main_fun, args) in the script takes num_executors from
{CLUSTER_SIZE_KEY}. Without --master, runs on an embedded
local-cluster[N,C,MB] on this machine.

tfos options:
  --cluster-size N         TF nodes = Spark executors (default {DEFAULT_CLUSTER_SIZE} without --master;
                           required with --master)
  --keras {{{",".join(KERAS_BACKEND_CHOICES)}}}  what tf.keras is on driver and nodes (TF_USE_LEGACY_KERAS)
  --env NAME=VALUE         environment of every executor and TF node (spark.executorEnv.NAME), repeatable
  --storage URI            the runs' storage (spark.tfos.storage): hdfs://, s3://, gs://, abfss://...;
                           ctx.local_dir trees are mirrored there and restored on restart
  --python PATH            the executors' Python (default: this Python on local-cluster and
                           spark:// masters)
  --gpus-per-node G        GPUs for each node (spark.executor/task.resource.gpu.amount)
  --gpu-discovery-script PATH
                           Spark's GPU discovery script (needed except on spark:// masters)
  --pack-env PATH          YARN: ship this environment to every container; a venv or conda env
                           directory (packed with venv-pack or conda-pack first) or an archive
                           ({", ".join(ARCHIVE_SUFFIXES)})
  --pack-output FILE       where --pack-env packs a directory (default {DEFAULT_PACK_OUTPUT})
  --hdfs                   CLASSPATH (hadoop classpath --glob) and LD_LIBRARY_PATH
                           ($JAVA_HOME/lib/server, $HADOOP_HOME/lib/native) for TensorFlow's hdfs://
  --image IMAGE            Kubernetes: the container image (spark.kubernetes.container.image)
  --dry-run                print the exact commands and exit
  -h, --help               show this help

spark-submit options, read by tfos:
  --master URL             spark://host:port, yarn, k8s://https://host:port, local-cluster[N,C,MB]
  --deploy-mode MODE       client (default) or cluster (YARN, Kubernetes)
  --executor-cores C       cores per executor = per node (default 1); spark.task.cpus is set to C
  --executor-memory MEM    heap per executor (default 1g)
  --conf KEY=VALUE         any Spark setting; one that contradicts what tfos needs is refused
  --archives LIST          merged with --pack-env's archive
  --num-executors N, --total-executor-cores N
                           accepted when they agree with --cluster-size

Passed through unchanged: {", ".join(_PASS_VALUE + _PASS_SWITCH)}.
Exit codes: 2 for a usage error (nothing is run), else spark-submit's.
"""


class SubmitError(ConfigError):
    """``tfos submit`` cannot build a command from these arguments; the message says why."""


@dataclass(frozen=True)
class ConfEntry:
    """A Spark conf setting the user gave, and how (``--conf k=v`` or ``--num-executors 3``)."""

    key: str
    value: str
    given_as: tuple[str, ...]


@dataclass(frozen=True)
class SubmitConfig:
    """What ``tfos submit`` was asked to do, validated in ``__post_init__``.

    ``spark_args`` are the pass-through spark-submit options in their order; ``conf`` holds
    every Spark setting the user gave (through ``--conf`` or an option that stands for one).
    """

    script: str
    script_args: tuple[str, ...] = ()
    cluster_size: int = DEFAULT_CLUSTER_SIZE
    master: str | None = None
    deploy_mode: str = "client"
    keras: str | None = None
    storage: str | None = None
    node_env: tuple[tuple[str, str], ...] = ()
    python: str | None = None
    gpus_per_node: int = 0
    gpu_discovery_script: str | None = None
    pack_env: str | None = None
    pack_output: str = DEFAULT_PACK_OUTPUT
    hdfs: bool = False
    image: str | None = None
    conf: tuple[ConfEntry, ...] = ()
    archives: tuple[str, ...] = ()
    spark_args: tuple[str, ...] = ()
    dry_run: bool = False

    def __post_init__(self) -> None:
        if not self.script.endswith(".py"):
            raise SubmitError(
                f"tfos submit runs a Python script (.py); received: {self.script!r}"
            )
        if self.cluster_size < 1:
            raise SubmitError(f"--cluster-size must be >= 1; received: --cluster-size {self.cluster_size}")
        kind = self.master_kind
        if self.deploy_mode not in DEPLOY_MODES:
            raise SubmitError(f"--deploy-mode must be client or cluster; received: --deploy-mode {self.deploy_mode}")
        if self.deploy_mode == "cluster" and kind in ("embedded", "local-cluster"):
            raise SubmitError("--deploy-mode cluster needs --master yarn or k8s://...: a local-cluster "
                              "driver runs on this machine")
        if self.deploy_mode == "cluster" and kind == "standalone":
            raise SubmitError("--deploy-mode cluster is not supported for Python scripts on a "
                              "standalone master (spark-submit refuses it); use --deploy-mode client")
        if self.keras is not None and self.keras not in KERAS_BACKEND_CHOICES:
            raise SubmitError(f"--keras must be one of {', '.join(KERAS_BACKEND_CHOICES)}; "
                              f"received: --keras {self.keras}")
        if self.gpus_per_node < 0:
            raise SubmitError(f"--gpus-per-node must be >= 0; received: --gpus-per-node {self.gpus_per_node}")
        if self.gpu_discovery_script and not self.gpus_per_node:
            raise SubmitError("--gpu-discovery-script needs --gpus-per-node G (G >= 1)")
        if self.pack_env is not None and kind != "yarn":
            raise SubmitError(
                "--pack-env ships the environment to YARN containers and needs --master yarn; "
                "on a standalone cluster install it on the workers (and give --python), on "
                "Kubernetes put it in the image"
            )
        if self.pack_env is not None and self.python is not None:
            raise SubmitError(f"--python and --pack-env both choose the executors' Python; with "
                              f"--pack-env it is {ENV_PYTHON} (from the archive): drop --python")
        if self.image is not None and kind != "k8s":
            raise SubmitError("--image is the Kubernetes container image and needs --master k8s://...")
        self.executor_cores, self.executor_memory_mb  # noqa: B018 - both raise when malformed
        m = LOCAL_CLUSTER_MASTER.match(self.master or "")
        if m:
            self._check_local_cluster(int(m.group(1)), int(m.group(2)), int(m.group(3)))

    def _check_local_cluster(self, executors: int, cores: int, mb: int) -> None:
        found = f"--master {self.master} starts {executors} executor(s) of {cores} core(s) and {mb} MB"
        if executors != self.cluster_size:
            raise SubmitError(f"conflicting options: {found}, but --cluster-size is {self.cluster_size}; "
                              f"leave --master out to get local-cluster[{self.cluster_size},{cores},{mb}]")
        if self.executor_cores != cores:
            raise SubmitError(f"conflicting options: {found}, but the executor cores are "
                              f"{self.executor_cores} (--executor-cores / spark.executor.cores)")
        if self.executor_memory_mb > mb:
            raise SubmitError(f"conflicting options: {found}, but each executor asks for "
                              f"{self.executor_memory_mb} MB (--executor-memory); the executors "
                              f"would never start")

    @property
    def master_kind(self) -> str:
        """``embedded`` (no --master), ``local-cluster``, ``standalone``, ``yarn`` or ``k8s``."""
        master = self.master
        if master is None:
            return "embedded"
        if LOCAL_CLUSTER_MASTER.match(master):
            return "local-cluster"
        if master.startswith("spark://"):
            return "standalone"
        if master == "yarn":
            return "yarn"
        if master.startswith("k8s://"):
            return "k8s"
        if LOCAL_MASTER.match(master):
            raise SubmitError(
                f"--master {master} runs every task inside the driver's JVM, but tfos needs "
                f"{self.cluster_size} executor processes (one TF node each); leave --master out "
                f"(an embedded local-cluster) or give --master 'local-cluster[{self.cluster_size},1,1024]'"
            )
        raise SubmitError(
            f"--master must be spark://host:port, yarn, k8s://https://host:port or "
            f"local-cluster[N,C,MB] (or left out); received: --master {master}"
        )

    def user_conf(self, key: str) -> str | None:
        """The last value the user gave for a Spark conf ``key``, or None."""
        values = [e.value for e in self.conf if e.key == key]
        return values[-1] if values else None

    @property
    def executor_cores(self) -> int:
        """Cores of each executor, so of each TF node: the user's, else local-cluster's C, else 1."""
        m = LOCAL_CLUSTER_MASTER.match(self.master or "")
        value = self.user_conf("spark.executor.cores") or (m.group(2) if m else None)
        return _positive_int(value, "spark.executor.cores (--executor-cores)") if value else 1

    @property
    def executor_memory_mb(self) -> int:
        value = self.user_conf("spark.executor.memory")
        return memory_mb(value, "spark.executor.memory (--executor-memory)") if value else DEFAULT_EXECUTOR_MB


@dataclass(frozen=True)
class SubmitCommand:
    """What to run: ``pack`` first when not empty, then ``argv`` with ``env`` added to the environment."""

    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    pack: tuple[str, ...] = ()

    def shell(self) -> str:
        """The commands as shell lines, quoted: what ``--dry-run`` prints."""
        lines = []
        if self.pack:
            lines.append(shlex.join(self.pack))
        assignments = [f"{k}={v}" for k, v in self.env.items()]
        lines.append(shlex.join([*assignments, *self.argv]))
        return "\n".join(lines)


# ----------------------------------------------------------------------------- argv -> config


def split_args(argv: list[str]) -> tuple[list[tuple[str, str | None]], str | None, list[str]]:
    """Split argv into ``(option, value)`` pairs, the script and the script's arguments.

    The script is the first word that is neither an option nor an option's value; everything
    after it belongs to the script. ``--opt=value`` and ``--opt value`` are the same.

    Raises:
        SubmitError: an unknown option, or an option without its value.
    """
    options: list[tuple[str, str | None]] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if not word.startswith("-") or word == "-":
            return options, word, list(argv[i + 1:])
        name, eq, inline = word.partition("=")
        if name in _SWITCHES and not eq:
            options.append((name, None))
        elif name in _VALUE_OPTIONS:
            if eq:
                options.append((name, inline))
            elif i + 1 < len(argv):
                options.append((name, argv[i + 1]))
                i += 1
            else:
                raise SubmitError(f"{name} needs a value")
        else:
            raise SubmitError(
                f"unknown option {word}; tfos submit takes its own options "
                f"({', '.join(_TFOS_VALUE + _TFOS_SWITCH)}) and spark-submit's before the script "
                f"(see tfos submit --help)"
            )
        i += 1
    return options, None, []


def wants_help(argv: list[str]) -> bool:
    """True when ``-h``/``--help`` comes before the script (after it, it is the script's)."""
    try:
        options, _, _ = split_args(argv)
    except SubmitError:
        return False
    return any(name in ("-h", "--help") for name, _ in options)


def parse_submit_args(argv: list[str]) -> SubmitConfig:
    """The :class:`SubmitConfig` for ``tfos submit`` arguments (without the ``submit`` word).

    Pure: reads nothing but ``argv``.

    Raises:
        SubmitError: unknown, repeated, malformed or conflicting options, or no script.
    """
    options, script, script_args = split_args(argv)
    if script is None:
        raise SubmitError("no script given: tfos submit [options] script.py [script args]")
    fields: dict = {}
    conf: list[ConfEntry] = []
    node_env: list[tuple[str, str]] = []
    archives: list[str] = []
    spark_args: list[str] = []
    seen: dict[str, str | None] = {}
    for name, value in options:
        if name in _SINGLE and name in seen and seen[name] != value:
            raise SubmitError(f"conflicting options: {name} {seen[name]} and {name} {value}")
        seen[name] = value
        if name in _REFUSED:
            raise SubmitError(f"{name} is not supported by tfos submit: {_REFUSED[name]}")
        if name in ("-h", "--help"):
            continue
        if name == "--cluster-size":
            fields["cluster_size"] = _positive_int(value, "--cluster-size")
        elif name == "--gpus-per-node":
            fields["gpus_per_node"] = _positive_int(value, "--gpus-per-node")
        elif name in ("--dry-run", "--hdfs"):
            fields[name[2:].replace("-", "_")] = True
        elif name in _TFOS_VALUE and name != "--env":
            fields[name[2:].replace("-", "_")] = value
        elif name in ("--master", "--deploy-mode"):
            fields[name[2:].replace("-", "_")] = value
        elif name == "--env":
            node_env.append(_key_value(value, "--env", "NAME=VALUE", _ENV_NAME))
        elif name in ("--conf", "-c"):
            key, val = _key_value(value, name, "KEY=VALUE")
            if key in _OWN_OPTION:
                raise SubmitError(f"give {key} with {_OWN_OPTION[key]}, not {name} {value}")
            conf.append(ConfEntry(key, val, (name, value)))
        elif name in _AS_CONF:
            conf.append(ConfEntry(_AS_CONF[name], value, (name, value)))
        elif name == "--archives":
            archives.extend(a for a in value.split(",") if a)
        elif name in _PASS_SWITCH:
            spark_args.append(name)
        else:
            spark_args.extend([name, value])
    if "cluster_size" not in fields:
        master = fields.get("master") or ""
        m = LOCAL_CLUSTER_MASTER.match(master)
        if m:
            fields["cluster_size"] = int(m.group(1))
        elif master.startswith(("spark://", "k8s://")) or master == "yarn":
            raise SubmitError(f"--cluster-size N is required with --master {fields['master']} "
                              f"(the number of TF nodes, one per executor)")
    config = SubmitConfig(
        script=script, script_args=tuple(script_args), conf=tuple(conf), node_env=tuple(node_env),
        archives=tuple(archives), spark_args=tuple(spark_args), **fields,
    )
    return config


# -------------------------------------------------------------------------- config -> command


@dataclass(frozen=True)
class _Setting:
    key: str
    value: str
    #: why tfos sets it: shown when a user option contradicts it
    why: str
    #: the user's value wins (a default, not a need)
    soft: bool = False
    #: only checked against the user's value, not written into the command
    emit: bool = True


def build_command(
    config: SubmitConfig,
    *,
    spark_submit: str,
    python: str,
    environ: Mapping[str, str],
    hdfs_env: Mapping[str, str] | None = None,
    which: Callable[[str], str | None] = shutil.which,
) -> SubmitCommand:
    """The ``spark-submit`` command for ``config``; starts nothing.

    Args:
        spark_submit: path of the spark-submit script (see :func:`find_spark_submit`).
        python: this machine's Python with tfos (the client-mode driver's, and the executors'
            on local-cluster and standalone masters unless ``--python`` says otherwise).
        environ: the environment spark-submit will inherit (read, never changed).
        hdfs_env: ``CLASSPATH`` and ``LD_LIBRARY_PATH`` for ``--hdfs`` (see :func:`hdfs_environment`).
        which: finds venv-pack / conda-pack for ``--pack-env DIR``.

    Raises:
        SubmitError: a user option contradicts what tfos needs, or a needed input is missing.
    """
    kind = config.master_kind
    n, cores = config.cluster_size, config.executor_cores
    cluster_mode = config.deploy_mode == "cluster"
    settings: list[_Setting] = []
    env: dict[str, str] = {}
    driver_env: dict[str, str] = {}

    def need(key: str, value: object, why: str, **kw) -> None:
        earlier = next((s for s in settings if s.key == key), None)
        if earlier is None:
            settings.append(_Setting(key, str(value), why, **kw))
        elif earlier.value != str(value):
            raise SubmitError(f"conflicting options: {why} and {earlier.why} both set {key} "
                              f"({value} and {earlier.value})")

    size_why = f"one executor per TF node (--cluster-size {n})"
    need(CLUSTER_SIZE_KEY, n, "tfos.run's num_executors default (--cluster-size)")
    if kind in ("yarn", "k8s"):
        need("spark.executor.instances", n, size_why)
    else:
        need("spark.executor.instances", n, size_why, emit=False)
    if kind == "standalone":
        need("spark.cores.max", n * cores, f"{n} executors of {cores} core(s) "
             f"(--cluster-size {n}, --executor-cores {cores})")
    if kind not in ("embedded", "local-cluster"):
        need("spark.executor.cores", cores, "one task slot per executor")
    need("spark.task.cpus", cores, f"one task slot per executor: spark.task.cpus must equal the "
         f"executor cores (--executor-cores {cores})")
    need("spark.dynamicAllocation.enabled", "false", "executors must not come and go under a "
         "running TF cluster")
    # A retried node cannot rejoin a running TF cluster (the others wait in collectives for
    # the one that left) and a retried feeding task would feed its partition twice: fail
    # fast, and let tfos report the node's own error.
    need("spark.task.maxFailures", 1, "no task retries", soft=True)
    need("spark.stage.maxConsecutiveAttempts", 1, "no stage retries", soft=True)

    # Python: the driver's and the executors'
    if config.pack_env is not None:
        archive, pack = _env_archive(config, which)
        need("spark.pyspark.python", ENV_PYTHON, "--pack-env: the executors run the shipped Python")
        need("spark.executorEnv.PYSPARK_PYTHON", ENV_PYTHON, "--pack-env: the executors run the shipped Python")
        if cluster_mode:
            need("spark.pyspark.driver.python", ENV_PYTHON, "--pack-env: the driver runs in a container")
            need("spark.yarn.appMasterEnv.PYSPARK_PYTHON", ENV_PYTHON,
                 "--pack-env: the driver runs in the application master's container")
    else:
        archive, pack = None, ()
        # on machines like this one, this Python; an exported PYSPARK_PYTHON is the user's choice
        same_machines = kind not in ("yarn", "k8s") and "PYSPARK_PYTHON" not in environ
        executor_python = config.python or (python if same_machines else None)
        if executor_python:
            need("spark.pyspark.python", executor_python, "--python", soft=config.python is None)
    if not cluster_mode and "PYSPARK_DRIVER_PYTHON" not in environ:
        need("spark.pyspark.driver.python", python, "the driver runs this Python", soft=True)

    # environment of the nodes (and of the driver where it matters)
    if config.keras:
        need(KERAS_KEY, config.keras, "--keras")
        for name, value in configure_keras_backend(config.keras).items():
            need(f"spark.executorEnv.{name}", value, f"--keras {config.keras}")
            driver_env[name] = value
    if config.storage:
        from tfos.config import STORAGE_KEY

        need(STORAGE_KEY, config.storage, "--storage")
    for name, value in config.node_env:
        need(f"spark.executorEnv.{name}", value, f"--env {name}={value}")
    if config.hdfs:
        if hdfs_env is None:
            raise SubmitError("--hdfs needs the CLASSPATH and LD_LIBRARY_PATH from hdfs_environment()")
        for name, value in hdfs_env.items():
            need(f"spark.executorEnv.{name}", value, "--hdfs")
            driver_env[name] = value if cluster_mode else _prepend_path(value, environ.get(name))

    # GPUs
    if config.gpus_per_node:
        g = config.gpus_per_node
        need("spark.executor.resource.gpu.amount", g, f"--gpus-per-node {g}")
        need("spark.task.resource.gpu.amount", g, f"--gpus-per-node {g}: the node task holds all "
             f"of its executor's GPUs")
        script = config.gpu_discovery_script or config.user_conf("spark.executor.resource.gpu.discoveryScript")
        if script is None and kind != "standalone":
            raise SubmitError(
                f"--gpus-per-node on {_kind_name(kind)} needs --gpu-discovery-script PATH: "
                "a script printing {\"name\": \"gpu\", \"addresses\": [...]} (Spark's "
                "getGpusResources.sh runs nvidia-smi)"
            )
        if config.gpu_discovery_script:
            need("spark.executor.resource.gpu.discoveryScript", config.gpu_discovery_script,
                 "--gpu-discovery-script")
        if kind in ("embedded", "local-cluster"):
            # local-cluster's workers read the application's conf: they must offer the GPUs
            need("spark.worker.resource.gpu.amount", g, f"--gpus-per-node {g} on local-cluster")
            need("spark.worker.resource.gpu.discoveryScript", script, "--gpu-discovery-script")
        if kind == "k8s":
            need("spark.executor.resource.gpu.vendor", "nvidia.com", "GPUs on Kubernetes", soft=True)

    # Kubernetes
    if kind == "k8s":
        image = config.image or config.user_conf("spark.kubernetes.container.image")
        if image is None:
            raise SubmitError("--master k8s://... needs --image IMAGE (a Spark image with Python, "
                              "TensorFlow and tfos)")
        if config.image:
            need("spark.kubernetes.container.image", config.image, "--image")
        if cluster_mode and "://" not in config.script and not config.user_conf("spark.kubernetes.file.upload.path"):
            raise SubmitError(
                f"in Kubernetes cluster mode the script must be in the image "
                f"(local:///path/{os.path.basename(config.script)}) or reachable by URL, or set "
                f"--conf spark.kubernetes.file.upload.path=...; received: {config.script}"
            )

    # where the driver's environment goes
    if cluster_mode:
        prefix = "spark.yarn.appMasterEnv." if kind == "yarn" else "spark.kubernetes.driverEnv."
        for name, value in driver_env.items():
            need(prefix + name, value, "the driver's environment in cluster mode")
    else:
        env.update(driver_env)
    if (kind in ("embedded", "local-cluster") or _loopback_master(config.master)) \
            and "SPARK_LOCAL_IP" not in environ:
        env["SPARK_LOCAL_IP"] = "127.0.0.1"  # executors on this machine: loopback only

    if "://" not in config.script and kind != "k8s" and not os.path.isfile(config.script):
        raise SubmitError(f"script not found: {config.script}")

    conf = _merge(settings, config.conf)
    if kind == "embedded":
        master = f"local-cluster[{n},{cores},{config.executor_memory_mb}]"
    else:
        master = config.master
    argv = [spark_submit, "--master", master]
    if kind not in ("embedded", "local-cluster"):
        argv += ["--deploy-mode", config.deploy_mode]
    argv += config.spark_args
    for entry in config.conf:
        argv += entry.given_as if entry.given_as[0] != "-c" else ["--conf", entry.given_as[1]]
    archives = list(config.archives) + ([f"{archive}#{ENV_LINK}"] if archive else [])
    if archives:
        argv += ["--archives", ",".join(archives)]
    for key, value in conf:
        argv += ["--conf", f"{key}={value}"]
    argv += [config.script, *config.script_args]
    return SubmitCommand(argv=tuple(argv), env=env, pack=tuple(pack))


def _merge(settings: list[_Setting], user: tuple[ConfEntry, ...]) -> list[tuple[str, str]]:
    """The tfos settings still to write, after checking them against the user's."""
    given = {e.key: e for e in user}  # the last one wins, as in spark-submit
    out: list[tuple[str, str]] = []
    for s in settings:
        mine = given.get(s.key)
        if mine is None:
            if s.emit:
                out.append((s.key, s.value))
            continue
        if s.soft or _same_value(mine.value, s.value):
            continue
        raise SubmitError(
            f"conflicting options: {' '.join(mine.given_as)}, but tfos needs {s.key}={s.value} "
            f"({s.why}); drop the option or change the tfos option it contradicts"
        )
    return out


def _env_archive(config: SubmitConfig, which: Callable[[str], str | None]) -> tuple[str, list[str]]:
    """The archive to ship for ``--pack-env``, and the command that packs it (empty if packed)."""
    path = config.pack_env or ""
    if "://" in path or path.endswith(ARCHIVE_SUFFIXES):
        if "://" not in path and not os.path.isfile(path):
            raise SubmitError(f"--pack-env {path}: no such archive")
        return path, []
    env_dir = Path(path)
    if not env_dir.is_dir():
        raise SubmitError(
            f"--pack-env {path}: expected an environment directory (venv or conda env) or an "
            f"archive ({', '.join(ARCHIVE_SUFFIXES)}); found neither"
        )
    output = config.pack_output
    if (env_dir / "conda-meta").is_dir():
        tool, kind = "conda-pack", "a conda environment"
    elif (env_dir / "pyvenv.cfg").is_file():
        tool, kind = "venv-pack", "a virtualenv"
    else:
        raise SubmitError(f"--pack-env {path} is neither a virtualenv (no pyvenv.cfg) nor a conda "
                          f"environment (no conda-meta/)")
    if which(tool) is None:
        raise SubmitError(
            f"--pack-env {path} is {kind}, but {tool} is not installed; "
            f"python -m pip install {tool}, or pack it elsewhere and give the archive"
        )
    return output, [tool, "-p", str(env_dir), "-o", output, "--force"]


# ------------------------------------------------------------------------------ the machine


def find_spark_submit(environ: Mapping[str, str]) -> str:
    """``$SPARK_HOME/bin/spark-submit``, else the one inside the installed pyspark package.

    Raises:
        SubmitError: neither exists.
    """
    home = environ.get("SPARK_HOME")
    if home:
        path = os.path.join(home, "bin", "spark-submit")
        if os.path.isfile(path):
            return path
        raise SubmitError(f"SPARK_HOME={home} has no bin/spark-submit; unset SPARK_HOME to use pyspark's")
    try:
        import pyspark
    except ImportError:
        raise SubmitError("pyspark is not installed and SPARK_HOME is not set: no spark-submit") from None
    path = os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-submit")
    if not os.path.isfile(path):
        raise SubmitError(f"the pyspark package at {os.path.dirname(pyspark.__file__)} has no bin/spark-submit; "
                          f"set SPARK_HOME to a Spark distribution")
    return path


def hdfs_environment(environ: Mapping[str, str], run: Callable[[list[str]], str]) -> dict[str, str]:
    """``CLASSPATH`` and ``LD_LIBRARY_PATH`` that let TensorFlow's libhdfs reach HDFS.

    ``CLASSPATH`` is ``hadoop classpath --glob`` (libhdfs's JVM does not expand ``*``);
    ``LD_LIBRARY_PATH`` has ``$JAVA_HOME/lib/server`` (libjvm.so) and ``$HADOOP_HOME/lib/native``
    (libhdfs.so), read on this machine: the cluster's nodes must have the same layout.

    Args:
        run: runs a command and returns its stdout (raises on failure).

    Raises:
        SubmitError: JAVA_HOME or HADOOP_HOME unset, or ``hadoop classpath`` failed.
    """
    missing = [name for name in ("JAVA_HOME", "HADOOP_HOME") if not environ.get(name)]
    if missing:
        raise SubmitError(f"--hdfs needs {' and '.join(missing)} set (libjvm.so is under "
                          f"$JAVA_HOME/lib/server, libhdfs.so under $HADOOP_HOME/lib/native)")
    hadoop = os.path.join(environ["HADOOP_HOME"], "bin", "hadoop")
    try:
        classpath = run([hadoop, "classpath", "--glob"]).strip()
    except Exception as exc:  # noqa: BLE001 - any failure of the command is the user's to fix
        raise SubmitError(f"--hdfs: `{hadoop} classpath --glob` failed: {exc}") from exc
    libs = f"{environ['JAVA_HOME']}/lib/server:{environ['HADOOP_HOME']}/lib/native"
    return {"CLASSPATH": classpath, "LD_LIBRARY_PATH": libs}


# ---------------------------------------------------------------------------------- helpers


def memory_mb(value: str, name: str) -> int:
    """Spark's memory string (``1g``, ``1024m``, ``512``: MiB) in MiB."""
    m = _MEMORY.match(value.strip())
    if not m:
        raise SubmitError(f"{name} must be a size like 1024m or 2g; received: {value!r}")
    number, unit = int(m.group(1)), m.group(2).lower()
    factor = {"k": 1 / 1024, "": 1, "m": 1, "g": 1024, "t": 1024 ** 2, "p": 1024 ** 3}[unit]
    mb = int(number * factor)
    if mb < 1:
        raise SubmitError(f"{name} must be at least 1m; received: {value!r}")
    return mb


def _positive_int(value: str | None, name: str) -> int:
    try:
        number = int(value or "")
    except ValueError:
        number = 0
    if number < 1:
        raise SubmitError(f"{name} must be a whole number >= 1; received: {value!r}")
    return number


def _key_value(value: str, option: str, form: str, name_pattern: re.Pattern | None = None) -> tuple[str, str]:
    key, eq, val = value.partition("=")
    if not eq or not key or (name_pattern and not name_pattern.match(key)):
        raise SubmitError(f"{option} takes {form}; received: {option} {value}")
    return key, val


def _same_value(given: str, needed: str) -> bool:
    given = given.strip()
    return given == needed or (needed in ("true", "false") and given.lower() == needed)


def _prepend_path(value: str, existing: str | None) -> str:
    return f"{value}:{existing}" if existing else value


def _loopback_master(master: str | None) -> bool:
    if not master or not master.startswith("spark://"):
        return False
    hosts = master[len("spark://"):].split(",")
    return all(h.rsplit(":", 1)[0] in _LOOPBACK_HOSTS for h in hosts)


def _kind_name(kind: str) -> str:
    return {"embedded": "the embedded local-cluster", "local-cluster": "local-cluster",
            "yarn": "YARN", "k8s": "Kubernetes", "standalone": "a standalone master"}[kind]


__all__ = [
    "SubmitCommand", "SubmitConfig", "SubmitError", "build_command", "find_spark_submit",
    "hdfs_environment", "parse_submit_args", "split_args", "wants_help", "USAGE",
]
