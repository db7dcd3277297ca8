"""Alarm ingest, idempotent by (device, event_id): one ``INSERT ... ON CONFLICT DO NOTHING`` per batch.

The unique constraint does the deduplication, so concurrent re-sends of the same batch (a retry
racing a slow first attempt, two workers) store each event once on SQLite and on PostgreSQL alike;
``accepted`` is the number of rows the insert really added (``RETURNING``; rowcount is not
reliable for multi-row inserts on every driver).

Per-device storage quota: each device may store ``alarm_quota_events`` alarms and
``alarm_quota_bytes`` bytes of alarm batches per UTC day (table ``alarm_usage``). Once a device is
over either, its batches get 429 ``quota_exceeded`` with ``Retry-After`` until the next UTC day; the
refusals are counted in the same table (``vcr-opscenter devices`` and the operator page show them)
and the first refusal of a day is recorded as an ``alarm_quota`` device event.
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection

from opscenter.db import Database, alarm_usage, alarms, device_events, iso, utcnow

log = logging.getLogger("vcr-opscenter")


def _signature(event: dict[str, Any]) -> str | None:
    alert = event.get("alert")
    if isinstance(alert, dict) and isinstance(alert.get("signature"), str):
        return alert["signature"][:1000]
    return None


def _ingest_stmt(db: Database) -> Any:
    return (db.insert(alarms).on_conflict_do_nothing(index_elements=[alarms.c.device_id, alarms.c.event_id])
            .returning(alarms.c.event_id))


def ingest(db: Database, device_id: str, events: list[dict[str, Any]],
           conn: Connection | None = None, *, stored: list[dict[str, Any]] | None = None) -> dict[str, int]:
    """Store a batch; ``events`` are ``{"event_id", "severity", "event"}``. Returns accepted/duplicates.
    ``stored``, if given, receives the events that were new (not duplicates)."""
    now = utcnow()
    rows: dict[str, dict[str, Any]] = {}
    for e in events:  # repeats inside one batch count as duplicates too
        ev = e["event"]
        rows.setdefault(e["event_id"], {
            "device_id": device_id,
            "event_id": e["event_id"],
            "severity": e.get("severity"),
            "event_type": str(ev.get("event_type") or "")[:32] or None,
            "signature": _signature(ev),
            "received_at": now,
            "event": ev,
        })
    if not rows:
        return {"accepted": 0, "duplicates": 0}
    with db.write(conn) as conn:
        # executemany of one cached statement; SQLAlchemy batches it into multi-row INSERTs
        # ("insertmanyvalues") and RETURNING lists exactly the rows inserted.
        new = conn.execute(db.stmt("alarms", _ingest_stmt), list(rows.values())).scalars().all()
    accepted = len(new)
    if stored is not None and new:
        fresh = set(new)
        for e in events:
            if e["event_id"] in fresh:  # the first of repeats inside the batch, like the insert
                fresh.discard(e["event_id"])
                stored.append(e)
    return {"accepted": accepted, "duplicates": len(events) - accepted}


def count(db: Database, device_id: str | None = None) -> int:
    q = select(func.count()).select_from(alarms)
    if device_id:
        q = q.where(alarms.c.device_id == device_id)
    with db.read() as conn:
        return int(conn.execute(q).scalar() or 0)


def recent(db: Database, *, device_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The newest alarms first."""
    q = select(alarms).order_by(alarms.c.id.desc()).limit(limit)
    if device_id:
        q = q.where(alarms.c.device_id == device_id)
    with db.read() as conn:
        rows = conn.execute(q).mappings().all()
    return [{
        "id": r["id"],
        "device_id": r["device_id"],
        "event_id": r["event_id"],
        "severity": r["severity"],
        "event_type": r["event_type"],
        "signature": r["signature"],
        "received_at": iso(r["received_at"]),
        "event": r["event"],
    } for r in rows]


def day_of(now: dt.datetime) -> str:
    return now.strftime("%Y-%m-%d")


def seconds_to_next_day(now: dt.datetime) -> float:
    tomorrow = (now + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1.0, (tomorrow - now).total_seconds())


def over_quota(conn: Connection, device_id: str, day: str, max_events: int, max_bytes: int) -> str | None:
    """Why the device may store no more alarms today (a message), or None. 0 turns a quota off."""
    if max_events <= 0 and max_bytes <= 0:
        return None
    row = conn.execute(select(alarm_usage.c.events, alarm_usage.c.bytes).where(and_(
        alarm_usage.c.device_id == device_id, alarm_usage.c.day == day))).first()
    if row is None:
        return None
    if max_events > 0 and row[0] >= max_events:
        return f"{row[0]} alarms stored today (quota {max_events} per device per day)"
    if max_bytes > 0 and row[1] >= max_bytes:
        return f"{row[1]} bytes of alarms stored today (quota {max_bytes} per device per day)"
    return None


def _bump(db: Database, conn: Connection, device_id: str, day: str, **add: int) -> Any:
    cols = ("events", "bytes", "refused_batches", "refused_events")
    values = {c: int(add.get(c, 0)) for c in cols}
    ins = db.insert(alarm_usage).values(device_id=device_id, day=day, **values)
    up = ins.on_conflict_do_update(index_elements=[alarm_usage.c.device_id, alarm_usage.c.day],
                                   set_={c: getattr(alarm_usage.c, c) + getattr(ins.excluded, c) for c in cols})
    return conn.execute(up.returning(alarm_usage.c.refused_batches)).scalar()


def record_usage(db: Database, conn: Connection, device_id: str, day: str, events: int, nbytes: int) -> None:
    if events:
        _bump(db, conn, device_id, day, events=events, bytes=nbytes)


def record_refusal(db: Database, conn: Connection, device_id: str, day: str, events: int, reason: str,
                   now: dt.datetime) -> None:
    """Count a refused batch; the first refusal of the day becomes an ``alarm_quota`` device event."""
    if _bump(db, conn, device_id, day, refused_batches=1, refused_events=events) == 1:
        log.warning("device %s is over its alarm quota: %s; its alarm batches are refused until the next UTC day",
                    device_id, reason)
        conn.execute(device_events.insert().values(device_id=device_id, kind="alarm_quota", at=now,
                                                   detail={"day": day, "reason": reason}))


def usage(db: Database, day: str | None = None) -> dict[str, dict[str, Any]]:
    """Today's (or ``day``'s) alarm usage per device: events, bytes, refused_batches, refused_events."""
    day = day or day_of(utcnow())
    with db.read() as conn:
        rows = conn.execute(select(alarm_usage).where(alarm_usage.c.day == day)).mappings().all()
    return {r["device_id"]: {k: r[k] for k in ("day", "events", "bytes", "refused_batches", "refused_events")}
            for r in rows}


def prune_usage(db: Database, keep_days: int = 31) -> int:
    cutoff = day_of(utcnow() - dt.timedelta(days=keep_days))
    with db.write() as conn:
        return conn.execute(alarm_usage.delete().where(alarm_usage.c.day < cutoff)).rowcount or 0
