"""Check-ins (latest health + bounded history), tasks, desired versions, offline detection."""
from __future__ import annotations

import time

from sqlalchemy import func, select

from opscenter import fleet
from opscenter.db import checkins, health
from opscenter.views import list_devices, list_events
from tests.opscenter.helpers import activate, bearer, checkin_body, issue, make_client


def _enrolled(c, contract: str = "C-1", serial: str = "SN-1") -> dict:  # type: ignore[no-untyped-def]
    r = activate(c, issue(c, contract), serial)
    assert r.status_code == 201, r.text
    return r.json()


def test_checkin_is_stored_and_shown(db_url: str):
    with make_client(db_url, checkin_history=3, heartbeat_interval=30) as c:
        box = _enrolled(c)
        pc = {"checked_at": "2026-11-25T21:59:00Z", "ok": False,
              "results": [{"feature": "ips", "proto": "tcp", "port": 443, "ok": False},
                          {"feature": "dns", "proto": "udp", "port": 53, "ok": True}]}
        for i in range(5):
            r = c.post("/api/v1/checkin", json=checkin_body(portcheck=pc, health={"cpu_percent": 10 + i}),
                       headers=bearer(box["token"]))
            assert r.status_code == 200, r.text
        reply = r.json()
        assert reply["next_checkin"] == 30 and reply["tasks"] == []
        assert reply["desired"] == {"agent_version": None, "config_revision": None, "signatures": {}}
        assert reply["license"]["term_end"] == box["license"]["term_end"]
        db = c.app.state.db
        with db.read() as conn:
            rows = conn.execute(select(checkins.c.cpu_percent).where(checkins.c.device_id == box["device_id"])
                                .order_by(checkins.c.id)).scalars().all()
            latest = conn.execute(select(health.c.body)).scalar_one()
        assert rows == [12, 13, 14]  # bounded history: the newest 3
        assert latest["health"]["cpu_percent"] == 14 and latest["engines"]["ips"]["rules_loaded"] == 24811
        [dev] = list_devices(db, 3)
        assert dev["status"] == "online" and dev["checkins"] == 5
        assert dev["portcheck"] == {"checked_at": "2026-11-25T21:59:00Z", "ok": False, "failed": ["ips TCP443"]}
        assert dev["versions"] == {"agent": "0.1.0", "config_revision": 3,
                                   "signatures": {"ips": "2026.11.25.1", "webcat": "2026.11.20"}}


def test_unknown_fields_are_kept_bad_types_are_422_and_bad_json_is_400(db_url: str):
    with make_client(db_url) as c:
        box = _enrolled(c)
        ok = c.post("/api/v1/checkin", json=checkin_body(newer_field={"x": 1}), headers=bearer(box["token"]))
        assert ok.status_code == 200
        with c.app.state.db.read() as conn:
            assert conn.execute(select(health.c.body)).scalar_one()["newer_field"] == {"x": 1}
        bad = c.post("/api/v1/checkin", json={"config_revision": "three"}, headers=bearer(box["token"]))
        assert bad.status_code == 422
        err = bad.json()
        assert err["error"] == "invalid" and "config_revision" in err["message"] and "server_time" in err
        assert err["field"] == "config_revision"
        notjson = c.post("/api/v1/checkin", content=b"{nope", headers={**bearer(box["token"]),
                                                                       "Content-Type": "application/json"})
        assert notjson.status_code == 400 and notjson.json()["error"] == "bad_request"


