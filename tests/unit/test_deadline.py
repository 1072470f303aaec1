"""Deadline: time left, expiry, bounded slices of waiting, and the words of its timeout error."""

from __future__ import annotations

import threading
import time

import pytest

from tfos import deadline as deadline_module
from tfos.deadline import Deadline

pytestmark = pytest.mark.timeout(60)


class FakeTime:
    """Stands in for the ``time`` module inside tfos.deadline; ``now`` moves only when told."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(deadline_module, "time", fake)
    return fake


@pytest.mark.parametrize(
    ("timeout_s", "advance", "remaining", "expired"),
    [
        (10.0, 0.0, 10.0, False),
        (10.0, 4.0, 6.0, False),
        (10.0, 10.0, 0.0, True),
        (10.0, 25.0, 0.0, True),  # never negative
        (0.0, 0.0, 0.0, True),
        (None, 1e9, None, False),  # no limit
    ],
)
def test_remaining_and_expired_follow_the_clock(clock, timeout_s, advance, remaining, expired):
    d = Deadline(timeout_s, "something")
    clock.now += advance
    assert d.remaining() == remaining
    assert d.expired() is expired
    assert d.elapsed() == advance


@pytest.mark.parametrize(
    ("timeout_s", "advance", "at_most", "expected"),
    [
        (10.0, 0.0, 2.0, 2.0),  # plenty left: block for the slice
        (10.0, 9.5, 2.0, 0.5),  # little left: block only for what remains
        (10.0, 11.0, 2.0, 0.0),
        (None, 50.0, 2.0, 2.0),
    ],
)
def test_slice_is_the_remaining_time_capped(clock, timeout_s, advance, at_most, expected):
    d = Deadline(timeout_s, "something")
    clock.now += advance
    assert d.slice(at_most) == expected


@pytest.mark.parametrize(
    ("timeout_s", "progress", "hint", "message"),
    [
        (600, "1 of 4 registered (host-a)", "is dynamic allocation on?",
         "waited 600 s for 4 executors to register; 1 of 4 registered (host-a); is dynamic allocation on?"),
        (2.5, "0 of 2 registered", "",
         "waited 2.5 s for 4 executors to register; 0 of 2 registered"),
        (0.125, "nothing arrived", "check the network",
         "waited 0.125 s for 4 executors to register; nothing arrived; check the network"),
    ],
)
def test_message_says_how_long_what_arrived_and_the_hint(timeout_s, progress, hint, message):
    assert Deadline(timeout_s, "4 executors to register").message(progress, hint) == message


def test_message_of_an_unlimited_deadline_says_how_long_it_waited(clock):
    d = Deadline(None, "the feed to drain")
    clock.now += 12.5
    assert d.message("3 chunks left") == "waited 12.5 s for the feed to drain; 3 chunks left"


def test_wait_for_returns_the_predicate_value_as_soon_as_it_holds():
    cond = threading.Condition()
    box: list[str] = []

    def later() -> None:
        with cond:
            box.append("ready")
            cond.notify_all()

    d = Deadline(30.0, "the box to fill")
    with cond:
        threading.Timer(0.05, later).start()
        result = d.wait_for(cond, lambda: list(box))
    assert result == ["ready"]
    assert d.elapsed() < 15.0


def test_wait_for_gives_up_falsy_when_the_deadline_passes():
    cond = threading.Condition()
    d = Deadline(0.05, "nothing")
    started = time.monotonic()
    with cond:
        assert not d.wait_for(cond, lambda: False)
    assert d.expired()
    assert time.monotonic() - started >= 0.05
