"""Alarm ingest, idempotent by (device, event_id): one ``INSERT ... ON CONFLICT DO NOTHING`` per batch.

The unique constraint does the deduplication, so concurrent re-sends of the same batch (a retry
racing a slow first attempt, two workers) store each event once on SQLite and on PostgreSQL alike;
``accepted`` is the number of rows the insert really added (``RETURNING``; rowcount is not
reliable for multi-row inserts on every driver).
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from opscenter.db import Database, alarms, iso, utcnow


def _signature(event: dict[str, Any]) -> str | None:
    alert = event.get("alert")
    if isinstance(alert, dict) and isinstance(alert.get("signature"), str):
        return alert["signature"][:1000]
    return None


def _ingest_stmt(db: Database) -> Any:
    return (db.insert(alarms).on_conflict_do_nothing(index_elements=[alarms.c.device_id, alarms.c.event_id])
            .returning(alarms.c.id))


def ingest(db: Database, device_id: str, events: list[dict[str, Any]],
           conn: Connection | None = None) -> dict[str, int]:
    """Store a batch; ``events`` are ``{"event_id", "severity", "event"}``. Returns accepted/duplicates."""
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
        accepted = len(conn.execute(db.stmt("alarms", _ingest_stmt), list(rows.values())).all())
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
