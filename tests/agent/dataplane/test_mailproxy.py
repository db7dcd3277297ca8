"""The mail proxy with real servers and clients on the loopback: a private clamd (starter database),
a private Postfix (lab/mta.py) and a private Dovecot (lab/dovecot.py) serving the Maildir Postfix
delivers into; smtplib, poplib and imaplib as the PC. (The REDIRECT and the bridge: tests/e2e/test_mail.py.)"""
from __future__ import annotations

import imaplib
import os
import poplib
import smtplib
import socket
import time
from dataclasses import dataclass
from typing import Any, Iterator

import pytest

from agent.dataplane.mailproxy import MailProxy
from filters.mail.engine import MailSecurity
from lab import dovecot as lab_dovecot
from lab import mta as lab_mta
from tests.filters.mail.samples import EICAR, japanese_mail, nested_virus_mail


def _require(reason: str | None, what: str) -> None:
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} TEST CANNOT RUN IN CI: {reason}")
    pytest.skip(f"{what} TEST SKIPPED: {reason}")


@pytest.fixture(scope="module")
def postfix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lab_mta.Postfix]:
    _require(lab_mta.unavailable_reason(), "POSTFIX")
    pf = lab_mta.start_postfix(tmp_path_factory.mktemp("mta"), domains=["office.example"])
    try:
        yield pf
    finally:
        pf.stop()


@pytest.fixture(scope="module")
def dovecot(postfix: lab_mta.Postfix, tmp_path_factory: pytest.TempPathFactory) -> Iterator[lab_dovecot.Dovecot]:
    _require(lab_dovecot.unavailable_reason(), "DOVECOT")
    dc = lab_dovecot.start_dovecot(tmp_path_factory.mktemp("dovecot"), maildir=postfix.maildir)
    try:
        yield dc
    finally:
        dc.remove()


@dataclass(frozen=True)
class FakeVerdict:  # the anti-spam engine's SpamVerdict (branch spam), for the proxy's side only
    verdict: str
    score: float
    threshold: float
    action: str
    reasons: tuple[str, ...]
    subject_tag: str
    headers: tuple[tuple[str, str], ...]
    error: str | None = None


class GtubeSpam:
    """A test double of ``AntiSpamEngine.check_message``: spam when the message carries GTUBE."""

    def __init__(self, action_received: str = "tag") -> None:
        self.calls: list[bool] = []
        self.action_received = action_received

    def check_message(self, raw: bytes, *, sent: bool, **kw: Any) -> FakeVerdict:
        self.calls.append(sent)
        if b"GTUBE" not in raw:
            return FakeVerdict("ham", 0.5, 6.0, "pass", (), "", ())
        action = "reject" if sent else self.action_received
        return FakeVerdict("spam", 15.0, 6.0, action, ("GTUBE",), "[迷惑メール]" if action == "tag" else "",
                           (("X-Spam-Flag", "YES"), ("X-Spam-Score", "15.0")))


class Proxies:
    def __init__(self, clamd: Any, targets: dict[str, tuple[str, int]], antispam: Any = None, max_concurrent: int = 8,
                 **section: Any) -> None:
        self.engine = MailSecurity()
        self.engine.configure({"enabled": True, "box_name": "vcr-test-box", **section})
        self.alarms: list[dict[str, Any]] = []
        self.ports: dict[str, int] = {}
        self.files: list[tuple[Any, Any]] = []
        self.proxies = []
        for proto, target in targets.items():
            p = MailProxy(self.engine, clamd={"socket": clamd.socket, "max_concurrent": max_concurrent}, emit=self.alarms.append,
                          antispam=antispam, host="127.0.0.1", port=0, upstream=lambda s, t=target: t,
                          protocol_of=lambda port, pr=proto: pr, home_net=("127.0.0.0/8",)).start()
            p.file_listeners.append(lambda f, sess: self.files.append((f, sess)))
            self.proxies.append(p)
            self.ports[proto] = p.port

    def stop(self) -> None:
        for p in self.proxies:
            p.stop()


@pytest.fixture
def proxies(clamd: Any, postfix: lab_mta.Postfix, dovecot: lab_dovecot.Dovecot) -> Iterator[Proxies]:
    px = Proxies(clamd, {"smtp": (postfix.host, postfix.port), "pop3": (dovecot.host, dovecot.pop3_port),
                         "imap": (dovecot.host, dovecot.imap_port)}, antispam=GtubeSpam())
    try:
        yield px
    finally:
        px.stop()


def _empty(dc: lab_dovecot.Dovecot) -> None:
    for sub in ("new", "cur"):
        for p in (dc.maildir / sub).iterdir():
            p.unlink()


