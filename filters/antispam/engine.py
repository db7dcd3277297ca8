"""Anti-spam: every message the mail path reassembles is scored by rspamd (the box's own, through
its HTTP protocol) and judged against the box's threshold, with a policy per direction.

The mail path (SMTP relay, POP3/IMAP retrieval) calls ``check_message`` once per message, from its
own thread: it is the one blocking call of this engine (one HTTP request to rspamd, bounded by
``timeout``), thread-safe, and it never raises: when rspamd is down or answers nonsense the message
is passed unscored (verdict ham, action pass, ``error`` set and counted: the mail path writes the
alarm), or, with ``on_error: tempfail``, action ``tempfail`` (SMTP 451: the sender's server retries).

- ``verdict``: spam when rspamd's score reaches ``threshold`` (tuned on the SpamAssassin corpus so
  that at most 0.5% of ham is called spam: see docs/mail.md); ham otherwise.
- ``action`` for spam, per direction: ``received_action`` (tag by default: the subject gets
  ``subject_tag`` and ``X-Spam-*`` headers are added, so the mail client's rules can file it) and
  ``sent_action`` (reject by default: a PC of the office sending spam is infected or abused; the
  sender sees the refusal at once and the office's address stays off blocklists).
- ``reasons``: the rspamd symbols that scored, e.g. ``BAYES_SPAM(5.10)``, largest first.

DNS blocklist answers in Spamhaus's 127.255.255.x error range (open or public resolver, over quota,
wrong zone name) are errors, never listings: rspamd's stock rules give them no score, and this
engine also drops any score such a symbol carries (a local rule with a weight on them).

The alarms are the mail path's (filters/mail): spam received, spam sent by a LAN host (an infected-PC
alarm naming the host) and mail not scored (``error`` set); this engine counts (``counters``:
``messages``, ``spam.<direction>``, ``ham.<direction>``, ``<action>.<direction>``, ``errors``,
``not_scored.too_large``, ``scan_ms``, ``known_digest``, ``reported``, ``report_errors``).

Clear spam is reported to the center (``reports``, the box's queue; filters/antispam/report.py has
the policy) and the digests the center lists come back (``add_known_digests``): a message with a
listed part gets ``digest_score`` more (docs/mail.md, "What a box reports to the center").
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Literal, Mapping

from pydantic import Field, field_validator

from filters.antispam.report import DIGEST, message_digests, spam_report
from filters.antispam.rspamd import RspamdClient, RspamdError
from filters.engine import Engine, EngineConfig, EngineContext

# Spamhaus-style error answers (127.255.255.252 typo, .254 open resolver, .255 over quota) as rspamd's
# rbl module names them: <prefix>_<LIST>_BLOCKED[_OPENRESOLVER], or the list's bare symbol for a code it
# does not know (RBL_SPAMHAUS, weight 0).
ERROR_SYMBOL = re.compile(r"_BLOCKED(_OPENRESOLVER)?$|^(RBL|RECEIVED)_SPAMHAUS$|^URIBL_BLOCKED$")
# Symbols worth naming although they carry no score of their own.
NAMED_ZERO = frozenset({"GTUBE"})
MAX_KNOWN = 50_000  # known spam digests kept
KNOWN_DIGEST = "VCR_KNOWN_SPAM_DIGEST"  # a part matches the center's list of digests other boxes reported
_HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")  # RFC 5322 field name: printable ASCII but ':'


def _header_name(v: str) -> str:
    if not _HEADER_NAME.match(v):
        raise ValueError(f"not a mail header name: {v!r} (printable ASCII without ':' or spaces)")
    return v


class AntiSpamConfig(EngineConfig):
    """``engines.antispam``: anti-spam for mail sent and received (rspamd on the box)."""

    url: str = Field("http://127.0.0.1:11333",
                     description="the box's rspamd scanner worker (HTTP protocol, /checkv2)")
    socket: str = Field("", description="unix socket of the box's rspamd scanner worker; when set, used instead of "
                                        "url's host and port (e.g. /run/rspamd/normal.sock)")
    timeout: float = Field(10.0, ge=0.1, le=120,
                           description="seconds one message may take at rspamd; then it counts as unavailable")
    threshold: float = Field(10.6, ge=0.0, le=100.0,
                             description="rspamd score from which a message is spam; the default was chosen on the SpamAssassin "
                                         "sample with no training ham over it and a margin of 1 (held-out ham false "
                                         "positives 0/111; python -m lab spam-eval, docs/mail.md)")
    received_action: Literal["tag", "reject", "pass"] = Field(
        "tag", description="spam received (SMTP to the office, POP3/IMAP retrieval): tag (subject tag and X-Spam-* "
                           "headers, delivered), reject (refused in SMTP; POP3/IMAP cannot refuse, so tagged) or pass "
                           "(counted only)")
    sent_action: Literal["reject", "tag", "pass"] = Field(
        "reject", description="spam sent by a PC of the office: reject (refused in SMTP with a 5xx naming the reason, "
                              "and an infected-PC alarm), tag or pass (the alarm is raised in every case)")
    subject_tag: str = Field("[迷惑メール]", max_length=40,
                             description="put before the subject of tagged spam (e.g. [SPAM]); empty: subject unchanged")
    flag_header: str = Field("X-Spam-Flag", description="header set to YES on tagged spam")
    score_header: str = Field("X-Spam-Score", description="header with the score of tagged spam")
    status_header: str = Field("X-Spam-Status",
                               description="header with 'Yes, score=S required=T tests=SYMBOLS' on tagged spam")
    max_size: int = Field(2 << 20, ge=1024, le=64 << 20,
                          description="bytes: larger messages are not scored (passed as ham, counted)")
    on_error: Literal["pass", "tempfail"] = Field(
        "pass", description="rspamd down or too slow: pass (deliver unscored, with an alarm) or tempfail (SMTP 451, "
                            "the sender's server retries later; POP3/IMAP pass)")

    report: bool = Field(True, description="report clear spam (score >= threshold + report_margin) to the center as "
                                           "digests of its text parts and attachments (no text, no addresses)")
    report_margin: float = Field(5.0, ge=0.0, le=100.0,
                                 description="how far over threshold a score must be for the message to be reported")
    report_max_size: int = Field(1 << 20, ge=1024, le=16 << 20,
                                 description="bytes: larger messages are never reported")
    report_messages: bool = Field(False, description="the customer consents: whole messages of clear spam go to the "
                                                     "center too, for its rspamd to learn (Bayes and fuzzy)")
    digest_score: float = Field(8.0, ge=0.0, le=100.0,
                                description="added to the score of a message a part of which is on the center's "
                                            "list of known spam digests (reported by boxes as clear spam)")

    _names = field_validator("flag_header", "score_header", "status_header")(_header_name)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+(/\S*)?$", v):
            raise ValueError(f"expected an http:// or https:// URL, got {v!r}")
        return v

    @field_validator("socket")
    @classmethod
    def _socket(cls, v: str) -> str:
        if v and (not v.startswith("/") or len(v.encode()) > 107 or any(c in v for c in "\r\n\0")):
            raise ValueError(f"expected an absolute path of a unix socket (at most 107 bytes), got {v!r}")
        return v

    @field_validator("subject_tag")
    @classmethod
    def _tag(cls, v: str) -> str:
        if any(c in v for c in "\r\n"):
            raise ValueError("the subject tag must be one line")
        return v


@dataclass(frozen=True)
class SpamVerdict:
    verdict: str  # "spam" | "ham"
    score: float
    threshold: float
    action: str  # "reject" | "tag" | "pass" (| "tempfail" with on_error: tempfail)
    reasons: tuple[str, ...]  # rspamd symbols with scores, human-readable
    subject_tag: str  # e.g. "[迷惑メール]" when action == "tag", else ""
    headers: tuple[tuple[str, str], ...]  # X-Spam-Flag / X-Spam-Score / X-Spam-Status when tagging
    error: str | None = None  # rspamd unreachable/timeout: verdict "ham", action "pass", counted + alarmed

    @property
    def spam(self) -> bool:
        return self.verdict == "spam"

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "score": self.score, "threshold": self.threshold, "action": self.action,
                "reasons": list(self.reasons), "subject_tag": self.subject_tag,
                "headers": [list(h) for h in self.headers], "error": self.error}


def reasons_of(symbols: Mapping[str, Any]) -> tuple[tuple[str, ...], float]:
    """(readable reasons, largest first; score to take back from error-answer symbols)."""
    rows: list[tuple[float, str]] = []
    refund = 0.0
    for name, sym in symbols.items():
        sym = sym if isinstance(sym, Mapping) else {}
        score = float(sym.get("score") or 0.0)
        if ERROR_SYMBOL.search(name):
            refund += score if score > 0 else 0.0
            continue
        if score == 0.0 and name not in NAMED_ZERO:
            continue
        opts = sym.get("options") or []
        text = f"{name}({score:.2f})"
        if opts and isinstance(opts, list):
            text += "{" + "; ".join(str(o) for o in opts[:4])[:120] + "}"
        rows.append((score, text))
    rows.sort(key=lambda r: (-r[0], r[1]))
    return tuple(t for _, t in rows), refund


def decide(conf: AntiSpamConfig, result: Mapping[str, Any], *, sent: bool) -> SpamVerdict:
    """The verdict and the policy action for rspamd's ``/checkv2`` answer."""
    symbols = result.get("symbols") if isinstance(result.get("symbols"), Mapping) else {}
    reasons, refund = reasons_of(symbols)
    score = round(float(result.get("score") or 0.0) - refund, 2)
    spam = score >= conf.threshold
    action = "pass"
    if spam:
        action = conf.sent_action if sent else conf.received_action
    tag, headers = "", ()
    if action == "tag":
        tag = conf.subject_tag
        tests = ",".join(r.split("(", 1)[0] for r in reasons) or "none"
        headers = ((conf.flag_header, "YES"), (conf.score_header, f"{score:.2f}"),
                   (conf.status_header, f"Yes, score={score:.2f} required={conf.threshold:.2f} tests={tests}"))
    return SpamVerdict("spam" if spam else "ham", score, conf.threshold, action, reasons, tag, headers)


