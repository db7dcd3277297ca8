"""One RFC 5322 message: its attachments as ``FileEvent``s, and the rewritten message the PC gets.

Parsing uses the standard library's ``email`` package (nested multiparts, base64 and
quoted-printable, ``message/rfc822`` parts, RFC 2047 and RFC 2231 names). Raw 8-bit header bytes
(Shift_JIS or EUC-JP file names sent unencoded, as some Japanese mailers do) are decoded by trying
UTF-8, then CP932 (Shift_JIS), then EUC-JP.

Rewriting keeps everything it does not change: a spam tag edits the header block as bytes (the body
is byte-identical); an infected part is replaced by a text/plain notice in Japanese and English and
the message is generated again from the parsed tree (``compat32``: headers kept as they came).
"""
from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import re
from dataclasses import dataclass, field
from email.generator import BytesGenerator
from email.header import decode_header, make_header
from email.message import Message
from io import BytesIO
from typing import Iterator

from filters.app.events import FileEvent
from filters.app.magic import detect

MAX_PARTS = 500  # leaf parts examined per message (a message bomb passes the rest unscanned, counted)
MAX_DEPTH = 20  # nesting depth of multiparts / message/rfc822


@dataclass(frozen=True, slots=True)
class MailFacts:
    """What the alarm says about a message (Suricata's ``email`` object)."""

    sender: str = ""
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    subject: str = ""
    message_id: str = ""
    attachments: tuple[str, ...] = ()

    def eve(self) -> dict[str, object]:
        out: dict[str, object] = {"status": "PARSED_COMPLETE", "from": self.sender, "to": list(self.to)}
        if self.cc:
            out["cc"] = list(self.cc)
        if self.attachments:
            out["attachment"] = list(self.attachments)
        out["subject"] = self.subject
        out["message_id"] = self.message_id
        return out


@dataclass(slots=True)
class Part:
    """A leaf part of the message (``path``: its position, "1.2.1"; "" for a single-part message)."""

    path: str
    name: str
    content_type: str
    data: bytes
    node: Message = field(repr=False)
    parent: Message | None = field(default=None, repr=False)


def _decode_raw(text: str) -> str:
    """A header value with raw 8-bit bytes (carried as surrogate escapes): decode them as Japanese text."""
    if not any("\udc80" <= c <= "\udcff" for c in text):
        return text
    raw = text.encode("utf-8", "surrogateescape")
    for codec in ("utf-8", "cp932", "euc_jp"):
        try:
            return raw.decode(codec)
        except UnicodeDecodeError:
            continue
    return raw.decode("utf-8", "replace")


def header_text(value: object) -> str:
    """A header's text with RFC 2047 encoded-words decoded (ISO-2022-JP, Shift_JIS, UTF-8...)."""
    if value is None:
        return ""
    text = _decode_raw(str(value))
    try:
        decoded = str(make_header(decode_header(text)))
    except (LookupError, UnicodeError, ValueError, AssertionError):  # unknown charset, broken encoded word
        decoded = text
    return decoded.replace("\r", "").replace("\n", "")


_RAW_NAME = re.compile(r"""(?:file)?name[ \t]*=[ \t]*(?:"([^"]*)"|([^;\s]+))""", re.IGNORECASE)


def filename(part: Message) -> str:
    """The part's file name: Content-Disposition filename (RFC 2231 continuations and charsets),
    else Content-Type name; RFC 2047 encoded names (as Outlook and Japanese mailers send) decoded."""
    name: object = None
    try:
        name = part.get_param("filename", None, "content-disposition")
        if name is None:
            name = part.get_param("name", None, "content-type")
    except (ValueError, LookupError, IndexError):
        name = None
    if name is None:
        return ""
    if isinstance(name, str) and "\ufffd" in name:  # raw 8-bit bytes in the header: read them as they came
        for key, value in getattr(part, "_headers", []):
            if key.lower() in ("content-disposition", "content-type") and isinstance(value, str):
                m = _RAW_NAME.search(value)
                if m:
                    return _decode_raw(m.group(1) if m.group(1) is not None else m.group(2)).strip()
    if isinstance(name, tuple):  # RFC 2231: (charset, language, value)
        charset, _, value = name
        try:
            raw = value.encode("latin-1", "surrogateescape") if isinstance(value, str) else bytes(value)
            name = raw.decode(charset or "utf-8")
        except (LookupError, UnicodeError):
            name = email.utils.collapse_rfc2231_value(name)
    return header_text(name).strip()


