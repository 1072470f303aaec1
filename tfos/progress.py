"""Training progress from the nodes to the driver: a Keras callback and a plain function
on the node side (``ctx.progress_callback()``, ``ctx.report_progress(...)``), a one-line
summary per record and an optional live display per node on the driver.

The live display is one line per node: rich's in a terminal (:class:`TerminalDisplay`),
an updating output in a Jupyter kernel (:class:`NotebookDisplay`), none elsewhere (the
``tfos.nodes`` log lines are the text fallback). ``TFOS_PROGRESS=off`` turns it off.
"""

from __future__ import annotations

import html
import logging
import math
import numbers
import os
import sys
import threading
import time
import uuid


def progress_record(**fields) -> dict:
    """A JSON-able record: numbers as floats/ints (NaN/inf as strings), the rest as text."""
    record = {"time": time.time()}
    for key, value in fields.items():
        record[key] = _plain(value)
    return record


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) or hasattr(value, "item"):
        try:
            number = float(value)
        except (TypeError, ValueError):
            return str(value)
        return number if math.isfinite(number) else str(number)
    return str(value)


#: record fields describe() shows otherwise (or not at all: the time, the epoch-end marker)
_NOT_SHOWN = frozenset({"epoch", "epochs", "step", "steps", "metrics", "time", "epoch_end"})


def describe(record: dict) -> str:
    """``epoch 2/5 step 40/100 loss=0.3125 accuracy=0.91`` (whatever the record has)."""
    parts = []
    for key in ("epoch", "step"):
        if key in record:
            total = record.get(f"{key}s")
            parts.append(f"{key} {record[key]}" + (f"/{total}" if total else ""))
    metrics = record.get("metrics") or {}
    parts += [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()]
    extra = {k: v for k, v in record.items() if k not in _NOT_SHOWN}
    parts += [f"{k}={v}" for k, v in extra.items()]
    return " ".join(parts) or "progress"


