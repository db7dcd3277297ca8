"""The anti-spam engine against a real private rspamd (lab/rspamd.py: rspamd 3.4 + redis + rbldnsd):
GTUBE is spam, a ham is ham, the lab DNS blocklist lists an address but its 127.255.255.x error
answers never count, the center-side learning (Bayes, fuzzy hashes) changes verdicts, and an
rspamd that goes down passes mail with the error counted. Without rspamd: a loud skip, a failure
under CI."""
from __future__ import annotations

import time

import pytest

from filters.antispam.engine import AntiSpamEngine
from filters.antispam.rspamd import RspamdClient
from lab.rspamd import ZONE, dns_query
from lab.spameval import strip_mbox

HAM = "ham/easy-ham-1_00010.145d22c053c1a0c410242e46c01635b3.eml"


def engine(rspamd, **section) -> AntiSpamEngine:
    e = AntiSpamEngine()
    e.configure({"enabled": True, "url": rspamd.url, "timeout": 30.0, **section})
    return e


@pytest.fixture(scope="module")
def corpus(shared_data):
    return shared_data.path("data", "spamassassin")


def test_gtube_is_spam_tagged_when_received_rejected_when_sent(rspamd, corpus):
    e = engine(rspamd)
    raw = (corpus / "gtube.eml").read_bytes()
    v = e.check_message(raw, sent=False, mail_from="spammer@example.net", rcpt_to=("user@example.co.jp",))
    assert v.error is None and v.verdict == "spam" and v.score >= e.conf.threshold
    assert v.action == "tag" and v.subject_tag == "[迷惑メール]" and "GTUBE(0.00)" in v.reasons
    assert dict(v.headers)["X-Spam-Flag"] == "YES"
    sent = e.check_message(raw, sent=True, mail_from="user@example.co.jp", rcpt_to=("x@example.net",),
                           helo="pc23", client_ip="192.168.1.23")
    assert (sent.verdict, sent.action) == ("spam", "reject")
    assert e.counters["spam.received"] == 1 and e.counters["reject.sent"] == 1


def test_a_ham_is_ham(rspamd, corpus):
    e = engine(rspamd)
    v = e.check_message(strip_mbox((corpus / HAM).read_bytes()), sent=False)
    assert v.error is None and (v.verdict, v.action, v.headers) == ("ham", "pass", ())
    assert v.score < e.conf.threshold


def test_dnsbl_listed_counts_error_answers_never(rspamd, corpus):
    port = rspamd.ports["dns"]
    # the real queries rspamd makes, answered by the lab zone
    assert dns_query(f"7.113.0.203.{ZONE}", port) == (0, ["127.0.0.2"])
    assert dns_query(f"8.113.0.203.{ZONE}", port) == (0, ["127.255.255.254"])
    assert dns_query(f"9.113.0.203.{ZONE}", port) == (0, ["127.255.255.255"])
    assert dns_query(f"10.113.0.203.{ZONE}", port) == (0, ["127.255.255.252"])
    assert dns_query(f"50.113.0.203.{ZONE}", port)[1] == []  # not listed
    e = engine(rspamd)
    raw = strip_mbox((corpus / HAM).read_bytes())

    def check(ip: str):
        return e.check_message(raw, sent=False, mail_from="someone@example.org", rcpt_to=("user@example.co.jp",),
                               helo="mail.example.org", client_ip=ip)

    clean = check("203.0.113.50")
    listed = check("203.0.113.7")
    assert any(r.startswith("RBL_SPAMHAUS_SBL(") for r in listed.reasons), listed.reasons
    assert listed.score >= clean.score + 3.0
    for ip in ("203.0.113.8", "203.0.113.9", "203.0.113.10"):  # open resolver, over quota, wrong zone name
        v = check(ip)
        assert v.error is None
        assert not any("SPAMHAUS" in r for r in v.reasons), (ip, v.reasons)
        assert v.score == clean.score, (ip, v.reasons, clean.reasons)


def test_center_learning_bayes_and_fuzzy_change_the_verdict(rspamd, corpus):
    ctl = RspamdClient(rspamd.controller_url, timeout=60, password=rspamd.password)
    spam = sorted((corpus / "spam").glob("*.eml"))[:12]
    ham = sorted((corpus / "ham").glob("easy-ham-1_*.eml"))[:12]
    # fuzzy hashes are made of text parts of 1 KB or more (rspamd's min_bytes)
    target = strip_mbox((corpus / "spam" / "spam-1_00009.027bf6e0b0c4ab34db3ce0ea4bf2edab.eml").read_bytes())
    e = engine(rspamd)
    before = e.check_message(target, sent=False)
    assert not any(r.startswith(("BAYES_", "FUZZY_")) for r in before.reasons)
    for path in spam:
        ctl.learn(strip_mbox(path.read_bytes()), True)
    for path in ham:
        ctl.learn(strip_mbox(path.read_bytes()), False)
    assert ctl.fuzzy_add(target, 1)["success"]
    time.sleep(2.5)  # the fuzzy storage writes its updates every second (lab/rspamd.py)
    near = target.replace(b"Subject:", b"Subject: Re:", 1) + b"\nsent again\n"  # a near-duplicate
    after = e.check_message(near, sent=False)
    assert any(r.startswith("BAYES_SPAM(") for r in after.reasons), after.reasons
    assert any(r.startswith("FUZZY_DENIED(") for r in after.reasons), after.reasons
    assert after.score > before.score + 5


def test_rspamd_down_passes_with_error_counted_then_recovers(rspamd, corpus):
    e = engine(rspamd)
    raw = (corpus / "gtube.eml").read_bytes()
    assert e.check_message(raw, sent=False).verdict == "spam"
    rspamd.stop_rspamd()
    try:
        v = e.check_message(raw, sent=False)
        assert (v.verdict, v.action) == ("ham", "pass") and v.error
        assert e.counters["errors"] == 1 and "Connection refused" in v.error
    finally:
        rspamd.start_rspamd()
    assert e.check_message(raw, sent=False).verdict == "spam"


def test_the_box_unit_installs_the_shipped_rspamd_config_the_agent_talks_to():
    """systemd/vcr-rspamd.service runs Debian's rspamd with config/antispam/rspamd (the files the lab
    rspamd runs with), replacing Debian's unit, before the agent; the engine's default URL is the
    scanner worker Debian's rspamd.conf binds."""
    import re
    from pathlib import Path

    from filters.antispam.engine import AntiSpamConfig
    from lab.rspamd import BOX_CONF, BOX_FILES

    root = Path(__file__).resolve().parents[2]
    unit = (root / "systemd" / "vcr-rspamd.service").read_text()
    assert "Conflicts=rspamd.service" in unit and "Before=vcr-agent.service" in unit
    assert "/opt/vcr-agent/config/antispam/rspamd/local.d/*" in unit
    assert "/opt/vcr-agent/config/antispam/rspamd/override.d/*" in unit
    assert "rspamadm configtest" in unit and "User=_rspamd" in unit
    shipped = [n for n in BOX_FILES if (BOX_CONF / n).exists()]
    assert {"local.d/redis.conf", "override.d/fuzzy_check.conf", "local.d/greylist.conf"} <= set(shipped)
    stock = Path("/etc/rspamd/rspamd.conf")
    if stock.exists():
        normal = re.search(r'worker "normal"\s*\{[^}]*bind_socket\s*=\s*"([^"]+)"', stock.read_text())
        assert normal and normal.group(1).rsplit(":", 1)[1] == AntiSpamConfig().url.rsplit(":", 1)[1] == "11333"