def parse(raw: bytes) -> Message:
    """The message tree (compat32: headers kept as they came, for rewriting)."""
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def _payload(part: Message) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except (ValueError, TypeError, AssertionError):
        data = None
    if isinstance(data, bytes):
        return data
    body = part.get_payload()
    return body.encode("utf-8", "surrogateescape") if isinstance(body, str) else b""


def _walk(node: Message, path: str, depth: int, parent: Message | None) -> Iterator[Part]:
    if depth > MAX_DEPTH:
        return
    if node.is_multipart():
        children = node.get_payload()
        if not isinstance(children, list):
            return
        rfc822 = node.get_content_type() == "message/rfc822"
        for i, child in enumerate(children, 1):
            if isinstance(child, Message):
                sub = path if rfc822 else (f"{path}.{i}" if path else str(i))
                yield from _walk(child, sub, depth + 1, node)
        return
    yield Part(path, filename(node), node.get_content_type(), _payload(node), node, parent)


def parts(msg: Message) -> list[Part]:
    """Every leaf part (bodies and attachments, inside attached messages too), at most MAX_PARTS."""
    out: list[Part] = []
    for p in _walk(msg, "", 0, None):
        if len(out) >= MAX_PARTS:
            break
        out.append(p)
    return out


def facts(msg: Message, rcpt_to: tuple[str, ...] = ()) -> MailFacts:
    def addresses(name: str) -> tuple[str, ...]:
        values = msg.get_all(name) or []
        return tuple(header_text(a) if not n else f"{header_text(n)} <{a}>"
                     for n, a in email.utils.getaddresses([str(v) for v in values]) if a or n)

    names = tuple(p.name for p in parts(msg) if p.name)
    sender = addresses("from")
    return MailFacts(sender=sender[0] if sender else "", to=addresses("to") or rcpt_to, cc=addresses("cc"),
                     subject=header_text(msg.get("subject")), message_id=header_text(msg.get("message-id")).strip(),
                     attachments=names)


def file_events(msg: Message, *, proto: str, to_server: bool, lan_addr: bytes = b"") -> list[tuple[Part, FileEvent]]:
    """A ``FileEvent`` for every leaf part with content: what the antivirus and sandbox engines get."""
    out = []
    for p in parts(msg):
        if not p.data:
            continue
        out.append((p, FileEvent(name=p.name.encode("utf-8"), data=p.data, size=len(p.data),
                                 sha256=hashlib.sha256(p.data).hexdigest(), to_server=to_server, proto=proto,
                                 tx_id=0, tx=None, lan_addr=lan_addr, content_type=p.content_type.encode("ascii", "replace"),
                                 magic=detect(p.data), truncated=False)))
    return out


# -- rewriting ------------------------------------------------------------------------------------
def notice_text(name: str, virus: str, box: str) -> str:
    shown = name or "(名前なし / unnamed)"
    return (f"この添付ファイル「{shown}」からウイルス ({virus}) が検出されたため、セキュリティ機器 {box} が"
            "削除しました。\r\n送信者に確認のうえ、必要であれば安全な方法で送り直してもらってください。\r\n\r\n"
            f"The attachment \"{shown}\" was removed by the security box {box} because a virus was found "
            f"in it ({virus}).\r\nPlease check with the sender and have it sent again safely if you need it.\r\n")


def _notice_part(text: str) -> Message:
    part = Message()
    part["Content-Type"] = 'text/plain; charset="utf-8"'
    part["Content-Transfer-Encoding"] = "base64"
    part["Content-Disposition"] = 'inline; filename="virus-removed.txt"'
    part["X-VCR-Removed"] = "virus"
    part.set_payload(base64.encodebytes(text.encode("utf-8")).decode("ascii").replace("\n", "\r\n"))
    return part


def _line_ending(raw: bytes) -> bytes:
    first = raw.find(b"\n")
    return b"\r\n" if first > 0 and raw[first - 1:first] == b"\r" else b"\n"


