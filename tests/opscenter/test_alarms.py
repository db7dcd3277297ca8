"""Alarm ingest: dedup by (device, event_id) also under concurrent re-sends, 413 limits, 429 Retry-After, 401."""
from __future__ import annotations

import json
import threading
import uuid

from opscenter import alarms as alarm_store
from opscenter import enroll
from opscenter.db import Database
from tests.opscenter.helpers import activate, batch, bearer, checkin_body, issue, make_client


def test_resent_batch_is_stored_once(db_url: str):
    with make_client(db_url) as c:
        box = activate(c, issue(c, "C-1"), "SN-1").json()
        other = activate(c, issue(c, "C-2"), "SN-2").json()
        b = batch(50)
        first = c.post("/api/v1/alarms", json=b, headers=bearer(box["token"]))
        assert first.status_code == 200 and first.json()["accepted"] == 50 and first.json()["duplicates"] == 0
        again = c.post("/api/v1/alarms", json=b, headers=bearer(box["token"])).json()
        assert (again["accepted"], again["duplicates"]) == (0, 50)
        # half old, half new, plus a repeat inside the batch
        ids = [e["event_id"] for e in b["events"][:25]] + [str(uuid.uuid4()) for _ in range(25)]
        mixed = c.post("/api/v1/alarms", json=batch(0, ids=ids + ids[-1:]), headers=bearer(box["token"])).json()
        assert (mixed["accepted"], mixed["duplicates"]) == (25, 26)
        # the same event ids from another box are other events
        theirs = c.post("/api/v1/alarms", json=b, headers=bearer(other["token"])).json()
        assert theirs["accepted"] == 50
        db = c.app.state.db
        assert alarm_store.count(db, box["device_id"]) == 75 and alarm_store.count(db) == 125
        newest = alarm_store.recent(db, device_id=box["device_id"], limit=1)[0]
        assert newest["event_type"] == "alert" and newest["signature"].startswith("VCR outbound telnet")
        assert newest["event"]["alert"]["signature_id"] == 2000001 and newest["severity"] == 2


def test_gap_event_is_stored(db_url: str):
    with make_client(db_url) as c:
        box = activate(c, issue(c, "C-1"), "SN-1").json()
        gap = {"event_id": str(uuid.uuid4()), "severity": 4,
               "event": {"event_type": "gap", "dropped": 120, "by_severity": {"3": 100, "4": 20}}}
        r = c.post("/api/v1/alarms", json={"events": [gap]}, headers=bearer(box["token"]))
        assert r.json()["accepted"] == 1
        [row] = alarm_store.recent(c.app.state.db)
        assert row["event_type"] == "gap" and row["event"]["dropped"] == 120


def test_concurrent_resends_store_each_event_once(db_url: str):
    """16 threads send overlapping batches at once (retries racing the first attempt)."""
    db = Database(db_url, pool_size=16)
    db.create_tables()
    try:
        code = enroll.issue_code(db, "C-RACE").code
        device = enroll.activate(db, code=code, serial="SN", hostname="", agent_version="", client_ip=None,
                                 heartbeat_interval=60)["device_id"]
        ids = [str(uuid.uuid4()) for _ in range(400)]
        events = batch(0, ids=ids)["events"]
        barrier = threading.Barrier(16)
        totals: list[dict[str, int]] = []
        lock = threading.Lock()

        def send(i: int) -> None:
            part = events[(i % 4) * 100:(i % 4) * 100 + 200]  # overlapping windows, each id sent 4-8 times
            barrier.wait()
            r = alarm_store.ingest(db, device, part)
            with lock:
                totals.append(r)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        parts = [events[(i % 4) * 100:(i % 4) * 100 + 200] for i in range(16)]
        sent_ids = {e["event_id"] for p in parts for e in p}
        assert len(sent_ids) == 400
        assert sum(t["accepted"] for t in totals) == 400 == alarm_store.count(db, device)
        assert sum(t["accepted"] + t["duplicates"] for t in totals) == sum(len(p) for p in parts)
    finally:
        db.dispose()


