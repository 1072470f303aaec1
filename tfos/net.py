"""Addresses: ``host:port`` strings (IPv6 in brackets) and socket families, one way everywhere."""

from __future__ import annotations

import socket


def join_host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets (as gRPC and TF_CONFIG want it)."""
    host = host.strip("[]")
    return f"[{host}]:{port}" if is_ipv6(host) else f"{host}:{port}"


def split_host_port(address: str) -> tuple[str, int | None]:
    """The host (IPv6 brackets removed) and port of ``host:port`` or ``[v6]:port``; the port
    is ``None`` for a bare host or a bare IPv6 address (``::1``), whose colons are not a port."""
    address = address.strip()
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif address.count(":") == 1:
        host, _, port = address.partition(":")
    else:
        host, port = address, ""
    return host, (int(port) if port.isdigit() else None)


def is_ipv6(host: str) -> bool:
    """Whether ``host`` (a name or an address, brackets or not) is an IPv6 address."""
    return ":" in host


def socket_family(host: str) -> int:
    """The socket family that binds or reaches ``host``."""
    return socket.AF_INET6 if is_ipv6(host) else socket.AF_INET
