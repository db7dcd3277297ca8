"""The mail proxy with the real anti-spam engine and a real private rspamd (lab/rspamd.py: rspamd, its
redis and its rbldnsd), a private Postfix, Dovecot and clamd on the loopback; smtplib, poplib and
imaplib as the PC. GTUBE and a real spam of the SpamAssassin sample (whose fuzzy hash and Bayes
tokens the center taught the box, as its ``antispam`` bundle does) are tagged at POP3 and IMAP, a
ham arrives byte-identical, a PC's spam is refused at SMTP with a 554 naming the reason and the
infected-PC alarm; an rspamd outage raises one alarm (not one per message) and, with
``on_error: tempfail``, SMTP answers 451."""
from __future__ import annotations

import email
import email.policy
import imaplib
import poplib
import smtplib
import time
from typing import Any, Iterator

import pytest

from filters.antispam.engine import AntiSpamEngine
from lab import dovecot as lab_dovecot
from lab import mta as lab_mta
from tests.agent.dataplane.test_mailproxy import Proxies, _empty, _pop3_all, dovecot, postfix  # noqa: F401 (fixtures)

GTUBE_BODY = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def _engine(url: str, **section: Any) -> AntiSpamEngine:
    e = AntiSpamEngine()
    e.configure({"enabled": True, "url": url, "timeout": 30.0, **section})
    return e


@pytest.fixture
def real(clamd: Any, postfix: lab_mta.Postfix, dovecot: lab_dovecot.Dovecot,
         taught_rspamd: Any) -> Iterator[Proxies]:
    px = Proxies(clamd, {"smtp": (postfix.host, postfix.port), "pop3": (dovecot.host, dovecot.pop3_port),
                         "imap": (dovecot.host, dovecot.imap_port)},
                 antispam=_engine("http://127.0.0.1:9", socket=taught_rspamd[0].socket))  # the unix socket, not the URL
    try:
        yield px
    finally:
        px.stop()


def _gtube() -> bytes:
    return (b"From: win@prize.example\r\nTo: hanako@office.example\r\nDate: Mon, 07 Dec 2026 10:00:00 +0900\r\n"
            b"Message-ID: <gtube-1@prize.example>\r\nSubject: you won\r\n\r\n" + GTUBE_BODY + b"\r\n")


def _imap_all(port: int, dc: lab_dovecot.Dovecot) -> list[bytes]:
    m = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    m.login(dc.user, dc.password)
    m.select("INBOX", readonly=True)
    out = []
    for num in m.search(None, "ALL")[1][0].split():
        typ, data = m.fetch(num, "(BODY.PEEK[])")
        out.append(data[0][1])
    m.logout()
    return out


@pytest.mark.parametrize("proto", ["pop3", "imap"])
def test_received_gtube_and_a_real_spam_are_tagged_and_a_ham_is_byte_identical(
        real: Proxies, dovecot: lab_dovecot.Dovecot, taught_rspamd: Any, proto: str):
    _, spam, ham = taught_rspamd
    _empty(dovecot)
    for raw in (_gtube(), spam.raw, ham.raw):
        dovecot.deliver(raw)
    fetch = _pop3_all if proto == "pop3" else _imap_all
    direct = fetch(dovecot.pop3_port if proto == "pop3" else dovecot.imap_port, dovecot)
    through = fetch(real.ports[proto], dovecot)
    assert len(through) == 3
    assert through[2] == direct[2]  # the ham: byte-identical
    for i in (0, 1):
        msg = email.message_from_bytes(through[i], policy=email.policy.default)
        assert msg["Subject"].startswith("[迷惑メール]"), msg["Subject"]
        assert msg["X-Spam-Flag"] == "YES" and float(msg["X-Spam-Score"]) >= 10.6
        assert msg["X-Spam-Status"].startswith("Yes, score=")
        # the body is what was stored
        assert through[i].split(b"\r\n\r\n", 1)[1] == direct[i].split(b"\r\n\r\n", 1)[1]
    assert "GTUBE" in email.message_from_bytes(through[0], policy=email.policy.default)["X-Spam-Status"]
    alarms = [a for a in real.alarms if a["alert"]["signature_id"] == 9510003 and a["app_proto"] == proto]
    assert len(alarms) == 2
    assert alarms[0]["antispam"]["action"] == "tag" and alarms[0]["antispam"]["score"] >= 10.6
    assert any(r.startswith("GTUBE") for r in alarms[0]["antispam"]["reasons"])
    assert alarms[0]["email"]["subject"] == "you won" and alarms[0]["direction"] == "to_client"
    assert len(dovecot.stored()) == 3  # the mailbox is untouched