def test_tasks_are_delivered_until_the_box_reports(db_url: str):
    with make_client(db_url) as c:
        box, other = _enrolled(c), _enrolled(c, "C-2", "SN-2")
        db = c.app.state.db
        tid = fleet.add_task(db, box["device_id"], "config", {"revision": 4})
        for _ in range(2):  # delivered again until the box says something
            r = c.post("/api/v1/checkin", json=checkin_body(), headers=bearer(box["token"])).json()
            assert r["tasks"] == [{"task_id": tid, "kind": "config", "params": {"revision": 4}}]
        assert c.post("/api/v1/checkin", json=checkin_body(), headers=bearer(other["token"])).json()["tasks"] == []
        stolen = c.post(f"/api/v1/tasks/{tid}/status", json={"status": "done"}, headers=bearer(other["token"]))
        assert stolen.status_code == 404 and stolen.json()["error"] == "not_found"
        assert c.post(f"/api/v1/tasks/{tid}/status", json={"status": "bogus"},
                      headers=bearer(box["token"])).status_code == 422
        r = c.post(f"/api/v1/tasks/{tid}/status", json={"status": "running", "detail": "applying"},
                   headers=bearer(box["token"]))
        assert r.status_code == 200 and r.json() == {}
        assert c.post("/api/v1/checkin", json=checkin_body(), headers=bearer(box["token"])).json()["tasks"] == []
        c.post(f"/api/v1/tasks/{tid}/status", json={"status": "done", "detail": "ok"}, headers=bearer(box["token"]))
        [t] = fleet.list_tasks(db, box["device_id"])
        assert (t["status"], t["detail"]) == ("done", "ok")


def test_desired_versions_global_and_per_device(db_url: str):
    with make_client(db_url) as c:
        box, other = _enrolled(c), _enrolled(c, "C-2", "SN-2")
        db = c.app.state.db
        fleet.set_desired(db, "*", agent_version="0.2.0", signatures={"ips": "2026.12.01.1"})
        fleet.set_desired(db, box["device_id"], config_revision=7, signatures={"webcat": "w2"})
        mine = c.post("/api/v1/checkin", json=checkin_body(), headers=bearer(box["token"])).json()["desired"]
        theirs = c.post("/api/v1/checkin", json=checkin_body(), headers=bearer(other["token"])).json()["desired"]
        assert mine == {"agent_version": "0.2.0", "config_revision": 7,
                        "signatures": {"ips": "2026.12.01.1", "webcat": "w2"}}
        assert theirs == {"agent_version": "0.2.0", "config_revision": None, "signatures": {"ips": "2026.12.01.1"}}


def test_offline_after_three_missed_checkins_then_online_again(tmp_path):  # type: ignore[no-untyped-def]
    # 1 s, not less: a box checking in every half interval must not look offline when the machine
    # running the suite stalls this process for a second (it did once with 0.4 s, in a full run)
    interval = 1.0
    with make_client(f"sqlite:///{tmp_path / 'c.db'}", heartbeat_interval=interval, sweep_interval=0.1) as c:
        db = c.app.state.db
        box, quiet = _enrolled(c), _enrolled(c, "C-2", "SN-2")
        deadline = time.monotonic() + 3 * interval + 0.8
        while time.monotonic() < deadline:  # box keeps checking in; the other one never does
            assert c.post("/api/v1/checkin", json=checkin_body(), headers=bearer(box["token"])).status_code == 200
            time.sleep(interval / 2)
        states = {d["serial"]: d["status"] for d in list_devices(db, 3)}
        assert states == {"SN-1": "online", "SN-2": "offline"}
        offline = list_events(db, kind="offline")
        assert [e["device_id"] for e in offline] == [quiet["device_id"]]  # recorded once, by the sweep
        assert offline[0]["detail"]["missed"] == 3
        # the box goes quiet too: offline after 3 x interval, not before
        time.sleep(2 * interval)
        assert {d["serial"]: d["status"] for d in list_devices(db, 3)}["SN-1"] == "online"
        time.sleep(1.5 * interval + 0.3)
        assert {d["serial"]: d["status"] for d in list_devices(db, 3)}["SN-1"] == "offline"
        deadline = time.monotonic() + 5  # the sweep records the transition within a sweep interval or so
        while not list_events(db, device_id=box["device_id"], kind="offline") and time.monotonic() < deadline:
            time.sleep(0.05)
        c.post("/api/v1/checkin", json=checkin_body(), headers=bearer(box["token"]))
        assert {d["serial"]: d["status"] for d in list_devices(db, 3)}["SN-1"] == "online"
        kinds = [e["kind"] for e in reversed(list_events(db, device_id=box["device_id"]))]
        assert kinds == ["activated", "offline", "online"]
        with db.read() as conn:
            assert conn.execute(select(func.count()).select_from(checkins)).scalar() >= 5
