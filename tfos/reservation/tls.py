"""Optional TLS on the reservation channel (driver <-> executors).

The driver's reservation server presents ``cert_file``/``key_file``; every node
checks it against ``ca_file`` (by default the certificate itself, for a self-signed
one) before it sends anything. Only the CA certificate travels to the executors
(inside the Spark task closure); the private key never leaves the driver.

The certificate must name the address the server advertises (``spark.driver.host``,
or ``TFOS_SERVER_HOST``) in its subjectAltName: an IP SAN for an IP address, a DNS
SAN for a host name. When it names another host, set ``server_name`` to that name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from tfos.errors import ConfigError, ReservationError


class TLSError(ReservationError):
    """The TLS handshake with the reservation server failed (wrong CA, wrong host name, no TLS)."""


@dataclass(frozen=True)
class ClientTLS:
    """What a node needs to check the driver's certificate: PEM bytes, no key. Picklable."""

    root_certificates: bytes
    server_name: str | None = None

    def channel_credentials(self):
        import grpc

        return grpc.ssl_channel_credentials(root_certificates=self.root_certificates)

    def channel_options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []

    def __repr__(self) -> str:
        name = f", server_name={self.server_name!r}" if self.server_name else ""
        return f"ClientTLS({len(self.root_certificates)} bytes of CA certificates{name})"


@dataclass(frozen=True)
class TLSConfig:
    """TLS for the reservation server: ``tfos.run(..., tls=tfos.TLSConfig(cert, key))``.

    Args:
        cert_file: PEM certificate (chain) of the driver, for the address the server advertises.
        key_file: PEM private key of ``cert_file``; read on the driver only.
        ca_file: PEM CA certificate(s) the nodes trust; default ``cert_file`` (self-signed).
        server_name: the host name to check the certificate against, when it is not the
            advertised address (gRPC's ``ssl_target_name_override``).

    Raises:
        ConfigError: when a file is missing, unreadable or not PEM.
    """

    cert_file: str
    key_file: str
    ca_file: str | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        for name in ("cert_file", "key_file", "ca_file"):
            path = getattr(self, name)
            if path is None and name == "ca_file":
                continue
            if not isinstance(path, (str, os.PathLike)) or not str(path):
                raise ConfigError(f"TLSConfig.{name} must be a path to a PEM file; received: {name}={path!r}")
            marker = b"PRIVATE KEY-----" if name == "key_file" else b"-----BEGIN CERTIFICATE-----"
            text = _read(name, str(path))
            if marker not in text:
                raise ConfigError(
                    f"TLSConfig.{name}={str(path)!r} is not a PEM "
                    f"{'private key' if name == 'key_file' else 'certificate'} (no {marker.decode()!r} line)"
                )
            object.__setattr__(self, name, str(path))
        if self.server_name is not None and (not isinstance(self.server_name, str) or not self.server_name):
            raise ConfigError(f"TLSConfig.server_name must be a host name or None; received: {self.server_name!r}")

    def server_credentials(self):
        """gRPC server credentials from the certificate and key (read now)."""
        import grpc

        return grpc.ssl_server_credentials([(_read("key_file", self.key_file), _read("cert_file", self.cert_file))])

    def client(self) -> ClientTLS:
        """The nodes' side: the CA certificates (read now) and the name to check."""
        return ClientTLS(_read("ca_file", self.ca_file or self.cert_file), self.server_name)

    def __repr__(self) -> str:
        return (f"TLSConfig(cert_file={self.cert_file!r}, key_file={self.key_file!r}, ca_file={self.ca_file!r}"
                + (f", server_name={self.server_name!r})" if self.server_name else ")"))


def _read(name: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read TLS {name} {path!r}: {exc.strerror or exc}") from None
