"""Addresses and ports: ``host:port`` strings (IPv6 in brackets), socket families, and the
port ranges every tfos listener takes its port from, one way everywhere.

Port ranges are for firewalled clusters: ``tfos.run(..., port_range="40000-40100")`` or
``spark.tfos.portRange=40000-40100`` applies to the reservation server (driver), and on
each executor to the TF server's port, the feed endpoint and TensorBoard. Connections tfos
opens (node -> driver, feeder -> node) leave from ephemeral ports as usual.

A node takes its ports from an offset that depends on its slot, so the nodes that
share a host (several executors per machine) try different ports first instead of
racing for the same one.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from tfos.errors import ConfigError


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

#: ports one node listens on (TF server, feed, TensorBoard)
PORTS_PER_NODE = 3

_RANGE = re.compile(r"\s*(\d{1,5})\s*(?:-\s*(\d{1,5})\s*)?")
T = TypeVar("T")


@dataclass(frozen=True)
class PortRange:
    """Inclusive range of TCP ports, ``first``-``last``."""

    first: int
    last: int

    def __post_init__(self) -> None:
        if not (1 <= self.first <= self.last <= 65535):
            raise _out_of_bounds("port_range", str(self))

    @classmethod
    def parse(cls, text: object, setting: str = "port_range") -> PortRange:
        """``"40000-40100"`` or ``"40000"`` (one port); raises :class:`ConfigError` otherwise,
        naming ``setting``: where the text came from (``tfos.run``'s argument, a conf key)."""
        if isinstance(text, PortRange):
            return text
        match = _RANGE.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise ConfigError(
                f"{setting} must be a string 'FIRST-LAST' such as '40000-40100'; received: {text!r}")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) else first
        if not (1 <= first <= last <= 65535):
            raise _out_of_bounds(setting, repr(text))
        return cls(first, last)

    def __len__(self) -> int:
        return self.last - self.first + 1

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"

    def candidates(self, offset: int = 0) -> list[int]:
        """Every port of the range, starting at ``first + offset`` (mod size) and wrapping."""
        size = len(self)
        start = offset % size
        return [self.first + (start + i) % size for i in range(size)]

    def first_free(self, use: Callable[[int], T], host: str, offset: int = 0, exclude: Iterable[int] = ()) -> T:
        """``use(port)`` for each candidate port until one does not raise ``OSError`` (in use).

        Returns what ``use`` returned. Raises :class:`ConfigError` naming the range when
        every port failed.
        """
        skip = set(exclude)
        tried = 0
        last_error: OSError | None = None
        for port in self.candidates(offset):
            if port in skip:
                continue
            tried += 1
            try:
                return use(port)
            except OSError as exc:
                last_error = exc
        if last_error is None:
            reason = "all taken by this node"
        else:
            reason = f"last error: {os.strerror(last_error.errno) if last_error.errno else last_error}"
        raise ConfigError(
            f"no free port in port_range {self} on {host}: {tried} tried ({reason}); widen the range "
            f"(tfos.run(port_range=...) or spark.tfos.portRange): it needs 1 port on the driver and "
            f"{PORTS_PER_NODE} per node on each executor host"
        )


def _out_of_bounds(setting: str, shown: str) -> ConfigError:
    return ConfigError(f"{setting} must be FIRST-LAST with 1 <= FIRST <= LAST <= 65535; received: {shown}")


def listen(host: str, port_range: PortRange | None = None, offset: int = 0, exclude: Iterable[int] = (),
           backlog: int = 4096) -> socket.socket:
    """A listening TCP socket on ``host``: any free port, or the first free one in ``port_range``.

    The backlog is deep (the kernel caps it at ``net.core.somaxconn``): with 64, a flood of
    connects filled it and a real feeder's connection waited 11 s for a place; with 4096,
    0.6-3 s.
    """
    if port_range is None:
        return socket.create_server((host, 0), family=socket_family(host), backlog=backlog)
    return port_range.first_free(
        lambda port: socket.create_server((host, port), family=socket_family(host), backlog=backlog),
        host, offset, exclude,
    )


def reserve(host: str, port_range: PortRange | None = None, offset: int = 0,
            exclude: Iterable[int] = ()) -> socket.socket:
    """A socket bound (not listening) to a free port of ``host``: it holds the port for a
    server that binds it later, and nobody can bind the port until it is closed.

    No ``SO_REUSEADDR``: two holders (nodes sharing a host and a port range) can never get
    the same port, and the server the port is for must wait for the release.
    """
    def bind(port: int) -> socket.socket:
        sock = socket.socket(socket_family(host), socket.SOCK_STREAM)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        return sock

    if port_range is None:
        return bind(0)
    return port_range.first_free(bind, host, offset, exclude)


def pick(host: str, port_range: PortRange | None = None, offset: int = 0, exclude: Iterable[int] = ()) -> int:
    """A port that was free on ``host`` a moment ago, in ``port_range`` when given (the caller
    binds it soon after; another process may take it meanwhile)."""
    with listen(host, port_range, offset, exclude, backlog=1) as sock:
        return sock.getsockname()[1]


