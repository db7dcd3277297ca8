"""What the panel and the console read and write. Every customer-side function takes the contract id
of the session and filters by it in SQL (alarms through the devices of the contract), so a customer
can reach nothing of another contract, whatever id is in the URL: an id of another contract is
"not found", exactly like an id that does not exist.
"""
from __future__ import annotations

import datetime as dt
import re
from typing import Any, Iterable

from sqlalchemy import and_, func, or_, select, update

from opscenter.db import (
    Database,
    alarm_notes,
    alarm_triage,
    alarms,
    change_requests,
    contracts,
    desired,
    devices,
    health,
    installation_confirmations,
    replacement_requests,
    tasks,
    utcnow,
)
from opscenter.fleet import device_state
from opscenter.panel import bizdays
from opscenter.views import health_summary, portcheck_summary

TRIAGE_STATUSES = ("new", "ack", "closed")
CHANGE_CATEGORIES = ("web_allow", "web_block", "firewall", "other")
CHANGE_STATUSES = ("received", "in_progress", "applying", "done", "rejected", "cancelled")
CHANGE_OPEN = ("received", "in_progress", "applying")
CHANGE_NOT_COUNTED = ("rejected", "cancelled")  # do not use up the month's quota
REPLACEMENT_STATUSES = ("received", "code_issued", "shipped", "closed", "cancelled")
REPLACEMENT_OPEN = ("received", "code_issued", "shipped")
NEW_ALARM_DAYS = 30


class NotFound(LookupError):
    """No such row for this caller (also: it belongs to another contract)."""


class Refused(ValueError):
    """A request the rules do not allow (message key for the page, plus values)."""

    def __init__(self, key: str, **values: Any) -> None:
        super().__init__(key)
        self.key = key
        self.values = values


# boxes -------------------------------------------------------------------------------------------

_SIG_DATE = re.compile(r"(20\d\d)[.\-]?(\d\d)[.\-]?(\d\d)")


def signature_age_days(version: Any, today: dt.date) -> int | None:
    """Days since the date in a signature version (``2026.11.25.1``, ``20261125``), or None."""
    m = _SIG_DATE.search(str(version)) if isinstance(version, (str, int)) else None
    if not m:
        return None
    try:
        return (today - dt.date(int(m[1]), int(m[2]), int(m[3]))).days
    except ValueError:
        return None


def signature_freshness(sigs: dict[str, Any], wanted: dict[str, Any], today: dt.date,
                        stale_days: int = 3) -> dict[str, Any]:
    """``{"state": fresh|stale|behind|unknown, "oldest_days", "items": [{name, version, age, wanted}]}``."""
    items = []
    state = "fresh" if sigs else "unknown"
    oldest = None
    for name in sorted(set(sigs) | set(wanted)):
        ver = sigs.get(name)
        age = signature_age_days(ver, today) if ver is not None else None
        want = wanted.get(name)
        items.append({"name": name, "version": ver, "age": age, "wanted": want})
        if age is not None:
            oldest = age if oldest is None else max(oldest, age)
            if age > stale_days and state == "fresh":
                state = "stale"
        if want is not None and str(want) != str(ver):
            state = "behind"
    if sigs and oldest is None and state == "fresh":
        state = "unknown"
    return {"state": state, "oldest_days": oldest, "items": items}


def _wanted(conn: Any, device_id: str) -> dict[str, Any]:
    out: dict[str, Any] = {"agent_version": None, "signatures": {}}
    rows = dict(conn.execute(select(desired.c.scope, desired.c.body)
                             .where(desired.c.scope.in_(("*", device_id)))).all())
    for scope in ("*", device_id):
        body = rows.get(scope) or {}
        if body.get("agent_version"):
            out["agent_version"] = body["agent_version"]
        out["signatures"].update(body.get("signatures") or {})
    return out


