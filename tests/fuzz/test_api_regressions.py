"""Center API bugs the schemathesis run found (or that reading around them showed), on SQLite and on
PostgreSQL (when its server binaries are here): each used to be a 500."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
from sqlalchemy import select

# starlette's TestClient still works on httpx; its deprecation notice is not about our code
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")


@pytest.fixture(params=["sqlite", "postgres"])
def center(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from tests.fuzz.api import running_center

    url = None
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
    with running_center(url) as c:
        c.client = TestClient(c.app, raise_server_exceptions=False)
        c.auth = {"Authorization": f"Bearer {c.token}"}
        yield c


def test_task_status_for_an_id_beyond_bigint_is_404(center: Any):
    r = center.client.post("/api/v1/tasks/9223372036854775808/status", json={"status": "done"}, headers=center.auth)
    assert r.status_code in (404, 422) and r.json()["error"] in ("not_found", "invalid")
    r = center.client.post(f"/api/v1/tasks/{center.task_id}/status", json={"status": "done"}, headers=center.auth)
    assert r.status_code == 200


def test_checkin_numbers_the_columns_cannot_hold_are_not_stored(center: Any):
    from opscenter.db import checkins, devices

    body = {"config_revision": 2**40, "health": {"cpu_percent": 10**400, "memory_percent": 5},
            "spool": {"pending": -(2**63)}}
    r = center.client.post("/api/v1/checkin", json=body, headers=center.auth)
    if r.status_code == 422:  # refused on arrival (the schema bounds them)
        assert r.json()["error"] == "invalid"
        return
    assert r.status_code == 200, r.text
    with center.app.state.db.read() as conn:
        assert conn.execute(select(devices.c.config_revision).where(devices.c.config_revision.is_not(None))).first() is None
        row = conn.execute(select(checkins.c.cpu_percent, checkins.c.memory_percent, checkins.c.spool_pending)).one()
    assert tuple(row) == (None, 5.0, None)


def test_backup_revision_beyond_integer_is_400(center: Any):
    r = center.client.post("/api/v1/backups", json={"revision": 2**31, "blob": "AAAA"}, headers=center.auth)
    assert r.status_code in (400, 422) and r.json()["error"] in ("bad_request", "invalid")


def test_nul_characters_lone_surrogates_and_nan_in_alarms_are_stored_replaced(center: Any):
    from opscenter.db import alarms, health

    batch = b'{"events": [{"event_id": "e\\u0000", "severity": 2, "event": {"event_type": "alert\\u0000", ' \
            b'"alert": {"signature": "sig\\ud800"}, "k\\u0000": [1, "\\u0000"]}}]}'
    r = center.client.post("/api/v1/alarms", content=batch, headers={**center.auth, "Content-Type": "application/json"})
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    # A check-in is refused instead (the box's own state: it can send it right), whether the value is
    # in a typed field or in the free-form rest.
    for body in (b'{"agent_version": "0.1\\u0000"}', b'{"x": {"y\\udc00": 1}}', b'{"engines": {"ips": {"a": "\\u0000"}}}'):
        r = center.client.post("/api/v1/checkin", content=body, headers={**center.auth, "Content-Type": "application/json"})
        assert r.status_code == 422 and r.json()["error"] == "invalid", (body, r.text)
    r = center.client.post(f"/api/v1/tasks/{center.task_id}/status", json={"status": "failed", "detail": "a\x00b"},
                           headers=center.auth)
    assert r.status_code == 200, r.text
    with center.app.state.db.read() as conn:
        event_id, event_type, signature, event = conn.execute(
            select(alarms.c.event_id, alarms.c.event_type, alarms.c.signature, alarms.c.event)).one()
        assert conn.execute(select(health.c.body)).first() is None
    assert (event_id, event_type, signature) == ("e\ufffd", "alert\ufffd", "sig\ufffd")
    assert event["k\ufffd"] == [1, "\ufffd"]


def test_storable_keeps_clean_bodies_as_they_are():
    from opscenter.schemas import storable

    body = {"a": [1, 2.5, "x", None, True, {"b": "\u00e9\U0001f600"}]}
    assert storable(body) is body
    deep: Any = "\x00"
    for _ in range(5000):
        deep = [deep]
    cleaned = storable(deep)
    for _ in range(5000):
        cleaned = cleaned[0]
    assert cleaned == "\ufffd"
