"""The customer's side at the center: settings sheets and provisioning, installation confirmation, grouped
notifications (without mail here; the real MTA is in test_notify_mail.py)."""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from filters.settingsheet import SheetError, check_sheet
from opscenter import confirm, notify, sheets
from opscenter.db import devices
from opscenter.operator_app import create_operator_app
from opscenter.operators import add as add_operator
from opscenter.settings import Settings
from tests.opscenter.helpers import TEST_SETTINGS, activate, bearer, checkin_body, make_client

REPO = Path(__file__).resolve().parents[2]

SHEET: dict[str, Any] = {
    "install_address": "東京都千代田区丸の内1-1-1 3F",
    "install_date": "2026-12-01",
    "management_ip": "192.0.2.2/24",
    "gateway": "192.0.2.1",
    "dns": ["198.51.100.53"],
    "management_ipv6": "2001:db8:1::2/64",
    "gateway_ipv6": "2001:db8:1::1",
    "contact": {"name": "山田 太郎", "mail": "yamada@customer.example", "phone": "03-1234-5678"},
}


@pytest.fixture
def client(tmp_path: Path):
    with make_client(f"sqlite:///{tmp_path / 'c.db'}", confirm_interval=0) as c:
        yield c


@pytest.fixture
def any_client(db_url: str):
    """On SQLite and on PostgreSQL (the digest window's unique-while-open row, the conditional claims)."""
    with make_client(db_url, confirm_interval=0) as c:
        yield c


def fields(exc: SheetError) -> set[str]:
    return {p.field for p in exc.problems}


@pytest.mark.parametrize("change, field, en", [
    ({"gateway": "192.0.3.1"}, "gateway", "not inside the subnet"),
    ({"gateway": "192.0.2.2"}, "gateway", "box's own address"),
    ({"management_ip": "192.0.2.0/24"}, "management_ip", "network address"),
    ({"management_ip": "192.0.2.255/24"}, "management_ip", "broadcast address"),
    ({"management_ip": "192.0.2.2"}, "management_ip", "prefix length"),
    ({"gateway": "192.0.2.255"}, "gateway", "network or broadcast"),
    ({"dns": []}, "dns", "at least one"),
    ({"dns": ["198.51.100.53", "not-an-ip"]}, "dns.1", "not a valid address"),
    ({"gateway_ipv6": None}, "gateway_ipv6", "required when management_ipv6"),
    ({"gateway_ipv6": "2001:db8:2::1"}, "gateway_ipv6", "neither inside"),
    ({"contact": {"name": "x", "mail": "nope", "phone": "03-1234-5678"}}, "contact.mail", "not a valid mail"),
    ({"install_date": "12/01/2026"}, "install_date", "YYYY-MM-DD"),
])
def test_sheet_problems_name_the_field_in_japanese_and_english(change, field, en):
    with pytest.raises(SheetError) as info:
        check_sheet({**SHEET, **change})
    p = next(p for p in info.value.problems if p.field == field)
    assert en in p.en and p.ja and any(ord(c) > 0x3000 for c in p.ja), p
    assert check_sheet({**SHEET, "gateway_ipv6": "fe80::1"})["gateway_ipv6"] == "fe80::1"  # link-local gateway is fine


def test_every_problem_is_reported_at_once():
    with pytest.raises(SheetError) as info:
        check_sheet({"management_ip": "10.0.0.0/24", "dns": "", "contact": {}, "bogus": 1})
    assert {"install_address", "install_date", "management_ip", "gateway", "dns", "contact.name", "contact.mail",
            "contact.phone", "bogus"} <= fields(info.value)