class AntiSpamEngine(Engine):
    Config = AntiSpamConfig
    name: ClassVar[str] = "antispam"

    def __init__(self) -> None:
        super().__init__()
        self.conf = AntiSpamConfig()
        self._client: RspamdClient | None = None
        self._lock = threading.Lock()
        self.known_digests: dict[str, None] = {}  # the center's shared list, oldest first (add_known_digests)
        self.reports: Callable[[dict[str, Any]], None] | None = None  # the box's report queue (submit)

    def add_known_digests(self, digests: Iterable[str]) -> int:
        """Add spam digests the center listed (from its check-in reply: those listed lately); returns how
        many were new. At most MAX_KNOWN are kept, the oldest listed go first."""
        new = [d for d in digests if isinstance(d, str) and DIGEST.match(d)]
        with self._lock:
            known = dict(self.known_digests)
            added = 0
            for d in new:
                added += d not in known
                known.pop(d, None)
                known[d] = None
            while len(known) > MAX_KNOWN:
                known.pop(next(iter(known)))
            self.known_digests = known  # replaced whole: check_message reads it without the lock
        return added

    def configure(self, section: Mapping[str, Any], ctx: EngineContext = EngineContext()) -> None:
        self.conf = self.check_section(section)
        self._client = RspamdClient(self.conf.url, timeout=self.conf.timeout, unix_socket=self.conf.socket)

    def summary(self) -> dict[str, Any]:
        return {"url": self.conf.url, "socket": self.conf.socket, "threshold": self.conf.threshold, "received_action": self.conf.received_action,
                "sent_action": self.conf.sent_action}

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counters[key] = self.counters.get(key, 0) + n

    @property
    def client(self) -> RspamdClient:
        if self._client is None:
            self._client = RspamdClient(self.conf.url, timeout=self.conf.timeout, unix_socket=self.conf.socket)
        return self._client

    # -- the mail path's call ---------------------------------------------------------------------
    def check_message(self, raw: bytes, *, sent: bool, mail_from: str = "", rcpt_to: tuple[str, ...] = (),
                      helo: str = "", client_ip: str = "") -> SpamVerdict:
        """Score one message (blocking: one request to rspamd, at most ``timeout`` seconds). Never
        raises; ``error`` is set when rspamd could not score it."""
        direction = "sent" if sent else "received"
        self.count("messages")
        if len(raw) > self.conf.max_size:
            self.count("not_scored.too_large")
            return SpamVerdict("ham", 0.0, self.conf.threshold, "pass", (f"not scored: larger than {self.conf.max_size} bytes",), "", ())
        t0 = time.monotonic()
        try:
            result = self.client.check(raw, mail_from=mail_from, rcpt_to=rcpt_to, helo=helo, client_ip=client_ip)
            known, matched = self.known_digests, False
            if known and self.conf.digest_score > 0 and any(d in known for d in message_digests(raw)):
                self.count("known_digest")
                matched = True
                result = dict(result)
                result["score"] = float(result.get("score") or 0.0) + self.conf.digest_score
                syms = dict(result.get("symbols") or {}) if isinstance(result.get("symbols"), Mapping) else {}
                syms[KNOWN_DIGEST] = {"score": self.conf.digest_score, "options": ["reported by another box"]}
                result["symbols"] = syms
            v = decide(self.conf, result, sent=sent)
        except (RspamdError, ValueError, TypeError) as exc:
            self.count("errors")
            action = "tempfail" if self.conf.on_error == "tempfail" else "pass"
            return SpamVerdict("ham", 0.0, self.conf.threshold, action, (), "", (), error=str(exc)[:300])
        self.count("scan_ms", int((time.monotonic() - t0) * 1000))
        self.count(f"{v.verdict}.{direction}")
        if v.action != "pass":
            self.count(f"{v.action}.{direction}")
        sink = self.reports
        if sink is not None and not matched:  # already on the list: the center knows it (and no feedback loop)
            try:
                rep = spam_report(self.conf, v, raw, sent=sent)
                if rep is not None:
                    sink(rep)
                    self.count("reported")
            except Exception:  # noqa: BLE001 - reporting never holds up or breaks the mail
                self.count("report_errors")
        return v
