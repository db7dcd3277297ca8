"""What a box reports to the center about the spam it caught (docs/mail.md, "What a box reports").

Only clear spam is reported: a score at or over ``threshold + report_margin``. Ham, spam nearer the
threshold, unscored messages (rspamd down, over ``max_size``) and messages over ``report_max_size``
never are, nor a message that matched the center's list already (it knows it; and a score the list
raised must not feed the list). By default a report carries only digests: SHA-256 of each normalised text part (HTML
tags dropped, whitespace collapsed, case folded; parts shorter than ``MIN_TEXT`` characters are not
hashed, too common to mean anything) and of each attachment's decoded bytes (images and attachments under MIN_ATTACHMENT bytes are left
out: a brand's logo is in its phishing and in its real mail alike). No address, subject or
text leaves the office. With ``report_messages: true`` (the customer's consent) the whole message
goes too, for the center's rspamd to learn (Bayes and fuzzy).

The digests come back to every box in the center's shared list of known spam digests; the engine
adds ``digest_score`` to a message one of whose parts matches (``known_digest``).
"""
from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import re
from typing import Any, Iterable

MIN_TEXT = 200  # characters of normalised text below which a part is not hashed
MIN_ATTACHMENT = 512  # bytes below which an attachment is not hashed
MAX_DIGESTS = 16  # per message
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")
DIGEST = re.compile(r"^[0-9a-f]{64}$")


def normalise_text(text: str) -> str:
    return _SPACE.sub(" ", _TAG.sub(" ", text)).strip().casefold()


def message_digests(raw: bytes) -> list[str]:
    """SHA-256 digests (hex) of the normalised text parts and of the attachments, in message order,
    without duplicates, at most MAX_DIGESTS. Never raises on hostile MIME (what cannot be decoded is
    left out)."""
    out: list[str] = []
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        parts: Iterable[Any] = msg.walk()
        for part in parts:
            if part.is_multipart():
                continue
            try:
                payload = part.get_payload(decode=True) or b""
            except Exception:  # noqa: BLE001 - hostile encodings
                continue
            ctype = part.get_content_type()
            attached = part.get_filename() is not None or not ctype.startswith("text/")
            if attached:
                # images are left out: phishing carries the real brand's logo, and the brand's own mail too
                if len(payload) < MIN_ATTACHMENT or ctype.startswith("image/"):
                    continue
                d = hashlib.sha256(payload).hexdigest()
            else:
                charset = part.get_content_charset() or "utf-8"
                try:
                    text = payload.decode(charset, "replace")
                except LookupError:
                    text = payload.decode("utf-8", "replace")
                norm = normalise_text(text)
                if len(norm) < MIN_TEXT:
                    continue
                d = hashlib.sha256(norm.encode("utf-8")).hexdigest()
            if d not in out:
                out.append(d)
            if len(out) >= MAX_DIGESTS:
                break
    except Exception:  # noqa: BLE001 - a report is never worth a crash
        return out
    return out


def spam_report(conf: Any, verdict: Any, raw: bytes, *, sent: bool) -> dict[str, Any] | None:
    """The report for one scored message, or None when policy says nothing is reported. ``conf`` is
    the engine's AntiSpamConfig, ``verdict`` its SpamVerdict."""
    if not conf.report or verdict is None or verdict.error or verdict.verdict != "spam":
        return None
    if verdict.score < conf.threshold + conf.report_margin:
        return None
    if len(raw) > conf.report_max_size or len(raw) > conf.max_size:
        return None
    digests = message_digests(raw)
    rep: dict[str, Any] = {"score": round(float(verdict.score), 2), "direction": "sent" if sent else "received",
                           "digests": digests}
    if conf.report_messages:
        rep["message"] = base64.b64encode(raw).decode("ascii")
    elif not digests:
        return None
    return rep
