"""Addresses and ports: advertise what Spark itself uses, never a guess."""

from __future__ import annotations

import os
import socket


def driver_host(spark_conf_get) -> str:
    """The address Spark advertises for the driver: ``spark.driver.host``, else ``SPARK_LOCAL_IP``."""
    host = spark_conf_get("spark.driver.host", None) or os.environ.get("SPARK_LOCAL_IP")
    return host or socket.gethostbyname(socket.gethostname())


def free_port(host: str) -> int:
    """A port that was free on ``host`` a moment ago (the caller binds it soon after)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
