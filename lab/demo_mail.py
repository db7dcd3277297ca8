"""The demo's mail step (lab/demo.py): the lab's mail server on the internet side, a private clamd,
a private rspamd (taught part of the SpamAssassin sample, as the center teaches boxes) and the
agent's mail proxy: a PC sends a mail with a virus (refused with 554) and receives one by POP3 (the
attachment replaced by the notice); a spam received by POP3 is tagged, a PC's spam is refused at SMTP."""
from __future__ import annotations

import email
import email.policy
from pathlib import Path
from typing import Any, Callable

from lab import mailserver
from lab.agentrun import LabAgent
from lab.clamd import PrivateClamd, missing
from lab.netns import Lab


GTUBE_MAIL = (b"From: campaign@prize.example\r\nTo: hanako@office.example\r\n"
              b"Date: Mon, 07 Dec 2026 10:00:00 +0900\r\nMessage-ID: <gtube-demo@prize.example>\r\n"
              b"Subject: =?UTF-8?B?5b2T6YG444GK44KB44Gn44Go44GG?=\r\nMIME-Version: 1.0\r\n"
              b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
              b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n")


class DemoMail:
    def __init__(self) -> None:
        self.server: mailserver.MailServer | None = None
        self.clamd: PrivateClamd | None = None
        self.rspamd: Any = None
        self.why_not = ""
        self.why_no_spam = ""

    def start(self, lab: Lab, workdir: Path) -> dict[str, Any]:
        """Start clamd and the mail server; the agent overrides that turn mail security on ({} when
        they cannot run here)."""
        self.why_not = mailserver.unavailable_reason() or missing() or ""
        if self.why_not:
            return {}
        try:
            self.clamd = PrivateClamd(workdir / "clamd").start()
            self.server = mailserver.start_mail_server(lab, workdir / "mail")
        except Exception as exc:  # the rest of the demo goes on without mail
            self.stop()
            self.why_not = f"mail server or clamd did not start: {exc}"[:500]
            return {}
        overrides = {"engines.av": {"enabled": False, "clamd_socket": self.clamd.socket,
                                    "database": str(self.clamd.database)},
                     "engines.mail": {"enabled": True, "box_name": "VCR116W-DEMO"}}
        from lab import rspamd as lab_rspamd

        self.why_no_spam = lab_rspamd.missing() or ""
        if not self.why_no_spam:
            try:
                from lab.spameval import shared_corpus, teach_sample

                self.rspamd = lab_rspamd.PrivateRspamd(workdir / "rspamd", min_learns=10).start()
                teach_sample(self.rspamd, shared_corpus())
                overrides["engines.antispam"] = {"enabled": True, "socket": self.rspamd.socket, "timeout": 60.0}
            except Exception as exc:  # the demo goes on without anti-spam
                self.why_no_spam = f"rspamd did not start: {exc}"[:500]
                if self.rspamd is not None:
                    self.rspamd.stop()
                    self.rspamd = None
        return overrides

    def show(self, lab: Lab, agent: LabAgent, results: dict[str, bool], step: Callable[..., None],
             say: Callable[[str, str], None], n: int, workdir: Path) -> None:
        step(n, "メールのウイルス対策 (SMTP で送信、POP3 で受信)", "mail antivirus (sending by SMTP, receiving by POP3)")
        if self.server is None:
            say(f"スキップ: {self.why_not}", f"skipped: {self.why_not}")
            return
        virus = workdir / "virus.eml"
        virus.write_bytes(mailserver.virus_mail())
        (code, reply), = mailserver.client(lab, "smtp", mailserver.MAIL_IP, "taro@office.example",
                                           "hanako@office.example", str(virus))["results"]
        print(f"    PC1 → メールサーバー: ウイルス付きメールを送信 / pc1 sends a mail with EICAR attached -> {code} {reply}")
        results["mail: virus refused at SMTP"] = code == 554 and "Eicar" in reply
        self.server.dovecot.deliver(mailserver.virus_mail("ご請求のお知らせ"))
        got = mailserver.fetched(mailserver.client(lab, "pop3", mailserver.MAIL_IP, self.server.dovecot.user,
                                                    self.server.dovecot.password))
        notice = ""
        for m in got:
            for part in email.message_from_bytes(m, policy=email.policy.default).walk():
                if part["X-VCR-Removed"]:
                    notice = part.get_content()
        for line in notice.strip().splitlines()[:1] + notice.strip().splitlines()[-2:-1]:
            print(f"    POP3 で受信した添付ファイルの代わり / in place of the attachment: {line}")
        results["mail: virus removed at POP3"] = bool(got) and mailserver.EICAR not in b"".join(got) and "ウイルス" in notice
        rec = agent.wait_alarm(lambda r: r.get("alert", {}).get("engine") == "mail" and "av" in r, timeout=5)
        if rec is not None:
            say(f"警告: {rec['alert']['signature']} ({rec['email'].get('subject')})",
                f"alarm: {rec['alert']['signature']}, app_proto {rec['app_proto']}")

    def show_spam(self, lab: Lab, agent: LabAgent, results: dict[str, bool], step: Callable[..., None],
                  say: Callable[[str, str], None], n: Any, workdir: Path) -> None:
        step(n, "迷惑メール対策 (POP3 で受信、SMTP で送信)", "anti-spam (receiving by POP3, sending by SMTP)")
        if self.server is None or self.rspamd is None:
            why = self.why_not or self.why_no_spam
            say(f"スキップ: {why}", f"skipped: {why}")
            return
        self.server.dovecot.deliver(GTUBE_MAIL)
        got = mailserver.fetched(mailserver.client(lab, "pop3", mailserver.MAIL_IP, self.server.dovecot.user,
                                                    self.server.dovecot.password))
        tagged = [email.message_from_bytes(m, policy=email.policy.default) for m in got]
        tagged = [m for m in tagged if m["X-Spam-Flag"] == "YES"]
        if tagged:
            print(f"    POP3 で受信 / received by POP3: Subject: {tagged[0]['Subject']}")
            print(f"    {tagged[0]['X-Spam-Status'][:100]}")
        results["anti-spam: spam tagged at POP3"] = bool(tagged) and tagged[0]["Subject"].startswith("[迷惑メール]")
        spam = workdir / "spam.eml"
        spam.write_bytes(GTUBE_MAIL)
        (code, reply), = mailserver.client(lab, "smtp", mailserver.MAIL_IP, "taro@office.example",
                                           "customer@example.net", str(spam))["results"]
        print(f"    PC1 → メールサーバー: 迷惑メールを送信 / pc1 sends spam -> {code} {reply}")
        results["anti-spam: a PC's spam refused at SMTP"] = code == 554 and "spam" in reply
        rec = agent.wait_alarm(lambda r: r.get("infected_host", {}).get("what") == "spam", timeout=5)
        if rec is not None:
            say(f"警告: {rec['alert']['signature']} (感染の疑いのある PC)", f"alarm: {rec['alert']['signature']}")

    def stop(self) -> None:
        server, clamd, self.server, self.clamd = self.server, self.clamd, None, None
        rspamd, self.rspamd = self.rspamd, None
        try:
            if rspamd is not None:
                rspamd.stop()
        except Exception:
            pass
        try:
            if server is not None:
                server.stop()
        finally:
            if clamd is not None:
                clamd.stop()
