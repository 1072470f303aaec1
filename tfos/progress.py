"""Training progress from the nodes to the driver: a Keras callback and a plain function
on the node side (``ctx.progress_callback()``, ``ctx.report_progress(...)``), a one-line
summary per record and an optional live display per node on the driver.
"""

from __future__ import annotations

import math
import numbers
import sys
import threading
import time


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


def describe(record: dict) -> str:
    """``epoch 2/5 step 40/100 loss=0.3125 accuracy=0.91`` (whatever the record has)."""
    parts = []
    for key in ("epoch", "step"):
        if key in record:
            total = record.get(f"{key}s")
            parts.append(f"{key} {record[key]}" + (f"/{total}" if total else ""))
    metrics = record.get("metrics") or {}
    parts += [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()]
    extra = {k: v for k, v in record.items() if k not in ("epoch", "epochs", "step", "steps", "metrics", "time")}
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


class TerminalDisplay:
    """One live progress line per node (rich), when the driver's stderr is a terminal."""

    def __init__(self):
        from rich.progress import BarColumn, Progress, TextColumn

        self._progress = Progress(TextColumn("[bold]{task.fields[node]}"), BarColumn(),
                                  TextColumn("{task.description}"), transient=False)
        self._tasks: dict[str, int] = {}
        self._lock = threading.Lock()
        self._progress.start()

    @staticmethod
    def wanted() -> bool:
        try:
            import rich  # noqa: F401
        except ImportError:
            return False
        return sys.stderr.isatty()

    def update(self, node: str, record: dict) -> None:
        with self._lock:
            if node not in self._tasks:
                self._tasks[node] = self._progress.add_task("", node=node, total=None)
            total = record.get("epochs")
            done = record.get("epoch", 0) - (0 if record.get("epoch_end") else 1)
            self._progress.update(self._tasks[node], description=describe(record), total=total,
                                  completed=max(done, 0))

    def close(self) -> None:
        self._progress.stop()
