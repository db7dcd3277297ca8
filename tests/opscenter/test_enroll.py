"""Activation codes, 409 and the replacement flow, token auth, config backups: on SQLite and PostgreSQL."""
from __future__ import annotations

import base64
import datetime as dt
import threading

from opscenter import enroll
from opscenter.db import Database
from opscenter.errors import CenterError
from tests.opscenter.helpers import activate, bearer, checkin_body, deliver_config, issue, make_client


def test_activation_gives_token_license_and_interval(db_url: str):
    with make_client(db_url, heartbeat_interval=45) as c:
        code = issue(c, "C-100", term_days=800)
        r = activate(c, code, "VCR-0001")
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["contract_id"] == "C-100" and body["device_id"].startswith("dev-")
        assert body["heartbeat_interval"] == 45 and body["restore"] is None
        start = dt.datetime.fromisoformat(body["license"]["term_start"].replace("Z", "+00:00"))
        end = dt.datetime.fromisoformat(body["license"]["term_end"].replace("Z", "+00:00"))
        assert (end - start).days == 800
        assert body["server_time"].endswith("Z")
        # only the hash of the token is stored
        with c.app.state.db.read() as conn:
            stored = conn.exec_driver_sql("SELECT token_hash FROM devices").scalar()
        assert stored == enroll.sha256(body["token"]) and body["token"] not in stored
        assert c.post("/api/v1/checkin", json=checkin_body(), headers=bearer(body["token"])).status_code == 200


def test_code_is_single_use(db_url: str):
    with make_client(db_url) as c:
        code = issue(c, "C-1")
        assert activate(c, code, "SN-1").status_code == 201
        again = activate(c, code, "SN-1")
        assert again.status_code == 403 and again.json()["error"] == "invalid_code"
        other = activate(c, code, "SN-2")
        assert other.status_code == 403 and other.json()["error"] == "invalid_code"


def test_code_bound_to_serial_unknown_and_expired_codes(db_url: str):
    with make_client(db_url) as c:
        code = issue(c, "C-2", serial="SN-A")
        wrong = activate(c, code, "SN-B")
        assert wrong.status_code == 403 and wrong.json()["error"] == "invalid_code"
        assert activate(c, code.lower().replace("-", ""), "SN-A").status_code == 201  # typed loosely: still valid
        assert activate(c, "AAAA-BBBB-CCCC-DDDD", "SN-A").json()["error"] == "invalid_code"
        expired = issue(c, "C-3")
        with c.app.state.db.write() as conn:
            conn.exec_driver_sql("UPDATE activation_codes SET expires_at = created_at - interval '1 day'"
                                 if c.app.state.db.dialect == "postgresql" else
                                 "UPDATE activation_codes SET expires_at = datetime(created_at, '-1 day')")
        assert activate(c, expired, "SN-C").json()["error"] == "invalid_code"


def test_second_box_gets_409_without_using_up_the_code(db_url: str):
    with make_client(db_url) as c:
        first = activate(c, issue(c, "C-7"), "OLD-BOX").json()
        code = issue(c, "C-7")
        r = activate(c, code, "NEW-BOX")
        assert r.status_code == 409
        err = r.json()
        assert err["error"] == "already_activated" and "vcr-opscenter replace C-7" in err["message"]
        assert "server_time" in err
        # the old box keeps working, and the code was not consumed: the bound box itself may use it
        assert c.post("/api/v1/checkin", json=checkin_body(), headers=bearer(first["token"])).status_code == 200
        again = activate(c, code, "OLD-BOX")
        assert again.status_code == 201
        assert again.json()["device_id"] == first["device_id"]  # same box: same device, new token
        assert c.post("/api/v1/checkin", json=checkin_body(), headers=bearer(first["token"])).status_code == 401
        assert c.post("/api/v1/checkin", json=checkin_body(),
                      headers=bearer(again.json()["token"])).status_code == 200