def test_sheet_set_issues_a_code_bound_to_the_serial_and_the_box_fetches_its_sheet(client: TestClient):
    db = client.app.state.db
    out = sheets.set_sheet(db, "C-1", "VCR-1", SHEET, operator="alice")
    code = out["activation_code"]
    assert out["code_status"] == "issued" and code
    other = sheets.set_sheet(db, "C-2", "VCR-2", {**SHEET, "management_ip": "192.0.2.3/24"})

    r = client.post("/api/v1/provision", json={"serial": "VCR-1", "activation_code": code.lower().replace("-", " ")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["contract_id"] == "C-1" and body["sheet"]["management_ip"] == "192.0.2.2/24"
    cfg = body["config"]
    assert cfg["center"]["enabled"] is True and cfg["center"]["serial"] == "VCR-1"
    assert cfg["center"]["url"].startswith("https://")
    assert cfg["settings_sheet"]["contact"] == "山田 太郎 <yamada@customer.example> tel 03-1234-5678"
    from agent.config import SettingsSheet  # the box accepts what the center makes

    SettingsSheet.model_validate(cfg["settings_sheet"])

    # no leaks: another serial's code, a wrong code, the right code for another serial: all the same 403
    for serial, c in (("VCR-2", code), ("VCR-1", other["activation_code"]), ("VCR-1", "AAAA-BBBB-CCCC-DDDD"),
                      ("VCR-404", code)):
        r = client.post("/api/v1/provision", json={"serial": serial, "activation_code": c})
        assert r.status_code == 403 and r.json()["error"] == "invalid_code", (serial, r.text)
        assert "192.0.2" not in r.text

    # setting it again keeps the valid code; after activation the same code still fetches (setup runs again)
    again = sheets.set_sheet(db, "C-1", "VCR-1", {**SHEET, "dns": ["198.51.100.53", "198.51.100.54"]})
    assert again["activation_code"] is None and again["code_status"] == "valid"
    box = activate(client, code, "VCR-1").json()
    assert client.post("/api/v1/provision", json={"serial": "VCR-1", "activation_code": code}).status_code == 200
    r = client.post("/api/v1/provision", json={"serial": "VCR-1"}, headers=bearer(box["token"]))
    assert r.status_code == 200 and r.json()["sheet"]["dns"] == ["198.51.100.53", "198.51.100.54"]
    assert client.post("/api/v1/provision", json={"serial": "VCR-2"}, headers=bearer(box["token"])).status_code == 403
    assert sheets.set_sheet(db, "C-1", "VCR-1", SHEET)["code_status"] == "used"
    with pytest.raises(ValueError):
        sheets.set_sheet(db, "C-9", "VCR-1", SHEET)  # a serial belongs to one contract
    from opscenter.enroll import revoke

    revoke(db, box["device_id"])
    assert client.post("/api/v1/provision", json={"serial": "VCR-1", "activation_code": code}).status_code == 403
    assert sheets.get_sheet(db, "VCR-1")["fetches"] == 3


def _health(lan: tuple[int, int], wan: tuple[int, int], *, lan_name: str = "lan0", wan_name: str = "wan0") -> dict[str, Any]:
    def c(rx: int, tx: int) -> dict[str, int]:
        return {"rx_bytes": rx, "tx_bytes": tx, "rx_packets": rx // 100, "tx_packets": tx // 100, "errin": 0,
                "errout": 0, "dropin": 0, "dropout": 0}

    return {"cpu_percent": 1.0, "interfaces": {lan_name: c(*lan), wan_name: c(*wan), "br0": c(1, 1)},
            "bridge": {"name": "br0", "lan_port": lan_name, "wan_port": wan_name}}


def _pc(ok_dns: bool = True, ok_ntp: bool = True, blocked: tuple[str, ...] = ()) -> dict[str, Any]:
    results = [{"check": "udp/53", "target": "198.51.100.53", "ok": ok_dns},
               {"check": "udp/123", "target": "ntp", "ok": ok_ntp}]
    results += [{"check": f"tcp/{p}", "target": "center", "ok": f"tcp/{p}" not in blocked} for p in (443, 80, 22)]
    ok = ok_dns and ok_ntp and not blocked
    fixes = [{"check": c} for c in (*(["udp/53"] if not ok_dns else []), *(["udp/123"] if not ok_ntp else []), *blocked)]
    return {"checked_at": "2026-12-01T00:00:00Z", "ok": ok, "results": results, "fixes": fixes}


def test_installation_is_confirmed_once_every_criterion_is_met(any_client: TestClient):
    client = any_client
    db = client.app.state.db
    code = sheets.set_sheet(db, "C-1", "VCR-1", SHEET)["activation_code"]
    assert [r["status"] for r in confirm.list_confirmations(db)] == ["not_installed"]
    box = activate(client, code, "VCR-1").json()
    h = bearer(box["token"])

    def checkin(**kw: Any) -> dict[str, Any]:
        r = client.post("/api/v1/checkin", json=checkin_body(**kw), headers=h)
        assert r.status_code == 200, r.text
        return confirm.confirmation_of(db, box["device_id"])

    c = checkin(health=_health((100, 100), (100, 100)), portcheck=_pc(blocked=("tcp/22",)))
    assert c["status"] == "pending" and set(c["missing"]) == {"portcheck", "traffic"}
    assert "TCP/22" in next(x for x in c["criteria"] if x["name"] == "portcheck")["detail_en"]
    c = checkin(health=_health((200, 200), (100, 300)), portcheck=_pc(ok_ntp=False))  # wan rx did not grow
    assert set(c["missing"]) == {"portcheck", "ntp", "traffic"}
    assert "wan rx" in next(x for x in c["criteria"] if x["name"] == "traffic")["detail_en"]
    c = checkin(health=_health((300, 300), (200, 400)), portcheck=_pc(ok_ntp=False))  # traffic both ways now
    assert c["missing"] == ["portcheck", "ntp"]
    c = checkin(health=_health((300, 300), (200, 400)), portcheck=_pc())  # quiet office: traffic stays seen
    assert c["status"] == "confirmed" and c["label"] == "設置確認完了 / installation confirmed" and c["confirmed_at"]
    confirmed_at = c["confirmed_at"]
    c = checkin(health=_health((1, 1), (1, 1)), portcheck=_pc(ok_dns=False))  # not evaluated again
    assert c["status"] == "confirmed" and c["confirmed_at"] == confirmed_at
    from opscenter.views import list_events

    assert [e["kind"] for e in list_events(db, device_id=box["device_id"], kind="installation_confirmed")] == \
        ["installation_confirmed"]

    # swapped ports (setup found lan0 goes to the router): the box names them, the center follows
    code2 = sheets.set_sheet(db, "C-2", "VCR-2", {**SHEET, "management_ip": "192.0.2.3/24"})["activation_code"]
    box2 = activate(client, code2, "VCR-2").json()
    for lan, wan in (((10, 10), (10, 10)), ((20, 20), (20, 20))):
        client.post("/api/v1/checkin", headers=bearer(box2["token"]),
                    json=checkin_body(health=_health(lan, wan, lan_name="wan0", wan_name="lan0"), portcheck=_pc()))
    assert confirm.confirmation_of(db, box2["device_id"])["status"] == "confirmed"


def _severe_batch(n: int, kind: str = "cnc", host: str = "192.0.2.11") -> dict[str, Any]:
    events = []
    for i in range(n):
        ev: dict[str, Any] = {"timestamp": "2026-12-01T01:00:00.000000+0000", "event_type": "alert",
                              "src_ip": host, "dest_ip": "203.0.113.67", "dest_port": 443, "proto": "TCP"}
        if kind == "cnc":
            ev["alert"] = {"signature": "VCR ATP: C&C QakBot", "signature_id": 9400001, "severity": 1, "engine": "atp"}
            ev["atp"] = {"lan_host": host, "indicator": "203.0.113.67", "threat": "QakBot"}
        elif kind == "virus":
            ev["alert"] = {"signature": "VCR AV: EICAR", "signature_id": 9500001, "severity": 1, "engine": "av"}
        elif kind == "ips1":
            ev["alert"] = {"signature": "ET EXPLOIT x", "signature_id": 2000001, "severity": 1, "engine": "ips"}
        else:  # not severe
            ev["alert"] = {"signature": "ET POLICY x", "signature_id": 2000002, "severity": 3, "engine": "ips"}
        events.append({"event_id": str(uuid.uuid4()), "severity": ev["alert"]["severity"], "event": ev})
    return {"events": events}


def test_severe_alarms_of_a_burst_make_one_notification(any_client: TestClient):
    client = any_client
    db, settings = client.app.state.db, client.app.state.settings
    code = sheets.set_sheet(db, "C-1", "VCR-1", SHEET)["activation_code"]
    box = activate(client, code, "VCR-1").json()
    h = bearer(box["token"])
    for kind, n in (("cnc", 120), ("virus", 30), ("ips1", 50), ("minor", 40)):
        batch = _severe_batch(n, kind)
        assert client.post("/api/v1/alarms", json=batch, headers=h).json()["accepted"] == n
        assert client.post("/api/v1/alarms", json=batch, headers=h).json()["duplicates"] == n  # re-sent: not counted
    rows = notify.list_notifications(db)
    assert len(rows) == 1 and rows[0]["kind"] == "severe" and rows[0]["count"] == 200 and rows[0]["status"] == "open"
    s = rows[0]["summary"]
    assert s["by_type"] == {"cnc": 120, "virus": 30, "ips": 50} and s["hosts"] == {"192.0.2.11": 200}
    assert len(s["samples"]) == notify.MAX_SAMPLES
    # the window closes; the notifier takes it (no SMTP server here: it is retried later, not lost)
    past = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) + dt.timedelta(seconds=settings.notify_window_s + 1)
    settings_nomail = settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": 1, "smtp_timeout": 2})
    done = notify.send_due(db, settings_nomail, now=past)
    assert [d["status"] for d in done] == ["retry"] and done[0]["recipients"] == ["yamada@customer.example"]
    # a new alarm after the window was taken opens the next window
    client.post("/api/v1/alarms", json=_severe_batch(1), headers=h)
    rows = notify.list_notifications(db)
    assert [(r["status"], r["count"]) for r in rows] == [("open", 1), ("retry", 200)]
    msg = notify.compose({**rows[1], "id": rows[1]["id"]}, ["yamada@customer.example"], "ops@center.example")
    text = msg.get_content()
    assert "重大なアラーム 200 件 / 200 severe alarms" in str(msg["Subject"])
    assert "感染 PC の C&C サーバーへの通信" in text and "infected PC contacting a C&C server (ATP): 120" in text


def test_offline_and_back_online_are_noticed_once(any_client: TestClient):
    client = any_client
    db, settings = client.app.state.db, client.app.state.settings
    code = sheets.set_sheet(db, "C-1", "VCR-1", SHEET)["activation_code"]
    box = activate(client, code, "VCR-1").json()
    notify.set_prefs(db, "C-1", settings, offline_after_s=300, recipients=["it@customer.example"])
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    with db.write() as conn:  # offline since 4 minutes: not yet
        conn.execute(update(devices).values(status="offline", status_changed_at=now - dt.timedelta(minutes=1),
                                            last_checkin_at=now - dt.timedelta(minutes=4)))
    assert notify.scan_devices(db, settings, now) == {"offline": 0, "online": 0}
    later = now + dt.timedelta(minutes=2)
    assert notify.scan_devices(db, settings, later) == {"offline": 1, "online": 0}
    assert notify.scan_devices(db, settings, later) == {"offline": 0, "online": 0}  # once per offline period
    client.post("/api/v1/checkin", json=checkin_body(), headers=bearer(box["token"]))  # back
    assert notify.scan_devices(db, settings) == {"offline": 0, "online": 1}
    assert notify.scan_devices(db, settings) == {"offline": 0, "online": 0}
    kinds = sorted((r["kind"], r["count"]) for r in notify.list_notifications(db))
    assert kinds == [("offline", 1), ("online", 1)]
    prefs = notify.get_prefs(db, "C-1", settings)
    assert prefs["offline_after_s"] == 300 and prefs["recipients"] == ["it@customer.example"]
    with pytest.raises(ValueError):
        notify.set_prefs(db, "C-1", settings, kinds=["everything"])


def test_operator_routes(tmp_path: Path):
    settings = Settings.model_validate({"db": f"sqlite:///{tmp_path / 'c.db'}", **TEST_SETTINGS})
    from opscenter.app import create_app

    device = create_app(settings)
    with TestClient(device):
        db = device.state.db
        add_operator(db, "alice", "correct horse battery")
        auth = ("alice", "correct horse battery")
        with TestClient(create_operator_app(settings, db, device.openapi)) as op:
            assert op.put("/api/operator/v1/sheets/VCR-1", json={"contract_id": "C-1", "sheet": SHEET}).status_code == 401
            r = op.put("/api/operator/v1/sheets/VCR-1", auth=auth,
                       json={"contract_id": "C-1", "sheet": {**SHEET, "gateway": "10.0.0.1"}})
            assert r.status_code == 422 and r.json()["field"] == "gateway"
            assert r.json()["problems"][0]["ja"] and "subnet" in r.json()["problems"][0]["en"]
            r = op.put("/api/operator/v1/sheets/VCR-1", auth=auth, json={"contract_id": "C-1", "sheet": SHEET})
            assert r.status_code == 200 and r.json()["activation_code"] and r.json()["updated_by"] == "alice"
            r = op.get("/api/operator/v1/sheets/VCR-1", auth=auth)
            assert "settings_sheet:" in r.json()["config_yaml"] and "activation_code" not in r.json()
            assert [x["serial"] for x in op.get("/api/operator/v1/sheets", auth=auth).json()["sheets"]] == ["VCR-1"]
            r = op.get("/api/operator/v1/confirmations", auth=auth)
            assert r.json()["confirmations"][0]["status"] == "not_installed"
            r = op.put("/api/operator/v1/contracts/C-1/notify", auth=auth, json={"window_s": 120, "kinds": ["severe"]})
            assert r.status_code == 200 and r.json()["window_s"] == 120 and r.json()["kinds"] == ["severe"]
            r = op.get("/api/operator/v1/contracts/C-1/notify", auth=auth)
            assert r.json()["effective_recipients"] == ["yamada@customer.example"]
            assert op.get("/api/operator/v1/notifications", auth=auth).json()["notifications"] == []
            assert op.delete("/api/operator/v1/sheets/VCR-1", auth=auth).status_code == 200


def test_cli_sheet_set_show_and_confirmations(tmp_path: Path):
    db = f"sqlite:///{tmp_path / 'c.db'}"
    sheet = tmp_path / "sheet.yaml"
    import yaml

    sheet.write_text(yaml.safe_dump(SHEET, allow_unicode=True), encoding="utf-8")

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "opscenter", *args, "--db", db], capture_output=True, text=True,
                              input=stdin, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=60)

    r = run("sheet", "set", "--contract", "C-1", "--serial", "VCR-1", "--json",
            json.dumps({**SHEET, "management_ip": "192.0.2.255/24"}))
    assert r.returncode == 1 and "management_ip" in r.stderr and "broadcast address" in r.stderr
    assert "ブロードキャストアドレス" in r.stderr and "nothing was stored" in r.stderr
    guide = tmp_path / "guide.txt"
    r = run("sheet", "set", "--contract", "C-1", "--serial", "VCR-1", "--file", str(sheet), "--guide", str(guide))
    assert r.returncode == 0 and "アクティベーションコード / activation code:" in r.stdout, r.stderr
    code = r.stdout.split("activation code: ")[1].split()[0]
    text = guide.read_text(encoding="utf-8")
    assert code in text and "VCR-1" in text and "192.0.2.2/24" in text and "クイックスタートガイド" in text
    r = run("sheet", "show", "--serial", "VCR-1", "--box-config", "--center-url", "https://center.example")
    cfg = yaml.safe_load(r.stdout)
    assert cfg["center"] == {"enabled": True, "serial": "VCR-1", "url": "https://center.example"}
    r = run("confirmations", "--json")
    assert json.loads(r.stdout)[0]["status"] == "not_installed"
    r = run("notify", "set", "--contract", "C-1", "--window-minutes", "5", "--kinds", "severe,offline")
    assert r.returncode == 0 and "5 分 / min" in r.stdout and "yamada@customer.example" in r.stdout