def box_view(conn: Any, row: Any, misses: int, now: dt.datetime) -> dict[str, Any]:
    """One device row (with health body) as the panel and the console show it."""
    body = row["body"] if isinstance(row.get("body"), dict) else None
    state = device_state(row["revoked_at"], row["last_checkin_at"], row["activated_at"],
                         row["heartbeat_interval"], misses, now)
    sigs = (body or {}).get("signatures")
    sigs = {str(k): v for k, v in sigs.items() if isinstance(v, (str, int, float)) and not isinstance(v, bool)} \
        if isinstance(sigs, dict) else {}
    wanted = _wanted(conn, row["device_id"])
    pc = portcheck_summary(body)
    confirmed = conn.execute(select(installation_confirmations.c.status).where(
        installation_confirmations.c.device_id == row["device_id"])).scalar() == "confirmed"
    return {
        "device_id": row["device_id"], "contract_id": row["contract_id"], "serial": row["serial"],
        "hostname": row["hostname"], "status": state, "last_checkin": row["last_checkin_at"],
        "activated_at": row["activated_at"], "revoked_at": row["revoked_at"],
        "health": health_summary(body), "portcheck": pc, "agent_version": row["agent_version"],
        "config_revision": row["config_revision"], "wanted_agent": wanted["agent_version"],
        "signatures": signature_freshness(sigs, wanted["signatures"], bizdays.japan_date(now)),
        # the center's remote installation confirmation (opscenter/confirm.py) was recorded
        "confirmed": confirmed,
    }


def _devices_query() -> Any:
    return (select(devices, health.c.body)
            .select_from(devices.outerjoin(health, health.c.device_id == devices.c.device_id)))


def contract_box(db: Database, contract_id: str, misses: int, now: dt.datetime | None = None) -> dict[str, Any] | None:
    """The box the contract is bound to now, or None before activation."""
    now = now or utcnow()
    with db.read() as conn:
        c = conn.execute(select(contracts).where(contracts.c.contract_id == contract_id)).mappings().first()
        if c is None or not c["device_id"]:
            return None
        row = conn.execute(_devices_query().where(and_(devices.c.device_id == c["device_id"],
                                                       devices.c.contract_id == contract_id))).mappings().first()
        return box_view(conn, row, misses, now) if row else None


def contract(db: Database, contract_id: str) -> dict[str, Any] | None:
    with db.read() as conn:
        row = conn.execute(select(contracts).where(contracts.c.contract_id == contract_id)).mappings().first()
    return dict(row) if row else None


