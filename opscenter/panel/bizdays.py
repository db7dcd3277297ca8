"""Business days of the operations center (Japan): weekdays that are not Japanese public holidays
(``jpholiday``: the national holidays, substitute holidays and citizens' holidays) nor the year-end
break of December 29 to January 3.

A change request is due ``n`` business days after the day it was filed (Japan time): the day of
filing is day 0 whatever its hour or kind, and the count starts on the next business day. Filed on
Monday 2026-12-28, a request due in 5 business days is due on Friday 2027-01-08 (Dec 29 - Jan 3 are
off, then Jan 4-8).
"""
from __future__ import annotations

import datetime as dt

import jpholiday

JST = dt.timezone(dt.timedelta(hours=9), "JST")  # Japan has no daylight saving time


def is_year_end_break(day: dt.date) -> bool:
    return (day.month == 12 and day.day >= 29) or (day.month == 1 and day.day <= 3)


def holiday_name(day: dt.date) -> str | None:
    """The Japanese public holiday's name, ``年末年始`` for the year-end break, or None."""
    if is_year_end_break(day):
        return "年末年始"
    return jpholiday.is_holiday_name(day)


def is_business_day(day: dt.date) -> bool:
    return day.weekday() < 5 and not is_year_end_break(day) and not jpholiday.is_holiday(day)


def add_business_days(start: dt.date, n: int) -> dt.date:
    """The ``n``-th business day after ``start`` (``start`` itself never counts)."""
    if n < 0:
        raise ValueError("n must be >= 0")
    day = start
    left = n
    while left:
        day += dt.timedelta(days=1)
        if is_business_day(day):
            left -= 1
    return day


def business_days_between(start: dt.date, end: dt.date) -> int:
    """Business days after ``start`` up to and including ``end`` (negative if ``end`` is earlier)."""
    if end < start:
        return -business_days_between(end, start)
    return sum(1 for i in range(1, (end - start).days + 1) if is_business_day(start + dt.timedelta(days=i)))


def japan_date(t: dt.datetime) -> dt.date:
    """The calendar day in Japan of a naive-UTC (or aware) time."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.astimezone(JST).date()


def due_date(filed_at: dt.datetime, n: int) -> dt.date:
    """When a request filed at ``filed_at`` (naive UTC) is due: ``n`` business days after its day in Japan."""
    return add_business_days(japan_date(filed_at), n)


def month_of(t: dt.datetime) -> str:
    """``YYYY-MM`` of ``t`` (naive UTC) in Japan time: the month a request counts against."""
    d = japan_date(t)
    return f"{d.year:04d}-{d.month:02d}"
