"""Per-run secret and request signing.

The secret never crosses the wire: each call carries an HMAC-SHA256 of its method
and body, keyed by the secret, in gRPC metadata. The server checks it in
constant time before it parses a byte of the body.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

METADATA_KEY = "tfos-signature"
SECRET_BYTES = 32


def new_secret() -> bytes:
    """A fresh random secret for one run."""
    return secrets.token_bytes(SECRET_BYTES)


def sign(secret: bytes, method: str, body: bytes) -> str:
    mac = hmac.new(secret, method.encode("ascii") + b"\0" + body, hashlib.sha256)
    return mac.hexdigest()


def verify(secret: bytes, method: str, body: bytes, signature: str | None) -> bool:
    if not signature or not isinstance(signature, str):
        return False
    expected = sign(secret, method, body)
    return hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii", "replace"))


class Secret:
    """Holds the secret bytes; its repr never shows them (so logs and errors cannot leak it)."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes):
        self._value = bytes(value)

    @property
    def value(self) -> bytes:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__

    def __reduce__(self):  # travels inside the Spark task closure
        return (Secret, (self._value,))
