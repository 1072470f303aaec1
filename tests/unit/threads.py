"""A background call whose result or exception the test thread collects."""

from __future__ import annotations

import threading


class Background:
    """Runs ``fn(*args, **kwargs)`` in a daemon thread; ``result()`` returns its value or raises."""

    def __init__(self, fn, *args, **kwargs):
        self._value = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, args, kwargs), daemon=True)
        self._thread.start()

    def _run(self, fn, args, kwargs):
        try:
            self._value = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the test thread by result()
            self._error = exc

    def alive(self) -> bool:
        return self._thread.is_alive()

    def result(self, timeout_s: float = 10.0):
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise AssertionError(f"background call still running after {timeout_s} s")
        if self._error is not None:
            raise self._error
        return self._value
