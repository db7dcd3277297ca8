"""End to end: anti-spam on the lab bridge. The box's agent (in the ``utm`` namespace) scores with a
private rspamd (lab/rspamd.py, with its redis and its lab DNS blocklist, reached over its unix
socket) that learnt part of the SpamAssassin sample through its controller, as the center teaches
boxes; the lab mail server on the internet host ``mail`` and a PC using poplib/imaplib/smtplib.

- received by POP3 and IMAP: GTUBE and a real spam of the sample are tagged (``[迷惑メール]`` and
  ``X-Spam-*``) and delivered, a ham arrives byte-identical;
- sent by a PC over SMTP: refused with a 554 naming the reason, nothing queued, the infected-PC
  alarm names the PC;
- inbound SMTP (an internet sender to an office mail server on the LAN side, here a Postfix on
  pc2): scanned too, the spam arrives tagged at the office's server.
"""
from __future__ import annotations

import base64
import email
import email.policy
import time
from pathlib import Path
from typing import Any

import pytest

from lab import mta as lab_mta
from lab.agentrun import LabAgent
from lab.netns import Lab
from tests.e2e.mailhost import MAIL_IP, client, empty_mailbox, mail_agent, mailhost  # noqa: F401 (fixtures)

pytestmark = pytest.mark.lab

GTUBE = (b"From: win@prize.example\r\nTo: hanako@office.example\r\nDate: Mon, 07 Dec 2026 10:00:00 +0900\r\n"
         b"Message-ID: <gtube-e2e@prize.example>\r\nSubject: you won\r\n\r\n"
         b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n")


@pytest.fixture(scope="module")
def mail_overrides(taught_rspamd: Any) -> dict[str, Any]:
    return {"engines.antispam": {"enabled": True, "socket": taught_rspamd[0].socket, "timeout": 60.0}}


@pytest.mark.parametrize("proto", ["pop3", "imap"])
def test_received_spam_is_tagged_and_ham_is_byte_identical(office: Lab, mailhost: Any, mail_agent: LabAgent,
                                                           taught_rspamd: Any, proto: str):
    _, spam, ham = taught_rspamd
    pf, dc = mailhost
    empty_mailbox(dc)
    for raw in (GTUBE, spam.raw, ham.raw):
        dc.deliver(raw)
    msgs = [base64.b64decode(m) for m in client(office, proto, MAIL_IP, dc.user, dc.password)["messages"]]
    assert len(msgs) == 3
    assert msgs[2] == ham.raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # byte-identical (as stored, CRLF)
    for m in msgs[:2]:
        parsed = email.message_from_bytes(m, policy=email.policy.default)
        assert parsed["Subject"].startswith("[迷惑メール]"), parsed["Subject"]
        assert parsed["X-Spam-Flag"] == "YES" and float(parsed["X-Spam-Score"]) >= 10.6
    assert len(dc.stored()) == 3  # the mailbox on the server is untouched
    rec = mail_agent.wait_alarm(lambda r: r.get("app_proto") == proto and r["alert"]["signature_id"] == 9510003
                                and r["email"].get("subject") == "you won", timeout=20)
    assert rec is not None and rec["antispam"]["action"] == "tag" and rec["src_ip"] == office.hosts["pc1"].ipv4
    assert any(r.startswith("GTUBE") for r in rec["antispam"]["reasons"]) and rec["antispam"]["score"] >= 10.6


def test_a_pcs_spam_is_refused_at_smtp_naming_the_reason_and_the_pc(office: Lab, mailhost: Any,
                                                                   mail_agent: LabAgent, taught_rspamd: Any,
                                                                   tmp_path: Path):
    _, spam, ham = taught_rspamd
    pf, dc = mailhost
    empty_mailbox(dc)
    files = []
    for name, raw in (("gtube.eml", GTUBE), ("spam.eml", spam.raw), ("ham.eml", ham.raw)):
        (tmp_path / name).write_bytes(raw)
        files.append(str(tmp_path / name))
    out = client(office, "smtp", MAIL_IP, "taro@office.example", "hanako@office.example", *files)
    (c1, r1), (c2, r2), (c3, _) = out["results"]
    assert c1 == 554 and "looks like spam" in r1 and "GTUBE" in r1 and "vcr-lab-box" in r1, out
    assert c2 == 554 and "looks like spam" in r2, out
    assert c3 == 0, out  # the ham is delivered
    pf.wait_messages(1)
    time.sleep(1.0)
    assert len(pf.files()) == 1
    pc1 = office.hosts["pc1"].ipv4
    host = mail_agent.wait_alarm(lambda r: r.get("infected_host", {}).get("what") == "spam", timeout=20)
    assert host is not None and host["infected_host"]["ip"] == pc1 and pc1 in host["alert"]["signature"]
    assert host["alert"]["action"] == "blocked" and host["smtp"]["mail_from"] == "<taro@office.example>"


def test_inbound_smtp_to_an_office_mail_server_is_scanned(office: Lab, mailhost: Any, mail_agent: LabAgent,
                                                          tmp_path: Path):
    pc2 = office.hosts["pc2"].ipv4
    lan_pf = lab_mta.start_postfix(tmp_path / "lanmta", domains=["lan-office.example"], host=pc2, port=25,
                                   netns=office.netns("pc2"))
    try:
        raw = GTUBE.replace(b"hanako@office.example", b"boss@lan-office.example")
        (tmp_path / "in.eml").write_bytes(raw)
        out = client(office, "smtp", pc2, "win@prize.example", "boss@lan-office.example", str(tmp_path / "in.eml"),
                     host="mail")
        assert out["results"][0][0] == 0, out  # received mail is tagged and delivered, not refused
        got = lan_pf.wait_messages(1)
        assert got, "nothing reached the office's mail server"
        time.sleep(0.5)
        delivered = lan_pf.files()[0].read_bytes()
        parsed = email.message_from_bytes(delivered, policy=email.policy.default)
        assert parsed["Subject"].startswith("[迷惑メール]") and parsed["X-Spam-Flag"] == "YES"
        rec = mail_agent.wait_alarm(lambda r: r["alert"]["signature_id"] == 9510003 and r.get("app_proto") == "smtp"
                                    and r["dest_ip"] == pc2, timeout=20)
        assert rec is not None and rec["antispam"]["direction"] == "received" and rec["antispam"]["lan_host"] == pc2
        assert rec["src_ip"] == MAIL_IP and rec["smtp"]["rcpt_to"] == ["<boss@lan-office.example>"]
    finally:
        lan_pf.stop()
