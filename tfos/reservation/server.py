"""The reservation server: a small gRPC service on the driver.

Each request is checked before it is parsed: size (gRPC's receive limit),
signature (HMAC of the body with the run's secret, fresh timestamp, unseen nonce),
then protobuf parsing. With a :class:`~tfos.reservation.tls.TLSConfig` the channel is TLS.
Anything wrong gets an error status; the server never crashes on input and
never unpickles anything. Replies are signed, bound to the request's token (auth.py).
Refusals of unauthenticated calls are logged at most once per 10 s with a count
(tfos.log_limit), so a flood of them cannot flood the driver's log.
"""

from __future__ import annotations

import errno
import logging
from concurrent import futures

import grpc
from google.protobuf.message import DecodeError

from tfos.errors import ReservationError
from tfos.log_limit import RateLimitedLog
from tfos.net import PortRange, join_host_port
from tfos.reservation import auth
from tfos.reservation import messages as m
from tfos.reservation.state import ProtocolError, ReservationState
from tfos.reservation.tls import TLSConfig

log = logging.getLogger(__name__)

#: a node's calls in flight at once are a long poll, a report and an output batch (each
#: ReservationClient has a connection of its own), with room to spare
MAX_STREAMS_PER_CONNECTION = 16


class ReservationServer:
    """Serves one run's :class:`ReservationState` on ``host`` (an ephemeral port).

    Args:
        state: the run's state machine.
        secret: the run's secret; every call must be signed with it.
        host: the address to advertise (the one Spark uses for the driver).
        port: the port to bind; 0 picks a free one.
        bind_host: the address to bind, when it differs from ``host`` (NAT, containers).
        max_workers: handler threads; long polls hold one each, so at least nodes + a few.
        tls: serve TLS with this certificate (for ``host``) instead of plaintext.
        port_range: bind a free port of this range, the last first (when ``port`` is 0).

    Raises:
        ReservationError: the port is taken or the address is not on this host.
        ConfigError: every port of ``port_range`` is taken.
    """

    def __init__(self, state: ReservationState, secret: auth.Secret, host: str, port: int = 0,
                 max_workers: int | None = None, bind_host: str | None = None,
                 tls: TLSConfig | None = None, port_range: PortRange | None = None):
        self.state = state
        self._verifier = auth.Verifier(secret)
        self._secret = secret
        self._refusals = RateLimitedLog(log, "unauthenticated reservation calls refused")
        self.host = host
        workers = max_workers or max(16, 2 * len(state.roles) + 8)
        # kept, to shut down with the server: grpc's stop() leaves the pool's threads alive
        self._pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tfos-reservation")
        self._server = grpc.server(
            self._pool,
            # calls beyond this are refused at once with RESOURCE_EXHAUSTED (the nodes retry it),
            # not queued without bound behind a flood of unsigned ones
            maximum_concurrent_rpcs=max_concurrent_rpcs(len(state.roles), workers),
            options=[
                ("grpc.max_receive_message_length", m.MAX_REQUEST_BYTES),
                ("grpc.max_send_message_length", m.MAX_REPLY_BYTES),
                ("grpc.so_reuseport", 0),
                # calls in flight per connection (HTTP/2 SETTINGS): one peer's flood of unsigned calls
                # waits in its own client, not in this server's queue ahead of every node's calls
                ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
            ],
        )
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                self._handler(name, getattr(state, _STATE_METHOD[name]), m.message_type(req_type)),
                request_deserializer=None,  # raw bytes: verified before parsing
                response_serializer=None,  # the handler signs the serialized reply
            )
            for name, (req_type, _reply) in m.METHODS.items()
        }
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(m.SERVICE, handlers),))
        self.tls = tls
        bind = bind_host or host
        credentials = tls.server_credentials() if tls else None

        def add_port(number: int) -> int:
            address = join_host_port(bind, number)
            try:
                if credentials is not None:
                    bound = self._server.add_secure_port(address, credentials)
                else:
                    bound = self._server.add_insecure_port(address)
            except RuntimeError:  # newer grpcio raises where older ones returned 0
                bound = 0
            if not bound:
                raise OSError(errno.EADDRINUSE, f"cannot bind {address}")
            return bound

        if port_range is not None and not port:
            # from the top of the range down: the nodes' blocks start at the bottom (slot * 3), and
            # a server on an executor's host must not push node 0 into node 1's block
            self.port = port_range.first_free(add_port, bind, offset=len(port_range) - 1)
        else:
            try:
                self.port = add_port(port)
            except OSError:
                raise ReservationError(
                    f"could not bind the reservation server to {join_host_port(bind, port)}; is the port in use, or the "
                    f"address not on this host (set spark.driver.bindAddress or TFOS_SERVER_HOST)?"
                ) from None
        self._started = False

    @property
    def refusals(self) -> int:
        """Unauthenticated calls refused so far."""
        return self._refusals.total

    @property
    def address(self) -> str:
        return join_host_port(self.host, self.port)

    def start(self) -> None:
        self._server.start()
        self._started = True
        log.info("reservation server listening on %s (%s)", self.address, "TLS" if self.tls else "plaintext")

    def stop(self, grace_s: float = 0.5) -> None:
        """Stop serving; blocks until the port is closed (at most ``grace_s`` + a little)."""
        if self._started:
            self._server.stop(grace_s).wait(grace_s + 5)
            self._started = False
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._refusals.flush()

    def _handler(self, method: str, call, request_type):
        path = m.method_path(method)

        def handle(raw: bytes, context: grpc.ServicerContext):
            token = dict(context.invocation_metadata()).get(auth.METADATA_KEY)
            refusal = self._verifier.check(path, raw, token)
            if refusal is not None:
                self._refusals.log("refused %s from %s: %s", method, context.peer(), refusal)
                context.abort(grpc.StatusCode.UNAUTHENTICATED, refusal)
            try:
                request = request_type.FromString(raw)
            except (DecodeError, RuntimeError, ValueError) as exc:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed {method} request: {exc}")
            try:
                reply = call(request).SerializeToString()
            except ProtocolError as exc:
                context.abort(getattr(grpc.StatusCode, exc.code), str(exc))
            context.set_trailing_metadata(
                ((auth.REPLY_METADATA_KEY, auth.sign_reply(self._secret.value, path, token, reply)),))
            return reply

        return handle


def max_concurrent_rpcs(num_nodes: int, workers: int) -> int:
    """Calls the server holds at once: every node's long poll, report and output (3 each)
    with room to spare, and a queue of one call per handler thread."""
    return 3 * num_nodes + 2 * workers


_STATE_METHOD = {
    "Register": "register",
    "AwaitCluster": "await_cluster",
    "Heartbeat": "heartbeat",
    "Report": "report",
    "Observe": "observe",
}

