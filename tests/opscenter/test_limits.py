"""Security issue, item 7 (center): a per-device alarm storage quota, the fleet-wide limiter on by default, and
rate limits that hold across worker processes (the buckets are rows of the database)."""
from __future__ import annotations

from pathlib import Path

import requests
from fastapi.testclient import TestClient

from opscenter import alarms as alarm_store
from opscenter.app import create_app
from opscenter.settings import Settings
from lab.center import start_center
from opscenter.views import list_devices, list_events
from tests.opscenter.helpers import TEST_SETTINGS, activate, batch, bearer, checkin_body, issue, make_client


def test_global_alarm_limiter_is_on_by_default_and_quota_too():
    s = Settings()
    assert s.alarm_global_rate > 0 and s.alarm_global_burst >= 1
    assert s.alarm_quota_events > 0 and s.alarm_quota_bytes > 0


def test_alarm_quota_per_device_per_day(db_url: str):
    with make_client(db_url, alarm_quota_events=100) as c:
        a = activate(c, issue(c, "C-1"), "SN-1").json()
        b = activate(c, issue(c, "C-2"), "SN-2").json()
        first = batch(60)
        assert c.post("/api/v1/alarms", json=first, headers=bearer(a["token"])).json()["accepted"] == 60
        again = c.post("/api/v1/alarms", json=first, headers=bearer(a["token"])).json()  # a retry is free
        assert (again["accepted"], again["duplicates"]) == (0, 60)
        assert c.post("/api/v1/alarms", json=batch(60), headers=bearer(a["token"])).status_code == 200  # 120 now
        r = c.post("/api/v1/alarms", json=batch(5), headers=bearer(a["token"]))
        assert r.status_code == 429, r.text
        err = r.json()
        assert err["error"] == "quota_exceeded" and "quota 100" in err["message"] and "server_time" in err
        assert 1 <= int(r.headers["Retry-After"]) <= 86400 and err["retry_after"] == int(r.headers["Retry-After"])
        assert c.post("/api/v1/alarms", json=batch(5), headers=bearer(a["token"])).status_code == 429
        assert c.post("/api/v1/alarms", json=batch(5), headers=bearer(b["token"])).status_code == 200  # per device
        db = c.app.state.db
        assert alarm_store.count(db, a["device_id"]) == 120
        usage = {d["serial"]: d["alarms_today"] for d in list_devices(db, 3)}
        assert usage["SN-1"]["events"] == 120 and usage["SN-1"]["refused_batches"] == 2
        assert usage["SN-1"]["refused_events"] == 10 and usage["SN-2"]["refused_batches"] == 0
        assert [e["kind"] for e in list_events(db, device_id=a["device_id"], kind="alarm_quota")] == ["alarm_quota"]
        from opscenter.render import devices_text

        line = next(ln for ln in devices_text(list_devices(db, 3)).splitlines() if "SN-1" in ln)
        assert "over quota: 2 batches, 10 events refused" in line


def test_alarm_quota_in_bytes(tmp_path: Path):
    with make_client(f"sqlite:///{tmp_path / 'c.db'}", alarm_quota_bytes=20_000) as c:
        a = activate(c, issue(c, "C-1"), "SN-1").json()
        codes = [c.post("/api/v1/alarms", json=batch(20), headers=bearer(a["token"])).status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]  # ~8.5 kB a batch
        [dev] = list_devices(c.app.state.db, 3)
        assert dev["alarms_today"]["bytes"] >= 20_000 and dev["alarms_today"]["refused_batches"] == 2


def _two_workers(tmp_path: Path, **overrides: object) -> tuple[TestClient, TestClient]:
    """Two applications on one database: what two worker processes of one center are."""
    settings = Settings.model_validate({"db": f"sqlite:///{tmp_path / 'c.db'}", **TEST_SETTINGS, **overrides})
    return TestClient(create_app(settings)), TestClient(create_app(settings, sweep=False))


