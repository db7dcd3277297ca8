"""Report months: ``YYYY-MM`` in Japan time, as naive-UTC bounds (what the tables store)."""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

JST = dt.timezone(dt.timedelta(hours=9), "JST")
_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


@dataclass(frozen=True)
class Month:
    """A calendar month in Japan time. ``start``/``end`` are naive UTC, end exclusive."""

    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> "Month":
        m = _MONTH.match(text.strip())
        if not m:
            raise ValueError(f"expected a month as YYYY-MM, got {text!r}")
        return cls(int(m.group(1)), int(m.group(2)))

    @classmethod
    def of(cls, t: dt.datetime) -> "Month":
        """The Japan-time month of ``t`` (naive UTC or aware)."""
        local = to_jst(t)
        return cls(local.year, local.month)

    @property
    def key(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def start(self) -> dt.datetime:
        return _utc(dt.datetime(self.year, self.month, 1, tzinfo=JST))

    @property
    def end(self) -> dt.datetime:
        return self.next().start

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    def next(self) -> "Month":
        return Month(self.year + (self.month == 12), self.month % 12 + 1)

    def previous(self) -> "Month":
        return Month(self.year - (self.month == 1), (self.month - 2) % 12 + 1)

    def day_start(self, i: int) -> dt.datetime:
        """Naive UTC start of day ``i`` (0-based) of the month, Japan time."""
        return self.start + dt.timedelta(days=i)

    @property
    def label_ja(self) -> str:
        return f"{self.year} 年 {self.month} 月"

    @property
    def label_en(self) -> str:
        return dt.date(self.year, self.month, 1).strftime("%B %Y")

    def __str__(self) -> str:
        return self.key


def _utc(t: dt.datetime) -> dt.datetime:
    return t.astimezone(dt.timezone.utc).replace(tzinfo=None)


def to_jst(t: dt.datetime) -> dt.datetime:
    """A naive-UTC (or aware) time in Japan time (aware)."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.astimezone(JST)


def jst_text(t: dt.datetime, *, seconds: bool = False) -> str:
    """``2026-05-03 14:05`` (Japan time) for the reader."""
    return to_jst(t).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def iso_z(t: dt.datetime) -> str:
    """RFC 3339 UTC, seconds: ``2026-05-03T05:05:00Z`` (naive UTC or aware in)."""
    if t.tzinfo is not None:
        t = _utc(t)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")