def test_smtp_refuses_a_virus_with_554_naming_it_and_delivers_a_clean_japanese_mail_byte_identical(
        proxies: Proxies, postfix: lab_mta.Postfix, dovecot: lab_dovecot.Dovecot):
    _empty(dovecot)
    with smtplib.SMTP("127.0.0.1", proxies.ports["smtp"], timeout=30) as s:
        s.ehlo("pc1.office.example")
        assert not s.has_extn("pipelining") and not s.has_extn("chunking")
        with pytest.raises(smtplib.SMTPDataError) as refused:
            s.sendmail("taro@office.example", ["hanako@office.example"], nested_virus_mail())
        assert refused.value.smtp_code == 554 and b"Eicar-Test-Signature" in refused.value.smtp_error
        clean = japanese_mail(name="見積書 2026年度.pdf")
        s.sendmail("taro@office.example", ["hanako@office.example"], clean)  # same session goes on
    got = postfix.wait_messages(1)
    time.sleep(1.0)  # an infected message would have arrived by now too
    files = postfix.files()
    assert len(files) == 1, [f.read_bytes()[:300] for f in files]
    assert files[0].read_bytes().endswith(clean.replace(b"\r\n", b"\n"))  # Maildir keeps LF; headers prepended
    assert got[0]["Subject"] == "お見積りの件"
    virus = [a for a in proxies.alarms if a.get("av", {}).get("virus")]
    assert virus and virus[0]["av"]["action"] == "refused" and virus[0]["fileinfo"]["filename"] == "invoice.com"
    assert virus[0]["smtp"]["rcpt_to"] == ["<hanako@office.example>"] and virus[0]["email"]["subject"] == "Fwd: invoice"
    assert virus[0]["email"]["message_id"] == "<fwd-1@customer.example>" and virus[0]["app_proto"] == "smtp"
    pc = [a for a in proxies.alarms if "infected_host" in a]
    assert pc and pc[0]["infected_host"]["ip"] == "127.0.0.1"  # the LAN host that sent it


def test_smtp_refuses_spam_sent_out(proxies: Proxies, postfix: lab_mta.Postfix, dovecot: lab_dovecot.Dovecot):
    _empty(dovecot)
    spam = b"From: a@office.example\r\nTo: b@office.example\r\nDate: Mon, 07 Dec 2026 10:00:00 +0900\r\nMessage-ID: <s@x>\r\nSubject: buy\r\n\r\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n"
    with smtplib.SMTP("127.0.0.1", proxies.ports["smtp"], timeout=30) as s:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            s.sendmail("a@office.example", ["hanako@office.example"], spam)
    assert refused.value.smtp_code == 554 and b"spam" in refused.value.smtp_error
    time.sleep(1.0)
    assert postfix.files() == []
    assert any(a.get("infected_host", {}).get("what") == "spam" for a in proxies.alarms)


def _pop3_all(port: int, dc: lab_dovecot.Dovecot) -> list[bytes]:
    p = poplib.POP3("127.0.0.1", port, timeout=30)
    p.user(dc.user)
    p.pass_(dc.password)
    n = p.stat()[0]
    out = [b"\r\n".join(p.retr(i)[1]) + b"\r\n" for i in range(1, n + 1)]
    p.quit()
    return out


def test_pop3_strips_the_virus_tags_spam_and_passes_clean_mail_byte_identical(
        proxies: Proxies, dovecot: lab_dovecot.Dovecot):
    _empty(dovecot)
    clean = japanese_mail(name="請求書.xlsx")
    spam = b"From: a@spam.example\r\nTo: hanako@office.example\r\nSubject: buy now\r\n\r\nGTUBE and .dots\r\n..\r\n"
    for raw in (nested_virus_mail(), clean, spam):
        dovecot.deliver(raw)
    direct = _pop3_all(dovecot.pop3_port, dovecot)
    through = _pop3_all(proxies.ports["pop3"], dovecot)
    assert through[1] == direct[1] == clean
    assert EICAR not in through[0] and b"Fwd: invoice" in through[0]
    import email, email.policy
    notice = [p.get_content() for p in email.message_from_bytes(through[0], policy=email.policy.default).walk()
              if p["X-VCR-Removed"]]
    assert notice and "ウイルス" in notice[0] and "was removed" in notice[0] and "Eicar-Test-Signature" in notice[0]
    tagged = email.message_from_bytes(through[2], policy=email.policy.default)
    assert tagged["Subject"] == "[迷惑メール] buy now" and tagged["X-Spam-Flag"] == "YES"
    assert through[2].endswith(b"\r\n\r\nGTUBE and .dots\r\n..\r\n")  # dot-stuffing undone and redone
    assert len(dovecot.stored()) == 3  # the mailbox itself is untouched
    names = {(f.name.decode(), f.proto, f.to_server) for f, _ in proxies.files}
    assert {("invoice.com", "pop3", False), ("請求書.xlsx", "pop3", False)} <= names  # what a sandbox would get
    removed = [a for a in proxies.alarms if a.get("av", {}).get("action") == "removed"]
    assert removed and removed[0]["app_proto"] == "pop3" and removed[0]["direction"] == "to_client"


