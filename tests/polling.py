"""Polling for tests: conditions a test cannot be notified of (pids, ports, files)."""

from __future__ import annotations

import time


def wait_until(predicate, timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll ``predicate`` until true or ``timeout_s``; whether it became true."""
    end = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(interval_s)