def fleet(db: Database, misses: int, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Every active box, offline first, then not confirmed, then the rest (by contract)."""
    now = now or utcnow()
    with db.read() as conn:
        rows = conn.execute(_devices_query().where(devices.c.revoked_at.is_(None))
                            .order_by(devices.c.contract_id)).mappings().all()
        boxes = [box_view(conn, r, misses, now) for r in rows]
        # untriaged alarms of the last NEW_ALARM_DAYS days (bounded: a box may send 200,000 a day)
        open_alarms = dict(conn.execute(
            select(alarms.c.device_id, func.count()).select_from(
                alarms.outerjoin(alarm_triage, alarm_triage.c.alarm_id == alarms.c.id))
            .where(and_(alarms.c.received_at >= now - dt.timedelta(days=NEW_ALARM_DAYS),
                        or_(alarm_triage.c.status.is_(None), alarm_triage.c.status == "new")))
            .group_by(alarms.c.device_id)).all())
    rank = {"offline": 0}
    for b in boxes:
        b["new_alarms"] = int(open_alarms.get(b["device_id"], 0))
    boxes.sort(key=lambda b: (rank.get(b["status"], 2 if b["confirmed"] else 1), b["contract_id"]))
    return boxes


# alarms ------------------------------------------------------------------------------------------

def _alarm_dict(r: Any) -> dict[str, Any]:
    return {"id": int(r["id"]), "device_id": r["device_id"], "contract_id": r["contract_id"],
            "severity": r["severity"], "event_type": r["event_type"], "signature": r["signature"],
            "received_at": r["received_at"], "event": r["event"] if isinstance(r["event"], dict) else {},
            "status": r["status"] or "new", "note": r["note"] or "", "triaged_by": r["updated_by"],
            "triaged_at": r["updated_at"]}


def _alarms_query() -> Any:
    return (select(alarms.c.id, alarms.c.device_id, devices.c.contract_id, alarms.c.severity, alarms.c.event_type,
                   alarms.c.signature, alarms.c.received_at, alarms.c.event, alarm_triage.c.status,
                   alarm_triage.c.note, alarm_triage.c.updated_by, alarm_triage.c.updated_at)
            .select_from(alarms.join(devices, devices.c.device_id == alarms.c.device_id)
                         .outerjoin(alarm_triage, alarm_triage.c.alarm_id == alarms.c.id)))


def contract_alarms(db: Database, contract_id: str, *, limit: int = 50, offset: int = 0,
                    since: dt.datetime | None = None, until: dt.datetime | None = None) -> list[dict[str, Any]]:
    q = _alarms_query().where(devices.c.contract_id == contract_id)
    if since:
        q = q.where(alarms.c.received_at >= since)
    if until:
        q = q.where(alarms.c.received_at < until)
    with db.read() as conn:
        rows = conn.execute(q.order_by(alarms.c.id.desc()).limit(limit).offset(offset)).mappings().all()
    return [_alarm_dict(r) for r in rows]


def count_contract_alarms(db: Database, contract_id: str, since: dt.datetime, until: dt.datetime) -> int:
    q = (select(func.count()).select_from(alarms.join(devices, devices.c.device_id == alarms.c.device_id))
         .where(and_(devices.c.contract_id == contract_id, alarms.c.received_at >= since,
                     alarms.c.received_at < until)))
    with db.read() as conn:
        return int(conn.execute(q).scalar() or 0)


def _first(db: Database, q: Any, key: int) -> Any:
    """The first row of ``q`` (a mapping), or NotFound(``key``)."""
    with db.read() as conn:
        row = conn.execute(q).mappings().first()
    if row is None:
        raise NotFound(key)
    return row


def alarm(db: Database, alarm_id: int, contract_id: str | None) -> dict[str, Any]:
    """One alarm; with ``contract_id`` only if it is that contract's (else NotFound)."""
    q = _alarms_query().where(alarms.c.id == alarm_id)
    if contract_id is not None:
        q = q.where(devices.c.contract_id == contract_id)
    return _alarm_dict(_first(db, q, alarm_id))


def alarm_queue(db: Database, *, status: str = "open", contract_id: str | None = None,
                limit: int = 100) -> list[dict[str, Any]]:
    """The operators' queue, newest first: ``open`` (new and ack), one status, or ``all``."""
    q = _alarms_query()
    if status == "open":
        q = q.where(or_(alarm_triage.c.status.is_(None), alarm_triage.c.status != "closed"))
    elif status == "new":
        q = q.where(or_(alarm_triage.c.status.is_(None), alarm_triage.c.status == "new"))
    elif status in TRIAGE_STATUSES:
        q = q.where(alarm_triage.c.status == status)
    if contract_id:
        q = q.where(devices.c.contract_id == contract_id)
    with db.read() as conn:
        rows = conn.execute(q.order_by(alarms.c.id.desc()).limit(limit)).mappings().all()
    return [_alarm_dict(r) for r in rows]


def triage(db: Database, alarm_id: int, status: str, note: str, by: str) -> None:
    if status not in TRIAGE_STATUSES:
        raise Refused("bad_status")
    note = note.strip()[:4000]
    now = utcnow()
    with db.write() as conn:
        if conn.execute(select(alarms.c.id).where(alarms.c.id == alarm_id)).first() is None:
            raise NotFound(alarm_id)
        prev = conn.execute(select(alarm_triage.c.note).where(alarm_triage.c.alarm_id == alarm_id)).scalar()
        values = {"status": status, "note": note or (prev or ""), "updated_by": by, "updated_at": now}
        up = db.insert(alarm_triage).values(alarm_id=alarm_id, **values)
        conn.execute(up.on_conflict_do_update(index_elements=[alarm_triage.c.alarm_id], set_=values))
        conn.execute(alarm_notes.insert().values(alarm_id=alarm_id, status=status, note=note, by=by, at=now))


def notes(db: Database, alarm_id: int) -> list[dict[str, Any]]:
    with db.read() as conn:
        rows = conn.execute(select(alarm_notes).where(alarm_notes.c.alarm_id == alarm_id)
                            .order_by(alarm_notes.c.id)).mappings().all()
    return [dict(r) for r in rows]


# change requests -------------------------------------------------------------------------------

def quota(db: Database, contract_id: str, month: str, per_month: int) -> dict[str, Any]:
    with db.read() as conn:
        used = int(conn.execute(select(func.count()).select_from(change_requests).where(and_(
            change_requests.c.contract_id == contract_id, change_requests.c.month == month,
            change_requests.c.status.not_in(CHANGE_NOT_COUNTED)))).scalar() or 0)
    return {"month": month, "used": used, "limit": per_month,
            "left": None if per_month <= 0 else max(0, per_month - used)}


def create_change(db: Database, contract_id: str, *, category: str, summary: str, detail: str, by: str,
                  per_month: int, business_days: int, now: dt.datetime | None = None) -> dict[str, Any]:
    """File a change request: counted against the month (Japan time), due ``business_days`` later.
    The quota check and the insert are one write transaction, so two at once cannot both take the
    last one."""
    now = now or utcnow()
    summary, detail = summary.strip(), detail.strip()
    if category not in CHANGE_CATEGORIES:
        raise Refused("bad_category")
    if not summary or len(summary) > 200:
        raise Refused("bad_summary")
    if len(detail) > 4000:
        raise Refused("bad_detail")
    month = bizdays.month_of(now)
    due = bizdays.due_date(now, business_days)
    with db.write() as conn:
        if per_month > 0:
            used = int(conn.execute(select(func.count()).select_from(change_requests).where(and_(
                change_requests.c.contract_id == contract_id, change_requests.c.month == month,
                change_requests.c.status.not_in(CHANGE_NOT_COUNTED)))).scalar() or 0)
            if used >= per_month:
                raise Refused("quota_used", limit=per_month)
        device_id = conn.execute(select(contracts.c.device_id)
                                 .where(contracts.c.contract_id == contract_id)).scalar()
        r = conn.execute(change_requests.insert().values(
            contract_id=contract_id, device_id=device_id, category=category, summary=summary, detail=detail,
            status="received", created_by=by, created_at=now, month=month, due_date=due, operator_note="",
            updated_by=by, updated_at=now))
        rid = int(r.inserted_primary_key[0])
    return change(db, rid, contract_id)


def _change_dict(r: Any, task: Any = None) -> dict[str, Any]:
    d = dict(r)
    d["task_status"] = task["status"] if task is not None else None
    d["task_detail"] = task["detail"] if task is not None else None
    d["task_updated_at"] = task["updated_at"] if task is not None else None
    # what the customer sees: the box reporting the revision applied makes it done
    shown = d["status"]
    if shown == "applying" and d["task_status"] in ("applied", "done"):
        shown = "done"
    d["shown_status"] = shown
    d["overdue"] = shown in CHANGE_OPEN and bizdays.japan_date(utcnow()) > d["due_date"]
    return d


def _changes(conn: Any, where: Any, limit: int = 200) -> list[dict[str, Any]]:
    q = (select(change_requests, tasks.c.status.label("t_status"), tasks.c.detail.label("t_detail"),
                tasks.c.updated_at.label("t_updated"))
         .select_from(change_requests.outerjoin(tasks, tasks.c.task_id == change_requests.c.task_id))
         .order_by(change_requests.c.id.desc()).limit(limit))
    if where is not None:
        q = q.where(where)
    out = []
    for r in conn.execute(q).mappings().all():
        base = {k: r[k] for k in change_requests.c.keys()}
        task = {"status": r["t_status"], "detail": r["t_detail"], "updated_at": r["t_updated"]} \
            if r["task_id"] is not None and r["t_status"] is not None else None
        out.append(_change_dict(base, task))
    return out


def changes(db: Database, contract_id: str | None, *, status: str | None = None) -> list[dict[str, Any]]:
    """A contract's change requests (customers), or every contract's (``contract_id`` None: operators)."""
    conds = []
    if contract_id is not None:
        conds.append(change_requests.c.contract_id == contract_id)
    if status == "open":
        conds.append(change_requests.c.status.in_(CHANGE_OPEN))
    elif status in CHANGE_STATUSES:
        conds.append(change_requests.c.status == status)
    with db.read() as conn:
        return _changes(conn, and_(*conds) if conds else None)


def change(db: Database, request_id: int, contract_id: str | None) -> dict[str, Any]:
    cond = change_requests.c.id == request_id
    if contract_id is not None:
        cond = and_(cond, change_requests.c.contract_id == contract_id)
    with db.read() as conn:
        rows = _changes(conn, cond, 1)
    if not rows:
        raise NotFound(request_id)
    return rows[0]


def cancel_change(db: Database, request_id: int, contract_id: str, by: str) -> None:
    """The customer takes back a request nobody has started on (it then does not count)."""
    with db.write() as conn:
        r = conn.execute(update(change_requests).where(and_(
            change_requests.c.id == request_id, change_requests.c.contract_id == contract_id,
            change_requests.c.status == "received")).values(status="cancelled", updated_by=by, updated_at=utcnow()))
        if not r.rowcount:
            exists = conn.execute(select(change_requests.c.status).where(and_(
                change_requests.c.id == request_id, change_requests.c.contract_id == contract_id))).scalar()
            if exists is None:
                raise NotFound(request_id)
            raise Refused("not_cancellable")


def _set_request_status(db: Database, table: Any, request_id: int, status: str, note: str, by: str,
                        allowed: Iterable[str]) -> None:
    """An operator sets a change or replacement request's status (one of ``allowed``), with a note."""
    if status not in allowed:
        raise Refused("bad_status")
    values: dict[str, Any] = {"status": status, "updated_by": by, "updated_at": utcnow()}
    if note.strip():
        values["operator_note"] = note.strip()[:4000]
    with db.write() as conn:
        if not conn.execute(update(table).where(table.c.id == request_id).values(**values)).rowcount:
            raise NotFound(request_id)


def set_change_status(db: Database, request_id: int, status: str, note: str, by: str) -> None:
    _set_request_status(db, change_requests, request_id, status, note, by,
                        ("received", "in_progress", "done", "rejected"))


def mark_applying(db: Database, request_id: int, task_id: int, revision: int, by: str) -> None:
    with db.write() as conn:
        conn.execute(update(change_requests).where(change_requests.c.id == request_id).values(
            status="applying", task_id=task_id, revision=revision, updated_by=by, updated_at=utcnow()))


def next_revision(db: Database, device_id: str) -> int:
    """One more than the box's live revision and every revision sent to it."""
    with db.read() as conn:
        live = conn.execute(select(devices.c.config_revision).where(devices.c.device_id == device_id)).scalar()
        sent = [p.get("revision") for p in conn.execute(select(tasks.c.params).where(and_(
            tasks.c.device_id == device_id, tasks.c.kind == "config"))).scalars() if isinstance(p, dict)]
    revs = [r for r in [live, *sent] if isinstance(r, int) and not isinstance(r, bool)]
    return max(revs, default=0) + 1


# replacement requests ----------------------------------------------------------------------------

def create_replacement(db: Database, contract_id: str, *, symptom: str, contact: str, by: str) -> dict[str, Any]:
    symptom, contact = symptom.strip(), contact.strip()
    if not symptom or len(symptom) > 4000:
        raise Refused("bad_symptom")
    if len(contact) > 200:
        raise Refused("bad_contact")
    now = utcnow()
    with db.write() as conn:
        if conn.execute(select(replacement_requests.c.id).where(and_(
                replacement_requests.c.contract_id == contract_id,
                replacement_requests.c.status.in_(REPLACEMENT_OPEN)))).first() is not None:
            raise Refused("replacement_open")
        device_id = conn.execute(select(contracts.c.device_id)
                                 .where(contracts.c.contract_id == contract_id)).scalar()
        r = conn.execute(replacement_requests.insert().values(
            contract_id=contract_id, device_id=device_id, symptom=symptom, contact=contact, status="received",
            created_by=by, created_at=now, operator_note="", updated_by=by, updated_at=now))
        rid = int(r.inserted_primary_key[0])
    return replacement(db, rid, contract_id)


def replacements(db: Database, contract_id: str | None, *, status: str | None = None) -> list[dict[str, Any]]:
    q = select(replacement_requests).order_by(replacement_requests.c.id.desc()).limit(200)
    if contract_id is not None:
        q = q.where(replacement_requests.c.contract_id == contract_id)
    if status == "open":
        q = q.where(replacement_requests.c.status.in_(REPLACEMENT_OPEN))
    elif status in REPLACEMENT_STATUSES:
        q = q.where(replacement_requests.c.status == status)
    with db.read() as conn:
        return [dict(r) for r in conn.execute(q).mappings().all()]


def replacement(db: Database, request_id: int, contract_id: str | None) -> dict[str, Any]:
    q = select(replacement_requests).where(replacement_requests.c.id == request_id)
    if contract_id is not None:
        q = q.where(replacement_requests.c.contract_id == contract_id)
    return dict(_first(db, q, request_id))


def set_replacement_status(db: Database, request_id: int, status: str, note: str, by: str) -> None:
    _set_request_status(db, replacement_requests, request_id, status, note, by, REPLACEMENT_STATUSES)


def record_code_issued(db: Database, request_id: int, by: str, serial: str | None) -> None:
    now = utcnow()
    with db.write() as conn:
        conn.execute(update(replacement_requests).where(replacement_requests.c.id == request_id).values(
            status="code_issued", code_issued_at=now, code_issued_by=by, new_serial=serial, updated_by=by,
            updated_at=now))
