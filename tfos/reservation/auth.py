"""Per-run secret, request signing, and reply signing.

The secret never crosses the wire: each call carries, in gRPC metadata, a token
``v1.<unix ms>.<nonce>.<mac>`` where the mac is HMAC-SHA256, keyed by the secret,
over the method, the timestamp, the nonce and the request body. The server checks
the mac in constant time before it parses a byte of the body, then refuses a
token whose timestamp is more than :data:`WINDOW_S` from its own clock and a
nonce it has already seen within that window, so a captured request cannot be
sent again (a replayed heartbeat would keep a dead node looking alive; a replayed
old registration would point its peers at a stale port).

Replies are signed too, bound to the request they answer: the server sends, in trailing
metadata, HMAC-SHA256 over the method, the request's whole token (so its fresh nonce) and
the reply body. A node parses a reply only once that checks, so someone between it and the
driver cannot rewrite the cluster spec, ``log_dir`` or a stop order, nor answer one call
with another call's reply. Error statuses are not signed: forging one can only fail a
node, which dropping its packets could do as well.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import re
import secrets
import threading
import time

METADATA_KEY = "tfos-signature"
#: trailing metadata key of a reply's signature
REPLY_METADATA_KEY = "tfos-reply-signature"
SECRET_BYTES = 32
NONCE_BYTES = 12
#: how far (seconds) a request's timestamp may be from the server's clock, either way
WINDOW_S = 300.0

_VERSION = "v1"
_TOKEN = re.compile(r"v1\.(\d{1,15})\.([0-9a-f]{16,64})\.([0-9a-f]{64})")

UNSIGNED = "request not signed with this run's secret"
UNSIGNED_REPLY = "reply not signed with this run's secret for this request"
REPLAYED = "request replayed: its nonce was already used (every call is signed afresh)"


def new_secret() -> bytes:
    """A fresh random secret for one run."""
    return secrets.token_bytes(SECRET_BYTES)


def sign(secret: bytes, method: str, body: bytes, *, now: float | None = None, nonce: str | None = None) -> str:
    """The signature token for one call of ``method`` with ``body``; make a new one per attempt."""
    stamp = int((time.time() if now is None else now) * 1000)
    nonce = nonce or secrets.token_hex(NONCE_BYTES)
    return f"{_VERSION}.{stamp}.{nonce}.{_mac(secret, method, stamp, nonce, body)}"


def sign_reply(secret: bytes, method: str, request_token: str, reply: bytes) -> str:
    """The signature of ``reply`` to the call that carried ``request_token``."""
    head = f"reply\0{method}\0{request_token}\0".encode("ascii")
    return hmac.new(secret, head + reply, hashlib.sha256).hexdigest()


def reply_signed(secret: bytes, method: str, request_token: str, reply: bytes, signature: object) -> bool:
    """Whether ``signature`` (from the reply's trailing metadata) signs ``reply`` to this request."""
    return isinstance(signature, str) and hmac.compare_digest(
        sign_reply(secret, method, request_token, reply), signature)


class Verifier:
    """Checks signature tokens for one run, and remembers nonces for the window. Thread-safe.

    Args:
        secret: the run's secret.
        window_s: how far a timestamp may be from ``clock()``.
        clock: wall-clock seconds (``time.time``); a parameter for tests.
        monotonic: steady seconds (``time.monotonic``) that time how long a nonce is kept:
            a token is fresh for at most ``2 * window_s`` of steady time, and a wall clock
            stepped forward and back cannot make the verifier forget a nonce early.
    """

    def __init__(self, secret: Secret, window_s: float = WINDOW_S, clock=time.time, monotonic=time.monotonic):
        self._secret = secret
        self._window_ms = int(window_s * 1000)
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self._expiry: list[tuple[int, str]] = []  # heap of (steady ms after which a nonce is forgotten, nonce)

    def check(self, method: str, body: bytes, token: object) -> str | None:
        """``None`` when ``token`` signs this call and is fresh; else the reason to refuse it.

        Never blocks; never raises on any input.
        """
        match = _TOKEN.fullmatch(token) if isinstance(token, str) else None
        if match is None:
            return UNSIGNED
        stamp, nonce, mac = int(match.group(1)), match.group(2), match.group(3)
        expected = _mac(self._secret.value, method, stamp, nonce, body)
        if not hmac.compare_digest(expected, mac):
            return UNSIGNED
        now = int(self._clock() * 1000)
        skew_s = (stamp - now) / 1000.0
        if abs(stamp - now) > self._window_ms:
            return (
                f"request signed {abs(skew_s):.0f} s {'ahead of' if skew_s > 0 else 'behind'} the driver's "
                f"clock (at most {self._window_ms // 1000} s allowed): a replayed request, or the clocks of "
                f"the driver and this executor's host disagree (run NTP on both)"
            )
        steady = int(self._monotonic() * 1000)
        with self._lock:
            while self._expiry and self._expiry[0][0] < steady:
                self._seen.discard(heapq.heappop(self._expiry)[1])
            if nonce in self._seen:
                return REPLAYED
            self._seen.add(nonce)
            heapq.heappush(self._expiry, (steady + 2 * self._window_ms, nonce))
        return None

    @property
    def remembered(self) -> int:
        """How many nonces are held (bounded by the call rate times the window)."""
        with self._lock:
            return len(self._seen)


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


def _mac(secret: bytes, method: str, stamp: int, nonce: str, body: bytes) -> str:
    head = f"{method}\0{stamp}\0{nonce}\0".encode("ascii")
    return hmac.new(secret, head + body, hashlib.sha256).hexdigest()
