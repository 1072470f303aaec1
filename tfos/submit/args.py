"""``tfos submit``'s command line: ``[tfos options] [spark-submit options] script.py [args]``
read into a :class:`~tfos.submit.config.SubmitConfig`.

The grammar is spark-submit's (options before the script, everything after it the
script's), so the option tables below list spark-submit's options by how tfos treats them.
Pure: nothing here reads the environment or the file system.
"""

from __future__ import annotations

import re

from tfos.keras_compat import KERAS_BACKEND_CHOICES
from tfos.spark.conf import CLUSTER_SIZE_KEY, CONF_VAR, KEY_PREFIX
from tfos.spark.env import LOCAL_CLUSTER_MASTER
from tfos.submit.config import (
    ARCHIVE_SUFFIXES,
    DEFAULT_CLUSTER_SIZE,
    DEFAULT_PACK_OUTPUT,
    ConfEntry,
    SubmitConfig,
    SubmitError,
    positive_int,
    redact_connect_url,
)

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
    "--version": "use spark-submit --version",
    "--usage-error": "an internal spark-submit option",
}
_TFOS_VALUE = ("--cluster-size", "--keras", "--gpus-per-node", "--gpu-discovery-script", "--pack-env",
               "--pack-output", "--image", "--python", "--env", "--storage")
_TFOS_SWITCH = ("--dry-run", "--hdfs", "--help", "-h")
_VALUE_OPTIONS = frozenset(_PASS_VALUE + _TFOS_VALUE + tuple(_AS_CONF) + tuple(_REFUSED)
                           + ("--master", "--deploy-mode", "--remote", "--conf", "-c", "--archives"))
_SWITCHES = frozenset(_PASS_SWITCH + _TFOS_SWITCH)
#: tfos options that may be given once
_SINGLE = frozenset(_TFOS_VALUE) - {"--env"} | {"--master", "--deploy-mode", "--remote"}

#: with --remote the script is a Spark Connect client of a server already running: these
#: options are all that still mean something (--conf: spark.tfos.* keys only)
_REMOTE_OK = frozenset({"--remote", "--cluster-size", "--keras", "--env", "--storage", "--conf", "-c",
                        "--dry-run", "--help", "-h"})
_SERVER_APP = "a setting of the Connect server's own Spark application: give it when starting the server"
_SERVER_EXECUTORS = ("the executors are the Connect server's: start it with one executor per TF node, "
                     "each with one task slot (spark.executor.instances, spark.executor.cores = "
                     "spark.task.cpus, spark.dynamicAllocation.enabled=false)")
_SERVER_ENV = ("the executors' environment is the Connect server's: ship or install it when starting the "
               "server (or spark.addArtifacts(path, archive=True) in the script)")
#: why each other option cannot apply with --remote, and what to do instead
_REMOTE_REFUSED = {
    "--master": "the Connect server has its master; give --master when starting the server",
    "--deploy-mode": "the script runs here, as a Spark Connect client; the server's driver is already running",
    **dict.fromkeys(tuple(_AS_CONF), _SERVER_EXECUTORS),
    "--python": "the executors' Python is the Connect server's spark.pyspark.python (give it when "
                "starting the server); the script runs with this Python",
    **dict.fromkeys(("--gpus-per-node", "--gpu-discovery-script"),
                    "GPUs are the Connect server's executors': start it with spark.executor.resource.gpu.* "
                    "and spark.task.resource.gpu.amount"),
    **dict.fromkeys(("--pack-env", "--pack-output", "--archives"), _SERVER_ENV),
    "--image": "the Kubernetes image is chosen when starting the Connect server",
    "--hdfs": "the executors' CLASSPATH and LD_LIBRARY_PATH are the Connect server's: start it with "
              "spark.executorEnv.CLASSPATH and spark.executorEnv.LD_LIBRARY_PATH (docs/deployment.md#hdfs)",
    **dict.fromkeys(("--py-files", "--files"),
                    "ship them in the script, Spark Connect's way: spark.addArtifacts(path, pyfile=True) "
                    "or spark.addArtifacts(path, file=True)"),
    **dict.fromkeys(("--jars", "--packages", "--exclude-packages", "--repositories"),
                    "JVM code runs in the Connect server: give it when starting the server"),
    **dict.fromkeys(("--verbose", "-v"), "no spark-submit runs; --dry-run prints the command"),
}
#: conf keys that have their own option
_OWN_OPTION = {"spark.master": "--master", "spark.submit.deployMode": "--deploy-mode", "spark.remote": "--remote"}

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

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
  --remote sc://HOST:PORT  a running Spark Connect server: the script runs with this Python,
                           SPARK_REMOTE set (SparkSession.builder.getOrCreate() connects) and tfos's
                           settings in {CONF_VAR}; needs --cluster-size, takes --keras, --env, --storage
                           and --conf {KEY_PREFIX}* only (the rest belongs to the server)
  --deploy-mode MODE       client (default) or cluster (YARN, Kubernetes)
  --executor-cores C       cores per executor = per node (default 1); spark.task.cpus is set to C
  --executor-memory MEM    heap per executor (default 1g)
  --conf KEY=VALUE         any Spark setting; one that contradicts what tfos needs is refused
  --archives LIST          merged with --pack-env's archive
  --num-executors N, --total-executor-cores N
                           accepted when they agree with --cluster-size