def keras_callback(report, every_s: float = 1.0):
    """A ``tf.keras`` callback that calls ``report(**fields)`` at every epoch end and at most
    every ``every_s`` seconds between (so a fast loop does not flood the driver)."""
    import tensorflow as tf

    class ProgressCallback(tf.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self._last = 0.0
            self._epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            now = time.monotonic()
            if now - self._last >= every_s:
                self._last = now
                report(epoch=self._epoch + 1, epochs=self.params.get("epochs"), step=batch + 1,
                       steps=self.params.get("steps"), metrics=dict(logs or {}))

        def on_epoch_end(self, epoch, logs=None):
            self._last = time.monotonic()
            report(epoch=epoch + 1, epochs=self.params.get("epochs"), metrics=dict(logs or {}), epoch_end=True)

    return ProgressCallback()


#: ``TFOS_PROGRESS`` values that turn the live display off (the log lines stay)
_OFF = ("0", "off", "false", "no", "none")


#: the logger the nodes' output lines and progress records go to on the driver (cluster.py)
NODE_LOGGER = "tfos.nodes"
#: set (``extra=``) on the log records that carry a progress record, not an output line
PROGRESS_FLAG = "tfos_progress"


class _NodeLines(logging.StreamHandler):
    """Prints ``[worker:1] line`` to this process's ``sys.stdout`` as it is at each line (a
    kernel's stream, rich's stand-in while a terminal display is live), unless the user has
    set up logging since: their handlers print the line then, and this one stays quiet."""

    def __init__(self):
        super().__init__(sys.stdout)
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if logging.getLogger().handlers:  # the user configured logging (basicConfig, a shipper)
            return
        if getattr(record, PROGRESS_FLAG, False) and display_kind() != "none":
            return  # the live display shows it, updated in place: no line per record under it
        self.setStream(sys.stdout)
        super().emit(record)


def show_node_lines() -> None:
    """Make the nodes' lines print where the user looks when nothing else would.

    A notebook kernel, and a script that never set up logging, have no handler for
    ``tfos.nodes``' INFO lines: they would be lost. Then one handler goes on that logger
    (once per process), printing each line on ``sys.stdout``: in a kernel, the running
    cell. A user who configured logging keeps their handlers and sees each line once.
    ``TFOS_NODE_LINES=off`` leaves logging alone. (The one place the library touches
    logging handlers, on the user-visible logger it owns.)
    """
    if os.environ.get("TFOS_NODE_LINES", "").strip().lower() in _OFF:
        return
    logger = logging.getLogger(NODE_LOGGER)
    if logger.hasHandlers():  # the user's, or ours from an earlier run
        return
    logger.addHandler(_NodeLines())
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


def display_kind() -> str:
    """Which live display this driver gets: ``"notebook"`` (a Jupyter kernel), ``"terminal"``
    (stderr is a terminal and rich is installed) or ``"none"`` (``TFOS_PROGRESS=off``, or
    output to a pipe or a file: the ``tfos.nodes`` log lines are the display)."""
    if os.environ.get("TFOS_PROGRESS", "").strip().lower() in _OFF:
        return "none"
    if NotebookDisplay.wanted():
        return "notebook"
    if TerminalDisplay.wanted():
        return "terminal"
    return "none"


def live_display():
    """A new live per-node display of the kind :func:`display_kind` says, or ``None``.

    Call it in the thread that runs the user's code (``tfos.run``'s): a notebook display
    shows in the cell running then. A display takes node states (``set_states``) and
    progress records (``update``) from any thread, ``show()`` shows it again in the cell
    running now (a notebook's; a terminal's stays where it is), and ``close(states)``
    draws the final states; nothing is drawn after it.
    """
    kind = display_kind()
    if kind == "notebook":
        return NotebookDisplay()
    if kind == "terminal":
        return TerminalDisplay()
    return None


def _done_epochs(record: dict) -> int:
    """Epochs finished by the time of ``record`` (an epoch-end record counts its own)."""
    epoch = record.get("epoch", 0)
    if not isinstance(epoch, (int, float)):
        return 0
    return max(int(epoch) - (0 if record.get("epoch_end") else 1), 0)


def _epochs(record: dict | None) -> int | None:
    total = (record or {}).get("epochs")
    return int(total) if isinstance(total, (int, float)) and not isinstance(total, bool) and total > 0 else None


class _Rows:
    """Each node's state and last progress record, in the order the nodes came."""

    def __init__(self):
        self.states: dict[str, str] = {}
        self.records: dict[str, dict] = {}

    def nodes(self) -> list[str]:
        return list(dict.fromkeys([*self.states, *self.records]))

    def set_states(self, states: dict[str, str]) -> bool:
        """Take these states; True when any changed."""
        changed = any(self.states.get(node) != state for node, state in states.items())
        self.states.update(states)
        return changed

    def update(self, node: str, record: dict) -> None:
        self.records[node] = record


class TerminalDisplay:
    """One live line per node (rich) on the driver's terminal: its role, a bar of epochs
    done, the last progress record, its state.

    While it is live, rich takes ``sys.stdout``/``sys.stderr`` (``print`` lands above the
    lines) and the logging handlers writing to the terminal write through rich too, so a
    log line does not tear the lines; ``close()`` puts both back.
    """

    def __init__(self):
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn

        # stderr: the stream wanted() checked (stdout may be a pipe or a file)
        self._progress = Progress(TextColumn("{task.fields[node]}", style="bold", markup=False), BarColumn(),
                                  TextColumn("{task.description}", markup=False),
                                  TextColumn("{task.fields[state]}", style="dim", markup=False),
                                  transient=False, console=Console(stderr=True))
        self._rows = _Rows()
        self._tasks: dict[str, int] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._handlers: list[tuple[logging.StreamHandler, object]] = []
        self._progress.start()
        self._route_logging()

    @staticmethod
    def wanted() -> bool:
        try:
            import rich  # noqa: F401
        except ImportError:
            return False
        try:
            return sys.stderr.isatty()
        except (AttributeError, ValueError):  # no stderr, or a closed one
            return False

    def show(self) -> None:
        """A terminal's lines stay where they are."""

    def set_states(self, states: dict[str, str]) -> None:
        with self._lock:
            if not self._closed and self._rows.set_states(states):
                for node in states:
                    self._draw_locked(node)

    def update(self, node: str, record: dict) -> None:
        with self._lock:
            if self._closed:
                return  # a late record after teardown
            self._rows.update(node, record)
            self._draw_locked(node)

    def close(self, states: dict[str, str] | None = None) -> None:
        """Draw the final states, stop the live lines, give the terminal back."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._rows.set_states(states or {})
            for node in self._rows.nodes():
                self._draw_locked(node)
            try:
                self._progress.stop()
            finally:
                for handler, stream in self._handlers:
                    handler.setStream(stream)

    def _draw_locked(self, node: str) -> None:
        record = self._rows.records.get(node)
        if node not in self._tasks:
            self._tasks[node] = self._progress.add_task("", node=node, state="", total=None)
        total = _epochs(record)
        self._progress.update(self._tasks[node], description=describe(record) if record else "",
                              state=self._rows.states.get(node, ""), total=total,
                              completed=min(_done_epochs(record), total) if record and total else 0)

    def _route_logging(self) -> None:
        """Point the logging handlers that wrote to the terminal at rich's stand-ins for it."""
        routes = {}
        for proxy in (sys.stdout, sys.stderr):
            original = getattr(proxy, "rich_proxied_file", None)  # rich's FileProxy, while live
            if original is not None:
                routes[id(original)] = proxy
        loggers = [logging.getLogger(), *(logger for logger in logging.Logger.manager.loggerDict.values()
                                          if isinstance(logger, logging.Logger))]
        for logger in loggers:
            for handler in logger.handlers:
                proxy = routes.get(id(getattr(handler, "stream", None)))
                if isinstance(handler, logging.StreamHandler) and proxy is not None:
                    self._handlers.append((handler, handler.setStream(proxy)))


class NotebookDisplay:
    """One row per node in a Jupyter kernel's output, updated in place: its role, a bar of
    epochs done, the last progress record, its state.

    An ``IPython.display`` output with a ``display_id`` (an HTML table and a plain-text
    twin): classic Jupyter, JupyterLab, VS Code and nbclient update it wherever it is
    shown, without ipywidgets. Updates come from tfos's threads; at most one is sent per
    ``min_interval_s`` (a timer sends the last one), and ``close()`` sends the final states.
    """

    def __init__(self, min_interval_s: float = 0.25, display=None):
        if display is None:
            from IPython.display import display
        self._display = display
        self._id = f"tfos-{uuid.uuid4().hex}"
        self._rows = _Rows()
        self._lock = threading.Lock()
        self._closed = False
        self._min_interval_s = min_interval_s
        self._sent = 0.0
        self._timer: threading.Timer | None = None
        self._shown_in: set = set()
        self.show()

    @staticmethod
    def wanted() -> bool:
        """In a Jupyter kernel (IPython's ZMQ shell has a kernel; a terminal IPython has none)."""
        return _kernel_shell() is not None

    @property
    def display_id(self) -> str:
        return self._id

    def show(self) -> None:
        """Show the rows in the cell running now, unless they are already shown there."""
        shell = _kernel_shell()
        cell = getattr(shell, "execution_count", None)
        with self._lock:
            if self._closed or (cell in self._shown_in) or (cell is None and self._shown_in):
                return
            self._shown_in.add(cell)
            self._sent = time.monotonic()
            self._publish(update=False)

    def set_states(self, states: dict[str, str]) -> None:
        with self._lock:
            if not self._closed and self._rows.set_states(states):
                self._send_soon_locked()

    def update(self, node: str, record: dict) -> None:
        with self._lock:
            if self._closed:
                return
            self._rows.update(node, record)
            self._send_soon_locked()

    def close(self, states: dict[str, str] | None = None) -> None:
        with self._lock:
            if self._closed:
                return
            self._rows.set_states(states or {})
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._publish(update=True)
            self._closed = True

    def _send_soon_locked(self) -> None:
        wait_s = self._min_interval_s - (time.monotonic() - self._sent)
        if wait_s <= 0:
            self._sent = time.monotonic()
            self._publish(update=True)
        elif self._timer is None:
            self._timer = threading.Timer(wait_s, self._send_pending)
            self._timer.daemon = True
            self._timer.start()

    def _send_pending(self) -> None:
        with self._lock:
            self._timer = None
            if not self._closed:
                self._sent = time.monotonic()
                self._publish(update=True)

    def _publish(self, update: bool) -> None:
        try:
            self._display({"text/plain": self.text(), "text/html": self.html()}, raw=True,
                          display_id=self._id, update=update)
        except Exception:  # noqa: BLE001 - a kernel shutting down: the log lines remain
            self._closed = True

    def text(self) -> str:
        """``chief:0  [####------] epoch 2/5 loss=0.31  running`` per node: the plain-text twin."""
        nodes = self._rows.nodes()
        if not nodes:
            return "tfos: waiting for the nodes"
        width = max(len(node) for node in nodes)
        lines = []
        for node in nodes:
            record = self._rows.records.get(node)
            total = _epochs(record)
            bar = ""
            if total:
                filled = round(10 * min(_done_epochs(record) / total, 1.0))
                bar = "[" + "#" * filled + "-" * (10 - filled) + "] "
            described = describe(record) if record else ""
            state = self._rows.states.get(node, "")
            lines.append(f"{node:<{width}}  {bar}{described}{'  ' if described and state else ''}{state}".rstrip())
        return "\n".join(lines)

    def html(self) -> str:
        nodes = self._rows.nodes()
        if not nodes:
            return "<pre>tfos: waiting for the nodes</pre>"
        rows = []
        for node in nodes:
            record = self._rows.records.get(node)
            total = _epochs(record)
            bar = f'<progress value="{min(_done_epochs(record), total)}" max="{total}"></progress>' if total else ""
            described = html.escape(describe(record)) if record else ""
            state = html.escape(self._rows.states.get(node, ""))
            rows.append(f"<tr><td><b>{html.escape(node)}</b></td><td>{bar}</td>"
                        f"<td><code>{described}</code></td><td>{state}</td></tr>")
        return '<table class="tfos-progress">' + "".join(rows) + "</table>"


def _kernel_shell():
    """IPython's shell when this process is a Jupyter kernel (its ZMQ shell has a kernel), else None."""
    if "IPython" not in sys.modules:
        return None
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except Exception:  # noqa: BLE001 - a broken IPython is no notebook
        return None
    return shell if shell is not None and getattr(shell, "kernel", None) is not None else None
