"""The center on a throwaway PostgreSQL cluster with two uvicorn workers, over real HTTPS."""
from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from lab.center import start_center
from tests.opscenter.helpers import TEST_SETTINGS, batch, bearer, checkin_body


def _post(url: str, ca: Path, body: dict, token: str | None = None) -> requests.Response:  # type: ignore[type-arg]
    return requests.post(url, json=body, verify=ca, timeout=30, headers=bearer(token) if token else {})


def test_postgres_center_activation_replacement_and_dedup(pg_url: str, tmp_path: Path):
    with start_center(tmp_path / "pgc", "127.0.0.1:0", db=pg_url, workers=2, settings=TEST_SETTINGS) as c:
        assert c.db.dialect == "postgresql"
        act = f"{c.url}/api/v1/activate"
        code = c.issue_code("C-PG", "PG-OLD")
        first = _post(act, c.ca, {"serial": "PG-OLD", "activation_code": code})
        assert first.status_code == 201, first.text
        assert _post(act, c.ca, {"serial": "PG-OLD", "activation_code": code}).json()["error"] == "invalid_code"
        second = _post(act, c.ca, {"serial": "PG-NEW", "activation_code": c.issue_code("C-PG")})
        assert second.status_code == 409 and second.json()["error"] == "already_activated"
        old = first.json()
        assert _post(f"{c.url}/api/v1/checkin", c.ca, checkin_body(), old["token"]).status_code == 200

        # concurrent re-sends of one batch from several connections (and both workers)
        ids = [str(uuid.uuid4()) for _ in range(500)]
        body = batch(0, ids=ids)
        barrier = threading.Barrier(10)

        def resend(_i: int) -> dict:  # type: ignore[type-arg]
            barrier.wait()
            r = _post(f"{c.url}/api/v1/alarms", c.ca, body, old["token"])
            assert r.status_code == 200, r.text
            return r.json()

        with ThreadPoolExecutor(10) as pool:
            replies = list(pool.map(resend, range(10)))
        assert sum(r["accepted"] for r in replies) == 500 and sum(r["duplicates"] for r in replies) == 4500
        assert c.alarm_count(old["device_id"]) == 500

        # the replacement flow moves the contract; the old token stops working
        new = _post(act, c.ca, {"serial": "PG-NEW", "activation_code": c.replace("C-PG", "PG-NEW")})
        assert new.status_code == 201, new.text
        assert _post(f"{c.url}/api/v1/checkin", c.ca, checkin_body(), old["token"]).status_code == 401
        assert _post(f"{c.url}/api/v1/checkin", c.ca, checkin_body(), new.json()["token"]).status_code == 200
        assert [d["serial"] for d in c.devices()] == ["PG-NEW"]
