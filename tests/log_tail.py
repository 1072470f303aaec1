"""The last lines of a server's log file, for the error a test fixture raises when it fails."""

from __future__ import annotations


def log_tail(path: str, lines: int = 40) -> str:
    """The last ``lines`` lines of ``path``, or why there are none."""
    try:
        with open(path, errors="replace") as log:
            return "".join(log.readlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"
