"""The executor side of the reservation protocol.

Every call is signed with the run's secret and retried on transient transport
errors within its deadline; refusals (wrong run, bad slot, unauthenticated)
raise :class:`ReservationError` at once with the server's words.
"""

from __future__ import annotations

import re
import time

import grpc

from tfos.deadline import Deadline
from tfos.errors import AuthenticationError, ReservationError, ReservationTimeout
from tfos.net import split_host_port
from tfos.reservation import auth
from tfos.reservation import messages as m
from tfos.reservation.states import RunState
from tfos.reservation.tls import ClientTLS, TLSError

_TLS_FAILURE = re.compile(r"handshake failed|verification check failed|CERTIFICATE_VERIFY_FAILED", re.IGNORECASE)
#: retried within the call's deadline. CANCELLED and RESOURCE_EXHAUSTED are what a server under
#: a flood of unsigned calls answers some signed ones with (its concurrency limit, cancelled
#: streams); they pass when the flood does, or between its waves
_TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
              grpc.StatusCode.RESOURCE_EXHAUSTED)
#: RESOURCE_EXHAUSTED for a message over gRPC's size limit: the same every time, never retried
_TOO_LARGE = re.compile(r"larger than max", re.IGNORECASE)
#: CANCELLED because this client's channel was closed (its node is ending): never retried
_CLOSED = re.compile(r"channel closed", re.IGNORECASE)


