"""Reading the Spark application's settings once, and checking it can host a TF cluster.

Every check fails with what it found, what is needed, and the setting to change.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from dataclasses import dataclass

from tfos.deadline import Deadline
from tfos.errors import ConfigError, SparkPreconditionError
from tfos.net import PortRange

log = logging.getLogger(__name__)

#: master URLs: local-cluster[executors, cores, memory MB] and local[...] (one home: tfos/submit uses them too)
LOCAL_CLUSTER_MASTER = re.compile(r"^local-cluster\[\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\]$")
LOCAL_MASTER = re.compile(r"^local(\[.*\])?$")


@dataclass(frozen=True)
class SparkFacts:
    """What tfos needs to know about the Spark application, read once."""

    master: str
    executor_cores: int | None
    task_cpus: int
    dynamic_allocation: bool
    #: executors the configuration asks for, when it says (local-cluster N, spark.executor.instances)
    configured_executors: int | None
    driver_host: str
    default_fs: str
    omp_num_threads_set: bool
    #: where the reservation server binds when it differs from the advertised host
    #: (TFOS_SERVER_BIND_HOST, else TFOS_SERVER_HOST, else spark.driver.bindAddress): NAT, containers
    server_bind_host: str | None = None
    #: TFOS_SERVER_HOST overrides the advertised address, TFOS_SERVER_PORT the port (0: any
    #: free) or, as "FIRST-LAST", the range the reservation server binds in (as in TensorFlowOnSpark)
    server_host_override: str | None = None
    server_port: int = 0
    server_port_range: PortRange | None = None
    default_parallelism_set: bool = False
    #: spark.authenticate: Spark's RPC checks that a peer holds the application's secret
    rpc_authenticated: bool = False
    #: the setting that encrypts Spark's RPC (spark.network.crypto.enabled...), or None
    rpc_encryption: str | None = None

    @property
    def server_host(self) -> str:
        return self.server_host_override or self.driver_host

    @property
    def slots_per_executor(self) -> int | None:
        if self.executor_cores is None:
            return None
        return self.executor_cores // max(self.task_cpus, 1)


def driver_host(spark_conf_get) -> str:
    """The address Spark advertises for the driver: ``spark.driver.host``, else ``SPARK_LOCAL_IP``."""
    host = spark_conf_get("spark.driver.host", None) or os.environ.get("SPARK_LOCAL_IP")
    return host or socket.gethostbyname(socket.gethostname())


def read_facts(spark) -> SparkFacts:
    """Collect :class:`SparkFacts` from a live application (a :class:`~tfos.spark.app.SparkApp`,
    or a ``SparkContext``). Over Spark Connect, the conf the server shows; the driver host is
    this process's address on the route to the server, where the executors must reach it."""
    from tfos.spark.app import ClassicApp, SparkApp

    app = spark if isinstance(spark, SparkApp) else ClassicApp(spark)
    get = app.get
    master = get("spark.master", "") or ("" if app.remote else app.sc.master)
    cores = _int(get("spark.executor.cores"))
    configured = _int(get("spark.executor.instances"))
    m = LOCAL_CLUSTER_MASTER.match(master)
    if m:
        configured = int(m.group(1))
        cores = cores or int(m.group(2))
    if cores is None and master.startswith("yarn"):
        cores = 1  # YARN's default executor cores
    default_fs = _default_fs(app)

    return SparkFacts(
        master=master,
        executor_cores=cores,
        task_cpus=_int(get("spark.task.cpus")) or 1,
        dynamic_allocation=(get("spark.dynamicAllocation.enabled", "false") or "").lower() == "true",
        configured_executors=configured,
        # over Connect, TFOS_SERVER_HOST (which replaces it anyway) skips the route look-up
        driver_host=((os.environ.get("TFOS_SERVER_HOST") or app.client_host()) if app.remote else driver_host(get)),
        default_fs=default_fs,
        omp_num_threads_set=get("spark.executorEnv.OMP_NUM_THREADS") is not None,
        server_bind_host=(os.environ.get("TFOS_SERVER_BIND_HOST") or os.environ.get("TFOS_SERVER_HOST")
                          or (None if app.remote else get("spark.driver.bindAddress"))),
        server_host_override=os.environ.get("TFOS_SERVER_HOST") or None,
        **_server_port(os.environ.get("TFOS_SERVER_PORT")),
        default_parallelism_set=get("spark.default.parallelism") is not None,
        rpc_authenticated=_true(get("spark.authenticate")),
        rpc_encryption=next((key for key in _RPC_ENCRYPTION if _true(get(key))), None),
    )