def test_imap_strips_the_virus_in_whole_and_part_fetches_and_passes_clean_mail(
        proxies: Proxies, dovecot: lab_dovecot.Dovecot):
    _empty(dovecot)
    clean = japanese_mail(name="議事録.docx", rfc2231=False)
    dovecot.deliver(nested_virus_mail())
    dovecot.deliver(clean)
    m = imaplib.IMAP4("127.0.0.1", proxies.ports["imap"], timeout=30)
    m.login(dovecot.user, dovecot.password)
    m.select("INBOX")
    typ, data = m.fetch("1:2", "(UID BODY.PEEK[])")
    assert typ == "OK"
    bodies = [d[1] for d in data if isinstance(d, tuple)]
    assert EICAR not in bodies[0] and b"X-VCR-Removed: virus" in bodies[0] and b"Fwd: invoice" in bodies[0]
    assert bodies[1] == clean
    # a client fetching the attachment alone (the forwarded mail's second part, base64 as stored)
    typ, data = m.fetch("1", "(BODY.PEEK[2.2])")
    assert typ == "OK"
    import base64
    part = base64.b64decode(b"".join(data[0][1].split()))
    assert EICAR not in part and "ウイルス" in part.decode("utf-8")
    # Thunderbird's chunked download: BODY.PEEK[]<origin.count> until a short chunk; the chunks are
    # ranges of what the PC gets as a whole (the inspected message), never of the infected original
    chunks, origin = [], 0
    while True:
        typ, data = m.fetch("1", f"(BODY.PEEK[]<{origin}.700>)")
        assert typ == "OK" and data[0][0].endswith(b"BODY[]<%d> {%d}" % (origin, len(data[0][1]))), data[0][0]
        chunks.append(data[0][1])
        origin += 700
        if len(data[0][1]) < 700:
            break
    assert b"".join(chunks) == bodies[0] and len(chunks) > 2
    alarms_before = len(proxies.alarms)
    m.fetch("1", "(BODY.PEEK[]<0.700>)")
    assert len(proxies.alarms) == alarms_before  # the same message again: not scanned nor alarmed again
    m.logout()
    assert any(a.get("av", {}).get("action") == "removed" and a["app_proto"] == "imap" for a in proxies.alarms)


def test_a_retrieval_cut_in_the_middle_leaves_mailbox_and_client_sane(proxies: Proxies, dovecot: lab_dovecot.Dovecot):
    _empty(dovecot)
    big = japanese_mail(attachment=os.urandom(3 << 20), name="大きい.bin")
    dovecot.deliver(big)
    dovecot.deliver(japanese_mail())
    s = socket.create_connection(("127.0.0.1", proxies.ports["pop3"]), timeout=30)
    f = s.makefile("rwb")
    f.readline()
    for cmd in (b"USER " + dovecot.user.encode(), b"PASS " + dovecot.password.encode(), b"DELE 2", b"RETR 1"):
        f.write(cmd + b"\r\n")
        f.flush()
        if cmd != b"RETR 1":
            assert f.readline().startswith(b"+OK")
    s.shutdown(socket.SHUT_RDWR)  # the PC goes away while the message is on its way
    s.close()
    time.sleep(0.5)
    again = _pop3_all(proxies.ports["pop3"], dovecot)  # no QUIT: nothing was deleted
    assert len(again) == 2 and again[0] == big
    # IMAP: a fetch cut off, then a fresh session reads the same mailbox
    m = imaplib.IMAP4("127.0.0.1", proxies.ports["imap"], timeout=30)
    m.login(dovecot.user, dovecot.password)
    m.select("INBOX")
    m.send(b"a9 FETCH 1 (BODY.PEEK[])\r\n")
    m.sock.shutdown(socket.SHUT_RDWR)
    m.sock.close()
    m = imaplib.IMAP4("127.0.0.1", proxies.ports["imap"], timeout=30)
    m.login(dovecot.user, dovecot.password)
    assert m.select("INBOX")[1] == [b"2"]
    typ, data = m.fetch("1", "(BODY.PEEK[])")
    assert data[0][1] == big
    m.logout()


