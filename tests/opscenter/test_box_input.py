"""Security issue, item 6: one box must not break the operator's views, nor write to the operator's terminal.

What a box sends is validated when it arrives (422 naming the field); strings shown in tables must be
plain text (a serial with ESC is refused at activation); whatever is already stored is shown with its
control characters as visible escapes, and the views survive any stored JSON.
"""
from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opscenter import views
from opscenter.alarms import recent
from opscenter.db import Database, health, utcnow
from opscenter.render import alarms_text, devices_text, events_text, table
from opscenter.web import page
from tests.opscenter.helpers import activate, bearer, checkin_body, issue, make_client

ESC = "\x1b"
NASTY = ["\x1b[2J\x1b[31m", "\x9b31m", "\x07", "\u202eevil", "\x7f", "\r", "\u2028"]


def _raw_unsafe(text: str) -> list[str]:
    """Raw control / format characters in ``text`` (newlines of the layout itself aside)."""
    from opscenter.textsafe import is_unsafe

    return [c for c in text if c != "\n" and is_unsafe(c)]


def _enrolled(c: Any, contract: str = "C-1", serial: str = "SN-1") -> dict[str, Any]:
    r = activate(c, issue(c, contract), serial)
    assert r.status_code == 201, r.text
    return r.json()


@pytest.mark.parametrize("field, value", [("serial", "VCR\x1b]0;pwned\x07"), ("serial", "VCR\x9b2J"),
                                          ("serial", "VCR\u202e1000"), ("hostname", "box\x1b[2J"),
                                          ("agent_version", "0.1\r\n")])
def test_activation_refuses_control_characters(tmp_path: Path, field: str, value: str):
    with make_client(f"sqlite:///{tmp_path / 'c.db'}") as c:
        body = {"serial": "VCR-1", "activation_code": issue(c, "C-1"), "agent_version": "0.1.0", "hostname": "h",
                field: value}
        r = c.post("/api/v1/activate", json=body)
        assert r.status_code == 422, r.text
        err = r.json()
        assert err["error"] == "invalid" and err["field"] == field and "control" in err["message"]
        assert views.list_devices(c.app.state.db, 3) == []
        # the code was not used up
        assert c.post("/api/v1/activate", json={**body, field: "plain"}).status_code == 201


@pytest.mark.parametrize("part, field", [
    ({"portcheck": {"ok": False, "results": [{"ok": False, "proto": 6, "port": 443}]}}, "portcheck.results.0.proto"),
    ({"portcheck": {"ok": False, "results": [{"ok": False, "check": "tcp/443", "port": 70000}]}},
     "portcheck.results.0.port"),
    ({"portcheck": {"ok": "yes"}}, "portcheck.ok"),
    ({"portcheck": {"results": [{"ok": False, "feature": "ips\x1b[2J"}]}}, "portcheck.results.0.feature"),
    ({"portcheck": {"results": "all good"}}, "portcheck.results"),
    ({"health": {"cpu_percent": "high"}}, "health.cpu_percent"),
    ({"health": {"cpu_percent": 1000}}, "health.cpu_percent"),
    ({"health": {"uptime_s": -5}}, "health.uptime_s"),
    ({"health": {"load": [1, 2, 3, 4]}}, "health.load"),
    ({"health": {"interfaces": {"lan0": {"rx_bytes": -1}}}}, "health.interfaces.lan0.rx_bytes"),
    ({"health": []}, "health"),
    ({"agent_version": 7}, "agent_version"),
    ({"agent_version": "0.1\x1b[31m"}, "agent_version"),
    ({"signatures": {"ips": {"v": 1}}}, "signatures.ips"),
    ({"signatures": {"ips": "2026\x9b1m"}}, "signatures.ips"),
    ({"spool": {"pending": 2**40}}, "spool.pending"),
    ({"config_revision": True}, "config_revision"),
])
def test_checkin_is_validated_on_arrival(tmp_path: Path, part: dict[str, Any], field: str):
    with make_client(f"sqlite:///{tmp_path / 'c.db'}") as c:
        box = _enrolled(c)
        r = c.post("/api/v1/checkin", json=checkin_body(**part), headers=bearer(box["token"]))
        assert r.status_code == 422, r.text
        err = r.json()
        assert err["error"] == "invalid" and err["field"] == field and field.split(".")[-1] in err["message"]
        with c.app.state.db.read() as conn:
            assert conn.execute(health.select()).first() is None  # nothing of it was stored
        [dev] = views.list_devices(c.app.state.db, 3)  # and the views work
        assert dev["portcheck"] is None


