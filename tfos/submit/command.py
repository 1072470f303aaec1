"""A :class:`~tfos.submit.config.SubmitConfig` -> the ``spark-submit`` command and its environment.

What the Spark application must look like for tfos (one executor per node, one task slot
per executor, no dynamic allocation, no retries) is set here, one named step per concern,
and a user setting that contradicts it is refused with the reason. Nothing is started.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from tfos.keras_compat import configure_keras_backend
from tfos.spark.conf import CLUSTER_SIZE_KEY, CONF_VAR, ENV_KEY, KERAS_KEY, STORAGE_KEY
from tfos.submit.config import (
    ENV_LINK,
    ENV_PYTHON,
    ConfEntry,
    SubmitConfig,
    SubmitError,
    redact_connect_url,
)
from tfos.submit.machine import env_archive
from tfos.submit.master import KIND_NAMES, is_loopback_master


@dataclass(frozen=True)
class SubmitCommand:
    """What to run: ``pack`` first when not empty, then ``argv`` with ``env`` added to the environment."""

    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    pack: tuple[str, ...] = ()

    def shell(self) -> str:
        """The commands as shell lines, quoted: what ``--dry-run`` prints (and ``tfos submit``
        before it runs them, so a Spark Connect URL's ``token=`` is shown as ``<redacted>``)."""
        lines = []
        if self.pack:
            lines.append(shlex.join(self.pack))
        assignments = [f"{k}={redact_connect_url(v) if k == 'SPARK_REMOTE' else v}" for k, v in self.env.items()]
        lines.append(shlex.join([*assignments, *self.argv]))
        return "\n".join(lines)


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


class _Needs:
    """The Spark settings tfos needs, in the order asked, and the driver's environment."""

    def __init__(self) -> None:
        self.settings: list[_Setting] = []
        #: variables for the driver: spark-submit's environment in client mode, else conf
        self.driver_env: dict[str, str] = {}

    def need(self, key: str, value: object, why: str, **kw) -> None:
        """Ask for ``key=value``; a second step asking another value for it is a conflict."""
        earlier = next((s for s in self.settings if s.key == key), None)
        if earlier is None:
            self.settings.append(_Setting(key, str(value), why, **kw))
        elif earlier.value != str(value):
            raise SubmitError(f"conflicting options: {why} and {earlier.why} both set {key} "
                              f"({value} and {earlier.value})")


def build_command(
    config: SubmitConfig,
    *,
    spark_submit: str,
    python: str,
    environ: Mapping[str, str],
    hdfs_env: Mapping[str, str] | None = None,
    which: Callable[[str], str | None] = shutil.which,
) -> SubmitCommand:
    """The ``spark-submit`` command for ``config`` (with ``--remote``, the script's own
    command, see :func:`_remote_command`); starts nothing.

    Args:
        spark_submit: path of the spark-submit script (see :func:`~tfos.submit.machine.find_spark_submit`).
        python: this machine's Python with tfos (the client-mode driver's, and the executors'
            on local-cluster and standalone masters unless ``--python`` says otherwise).
        environ: the environment spark-submit will inherit (read, never changed).
        hdfs_env: ``CLASSPATH`` and ``LD_LIBRARY_PATH`` for ``--hdfs``
            (see :func:`~tfos.submit.machine.hdfs_environment`).
        which: finds venv-pack / conda-pack for ``--pack-env DIR``.

    Raises:
        SubmitError: a user option contradicts what tfos needs, or a needed input is missing.
    """
    if config.remote is not None:
        return _remote_command(config, python, environ)
    needs = _Needs()
    _cluster_shape(needs, config)
    archive, pack = _python(needs, config, python, environ, which)
    _node_environment(needs, config, environ, hdfs_env)
    _gpus(needs, config)
    _kubernetes(needs, config)
    env = _driver_environment(needs, config, environ)
    if "://" not in config.script and config.master_kind != "k8s" and not os.path.isfile(config.script):
        raise SubmitError(f"script not found: {config.script}")
    argv = _argv(config, spark_submit, archive, _merge(needs.settings, config.conf))
    return SubmitCommand(argv=tuple(argv), env=env, pack=tuple(pack))


def _remote_command(config: SubmitConfig, python: str, environ: Mapping[str, str]) -> SubmitCommand:
    """``--remote``: the script itself, with this Python, as a client of the Connect server.

    Not spark-submit: with pyspark 4.x, ``spark-submit --remote URL script.py`` leaves
    ``SPARK_REMOTE`` unset in the script (``SparkSession.builder.getOrCreate()`` there then
    looks for a classic master, and fails), and of the ``--conf`` values it forwards the
    client applies only ``spark.sql.*`` ones. So ``SPARK_REMOTE`` makes ``getOrCreate()``
    connect, and tfos's own settings travel in ``TFOS_CONF``, which a Connect session's
    conf falls back on (``tfos.spark.app.ConnectApp.get``).
    """
    if "MASTER" in environ:  # pyspark refuses it even empty
        raise SubmitError(f"MASTER={environ['MASTER']} is set in the environment, and pyspark refuses a "
                          f"master next to a Spark Connect URL: unset MASTER to use --remote")
    if "://" in config.script:
        raise SubmitError(f"with --remote the script runs here, with this Python: give a local path; "
                          f"received: {config.script}")
    if not os.path.isfile(config.script):
        raise SubmitError(f"script not found: {config.script}")
    needs = _Needs()
    needs.need(CLUSTER_SIZE_KEY, config.cluster_size, "tfos.run's num_executors default (--cluster-size)")
    node_env = _remote_node_env(config)
    if config.keras:
        needs.need(KERAS_KEY, config.keras, "--keras")
        needs.driver_env.update(configure_keras_backend(config.keras))  # the script's own tf.keras
    if config.storage:
        needs.need(STORAGE_KEY, config.storage, "--storage")
    if node_env:
        needs.need(ENV_KEY, json.dumps(node_env, separators=(",", ":")), "--env")
    conf = dict(_merge(needs.settings, config.conf))  # checked against --conf spark.tfos.*
    conf.update((e.key, e.value) for e in config.conf)  # the user's (the last one wins)
    env = {"SPARK_REMOTE": config.remote, CONF_VAR: json.dumps(conf, separators=(",", ":")),
           **needs.driver_env}
    return SubmitCommand(argv=(python, config.script, *config.script_args), env=env)


def _remote_node_env(config: SubmitConfig) -> dict[str, str]:
    """``--env`` for ``tfos.run``'s ``env`` (the TF processes' environment): the server's
    executors take no ``spark.executorEnv`` from a client. Refuses two values for one name."""
    env: dict[str, str] = {}
    given: dict[str, str] = {}
    keras = configure_keras_backend(config.keras) if config.keras else {}
    for name, value in config.node_env:
        if name in env and env[name] != value:
            raise SubmitError(f"conflicting options: {given[name]} and --env {name}={value}")
        if name in keras and keras[name] != value:
            raise SubmitError(f"conflicting options: --env {name}={value} and --keras {config.keras} both set "
                              f"the nodes' {name} ({value} and {keras[name]})")
        env[name], given[name] = value, f"--env {name}={value}"
    return env


def _cluster_shape(needs: _Needs, config: SubmitConfig) -> None:
    """One executor per TF node, one task slot per executor, executors that stay, no retries."""
    kind, n, cores = config.master_kind, config.cluster_size, config.executor_cores
    size_why = f"one executor per TF node (--cluster-size {n})"
    needs.need(CLUSTER_SIZE_KEY, n, "tfos.run's num_executors default (--cluster-size)")
    if kind in ("yarn", "k8s"):
        needs.need("spark.executor.instances", n, size_why)
    else:
        needs.need("spark.executor.instances", n, size_why, emit=False)
    if kind == "standalone":
        needs.need("spark.cores.max", n * cores, f"{n} executors of {cores} core(s) "
                   f"(--cluster-size {n}, --executor-cores {cores})")
    if kind not in ("embedded", "local-cluster"):
        needs.need("spark.executor.cores", cores, "one task slot per executor")
    needs.need("spark.task.cpus", cores, f"one task slot per executor: spark.task.cpus must equal the "
               f"executor cores (--executor-cores {cores})")
    needs.need("spark.dynamicAllocation.enabled", "false", "executors must not come and go under a "
               "running TF cluster")
    # A retried node cannot rejoin a running TF cluster (the others wait in collectives for
    # the one that left) and a retried feeding task would feed its partition twice: fail
    # fast, and let tfos report the node's own error.
    needs.need("spark.task.maxFailures", 1, "no task retries", soft=True)
    needs.need("spark.stage.maxConsecutiveAttempts", 1, "no stage retries", soft=True)
    if kind == "yarn":
        # YARN's default is a second application master: the whole script (in cluster
        # mode its driver, with every node) would run again after a failure
        needs.need("spark.yarn.maxAppAttempts", 1, "no second application attempt", soft=True)


def _python(needs: _Needs, config: SubmitConfig, python: str, environ: Mapping[str, str],
            which: Callable[[str], str | None]) -> tuple[str | None, list[str]]:
    """The driver's and the executors' Python; returns ``--pack-env``'s archive and packing command."""
    kind, cluster_mode = config.master_kind, config.deploy_mode == "cluster"
    if config.pack_env is not None:
        archive, pack = env_archive(config.pack_env, config.pack_output, which)
        why = "--pack-env: the executors run the shipped Python"
        needs.need("spark.pyspark.python", ENV_PYTHON, why)
        needs.need("spark.executorEnv.PYSPARK_PYTHON", ENV_PYTHON, why)
        if cluster_mode:
            needs.need("spark.pyspark.driver.python", ENV_PYTHON, "--pack-env: the driver runs in a container")
            needs.need("spark.yarn.appMasterEnv.PYSPARK_PYTHON", ENV_PYTHON,
                       "--pack-env: the driver runs in the application master's container")
    else:
        archive, pack = None, []
        # on machines like this one, this Python; an exported PYSPARK_PYTHON is the user's choice
        same_machines = kind not in ("yarn", "k8s") and "PYSPARK_PYTHON" not in environ
        executor_python = config.python or (python if same_machines else None)
        if executor_python:
            needs.need("spark.pyspark.python", executor_python, "--python", soft=config.python is None)
    if not cluster_mode and "PYSPARK_DRIVER_PYTHON" not in environ:
        needs.need("spark.pyspark.driver.python", python, "the driver runs this Python", soft=True)
    return archive, pack


def _node_environment(needs: _Needs, config: SubmitConfig, environ: Mapping[str, str],
                      hdfs_env: Mapping[str, str] | None) -> None:
    """The environment of the nodes (``--keras``, ``--storage``, ``--env``, ``--hdfs``), and of
    the driver where it matters."""
    cluster_mode = config.deploy_mode == "cluster"
    if config.keras:
        needs.need(KERAS_KEY, config.keras, "--keras")
        for name, value in configure_keras_backend(config.keras).items():
            needs.need(f"spark.executorEnv.{name}", value, f"--keras {config.keras}")
            needs.driver_env[name] = value
    if config.storage:
        needs.need(STORAGE_KEY, config.storage, "--storage")
    for name, value in config.node_env:
        needs.need(f"spark.executorEnv.{name}", value, f"--env {name}={value}")
    if config.hdfs:
        if hdfs_env is None:
            raise SubmitError("--hdfs needs the CLASSPATH and LD_LIBRARY_PATH from hdfs_environment()")
        for name, value in hdfs_env.items():
            needs.need(f"spark.executorEnv.{name}", value, "--hdfs")
            needs.driver_env[name] = value if cluster_mode else _prepend_path(value, environ.get(name))


def _gpus(needs: _Needs, config: SubmitConfig) -> None:
    """``--gpus-per-node G``: G GPUs per executor, all held by its node task."""
    if not config.gpus_per_node:
        return
    kind, g = config.master_kind, config.gpus_per_node
    needs.need("spark.executor.resource.gpu.amount", g, f"--gpus-per-node {g}")
    needs.need("spark.task.resource.gpu.amount", g, f"--gpus-per-node {g}: the node task holds all "
               f"of its executor's GPUs")
    script = config.gpu_discovery_script or config.user_conf("spark.executor.resource.gpu.discoveryScript")
    if script is None and kind != "standalone":
        raise SubmitError(
            f"--gpus-per-node on {KIND_NAMES[kind]} needs --gpu-discovery-script PATH: "
            "a script printing {\"name\": \"gpu\", \"addresses\": [...]} (Spark's "
            "getGpusResources.sh runs nvidia-smi)"
        )
    if config.gpu_discovery_script:
        needs.need("spark.executor.resource.gpu.discoveryScript", config.gpu_discovery_script,
                   "--gpu-discovery-script")
    if kind in ("embedded", "local-cluster"):
        # local-cluster's workers read the application's conf: they must offer the GPUs
        needs.need("spark.worker.resource.gpu.amount", g, f"--gpus-per-node {g} on local-cluster")
        needs.need("spark.worker.resource.gpu.discoveryScript", script, "--gpu-discovery-script")
    if kind == "k8s":
        needs.need("spark.executor.resource.gpu.vendor", "nvidia.com", "GPUs on Kubernetes", soft=True)


def _kubernetes(needs: _Needs, config: SubmitConfig) -> None:
    """``k8s://`` masters: the container image, and a script the driver's pod can reach."""
    if config.master_kind != "k8s":
        return
    image = config.image or config.user_conf("spark.kubernetes.container.image")
    if image is None:
        raise SubmitError("--master k8s://... needs --image IMAGE (a Spark image with Python, "
                          "TensorFlow and tfos)")
    if config.image:
        needs.need("spark.kubernetes.container.image", config.image, "--image")
    if config.deploy_mode == "cluster" and "://" not in config.script \
            and not config.user_conf("spark.kubernetes.file.upload.path"):
        raise SubmitError(
            f"in Kubernetes cluster mode the script must be in the image "
            f"(local:///path/{os.path.basename(config.script)}) or reachable by URL, or set "
            f"--conf spark.kubernetes.file.upload.path=...; received: {config.script}"
        )


def _driver_environment(needs: _Needs, config: SubmitConfig, environ: Mapping[str, str]) -> dict[str, str]:
    """Where the driver's environment goes: conf in cluster mode, else the returned variables
    for spark-submit's own environment."""
    kind, env = config.master_kind, {}
    if config.deploy_mode == "cluster":
        prefix = "spark.yarn.appMasterEnv." if kind == "yarn" else "spark.kubernetes.driverEnv."
        for name, value in needs.driver_env.items():
            needs.need(prefix + name, value, "the driver's environment in cluster mode")
    else:
        env.update(needs.driver_env)
    if (kind in ("embedded", "local-cluster") or is_loopback_master(config.master)) \
            and "SPARK_LOCAL_IP" not in environ:
        env["SPARK_LOCAL_IP"] = "127.0.0.1"  # executors on this machine: loopback only
    return env


def _argv(config: SubmitConfig, spark_submit: str, archive: str | None, conf: list[tuple[str, str]]) -> list[str]:
    """spark-submit's argv: master, the user's options as given, archives, tfos's conf, the script."""
    kind, n = config.master_kind, config.cluster_size
    if kind == "embedded":
        master = f"local-cluster[{n},{config.executor_cores},{config.executor_memory_mb}]"
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
    return argv


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


def _same_value(given: str, needed: str) -> bool:
    given = given.strip()
    return given == needed or (needed in ("true", "false") and given.lower() == needed)


def _prepend_path(value: str, existing: str | None) -> str:
    return f"{value}:{existing}" if existing else value
