"""Remote installation confirmation (設置確認): did the customer set the box up correctly?

Evaluated at each check-in of a box until it is confirmed, from what the box reports:

| criterion | met when |
|---|---|
| ``checkin`` | the box checked in after activation |
| ``portcheck`` | the box's last port check is all green (``portcheck.ok``) |
| ``dns`` | the port check's DNS test (UDP 53 to the sheet's DNS servers) passed |
| ``ntp`` | the port check's SNTP test (UDP 123) passed |
| ``traffic`` | traffic crossed the bridge both ways: rx and tx of both the LAN and the WAN port grew between two check-ins (``health.interfaces``; port names from ``health.bridge``, default lan0/wan0) |

``traffic`` is kept once seen (an office may be quiet at the moment of the last check-in); the
others are taken from the latest check-in. When all are met the record becomes ``confirmed`` with
its date ("設置確認完了 / installation confirmed") and an ``installation_confirmed`` device event;
it is not evaluated again. Until then the record says what is missing.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select

from opscenter.db import (
    Database,
    device_events,
    devices,
    installation_confirmations,
    iso,
    settings_sheets,
    utcnow,
)

CRITERIA = ("checkin", "portcheck", "dns", "ntp", "traffic")
LABELS = {
    "checkin": ("運用センターへのチェックイン", "check-in at the operations center"),
    "portcheck": ("ポートチェックがすべて正常", "port check all green"),
    "dns": ("DNS が使える", "DNS works"),
    "ntp": ("NTP (時刻同期) が使える", "NTP works"),
    "traffic": ("ブリッジを双方向に通信が通過", "traffic crosses the bridge both ways"),
}
CONFIRMED = ("設置確認完了", "installation confirmed")
PENDING = ("設置確認中", "installation not confirmed yet")
NOT_INSTALLED = ("未設置 (未アクティベーション)", "not installed (not activated)")
COUNTERS = ("rx_bytes", "tx_bytes")


def _ports(health: dict[str, Any]) -> tuple[str, str]:
    br = health.get("bridge") if isinstance(health.get("bridge"), dict) else {}
    lan = br.get("lan_port") if isinstance(br.get("lan_port"), str) else "lan0"
    wan = br.get("wan_port") if isinstance(br.get("wan_port"), str) else "wan0"
    return lan, wan


def _counters(health: dict[str, Any]) -> dict[str, dict[str, int]]:
    ifs = health.get("interfaces") if isinstance(health.get("interfaces"), dict) else {}
    lan, wan = _ports(health)
    out: dict[str, dict[str, int]] = {}
    for role, name in (("lan", lan), ("wan", wan)):
        c = ifs.get(name)
        if isinstance(c, dict) and all(isinstance(c.get(k), int) for k in COUNTERS):
            out[role] = {"name": name, **{k: int(c[k]) for k in COUNTERS}}  # type: ignore[dict-item]
    return out


def _check(name: str, ok: bool, ja: str = "", en: str = "") -> dict[str, Any]:
    return {"ok": ok, "detail_ja": ja, "detail_en": en}


def _portcheck_checks(pc: dict[str, Any]) -> dict[str, bool | None]:
    """check ("udp/53", ...) -> passed (any target ok), from the box's port check results."""
    out: dict[str, bool | None] = {}
    for r in pc.get("results") or []:
        if not isinstance(r, dict) or not isinstance(r.get("check"), str):
            continue
        out[r["check"]] = bool(out.get(r["check"])) or r.get("ok") is True
    return out


