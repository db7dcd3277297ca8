"""Contracts, activation codes, activation (with the explicit replacement flow), token auth and config backups.

A code is single-use: it is claimed with a conditional UPDATE inside the activation transaction, so
two concurrent activations with one code cannot both succeed. A contract is bound to one box; a
second box gets 409 ``already_activated`` unless it brings a replacement code from the operator
(``vcr-opscenter replace``), which moves the contract and revokes the old box's token.

Config backups are trusted only as far as the center can check them (the blob is encrypted by the
box): a backup's revision must be a config revision the center sent to that box (a ``config`` task
delivered to it), and a box whose contract has a replacement code issued after its activation may
not store backups any more (it may be the stolen box the replacement is for). Restore, and the
count of revisions kept, look only at backups that pass both tests, so a revision number planted
before these checks existed neither wins the restore nor pushes real revisions out.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, select, update
from sqlalchemy.engine import Connection

from opscenter.db import (
    Database,
    activation_codes,
    backups,
    contract_secrets,
    contracts,
    device_events,
    devices,
    iso,
    tasks,
    utcnow,
)
from opscenter.errors import CenterError
from opscenter.schemas import MAX_REVISION
from opscenter.textsafe import check_plain

log = logging.getLogger("vcr-opscenter")



def _backup_secret(conn: Any, db: Database, contract_id: str, now: dt.datetime) -> str:
    """The contract's backup secret, created on first use (race-free: insert-or-ignore, then read)."""
    conn.execute(db.insert(contract_secrets).values(contract_id=contract_id, backup_secret=secrets.token_urlsafe(32),
                                                    created_at=now).on_conflict_do_nothing(
        index_elements=[contract_secrets.c.contract_id]))
    return str(conn.execute(select(contract_secrets.c.backup_secret)
                            .where(contract_secrets.c.contract_id == contract_id)).scalar_one())

# Crockford's base32 without I, L, O, U: easy to read out over the phone.
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def normalize_code(code: str) -> str:
    return "".join(c for c in code.upper() if c not in "- \t")


def new_code() -> str:
    """16 characters (80 bits) in groups of four: ``7K3M-Q9XA-...``."""
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(16))
    return "-".join(raw[i:i + 4] for i in range(0, 16, 4))


def new_token() -> str:
    return secrets.token_urlsafe(32)


def new_device_id() -> str:
    return "dev-" + secrets.token_hex(6)


@dataclass(frozen=True)
class IssuedCode:
    code: str
    contract_id: str
    serial: str | None
    kind: str
    expires_at: dt.datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "contract_id": self.contract_id, "serial": self.serial, "kind": self.kind,
                "expires_at": iso(self.expires_at)}


@dataclass(frozen=True)
class DeviceAuth:
    """The device behind a bearer token."""

    device_id: str
    contract_id: str
    serial: str
    heartbeat_interval: float
    status: str
    term_start: dt.datetime | None = None
    term_end: dt.datetime | None = None


def issue_code(db: Database, contract_id: str, *, serial: str | None = None, term_days: int | None = None,
               valid_days: int | None = 90, kind: str = "initial", default_term_days: int = 730) -> IssuedCode:
    """Create the contract if needed and an activation code bound to it (and to ``serial`` if given)."""
    contract_id = check_plain(contract_id.strip(), "contract id")
    if not contract_id or len(contract_id) > 64:
        raise ValueError("a contract id is 1-64 characters")
    if serial is not None:
        check_plain(serial, "serial")
        if len(serial) > 128:
            raise ValueError("a serial is at most 128 characters")
    if term_days is not None and term_days < 1:
        raise ValueError("term_days must be at least 1")
    now = utcnow()
    code = new_code()
    expires = now + dt.timedelta(days=valid_days) if valid_days else None
    with db.write() as conn:
        row = conn.execute(select(contracts).where(contracts.c.contract_id == contract_id)).mappings().first()
        if row is None:
            if kind == "replacement":
                raise LookupError(f"no contract {contract_id!r}")
            conn.execute(contracts.insert().values(contract_id=contract_id, term_days=term_days or default_term_days,
                                                   created_at=now))
        elif term_days is not None:
            end = row["term_start"] + dt.timedelta(days=term_days) if row["term_start"] else None
            conn.execute(update(contracts).where(contracts.c.contract_id == contract_id)
                         .values(term_days=term_days, term_end=end))
        conn.execute(activation_codes.insert().values(
            code_hash=sha256(normalize_code(code)), contract_id=contract_id, serial=serial or None, kind=kind,
            created_at=now, expires_at=expires))
    return IssuedCode(code, contract_id, serial or None, kind, expires)


