"""The maintenance window: second Wednesday of each month, 23:00-28:00 Japan time (until 04:00 on
the Thursday), across month and year ends, early and late second Wednesdays and time zones."""
from __future__ import annotations

import datetime as dt
import logging
from zoneinfo import ZoneInfo

import pytest

from agent.lifecycle.maintenance import JST, gate, in_window, next_window, nth_weekday, window_for

UTC = dt.timezone.utc
LA = ZoneInfo("America/Los_Angeles")
KIRITIMATI = ZoneInfo("Pacific/Kiritimati")  # UTC+14, the earliest zone
PAGO = ZoneInfo("Pacific/Pago_Pago")  # UTC-11


def jst(*a: int) -> dt.datetime:
    return dt.datetime(*a, tzinfo=JST)


def utc(*a: int) -> dt.datetime:
    return dt.datetime(*a, tzinfo=UTC)


def test_a_typical_month() -> None:
    w = window_for(2026, 11)  # 1 Nov 2026 is a Sunday: Wednesdays 4 and 11
    assert (w.start, w.end) == (jst(2026, 11, 11, 23), jst(2026, 11, 12, 4))
    assert w.start.weekday() == 2 and w.end.weekday() == 3
    assert w.as_dict()["start_utc"] == "2026-11-11T14:00:00+00:00" and w.as_dict()["end_utc"] == "2026-11-11T19:00:00+00:00"


@pytest.mark.parametrize("year,month,day", [
    (2026, 4, 8), (2026, 7, 8), (2025, 10, 8), (2027, 12, 8),  # the month starts on a Wednesday: earliest
    (2026, 1, 14), (2026, 10, 14), (2025, 5, 14), (2027, 7, 14),  # the month starts on a Thursday: latest
])
def test_second_wednesday_on_the_8th_and_the_14th(year: int, month: int, day: int) -> None:
    assert nth_weekday(year, month) == dt.date(year, month, day)
    w = window_for(year, month)
    assert w.start == jst(year, month, day, 23) and w.end == jst(year, month, day + 1, 4)
    assert jst(year, month, day, 22, 59, 59) not in w
    assert jst(year, month, day, 23) in w
    assert jst(year, month, day + 1, 3, 59, 59) in w  # "28:00" is 04:00 on Thursday ...
    assert jst(year, month, day + 1, 4) not in w  # ... and the end is exclusive
    assert jst(year, month, day - 7, 23, 30) not in w  # the first Wednesday is not it


def test_times_given_in_utc_and_other_zones() -> None:
    # October 2026: window 14 Oct 23:00 JST - 15 Oct 04:00 JST = 14 Oct 14:00-19:00 UTC
    assert not in_window(utc(2026, 10, 14, 13, 59, 59))
    assert in_window(utc(2026, 10, 14, 14, 0))
    assert in_window(utc(2026, 10, 14, 18, 59, 59))
    assert not in_window(utc(2026, 10, 14, 19, 0))
    assert in_window(dt.datetime(2026, 10, 14, 7, 30, tzinfo=LA))  # PDT (UTC-7) morning of the same Wednesday
    assert not in_window(dt.datetime(2026, 10, 14, 12, 0, tzinfo=LA))
    assert in_window(dt.datetime(2026, 10, 15, 4, 30, tzinfo=KIRITIMATI))  # already Thursday there
    assert in_window(dt.datetime(2026, 10, 14, 4, 0, tzinfo=PAGO))  # 03:00-08:00 on the Wednesday there
    assert not in_window(dt.datetime(2026, 10, 13, 23, 0, tzinfo=PAGO))
    assert not in_window(jst(2026, 10, 7, 23, 30))  # the first Wednesday


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        in_window(dt.datetime(2026, 10, 14, 23, 30))
    with pytest.raises(ValueError):
        window_for(2026, 13)


def test_window_for_a_date_or_an_instant() -> None:
    assert window_for(dt.date(2026, 4, 30)) == window_for(2026, 4)
    # 31 Dec 2026 20:00 UTC is already 1 Jan 2027 in Japan: the month is taken in Japan time
    assert window_for(utc(2026, 12, 31, 20)) == window_for(2027, 1)


def test_next_window_across_month_and_year_ends() -> None:
    assert next_window(jst(2026, 10, 1)) == window_for(2026, 10)
    assert next_window(jst(2026, 10, 15, 0, 30)) == window_for(2026, 10), "inside: the current window"
    assert next_window(jst(2026, 10, 15, 4)) == window_for(2026, 11), "at the Thursday 04:00 end: next month"
    assert next_window(jst(2026, 12, 10, 4)) == window_for(2027, 1)
    assert next_window(jst(2026, 12, 31, 23, 59)) == window_for(2027, 1)
    assert next_window(utc(2026, 12, 31, 14, 59)).start == jst(2027, 1, 13, 23)
    assert next_window(utc(2025, 12, 31, 15, 0)).start == jst(2026, 1, 14, 23), "year end in JST, late Wednesday"
    assert next_window(jst(2026, 3, 12, 5)).start == jst(2026, 4, 8, 23), "an early (8th) Wednesday next"


def test_the_window_never_crosses_a_month_end() -> None:
    """Can the 04:00 Thursday end fall in the next month? No: the second Wednesday is day 8-14 (the
    first is day 1-7), so the Thursday is day 9-15 of the same month. In UTC the whole window is
    14:00-19:00 on the Wednesday, and even at UTC+14 or UTC-11 it stays on days 7-15. Checked here
    for every month of a full 400-year Gregorian cycle."""
    for year in range(2000, 2400):
        for month in range(1, 13):
            w = window_for(year, month)
            assert w.start.weekday() == 2 and 8 <= w.start.day <= 14
            assert w.end - w.start == dt.timedelta(hours=5)
            for tz in (JST, UTC, KIRITIMATI, PAGO):
                s, e = w.start.astimezone(tz), w.end.astimezone(tz)
                assert (s.year, s.month) == (e.year, e.month) == (year, month)
            assert w.end.day == w.start.day + 1 <= 15


def test_gate_waits_outside_the_window(caplog: pytest.LogCaptureFixture) -> None:
    inside = gate(utc(2026, 10, 14, 15, 0))
    assert inside.allowed and inside.reason == "in_window" and inside.wait_seconds == 0
    outside = gate(utc(2026, 10, 14, 13, 0))
    assert not outside.allowed and outside.reason == "outside_window" and outside.wait_seconds == 3600
    assert outside.window == window_for(2026, 10)
    later = gate(jst(2026, 10, 15, 4))
    assert not later.allowed and later.window == window_for(2026, 11)


def test_forced_override_is_logged_and_emitted(caplog: pytest.LogCaptureFixture) -> None:
    events: list[dict] = []
    with caplog.at_level(logging.WARNING, logger="agent.lifecycle.maintenance"):
        g = gate(utc(2026, 10, 20, 3, 0), force=True, forced_by="task 42 (operator yamada)", emit=events.append)
    assert g.allowed and g.reason == "forced" and g.forced_by.startswith("task 42")
    assert "forced outside the maintenance window by task 42" in caplog.text
    (ev,) = events
    assert ev["event_type"] == "maintenance" and ev["maintenance"]["action"] == "forced"
    assert ev["maintenance"]["next_window"]["start"] == "2026-11-11T23:00:00+09:00"
    # inside the window a force changes nothing and logs nothing extra
    assert gate(jst(2026, 10, 14, 23, 30), force=True).reason == "in_window"