def test_starttls_sessions_pass_unread_and_are_counted(clamd: Any, tmp_path_factory: pytest.TempPathFactory):
    import ssl

    _require(lab_dovecot.unavailable_reason(), "DOVECOT")
    _require(lab_mta.unavailable_reason(), "POSTFIX")
    dc = lab_dovecot.start_dovecot(tmp_path_factory.mktemp("dovecot-tls"), starttls=True)
    pf = lab_mta.start_postfix(tmp_path_factory.mktemp("mta-tls"), domains=["office.example"], starttls=True)
    px = Proxies(clamd, {"pop3": (dc.host, dc.pop3_port), "imap": (dc.host, dc.imap_port),
                         "smtp": (pf.host, pf.port)})
    try:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with smtplib.SMTP("127.0.0.1", px.ports["smtp"], timeout=30) as s:
            s.starttls(context=ctx)
            s.sendmail("taro@office.example", ["hanako@office.example"], nested_virus_mail())  # unread: accepted
        assert len(pf.wait_messages(1)) == 1
        dc.deliver(nested_virus_mail())
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        p = poplib.POP3("127.0.0.1", px.ports["pop3"], timeout=30)
        p.stls(ctx)
        p.user(dc.user)
        p.pass_(dc.password)
        got = b"\r\n".join(p.retr(1)[1])
        p.quit()
        assert b"X-VCR-Removed" not in got and b"Fwd: invoice" in got  # encrypted: the box cannot touch it
        m = imaplib.IMAP4("127.0.0.1", px.ports["imap"], timeout=30)
        m.starttls(ctx)
        m.login(dc.user, dc.password)
        m.select("INBOX")
        typ, data = m.fetch("1", "(BODY.PEEK[])")
        assert typ == "OK" and b"X-VCR-Removed" not in data[0][1]
        m.logout()
        deadline = time.monotonic() + 5
        while px.engine.counters.get("mail.uninspected", 0) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert px.engine.counters["mail.uninspected"] == 3 and px.engine.counters["mail.uninspected.starttls"] == 3
        assert not px.alarms  # nothing was scanned
    finally:
        px.stop()
        dc.remove()
        pf.stop()


def test_a_message_over_max_message_passes_whole_unscanned_with_an_alarm(clamd: Any, postfix: lab_mta.Postfix,
                                                                          dovecot: lab_dovecot.Dovecot):
    _empty(dovecot)
    px = Proxies(clamd, {"smtp": (postfix.host, postfix.port), "pop3": (dovecot.host, dovecot.pop3_port)},
                 max_message=4096)
    try:
        big = japanese_mail(attachment=EICAR + os.urandom(3 << 20), name="大きい.bin")
        with smtplib.SMTP("127.0.0.1", px.ports["smtp"], timeout=30) as s:
            s.sendmail("taro@office.example", ["hanako@office.example"], big)
            s.sendmail("taro@office.example", ["hanako@office.example"], japanese_mail())  # the session goes on
        postfix.wait_messages(2)
        stored = sorted((f.read_bytes() for f in postfix.files()), key=len)
        assert len(stored) == 2 and stored[1].endswith(big.replace(b"\r\n", b"\n"))
        got = _pop3_all(px.ports["pop3"], dovecot)
        assert got == _pop3_all(dovecot.pop3_port, dovecot) and max(map(len, got)) > 3 << 20
        too_large = [a for a in px.alarms if a["av"]["reason"] == "too_large"]
        assert [a["app_proto"] for a in too_large] == ["smtp", "pop3"] and px.engine.counters["mail.not_scanned"] == 2
    finally:
        px.stop()


def test_a_burst_of_sessions_waits_for_clamd_instead_of_passing_unscanned(clamd: Any, postfix: lab_mta.Postfix,
                                                                          dovecot: lab_dovecot.Dovecot):
    import concurrent.futures

    _empty(dovecot)
    px = Proxies(clamd, {"smtp": (postfix.host, postfix.port)}, max_concurrent=1)  # engines.av.max_concurrent

    def send(_: int) -> int:
        with smtplib.SMTP("127.0.0.1", px.ports["smtp"], timeout=60) as s:
            try:
                s.sendmail("taro@office.example", ["hanako@office.example"], nested_virus_mail())
                return 250
            except smtplib.SMTPDataError as exc:
                return exc.smtp_code

    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(send, range(8)))
        assert codes == [554] * 8
        time.sleep(0.5)
        assert postfix.files() == [] and "mail.not_scanned" not in px.engine.counters
    finally:
        px.stop()
