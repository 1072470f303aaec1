"""The reservation server: a small gRPC service on the driver.

Each request is checked before it is parsed: size (gRPC's receive limit),
signature (HMAC of the body with the run's secret), then protobuf parsing.
Anything wrong gets an error status; the server never crashes on input and
never unpickles anything.
"""

from __future__ import annotations

import logging
from concurrent import futures

import grpc
from google.protobuf.message import DecodeError

from tfos.errors import ReservationError
from tfos.reservation import auth
from tfos.reservation import messages as m
from tfos.reservation.state import ProtocolError, ReservationState

log = logging.getLogger(__name__)


class ReservationServer:
    """Serves one run's :class:`ReservationState` on ``host`` (an ephemeral port).

    Args:
        state: the run's state machine.
        secret: the run's secret; every call must be signed with it.
        host: the address to advertise (the one Spark uses for the driver).
        port: the port to bind; 0 picks a free one.
        bind_host: the address to bind, when it differs from ``host`` (NAT, containers).
        max_workers: handler threads; long polls hold one each, so at least nodes + a few.
    """

    def __init__(self, state: ReservationState, secret: auth.Secret, host: str, port: int = 0,
                 max_workers: int | None = None, bind_host: str | None = None):
        self.state = state
        self._verifier = auth.Verifier(secret)
        self.host = host
        workers = max_workers or max(16, 2 * len(state.nodes) + 8)
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tfos-reservation"),
            options=[
                ("grpc.max_receive_message_length", m.MAX_REQUEST_BYTES),
                ("grpc.max_send_message_length", m.MAX_REPLY_BYTES),
                ("grpc.so_reuseport", 0),
            ],
        )
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                self._handler(name, getattr(state, _STATE_METHOD[name]), m.message_type(req_type)),
                request_deserializer=None,  # raw bytes: verified before parsing
                response_serializer=lambda msg: msg.SerializeToString(),
            )
            for name, (req_type, _reply) in m.METHODS.items()
        }
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(m.SERVICE, handlers),))
        bind = bind_host or host
        bound = self._server.add_insecure_port(f"{_bracket(bind)}:{port}")
        if not bound:
            raise ReservationError(
                f"could not bind the reservation server to {bind}:{port}; is the port in use, or the "
                f"address not on this host (set spark.driver.bindAddress or TFOS_SERVER_HOST)?"
            )
        self.port = bound
        self._started = False

    @property
    def address(self) -> str:
        return f"{_bracket(self.host)}:{self.port}"

    def start(self) -> None:
        self._server.start()
        self._started = True
        log.info("reservation server listening on %s", self.address)

    def stop(self, grace_s: float = 0.5) -> None:
        """Stop serving; blocks until the port is closed (at most ``grace_s`` + a little)."""
        if self._started:
            self._server.stop(grace_s).wait(grace_s + 5)
            self._started = False

    def _handler(self, method: str, call, request_type):
        path = m.method_path(method)

        def handle(raw: bytes, context: grpc.ServicerContext):
            token = dict(context.invocation_metadata()).get(auth.METADATA_KEY)
            refusal = self._verifier.check(path, raw, token)
            if refusal is not None:
                log.warning("refused %s from %s: %s", method, context.peer(), refusal)
                context.abort(grpc.StatusCode.UNAUTHENTICATED, refusal)
            try:
                request = request_type.FromString(raw)
            except (DecodeError, RuntimeError, ValueError) as exc:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed {method} request: {exc}")
            try:
                return call(request)
            except ProtocolError as exc:
                context.abort(getattr(grpc.StatusCode, exc.code), str(exc))

        return handle


_STATE_METHOD = {
    "Register": "register",
    "AwaitCluster": "await_cluster",
    "Heartbeat": "heartbeat",
    "Report": "report",
}


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
