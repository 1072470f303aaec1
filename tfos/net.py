"""Addresses and ports: advertise what Spark itself uses, never a guess."""

from __future__ import annotations

import os
import socket


def driver_host(spark_conf_get) -> str:
    """The address Spark advertises for the driver: ``spark.driver.host``, else ``SPARK_LOCAL_IP``."""
    host = spark_conf_get("spark.driver.host", None) or os.environ.get("SPARK_LOCAL_IP")
    return host or socket.gethostbyname(socket.gethostname())


def join_host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets (as gRPC and TF_CONFIG want it)."""
    host = host.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
