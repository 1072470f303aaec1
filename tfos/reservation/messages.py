"""The reservation protocol's messages: one small protobuf type per call.

The types are built from a descriptor at import time instead of generated code,
so tfos works with whatever protobuf runtime TensorFlow pulled in (generated
``_pb2`` modules refuse runtimes older than the generator). Nothing here is ever
pickled; the wire carries protobuf only.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from tfos.reservation.states import EVENTS as _EVENTS

PACKAGE = "tfos.reservation.v1"
SERVICE = f"{PACKAGE}.Reservation"

#: largest request the server accepts, in bytes (tracebacks are truncated below this)
MAX_REQUEST_BYTES = 256 * 1024
#: largest reply a client accepts (a cluster of thousands of nodes still fits)
MAX_REPLY_BYTES = 8 * 1024 * 1024
#: longest text field (traceback, output tail) a client sends
MAX_TEXT_CHARS = 32 * 1024
#: Observe: most lines per call, longest line, longest progress record (JSON)
MAX_OBSERVE_LINES = 500
MAX_LINE_CHARS = 2048
MAX_PROGRESS_CHARS = 4096

_T = descriptor_pb2.FieldDescriptorProto
_STRING, _INT32, _INT64, _BOOL, _MSG, _DOUBLE = (
    _T.TYPE_STRING, _T.TYPE_INT32, _T.TYPE_INT64, _T.TYPE_BOOL, _T.TYPE_MESSAGE, _T.TYPE_DOUBLE,
)

# name -> [(field, type, repeated, message type name)]
_SCHEMA: dict[str, list[tuple]] = {
    "Node": [
        ("slot", _INT32), ("job_name", _STRING), ("task_index", _INT32), ("host", _STRING),
        ("port", _INT32), ("executor_id", _STRING), ("pid", _INT32),
        ("tensorboard_port", _INT32), ("feed_port", _INT32), ("state", _STRING),
    ],
    # register: one node slot announces itself; retrying is safe
    "RegisterRequest": [
        ("run_id", _STRING), ("slot", _INT32), ("executor_id", _STRING), ("host", _STRING),
        ("port", _INT32), ("pid", _INT32), ("tensorboard_port", _INT32), ("feed_port", _INT32),
        ("task_attempt", _INT32),
    ],
    "RegisterReply": [("run_state", _STRING), ("registered", _INT32), ("expected", _INT32)],
    # await cluster: long poll until every slot registered (or wait_ms passes)
    "AwaitClusterRequest": [("run_id", _STRING), ("slot", _INT32), ("wait_ms", _INT32)],
    "ClusterReply": [
        ("ready", _BOOL), ("run_state", _STRING), ("registered", _INT32), ("expected", _INT32),
        ("nodes", _MSG, True, "Node"), ("tensorboard", _BOOL), ("log_dir", _STRING),
    ],
    # heartbeat: "I am alive, in this state"; a long poll (wait_ms) whose reply carries a stop order
    "HeartbeatRequest": [("run_id", _STRING), ("slot", _INT32), ("state", _STRING), ("wait_ms", _INT32)],
    "HeartbeatReply": [("stop", _BOOL), ("run_state", _STRING)],
    # report: a state change (running, serving, done, failed, stopped) with evidence
    "ReportRequest": [
        ("run_id", _STRING), ("slot", _INT32), ("event", _STRING), ("exit_code", _INT32),
        ("has_exit_code", _BOOL), ("message", _STRING), ("traceback", _STRING),
        ("output_tail", _STRING), ("tensorboard_port", _INT32),
    ],
    "ReportReply": [("run_state", _STRING), ("stop", _BOOL)],
    # observe: best-effort news for the driver's eyes: output lines and progress records (JSON objects)
    "ObserveRequest": [
        ("run_id", _STRING), ("slot", _INT32), ("lines", _STRING, True), ("dropped_lines", _INT64),
        ("progress", _STRING, True),
    ],
    "ObserveReply": [("run_state", _STRING)],
}

#: method name -> (request type, reply type)
METHODS = {
    "Register": ("RegisterRequest", "RegisterReply"),
    "AwaitCluster": ("AwaitClusterRequest", "ClusterReply"),
    "Heartbeat": ("HeartbeatRequest", "HeartbeatReply"),
    "Report": ("ReportRequest", "ReportReply"),
    "Observe": ("ObserveRequest", "ObserveReply"),
}

#: events a node may report (``states.py`` draws what each one moves the node to)
EVENTS = tuple(str(e) for e in _EVENTS)


def _build() -> dict[str, type]:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="tfos/reservation/v1.proto", package=PACKAGE, syntax="proto3"
    )
    for msg_name, fields in _SCHEMA.items():
        msg = fdp.message_type.add(name=msg_name)
        for number, spec in enumerate(fields, start=1):
            fname, ftype = spec[0], spec[1]
            repeated = len(spec) > 2 and spec[2]
            field = msg.field.add(
                name=fname,
                number=number,
                type=ftype,
                label=_T.LABEL_REPEATED if repeated else _T.LABEL_OPTIONAL,
            )
            if ftype == _MSG:
                field.type_name = f".{PACKAGE}.{spec[3]}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))
        for name in _SCHEMA
    }


_TYPES = _build()
Node = _TYPES["Node"]
RegisterRequest = _TYPES["RegisterRequest"]
RegisterReply = _TYPES["RegisterReply"]
AwaitClusterRequest = _TYPES["AwaitClusterRequest"]
ClusterReply = _TYPES["ClusterReply"]
HeartbeatRequest = _TYPES["HeartbeatRequest"]
HeartbeatReply = _TYPES["HeartbeatReply"]
ReportRequest = _TYPES["ReportRequest"]
ReportReply = _TYPES["ReportReply"]
ObserveRequest = _TYPES["ObserveRequest"]
ObserveReply = _TYPES["ObserveReply"]


def message_type(name: str) -> type:
    return _TYPES[name]


def method_path(method: str) -> str:
    return f"/{SERVICE}/{method}"


def truncate(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """Keep the end of ``text`` (the root cause of a traceback is at the bottom)."""
    if len(text) <= limit:
        return text
    return "[... truncated ...]\n" + text[-limit:]
