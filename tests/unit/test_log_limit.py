"""RateLimitedLog: one full line per interval, the rest counted and told with the next line."""

from __future__ import annotations

import logging

from tfos.log_limit import RateLimitedLog


def test_one_line_per_interval_then_the_held_count_with_the_next(caplog):
    now = [100.0]
    limited = RateLimitedLog(logging.getLogger("t.limit"), "refusals", interval_s=10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="t.limit"):
        for i in range(50):
            limited.log("refused %d", i)
        now[0] += 10.0
        limited.log("refused %d", 50)
        limited.log("refused %d", 51)
        limited.flush()
        limited.flush()  # nothing more held: no line
    assert [r.getMessage() for r in caplog.records] == [
        "refused 0",
        "refused 50 (and 49 more refusals in the last 10 s, not logged one by one)",
        "1 more refusals, not logged one by one",
    ]
    assert limited.total == 52
