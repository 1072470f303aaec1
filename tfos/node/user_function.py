"""Running the user's ``main_fun`` in a child process, one way for a cluster's TF process
and a ``parallel_run`` instance.

The payload is the cloudpickled ``(main_fun, args, source)`` that came in the Spark task
closure (never from a socket). The rules the two kinds of child share:

- the source file's name and text go back on the unpickled functions, so a remote
  traceback shows the user's file and lines (:mod:`tfos.user_code`);
- ``args`` that is a list becomes ``sys.argv`` (TensorFlowOnSpark's convention for
  argv-style arguments);
- ``SystemExit`` with code 0 or ``None`` (argparse's ``--help``, ``sys.exit()``) is a
  normal end; any other exception, unpickling and context building included, is a failure:
  its traceback goes to stderr (the output tail) and to the parent as the ``failed`` event.
"""

from __future__ import annotations

import os
import resource
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: the longest failure message sent to the parent (the traceback travels whole)
MAX_MESSAGE_CHARS = 2000


def prepare_interpreter(keras: str) -> None:
    """Settings that must be in place before TensorFlow is imported."""
    # a Python worker's memory cap (spark.executor.pyspark.memory) must not starve TF
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
    except (ValueError, OSError):
        pass
    if keras != "auto":  # "auto": whatever the executor environment says
        from tfos.keras_compat import configure_keras_backend

        os.environ.update(configure_keras_backend(keras))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


@dataclass(frozen=True)
class UserOutcome:
    """How the user's code ended.

    Attributes:
        exit_code: the child's exit code: 0 when ``call`` returned or raised
            ``SystemExit(0)``; 1 when it raised (the ``failed`` event is sent).
        value: what ``call`` returned; ``None`` after a failure or a ``SystemExit``.
    """

    exit_code: int
    value: Any = None


class AfterMainFun(Exception):
    """A failure after ``main_fun`` returned (its result could not be sent): reported in its
    own words, not as ``main_fun`` raising."""


def call_main_fun(main_fun: Callable[[Any, Any], Any], args: Any, ctx: Any) -> Any:
    """The default ``call``: just ``main_fun(args, ctx)``."""
    return main_fun(args, ctx)


def run_user_function(
    payload: bytes,
    make_context: Callable[[], Any],
    events: Callable[..., None],
    call: Callable[[Callable[[Any, Any], Any], Any, Any], Any] = call_main_fun,
) -> UserOutcome:
    """Unpickle the payload, build the context, set ``sys.argv``, run ``call(main_fun, args, ctx)``.

    Blocks while the user's code runs. Never raises (``KeyboardInterrupt`` and
    ``SystemExit`` included): every end is an :class:`UserOutcome`, and a failure has
    already been reported with ``events("failed", message=..., traceback=...)``.

    Args:
        payload: the cloudpickled ``(main_fun, args, source)``.
        make_context: builds ``ctx``; what it raises is the run's failure.
        events: the child's :class:`tfos.node.frames.EventWriter`.
        call: runs the user's code given ``(main_fun, args, ctx)`` (a TF process serves
            instead on a ps node; an instance pickles the return value).
    """
    try:
        from tfos.user_code import unpack_main_fun

        main_fun, args = unpack_main_fun(payload)
        ctx = make_context()
        if isinstance(args, list):
            sys.argv = list(args)
        return UserOutcome(0, call(main_fun, args, ctx))
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the driver
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            return UserOutcome(0)
        tb = traceback.format_exc()
        sys.stderr.write(tb)
        sys.stderr.flush()
        said = str(exc) if isinstance(exc, AfterMainFun) else f"main_fun raised {type(exc).__name__}: {exc}"
        events("failed", message=said[:MAX_MESSAGE_CHARS], traceback=tb)
        return UserOutcome(1)
