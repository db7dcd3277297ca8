"""The lab's mail server: a private Postfix (SMTP 25) and a private Dovecot (POP3 110, IMAP 143) on
the internet host ``mail`` (198.51.100.25), Dovecot serving the Maildir Postfix delivers into (every
address of office.example), user ``hanako`` / ``office-pass``. Used by the mail e2e tests and the demo;
the PC's side is lab/mailclient.py."""
from __future__ import annotations

import base64
import json
import sys
from dataclasses import dataclass
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path
from typing import Any

from lab import dovecot as lab_dovecot
from lab import mta as lab_mta
from lab.netns import Lab

MAIL_IP = "198.51.100.25"
MAIL_IP6 = "2001:db8:100::25"
DOMAIN = "office.example"
CLIENT = Path(__file__).with_name("mailclient.py")
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def unavailable_reason() -> str | None:
    return lab_mta.unavailable_reason() or lab_dovecot.unavailable_reason()


@dataclass
class MailServer:
    postfix: lab_mta.Postfix
    dovecot: lab_dovecot.Dovecot

    def stop(self) -> None:
        try:
            self.dovecot.remove()
        finally:
            self.postfix.stop()


def start_mail_server(lab: Lab, workdir: Path) -> MailServer:
    """Add the host ``mail`` to the (running) lab and start both servers in it."""
    if "mail" not in lab.hosts:
        lab.add_internet_host("mail", MAIL_IP)
    ns = lab.netns("mail")
    pf = lab_mta.start_postfix(workdir / "mta", domains=[DOMAIN], host=MAIL_IP, port=25, netns=ns,
                               mynetworks="127.0.0.0/8 192.0.2.0/24")
    try:
        dc = lab_dovecot.start_dovecot(workdir / "dovecot", maildir=pf.maildir, host=MAIL_IP, pop3_port=110,
                                       imap_port=143, netns=ns, also=lab.hosts["mail"].ipv6)
    except BaseException:
        pf.stop()
        raise
    return MailServer(pf, dc)


def client(lab: Lab, *args: str, host: str = "pc1") -> dict[str, Any]:
    """Run lab/mailclient.py at ``host`` (a PC): its JSON answer."""
    res = lab.exec(host, [sys.executable, str(CLIENT), *args], timeout=120)
    if res.returncode != 0:
        raise RuntimeError(f"mail client failed: {res.stderr[-2000:]}")
    return json.loads(res.stdout)


def fetched(answer: dict[str, Any]) -> list[bytes]:
    return [base64.b64decode(m) for m in answer["messages"]]


def virus_mail(subject: str = "請求書") -> bytes:
    """A mail with EICAR attached, as a Japanese office receives them."""
    msg = MIMEMultipart()
    msg["From"] = "billing@bad.example"
    msg["To"] = f"hanako@{DOMAIN}"
    msg["Subject"] = subject
    msg["Date"] = "Mon, 07 Dec 2026 10:00:00 +0900"
    msg["Message-ID"] = "<virus-demo@bad.example>"
    msg.attach(MIMEText("請求書を添付します。", "plain", "utf-8"))
    part = MIMEApplication(EICAR, "octet-stream")
    part.add_header("Content-Disposition", "attachment", filename=("utf-8", "", "請求書.com"))
    msg.attach(part)
    return msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
