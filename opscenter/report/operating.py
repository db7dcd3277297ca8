"""The operating record: how much of a month the contract's box was checking in and protecting, and
its outages, computed from the check-in spans stored at the center (opscenter/report/recording.py).

Rule: the box is expected from the later of the month's start (Japan time) and the contract's service
start, to the earliest of the month's end, the license end and now. A gap between check-ins longer
than ``misses`` x the heartbeat interval told to the box (``offline_after_missed``, the rule that marks a
box offline) is an outage, from the last check-in before it to the first one after it (clipped to the
expected period); shorter gaps, also at the edges of the period, are normal operation. While the box
reports that none of its data-plane workers is ready it is checking in but not protecting: those
periods are listed too. The boxes of a contract (a replacement box after a failed one) count together.

The result is a plain JSON-ready dict of integers and strings (no floats: it is signed as canonical
JSON, see opscenter/report/signing.py).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, select

from opscenter.db import Database, checkin_months, checkin_spans, contracts, devices
from opscenter.report.period import Month, iso_z

RECORD_TYPE = "vcr-operating-record"
RECORD_VERSION = 1
PPM = 1_000_000


@dataclass(frozen=True)
class Span:
    device_id: str
    start: dt.datetime
    end: dt.datetime
    interval: float
    protecting: bool


Interval = tuple[dt.datetime, dt.datetime]


def _seconds(a: dt.datetime, b: dt.datetime) -> int:
    return max(0, round((b - a).total_seconds()))


def _merge_spans(spans: list[Span], misses: int) -> list[tuple[dt.datetime, dt.datetime, float]]:
    """Union of the spans, joining those less than ``misses`` intervals apart: (start, end, interval)."""
    out: list[tuple[dt.datetime, dt.datetime, float]] = []
    for s in sorted(spans, key=lambda s: s.start):
        if out and (s.start - out[-1][1]).total_seconds() <= misses * out[-1][2]:
            a, b, ivl = out[-1]
            out[-1] = (a, max(b, s.end), s.interval if s.end >= b else ivl)
        else:
            out.append((s.start, s.end, s.interval))
    return out


def _clip(intervals: list[Interval], lo: dt.datetime, hi: dt.datetime) -> list[Interval]:
    return [(max(a, lo), min(b, hi)) for a, b in intervals if b > lo and a < hi]


def _union(intervals: list[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def outages(spans: list[Span], lo: dt.datetime, hi: dt.datetime, misses: int, default_interval: float,
            now: dt.datetime | None = None) -> list[Interval]:
    """Gaps without check-ins longer than the allowance, clipped to [lo, hi). A gap is judged whole:
    one that started before ``lo`` or goes on after ``hi`` (to the next span, else to ``now``) counts
    with its full length."""
    up = _merge_spans(spans, misses)
    gaps: list[tuple[dt.datetime, dt.datetime, float]] = []
    prev_end: dt.datetime | None = None
    prev_ivl = up[0][2] if up else default_interval
    for a, b, ivl in up:
        start = lo if prev_end is None else prev_end
        if a > start:
            gaps.append((start, a, prev_ivl))
        prev_end = b if prev_end is None else max(prev_end, b)
        prev_ivl = ivl
    start = lo if prev_end is None else prev_end
    until = max(hi, now or hi)
    if start < until:
        gaps.append((start, until, prev_ivl))
    out = []
    for a, b, gap_ivl in gaps:
        a2, b2 = max(a, lo), min(b, hi)
        if b2 > a2 and (b - a).total_seconds() > misses * gap_ivl:
            out.append((a2, b2))
    return out


def load_spans(db: Database, device_ids: list[str], lo: dt.datetime, hi: dt.datetime) -> list[Span]:
    if not device_ids:
        return []
    s = checkin_spans.c
    with db.read() as conn:
        rows = conn.execute(select(s.device_id, s.first_at, s.last_at, s.interval, s.protecting).where(and_(
            s.device_id.in_(device_ids), s.last_at >= lo - dt.timedelta(days=1),
            s.first_at < hi + dt.timedelta(days=1)))).all()
    return [Span(r[0], r[1], r[2], float(r[3]), bool(r[4])) for r in rows]


def contract_devices(db: Database, contract_id: str) -> tuple[Any, list[dict[str, Any]]]:
    """(the contract row or None, its boxes oldest first)."""
    with db.read() as conn:
        c = conn.execute(select(contracts).where(contracts.c.contract_id == contract_id)).mappings().first()
        devs = conn.execute(select(devices.c.device_id, devices.c.serial, devices.c.hostname, devices.c.activated_at,
                                   devices.c.revoked_at, devices.c.heartbeat_interval, devices.c.agent_version)
                            .where(devices.c.contract_id == contract_id)
                            .order_by(devices.c.activated_at)).mappings().all()
    return c, [dict(d) for d in devs]


def percent_text(ppm: int | None) -> str | None:
    """Parts per million as a percentage with two decimals, rounded down (99.999% is not "100.00")."""
    if ppm is None:
        return None
    return f"{ppm // 10000}.{(ppm % 10000) // 100:02d}"


def operating_record(db: Database, contract_id: str, month: Month, *, misses: int, default_interval: float,
                     now: dt.datetime) -> dict[str, Any]:
    """The unsigned operating record of ``contract_id`` for ``month`` (see the module text)."""
    contract, devs = contract_devices(db, contract_id)
    if contract is None:
        raise LookupError(f"no contract {contract_id!r}")
    term_start, term_end = contract["term_start"], contract["term_end"]
    lo = max(month.start, term_start) if term_start else None
    hi = min(x for x in (month.end, now, term_end) if x is not None)
    ids = [d["device_id"] for d in devs]
    expected = lo is not None and hi > lo
    spans = load_spans(db, ids, lo, hi) if expected and lo else []
    down = outages(spans, lo, hi, misses, default_interval, now) if expected and lo else []
    unprotected = _union(_clip([(s.start, s.end) for s in spans if not s.protecting], lo, hi)) \
        if expected and lo else []
    expected_s = _seconds(lo, hi) if expected and lo else 0
    down_s = sum(_seconds(a, b) for a, b in down)
    unprotected_s = sum(_seconds(a, b) for a, b in unprotected)
    checking_s = max(0, expected_s - down_s)
    protecting_s = max(0, checking_s - unprotected_s)
    with db.read() as conn:
        checkins = sum(conn.execute(select(checkin_months.c.checkins).where(and_(
            checkin_months.c.device_id.in_(ids or [""]), checkin_months.c.month == month.key))).scalars())
    intervals = sorted({s.interval for s in spans}) or [default_interval]
    listed = sorted([{"kind": "no_checkin", "start": a, "end": b} for a, b in down]
                    + [{"kind": "not_protecting", "start": a, "end": b} for a, b in unprotected],
                    key=lambda o: (o["start"], o["kind"]))
    return {
        "type": RECORD_TYPE,
        "version": RECORD_VERSION,
        "contract_id": contract_id,
        "month": month.key,
        "timezone": "Asia/Tokyo",
        "period": {"start": iso_z(month.start), "end": iso_z(month.end)},
        "expected": {"start": iso_z(lo) if expected and lo else None, "end": iso_z(hi) if expected else None,
                     "seconds": expected_s},
        "service_start": iso_z(term_start) if term_start else None,
        "devices": [{"device_id": d["device_id"], "serial": d["serial"],
                     "activated_at": iso_z(d["activated_at"]),
                     "revoked_at": iso_z(d["revoked_at"]) if d["revoked_at"] else None} for d in devs],
        "rule": {"outage_after_missed_checkins": misses,
                 "heartbeat_interval_s": [round(i) for i in intervals],
                 "protecting": "the box reports at least one ready data-plane worker"},
        "checkins": int(checkins),
        "checking_in_seconds": checking_s,
        "protecting_seconds": protecting_s,
        "outage_seconds": down_s,
        "not_protecting_seconds": unprotected_s,
        "availability_ppm": checking_s * PPM // expected_s if expected_s else None,
        "protecting_ppm": protecting_s * PPM // expected_s if expected_s else None,
        "availability_percent": percent_text(checking_s * PPM // expected_s) if expected_s else None,
        "protecting_percent": percent_text(protecting_s * PPM // expected_s) if expected_s else None,
        "outages": [{"kind": o["kind"], "start": iso_z(o["start"]), "end": iso_z(o["end"]),
                     "seconds": _seconds(o["start"], o["end"])} for o in listed],
        "days": _days(month, lo, hi, down, unprotected) if expected and lo else [],
    }


def _days(month: Month, lo: dt.datetime, hi: dt.datetime, down: list[Interval],
          unprotected: list[Interval]) -> list[dict[str, Any]]:
    out = []
    for i in range(month.days):
        a, b = month.day_start(i), month.day_start(i + 1)
        a2, b2 = max(a, lo), min(b, hi)
        exp = _seconds(a2, b2) if b2 > a2 else 0
        d = sum(_seconds(x, y) for x, y in _clip(down, a2, b2)) if exp else 0
        u = sum(_seconds(x, y) for x, y in _clip(unprotected, a2, b2)) if exp else 0
        out.append({"date": f"{month.key}-{i + 1:02d}", "expected_seconds": exp, "checking_in_seconds": exp - d,
                    "protecting_seconds": max(0, exp - d - u)})
    return out
