"""What the operator sees: devices with health, port check and versions; device events. Plain dicts (JSON-ready)."""
from __future__ import annotations

import math
from typing import Any

from sqlalchemy import select

from opscenter.db import Database, device_events, devices, health, iso, utcnow
from opscenter.fleet import device_state
from opscenter.textsafe import clean


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def health_summary(body: dict[str, Any] | None) -> dict[str, Any]:
    """The numbers of the last health report; anything that is not a finite number is left out (bodies
    stored before the check-in was validated may hold anything)."""
    h = (body or {}).get("health")
    if not isinstance(h, dict):
        return {}
    out: dict[str, Any] = {k: h[k] for k in ("cpu_percent", "memory_percent", "disk_percent", "uptime_s")
                           if _finite(h.get(k))}
    load = h.get("load")
    if isinstance(load, list) and all(_finite(x) for x in load):
        out["load"] = load[:3]
    return out


def _text(v: Any, limit: int = 64) -> str:
    return clean(v)[:limit] if isinstance(v, (str, int)) and not isinstance(v, bool) else ""


def portcheck_summary(body: dict[str, Any] | None) -> dict[str, Any] | None:
    """``{"checked_at", "ok", "failed": [names]}`` from the box's last port check, or None if never reported.
    Works on whatever is stored: text is made plain, other types are ignored."""
    pc = (body or {}).get("portcheck")
    if not isinstance(pc, dict):
        return None
    failed: list[str] = []
    results = pc.get("results")
    items = list(results.values()) if isinstance(results, dict) else results if isinstance(results, list) else []
    for r in items:
        if isinstance(r, dict) and r.get("ok") is False:
            name = _text(r.get("feature") or r.get("name") or r.get("check") or "")
            port = r.get("port")
            port = port if isinstance(port, int) and not isinstance(port, bool) else None
            proto = _text(r.get("proto") or r.get("protocol") or "", 16)
            label = " ".join(x for x in (name, f"{proto.upper()}{port}" if port is not None else "") if x)
            failed.append(label or "?")
    ok = pc.get("ok")
    if not isinstance(ok, bool):
        ok = not failed if items else None
    checked = pc.get("checked_at")
    return {"checked_at": _text(checked, 40) or None, "ok": ok, "failed": failed}


def list_devices(db: Database, misses: int, *, include_revoked: bool = False) -> list[dict[str, Any]]:
    q = (select(devices, health.c.body, health.c.received_at.label("health_at"))
         .select_from(devices.outerjoin(health, health.c.device_id == devices.c.device_id))
         .order_by(devices.c.contract_id, devices.c.activated_at))
    if not include_revoked:
        q = q.where(devices.c.revoked_at.is_(None))
    now = utcnow()
    with db.read() as conn:
        rows = conn.execute(q).mappings().all()
    from opscenter.alarms import usage

    today = usage(db)
    out = []
    for r in rows:
        body = r["body"] if isinstance(r["body"], dict) else None
        state = device_state(r["revoked_at"], r["last_checkin_at"], r["activated_at"], r["heartbeat_interval"],
                             misses, now)
        sigs = (body or {}).get("signatures")
        out.append({
            "device_id": r["device_id"],
            "contract_id": r["contract_id"],
            "serial": r["serial"],
            "hostname": r["hostname"],
            "status": state,
            "last_checkin": iso(r["last_checkin_at"]),
            "activated_at": iso(r["activated_at"]),
            "revoked_at": iso(r["revoked_at"]),
            "heartbeat_interval": r["heartbeat_interval"],
            "checkins": r["checkins"],
            "last_ip": r["last_ip"],
            "health": health_summary(body),
            "portcheck": portcheck_summary(body),
            "spool": (body or {}).get("spool") if isinstance((body or {}).get("spool"), dict) else None,
            "versions": {
                "agent": r["agent_version"],
                "config_revision": r["config_revision"],
                "signatures": {str(k): v for k, v in sigs.items() if isinstance(v, (str, int, float))
                               and not isinstance(v, bool)} if isinstance(sigs, dict) else {},
            },
            "alarms_today": today.get(r["device_id"]) or {"events": 0, "bytes": 0, "refused_batches": 0,
                                                          "refused_events": 0},
        })
    return out


def list_events(db: Database, *, device_id: str | None = None, kind: str | None = None,
                limit: int = 100) -> list[dict[str, Any]]:
    q = select(device_events).order_by(device_events.c.id.desc()).limit(limit)
    if device_id:
        q = q.where(device_events.c.device_id == device_id)
    if kind:
        q = q.where(device_events.c.kind == kind)
    with db.read() as conn:
        rows = conn.execute(q).mappings().all()
    return [{"id": r["id"], "device_id": r["device_id"], "kind": r["kind"], "at": iso(r["at"]),
             "detail": r["detail"]} for r in rows]
