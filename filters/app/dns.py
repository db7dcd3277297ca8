"""DNS wire format: UDP/TCP messages parsed into DnsMessage events, queries and sinkhole answers built, name normalization."""
from __future__ import annotations

import logging
import struct
import unicodedata
from collections.abc import Sequence

from filters.app.events import DnsAnswer, DnsMessage, DnsQuestion

try:  # UTS #46 mapping as browsers do it; ships with requests, optional here
    import idna as _idna
except ImportError:  # pragma: no cover - fall back to the standard library's IDNA 2003 codec
    _idna = None

log = logging.getLogger(__name__)

MAX_NAME = 255  # wire length of a name (length bytes + labels + root), RFC 1035 2.3.4
MAX_LABELS = 127  # labels in one name
MAX_POINTERS = 127  # compression pointers followed while decoding one name
MAX_RECORDS = 256  # records parsed per section; more marks the message truncated
MAX_TCP_BAD = 8  # undecodable messages on a DNS/TCP flow before the parser gives up
MAX_ANOMALIES = 32

FLAG_QR = 0x8000
FLAG_AA = 0x0400
FLAG_TC = 0x0200
FLAG_RD = 0x0100
FLAG_RA = 0x0080
FLAG_CD = 0x0010

RCODE_NOERROR = 0
RCODE_FORMERR = 1
RCODE_SERVFAIL = 2
RCODE_NXDOMAIN = 3
RCODE_REFUSED = 5

TYPE_A, TYPE_NS, TYPE_CNAME, TYPE_PTR, TYPE_AAAA, TYPE_DNAME = 1, 2, 5, 12, 28, 39
_NAME_RDATA = frozenset((TYPE_NS, TYPE_CNAME, TYPE_PTR, TYPE_DNAME))
_ADDR_LEN = {TYPE_A: 4, TYPE_AAAA: 16}
_OPCODES = frozenset((0, 1, 2, 4, 5, 6))  # QUERY, IQUERY, STATUS, NOTIFY, UPDATE, DSO

_HEADER = struct.Struct("!HHHHHH")  # id flags qdcount ancount nscount arcount
_QUESTION = struct.Struct("!HH")  # type class
_RR = struct.Struct("!HHIH")  # type class ttl rdlength
_U16 = struct.Struct("!H")


class DnsError(ValueError):
    """A DNS message could not be decoded completely."""


class DnsTruncated(DnsError):
    """The message ends before a field it announces."""


class DnsMalformed(DnsError):
    """A field is invalid (bad label type, pointer loop, name too long)."""


def read_name(data: bytes, offset: int) -> tuple[bytes, int]:
    """Decode the (possibly compressed) name at ``offset``: (dotted name without the root dot, offset after it).

    Pointers may go anywhere in the message, but each target is visited once (loop guard) and at
    most ``MAX_POINTERS`` are followed; the wire length is capped at ``MAX_NAME``.
    """
    labels: list[bytes] = []
    wire_len = 1
    end = -1
    pos = offset
    visited: set[int] = set()
    size = len(data)
    while True:
        if pos >= size:
            raise DnsTruncated("name runs past the message")
        length = data[pos]
        if length == 0:
            return b".".join(labels), (pos + 1 if end < 0 else end)
        kind = length & 0xC0
        if kind == 0xC0:
            if pos + 2 > size:
                raise DnsTruncated("compression pointer cut")
            target = _U16.unpack_from(data, pos)[0] & 0x3FFF
            if end < 0:
                end = pos + 2
            if target in visited or len(visited) >= MAX_POINTERS:
                raise DnsMalformed("compression pointer loop")
            if target >= size:
                raise DnsMalformed("compression pointer past the message")
            visited.add(target)
            pos = target
            continue
        if kind:
            raise DnsMalformed("unsupported label type")
        if pos + 1 + length > size:
            raise DnsTruncated("label runs past the message")
        wire_len += length + 1
        if wire_len > MAX_NAME or len(labels) >= MAX_LABELS:
            raise DnsMalformed("name too long")
        labels.append(data[pos + 1 : pos + 1 + length])
        pos += 1 + length


def _read_question(data: bytes, offset: int) -> tuple[DnsQuestion, int]:
    name, offset = read_name(data, offset)
    if offset + _QUESTION.size > len(data):
        raise DnsTruncated("question cut")
    qtype, qclass = _QUESTION.unpack_from(data, offset)
    return DnsQuestion(name, qtype, qclass), offset + _QUESTION.size