class ReservationClient:
    """Talks to one run's reservation server.

    Args:
        address: ``host:port`` of the server.
        secret: the run's secret (signs every request; never sent).
        run_id: the run this node belongs to.
        slot: this node's slot (the Spark partition index of its node task).
        tls: check the server's certificate with these CA certificates (the server serves TLS).
    """

    def __init__(self, address: str, secret: auth.Secret, run_id: str, slot: int, tls: ClientTLS | None = None):
        self.address = address
        self.run_id = run_id
        self.slot = slot
        self._secret = secret
        self._tls = tls
        options = [
            ("grpc.max_receive_message_length", m.MAX_REPLY_BYTES),
            ("grpc.max_send_message_length", m.MAX_REQUEST_BYTES),
            ("grpc.enable_retries", 0),
            # a connection of its own: gRPC would otherwise share one among a process's clients,
            # and the server caps the calls in flight per connection (server.py)
            ("grpc.use_local_subchannel_pool", 1),
        ]
        if tls is None:
            self._channel = grpc.insecure_channel(address, options=options)
        else:
            self._channel = grpc.secure_channel(address, tls.channel_credentials(),
                                                options=options + tls.channel_options())
        self._calls = {
            name: self._channel.unary_unary(
                m.method_path(name),
                request_serializer=None,
                response_deserializer=None,  # raw bytes: the signature is checked before parsing
            )
            for name in m.METHODS
        }
        self._reply_types = {name: m.message_type(reply) for name, (_req, reply) in m.METHODS.items()}

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def reachable(self, timeout_s: float) -> bool:
        """Whether the server answers gRPC's connection handshake (HTTP/2 settings, and TLS when
        on) within ``timeout_s``: a quick check before registering, which otherwise retries
        for its whole deadline when nothing answers at the address."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout_s)
            return True
        except grpc.FutureTimeoutError:
            return False

    # ------------------------------------------------------------------- calls

    def register(self, *, executor_id: str, host: str, port: int, pid: int, tensorboard_port: int = 0,
                 feed_port: int = 0, task_attempt: int = 0, timeout_s: float = 60.0):
        req = m.RegisterRequest(
            run_id=self.run_id, slot=self.slot, executor_id=executor_id, host=host, port=port, pid=pid,
            tensorboard_port=tensorboard_port, feed_port=feed_port, task_attempt=task_attempt,
        )
        return self.call("Register", req, Deadline(timeout_s, "the reservation server to answer Register"))

    def await_cluster(self, timeout_s: float, poll_s: float = 10.0):
        """Block until every node registered (or the run ended); returns the ``ClusterReply``.

        Raises:
            ReservationTimeout: when ``timeout_s`` passes first, saying how many registered.
        """
        deadline = Deadline(timeout_s, "every node to register with the reservation server")
        last = None
        while True:
            wait = deadline.slice(poll_s)
            req = m.AwaitClusterRequest(run_id=self.run_id, slot=self.slot, wait_ms=int(wait * 1000))
            last = self.call("AwaitCluster", req, Deadline(wait + 30, "AwaitCluster to answer"))
            if last.ready or last.run_state != RunState.RESERVING:
                return last
            if deadline.expired():
                raise ReservationTimeout(deadline.message(
                    f"{last.registered} of {last.expected} registered",
                    "are all executors up and free (spark.executor.instances, one task slot each)?",
                ))

    def heartbeat(self, state: str, wait_s: float = 0.0, timeout_s: float = 5.0):
        """Tell the driver this node is alive; with ``wait_s`` the reply comes early on a stop order."""
        req = m.HeartbeatRequest(run_id=self.run_id, slot=self.slot, state=state, wait_ms=int(wait_s * 1000))
        return self.call("Heartbeat", req, Deadline(timeout_s + wait_s, "the reservation server to answer Heartbeat"))

    def report(self, event: str, *, exit_code: int | None = None, message: str = "", traceback: str = "",
               output_tail: str = "", tensorboard_port: int = 0, timeout_s: float = 15.0):
        req = m.ReportRequest(
            run_id=self.run_id, slot=self.slot, event=event,
            exit_code=exit_code or 0, has_exit_code=exit_code is not None,
            message=m.truncate(message, 4096), traceback=m.truncate(traceback),
            output_tail=m.truncate(output_tail), tensorboard_port=tensorboard_port,
        )
        return self.call("Report", req, Deadline(timeout_s, "the reservation server to answer Report"))

    def observe(self, lines: list[str], dropped_lines: int = 0, progress: list[str] = (), timeout_s: float = 2.0):
        """Best effort within ``timeout_s`` (the caller drops what does not get through)."""
        req = m.ObserveRequest(run_id=self.run_id, slot=self.slot, lines=lines, dropped_lines=dropped_lines,
                               progress=list(progress))
        return self.call("Observe", req, Deadline(timeout_s, "the reservation server to answer Observe"))

    def call(self, method: str, request, deadline: Deadline):
        """Sign and send ``request``; retry transport errors until ``deadline``."""
        body = request.SerializeToString()
        path = m.method_path(method)
        delay = 0.05
        while True:
            # signed afresh per attempt: the server refuses a nonce it has seen (replays)
            token = auth.sign(self._secret.value, path, body)
            try:
                raw, call = self._calls[method].with_call(body, timeout=max(deadline.slice(60.0), 0.5),
                                                          metadata=((auth.METADATA_KEY, token),))
            except grpc.RpcError as err:
                code = err.code()
                if code == grpc.StatusCode.UNAUTHENTICATED:
                    raise AuthenticationError(f"{method} refused by {self.address}: {err.details()}") from None
                if self._tls is not None and code == grpc.StatusCode.UNAVAILABLE and _TLS_FAILURE.search(
                        err.details() or ""):
                    # a certificate that does not verify will not verify on a retry either
                    raise TLSError(
                        f"TLS handshake with the reservation server at {self.address} failed: {err.details()}; "
                        f"is the CA (spark.tfos.tls.caFile / TLSConfig.ca_file) the one that signed the driver's "
                        f"certificate, and does the certificate name {split_host_port(self.address)[0]} "
                        f"(or TLSConfig.server_name)?"
                    ) from None
                details = err.details() or ""
                transient = code in _TRANSIENT and not _TOO_LARGE.search(details) and not _CLOSED.search(details)
                if not transient or deadline.expired():
                    if transient:
                        raise ReservationTimeout(deadline.message(
                            f"last error {code.name}: {err.details()}",
                            f"is the driver's reservation server at {self.address} reachable from this host?",
                        )) from None
                    raise ReservationError(f"{method} refused by {self.address} ({code.name}): {err.details()}") from None
                time.sleep(deadline.slice(delay))
                delay = min(delay * 2, 1.0)
                continue
            signature = dict(call.trailing_metadata() or ()).get(auth.REPLY_METADATA_KEY)
            if not auth.reply_signed(self._secret.value, path, token, raw, signature):
                # not from this run's server, or altered on the way: act on none of it
                raise AuthenticationError(f"{method} reply from {self.address} refused: {auth.UNSIGNED_REPLY} "
                                          f"(altered in transit, or another server answered)")
            return self._reply_types[method].FromString(raw)