def _default_fs(app) -> str:
    if app.remote:  # no Hadoop conf in this process: what the session's conf says
        return app.get("spark.hadoop.fs.defaultFS") or "file:///"
    try:
        return app.sc._jsc.hadoopConfiguration().get("fs.defaultFS") or "file:///"
    except Exception as exc:  # noqa: BLE001 - py4j not reachable
        log.warning("cannot read fs.defaultFS from Spark (%s); ctx.absolute_path assumes file:///", exc)
        return "file:///"


def check_preconditions(facts: SparkFacts, num_executors: int) -> None:
    """Raise :class:`SparkPreconditionError` for settings under which a TF cluster cannot form."""
    if LOCAL_MASTER.match(facts.master):
        raise SparkPreconditionError(
            f"spark.master is {facts.master!r}: local mode runs every task inside the driver's JVM, "
            f"but tfos needs {num_executors} separate executor processes (one TF node each); "
            f"use --master 'local-cluster[{num_executors},1,1024]' on one machine, or a real cluster"
        )
    if facts.dynamic_allocation:
        raise SparkPreconditionError(
            "spark.dynamicAllocation.enabled is true: executors could come and go under a running "
            "TF cluster; set spark.dynamicAllocation.enabled=false and "
            f"spark.executor.instances={num_executors}"
        )
    slots = facts.slots_per_executor
    if slots is not None and slots > 1:
        raise SparkPreconditionError(
            f"each executor has {slots} task slots (spark.executor.cores={facts.executor_cores}, "
            f"spark.task.cpus={facts.task_cpus}), so two TF nodes could land on one executor; "
            f"set spark.task.cpus={facts.executor_cores} (one slot per executor)"
        )
    if facts.configured_executors is not None and facts.configured_executors < num_executors:
        raise SparkPreconditionError(
            f"num_executors={num_executors} but the Spark application is configured for "
            f"{facts.configured_executors} executor(s) ({_source(facts)}); "
            f"ask Spark for {num_executors} executors or lower num_executors"
        )


#: settings that encrypt Spark's RPC, where the task closure travels: AES (needs
#: spark.authenticate), TLS (Spark 4), and the deprecated SASL encryption
_RPC_ENCRYPTION = ("spark.network.crypto.enabled", "spark.ssl.rpc.enabled",
                   "spark.authenticate.enableSaslEncryption")
_LOOPBACK_HOST = re.compile(r"^(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?$")
_warned_security: set[str] = set()


def is_loopback_master(master: str | None) -> bool:
    """True for a ``spark://`` master (a list of them, for HA) whose every host is this machine's loopback."""
    if not master or not master.startswith("spark://"):
        return False
    return all(_LOOPBACK_HOST.match(h.strip()) for h in master[len("spark://"):].split(","))


def check_spark_security(facts: SparkFacts, mode: str, tls: bool) -> None:
    """Refuse, warn or say nothing when Spark's own RPC is open on a cluster network.

    The run's secret (and storage keys from the Spark conf) reach the executors inside the
    task closure, over Spark's RPC: readable on the network unless Spark encrypts it, and
    anyone who can reach an unauthenticated Spark RPC can run code in the application.
    tfos cannot protect what Spark does not. Local masters (one machine) are not checked.
    """
    if mode == "ignore" or LOCAL_MASTER.match(facts.master) or LOCAL_CLUSTER_MASTER.match(facts.master) \
            or is_loopback_master(facts.master):
        return
    missing, problems = [], []
    if not facts.rpc_authenticated:
        missing.append("spark.authenticate=true")
        problems.append("not authenticated (anyone who reaches Spark's ports can run code in this application)")
    if facts.rpc_encryption is None:
        missing.append("spark.network.crypto.enabled=true")
        problems.append("not encrypted (the run's secret and any storage keys travel in the task closure, "
                        "readable on the network)")
    if not missing:
        return
    text = (f"Spark's RPC on {facts.master} is {' and '.join(problems)}; set {' and '.join(missing)} "
            f"(on YARN Spark makes the secret; standalone and Kubernetes also need "
            f"spark.authenticate.secret), see docs/security.md")
    if mode == "require" or tls:
        why = "tls= is set" if mode != "require" else "spark_security='require'"
        raise SparkPreconditionError(f"{text}. Refused because {why}; spark_security='ignore' "
                                     f"(spark.tfos.sparkSecurity=ignore) accepts an isolated network")
    if text not in _warned_security:
        _warned_security.add(text)
        log.warning("%s (spark.tfos.sparkSecurity=ignore silences this)", text)