def _read_answer(data: bytes, offset: int) -> tuple[DnsAnswer, int]:
    name, offset = read_name(data, offset)
    if offset + _RR.size > len(data):
        raise DnsTruncated("record header cut")
    rrtype, _rrclass, ttl, rdlen = _RR.unpack_from(data, offset)
    start = offset + _RR.size
    end = start + rdlen
    if end > len(data):
        raise DnsTruncated("rdata cut")
    if rrtype in _NAME_RDATA:
        rdata, _ = read_name(data, start)
    else:
        rdata = data[start:end]
    return DnsAnswer(name, rrtype, ttl, rdata), end


def parse_dns(data: bytes, to_server: bool | None = None) -> DnsMessage | None:
    """Parse one DNS message (a UDP payload or one TCP-framed message).

    Returns None when the bytes are not DNS at all (shorter than the header, unassigned opcode, or
    a query without a question). A damaged message comes back with ``truncated=True`` and the
    questions/answers decoded before the damage. ``to_server`` defaults to "is a query" (QR=0).
    Never raises.
    """
    if len(data) < _HEADER.size:
        return None
    txid, flags, qdcount, ancount, _ns, _ar = _HEADER.unpack_from(data, 0)
    if (flags >> 11) & 0xF not in _OPCODES:
        return None
    is_response = bool(flags & FLAG_QR)
    if not is_response and qdcount == 0:
        return None
    questions: list[DnsQuestion] = []
    answers: list[DnsAnswer] = []
    truncated = qdcount > MAX_RECORDS or ancount > MAX_RECORDS
    offset = _HEADER.size
    try:
        for _ in range(min(qdcount, MAX_RECORDS)):
            question, offset = _read_question(data, offset)
            questions.append(question)
        for _ in range(min(ancount, MAX_RECORDS)):
            answer, offset = _read_answer(data, offset)
            answers.append(answer)
    except DnsError as exc:
        log.debug("dns message %#06x damaged: %s", txid, exc)
        truncated = True
    return DnsMessage(
        to_server=(not is_response) if to_server is None else to_server,
        txid=txid,
        flags=flags,
        rcode=flags & 0xF,
        questions=tuple(questions),
        answers=tuple(answers),
        truncated=truncated,
    )


class DnsTcpParser:
    """DNS over TCP for one flow: 2-byte length framing per direction, messages out as they complete."""

    def __init__(self) -> None:
        self._buffers: dict[bool, bytearray] = {True: bytearray(), False: bytearray()}
        self._bad = 0
        self.failed = False  # the flow carries no DNS after all: further data is ignored
        self.anomalies: list[str] = []

    def feed(self, to_server: bool, data: bytes) -> list[DnsMessage]:
        """Add in-order stream bytes of one direction; return the messages completed by them."""
        if self.failed or not data:
            return []
        buf = self._buffers[to_server]
        buf += data
        out: list[DnsMessage] = []
        offset = 0
        while len(buf) - offset >= 2 and not self.failed:
            length = _U16.unpack_from(buf, offset)[0]
            if len(buf) - offset - 2 < length:
                break
            message = parse_dns(bytes(buf[offset + 2 : offset + 2 + length]), to_server)
            offset += 2 + length
            if message is None:
                self._note_bad()
            else:
                out.append(message)
        del buf[:offset]  # what is left is one partial message: at most 65537 bytes
        return out

    def held_bytes(self) -> int:
        """Bytes held now: the partial message of each direction (at most 65537 bytes each)."""
        return sum(len(buf) for buf in self._buffers.values())

    def _note_bad(self) -> None:
        self._bad += 1
        if "dns.tcp_not_dns" not in self.anomalies and len(self.anomalies) < MAX_ANOMALIES:
            self.anomalies.append("dns.tcp_not_dns")
        if self._bad >= MAX_TCP_BAD:
            self.failed = True
            for buf in self._buffers.values():
                buf.clear()


def encode_name(name: str | bytes) -> bytes:
    """Wire form of a dotted name (no compression). Raises ValueError for an empty or oversized label."""
    raw = name.encode("ascii") if isinstance(name, str) else name
    raw = raw.rstrip(b".")
    out = bytearray()
    for label in raw.split(b".") if raw else []:
        if not 0 < len(label) <= 63:
            raise ValueError(f"bad label length {len(label)} in {raw!r}")
        out.append(len(label))
        out += label
    out.append(0)
    if len(out) > MAX_NAME:
        raise ValueError(f"name longer than {MAX_NAME} bytes: {raw!r}")
    return bytes(out)


def build_query(name: str | bytes, qtype: int = TYPE_A, *, txid: int = 0) -> bytes:
    """A standard query with recursion desired: one class-IN question for ``name`` of type ``qtype``.

    Raises ValueError for a name ``encode_name`` refuses."""
    return _HEADER.pack(txid & 0xFFFF, FLAG_RD, 1, 0, 0, 0) + encode_name(name) + _QUESTION.pack(qtype & 0xFFFF, 1)