def generate(msg: Message, linesep: bytes = b"\r\n") -> bytes:
    out = BytesIO()
    BytesGenerator(out, mangle_from_=False, policy=email.policy.compat32.clone(linesep=linesep.decode())).flatten(msg)
    return out.getvalue()


def strip_infected(raw: bytes, infected: dict[str, tuple[str, str]], box: str) -> bytes:
    """The message with each part in ``infected`` ({path: (name, virus)}) replaced by a notice part.
    A single-part message keeps its headers and gets the notice as its body."""
    msg = parse(raw)
    linesep = _line_ending(raw)
    if "" in infected:  # the message itself is the infected content
        name, virus = infected[""]
        for h in ("Content-Type", "Content-Transfer-Encoding", "Content-Disposition"):
            del msg[h]
        notice = _notice_part(notice_text(name, virus, box))
        for h in ("Content-Type", "Content-Transfer-Encoding"):
            msg[h] = notice[h]
        msg.set_payload(notice.get_payload())
        msg["X-VCR-Removed"] = "virus"
        return generate(msg, linesep)
    for p in parts(msg):
        hit = infected.get(p.path)
        if hit is None or p.parent is None:
            continue
        siblings = p.parent.get_payload()
        notice = _notice_part(notice_text(hit[0] or p.name, hit[1], box))
        if p.parent.get_content_type() == "message/rfc822":  # an attached mail that is one infected part
            p.parent.set_payload([notice])
            continue
        for i, child in enumerate(siblings):
            if child is p.node:
                siblings[i] = notice
    return generate(msg, linesep)


def notice_message(raw: bytes, hit: tuple[str, str], box: str) -> bytes:
    """The fallback when an infected message cannot be rewritten: its own header block (as it came)
    with the notice as the whole body."""
    end = _header_end(raw)
    head = raw[:end].rstrip(b"\r\n")
    keep = [line for line in re.split(rb"\r?\n(?![ \t])", head)
            if not re.match(rb"(content-|mime-version)", line, re.IGNORECASE)]
    body = base64.encodebytes(notice_text(hit[0], hit[1], box).encode("utf-8")).replace(b"\n", b"\r\n")
    return (b"\r\n".join(keep) + b"\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=\"utf-8\"\r\n"
            b"Content-Transfer-Encoding: base64\r\nX-VCR-Removed: virus\r\n\r\n" + body)


_SUBJECT = re.compile(rb"^subject[ \t]*:", re.IGNORECASE)


def _header_end(raw: bytes) -> int:
    """Offset of the empty line ending the header block (len(raw) when there is none)."""
    m = re.search(rb"\r?\n\r?\n", raw)
    return m.start() + (2 if raw[m.start():m.start() + 2] == b"\r\n" else 1) if m else len(raw)


def tag_spam(raw: bytes, subject_tag: str, headers: tuple[tuple[str, str], ...]) -> bytes:
    """The message with ``subject_tag`` before its subject and ``headers`` added on top; the body and
    the other headers stay byte-identical. A non-ASCII tag goes in as an RFC 2047 UTF-8 word."""
    linesep = _line_ending(raw)
    end = _header_end(raw)
    head, body = raw[:end], raw[end:]
    if subject_tag:
        try:
            plain: bytes | None = subject_tag.encode("ascii")
        except UnicodeEncodeError:
            plain = None
        lines = head.split(b"\n")
        for i, line in enumerate(lines):
            m = _SUBJECT.match(line)
            if m:
                rest = line[m.end():].lstrip(b" \t")
                if plain is not None:
                    tag = plain + b" "
                else:  # before an encoded word the space between is dropped when decoding: keep it inside
                    spaced = subject_tag + (" " if rest.startswith(b"=?") else "")
                    tag = b"=?UTF-8?B?" + base64.b64encode(spaced.encode("utf-8")) + b"?=" + b" "
                lines[i] = line[:m.end()] + b" " + tag + rest
                break
        else:
            tag = plain if plain is not None else b"=?UTF-8?B?" + base64.b64encode(subject_tag.encode("utf-8")) + b"?="
            lines.insert(0, b"Subject: " + tag + (b"\r" if linesep == b"\r\n" else b""))
        head = b"\n".join(lines)
    added = b"".join(f"{k}: {v}".encode("utf-8") + linesep for k, v in headers)
    return added + head + body