def test_a_pcs_spam_is_refused_with_554_naming_the_reason_and_raises_the_infected_pc_alarm(
        real: Proxies, postfix: lab_mta.Postfix, dovecot: lab_dovecot.Dovecot, taught_rspamd: Any):
    _, spam, ham = taught_rspamd
    _empty(dovecot)  # Postfix delivers into Dovecot's Maildir
    for raw in (_gtube(), spam.raw):
        with smtplib.SMTP("127.0.0.1", real.ports["smtp"], timeout=60) as s:
            with pytest.raises(smtplib.SMTPDataError) as refused:
                s.sendmail("taro@office.example", ["customer@example.net"], raw)
        assert refused.value.smtp_code == 554, refused.value
        text = refused.value.smtp_error.decode()
        assert "looks like spam (score" in text and "vcr-test-box" in text
    assert "GTUBE" in refused.value.smtp_error.decode() or "FUZZY_DENIED" in refused.value.smtp_error.decode()
    with smtplib.SMTP("127.0.0.1", real.ports["smtp"], timeout=60) as s:  # a ham goes through
        assert s.sendmail("taro@office.example", ["hanako@office.example"], ham.raw) == {}
    postfix.wait_messages(1)
    time.sleep(1.0)
    assert len(postfix.files()) == 1
    hosts = [a for a in real.alarms if a["alert"]["signature_id"] == 9510004]
    assert len(hosts) == 2 and hosts[0]["infected_host"]["ip"] == "127.0.0.1" and "127.0.0.1" in hosts[0]["alert"]["signature"]
    spam_alarms = [a for a in real.alarms if a["alert"]["signature_id"] == 9510003]
    assert spam_alarms[0]["alert"]["action"] == "blocked" and spam_alarms[0]["antispam"]["direction"] == "sent"
    assert spam_alarms[0]["smtp"]["mail_from"] == "<taro@office.example>"


def test_rspamd_down_one_alarm_not_one_per_message_and_tempfail_is_451(
        clamd: Any, postfix: lab_mta.Postfix, dovecot: lab_dovecot.Dovecot, taught_rspamd: Any):
    from lab.rspamd import free_port

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: rspamd is down
    for on_error, expect in (("pass", None), ("tempfail", 451)):
        px = Proxies(clamd, {"smtp": (postfix.host, postfix.port), "pop3": (dovecot.host, dovecot.pop3_port)},
                     antispam=_engine(dead, on_error=on_error))
        try:
            _empty(dovecot)
            for f in postfix.files():
                f.unlink()
            results = []
            for i in range(3):
                with smtplib.SMTP("127.0.0.1", px.ports["smtp"], timeout=60) as s:
                    try:
                        s.sendmail("taro@office.example", ["hanako@office.example"], _gtube())
                        results.append(None)
                    except smtplib.SMTPDataError as exc:
                        results.append((exc.smtp_code, exc.smtp_error.decode()))
            if expect is None:
                assert results == [None, None, None]  # delivered unscored
                postfix.wait_messages(3)
            else:
                assert all(r and r[0] == 451 and "anti-spam check unavailable" in r[1] for r in results), results
                time.sleep(1.0)
                assert postfix.files() == []  # nothing queued: the sender's server retries
            down = [a for a in px.alarms if a.get("av", {}).get("reason") == "antispam_unavailable"]
            assert len(down) == 1, px.alarms  # rate-limited: one alarm for the outage, not one per message
            assert down[0]["alert"]["signature_id"] == 9510005 and "Connection" in down[0]["av"]["error"]
            assert down[0]["email"]["subject"] == "you won" and down[0]["smtp"]["rcpt_to"] == ["<hanako@office.example>"]
            assert px.engine.counters["mail.spam_errors"] == 3
        finally:
            px.stop()