def test_replacement_moves_contract_revokes_old_token_and_restores_backup(db_url: str):
    with make_client(db_url) as c:
        old = activate(c, issue(c, "C-9"), "OLD-BOX").json()
        deliver_config(c, old, 1, 2)
        for rev, blob in ((1, b"\x00enc-r1"), (2, b"\x01enc-r2")):
            r = c.post("/api/v1/backups", json={"revision": rev, "blob": base64.b64encode(blob).decode()},
                       headers=bearer(old["token"]))
            assert r.status_code == 201, r.text
            assert r.json()["revision"] == rev and r.json()["size"] == len(blob)
        code = issue(c, "C-9", serial="NEW-BOX", kind="replacement")
        assert activate(c, code, "THIRD-BOX").json()["error"] == "invalid_code"  # bound to the new box's serial
        new = activate(c, code, "NEW-BOX")
        assert new.status_code == 201, new.text
        body = new.json()
        assert body["contract_id"] == "C-9" and body["device_id"] != old["device_id"]
        assert body["restore"]["revision"] == 2
        assert base64.b64decode(body["restore"]["blob"]) == b"\x01enc-r2"
        assert body["license"] == old["license"]  # the term moves with the contract
        r = c.post("/api/v1/checkin", json=checkin_body(), headers=bearer(old["token"]))
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        assert c.post("/api/v1/checkin", json=checkin_body(), headers=bearer(body["token"])).status_code == 200
        from opscenter.views import list_devices, list_events

        active = list_devices(c.app.state.db, 3)
        assert [d["serial"] for d in active] == ["NEW-BOX"]
        everyone = {d["serial"]: d["status"] for d in list_devices(c.app.state.db, 3, include_revoked=True)}
        assert everyone == {"OLD-BOX": "revoked", "NEW-BOX": "online"}
        kinds = {(e["device_id"], e["kind"]) for e in list_events(c.app.state.db)}
        assert (old["device_id"], "revoked") in kinds and (body["device_id"], "replaced") in kinds


def test_backup_limits_and_bad_base64(db_url: str):
    with make_client(db_url, max_backup_bytes=2048) as c:
        tok = activate(c, issue(c, "C-B"), "SN").json()["token"]
        bad = c.post("/api/v1/backups", json={"revision": 1, "blob": "***"}, headers=bearer(tok))
        assert bad.status_code == 400 and bad.json()["error"] == "bad_request"
        big = c.post("/api/v1/backups", json={"revision": 1, "blob": base64.b64encode(b"x" * 3000).decode()},
                     headers=bearer(tok))
        assert big.status_code == 413 and big.json()["error"] == "too_large"
        assert c.post("/api/v1/backups", json={"revision": 1, "blob": "AAAA"}).status_code == 401


def _race(n: int, fn) -> list[object]:  # type: ignore[no-untyped-def]
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except CenterError as exc:
            results[i] = exc.code

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_concurrent_activations_with_one_code_let_exactly_one_win(db_url: str):
    db = Database(db_url, pool_size=10)
    db.create_tables()
    try:
        code = enroll.issue_code(db, "C-RACE").code
        results = _race(8, lambda i: enroll.activate(db, code=code, serial=f"SN-{i}", hostname="", agent_version="",
                                                     client_ip=None, heartbeat_interval=60)["device_id"])
        winners = [r for r in results if isinstance(r, str) and r.startswith("dev-")]
        assert len(winners) == 1, results
        assert sorted(r for r in results if r not in winners) == ["invalid_code"] * 7
        # two different codes for one contract, two boxes at once: one is bound, the other gets 409
        c1, c2 = enroll.issue_code(db, "C-RACE2").code, enroll.issue_code(db, "C-RACE2").code
        results = _race(2, lambda i: enroll.activate(db, code=(c1, c2)[i], serial=f"BOX-{i}", hostname="",
                                                     agent_version="", client_ip=None,
                                                     heartbeat_interval=60)["device_id"])
        assert sorted(str(r)[:4] for r in results) == ["alre", "dev-"], results
    finally:
        db.dispose()
