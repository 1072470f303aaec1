"""Real Spark applications for integration tests, and leak checks by pids and ports."""

from __future__ import annotations

import os
import socket
import time

import psutil

#: the command-line marks of every executor-side tfos process (a TF process's group reaper is
#: a fork of it, so it shows as tfos.node.tf_process); tfos.node.instance: parallel_run's instances
NODE_MODULES = ("tfos.node.supervisor", "tfos.node.tf_process", "tfos.node.guarded", "tfos.node.instance")


def start_spark(num_executors: int, app_name: str, extra_conf: dict | None = None):
    """A local-cluster Spark application with ``num_executors`` one-core executors."""
    from pyspark.sql import SparkSession

    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    builder = (
        SparkSession.builder.master(f"local-cluster[{num_executors},1,1024]")
        .appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.executorEnv.TF_CPP_MIN_LOG_LEVEL", "2")
        .config("spark.executorEnv.CUDA_VISIBLE_DEVICES", "")
    )
    for key, value in (extra_conf or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


#: the Spark application kept between test modules: (its settings, the session)
_shared: dict = {"key": None, "session": None}


def shared_spark(executors: int, app_name: str, conf: dict | None = None):
    """A local-cluster application with these settings, reused by every module that asks for
    the same ones in a row (a start costs 10-20 s here); one with other settings is stopped
    first, since a process holds one SparkContext."""
    key = (executors, tuple(sorted((conf or {}).items())))
    if _shared["key"] == key and _shared["session"] is not None:
        return _shared["session"]
    release_shared_spark()
    _shared["session"] = start_spark(executors, app_name, conf)
    _shared["key"] = key
    return _shared["session"]


def release_shared_spark() -> None:
    """Stop the kept application (before a module builds its own, and at the end)."""
    session, _shared["session"], _shared["key"] = _shared["session"], None, None
    if session is not None:
        session.stop()


def node_processes() -> list[psutil.Process]:
    """Every tfos node process (supervisor, TF process and its reaper, TensorBoard, parallel instance)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if any(mod in cmd for mod in NODE_MODULES):
            found.append(proc)
    return found


def wait_no_node_processes(timeout_s: float = 15.0) -> list[str]:
    """Wait until no node process is left; return descriptions of any that survive."""
    end = time.monotonic() + timeout_s
    while True:
        alive = [p for p in node_processes() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not alive or time.monotonic() > end:
            return [f"{p.pid}: {' '.join(p.cmdline())[:120]}" for p in alive if _exists(p)]
        time.sleep(0.2)


def listening(host: str, port: int) -> bool:
    if not port:
        return False
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def _exists(proc: psutil.Process) -> bool:
    try:
        proc.cmdline()
        return True
    except psutil.Error:
        return False


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (absent, or a zombie waiting to be reaped)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
