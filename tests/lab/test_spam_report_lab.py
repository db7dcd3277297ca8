"""End to end: box A's real rspamd scores a spam as clear spam, its report goes through the durable
queue over the center link (HTTPS, the device token) to the real reference center (lab.center);
box B's next check-in brings the listed digest and box B's verdict on the same spam (other headers)
turns from ham to spam. Real rspamd (lab/rspamd.py), real center, real CenterLink."""
from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import parse_config
from agent.link.center import CenterLink, activate
from agent.link.spamreport import ReportQueue, ReportSender, connect
from filters.antispam.engine import KNOWN_DIGEST, AntiSpamEngine
from lab.spameval import strip_mbox
from tests.waiting import wait

pytest.importorskip("lab.center", reason="the reference center (opscenter/) is not there")
CANDIDATES = ("spam-2_00016", "spam-2_00031", "spam-2_00089", "spam-2_00040", "spam-2_00049", "spam-2_00068")


def box(ops, tmp: Path, name: str) -> CenterLink:
    cfg = parse_config({"logging": {"dir": str(tmp / name / "log")}, "center": {
        "enabled": True, "url": ops.url, "ca_file": str(ops.ca), "state_file": str(tmp / name / "center.json"),
        "heartbeat_interval": 1, "backoff_base": 0.2, "backoff_cap": 2, "request_timeout": 10,
        "spool": {"path": str(tmp / name / "spool.db")}, "portcheck": {"enabled": False}, "ntp_servers": []}})
    serial = f"VCR-SPAM-{name}-{tmp.name}"[:60]
    activate(cfg, code=ops.issue_code(f"C-{serial}", serial=serial), serial=serial)
    return CenterLink(cfg)


def test_a_report_from_one_box_changes_the_verdict_another_box_gets(ops, own_rspamd, shared_data, tmp_path):
    rspamd = own_rspamd
    corpus = shared_data.path("data", "spamassassin") / "spam"
    b_engine = AntiSpamEngine()  # box B: the shipped threshold
    b_engine.configure({"enabled": True, "url": rspamd.url, "timeout": 30.0})
    threshold = b_engine.conf.threshold
    # a spam box B's rspamd alone lets through (under the threshold by less than digest_score)
    raw = None
    for name in CANDIDATES:
        cand = strip_mbox(next(corpus.glob(name + ".*.eml")).read_bytes())
        variant = cand.replace(b"Subject:", b"Subject: Re:", 1)
        before = b_engine.check_message(variant, sent=False)
        if not before.error and threshold - b_engine.conf.digest_score <= before.score < threshold:
            raw = cand
            break
    assert raw is not None, "no candidate spam between threshold - digest_score and threshold"
    assert before.verdict == "ham"
    # box A: this office set a lower threshold; the message is clear spam there (score >= 7)
    a_engine = AntiSpamEngine()
    a_engine.configure({"enabled": True, "url": rspamd.url, "timeout": 30.0, "threshold": 5.0, "report_margin": 2.0})
    a, b = box(ops, tmp_path, "a"), box(ops, tmp_path, "b")
    qa = ReportQueue(tmp_path / "a" / "spamreports.db")
    qb = ReportQueue(tmp_path / "b" / "spamreports.db")
    connect(a_engine, a, qa)
    connect(b_engine, b, qb)
    sender = ReportSender(qa, a.send_spam_reports, interval=0.2, retry=0.2)
    a.start(); b.start()
    try:
        wait(lambda: a.checkins_ok >= 1 and b.checkins_ok >= 1, timeout=60, what="first check-ins")
        v = a_engine.check_message(raw, sent=False)
        assert v.verdict == "spam" and a_engine.counters.get("reported") == 1, (v, a_engine.counters)
        sender.start()
        wait(lambda: len(qa) == 0 and sender.sent == 1, timeout=60, what="report sent to the center")
        wait(lambda: len(b_engine.known_digests) >= 1, timeout=60, what="box B's check-in brings the digest")
        after = b_engine.check_message(variant, sent=False)
        assert after.verdict == "spam" and after.action == "tag", after
        assert any(r.startswith(KNOWN_DIGEST) for r in after.reasons)
        assert after.score == pytest.approx(before.score + b_engine.conf.digest_score, abs=0.01)
        # over threshold + margin with the list's score, but a message already on the list is never
        # reported again (the list must not feed itself)
        assert after.score >= threshold + b_engine.conf.report_margin
        assert b_engine.counters.get("reported") is None and len(qb) == 0
    finally:
        sender.stop()
        a.stop(); b.stop()
        qa.close(); qb.close()
