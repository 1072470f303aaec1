"""What ``tfos submit`` was asked to do: :class:`SubmitConfig`, validated once when built.

The config holds the user's choices only; what they mean for the ``spark-submit`` command
is :mod:`tfos.submit.command`'s business. Spark's own value strings (``2g``, ``4``) are read
here, where the config is checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tfos.errors import ConfigError
from tfos.keras_compat import check_keras_choice
from tfos.spark.conf import KEY_PREFIX
from tfos.spark.env import LOCAL_CLUSTER_MASTER
from tfos.submit.master import master_kind

DEFAULT_CLUSTER_SIZE = 2
DEFAULT_EXECUTOR_MB = 1024
DEFAULT_PACK_OUTPUT = "tfos-env.tar.gz"
#: where YARN unpacks the shipped environment in every container (``--archives x#environment``)
ENV_LINK = "environment"
ENV_PYTHON = f"./{ENV_LINK}/bin/python"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
DEPLOY_MODES = ("client", "cluster")

_MEMORY = re.compile(r"^(\d+)\s*([kmgtp]?)b?$", re.IGNORECASE)
#: a Spark Connect URL as pyspark's ChannelBuilder reads it: sc://host[:port][/;param=value...],
#: an IPv6 host in brackets, each parameter one key=value (a second "=" is an error there)
_CONNECT_URL = re.compile(r"^sc://(\[[0-9A-Fa-f:.]+\]|[^\s/:;\[\]]+)(?::(\d{1,5}))?(?:/(?:;[^\s;=]+=[^\s;=]*)*)?$")
#: a Connect URL's token parameter: its value is a credential
_URL_TOKEN = re.compile(r"([;?&]token=)[^;&]*", re.IGNORECASE)


def redact_connect_url(url: str) -> str:
    """``url`` with a ``;token=`` parameter's value shown as ``<redacted>``: for every message
    and printed command that names a Spark Connect URL (the script still gets the token)."""
    return _URL_TOKEN.sub(r"\1<redacted>", url)


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
    #: ``--remote sc://...``: a running Spark Connect server; no spark-submit, no application to shape
    remote: str | None = None

    def __post_init__(self) -> None:
        if not self.script.endswith(".py"):
            raise SubmitError(
                f"tfos submit runs a Python script (.py); received: {self.script!r}"
            )
        if self.cluster_size < 1:
            raise SubmitError(f"--cluster-size must be >= 1; received: --cluster-size {self.cluster_size}")
        if self.remote is not None:
            self._check_remote()
            return
        kind = self.master_kind
        if self.deploy_mode not in DEPLOY_MODES:
            raise SubmitError(f"--deploy-mode must be client or cluster; received: --deploy-mode {self.deploy_mode}")
        if self.deploy_mode == "cluster" and kind in ("embedded", "local-cluster"):
            raise SubmitError("--deploy-mode cluster needs --master yarn or k8s://...: a local-cluster "
                              "driver runs on this machine")
        if self.deploy_mode == "cluster" and kind == "standalone":
            raise SubmitError("--deploy-mode cluster is not supported for Python scripts on a "
                              "standalone master (spark-submit refuses it); use --deploy-mode client")
        if self.keras is not None:
            check_keras_choice(self.keras, "--keras", auto=False, error=SubmitError)
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

    def _check_remote(self) -> None:
        """``--remote``: a Connect URL, and nothing that shapes the server's application (the
        command line is refused option by option earlier; this guards configs built in code)."""
        url = self.remote or ""
        shown = redact_connect_url(url)
        if url.startswith("local"):
            raise SubmitError(
                f"--remote {shown} starts a Spark Connect server inside the script's own process, with "
                f"no executor processes; tfos submit --remote takes a running server's sc://host:port "
                f"(on one machine, leave --remote out: an embedded local-cluster)"
            )
        m = _CONNECT_URL.match(url)
        if not m or (m.group(2) and not 0 < int(m.group(2)) < 65536):
            raise SubmitError(f"--remote takes a Spark Connect URL, sc://host[:port][/;param=value...]; "
                              f"received: --remote {shown}")
        server_side = {
            "--master": self.master is not None, "--deploy-mode cluster": self.deploy_mode != "client",
            "--python": self.python is not None, "--gpus-per-node": self.gpus_per_node > 0,
            "--gpu-discovery-script": self.gpu_discovery_script is not None,
            "--pack-env": self.pack_env is not None, "--image": self.image is not None, "--hdfs": self.hdfs,
            "--archives": bool(self.archives), " ".join(self.spark_args): bool(self.spark_args),
            **{" ".join(e.given_as): True for e in self.conf if not e.key.startswith(KEY_PREFIX)},
        }
        given = [option for option, used in server_side.items() if used]
        if given:
            raise SubmitError(f"{', '.join(given)} cannot apply with --remote: the Connect server's "
                              f"application is set when starting the server")

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
        master, kind = self.master, master_kind(self.master)
        if kind == "local":
            raise SubmitError(
                f"--master {master} runs every task inside the driver's JVM, but tfos needs "
                f"{self.cluster_size} executor processes (one TF node each); leave --master out "
                f"(an embedded local-cluster) or give --master 'local-cluster[{self.cluster_size},1,1024]'"
            )
        if kind is None:
            raise SubmitError(
                f"--master must be spark://host:port, yarn, k8s://https://host:port or "
                f"local-cluster[N,C,MB] (or left out); received: --master {master}"
            )
        return kind

    def user_conf(self, key: str) -> str | None:
        """The last value the user gave for a Spark conf ``key``, or None."""
        values = [e.value for e in self.conf if e.key == key]
        return values[-1] if values else None

    @property
    def executor_cores(self) -> int:
        """Cores of each executor, so of each TF node: the user's, else local-cluster's C, else 1."""
        m = LOCAL_CLUSTER_MASTER.match(self.master or "")
        value = self.user_conf("spark.executor.cores") or (m.group(2) if m else None)
        return positive_int(value, "spark.executor.cores (--executor-cores)") if value else 1

    @property
    def executor_memory_mb(self) -> int:
        value = self.user_conf("spark.executor.memory")
        return memory_mb(value, "spark.executor.memory (--executor-memory)") if value else DEFAULT_EXECUTOR_MB


def memory_mb(value: str, name: str) -> int:
    """Spark's memory string (``1g``, ``1024m``, ``512``: MiB) in MiB.

    Raises:
        SubmitError: not a size, or less than 1 MiB; ``name`` says which setting it was.
    """
    m = _MEMORY.match(value.strip())
    if not m:
        raise SubmitError(f"{name} must be a size like 1024m or 2g; received: {value!r}")
    number, unit = int(m.group(1)), m.group(2).lower()
    factor = {"k": 1 / 1024, "": 1, "m": 1, "g": 1024, "t": 1024 ** 2, "p": 1024 ** 3}[unit]
    mb = int(number * factor)
    if mb < 1:
        raise SubmitError(f"{name} must be at least 1m; received: {value!r}")
    return mb


def positive_int(value: str | None, name: str) -> int:
    """A whole number >= 1 from an option's or a conf key's string.

    Raises:
        SubmitError: anything else; ``name`` says which option or key it was.
    """
    try:
        number = int(value or "")
    except ValueError:
        number = 0
    if number < 1:
        raise SubmitError(f"{name} must be a whole number >= 1; received: {value!r}")
    return number
