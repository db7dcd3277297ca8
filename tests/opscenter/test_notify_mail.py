"""Notification mails through a real local MTA: a private Postfix instance (lab/mta.py) started by the fixture on
a local port, delivering into a Maildir that the test reads back.

200 severe alarms from one box in a burst arrive as ONE grouped mail; a box offline, then back online,
gives one mail each. The center's own background notifier sends them over SMTP.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from lab import mta
from opscenter import notify, sheets
from tests.opscenter.helpers import activate, bearer, checkin_body, make_client
from tests.opscenter.test_customer import SHEET, _severe_batch


@pytest.fixture(scope="module")
def postfix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[mta.Postfix]:
    reason = mta.unavailable_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"MAIL TEST CANNOT RUN IN CI: {reason}")
        pytest.skip(f"MAIL TEST SKIPPED: {reason}")
    server = mta.start_postfix(tmp_path_factory.mktemp("postfix"), domains=["customer.example"])
    yield server
    server.stop()


def test_a_burst_is_one_mail_and_offline_online_are_mailed(postfix: mta.Postfix, tmp_path: Path):
    settings: dict[str, Any] = {
        "smtp_host": postfix.host, "smtp_port": postfix.port, "smtp_from": "noc@center.example",
        "notify_interval": 0.3, "notify_window_s": 4, "notify_offline_after_s": 2,
        "heartbeat_interval": 1, "offline_after_missed": 1, "sweep_interval": 0.3,
    }
    before = len(postfix.messages())
    with make_client(f"sqlite:///{tmp_path / 'c.db'}", **settings) as client:
        db = client.app.state.db
        assert client.app.state.notifier is not None  # the center's background sender runs
        code = sheets.set_sheet(db, "C-1", "VCR-1", SHEET)["activation_code"]
        box = activate(client, code, "VCR-1").json()
        h = bearer(box["token"])
        assert client.post("/api/v1/checkin", json=checkin_body(), headers=h).status_code == 200
        notify.set_prefs(db, "C-1", client.app.state.settings,
                         recipients=["yamada@customer.example", "it@customer.example"])

        # an outbreak: 200 severe alarms (C&C, virus, IPS severity 1) plus harmless ones, in a burst
        t0 = time.monotonic()
        for kind, n in (("cnc", 100), ("virus", 40), ("ips1", 60), ("minor", 100)):
            for i in range(0, n, 20):
                r = client.post("/api/v1/alarms", json=_severe_batch(min(20, n - i), kind), headers=h)
                assert r.status_code == 200, r.text
        assert time.monotonic() - t0 < 4, "the burst must fit in the digest window"
        def subjects(word: str) -> list[Any]:
            return [m for m in postfix.messages()[before:] if word in str(m["Subject"])]

        def wait_for(word: str, n: int, timeout: float = 30.0) -> list[Any]:
            deadline = time.monotonic() + timeout
            while len(subjects(word)) < n and time.monotonic() < deadline:
                time.sleep(0.2)
            return subjects(word)

        # one mail to two recipients: two deliveries of the same message
        severe = wait_for("severe alarm", 2)
        time.sleep(2 * settings["notify_interval"] + 1)
        severe = subjects("severe alarm")
        assert len(severe) == 2, [str(m["Subject"]) for m in postfix.messages()]
        assert {m["Delivered-To"] for m in severe} == {"yamada@customer.example", "it@customer.example"}
        assert severe[0]["Message-ID"] == severe[1]["Message-ID"]  # the same single mail
        m = severe[0]
        assert str(m["Subject"]) == "[VCR 運用センター] 重大なアラーム 200 件 / 200 severe alarms (契約 / contract C-1)"
        body = m.get_content()
        assert "重大なアラームが 200 件" in body and "detected 200 severe alarms" in body
        assert "infected PC contacting a C&C server (ATP): 100" in body
        assert "virus detected (antivirus / sandbox): 40" in body and "intrusion of severity 1 (IPS): 60" in body
        assert "192.0.2.11: 200" in body
        sent = [n for n in notify.list_notifications(db) if n["kind"] == "severe"]
        assert [(n["status"], n["count"]) for n in sent] == [("sent", 200)]

        # the box has gone quiet: offline 2 s without a check-in -> one mail; it checks in again -> one mail
        offline = wait_for("UTM offline", 2)
        assert len(offline) == 2, [str(x["Subject"]) for x in postfix.messages()]
        assert "UTM がオフラインです" in str(offline[0]["Subject"]) and "VCR-1" in offline[0].get_content()
        time.sleep(1.5)
        assert len(subjects("UTM offline")) == 2  # once per offline period
        assert client.post("/api/v1/checkin", json=checkin_body(), headers=h).status_code == 200
        online = wait_for("UTM back online", 2)
        assert len(online) == 2 and "UTM が復旧しました" in str(online[0]["Subject"])
        assert "serial VCR-1" in online[0].get_content()
        time.sleep(1.0)
        assert len(postfix.messages()) == before + 6  # nothing else was mailed
    assert "status=sent (delivered to maildir)" in postfix.log_tail(100_000)