Passed through unchanged: {", ".join(_PASS_VALUE + _PASS_SWITCH)}.
Exit codes: 2 for a usage error (nothing is run), else spark-submit's (with --remote, the script's).
"""


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
    remote = any(name == "--remote" for name, _ in options)
    for name, value in options:
        if name in _SINGLE and name in seen and seen[name] != value:
            shown = redact_connect_url if name == "--remote" else str
            raise SubmitError(f"conflicting options: {name} {shown(seen[name])} and {name} {shown(value)}")
        seen[name] = value
        if name in _REFUSED:
            raise SubmitError(f"{name} is not supported by tfos submit: {_REFUSED[name]}")
        if remote:
            _check_remote_option(name, value)
        if name in ("-h", "--help"):
            continue
        if name == "--cluster-size":
            fields["cluster_size"] = positive_int(value, "--cluster-size")
        elif name == "--gpus-per-node":
            fields["gpus_per_node"] = positive_int(value, "--gpus-per-node")
        elif name in ("--dry-run", "--hdfs"):
            fields[name[2:].replace("-", "_")] = True
        elif name in _TFOS_VALUE and name != "--env":
            fields[name[2:].replace("-", "_")] = value
        elif name in ("--master", "--deploy-mode", "--remote"):
            fields[name[2:].replace("-", "_")] = value
        elif name == "--env":
            node_env.append(_key_value(value, "--env", "NAME=VALUE", _ENV_NAME))
        elif name in ("--conf", "-c"):
            key, val = _key_value(value, name, "KEY=VALUE")
            if key in _OWN_OPTION:
                raise SubmitError(f"give {key} with {_OWN_OPTION[key]}, not {name} {redact_connect_url(value)}")
            conf.append(ConfEntry(key, val, (name, value)))
        elif name in _AS_CONF:
            conf.append(ConfEntry(_AS_CONF[name], value, (name, value)))
        elif name == "--archives":
            archives.extend(a for a in value.split(",") if a)
        elif name in _PASS_SWITCH:
            spark_args.append(name)
        else:
            spark_args.extend([name, value])
    if remote and "cluster_size" not in fields:
        raise SubmitError("--cluster-size N is required with --remote (the number of TF nodes; the Connect "
                          "server needs that many executors, one task slot each)")
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


def _check_remote_option(name: str, value: str | None) -> None:
    """Refuse, with what to do instead, an option that cannot reach a running Connect server's
    application: only the script's client session, and tfos.run in it, are ours to set."""
    if name in ("--conf", "-c"):
        given = value or ""
        if not given.startswith(KEY_PREFIX):
            raise SubmitError(
                f"{name} {redact_connect_url(given)} does not apply with --remote: only {KEY_PREFIX}* "
                f"settings reach the script (through {CONF_VAR}); set other Spark settings when starting "
                f"the Connect server, or in the script with spark.conf.set for runtime SQL settings"
            )
    elif name not in _REMOTE_OK:
        reason = _REMOTE_REFUSED.get(name, _SERVER_APP)
        raise SubmitError(f"{name} does not apply with --remote (a Spark Connect server): {reason}")


def _key_value(value: str, option: str, form: str, name_pattern: re.Pattern | None = None) -> tuple[str, str]:
    key, eq, val = value.partition("=")
    if not eq or not key or (name_pattern and not name_pattern.match(key)):
        raise SubmitError(f"{option} takes {form}; received: {option} {value}")
    return key, val
