"""The monthly maintenance window for software upgrades (別紙1 §6).

The service's terms put remote upgrades in the second Wednesday of each month, 23:00–28:00 Japan
time, that is from 23:00 on that Wednesday until 04:00 on the Thursday after. Times are computed
in ``Asia/Tokyo`` with zoneinfo and compared as absolute instants, so ``now`` may be given in any
time zone (the box's clock runs in UTC). The second Wednesday is always day 8–14, so the window
ends on day 9–15 of the same month, in Japan and in every other zone: it never crosses a month
or year end (the tests check this for every month of 400 years).

Outside the window an upgrade waits, unless the center sends an explicit override; ``gate`` then
allows it and logs who forced it (and emits an EVE record if given a sink).
"""
from __future__ import annotations

import calendar
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any, Callable
from zoneinfo import ZoneInfo

log = logging.getLogger(__name__)

JST = ZoneInfo("Asia/Tokyo")
WEDNESDAY = calendar.WEDNESDAY


@dataclass(frozen=True)
class Policy:
    """Which window: the ``nth`` ``weekday`` of the month, from ``start_hour`` for ``hours``."""

    weekday: int = WEDNESDAY
    nth: int = 2
    start_hour: int = 23
    hours: int = 5  # 23:00-28:00
    tz: dt.tzinfo = JST


DEFAULT = Policy()


@dataclass(frozen=True)
class Window:
    start: dt.datetime  # aware, in the policy's zone
    end: dt.datetime  # exclusive

    def __contains__(self, when: dt.datetime) -> bool:
        return self.start <= _aware(when) < self.end

    def as_dict(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(),
                "start_utc": self.start.astimezone(dt.timezone.utc).isoformat(),
                "end_utc": self.end.astimezone(dt.timezone.utc).isoformat()}


def _aware(when: dt.datetime) -> dt.datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("a time zone is required (a naive time is ambiguous: give UTC or Asia/Tokyo)")
    return when


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def nth_weekday(year: int, month: int, weekday: int = WEDNESDAY, nth: int = 2) -> dt.date:
    first = dt.date(year, month, 1)
    return first + dt.timedelta(days=(weekday - first.weekday()) % 7 + 7 * (nth - 1))


def window_for(year: int | dt.date, month: int | None = None, *, policy: Policy = DEFAULT) -> Window:
    """The window of a month: ``window_for(2026, 11)`` or ``window_for(date)`` (a date, or an aware
    datetime taken in Japan time, names its month)."""
    if isinstance(year, dt.datetime):
        local = _aware(year).astimezone(policy.tz)
        year, month = local.year, local.month
    elif isinstance(year, dt.date):
        year, month = year.year, year.month
    if month is None or not 1 <= month <= 12:
        raise ValueError("expected a year and a month 1-12, or a date")
    day = nth_weekday(year, month, policy.weekday, policy.nth)
    start = dt.datetime(day.year, day.month, day.day, policy.start_hour, tzinfo=policy.tz)
    # Wall-clock arithmetic in the zone (Japan has no DST, but keep it right for any zone).
    end_naive = start.replace(tzinfo=None) + dt.timedelta(hours=policy.hours)
    return Window(start, end_naive.replace(tzinfo=policy.tz))


def _months_from(local: dt.datetime) -> Any:
    y, m = local.year, local.month
    while True:
        yield y, m
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)


def next_window(now: dt.datetime | None = None, *, policy: Policy = DEFAULT) -> Window:
    """The window ``now`` is in, or else the next one to start."""
    now = _aware(now or _now())
    local = now.astimezone(policy.tz)
    # The previous month's window cannot still be open (it ends by the 15th), so start with this month.
    for y, m in _months_from(local):
        w = window_for(y, m, policy=policy)
        if now < w.end:
            return w
    raise AssertionError("unreachable")  # pragma: no cover


def in_window(now: dt.datetime | None = None, *, policy: Policy = DEFAULT) -> bool:
    now = _aware(now or _now())
    return now in window_for(now, policy=policy)


@dataclass(frozen=True)
class Gate:
    allowed: bool
    reason: str  # "in_window" | "forced" | "outside_window"
    window: Window  # the current or next window
    wait_seconds: float  # until the window opens (0 when allowed)
    forced_by: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "reason": self.reason, "window": self.window.as_dict(),
                "wait_seconds": round(self.wait_seconds), **({"forced_by": self.forced_by} if self.forced_by else {})}


def gate(now: dt.datetime | None = None, *, force: bool = False, forced_by: str = "", what: str = "upgrade",
         emit: Callable[[dict[str, Any]], None] | None = None, policy: Policy = DEFAULT) -> Gate:
    """May an upgrade run now? Inside the window: yes. Outside: only with ``force`` (the center's
    explicit override), which is logged with ``forced_by`` (task id, operator) and emitted."""
    now = _aware(now or _now())
    w = next_window(now, policy=policy)
    if now in w:
        return Gate(True, "in_window", w, 0.0)
    wait = (w.start - now).total_seconds()
    if not force:
        return Gate(False, "outside_window", w, wait)
    log.warning("%s forced outside the maintenance window by %s (next window %s)", what, forced_by or "the center",
                w.start.isoformat())
    if emit is not None:
        from filters.eve import timestamp

        emit({"timestamp": timestamp(now.timestamp()), "event_type": "maintenance",
              "maintenance": {"action": "forced", "what": what, "forced_by": forced_by or "center",
                              "message": "メンテナンス時間外の強制実行 / forced outside the maintenance window",
                              "next_window": w.as_dict()}})
    return Gate(True, "forced", w, 0.0, forced_by or "center")
