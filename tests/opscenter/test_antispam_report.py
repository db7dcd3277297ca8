"""The center takes the boxes' spam reports (POST /api/v1/antispam/report): schema-checked, rate
limited per device; a digest is listed once enough boxes reported it, and every box gets it back in
its check-in reply."""
from __future__ import annotations

import base64
import hashlib


from tests.opscenter.helpers import activate, bearer, checkin_body, issue, make_client

URL = "/api/v1/antispam/report"


def dg(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def rep(*digests: str, **kw) -> dict:
    return {"score": 25.0, "direction": "received", "digests": list(digests), **kw}


def test_reports_are_validated_and_listed_digests_reach_every_box(tmp_path):
    with make_client(f"sqlite:///{tmp_path}/c.db", antispam_digest_min_devices=2) as c:
        a = activate(c, issue(c, "C-1"), "SN-A").json()["token"]
        b = activate(c, issue(c, "C-2"), "SN-B").json()["token"]
        assert c.post(URL, json={"reports": [rep(dg(1))]}).status_code == 401
        for bad in ({"reports": []}, {"reports": [rep("ABC")]}, {"reports": [rep(dg(1).upper())]},
                    {"reports": [rep(*[dg(i) for i in range(17)])]}, {"reports": [rep(dg(1), subject="x")]},
                    {"reports": [rep(dg(1))] * 51}, {"reports": [{**rep(dg(1)), "direction": "both"}]}):
            assert c.post(URL, json=bad, headers=bearer(a)).status_code in (400, 422), bad
        r = c.post(URL, json={"reports": [rep(dg(1), dg(2)), rep(dg(1))]}, headers=bearer(a))
        assert r.status_code == 200, r.text
        assert r.json() == {"accepted": 2, "digests": 2, "listed": 0, "learnt": 0}
        # one box is not enough (min_devices 2), nor the same box again
        assert c.post(URL, json={"reports": [rep(dg(1))]}, headers=bearer(a)).json()["listed"] == 0
        known = c.post("/api/v1/checkin", json=checkin_body(), headers=bearer(b)).json()["antispam"]["known_digests"]
        assert known == []
        assert c.post(URL, json={"reports": [rep(dg(1))]}, headers=bearer(b)).json()["listed"] == 1
        for tok in (a, b):
            reply = c.post("/api/v1/checkin", json=checkin_body(), headers=bearer(tok)).json()
            assert reply["antispam"]["known_digests"] == [dg(1)]


def test_per_device_rate_limit_and_message_without_learner(tmp_path):
    with make_client(f"sqlite:///{tmp_path}/c.db", antispam_report_rate=0.001, antispam_report_burst=2) as c:
        a = activate(c, issue(c, "C-1"), "SN-A").json()["token"]
        b = activate(c, issue(c, "C-2"), "SN-B").json()["token"]
        msg = base64.b64encode(b"Subject: x\r\n\r\nbuy now\r\n").decode()
        r = c.post(URL, json={"reports": [rep(dg(1), message=msg)]}, headers=bearer(a))
        assert r.status_code == 200 and r.json()["learnt"] == 0  # no controller at this center: digests only
        assert c.post(URL, json={"reports": [rep(dg(2))]}, headers=bearer(a)).status_code == 200
        r = c.post(URL, json={"reports": [rep(dg(3))]}, headers=bearer(a))
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
        assert c.post(URL, json={"reports": [rep(dg(3))]}, headers=bearer(b)).status_code == 200  # per device


def test_consented_whole_message_is_learnt_by_the_centers_rspamd(own_rspamd, shared_data, tmp_path):
    rspamd = own_rspamd
    """With report_messages (consent) the report carries the message: the center's rspamd learns its
    fuzzy hashes, and a near-duplicate then scores FUZZY_DENIED at a box's rspamd."""
    import time

    from filters.antispam.engine import AntiSpamEngine
    from lab.spameval import strip_mbox

    corpus = shared_data.path("data", "spamassassin") / "spam"
    raw = strip_mbox(next(corpus.glob("spam-2_00020.*.eml")).read_bytes())
    near = raw.replace(b"Subject:", b"Subject: FW:", 1) + b"\nonce more\n"
    scorer = AntiSpamEngine()
    scorer.configure({"enabled": True, "url": rspamd.url, "timeout": 30.0})
    assert not any(r.startswith("FUZZY_") for r in scorer.check_message(near, sent=False).reasons)
    with make_client(f"sqlite:///{tmp_path}/c.db", antispam_controller=rspamd.controller_url,
                     antispam_password=rspamd.password) as c:
        a = activate(c, issue(c, "C-1"), "SN-A").json()["token"]
        msg = base64.b64encode(raw).decode()
        assert c.post(URL, json={"reports": [rep(dg(7), message="not base64!")]}, headers=bearer(a)).status_code == 400
        from opscenter.antispam import listed_since
        import datetime as dt
        assert listed_since(c.app.state.db, dt.datetime(2000, 1, 1)) == []  # the bad batch left no trace
        r = c.post(URL, json={"reports": [rep(dg(7), message=msg)]}, headers=bearer(a))
        assert r.status_code == 200 and r.json()["learnt"] == 1, r.text
    time.sleep(2.5)  # the fuzzy storage writes its updates every second
    v = scorer.check_message(near, sent=False)
    assert any(r.startswith("FUZZY_DENIED(") for r in v.reasons), v.reasons
