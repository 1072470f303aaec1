"""Who is this node task: its executor id, host and executor JVM, as Spark knows them."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class ExecutorIdentity:
    executor_id: str
    host: str
    jvm_pid: int | None
    working_dir: str


def current_executor(task_address: str | None = None) -> ExecutorIdentity:
    """Identify the executor this Python worker belongs to.

    Args:
        task_address: ``host:port`` Spark reports for this task's executor (barrier task infos);
            its host is the address Spark uses for the executor, so the node advertises it.
    """
    jvm = _executor_jvm()
    executor_id = _executor_id(jvm) or f"pid{jvm.pid if jvm else os.getpid()}"
    host = _host_from_address(task_address) or os.environ.get("SPARK_LOCAL_IP") or _hostname_ip()
    return ExecutorIdentity(executor_id, host, jvm.pid if jvm else None, os.getcwd())


def _executor_jvm() -> psutil.Process | None:
    """The nearest ancestor that is a JVM (the executor backend)."""
    try:
        proc = psutil.Process().parent()
        while proc is not None:
            name = proc.name().lower()
            if name.startswith("java"):
                return proc
            proc = proc.parent()
    except (psutil.Error, OSError):
        return None
    return None


def _executor_id(jvm: psutil.Process | None) -> str | None:
    if jvm is None:
        return None
    try:
        args = jvm.cmdline()
    except psutil.Error:
        return None
    for i, arg in enumerate(args[:-1]):
        if arg == "--executor-id":
            return args[i + 1]
    return None


def _host_from_address(address: str | None) -> str | None:
    from tfos.net import split_host_port

    if not address:
        return None
    return split_host_port(address)[0] or None


def _hostname_ip() -> str:
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"