def replacement_code(db: Database, contract_id: str, *, serial: str | None = None,
                     valid_days: int | None = 90) -> IssuedCode:
    """The operator's replacement flow: a code that moves ``contract_id`` to a new box when used."""
    return issue_code(db, contract_id, serial=serial, valid_days=valid_days, kind="replacement")


def activate(db: Database, *, code: str, serial: str, hostname: str, agent_version: str, client_ip: str | None,
             heartbeat_interval: float) -> dict[str, Any]:
    """Exchange a code and serial for a device token. Returns the reply body of ``POST /api/v1/activate``."""
    invalid = CenterError(403, "invalid_code", "the activation code is unknown, already used, expired or for "
                                               "another box; ask the operations center for a new one")
    now = utcnow()
    token = new_token()
    with db.write() as conn:
        # Lock the code row: concurrent activations with one code queue here, so a loser sees the code
        # used (403) rather than the contract the winner just bound (PostgreSQL reads each statement's
        # snapshot; SQLite serialises writers anyway).
        c = conn.execute(select(activation_codes).where(
            activation_codes.c.code_hash == sha256(normalize_code(code))).with_for_update()).mappings().first()
        if c is None or c["used_at"] is not None or (c["expires_at"] is not None and c["expires_at"] < now):
            raise invalid
        if c["serial"] and c["serial"] != serial:
            raise invalid
        contract = conn.execute(select(contracts).where(contracts.c.contract_id == c["contract_id"])).mappings().one()
        current = None
        if contract["device_id"]:
            current = conn.execute(select(devices).where(and_(
                devices.c.device_id == contract["device_id"], devices.c.revoked_at.is_(None)))).mappings().first()
        same_box = current is not None and current["serial"] == serial
        if current is not None and not same_box and c["kind"] != "replacement":
            raise CenterError(409, "already_activated",
                              f"contract {c['contract_id']} is bound to another box (serial {current['serial']}); "
                              f"a replacement box needs a replacement code: vcr-opscenter replace {c['contract_id']}",
                              extra={"contract_id": c["contract_id"]})
        device_id = current["device_id"] if same_box else new_device_id()
        claimed = conn.execute(update(activation_codes).where(and_(
            activation_codes.c.code_hash == c["code_hash"], activation_codes.c.used_at.is_(None)))
            .values(used_at=now, used_by=device_id))
        if claimed.rowcount != 1:
            raise invalid
        term_start = contract["term_start"] or now
        term_end = term_start + dt.timedelta(days=contract["term_days"])
        bound_to = (contracts.c.device_id == contract["device_id"] if contract["device_id"]
                    else contracts.c.device_id.is_(None))
        moved = conn.execute(update(contracts).where(and_(contracts.c.contract_id == c["contract_id"], bound_to))
                             .values(device_id=device_id, term_start=term_start, term_end=term_end))
        if moved.rowcount != 1:  # another activation of this contract won the race
            raise CenterError(409, "already_activated",
                              f"contract {c['contract_id']} was just activated by another box")
        if same_box:
            conn.execute(update(devices).where(devices.c.device_id == device_id).values(
                token_hash=sha256(token), hostname=hostname, agent_version=agent_version, last_ip=client_ip,
                heartbeat_interval=heartbeat_interval, activated_at=now, status="online", status_changed_at=now))
            _event(conn, device_id, "reactivated", {"serial": serial, "contract_id": c["contract_id"]}, now)
        else:
            if current is not None:
                conn.execute(update(devices).where(devices.c.device_id == current["device_id"]).values(
                    token_hash=None, revoked_at=now, status="revoked", status_changed_at=now))
                _event(conn, current["device_id"], "revoked", {"reason": "replaced", "by": device_id}, now)
            conn.execute(devices.insert().values(
                device_id=device_id, contract_id=c["contract_id"], serial=serial, hostname=hostname,
                token_hash=sha256(token), activated_at=now, heartbeat_interval=heartbeat_interval,
                last_ip=client_ip, agent_version=agent_version, status="online", status_changed_at=now, checkins=0))
            detail: dict[str, Any] = {"serial": serial, "contract_id": c["contract_id"], "kind": c["kind"]}
            if current is not None:
                detail["replaces"] = current["device_id"]
            _event(conn, device_id, "replaced" if current is not None else "activated", detail, now)
        restore = _latest_backup(conn, c["contract_id"])
        backup_secret = _backup_secret(conn, db, c["contract_id"], now)
    return {
        "device_id": device_id,
        "token": token,
        "contract_id": c["contract_id"],
        "license": {"term_start": iso(term_start), "term_end": iso(term_end)},
        "heartbeat_interval": heartbeat_interval,
        "server_time": iso(now),
        "restore": restore,
        "backup_secret": backup_secret,
    }


