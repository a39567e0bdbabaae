"""ThrottledWarning: a failure repeated on every request is logged once per interval, and the
next line says how many were held back."""

from __future__ import annotations

import logging

import pytest

from app.core.throttled_log import ThrottledWarning


def test_repeats_within_the_interval_are_counted_into_the_next_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = [100.0]
    warning = ThrottledWarning(logging.getLogger("tests.throttled"), 30.0, now=lambda: clock[0])
    with caplog.at_level(logging.WARNING, logger="tests.throttled"):
        for _ in range(5):
            warning.warning("Redis away: %s", "refused")
            clock[0] += 1.0
        clock[0] = 130.0  # 30 s after the first line
        warning.warning("Redis away: %s", "refused")
        warning.warning("Redis away: %s", "refused")
        clock[0] = 200.0
        warning.warning("Redis away: %s", "back soon")
    assert [r.getMessage() for r in caplog.records] == [
        "Redis away: refused",
        "Redis away: refused (and 4 more like it in the last 30 s)",
        "Redis away: back soon (and 1 more like it in the last 30 s)",
    ]
    assert {r.levelno for r in caplog.records} == {logging.WARNING}
