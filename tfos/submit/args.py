"""``tfos submit``'s command line: ``[tfos options] [spark-submit options] script.py [args]``
read into a :class:`~tfos.submit.config.SubmitConfig`.

The grammar is spark-submit's (options before the script, everything after it the
script's), so the option tables below list spark-submit's options by how tfos treats them.
Pure: nothing here reads the environment or the file system.
"""

from __future__ import annotations

import re

from tfos.keras_compat import KERAS_BACKEND_CHOICES
from tfos.spark_conf import CLUSTER_SIZE_KEY
from tfos.spark_env import LOCAL_CLUSTER_MASTER
from tfos.submit.config import (
    ARCHIVE_SUFFIXES,
    DEFAULT_CLUSTER_SIZE,
    DEFAULT_PACK_OUTPUT,
    ConfEntry,
    SubmitConfig,
    SubmitError,
    positive_int,
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
            fields["cluster_size"] = positive_int(value, "--cluster-size")
        elif name == "--gpus-per-node":
            fields["gpus_per_node"] = positive_int(value, "--gpus-per-node")
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


def _key_value(value: str, option: str, form: str, name_pattern: re.Pattern | None = None) -> tuple[str, str]:
    key, eq, val = value.partition("=")
    if not eq or not key or (name_pattern and not name_pattern.match(key)):
        raise SubmitError(f"{option} takes {form}; received: {option} {value}")
    return key, val
