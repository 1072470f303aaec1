"""Self-signed certificates made by the tests: with ``cryptography`` when installed, else ``openssl``."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess


def self_signed(directory: str, host: str = "127.0.0.1", name: str = "server") -> tuple[str, str]:
    """Write ``name.crt`` and ``name.key`` (PEM) for ``host`` (an IP or DNS subjectAltName)."""
    cert_path, key_path = os.path.join(directory, f"{name}.crt"), os.path.join(directory, f"{name}.key")
    try:
        _with_cryptography(host, cert_path, key_path)
    except ImportError:
        _with_openssl(host, cert_path, key_path)
    return cert_path, key_path


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _with_cryptography(host: str, cert_path: str, key_path: str) -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    san = x509.IPAddress(ipaddress.ip_address(host)) if _is_ip(host) else x509.DNSName(host)
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


def _with_openssl(host: str, cert_path: str, key_path: str) -> None:
    if shutil.which("openssl") is None:
        import pytest

        pytest.skip("neither the cryptography package nor the openssl command is available to make a certificate")
    san = f"IP:{host}" if _is_ip(host) else f"DNS:{host}"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key_path, "-out", cert_path, "-days", "1", "-subj", f"/CN={host}",
         "-addext", f"subjectAltName={san}"],
        check=True, capture_output=True,
    )
