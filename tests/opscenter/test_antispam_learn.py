"""The center learns the spam and ham boxes report (POST /api/v1/antispam/learn) with its rspamd:
after the reports, the same rspamd scores a near-duplicate of the reported spam with its fuzzy hash
and Bayes. Real rspamd (lab/rspamd.py), the center's app in-process."""
from __future__ import annotations

import base64
import time

import pytest

from filters.antispam.engine import AntiSpamEngine
from lab.spameval import strip_mbox
from tests.opscenter.helpers import activate, bearer, issue, make_client

SPAM = "spam-2_00004.bdcc075fa4beb5157b5dd6cd41d8887b.eml"  # a text part over 1 KB: fuzzy-hashed


@pytest.fixture(scope="module")
def rspamd(own_rspamd):
    """This module's own rspamd (overrides the session's): what the center learns here must not turn
    on Bayes in the session's rspamd (it answers after 10 learns of each class)."""
    return own_rspamd


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_box_reports_are_learnt_by_the_centers_rspamd(rspamd, shared_data, tmp_path):
    corpus = shared_data.path("data", "spamassassin")
    target = strip_mbox((corpus / "spam" / SPAM).read_bytes())
    spam = [strip_mbox(p.read_bytes()) for p in sorted((corpus / "spam").glob("spam-2_*.eml"))[1:13]]
    ham = [strip_mbox(p.read_bytes()) for p in sorted((corpus / "ham").glob("easy-ham-2_*.eml"))[:12]]
    scorer = AntiSpamEngine()
    scorer.configure({"enabled": True, "url": rspamd.url, "timeout": 30.0})
    before = scorer.check_message(target.replace(b"Subject:", b"Subject: Fwd:", 1) + b"\nagain\n", sent=False)
    assert not any(r.startswith("FUZZY_") for r in before.reasons), before.reasons
    with make_client(f"sqlite:///{tmp_path}/c.db", antispam_controller=rspamd.controller_url,
                     antispam_password=rspamd.password) as c:
        tok = activate(c, issue(c, "C-1"), "SN-1").json()["token"]
        url = "/api/v1/antispam/learn"
        assert c.post(url, json={"class": "spam", "message": _b64(target)}).status_code == 401  # no token
        r = c.post(url, json={"class": "virus", "message": _b64(target)}, headers=bearer(tok))
        assert r.status_code == 422
        r = c.post(url, json={"class": "spam", "message": "not base64!"}, headers=bearer(tok))
        assert r.status_code == 400 and r.json()["error"] == "bad_request"
        r = c.post(url, json={"class": "spam", "message": _b64(target)}, headers=bearer(tok))
        assert r.status_code == 200, r.text
        assert r.json()["class"] == "spam" and r.json()["fuzzy"] == "added"
        assert r.json()["bayes"] in ("learnt", "skipped")  # skipped: this rspamd's Bayes was already sure
        for raw in spam:
            assert c.post(url, json={"class": "spam", "message": _b64(raw), "fuzzy": False},
                          headers=bearer(tok)).status_code == 200
        for raw in ham:
            assert c.post(url, json={"class": "ham", "message": _b64(raw)}, headers=bearer(tok)).status_code == 200
        time.sleep(2.5)  # the fuzzy storage writes its updates every second
        near = target.replace(b"Subject:", b"Subject: Fwd:", 1) + b"\nagain\n"
        v = scorer.check_message(near, sent=False)
        assert any(r.startswith("FUZZY_DENIED(") for r in v.reasons), v.reasons
        assert any(r.startswith("BAYES_SPAM(") for r in v.reasons), v.reasons
        rspamd.stop_rspamd()
        try:
            r = c.post(url, json={"class": "ham", "message": _b64(ham[0])}, headers=bearer(tok))
            assert r.status_code == 503 and r.headers["Retry-After"] == "300"
        finally:
            rspamd.start_rspamd()


def test_not_installed_without_a_controller(tmp_path):
    with make_client(f"sqlite:///{tmp_path}/c.db") as c:
        tok = activate(c, issue(c, "C-1"), "SN-1").json()["token"]
        r = c.post("/api/v1/antispam/learn", json={"class": "spam", "message": "aGVsbG8="}, headers=bearer(tok))
        assert r.status_code in (404, 405)
