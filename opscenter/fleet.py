"""Check-ins, tasks, desired versions and offline detection.

A box is offline once it has missed ``offline_after_missed`` check-ins (that many times the interval
it was told). ``device_state`` computes that on read; ``sweep_offline`` records the transition as an
``offline`` device event (a check-in afterwards records ``online``). Both are race-free across
worker processes: a transition is a conditional UPDATE and only the winner writes the event.
"""
from __future__ import annotations

import datetime as dt
import math
from typing import Any

from sqlalchemy import and_, bindparam, delete, select, update
from sqlalchemy.engine import Connection

from opscenter.db import (
    Database,
    alarms,
    checkins,
    desired,
    device_events,
    devices,
    health,
    iso,
    tasks,
    utcnow,
)
from opscenter.enroll import DeviceAuth
from opscenter.errors import CenterError
from opscenter.report.recording import record_checkin

TASK_OPEN = ("queued", "delivered")  # delivered in each check-in reply until the box reports a status


INT_MAX = 2**31 - 1  # INTEGER columns (32 bits on PostgreSQL): larger reported numbers are not stored
ID_MAX = 2**63 - 1  # BIGINT ids


def _num(v: Any) -> float | None:
    """A reported number for a float column: None unless it is a finite number."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except OverflowError:  # an integer beyond the float range
        return None
    return f if math.isfinite(f) else None


def _int(v: Any) -> int | None:
    """A reported integer for an INTEGER column: None unless it fits."""
    return v if isinstance(v, int) and not isinstance(v, bool) and -INT_MAX - 1 <= v <= INT_MAX else None


PRUNE_EVERY = 10  # check-ins between trims of a device's history


def _stmts_checkin(db: Database) -> dict[str, Any]:
    b = bindparam
    up = db.insert(health).values(device_id=b("d"), received_at=b("now"), body=b("body", type_=health.c.body.type))
    return {
        "back_online": update(devices).where(and_(devices.c.device_id == b("d"), devices.c.status != "online"))
        .values(status="online", status_changed_at=b("now")),
        "online_event": device_events.insert().values(device_id=b("d"), kind="online", at=b("now"), detail={}),
        "touch": update(devices).where(devices.c.device_id == b("d")).values(
            last_checkin_at=b("now"), last_ip=b("ip"), heartbeat_interval=b("interval"), agent_version=b("ver"),
            config_revision=b("rev"), checkins=devices.c.checkins + 1).returning(devices.c.checkins),
        "health": up.on_conflict_do_update(index_elements=[health.c.device_id],
                                           set_={"received_at": up.excluded.received_at, "body": up.excluded.body}),
        "history": checkins.insert().values(
            device_id=b("d"), received_at=b("now"), sent_at=b("sent"), cpu_percent=b("cpu"),
            memory_percent=b("mem"), disk_percent=b("disk"), uptime_s=b("up"), spool_pending=b("pending"),
            portcheck_ok=b("pc")),
        "prune": delete(checkins).where(and_(checkins.c.device_id == b("d"), checkins.c.id < (
            select(checkins.c.id).where(checkins.c.device_id == b("d")).order_by(checkins.c.id.desc())
            .offset(b("keep")).limit(1).scalar_subquery()))),
        "tasks": select(tasks.c.task_id, tasks.c.kind, tasks.c.params, tasks.c.status)
        .where(and_(tasks.c.device_id == b("d"), tasks.c.status.in_(TASK_OPEN))).order_by(tasks.c.task_id),
        "desired": select(desired.c.scope, desired.c.body).where(desired.c.scope.in_(("*", b("d")))),
    }


def checkin(db: Database, auth: DeviceAuth, body: dict[str, Any], *, client_ip: str | None, interval: float,
            history: int, conn: Connection | None = None, misses: int = 3) -> dict[str, Any]:
    """Record a check-in; return the reply body (server_time, next_checkin, desired, tasks, license).

    ``misses`` (``offline_after_missed``) is the outage rule of the operating record: a check-in later
    than that many intervals after the previous one starts a new span (opscenter/report/recording.py)."""

    st = db.stmt("checkin", _stmts_checkin)
    now = utcnow()
    d = auth.device_id
    h = body.get("health") if isinstance(body.get("health"), dict) else {}
    spool = body.get("spool") if isinstance(body.get("spool"), dict) else {}
    pc = body.get("portcheck") if isinstance(body.get("portcheck"), dict) else None
    rev = body.get("config_revision")
    with db.write(conn) as conn:
        # The status the token lookup saw decides whether a transition is due; the conditional UPDATE
        # makes it exact (only one writer records the "online" event).
        if auth.status != "online" and conn.execute(st["back_online"], {"d": d, "now": now}).rowcount:
            conn.execute(st["online_event"], {"d": d, "now": now})
        count = conn.execute(st["touch"], {
            "d": d, "now": now, "ip": client_ip, "interval": interval,
            "ver": str(body.get("agent_version") or "")[:64] or None,
            "rev": _int(rev)}).scalar()
        conn.execute(st["health"], {"d": d, "now": now, "body": body})
        conn.execute(st["history"], {
            "d": d, "now": now, "sent": str(body.get("sent_at") or "")[:40] or None,
            "cpu": _num(h.get("cpu_percent")), "mem": _num(h.get("memory_percent")),
            "disk": _num(h.get("disk_percent")), "up": _num(h.get("uptime_s")),
            "pending": _int(spool.get("pending")),
            "pc": None if pc is None or not isinstance(pc.get("ok"), bool) else int(pc["ok"])})
        if history <= PRUNE_EVERY or (count or 0) % PRUNE_EVERY == 0:
            conn.execute(st["prune"], {"d": d, "keep": history - 1})
        record_checkin(db, conn, d, now, body, interval=interval, misses=misses)
        open_tasks = conn.execute(st["tasks"], {"d": d}).all()
        fresh = [t[0] for t in open_tasks if t[3] == "queued"]
        if fresh:
            conn.execute(update(tasks).where(tasks.c.task_id.in_(fresh)).values(status="delivered", updated_at=now))
        want = _desired(dict(conn.execute(st["desired"], {"d": d}).all()), d)
    return {
        "server_time": iso(now),
        "next_checkin": interval,
        "desired": want,
        "tasks": [{"task_id": t[0], "kind": t[1], "params": t[2]} for t in open_tasks],
        "license": {"term_start": iso(auth.term_start), "term_end": iso(auth.term_end)},
    }


def _desired(rows: dict[str, Any], device_id: str) -> dict[str, Any]:
    out: dict[str, Any] = {"agent_version": None, "config_revision": None, "signatures": {}}
    for scope in ("*", device_id):
        body = rows.get(scope) or {}
        for k in ("agent_version", "config_revision"):
            if body.get(k) is not None:
                out[k] = body[k]
        out["signatures"].update(body.get("signatures") or {})
    return out


def set_desired(db: Database, scope: str, *, agent_version: str | None = None, config_revision: int | None = None,
                signatures: dict[str, str] | None = None) -> dict[str, Any]:
    """Merge desired versions for ``scope`` ("*" = every box, or a device id)."""
    from opscenter.schemas import MAX_REVISION

    if config_revision is not None and not 0 <= config_revision <= MAX_REVISION:
        raise ValueError(f"config_revision must be from 0 to {MAX_REVISION}")
    now = utcnow()
    with db.write() as conn:
        body = dict(conn.execute(select(desired.c.body).where(desired.c.scope == scope)).scalar() or {})
        if agent_version is not None:
            body["agent_version"] = agent_version
        if config_revision is not None:
            body["config_revision"] = config_revision
        if signatures:
            body["signatures"] = {**(body.get("signatures") or {}), **signatures}
        up = db.insert(desired).values(scope=scope, body=body, updated_at=now)
        conn.execute(up.on_conflict_do_update(index_elements=[desired.c.scope], set_={"body": body, "updated_at": now}))
    return body


def add_task(db: Database, device_id: str, kind: str, params: dict[str, Any]) -> int:
    """Queue a task. A ``config`` task must carry ``params.revision``, an integer 0..2^31-1: it is the
    revision the box backs up afterwards, and the only kind of revision the center stores a backup of."""
    from opscenter.schemas import MAX_REVISION

    now = utcnow()
    with db.write() as conn:
        if conn.execute(select(devices.c.device_id).where(devices.c.device_id == device_id)).first() is None:
            raise LookupError(f"no device {device_id!r}")
        if not kind or len(kind) > 64:
            raise ValueError("a task kind is 1-64 characters")
        if kind == "config":
            rev = params.get("revision")
            if not isinstance(rev, int) or isinstance(rev, bool) or not 0 <= rev <= MAX_REVISION:
                raise ValueError(f"a config task needs params.revision, an integer from 0 to {MAX_REVISION}")
        r = conn.execute(tasks.insert().values(device_id=device_id, kind=kind, params=params, status="queued",
                                               detail="", created_at=now, updated_at=now))
        return int(r.inserted_primary_key[0])


def task_status(db: Database, auth: DeviceAuth, task_id: int, status: str, detail: str) -> dict[str, Any]:
    if not 0 <= task_id <= ID_MAX:  # no such id can exist (and the database cannot compare it)
        raise CenterError(404, "not_found", f"no task {task_id} for this device")
    now = utcnow()
    with db.write() as conn:
        r = conn.execute(update(tasks).where(and_(tasks.c.task_id == task_id, tasks.c.device_id == auth.device_id))
                         .values(status=status, detail=detail[:4000], updated_at=now))
        if r.rowcount != 1:
            raise CenterError(404, "not_found", f"no task {task_id} for this device")
    return {}


def list_tasks(db: Database, device_id: str | None = None) -> list[dict[str, Any]]:
    q = select(tasks).order_by(tasks.c.task_id)
    if device_id:
        q = q.where(tasks.c.device_id == device_id)
    with db.read() as conn:
        rows = conn.execute(q).mappings().all()
    return [{**dict(r), "created_at": iso(r["created_at"]), "updated_at": iso(r["updated_at"])} for r in rows]


def device_state(revoked_at: dt.datetime | None, last_checkin_at: dt.datetime | None, activated_at: dt.datetime,
                 interval: float, misses: int, now: dt.datetime) -> str:
    """online / offline / revoked, computed now (a box that never checked in counts from its activation)."""
    if revoked_at is not None:
        return "revoked"
    ref = last_checkin_at or activated_at
    return "offline" if (now - ref).total_seconds() > misses * interval else "online"


def sweep_offline(db: Database, misses: int) -> list[str]:
    """Mark boxes that missed ``misses`` check-ins offline and record an ``offline`` event for each."""
    now = utcnow()
    went: list[str] = []
    with db.read() as conn:
        cand = conn.execute(select(devices.c.device_id, devices.c.last_checkin_at, devices.c.activated_at,
                                   devices.c.heartbeat_interval)
                            .where(and_(devices.c.status == "online", devices.c.revoked_at.is_(None)))).all()
    for device_id, last, activated, interval in cand:
        if device_state(None, last, activated, interval, misses, now) != "offline":
            continue
        with db.write() as conn:
            ref = devices.c.last_checkin_at == last if last is not None else devices.c.last_checkin_at.is_(None)
            r = conn.execute(update(devices).where(and_(devices.c.device_id == device_id,
                                                        devices.c.status == "online", ref))
                             .values(status="offline", status_changed_at=now))
            if r.rowcount:
                conn.execute(device_events.insert().values(
                    device_id=device_id, kind="offline", at=now,
                    detail={"last_checkin": iso(last), "missed": misses, "interval": interval}))
                went.append(device_id)
    return went


def prune_alarms(db: Database, retention_days: int) -> int:
    if retention_days <= 0:
        return 0
    cutoff = utcnow() - dt.timedelta(days=retention_days)
    with db.write() as conn:
        return conn.execute(delete(alarms).where(alarms.c.received_at < cutoff)).rowcount or 0