def check_slots_per_executor(app, facts: SparkFacts, num_executors: int) -> None:
    """With executor cores unknown (standalone, Kubernetes), check slots from the live app.

    ``defaultParallelism`` is the total task slots of the registered executors unless
    ``spark.default.parallelism`` overrides it. Over Spark Connect there is no live view
    from here: the reservation server refuses a second node on one executor instead.
    """
    if facts.executor_cores is not None or facts.default_parallelism_set or app.remote:
        return
    sc = app.sc
    executors = len(executor_hosts(sc))
    if not executors:
        return
    total = sc.defaultParallelism
    per_executor = total // executors // max(facts.task_cpus, 1)
    if per_executor > 1:
        raise SparkPreconditionError(
            f"the {executors} executors offer {total} cores ({total // executors} each, "
            f"spark.task.cpus={facts.task_cpus}), so two TF nodes could land on one executor; "
            f"set spark.executor.cores and spark.task.cpus to the same value (one slot per executor)"
        )


def wait_for_executors(spark, num_executors: int, timeout_s: float) -> list[str]:
    """Block until ``num_executors`` executors are registered; return their hosts. Over
    Spark Connect the registry is not visible from here: returns ``[]`` at once, and the
    node job's barrier stage waits for the slots (Spark fails it when they never come).

    Raises:
        SparkPreconditionError: when they are not all up within ``timeout_s``.
    """
    from tfos.spark.app import SparkApp

    if isinstance(spark, SparkApp):
        if spark.remote:
            return []
        spark = spark.sc
    sc = spark
    deadline = Deadline(timeout_s, f"{num_executors} Spark executors to register")
    while True:
        hosts = executor_hosts(sc)
        if len(hosts) >= num_executors:
            return hosts
        if deadline.expired():
            seen = ", ".join(hosts) if hosts else "none"
            raise SparkPreconditionError(deadline.message(
                f"{len(hosts)} registered ({seen})",
                "are the workers up with enough cores and memory for "
                f"{num_executors} executors (spark.executor.instances, spark.cores.max)?",
            ))
        time.sleep(deadline.slice(0.2))


def executor_hosts(sc) -> list[str]:
    """Ids of the registered executors (the driver excluded), as "executor <id>"."""
    try:
        ids = sc._jsc.sc().getExecutorIds()
        return [f"executor {ids.apply(i)}" for i in range(ids.size())]
    except Exception:  # noqa: BLE001 - no JVM access: count the status tracker's entries
        return _executors_without_the_driver(sc.statusTracker().getExecutorInfos(),
                                             sc.getConf().get("spark.driver.host", None))


def _executors_without_the_driver(infos, driver_host: str | None) -> list[str]:
    """The status tracker's entries less the driver's, as "host:port". The tracker lists the
    driver too, at no set place (Spark sorts it by id: after the numbered executors) and
    without its id: the one on the driver's host goes (on a single-host cluster any one
    of them: only the count is then exact)."""
    entries = [(e.host, e.port) for e in infos]
    if not entries:
        return []
    on_driver_host = [i for i, (host, _) in enumerate(entries) if host == driver_host]
    drop = on_driver_host[-1] if on_driver_host else len(entries) - 1
    return [f"{host}:{port}" for i, (host, port) in enumerate(entries) if i != drop]


def _source(facts: SparkFacts) -> str:
    if LOCAL_CLUSTER_MASTER.match(facts.master):
        return f"master {facts.master}"
    return "spark.executor.instances"


def _server_port(value) -> dict:
    """``server_port`` / ``server_port_range`` from ``TFOS_SERVER_PORT``: "9999" or "9997-9999"."""
    if value in (None, ""):
        return {}
    if "-" in value:
        try:
            return {"server_port_range": PortRange.parse(value, "TFOS_SERVER_PORT")}
        except ConfigError:
            pass
    else:
        port = _int(value)
        if port is not None and 0 <= port <= 65535:
            return {"server_port": port}
    raise SparkPreconditionError(
        f"TFOS_SERVER_PORT must be a TCP port (0..65535) or a range FIRST-LAST; received: {value!r}")


def _true(value) -> bool:
    return str(value or "").strip().lower() == "true"


def _int(value) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
