"""Security issue, item 3: a stolen or compromised box must not plant the configuration its replacement applies.

A backup's revision must be one the center sent to that box (a delivered config task); revisions out of
range are 422, never a 500; a box whose contract has a replacement code issued may store no more
backups; restore and the kept-revisions count look only at trusted backups. SQLite and PostgreSQL.
"""
from __future__ import annotations

import base64
import datetime as dt

from opscenter import fleet
from opscenter.db import backups
from tests.opscenter.helpers import activate, bearer, checkin_body, deliver_config, issue, make_client


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _post(c, box, revision, blob: bytes = b"enc"):  # type: ignore[no-untyped-def]
    return c.post("/api/v1/backups", json={"revision": revision, "blob": _b64(blob)}, headers=bearer(box["token"]))


def test_out_of_range_revisions_are_422_never_500(db_url: str):
    with make_client(db_url) as c:
        box = activate(c, issue(c, "C-R"), "SN-R").json()
        deliver_config(c, box, 1)
        for rev in (2**62, 2**70, 2**31, -1, "3", True, 1.5, None):
            r = _post(c, box, rev)
            assert r.status_code == 422, (rev, r.status_code, r.text)
            body = r.json()
            assert body["error"] == "invalid" and body["field"] == "revision" and "server_time" in body
        assert _post(c, box, 1).status_code == 201


def test_only_revisions_sent_to_this_box_are_stored_and_restored(db_url: str):
    with make_client(db_url) as c:
        old = activate(c, issue(c, "C-P"), "OLD").json()
        other = activate(c, issue(c, "C-Q"), "OTHER").json()
        deliver_config(c, old, 1, 2)
        fleet.add_task(c.app.state.db, old["device_id"], "config", {"revision": 3, "config": "{}"})  # queued only
        deliver_config(c, other, 9)
        assert _post(c, old, 1, b"real-1").status_code == 201
        assert _post(c, old, 2, b"real-2").status_code == 201
        # the attack: huge revision numbers, 20 of them to push the real ones out
        for i in range(21):
            r = _post(c, old, 2**30 + i, b"evil")
            assert r.status_code == 422 and r.json()["field"] == "revision", r.text
        assert "not a config revision" in r.json()["message"]
        assert _post(c, old, 3, b"evil").status_code == 422  # queued, not delivered: the box cannot know it
        assert _post(c, old, 9, b"evil").status_code == 422  # sent to another box
        new = activate(c, issue(c, "C-P", serial="NEW", kind="replacement"), "NEW").json()
        assert new["restore"]["revision"] == 2 and base64.b64decode(new["restore"]["blob"]) == b"real-2"


def test_backups_planted_before_the_fix_neither_win_nor_push_out_real_ones(db_url: str):
    with make_client(db_url, backups_kept=3) as c:
        db = c.app.state.db
        old = activate(c, issue(c, "C-OLD"), "OLD").json()
        deliver_config(c, old, 1, 2)
        assert _post(c, old, 1, b"real-1").status_code == 201
        now = dt.datetime(2026, 1, 1)
        with db.write() as conn:  # what an unpatched center accepted
            conn.execute(backups.insert(), [{"contract_id": "C-OLD", "revision": 2**30 + i, "blob": b"evil",
                                             "device_id": old["device_id"], "created_at": now} for i in range(5)])
        new = activate(c, issue(c, "C-OLD", serial="NEW", kind="replacement"), "NEW").json()
        assert new["restore"]["revision"] == 1 and base64.b64decode(new["restore"]["blob"]) == b"real-1"
        deliver_config(c, new, 2)
        assert _post(c, new, 2, b"new-2").status_code == 201  # storing drops the planted rows
        with db.read() as conn:
            revs = sorted(r for (r,) in conn.execute(backups.select().with_only_columns(backups.c.revision)))
        assert revs == [1, 2]


def test_no_backups_from_a_box_once_a_replacement_code_is_issued(db_url: str):
    with make_client(db_url) as c:
        old = activate(c, issue(c, "C-S"), "STOLEN").json()
        deliver_config(c, old, 1, 2)
        assert _post(c, old, 1, b"real-1").status_code == 201
        code = issue(c, "C-S", serial="NEW", kind="replacement")  # the operator: "that box was stolen"
        r = _post(c, old, 2, b"planted")
        assert r.status_code == 409 and r.json()["error"] == "replacement_pending", r.text
        assert _post(c, old, 1, b"planted").status_code == 409  # not even a revision it was sent
        new = activate(c, code, "NEW").json()
        assert new["restore"]["revision"] == 1 and base64.b64decode(new["restore"]["blob"]) == b"real-1"
        assert _post(c, old, 2).status_code == 401  # the old token is revoked now anyway
        deliver_config(c, new, 3)
        assert _post(c, new, 3, b"new-3").status_code == 201  # the replacement box itself may


def test_same_box_reactivated_after_a_replacement_code_may_back_up_again(db_url: str):
    with make_client(db_url) as c:
        box = activate(c, issue(c, "C-T"), "BOX").json()
        deliver_config(c, box, 1)
        issue(c, "C-T", kind="replacement")  # issued, then the operator decides to keep the box
        assert _post(c, box, 1).status_code == 409
        again = activate(c, issue(c, "C-T", serial="BOX"), "BOX").json()
        assert again["device_id"] == box["device_id"]
        assert _post(c, again, 1).status_code == 201


def test_config_tasks_and_desired_revisions_are_checked_at_the_source(db_url: str):
    import pytest

    with make_client(db_url) as c:
        box = activate(c, issue(c, "C-U"), "BOX").json()
        db = c.app.state.db
        for params in ({}, {"revision": "1"}, {"revision": 2**40}, {"revision": -1}, {"revision": True}):
            with pytest.raises(ValueError):
                fleet.add_task(db, box["device_id"], "config", params)
        with pytest.raises(ValueError):
            fleet.set_desired(db, "*", config_revision=2**40)
        # a check-in claiming a revision beyond the column is refused, not a 500 at insert
        r = c.post("/api/v1/checkin", json=checkin_body(config_revision=2**62), headers=bearer(box["token"]))
        assert r.status_code == 422 and r.json()["field"] == "config_revision"
        r = c.post(f"/api/v1/tasks/{2**70}/status", json={"status": "done"}, headers=bearer(box["token"]))
        assert r.status_code == 422 and r.json()["field"] == "path.task_id"