def _questions(message: bytes, count: int) -> tuple[list[DnsQuestion], int]:
    """The first ``count`` questions of ``message`` and the offset after them. Raises DnsError."""
    offset = _HEADER.size
    out: list[DnsQuestion] = []
    for _ in range(count):
        question, offset = _read_question(message, offset)
        out.append(question)
    return out, offset


def _question_section(query: bytes, qdcount: int) -> tuple[bytes, list[DnsQuestion]]:
    """The raw question section of ``query`` and its questions; (b"", []) when it is damaged."""
    try:
        questions, offset = _questions(query, min(qdcount, MAX_RECORDS))
    except DnsError:
        return b"", []
    return query[_HEADER.size : offset], questions


def build_response(
    query: bytes,
    *,
    rcode: int = RCODE_NOERROR,
    answers: Sequence[tuple[int, bytes]] = (),
    ttl: int = 60,
) -> bytes:
    """Answer ``query``: same id, opcode, RD and CD, question copied, QR and RA set.

    Each ``(rrtype, rdata)`` in ``answers`` becomes a class-IN record for the first question's
    name (a compression pointer to it) with ``ttl``. A query whose question section is damaged
    gets FORMERR with no question and no answer; so does one whose question section does not
    stand on its own (a compression pointer into the header or past the section: copied behind
    the new header it would name something else). Raises ValueError when ``query`` is shorter than
    a DNS header (``parse_dns`` returns None for such bytes) or an rdata exceeds 65535 bytes.
    """
    if len(query) < _HEADER.size:
        raise ValueError("not a DNS message: shorter than the 12-byte header")
    txid, qflags, qdcount, _an, _ns, _ar = _HEADER.unpack_from(query, 0)
    question, questions = _question_section(query, qdcount)
    if qdcount and questions:
        reply = _response(txid, qflags, rcode, question, len(questions), answers, ttl)
        try:
            if _questions(reply, len(questions))[0] == questions:
                return reply
        except DnsError:
            pass
    return _response(txid, qflags, RCODE_FORMERR if qdcount else rcode, b"", 0, (), ttl)


def _response(txid: int, qflags: int, rcode: int, question: bytes, count: int,
              answers: Sequence[tuple[int, bytes]], ttl: int) -> bytes:
    if not count:
        answers = ()
    flags = FLAG_QR | FLAG_RA | (qflags & (0x7800 | FLAG_RD | FLAG_CD)) | (rcode & 0xF)
    ttl = max(0, min(ttl, 0x7FFFFFFF))
    records = bytearray()
    for rrtype, rdata in answers[:MAX_RECORDS]:
        if len(rdata) > 0xFFFF:
            raise ValueError("rdata longer than 65535 bytes")
        records += _U16.pack(0xC000 | _HEADER.size)  # pointer to the first question's name
        records += _RR.pack(rrtype & 0xFFFF, 1, ttl, len(rdata))
        records += rdata
    header = _HEADER.pack(txid, flags, count, min(len(answers), MAX_RECORDS), 0, 0)
    return header + question + bytes(records)


def nxdomain(query: bytes) -> bytes:
    """An NXDOMAIN answer to ``query`` (see ``build_response``)."""
    return build_response(query, rcode=RCODE_NXDOMAIN)


def _label_to_ascii(label: str) -> str:
    """One non-ASCII label to its A-label (UTS #46 via ``idna`` when present, else IDNA 2003, else raw punycode)."""
    if _idna is not None:
        try:
            return _idna.encode(label, uts46=True, transitional=False).decode("ascii")
        except (UnicodeError, ValueError):
            pass
    try:
        return label.encode("idna").decode("ascii")
    except UnicodeError:
        folded = unicodedata.normalize("NFC", label.lower())
        return "xn--" + folded.encode("punycode").decode("ascii")


def normalize_name(name: bytes) -> str:
    """Canonical host name for list look-ups: lower case, no trailing dot, non-ASCII labels as punycode.

    Bytes that are not UTF-8 are kept as backslash escapes (still lower-cased) so that the result is
    deterministic and never raises.
    """
    name = name.rstrip(b".")
    if name.isascii():
        return name.decode("ascii").lower()
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        return name.decode("ascii", "backslashreplace").lower()
    text = text.replace("\u3002", ".").replace("\uff0e", ".").replace("\uff61", ".")  # IDNA dot variants
    labels = [lab.lower() if lab.isascii() else _label_to_ascii(lab) for lab in text.split(".")]
    return ".".join(labels).rstrip(".").lower()
