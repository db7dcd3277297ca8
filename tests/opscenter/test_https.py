"""The real thing: `vcr-opscenter serve` over HTTPS (uvicorn, the lab CA), talked to with requests."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest
import requests

from lab.center import Center, start_center
from tests.opscenter.helpers import TEST_SETTINGS, activate_box, batch, bearer, checkin_body


@pytest.fixture(scope="module")
def center(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Center]:
    c = start_center(tmp_path_factory.mktemp("center"), "127.0.0.1:0",
                     settings={**TEST_SETTINGS, "max_alarm_events": 1000, "max_alarm_bytes": 256 * 1024})
    yield c
    c.close()


def test_tls_is_verified_against_the_lab_ca(center: Center):
    r = requests.get(f"{center.url}/api/v1/time", verify=center.ca, timeout=10)
    assert r.status_code == 200 and r.json()["server_time"].endswith("Z")
    assert "date" in {k.lower() for k in r.headers}
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{center.url}/api/v1/time", timeout=10)  # the system store does not know the lab CA
    localhost = center.url.replace("127.0.0.1", "localhost")  # the name is in the certificate too
    assert requests.get(f"{localhost}/api/v1/time", verify=center.ca, timeout=10).status_code == 200
    # the schema is served on the operator listener, to an operator (tests/opscenter/test_operator.py)
    schema = requests.get(f"{center.operator_url}/openapi.json", verify=center.ca, timeout=10,
                          auth=center.operator_auth).json()
    assert schema["info"]["title"] == "vcr-agent operations center" and "/api/v1/alarms" in schema["paths"]


def test_activation_checkin_and_alarm_dedup_under_concurrent_resends(center: Center):
    box = activate_box(center, "C-HTTP", "VCR-H1")
    s = center.session()
    s.headers.update(bearer(box["token"]))
    r = s.post(f"{center.url}/api/v1/checkin", json=checkin_body(), timeout=10)
    assert r.status_code == 200 and r.json()["next_checkin"] == 60
    assert [d["status"] for d in center.devices() if d["device_id"] == box["device_id"]] == ["online"]

    ids = [str(uuid.uuid4()) for _ in range(300)]
    body = batch(0, ids=ids)
    barrier = threading.Barrier(12)

    def resend(_i: int) -> dict:  # type: ignore[type-arg]
        with center.session() as own:  # one connection per sender, like boxes retrying
            barrier.wait()
            resp = own.post(f"{center.url}/api/v1/alarms", json=body, headers=bearer(box["token"]), timeout=30)
            assert resp.status_code == 200, resp.text
            return resp.json()

    with ThreadPoolExecutor(12) as pool:
        replies = list(pool.map(resend, range(12)))
    assert sum(r["accepted"] for r in replies) == 300
    assert sum(r["duplicates"] for r in replies) == 11 * 300
    assert center.alarm_count(box["device_id"]) == 300
    got = {a["event_id"] for a in center.alarms(box["device_id"], limit=1000)}
    assert got == set(ids)


def test_401_has_date_header_and_server_time(center: Center):
    r = requests.post(f"{center.url}/api/v1/checkin", json=checkin_body(), headers=bearer("revoked-or-wrong"),
                      verify=center.ca, timeout=10)
    assert r.status_code == 401 and r.headers.get("Date")
    assert r.json()["error"] == "unauthorized" and r.json()["server_time"].endswith("Z")


def test_413_reaches_the_client_for_big_and_chunked_bodies(center: Center):
    box = activate_box(center, "C-BIG", "VCR-BIG")
    big = json.dumps({"events": [{"event_id": "a", "event": {"p": "x" * (300 * 1024)}}]}).encode()
    r = requests.post(f"{center.url}/api/v1/alarms", data=big, verify=center.ca, timeout=10,
                      headers={**bearer(box["token"]), "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "too_large" and r.json()["max_events"] == 1000

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
        for i in range(0, len(big), 16384):
            yield big[i:i + 16384]

    r = requests.post(f"{center.url}/api/v1/alarms", data=chunks(), verify=center.ca, timeout=10,
                      headers={**bearer(box["token"]), "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    small = {"events": [{"event_id": str(i), "event": {"event_type": "alert"}} for i in range(1001)]}
    r = requests.post(f"{center.url}/api/v1/alarms", json=small, verify=center.ca, timeout=10,
                      headers=bearer(box["token"]))
    assert r.status_code == 413 and "1001 events" in r.json()["message"]
    assert center.alarm_count(box["device_id"]) == 0


def test_restart_keeps_devices_tokens_and_alarms(center: Center):
    box = activate_box(center, "C-RESTART", "VCR-R1")
    tok = bearer(box["token"])
    b = batch(20)
    assert requests.post(f"{center.url}/api/v1/alarms", json=b, headers=tok, verify=center.ca,
                         timeout=10).json()["accepted"] == 20
    url = center.url
    center.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{url}/api/v1/time", verify=center.ca, timeout=5)
    center.start()
    assert center.url == url  # same address after a restart
    again = requests.post(f"{url}/api/v1/alarms", json=b, headers=tok, verify=center.ca, timeout=10).json()
    assert (again["accepted"], again["duplicates"]) == (0, 20)
    assert requests.post(f"{url}/api/v1/checkin", json=checkin_body(), headers=tok, verify=center.ca,
                         timeout=10).status_code == 200


def test_operator_cli_and_page(center: Center):
    box = activate_box(center, "C-CLI", "VCR-CLI")
    requests.post(f"{center.url}/api/v1/checkin", json=checkin_body(), headers=bearer(box["token"]),
                  verify=center.ca, timeout=10)
    requests.post(f"{center.url}/api/v1/alarms", json=batch(2), headers=bearer(box["token"]),
                  verify=center.ca, timeout=10)
    cli = [sys.executable, "-m", "opscenter"]
    cfg = ["--config", str(center.config_path)]
    out = subprocess.run(cli + ["devices"] + cfg, capture_output=True, text=True, check=True).stdout
    line = next(ln for ln in out.splitlines() if box["device_id"] in ln)
    assert "C-CLI" in line and "VCR-CLI" in line and "オンライン / online" in line and "cpu 4%" in line
    assert "agent 0.1.0" in line and "正常 / OK" in line
    devs = json.loads(subprocess.run(cli + ["devices", "--json"] + cfg, capture_output=True, text=True,
                                     check=True).stdout)
    mine = next(d for d in devs if d["device_id"] == box["device_id"])
    assert mine["health"]["memory_percent"] == 41.0 and mine["portcheck"]["ok"] is True
    out = subprocess.run(cli + ["alarms", "--device", box["device_id"], "--limit", "5"] + cfg,
                         capture_output=True, text=True, check=True).stdout
    assert out.count("VCR outbound telnet") == 2 and "2 中 / medium" in out
    page = requests.get(f"{center.operator_url}/", verify=center.ca, timeout=10, auth=center.operator_auth).text
    assert "運用センター / Operations center" in page and box["device_id"] in page
    assert requests.get(f"{center.url}/", verify=center.ca, timeout=10).status_code == 404  # not on the device side


def test_two_workers_share_one_socket(tmp_path: Path):
    with start_center(tmp_path / "mw", "127.0.0.1:0", workers=2, settings=TEST_SETTINGS) as c:
        box = activate_box(c, "C-MW", "VCR-MW")
        for _ in range(40):  # fresh connections spread over the workers
            r = requests.post(f"{c.url}/api/v1/alarms", json=batch(5), headers=bearer(box["token"]),
                              verify=c.ca, timeout=10)
            assert r.status_code == 200
        assert c.alarm_count(box["device_id"]) == 200
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(c.proc.pid)], capture_output=True, text=True)
        assert len(out.stdout.split()) >= 2, out.stdout  # the supervisor runs two workers


def test_tuf_repository_is_served_at_tuf(tmp_path: Path):
    repo = tmp_path / "repo"
    (repo / "metadata").mkdir(parents=True)
    (repo / "metadata" / "1.root.json").write_text('{"signed": {"_type": "root"}}')
    with start_center(tmp_path / "tufc", "127.0.0.1:0", settings={"tuf_repo": str(repo)}) as c:
        s = c.session()
        assert s.get(f"{c.url}/tuf/metadata/1.root.json").json() == {"signed": {"_type": "root"}}
        missing = s.get(f"{c.url}/tuf/metadata/2.root.json")
        assert missing.status_code == 404  # ngclient's "no newer root"