def test_413_over_event_count_and_bytes(tmp_path):  # type: ignore[no-untyped-def]
    with make_client(f"sqlite:///{tmp_path / 'c.db'}", max_alarm_events=100, max_alarm_bytes=64 * 1024) as c:
        tok = activate(c, issue(c, "C-1"), "SN-1").json()["token"]
        many = c.post("/api/v1/alarms", json=batch(101), headers=bearer(tok))
        assert many.status_code == 413
        err = many.json()
        assert err["error"] == "too_large" and err["max_events"] == 100 and "at most 100 events" in err["message"]
        big = {"events": [{"event_id": "x", "severity": 3, "event": {"payload": "A" * 70_000}}]}
        r = c.post("/api/v1/alarms", json=big, headers=bearer(tok))
        assert r.status_code == 413 and r.json()["max_bytes"] == 64 * 1024 and "split the batch" in r.json()["message"]
        assert c.post("/api/v1/alarms", json=batch(100), headers=bearer(tok)).json()["accepted"] == 100
        assert alarm_store.count(c.app.state.db) == 100  # nothing of the refused batches was stored
        # other bodies have their own limit
        huge = c.post("/api/v1/checkin", content=json.dumps(checkin_body(x="y" * (2 << 20))),
                      headers={**bearer(tok), "Content-Type": "application/json"})
        assert huge.status_code == 413


def test_429_with_retry_after_per_device(tmp_path):  # type: ignore[no-untyped-def]
    with make_client(f"sqlite:///{tmp_path / 'c.db'}", alarm_rate=0.5, alarm_burst=3) as c:
        a = activate(c, issue(c, "C-1"), "SN-1").json()["token"]
        b = activate(c, issue(c, "C-2"), "SN-2").json()["token"]
        codes = [c.post("/api/v1/alarms", json=batch(1), headers=bearer(a)).status_code for _ in range(3)]
        assert codes == [200, 200, 200]
        r = c.post("/api/v1/alarms", json=batch(1), headers=bearer(a))
        assert r.status_code == 429
        assert r.headers["Retry-After"] == "2"  # one token at 0.5/s
        assert r.json()["error"] == "rate_limited" and r.json()["retry_after"] == 2 and "server_time" in r.json()
        assert c.post("/api/v1/alarms", json=batch(1), headers=bearer(b)).status_code == 200  # per device
        assert alarm_store.count(c.app.state.db) == 4


def test_checkin_rate_limit_and_global_alarm_limit(tmp_path):  # type: ignore[no-untyped-def]
    with make_client(f"sqlite:///{tmp_path / 'c.db'}", checkin_rate=0.1, checkin_burst=2,
                     alarm_global_rate=1, alarm_global_burst=2) as c:
        toks = [activate(c, issue(c, f"C-{i}"), f"SN-{i}").json()["token"] for i in range(3)]
        codes = [c.post("/api/v1/checkin", json=checkin_body(), headers=bearer(toks[0])).status_code
                 for _ in range(3)]
        assert codes == [200, 200, 429]
        codes = [c.post("/api/v1/alarms", json=batch(1), headers=bearer(t)).status_code for t in toks]
        assert codes == [200, 200, 429]


def test_401_carries_server_time_and_error_shape(tmp_path):  # type: ignore[no-untyped-def]
    with make_client(f"sqlite:///{tmp_path / 'c.db'}") as c:
        for headers in ({}, bearer("not-a-token"), {"Authorization": "Basic Zm9vOmJhcg=="}):
            r = c.post("/api/v1/alarms", json=batch(1), headers=headers)
            assert r.status_code == 401, headers
            body = r.json()
            assert set(body) == {"error", "message", "server_time"} and body["error"] == "unauthorized"
            assert body["server_time"].endswith("Z") and "WWW-Authenticate" in r.headers
        missing = c.post("/api/v1/activate", json={"serial": "x"})
        assert missing.status_code == 422 and "activation_code" in missing.json()["message"]
        assert missing.json()["error"] == "invalid" and missing.json()["field"] == "activation_code"
        assert c.get("/api/v1/nothing").json()["error"] == "not_found"
        assert c.get("/api/v1/activate").json()["error"] == "method_not_allowed"
        schema = c.app.openapi()  # served on the operator listener only (tests/opscenter/test_operator.py)
        assert set(schema["paths"]) >= {"/api/v1/activate", "/api/v1/checkin", "/api/v1/alarms",
                                        "/api/v1/tasks/{task_id}/status", "/api/v1/backups", "/api/v1/time"}
