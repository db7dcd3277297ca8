"""Mail security (engine ``mail``): what the box does with a message the mail proxy reassembled.

The proxy (agent/dataplane/mailproxy.py) owns the sockets; here, sans-IO apart from the two
callables it passes in (the clamd scan and the anti-spam engine's ``check_message``):

- ``inspect`` parses the message (filters.mail.message), hands every part with content to the
  scanner as a ``FileEvent`` and the whole message to the anti-spam engine when one runs, and says
  what happens to it: ``pass`` (byte-identical), ``reject`` (SMTP: a 554 reply naming the reason),
  ``strip`` (POP3/IMAP: infected parts replaced by a notice in Japanese and English) or ``tag``
  (spam: the subject tag and X-Spam-* headers);
- the alarms are EVE ``alert`` records as Suricata writes them for SMTP (``fileinfo``, ``smtp``,
  ``email``), with an ``av`` or ``antispam`` object; a LAN PC sending a virus or spam out is an
  infected-PC alarm naming the host;
- in the packet pipeline the engine only counts the mail it cannot inspect: every connection to a
  TLS mail port (465, 993, 995) adds to ``mail.uninspected``; the proxy adds STARTTLS sessions.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Literal, Mapping

from pydantic import Field

from filters.app.events import FileEvent
from filters.engine import Decision, Engine, EngineConfig, EngineContext
from filters.mail import message as mime

SID_VIRUS = 9_510_001
SID_VIRUS_SENT = 9_510_002  # a LAN PC sent a virus out: an infected PC
SID_SPAM = 9_510_003
SID_SPAM_SENT = 9_510_004  # a LAN PC sent spam out
SID_NOT_SCANNED = 9_510_005
CATEGORY = "A Network Trojan was detected"
SPAM_CATEGORY = "Potentially Bad Traffic"
# An rspamd outage would otherwise write one alarm per message: at most one per this many seconds,
# the next one saying how many were left out (the counter mail.spam_errors counts them all).
SPAM_ERROR_ALARM_INTERVAL = 300.0


class MailConfig(EngineConfig):
    """``engines.mail``: mail antivirus (and anti-spam, with engines.antispam) on the plaintext mail ports,
    through a transparent proxy on the box."""

    listen_port: int = Field(10025, ge=1, le=65535,
                             description="TCP port of the box's mail proxy; connections to the mail ports are "
                                         "redirected to it while it is healthy (else they pass uninspected)")
    smtp_ports: list[int] = Field([25, 587], description="plaintext SMTP ports inspected (sent mail; STARTTLS on "
                                                         "them is counted in mail.uninspected)")
    pop3_ports: list[int] = Field([110], description="plaintext POP3 ports inspected (received mail)")
    imap_ports: list[int] = Field([143], description="plaintext IMAP ports inspected (received mail)")
    tls_ports: list[int] = Field([465, 993, 995],
                                 description="TLS mail ports: not decrypted, each connection counted in mail.uninspected")
    scan_sent: bool = Field(True, description="scan mail the office's PCs send (SMTP)")
    scan_received: bool = Field(True, description="scan mail the office's PCs receive (POP3, IMAP, inbound SMTP)")
    max_message: int = Field(25 << 20, ge=1024, le=100 << 20,
                             description="bytes: a larger message passes unscanned, with an alarm")
    scan_timeout: float = Field(30.0, ge=1, le=300, description="seconds per message for clamd and the anti-spam engine; "
                                                                "then the message passes with an alarm")
    monitor_only: bool = Field(False, description="raise alarms, never refuse or change a message")
    box_name: str = Field("", description="the box's name in the notice replacing a removed attachment; default: "
                                          "the host name")
    idle_timeout: float = Field(1800.0, ge=10, le=86400,
                                description="seconds a proxied connection may stay silent (IMAP IDLE lasts up to 29 min)")


@dataclass
class Outcome:
    """What happens to one message."""

    action: Literal["pass", "reject", "tempfail", "strip", "tag"] = "pass"
    data: bytes = b""  # the message to deliver (the original when pass)
    reply: str = ""  # SMTP reply for reject (554) and tempfail (451), ASCII
    alarms: list[dict[str, Any]] = field(default_factory=list)
    virus: str = ""
    spam: Any = None  # the anti-spam verdict, when one was asked


@dataclass(frozen=True)
class Session:
    """Facts of the connection the message came through."""

    proto: str  # "smtp" | "pop3" | "imap"
    sent: bool  # True: a LAN PC sends it out (SMTP from the LAN)
    client: tuple[str, int]
    server: tuple[str, int]
    flow_id: int = 0
    helo: str = ""
    mail_from: str = ""
    rcpt_to: tuple[str, ...] = ()


def _text(b: bytes | str) -> str:
    return b if isinstance(b, str) else b.decode("utf-8", "replace")


class MailSecurity(Engine):
    Config = MailConfig
    name: ClassVar[str] = "mail"

    def __init__(self) -> None:
        super().__init__()
        self.conf = MailConfig()
        self.box = ""
        self._spam_error_lock = threading.Lock()
        self._spam_error_last = -1e9
        self._spam_error_suppressed = 0

    def configure(self, section: Mapping[str, Any], ctx: EngineContext = EngineContext()) -> None:
        self.conf = self.check_section(section)
        self.box = self.conf.box_name or os.uname().nodename

    def summary(self) -> dict[str, Any]:
        c = self.conf
        return {"listen_port": c.listen_port, "smtp_ports": list(c.smtp_ports), "pop3_ports": list(c.pop3_ports),
                "imap_ports": list(c.imap_ports), "tls_ports": list(c.tls_ports)}

    def protocol(self, port: int) -> str | None:
        c = self.conf
        return "smtp" if port in c.smtp_ports else "pop3" if port in c.pop3_ports else "imap" if port in c.imap_ports else None

    # -- the packet pipeline: count what cannot be inspected ----------------------------------------
    def on_flow_start(self, flow: Any, pkt: Any) -> Iterable[Decision] | None:
        if getattr(flow, "proto", 0) == 6 and getattr(flow, "server_port", None) in self.conf.tls_ports:
            self.count("mail.uninspected")
            self.count("mail.uninspected.tls_port")
        return None

    # -- messages -----------------------------------------------------------------------------------
    def inspect(self, raw: bytes, session: Session, *, scan: Callable[[FileEvent], Mapping[str, Any]],
                spam: Callable[..., Any] | None = None, lan_addr: bytes = b"") -> Outcome:
        """The outcome for ``raw``. ``scan(file)`` returns clamd's answer ({"status", "virus"}) or
        raises; ``spam(raw, sent=..., ...)`` is the anti-spam engine's ``check_message``. Never raises
        for a hostile message: what cannot be parsed or scanned passes with an alarm."""
        out = Outcome(data=raw)
        if (session.sent and not self.conf.scan_sent) or (not session.sent and not self.conf.scan_received):
            return out
        self.count("mail.messages")
        if len(raw) > self.conf.max_message:
            self.count("mail.not_scanned")
            out.alarms.append(self._not_scanned(session, "too_large", {"size": len(raw), "max_message": self.conf.max_message}))
            return out
        try:
            msg = mime.parse(raw)
            files = mime.file_events(msg, proto=session.proto, to_server=session.sent, lan_addr=lan_addr)
            facts = mime.facts(msg, session.rcpt_to)
        except Exception as exc:  # the email package on hostile input: pass, say so
            self.count("mail.parse_errors")
            out.alarms.append(self._not_scanned(session, "unparsable", {"error": str(exc)[:200]}))
            return out
        infected: dict[str, tuple[str, str]] = {}
        for part, file in files:
            try:
                res = scan(file)
            except Exception as exc:
                self.count("mail.not_scanned")
                out.alarms.append(self._not_scanned(session, "scanner_unavailable", {"error": str(exc)[:200]}, facts, file))
                continue
            if res.get("status") == "FOUND" and res.get("virus"):
                virus = str(res["virus"])
                infected[part.path] = (part.name, virus)
                out.virus = out.virus or virus
                out.alarms.append(self._virus(session, facts, file, virus))
        if infected:
            self.count("mail.infected")
            if session.sent:
                out.alarms.append(self._infected_pc(session, facts, SID_VIRUS_SENT, f"virus {out.virus}"))
            if not self.conf.monitor_only:
                if session.proto == "smtp":
                    out.action = "reject"
                    name = next(iter(infected.values()))[0]
                    where = f" in {name}" if name and name.isascii() else " in an attachment" if name else ""
                    out.reply = smtp_reply(f"virus {out.virus} found{where}", self.box)
                    out.data = b""
                else:
                    out.action = "strip"
                    try:
                        out.data = mime.strip_infected(raw, infected, self.box)
                    except Exception:  # a message the generator cannot write back: only the notice goes on
                        self.count("mail.parse_errors")
                        out.data = mime.notice_message(raw, next(iter(infected.values())), self.box)
            return out
        if spam is not None:
            try:
                verdict = spam(raw, sent=session.sent, mail_from=session.mail_from, rcpt_to=session.rcpt_to,
                               helo=session.helo, client_ip=session.client[0])
            except Exception as exc:  # by contract check_message never raises; a broken engine is an outage too
                verdict = None
                self._spam_error(out, session, facts, str(exc))
            out.spam = verdict
            if verdict is not None and getattr(verdict, "error", None):
                self._spam_error(out, session, facts, str(verdict.error))
                if verdict.action == "tempfail" and session.proto == "smtp" and not self.conf.monitor_only:
                    out.action, out.data = "tempfail", b""
                    out.reply = smtp_reply("anti-spam check unavailable, try again later", self.box, code="451 4.7.1")
            elif verdict is not None and verdict.verdict == "spam":
                self.count("mail.spam")
                out.alarms.append(self._spam(session, facts, verdict))
                if session.sent:
                    out.alarms.append(self._infected_pc(session, facts, SID_SPAM_SENT, "spam"))
                if not self.conf.monitor_only:
                    if verdict.action == "reject" and session.proto == "smtp":
                        out.action, out.data = "reject", b""
                        why = ", ".join(r.split("(", 1)[0] for r in verdict.reasons[:3])
                        out.reply = smtp_reply(f"message looks like spam (score {verdict.score:.1f}"
                                               f"{': ' + why if why else ''})", self.box)
                    elif verdict.action in ("tag", "reject"):  # received mail cannot be refused: tagged
                        out.action = "tag"
                        out.data = mime.tag_spam(raw, verdict.subject_tag or "[SPAM]", tuple(verdict.headers))
        return out

    def _spam_error(self, out: Outcome, session: Session, facts: mime.MailFacts, error: str) -> None:
        """The anti-spam engine could not score the message: counted always, an alarm at most once per
        ``SPAM_ERROR_ALARM_INTERVAL`` (the next one carries how many were left out)."""
        self.count("mail.spam_errors")
        now = time.monotonic()
        with self._spam_error_lock:
            if now - self._spam_error_last < SPAM_ERROR_ALARM_INTERVAL:
                self._spam_error_suppressed += 1
                return
            self._spam_error_last, suppressed, self._spam_error_suppressed = now, self._spam_error_suppressed, 0
        out.alarms.append(self._not_scanned(session, "antispam_unavailable",
                                            {"error": error[:200], "suppressed": suppressed}, facts))

    # -- alarms -------------------------------------------------------------------------------------
    def _base(self, session: Session, sid: int, signature: str, category: str, severity: int, reason: str,
              blocked: bool) -> dict[str, Any]:
        to_server = session.sent or session.proto == "smtp"
        return {
            "timestamp": _timestamp(time.time()),
            "flow_id": session.flow_id,
            "event_type": "alert",
            "src_ip": session.client[0], "src_port": session.client[1],
            "dest_ip": session.server[0], "dest_port": session.server[1],
            "proto": "TCP", "app_proto": session.proto,
            "direction": "to_server" if to_server else "to_client",
            "alert": {"action": "blocked" if blocked else "allowed", "gid": 1, "signature_id": sid, "rev": 1,
                      "signature": signature, "category": category, "severity": severity, "engine": self.name,
                      "reason": reason},
            **({"smtp": {"helo": session.helo, "mail_from": f"<{session.mail_from}>",
                         "rcpt_to": [f"<{r}>" for r in session.rcpt_to]}} if session.proto == "smtp" else {}),
        }

    def _virus(self, session: Session, facts: mime.MailFacts, file: FileEvent, virus: str) -> dict[str, Any]:
        blocked = not self.conf.monitor_only
        action = "passed" if not blocked else "refused" if session.proto == "smtp" else "removed"
        rec = self._base(session, SID_VIRUS, f"VCR Mail AV: virus {virus}", CATEGORY, 1, "infected", blocked)
        rec["fileinfo"] = {"filename": _text(file.name), "magic": file.magic, "gaps": False, "state": "CLOSED",
                           "sha256": file.sha256, "stored": False, "size": file.size, "tx_id": 0}
        rec["email"] = facts.eve()
        rec["av"] = {"virus": virus, "action": action, "direction": "sent" if session.sent else "received",
                     "lan_host": _lan_host(session), "reason": "infected"}
        return rec

    def _spam(self, session: Session, facts: mime.MailFacts, v: Any) -> dict[str, Any]:
        blocked = not self.conf.monitor_only and v.action == "reject" and session.proto == "smtp"
        rec = self._base(session, SID_SPAM, f"VCR Mail: spam (score {v.score:.1f})", SPAM_CATEGORY, 2, "spam", blocked)
        rec["email"] = facts.eve()
        rec["antispam"] = {"verdict": v.verdict, "score": v.score, "threshold": v.threshold,
                           "action": "passed" if self.conf.monitor_only else v.action,
                           "reasons": list(v.reasons), "direction": "sent" if session.sent else "received",
                           "from": facts.sender, "lan_host": _lan_host(session)}
        return rec

    def _infected_pc(self, session: Session, facts: mime.MailFacts, sid: int, what: str) -> dict[str, Any]:
        host = session.client[0]
        rec = self._base(session, sid, f"VCR Mail: LAN host {host} sent {what} (infected PC?)", CATEGORY, 1,
                         "infected_host", not self.conf.monitor_only and session.proto == "smtp")
        rec["email"] = facts.eve()
        rec["infected_host"] = {"ip": host, "what": what}
        return rec

    def _not_scanned(self, session: Session, reason: str, extra: Mapping[str, Any], facts: mime.MailFacts | None = None,
                     file: FileEvent | None = None) -> dict[str, Any]:
        rec = self._base(session, SID_NOT_SCANNED, f"VCR Mail AV: message not scanned ({reason})", SPAM_CATEGORY, 3,
                         reason, False)
        if facts is not None:
            rec["email"] = facts.eve()
        if file is not None:
            rec["fileinfo"] = {"filename": _text(file.name), "magic": file.magic, "gaps": False, "state": "CLOSED",
                               "sha256": file.sha256, "stored": False, "size": file.size, "tx_id": 0}
        rec["av"] = {"action": "passed", "reason": reason, **extra}
        return rec


def _lan_host(session: Session) -> str:
    """The office's side of the connection: the PC for sent mail and POP3/IMAP, the office's own
    mail server for SMTP coming in from the internet."""
    return session.client[0] if session.sent or session.proto != "smtp" else session.server[0]


def smtp_reply(reason: str, box: str, code: str = "554 5.7.1") -> str:
    """A 554 (or, with ``code``, 451) reply naming the reason (SMTP replies are ASCII: the reason is cut
    to printable ASCII)."""
    text = "".join(c if 32 <= ord(c) < 127 else "?" for c in reason)[:300]
    verb = "deferred" if code.startswith("4") else "refused"
    return f"{code} Message {verb} by the security box {box}: {text}\r\n"


def _timestamp(ts: float) -> str:
    from filters.eve import timestamp

    return timestamp(ts)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