def test_limits_hold_across_workers(tmp_path: Path):
    w1, w2 = _two_workers(tmp_path, alarm_rate=0.001, alarm_burst=3, checkin_rate=0.001, checkin_burst=2,
                          activate_rate=0.001, activate_burst=4, alarm_global_rate=0.001, alarm_global_burst=5)
    with w1, w2:
        workers = [w1, w2]
        toks = [activate(workers[i % 2], issue(w1, f"C-{i}"), f"SN-{i}").json()["token"] for i in range(2)]
        bad = [activate(workers[i % 2], "AAAA-BBBB-CCCC-DDDD", "X").status_code for i in range(4)]
        assert bad == [403, 403, 429, 429]  # 4 per address in all, not 4 per worker
        codes = [workers[i % 2].post("/api/v1/alarms", json=batch(1), headers=bearer(toks[0])).status_code
                 for i in range(8)]
        assert codes.count(200) == 3 and codes[3:] == [429] * 5  # per device, over both workers
        codes = [workers[i % 2].post("/api/v1/alarms", json=batch(1), headers=bearer(toks[1])).status_code
                 for i in range(4)]
        assert codes == [200, 200, 429, 429]  # the fleet-wide bucket (5) is shared too: 3 + 2
        codes = [workers[i % 2].post("/api/v1/checkin", json=checkin_body(), headers=bearer(toks[0])).status_code
                 for i in range(4)]
        assert codes == [200, 200, 429, 429]


def test_two_worker_processes_share_one_alarm_bucket(tmp_path: Path):
    """The real server: 2 uvicorn workers, fresh connections spread over them, one per-device bucket."""
    with start_center(tmp_path / "mw", "127.0.0.1:0", workers=2,
                      settings={**TEST_SETTINGS, "alarm_rate": 0.001, "alarm_burst": 5}) as c:
        code = c.issue_code("C-MW", "VCR-MW")
        box = requests.post(f"{c.url}/api/v1/activate", verify=c.ca, timeout=10, json={
            "serial": "VCR-MW", "activation_code": code}).json()
        codes = []
        for _ in range(16):  # a new connection each time: both workers answer some
            r = requests.post(f"{c.url}/api/v1/alarms", json=batch(1), headers=bearer(box["token"]), verify=c.ca,
                              timeout=10)
            codes.append(r.status_code)
        assert codes.count(200) == 5 and codes.count(429) == 11, codes
        assert c.alarm_count(box["device_id"]) == 5
        # both listeners in both workers: the operator listener answers its own paths only
        s = c.session()
        for _ in range(4):
            assert requests.get(f"{c.operator_url}/", verify=c.ca, timeout=10).status_code == 401
            assert requests.get(f"{c.url}/", verify=c.ca, timeout=10).status_code == 404
            assert s.get(f"{c.operator_url}/api/operator/v1/devices", auth=c.operator_auth, timeout=10,
                         headers={"Connection": "close"}).status_code == 200


def test_buckets_are_pruned(tmp_path: Path):
    from opscenter.db import rate_buckets
    from opscenter.ratelimit import SharedBuckets, prune_buckets

    with make_client(f"sqlite:///{tmp_path / 'c.db'}") as c:
        db = c.app.state.db
        b = SharedBuckets(db, "t", 1.0, 2)
        assert b.take("k", now=1000.0) == 0 and b.take("k", now=1000.0) == 0
        assert b.take("k", now=1000.0) == 1.0 and b.peek("k", now=1000.5) == 0.5
        assert b.take("k", now=1001.0) == 0
        assert prune_buckets(db) >= 1  # untouched for a day (time 1000 is long ago)
        with db.read() as conn:
            assert conn.execute(rate_buckets.select().where(rate_buckets.c.key == "t:k")).first() is None


def test_ipv6_clients_are_limited_per_64():
    from opscenter.ratelimit import address_key

    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("192.0.2.7") == "192.0.2.7" == address_key("::ffff:192.0.2.7")
    assert address_key(None) == "-" and address_key("testclient") == "testclient"
