"""End to end: mail security on the lab bridge. The lab's mail server (a private Postfix and a
private Dovecot on the internet side, 198.51.100.25) and a PC using smtplib/poplib/imaplib; the
agent REDIRECTs the plaintext mail ports to its proxy and scans with a private clamd (starter
database). A virus is refused at SMTP with a 554 naming it and nothing reaches the mailbox; at POP3
and IMAP the infected attachment is replaced by the notice; a clean Japanese mail with a Japanese
attachment name arrives byte-identical; the alarms are in eve.json; TLS mail ports are counted."""
from __future__ import annotations

import base64
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lab.agentrun import LabAgent
from lab.netns import Lab
from lab.mailserver import MAIL_IP6
from tests.e2e.mailhost import (  # noqa: F401 (fixtures)
    MAIL_IP, client, empty_mailbox, mail_agent, mail_overrides, mailhost)
from tests.filters.mail.samples import EICAR, japanese_mail, nested_virus_mail

pytestmark = pytest.mark.lab


def test_smtp_refuses_a_virus_and_delivers_a_clean_japanese_mail_byte_identical(
        office: Lab, mailhost: Any, mail_agent: LabAgent, tmp_path: Path):
    pf, dc = mailhost
    empty_mailbox(dc)
    virus, clean = tmp_path / "virus.eml", tmp_path / "clean.eml"
    virus.write_bytes(nested_virus_mail())
    clean_raw = japanese_mail(name="見積書（御社向け）.pdf")
    clean.write_bytes(clean_raw)
    out = client(office, "smtp", MAIL_IP, "taro@office.example", "hanako@office.example", str(virus), str(clean))
    (code, reply), (ok, _) = out["results"]
    assert code == 554 and "Eicar-Test-Signature" in reply and "invoice.com" in reply, out
    assert ok == 0
    pf.wait_messages(1)
    time.sleep(1.0)
    files = pf.files()
    assert len(files) == 1 and files[0].read_bytes().endswith(clean_raw.replace(b"\r\n", b"\n"))
    pc1 = office.hosts["pc1"].ipv4
    rec = mail_agent.wait_alarm(lambda r: r.get("av", {}).get("virus", "").startswith("Eicar") and r.get("app_proto") == "smtp")
    assert rec is not None and rec["alert"]["action"] == "blocked" and rec["src_ip"] == pc1 and rec["dest_ip"] == MAIL_IP
    assert rec["fileinfo"]["filename"] == "invoice.com" and rec["email"]["message_id"] == "<fwd-1@customer.example>"
    assert rec["smtp"]["mail_from"] == "<taro@office.example>"
    host = mail_agent.wait_alarm(lambda r: "infected_host" in r)
    assert host is not None and host["infected_host"]["ip"] == pc1 and pc1 in host["alert"]["signature"]


@pytest.mark.parametrize("proto", ["pop3", "imap"])
def test_received_virus_is_stripped_and_clean_mail_is_byte_identical(office: Lab, mailhost: Any, mail_agent: LabAgent,
                                                                       proto: str):
    pf, dc = mailhost
    empty_mailbox(dc)
    clean_raw = japanese_mail(name="議事録_2026年12月.docx", rfc2231=(proto == "pop3"))
    dc.deliver(nested_virus_mail())
    dc.deliver(clean_raw)
    msgs = [base64.b64decode(m) for m in client(office, proto, MAIL_IP, dc.user, dc.password)["messages"]]
    assert len(msgs) == 2
    assert EICAR not in msgs[0] and b"X-VCR-Removed: virus" in msgs[0] and b"Fwd: invoice" in msgs[0]
    import email
    import email.policy
    notice = [p.get_content() for p in email.message_from_bytes(msgs[0], policy=email.policy.default).walk()
              if p["X-VCR-Removed"]]
    assert "ウイルス" in notice[0] and "was removed" in notice[0] and "vcr-lab-box" in notice[0]
    assert msgs[1] == clean_raw
    assert len(dc.stored()) == 2  # the server's mailbox is as it was
    rec = mail_agent.wait_alarm(lambda r: r.get("app_proto") == proto and r.get("av", {}).get("action") == "removed")
    assert rec is not None and rec["email"]["subject"] == "Fwd: invoice" and rec["dest_ip"] == MAIL_IP


def test_tls_mail_ports_are_counted_as_uninspected(office: Lab, mailhost: Any, mail_agent: LabAgent):
    before = mail_agent.counter("mail", "mail.uninspected")
    res = office.exec("pc1", [sys.executable, "-c",
                              f"import socket; socket.create_connection(('{MAIL_IP}', 995), 5).close()"])
    assert res.returncode == 0, res.stderr
    assert mail_agent.wait_counter("mail", "mail.uninspected", before + 1) >= before + 1


@pytest.mark.parametrize("proto", ["pop3", "imap"])
def test_received_virus_is_stripped_over_ipv6_too(office: Lab, mailhost: Any, mail_agent: LabAgent, proto: str):
    pf, dc = mailhost
    empty_mailbox(dc)
    dc.deliver(nested_virus_mail())
    msgs = [base64.b64decode(m) for m in client(office, proto, MAIL_IP6, dc.user, dc.password)["messages"]]
    assert len(msgs) == 1 and EICAR not in msgs[0] and b"X-VCR-Removed: virus" in msgs[0]
    rec = mail_agent.wait_alarm(lambda r: r.get("app_proto") == proto and r.get("dest_ip") == MAIL_IP6)
    assert rec is not None and rec["src_ip"] == office.hosts["pc1"].ipv6 and rec["av"]["action"] == "removed"


def test_zz_agent_stopped_mail_flows_uninspected(office: Lab, mailhost: Any, mail_agent: LabAgent):
    """Last in the module: the agent stops; its REDIRECT goes with it and mail reaches the server
    directly (fail-open: uninspected, not refused)."""
    pf, dc = mailhost
    empty_mailbox(dc)
    dc.deliver(nested_virus_mail())
    assert mail_agent.stop() == 0
    nat = office.exec("utm", ["iptables", "-w", "-t", "nat", "-S"]).stdout
    assert "REDIRECT" not in nat, nat
    msgs = [base64.b64decode(m) for m in client(office, "pop3", MAIL_IP, dc.user, dc.password)["messages"]]
    assert msgs == [m.replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n") for m in dc.stored()]  # as stored: untouched
    assert b"X-VCR-Removed" not in msgs[0]