def _auth_stmt(_db: Database) -> Any:
    return (select(devices.c.device_id, devices.c.contract_id, devices.c.serial, devices.c.heartbeat_interval,
                   devices.c.status, contracts.c.term_start, contracts.c.term_end)
            .select_from(devices.join(contracts, contracts.c.contract_id == devices.c.contract_id))
            .where(and_(devices.c.token_hash == bindparam("h"), devices.c.revoked_at.is_(None))))


def authenticate(db: Database, token: str, conn: Connection | None = None) -> DeviceAuth | None:
    if not token:
        return None
    with db.read(conn) as conn:
        row = conn.execute(db.stmt("auth", _auth_stmt), {"h": sha256(token)}).first()
    return DeviceAuth(*row) if row else None


def revoke(db: Database, device_id: str, reason: str = "operator") -> bool:
    """Revoke a box's token (the contract stays bound to it until a replacement is activated)."""
    now = utcnow()
    with db.write() as conn:
        r = conn.execute(update(devices).where(and_(devices.c.device_id == device_id, devices.c.revoked_at.is_(None)))
                         .values(token_hash=None, revoked_at=now, status="revoked", status_changed_at=now))
        if r.rowcount:
            _event(conn, device_id, "revoked", {"reason": reason}, now)
    return bool(r.rowcount)


def license_of(db: Database, contract_id: str) -> dict[str, Any]:
    with db.read() as conn:
        row = conn.execute(select(contracts.c.term_start, contracts.c.term_end)
                           .where(contracts.c.contract_id == contract_id)).first()
    return {"term_start": iso(row[0]) if row else None, "term_end": iso(row[1]) if row else None}


def decode_blob(text: str, max_bytes: int) -> bytes:
    if len(text) > (max_bytes * 4) // 3 + 8:
        raise CenterError(413, "too_large", f"backup larger than {max_bytes} bytes", extra={"max_bytes": max_bytes})
    try:
        blob = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CenterError(400, "bad_request", "blob: not valid base64") from None
    if len(blob) > max_bytes:
        raise CenterError(413, "too_large", f"backup larger than {max_bytes} bytes", extra={"max_bytes": max_bytes})
    return blob


def issued_revisions(conn: Any, device_ids: list[str] | set[str]) -> dict[str, set[int]]:
    """Config revisions the center sent to each device: ``params.revision`` of its ``config`` tasks that
    were delivered (a queued task's revision is not known to the box yet)."""
    out: dict[str, set[int]] = {d: set() for d in device_ids}
    if not out:
        return out
    rows = conn.execute(select(tasks.c.device_id, tasks.c.params).where(and_(
        tasks.c.device_id.in_(list(out)), tasks.c.kind == "config", tasks.c.status != "queued")))
    for device_id, params in rows:
        rev = params.get("revision") if isinstance(params, dict) else None
        if isinstance(rev, int) and not isinstance(rev, bool) and 0 <= rev <= MAX_REVISION:
            out[device_id].add(rev)
    return out


def _replaced_since(conn: Any, contract_id: str) -> list[dt.datetime]:
    """When replacement codes were issued for the contract (oldest first)."""
    return sorted(conn.execute(select(activation_codes.c.created_at).where(and_(
        activation_codes.c.contract_id == contract_id, activation_codes.c.kind == "replacement"))).scalars())


