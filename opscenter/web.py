"""The read-only operator page at ``/`` of the operator listener: devices and recent alarms (Japanese with
English)."""
from __future__ import annotations

from html import escape
from typing import Any

from opscenter.render import STATUS_LABELS, alarms_today_text, health_text, portcheck_text, versions_text
from opscenter.textsafe import clean


def _td(v: Any) -> str:
    """A cell: box-supplied text made plain (control characters shown as escapes), then HTML-escaped."""
    return f"<td>{escape(clean(v if v is not None else '-'))}</td>"


def page(devices: list[dict[str, Any]], alarms: list[dict[str, Any]], server_time: str) -> str:
    rows = []
    for d in devices:
        cls = {"online": "ok", "offline": "bad"}.get(d["status"], "")
        rows.append(f"<tr class='{cls}'>" + "".join(_td(x) for x in (
            d["device_id"], d["contract_id"], d["serial"], d["last_checkin"], STATUS_LABELS.get(d["status"], d["status"]),
            health_text(d["health"]), portcheck_text(d["portcheck"]), versions_text(d["versions"]),
            alarms_today_text(d.get("alarms_today")))) + "</tr>")
    arows = []
    for a in alarms:
        ev = a["event"] if isinstance(a["event"], dict) else {}
        arows.append("<tr>" + "".join(_td(x) for x in (
            a["received_at"], a["device_id"], a["severity"], a["event_type"], a["signature"] or "",
            f"{ev.get('src_ip', '')}:{ev.get('src_port', '')} → {ev.get('dest_ip', '')}:{ev.get('dest_port', '')}"))
            + "</tr>")
    return f"""<!doctype html>
<html lang="ja"><head><meta charset="utf-8"><title>運用センター / Operations center</title>
<meta http-equiv="refresh" content="30">
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.25em .5em;font-size:90%}}
tr.bad td{{background:#fdd}}tr.ok td{{background:#efe}}</style>
</head><body>
<h1>運用センター / Operations center</h1>
<p>サーバー時刻 / server time: {escape(server_time)}</p>
<h2>機器 / Devices ({len(devices)})</h2>
<table><tr><th>機器 / device</th><th>契約 / contract</th><th>シリアル / serial</th><th>最終チェックイン / last check-in</th>
<th>状態 / status</th><th>ヘルス / health</th><th>ポートチェック / port check</th><th>バージョン / versions</th>
<th>本日のアラーム / alarms today</th></tr>
{''.join(rows)}</table>
<h2>最近のアラーム / Recent alarms ({len(alarms)})</h2>
<table><tr><th>受信 / received</th><th>機器 / device</th><th>重大度 / severity</th><th>種別 / type</th>
<th>シグネチャ / signature</th><th>通信 / flow</th></tr>
{''.join(arows)}</table>
</body></html>
"""
