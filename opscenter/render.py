"""Operator-facing text: tables in Japanese with English alongside."""
from __future__ import annotations

import math
import unicodedata
from typing import Any

from opscenter.textsafe import clean

STATUS_LABELS = {
    "online": "オンライン / online",
    "offline": "オフライン / offline",
    "revoked": "失効 / revoked",
}

SEVERITY_LABELS = {1: "1 高 / high", 2: "2 中 / medium", 3: "3 低 / low", 4: "4 情報 / info"}


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - _width(text))


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain text table aligned for East Asian wide characters. Every cell is made plain (control and
    format characters shown as escapes): the cells hold what boxes sent."""
    headers = [clean(h) for h in headers]
    rows = [[clean(c) for c in r] for r in rows]
    widths = [max([_width(h)] + [_width(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = ["  ".join(_pad(h, w) for h, w in zip(headers, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(_pad(c, w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def _fmt_uptime(s: Any) -> str:
    if not isinstance(s, (int, float)) or isinstance(s, bool) or not math.isfinite(s) or s < 0:
        return ""
    s = int(s)
    d, rem = divmod(s, 86400)
    return f"{d}d{rem // 3600}h" if d else f"{rem // 3600}h{rem % 3600 // 60}m"


def health_text(h: dict[str, Any]) -> str:
    if not h:
        return "-"
    parts = []
    for key, label in (("cpu_percent", "cpu"), ("memory_percent", "mem"), ("disk_percent", "disk")):
        v = h.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            parts.append(f"{label} {v:.0f}%")
    if "uptime_s" in h:
        parts.append(f"up {_fmt_uptime(h['uptime_s'])}")
    return " ".join(parts) or "-"


def portcheck_text(pc: dict[str, Any] | None) -> str:
    if pc is None:
        return "未実施 / not reported"
    if pc.get("ok"):
        return "正常 / OK"
    if pc.get("ok") is None:
        return "不明 / unknown"
    failed = ", ".join(str(x) for x in pc.get("failed") or []) or "?"
    return f"異常 / NG: {failed}"


def versions_text(v: dict[str, Any]) -> str:
    parts = [f"agent {v.get('agent') or '-'}"]
    if v.get("config_revision") is not None:
        parts.append(f"config r{v['config_revision']}")
    for k, val in sorted((v.get("signatures") or {}).items(), key=lambda kv: str(kv[0])):
        parts.append(f"{k} {val}")
    return ", ".join(parts)


def devices_text(devices: list[dict[str, Any]]) -> str:
    if not devices:
        return "登録された機器はありません / no devices enrolled"
    rows = [[d["device_id"], d["contract_id"], d["serial"], d["last_checkin"] or "未 / never",
             STATUS_LABELS.get(d["status"], d["status"]), health_text(d["health"]), portcheck_text(d["portcheck"]),
             versions_text(d["versions"])] for d in devices]
    for row, d in zip(rows, devices):
        row.append(alarms_today_text(d.get("alarms_today")))
    online = sum(1 for d in devices if d["status"] == "online")
    head = ["機器 / device", "契約 / contract", "シリアル / serial", "最終チェックイン / last check-in",
            "状態 / status", "ヘルス / health", "ポートチェック / port check", "バージョン / versions",
            "本日のアラーム / alarms today"]
    return (table(head, rows) + f"\n\n{len(devices)} 台 / devices: オンライン / online {online}, "
            f"オフライン / offline {sum(1 for d in devices if d['status'] == 'offline')}")


def alarms_today_text(u: dict[str, Any] | None) -> str:
    """Stored today, and the batches refused by the per-device quota (the operator's counter)."""
    u = u or {}
    text = f"{u.get('events', 0)} ({u.get('bytes', 0) / 2**20:.1f} MiB)"
    if u.get("refused_batches"):
        text += f" 上限超過 / over quota: {u['refused_batches']} batches, {u.get('refused_events', 0)} events refused"
    return text


def _flow(ev: dict[str, Any]) -> str:
    if "src_ip" not in ev:
        return ""
    return (f"{ev.get('src_ip')}:{ev.get('src_port', '')} -> {ev.get('dest_ip')}:{ev.get('dest_port', '')} "
            f"{ev.get('proto', '')}")


def alarms_text(alarms: list[dict[str, Any]]) -> str:
    if not alarms:
        return "アラームはありません / no alarms"
    rows = []
    for a in alarms:
        ev = a["event"] if isinstance(a["event"], dict) else {}
        what = a["signature"] or (f"gap: {ev.get('dropped')} dropped" if a["event_type"] == "gap" else "")
        rows.append([a["received_at"], a["device_id"], SEVERITY_LABELS.get(a["severity"], str(a["severity"] or "-")),
                     a["event_type"] or "-", what, _flow(ev)])
    head = ["受信 / received", "機器 / device", "重大度 / severity", "種別 / type", "内容 / signature", "通信 / flow"]
    return table(head, rows)


def events_text(events: list[dict[str, Any]]) -> str:
    if not events:
        return "イベントはありません / no events"
    labels = {"offline": "オフライン / offline", "online": "復帰 / online", "activated": "開通 / activated",
              "replaced": "交換 / replaced", "revoked": "失効 / revoked", "reactivated": "再開通 / reactivated",
              "alarm_quota": "アラーム上限超過 / alarm quota"}
    rows = [[e["at"], e["device_id"], labels.get(e["kind"], e["kind"]),
             ", ".join(f"{k}={v}" for k, v in (e["detail"] or {}).items())] for e in events]
    return table(["時刻 / at", "機器 / device", "イベント / event", "詳細 / detail"], rows)
