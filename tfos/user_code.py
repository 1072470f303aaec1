"""Shipping the user's ``main_fun`` and args to the executors, so its remote tracebacks
still show file names and lines.

cloudpickle (3.x) pickles functions defined in the driver script by value and
replaces their file name with ``<dynamic-code>``, so a traceback from a node would
show neither the file nor the failing line. The driver ships the source file's name
and text next to the function; the TF process puts the name back on the code
objects and the text into :mod:`linecache`.
"""

from __future__ import annotations

import inspect
import linecache
import types

DYNAMIC = "<dynamic-code>"
MAX_SOURCE_BYTES = 2 * 1024 * 1024


def pack_main_fun(main_fun, args) -> bytes:
    """The payload every node or instance unpacks with :func:`unpack_main_fun`: the
    cloudpickled ``(main_fun, args, source)``, made once on the driver.

    Raises:
        ConfigError: ``main_fun`` or ``args`` cannot be pickled, or they pickle to more
            than a child process takes (:data:`tfos.node.frames.MAX_FRAME`); raised
            before anything starts, naming the cause.
    """
    import cloudpickle

    from tfos.errors import ConfigError
    from tfos.node.frames import MAX_FRAME

    try:
        payload = cloudpickle.dumps((main_fun, args, describe_source(main_fun)))
    except Exception as exc:  # noqa: BLE001 - pickling raises many types; each is the user's to fix
        raise ConfigError(
            f"main_fun and its args must pickle to reach the executors, and they do not "
            f"({type(exc).__name__}: {exc}); create locks, sockets, open files, models and the "
            f"SparkContext or SparkSession inside main_fun instead of capturing or passing them"
        ) from exc
    if len(payload) > MAX_FRAME:
        raise ConfigError(
            f"main_fun and its args pickle to {len(payload):,} bytes, more than the {MAX_FRAME:,} "
            f"tfos passes to each node; read big data inside main_fun (files, storage, or a Spark "
            f"feed with InputMode.SPARK) instead of capturing or passing it"
        )
    return payload


def unpack_main_fun(payload: bytes):
    """``(main_fun, args)`` from :func:`pack_main_fun`'s payload, with the source restored."""
    import cloudpickle

    main_fun, args, source = cloudpickle.loads(payload)
    restore_source(main_fun, source)
    return main_fun, args


def describe_source(fn) -> tuple[str, str] | None:
    """(file name, source text) of the file defining ``fn``, when it is readable and small."""
    try:
        filename = inspect.getsourcefile(fn) or inspect.getfile(fn)
        with open(filename, encoding="utf-8") as f:
            text = f.read(MAX_SOURCE_BYTES + 1)
    except (TypeError, OSError):
        return None
    if len(text) > MAX_SOURCE_BYTES:
        return None
    return filename, text


def restore_source(fn, source: tuple[str, str] | None) -> None:
    """Give ``fn`` and the by-value functions it reaches their real file name back."""
    if not source:
        return
    filename, text = source
    lines = text.splitlines(keepends=True)
    linecache.cache[filename] = (len(text), None, lines, filename)
    seen: set[int] = set()
    todo = [fn]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, types.FunctionType) and obj.__code__.co_filename == DYNAMIC:
            obj.__code__ = _renamed(obj.__code__, filename)
            todo.extend(v for v in obj.__globals__.values() if isinstance(v, (types.FunctionType, type)))
            if obj.__closure__:
                todo.extend(c.cell_contents for c in obj.__closure__ if _has_contents(c))
        elif isinstance(obj, type):
            todo.extend(v for v in vars(obj).values() if isinstance(v, types.FunctionType))


def _renamed(code: types.CodeType, filename: str) -> types.CodeType:
    consts = tuple(
        _renamed(c, filename) if isinstance(c, types.CodeType) and c.co_filename == DYNAMIC else c
        for c in code.co_consts
    )
    return code.replace(co_filename=filename, co_consts=consts)


def _has_contents(cell) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - probing an empty cell raises
        return True
    except ValueError:
        return False