def evaluate_body(body: dict[str, Any], prev: dict[str, Any] | None, old: dict[str, Any] | None,
                  now: dt.datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    """(criteria, counters to keep) from one check-in body, the previous counters and the previous criteria."""
    h = body.get("health") if isinstance(body.get("health"), dict) else {}
    pc = body.get("portcheck") if isinstance(body.get("portcheck"), dict) else None
    crit: dict[str, Any] = {"checkin": _check("checkin", True, f"最終チェックイン {iso(now)}", f"last check-in {iso(now)}")}
    if pc is None:
        for k in ("portcheck", "dns", "ntp"):
            crit[k] = _check(k, False, "ポートチェックの結果がまだ届いていません", "no port check reported yet")
    else:
        checks = _portcheck_checks(pc)
        failed = [str(f.get("check")) for f in pc.get("fixes") or [] if isinstance(f, dict)] or \
            [c for c, ok in checks.items() if not ok]
        if pc.get("ok") is True:
            crit["portcheck"] = _check("portcheck", True, "すべて通信可能", "everything reachable")
        else:
            names = ", ".join(c.upper() for c in failed) or "?"
            crit["portcheck"] = _check("portcheck", False, f"通信できないポート: {names}", f"blocked: {names}")
        for key, check in (("dns", "udp/53"), ("ntp", "udp/123")):
            if checks.get(check):
                crit[key] = _check(key, True, f"{check.upper()} 応答あり", f"{check.upper()} answered")
            elif check in checks:
                crit[key] = _check(key, False, f"{check.upper()} に応答がありません", f"no answer on {check.upper()}")
            else:
                crit[key] = _check(key, False, f"{check.upper()} は未テストです", f"{check.upper()} was not tested")
    cur = _counters(h)
    seen = (old or {}).get("traffic") or {}
    if seen.get("ok"):
        crit["traffic"] = seen
    elif len(cur) < 2:
        crit["traffic"] = _check("traffic", False, "LAN/WAN ポートのカウンターが報告されていません",
                                 "no LAN/WAN port counters reported")
    elif not prev or len(prev) < 2:
        crit["traffic"] = _check("traffic", False, "次のチェックインで通信量を比較します",
                                 "the traffic is compared at the next check-in")
    else:
        grew = {f"{role} {k[:2]}": cur[role][k] > prev[role][k] for role in ("lan", "wan") for k in COUNTERS
                if role in prev and cur[role]["name"] == prev[role].get("name")}
        missing = [k for k, ok in grew.items() if not ok] if len(grew) == 4 else ["lan rx", "lan tx", "wan rx", "wan tx"]
        if not missing:
            crit["traffic"] = _check("traffic", True,
                                     f"{cur['lan']['name']} と {cur['wan']['name']} の送受信が増加",
                                     f"rx and tx of {cur['lan']['name']} and {cur['wan']['name']} grew")
        else:
            crit["traffic"] = _check("traffic", False, "通信が増えていません: " + ", ".join(missing),
                                     "no traffic seen on: " + ", ".join(missing))
    for k, v in crit.items():
        before = (old or {}).get(k) or {}
        v["since"] = before.get("since") if before.get("ok") and v["ok"] else (iso(now) if v["ok"] else None)
    return crit, cur


def on_checkin(db: Database, conn: Any, device_id: str, contract_id: str, serial: str, body: dict[str, Any],
               now: dt.datetime | None = None) -> dict[str, Any] | None:
    """Re-evaluate the device's confirmation within the check-in's transaction; returns the record, or
    None when it was already confirmed (nothing more to do)."""
    now = now or utcnow()
    t = installation_confirmations
    row = conn.execute(select(t).where(t.c.device_id == device_id)).mappings().first()
    if row is not None and row["status"] == "confirmed":
        return None
    crit, counters = evaluate_body(body, row["last_counters"] if row else None, row["criteria"] if row else None, now)
    ok = all(crit[k]["ok"] for k in CRITERIA)
    values = {"criteria": crit, "last_counters": counters or (row["last_counters"] if row else None),
              "evaluated_at": now, "status": "confirmed" if ok else "pending", "confirmed_at": now if ok else None}
    if row is None:
        conn.execute(t.insert().values(device_id=device_id, contract_id=contract_id, serial=serial,
                                       first_checkin_at=now, checkins_seen=1, **values))
    else:
        conn.execute(t.update().where(t.c.device_id == device_id).values(checkins_seen=t.c.checkins_seen + 1,
                                                                         **values))
    if ok:
        conn.execute(device_events.insert().values(device_id=device_id, kind="installation_confirmed", at=now,
                                                   detail={"contract_id": contract_id, "serial": serial}))
    return {"device_id": device_id, **values}


def _shape(row: dict[str, Any] | None, dev: dict[str, Any] | None, sheet: dict[str, Any] | None) -> dict[str, Any]:
    crit = (row or {}).get("criteria") or {}
    criteria = []
    for k in CRITERIA:
        c = crit.get(k) or {"ok": False, "detail_ja": "未評価", "detail_en": "not evaluated yet"}
        criteria.append({"name": k, "label_ja": LABELS[k][0], "label_en": LABELS[k][1], "ok": bool(c.get("ok")),
                         "since": c.get("since"), "detail_ja": c.get("detail_ja", ""), "detail_en": c.get("detail_en", "")})
    if dev is None:
        status, label = "not_installed", NOT_INSTALLED
    elif row is not None and row["status"] == "confirmed":
        status, label = "confirmed", CONFIRMED
    else:
        status, label = "pending", PENDING
    return {
        "status": status,
        "label_ja": label[0],
        "label_en": label[1],
        "label": f"{label[0]} / {label[1]}",
        "contract_id": (row or dev or sheet or {}).get("contract_id"),
        "serial": (row or dev or sheet or {}).get("serial"),
        "device_id": dev["device_id"] if dev else None,
        "activated_at": iso(dev["activated_at"]) if dev else None,
        "install_date": ((sheet or {}).get("sheet") or {}).get("install_date"),
        "confirmed_at": iso(row["confirmed_at"]) if row else None,
        "evaluated_at": iso(row["evaluated_at"]) if row else None,
        "first_checkin_at": iso(row["first_checkin_at"]) if row else None,
        "checkins_seen": row["checkins_seen"] if row else 0,
        "missing": [c["name"] for c in criteria if not c["ok"]],
        "criteria": criteria,
    }


def list_confirmations(db: Database, *, contract_id: str | None = None,
                       status: str | None = None) -> list[dict[str, Any]]:
    """Every active box and every settings sheet without a box yet, with its confirmation state."""
    with db.read() as conn:
        dq = select(devices.c.device_id, devices.c.contract_id, devices.c.serial, devices.c.activated_at).where(
            devices.c.revoked_at.is_(None))
        sq = select(settings_sheets.c.serial, settings_sheets.c.contract_id, settings_sheets.c.sheet)
        cq = select(installation_confirmations)
        if contract_id:
            dq = dq.where(devices.c.contract_id == contract_id)
            sq = sq.where(settings_sheets.c.contract_id == contract_id)
            cq = cq.where(installation_confirmations.c.contract_id == contract_id)
        devs = [dict(r) for r in conn.execute(dq).mappings().all()]
        sheets = {r["serial"]: dict(r) for r in conn.execute(sq).mappings().all()}
        rows = {r["device_id"]: dict(r) for r in conn.execute(cq).mappings().all()}
    out = []
    seen_serials = set()
    for d in sorted(devs, key=lambda d: (d["contract_id"], d["serial"])):
        seen_serials.add(d["serial"])
        out.append(_shape(rows.get(d["device_id"]), d, sheets.get(d["serial"])))
    for serial, s in sorted(sheets.items()):
        if serial not in seen_serials:
            out.append(_shape(None, None, s))
    if status:
        out = [r for r in out if r["status"] == status]
    return out


def confirmation_of(db: Database, device_id: str) -> dict[str, Any] | None:
    return next((r for r in list_confirmations(db) if r["device_id"] == device_id), None)


def confirmations_text(rows: list[dict[str, Any]]) -> str:
    from opscenter.render import table

    if not rows:
        return "設置確認の対象はありません / no boxes or settings sheets"
    lines = [table(["契約 / contract", "シリアル / serial", "機器 / device", "状態 / status", "確認日時 / confirmed",
                    "不足 / missing"],
                   [[r["contract_id"] or "", r["serial"] or "", r["device_id"] or "-", r["label"],
                     r["confirmed_at"] or "-", ", ".join(r["missing"]) if r["status"] != "confirmed" else "-"]
                    for r in rows])]
    for r in rows:
        if r["status"] == "pending":
            lines.append(f"\n{r['serial']} ({r['device_id']}): {r['label']}")
            for c in r["criteria"]:
                mark = "OK" if c["ok"] else "NG"
                lines.append(f"  {mark}  {c['label_ja']} / {c['label_en']}: {c['detail_ja']} / {c['detail_en']}")
    return "\n".join(lines)
