"""What each check-in leaves for the monthly report: the device's check-in spans (the operating record)
and its month row (check-in and port-check counts, engines that reported, heartbeat counters).

Called by :func:`opscenter.fleet.checkin` inside the check-in's own transaction. A span is a run of
check-ins each within ``misses`` x the heartbeat interval of the previous one, all reporting the same
protection state (the interval the center tells now: it changes only with the center's settings): the outage rule of the operating record (opscenter/report/operating.py) needs
nothing finer, so a month of a healthy box is one row instead of 44,640.

Heartbeat counters: cumulative counts the box reports (reset when its agent restarts). Each name
under ``mail`` at the top of the check-in (``{"mail": {"uninspected": 3}}`` is ``mail.uninspected``)
and each key starting with ``mail.`` in an engine's ``counters`` (``engines.NAME.counters``, summed over
the engines) is tracked; the month row keeps the sum of the increases (a value lower than the last
one is a restart: the value itself is the increase) and the last value. The first value ever seen
for a device only sets the baseline. A counter carried over from the month before is marked
``carried`` until the box reports it in this month: a box that stopped reporting it (its mail engine
turned off) has "not measured" for the month, not 0.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.engine import Connection

from opscenter.db import Database, checkin_months, checkin_spans
from opscenter.report.period import Month

MAX_COUNTERS = 32  # counter names tracked per check-in (the rest is ignored)
MAX_ENGINES = 64
MAX_NAME = 64
MAX_VALUE = 2**62


def protecting(body: dict[str, Any]) -> int:
    """0 when the box says no data-plane worker is ready (traffic not inspected), else 1."""
    h = body.get("health")
    agent = h.get("agent") if isinstance(h, dict) else None
    ready = agent.get("ready") if isinstance(agent, dict) else None
    if isinstance(ready, int) and not isinstance(ready, bool) and ready <= 0:
        return 0
    return 1


def _count(v: Any) -> int | None:
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_VALUE:
        return v
    return None


def heartbeat_counters(body: dict[str, Any]) -> dict[str, int]:
    """The tracked cumulative counters of a check-in body (see the module text)."""
    out: dict[str, int] = {}
    mail = body.get("mail")
    if isinstance(mail, dict):
        for k, v in mail.items():
            n = _count(v)
            if n is not None and isinstance(k, str) and len(out) < MAX_COUNTERS:
                out[f"mail.{k}"[:MAX_NAME]] = n
    engines = body.get("engines")
    if isinstance(engines, dict):
        for section in list(engines.values())[:MAX_ENGINES]:
            counters = section.get("counters") if isinstance(section, dict) else None
            if not isinstance(counters, dict):
                continue
            for k, v in counters.items():
                n = _count(v)
                if n is None or not isinstance(k, str) or not k.startswith("mail.") or len(k) > MAX_NAME:
                    continue
                if k in out or len(out) < MAX_COUNTERS:
                    out[k] = out.get(k, 0) + n
    return out


def _stmts(db: Database) -> dict[str, Any]:
    from sqlalchemy import bindparam as b
    from sqlalchemy import func

    s, m = checkin_spans.c, checkin_months.c
    latest = select(func.max(s.id)).where(s.device_id == b("d")).scalar_subquery()
    return {
        # the common case, one statement: the device's latest span, if recent enough and in the same state
        "extend": update(checkin_spans).where(and_(s.id == latest, s.protecting == b("p"), s.last_at >= b("cutoff")))
        .values(last_at=func.max(s.last_at, b("at")) if db.dialect == "sqlite" else func.greatest(s.last_at, b("at")),
                checkins=s.checkins + 1, interval=b("ivl")).returning(s.id),
        "start": checkin_spans.insert().values(device_id=b("d"), first_at=b("at"), last_at=b("at"), checkins=1,
                                               interval=b("ivl"), protecting=b("p")),
        "month": update(checkin_months).where(and_(m.device_id == b("d"), m.month == b("mon"))).values(
            checkins=m.checkins + 1, portcheck_ok=m.portcheck_ok + b("pc_ok"),
            portcheck_failed=m.portcheck_failed + b("pc_failed"), last_at=b("at")).returning(m.engines, m.counters),
    }


def record_checkin(db: Database, conn: Connection, device_id: str, now: dt.datetime, body: dict[str, Any], *,
                   interval: float, misses: int) -> None:
    """Extend or start the device's span and update its month row (in the caller's transaction).

    Usually two statements: the span's UPDATE and the month row's UPDATE ... RETURNING; the JSON of the
    month row is written again only when an engine or a counter changed."""
    st = db.stmt("report.recording", _stmts)
    p = protecting(body)
    cutoff = now - dt.timedelta(seconds=misses * interval)
    if conn.execute(st["extend"], {"d": device_id, "p": p, "cutoff": cutoff, "at": now, "ivl": interval}).first() is None:
        conn.execute(st["start"], {"d": device_id, "at": now, "ivl": interval, "p": p})
    _month_row(db, conn, device_id, now, body)


def _merge(engines: dict[str, Any], counters: dict[str, Any], body: dict[str, Any], seen: bool) -> bool:
    """Fold the check-in's engines and counters into the month row's (in place); True if they changed."""
    changed = False
    names = body.get("engines")
    if isinstance(names, dict):
        for name in list(names)[:MAX_ENGINES]:
            if isinstance(name, str) and name[:MAX_NAME] not in engines and len(engines) < MAX_ENGINES:
                engines[name[:MAX_NAME]] = 1
                changed = True
    for name, value in heartbeat_counters(body).items():
        c = counters.get(name)
        if c is None:
            if len(counters) >= MAX_COUNTERS:
                continue
            # never seen for this device: the baseline (a box seen before, gaining a counter, starts from 0)
            counters[name] = {"total": value if seen else 0, "last": value}
            changed = True
            continue
        last = int(c.get("last", 0))
        if value != last or c.get("carried"):
            counters[name] = {"total": int(c.get("total", 0)) + (value - last if value >= last else value), "last": value}
            changed = True
    return changed


def _month_row(db: Database, conn: Connection, device_id: str, now: dt.datetime, body: dict[str, Any]) -> None:
    m = checkin_months.c
    month = Month.of(now).key
    pc = body.get("portcheck")
    ok = pc.get("ok") if isinstance(pc, dict) else None
    row = conn.execute(db.stmt("report.recording", _stmts)["month"], {
        "d": device_id, "mon": month, "pc_ok": int(ok is True), "pc_failed": int(ok is False), "at": now}).first()
    if row is not None:
        engines, counters = dict(row[0] or {}), {k: dict(v) for k, v in (row[1] or {}).items() if isinstance(v, dict)}
        if _merge(engines, counters, body, True):
            conn.execute(update(checkin_months).where(and_(m.device_id == device_id, m.month == month))
                         .values(engines=engines, counters=counters))
        return
    # the first check-in of the month: counters continue from the latest month before
    prev = conn.execute(select(m.counters).where(and_(m.device_id == device_id, m.month < month))
                        .order_by(m.month.desc()).limit(1)).scalar()
    # (``carried``: not reported this month yet; the report says "not measured", not 0, until it is)
    counters = {k: {"total": 0, "last": v.get("last", 0), "carried": 1} for k, v in (prev or {}).items()
                if isinstance(v, dict)}
    engines: dict[str, Any] = {}
    _merge(engines, counters, body, prev is not None)
    # a concurrent first check-in of the month (PostgreSQL) wins; this one's counts are then lost
    conn.execute(db.insert(checkin_months).values(
        device_id=device_id, month=month, checkins=1, portcheck_ok=int(ok is True), portcheck_failed=int(ok is False),
        engines=engines, counters=counters, first_at=now, last_at=now)
        .on_conflict_do_nothing(index_elements=[m.device_id, m.month]))