def test_non_json_numbers_are_400_not_500(db_url: str):
    with make_client(db_url) as c:
        box = _enrolled(c)
        for raw in (b'{"health": {"cpu_percent": NaN}}', b'{"engines": {"ips": {"x": Infinity}}}',
                    b'{"engines": {"ips": {"x": 1e999}}}'):
            r = c.post("/api/v1/checkin", content=raw, headers={**bearer(box["token"]),
                                                                "Content-Type": "application/json"})
            assert r.status_code == 400 and r.json()["error"] == "bad_request", r.text
        gap = b'{"events": [{"event_id": "a", "event": {"event_type": "alert", "x": NaN}}]}'
        r = c.post("/api/v1/alarms", content=gap, headers={**bearer(box["token"]), "Content-Type": "application/json"})
        assert r.status_code == 400, r.text  # on PostgreSQL (jsonb) this was a 500 at insert


def test_what_the_agent_really_sends_is_accepted(tmp_path: Path):
    """The check-in body built by the agent's own code (agent/health.py, agent/portcheck.py) validates."""
    from agent.config import load_config
    from agent.link.health import Versions, heartbeat_body
    from agent.link.portcheck import CheckResult, PortcheckResult

    root = Path(__file__).resolve().parents[2]
    cfg = load_config(root / "config" / "vcr-agent.yaml")
    pc = PortcheckResult("2026-11-25T22:00:00Z", [
        CheckResult("udp/53", "192.0.2.53", True, "192.0.2.53", 3.2, detail="center.example -> 198.51.100.80"),
        CheckResult("tcp/443", "center.example", False, "198.51.100.80", error="timeout", detail="timed out"),
        CheckResult("udp/123", "ntp.example", None, error="unresolved")], center_host="center.example")
    body = heartbeat_body(cfg, Versions(cfg, str(root / "config" / "vcr-agent.yaml")), now_iso="2026-11-25T22:00:00Z",
                          spool={"pending": 3, "dropped": 1, "dropped_by_severity": {"1": 0, "2": 1, "3": 0, "4": 0,
                                                                                     "other": 0}},
                          portcheck=pc.as_dict(), link={"problem": None, "clock_offset_s": 0.01},
                          bundles={"ips": "2026.11.25.1"})
    body["config_revision"] = 3
    body = json.loads(json.dumps(body))
    with make_client(f"sqlite:///{tmp_path / 'c.db'}") as c:
        box = _enrolled(c)
        r = c.post("/api/v1/checkin", json=body, headers=bearer(box["token"]))
        assert r.status_code == 200, r.text
        [dev] = views.list_devices(c.app.state.db, 3)
        assert dev["portcheck"]["ok"] is False and dev["portcheck"]["failed"] == ["tcp/443"]
        with c.app.state.db.read() as conn:
            stored = conn.execute(health.select().with_only_columns(health.c.body)).scalar_one()
        assert stored["health"]["agent"] == body["health"]["agent"]  # unknown parts are kept as sent
        assert stored["portcheck"]["fixes"] == body["portcheck"]["fixes"]


def _store_body(db: Database, device_id: str, body: Any) -> None:
    up = db.insert(health).values(device_id=device_id, received_at=utcnow(), body=body)
    with db.write() as conn:
        conn.execute(up.on_conflict_do_update(index_elements=[health.c.device_id], set_={"body": body}))


