"""Test messages built with the standard library, as Japanese mailers send them."""
from __future__ import annotations

import base64
from email.header import Header
from email.mime.application import MIMEApplication
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def japanese_mail(attachment: bytes = b"%PDF-1.4\n% clean\n", name: str = "見積書.pdf", *,
                  rfc2231: bool = True) -> bytes:
    """ISO-2022-JP body and subject, an attachment with a Japanese name (RFC 2231, or RFC 2047 as Outlook)."""
    msg = MIMEMultipart()
    msg["From"] = "Yamada Taro <taro@customer.example>"
    msg["To"] = "hanako@office.example"
    msg["Subject"] = Header("お見積りの件", "iso-2022-jp").encode()
    msg["Message-ID"] = "<test-1@customer.example>"
    msg["Date"] = "Mon, 07 Dec 2026 10:00:00 +0900"
    msg.attach(MIMEText("いつもお世話になっております。\n見積書をお送りします。\n", "plain", "iso-2022-jp"))
    part = MIMEApplication(attachment, "octet-stream")
    if rfc2231:
        part.add_header("Content-Disposition", "attachment", filename=("utf-8", "", name))
    else:
        part.add_header("Content-Disposition", "attachment", filename=Header(name, "iso-2022-jp").encode())
    msg.attach(part)
    return msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def nested_virus_mail() -> bytes:
    """A forwarded mail (message/rfc822) whose attachment is EICAR, quoted-printable text beside it."""
    inner = MIMEMultipart()
    inner["From"] = "someone@bad.example"
    inner["Subject"] = "invoice"
    inner.attach(MIMEText("see attached", "plain", "utf-8"))
    bad = MIMEApplication(EICAR, "octet-stream")
    bad.add_header("Content-Disposition", "attachment", filename="invoice.com")
    inner.attach(bad)
    outer = MIMEMultipart()
    outer["From"] = "fwd@customer.example"
    outer["To"] = "hanako@office.example"
    outer["Subject"] = "Fwd: invoice"
    outer["Message-ID"] = "<fwd-1@customer.example>"
    outer["Date"] = "Mon, 07 Dec 2026 10:00:00 +0900"
    outer.attach(MIMEText("転送します。", "plain", "utf-8"))
    outer.attach(MIMEMessage(inner))
    return outer.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def sjis_raw_name_mail() -> bytes:
    """An attachment name sent as raw Shift_JIS bytes (no encoding), as old Japanese mailers do."""
    body = base64.encodebytes(EICAR).replace(b"\n", b"\r\n")
    return (b"From: a@b.example\r\nTo: c@d.example\r\nSubject: raw\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
            b"--XX\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\""
            + "請求書.com".encode("cp932") + b"\"\r\nContent-Transfer-Encoding: base64\r\n\r\n" + body + b"--XX--\r\n")
