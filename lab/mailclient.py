"""The PC's mail client in the lab (run inside a PC's namespace): smtplib, poplib, imaplib as a mail
program uses them. Prints one JSON object.

    mailclient.py smtp HOST FROM TO FILE...      -> {"results": [[code, reply], ...]}  (0: accepted)
    mailclient.py pop3 HOST USER PASSWORD        -> {"messages": [base64, ...]}
    mailclient.py imap HOST USER PASSWORD        -> {"messages": [base64, ...]}
"""
from __future__ import annotations

import base64
import imaplib
import json
import poplib
import smtplib
import sys
from pathlib import Path


def main(argv: list[str]) -> dict:
    kind, host = argv[0], argv[1]
    if kind == "smtp":
        sender, rcpt, files = argv[2], argv[3], argv[4:]
        out = []
        with smtplib.SMTP(host, 25, timeout=60) as s:
            s.ehlo("pc1.office.example")
            for f in files:
                try:
                    s.sendmail(sender, [rcpt], Path(f).read_bytes())
                    out.append([0, ""])
                except smtplib.SMTPResponseException as exc:
                    out.append([exc.smtp_code, exc.smtp_error.decode("utf-8", "replace")])
        return {"results": out}
    user, password = argv[2], argv[3]
    if kind == "pop3":
        p = poplib.POP3(host, 110, timeout=60)
        p.user(user)
        p.pass_(password)
        n = p.stat()[0]
        msgs = [b"\r\n".join(p.retr(i)[1]) + b"\r\n" for i in range(1, n + 1)]
        p.quit()
    else:
        m = imaplib.IMAP4(host, 143, timeout=60)
        m.login(user, password)
        n = int(m.select("INBOX")[1][0])
        msgs = []
        if n:
            typ, data = m.fetch(f"1:{n}", "(BODY.PEEK[])")
            msgs = [d[1] for d in data if isinstance(d, tuple)]
        m.logout()
    return {"messages": [base64.b64encode(x).decode() for x in msgs]}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