def test_garbage_stored_before_validation_is_shown_safely(tmp_path: Path):
    """What an unpatched center stored (the reviewer's ``"proto": 6``, ESC in names) still renders."""
    with make_client(f"sqlite:///{tmp_path / 'c.db'}") as c:
        db = c.app.state.db
        box = _enrolled(c, "C-OLD", "SN-OLD")
        with db.write() as conn:  # a serial with ESC, accepted at activation before the fix
            conn.exec_driver_sql("UPDATE devices SET serial = ?, hostname = ?, agent_version = ?",
                                 ("VCR\x1b]0;owned\x07\x1b[2J", "h\x9b2J", "0.1\x1b[5m"))
        _store_body(db, box["device_id"], {
            "portcheck": {"ok": False, "checked_at": "\x1b[31mnow", "results": [
                {"ok": False, "proto": 6, "port": 443}, {"ok": False, "feature": "ips\x1b[2J", "proto": ["x"],
                                                         "port": "443"}]},
            "health": {"cpu_percent": "high", "memory_percent": True, "uptime_s": 1e308 * 10, "load": "x"},
            "signatures": {"ips\x1b[2J": "v\x9b1m", "x": {"nested": 1}}, "spool": {"pending": "many"}})
        c.post("/api/v1/alarms", headers=bearer(box["token"]), json={"events": [{
            "event_id": str(uuid.uuid4()), "severity": 1,
            "event": {"event_type": "alert\x1b[2J", "src_ip": "10.0.0.1\x1b[31m", "src_port": 1, "dest_ip": "x",
                      "dest_port": 2, "proto": "TCP\x9b", "alert": {"signature": "evil\x1b]0;title\x07"}}}]})
        from opscenter.fleet import add_task, task_status
        from opscenter.enroll import authenticate

        tid = add_task(db, box["device_id"], "upgrade", {})
        task_status(db, authenticate(db, box["token"]), tid, "failed", "boom\x1b[2J\x9b1m")
        devs = views.list_devices(db, 3)
        assert devs[0]["portcheck"]["failed"] == ["6443", "ips\\x1b[2J"]  # proto 6: no crash, shown as sent
        text = devices_text(devs)
        alarms = recent(db)
        for out in (text, alarms_text(alarms), events_text(views.list_events(db)),
                    page(devs, alarms, "2026-01-01T00:00:00Z")):
            assert _raw_unsafe(out) == [], repr(out)
        assert "VCR\\x1b]0;owned\\x07\\x1b[2J" in text  # visible, not executed
        from opscenter.fleet import list_tasks

        cells = [[t["detail"]] for t in list_tasks(db)]
        assert _raw_unsafe(table(["detail"], cells)) == [] and "boom\\x1b[2J" in table(["detail"], cells)


def test_cli_output_carries_no_raw_control_characters(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from opscenter.cli import main

    url = f"sqlite:///{tmp_path / 'c.db'}"
    with make_client(url) as c:
        box = _enrolled(c)
        with c.app.state.db.write() as conn:
            conn.exec_driver_sql("UPDATE devices SET serial = ?", ("VCR\x1b[2J\x9b31m\u202e",))
        _store_body(c.app.state.db, box["device_id"], {"portcheck": {"ok": False, "results": [
            {"ok": False, "proto": 6, "port": 443}]}})
        c.post("/api/v1/alarms", headers=bearer(box["token"]), json={"events": [{
            "event_id": "e1", "severity": 2, "event": {"event_type": "alert",
                                                       "alert": {"signature": "sig\x9b2J\x1b[31m"}}}]})
    for args in (["devices"], ["devices", "--json"], ["alarms"], ["alarms", "--json"], ["events", "--json"],
                 ["task", "list"]):
        assert main(args + ["--db", url]) == 0, args
        out = capsys.readouterr().out
        assert _raw_unsafe(out) == [], (args, repr(out))
    assert main(["devices", "--json", "--db", url]) == 0
    devs = json.loads(capsys.readouterr().out)  # still valid JSON, the data intact
    assert devs[0]["serial"] == "VCR\x1b[2J\x9b31m\u202e" and devs[0]["portcheck"]["failed"] == ["6443"]


def test_operator_input_is_plain_too(tmp_path: Path):
    from opscenter.enroll import issue_code

    with make_client(f"sqlite:///{tmp_path / 'c.db'}") as c:
        for kw in ({"contract_id": "C\x1b[2J"}, {"contract_id": "C-1", "serial": "S\x9b1m"}):
            with pytest.raises(ValueError):
                issue_code(c.app.state.db, **kw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["ok", "proto", "protocol", "port", "feature", "name", "check", "results", "checked_at",
                         "cpu_percent", "uptime_s", "load", "x"]) | st.text(max_size=5), inner, max_size=5),
    max_leaves=20)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(portcheck=json_values, health_part=json_values, sigs=json_values)
def test_views_survive_any_stored_body(portcheck: Any, health_part: Any, sigs: Any):
    body = {"portcheck": portcheck, "health": health_part, "signatures": sigs}
    pc = views.portcheck_summary(body)
    h = views.health_summary(body)
    dev = {"device_id": "dev-1", "contract_id": "C", "serial": "S", "last_checkin": None, "status": "online",
           "health": h, "portcheck": pc, "alarms_today": None,
           "versions": {"agent": "0.1", "config_revision": 1,
                        "signatures": {str(k): v for k, v in sigs.items()} if isinstance(sigs, dict) else {}}}
    for out in (devices_text([dev]), page([dev], [], "now")):
        assert _raw_unsafe(out) == []