def _trusted_backups(conn: Any, contract_id: str) -> tuple[list[Any], list[Any]]:
    """The contract's backup rows (id, revision, device_id, created_at) split into (trusted, newest
    revision first; untrusted). Trusted: the revision was sent to the storing device, and the row was
    stored before any replacement code issued after that device's activation."""
    rows = conn.execute(select(backups.c.id, backups.c.revision, backups.c.device_id, backups.c.created_at)
                        .where(backups.c.contract_id == contract_id).order_by(backups.c.revision.desc())).all()
    if not rows:
        return [], []
    devs = {r.device_id for r in rows}
    issued = issued_revisions(conn, devs)
    activated = dict(conn.execute(select(devices.c.device_id, devices.c.activated_at)
                                  .where(devices.c.device_id.in_(list(devs)))).all())
    codes = _replaced_since(conn, contract_id)
    trusted, untrusted = [], []
    for r in rows:
        since = activated.get(r.device_id)
        cut = next((t for t in codes if since is not None and t > since), None)
        ok = (since is not None and r.revision in issued.get(r.device_id, ())
              and (cut is None or r.created_at <= cut))
        (trusted if ok else untrusted).append(r)
    return trusted, untrusted


def store_backup(db: Database, auth: DeviceAuth, revision: int, blob: bytes, keep: int) -> dict[str, Any]:
    """Store one revision of the contract's config backup (re-sending a revision replaces it).

    Refused: 409 ``replacement_pending`` once the contract has a replacement code issued after this
    box's activation; 422 ``invalid`` (field ``revision``) for a revision the center never sent to
    this box."""
    now = utcnow()
    with db.write() as conn:
        since = conn.execute(select(devices.c.activated_at)
                             .where(devices.c.device_id == auth.device_id)).scalar_one()
        if any(t > since for t in _replaced_since(conn, auth.contract_id)):
            log.warning("backup of revision %s from %s refused: contract %s has a replacement code issued",
                        revision, auth.device_id, auth.contract_id)
            raise CenterError(409, "replacement_pending",
                              f"contract {auth.contract_id} has a replacement code issued after this box was "
                              "activated; this box may not store backups any more (activate it again with a "
                              "new code if it is to stay)")
        if revision not in issued_revisions(conn, [auth.device_id])[auth.device_id]:
            log.warning("backup of revision %s from %s refused: not a revision sent to it", revision, auth.device_id)
            raise CenterError(422, "invalid", f"revision: {revision} is not a config revision the operations "
                                              "center sent to this box", extra={"field": "revision"})
        ins = db.insert(backups).values(contract_id=auth.contract_id, revision=revision, blob=blob,
                                        device_id=auth.device_id, created_at=now)
        conn.execute(ins.on_conflict_do_update(index_elements=[backups.c.contract_id, backups.c.revision],
                                               set_={"blob": blob, "device_id": auth.device_id, "created_at": now}))
        trusted, untrusted = _trusted_backups(conn, auth.contract_id)
        drop = [r.id for r in untrusted] + [r.id for r in trusted[keep:]]
        if untrusted:
            log.warning("contract %s: dropped %d backup(s) of revisions never sent to the storing box: %s",
                        auth.contract_id, len(untrusted), sorted({r.revision for r in untrusted})[:10])
        if drop:
            conn.execute(delete(backups).where(backups.c.id.in_(drop)))
    return {"contract_id": auth.contract_id, "revision": revision, "size": len(blob), "stored_at": iso(now)}


def latest_backup(db: Database, contract_id: str) -> dict[str, Any] | None:
    with db.read() as conn:
        return _latest_backup(conn, contract_id)


def _latest_backup(conn: Any, contract_id: str) -> dict[str, Any] | None:
    """The newest trusted revision of the contract's backup (see :func:`_trusted_backups`), or None."""
    trusted, _ = _trusted_backups(conn, contract_id)
    if not trusted:
        return None
    row = conn.execute(select(backups.c.revision, backups.c.blob, backups.c.created_at)
                       .where(backups.c.id == trusted[0].id)).first()
    return {"revision": row[0], "blob": base64.b64encode(row[1]).decode("ascii"), "created_at": iso(row[2])}


def _event(conn: Any, device_id: str, kind: str, detail: dict[str, Any], at: dt.datetime) -> None:
    conn.execute(device_events.insert().values(device_id=device_id, kind=kind, at=at, detail=detail))


def count_devices(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(devices)).scalar() or 0)
