"""Rule matching on bytes and headers: one BufferSection against one buffer (Suricata's content-inspection semantics), buffer transforms, and per-packet header checks.

``match_section`` mirrors Suricata's DetectEngineContentInspection: the items run left to right
with a cursor; a content or pcre that has a dependent relative item after it (``retry``) is
searched again at its next occurrence when a later item fails; an independent failure stops the
whole section at once. Every recursive step counts against ``MatchContext.recursion_limit``
(Suricata's inspection-recursion-limit, 3000); running out counts as no match and sets
``MatchContext.limit_hit``.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from filters.ips.model import (
    Base64Decode,
    Bsize,
    BufferSection,
    ByteExtract,
    ByteJump,
    ByteTest,
    ContentMatch,
    Endian,
    FieldCheck,
    FlagMode,
    FlagsCheck,
    FragbitsCheck,
    IpOptsCheck,
    IsDataAt,
    MatchItem,
    Num,
    PacketField,
    PcreMatch,
    Rule,
    SameIpCheck,
    Transform,
    UriLen,
)

if TYPE_CHECKING:  # pragma: no cover
    from filters.packet import Packet

log = logging.getLogger(__name__)

RECURSION_LIMIT = 3000  # Suricata's detect.inspection-recursion-limit default
MAX_BASE64_OUT = 1 << 16  # decoded bytes kept per base64_decode
ISDATAAT_VAR_MAX = 100_000_000  # Suricata: a larger extracted isdataat value never has data
U64 = (1 << 64) - 1


@dataclass(slots=True)
class MatchContext:
    """Per-evaluation state. Use one per rule evaluation (one packet or transaction) and share
    it across that rule's sections, evaluated in rule order, so ``byte_extract`` variables set
    in one section are visible to later ones."""

    vars: dict[str, int] = field(default_factory=dict)
    recursion_limit: int = RECURSION_LIMIT
    steps: int = 0  # steps used by the last match_section call
    limit_hit: bool = False  # some section ran out of steps (counts as no match)


def match_section(section: BufferSection, data: bytes, ctx: MatchContext) -> bool:
    """Evaluate ``section`` against the raw buffer ``data`` (its transforms are applied here)."""
    if section.transforms:
        data = apply_transforms(section.transforms, data)
    return match_items(section.items, data, ctx)


def match_items(items: tuple[MatchItem, ...], data: bytes, ctx: MatchContext) -> bool:
    """Evaluate items against an already transformed buffer."""
    if not items:
        return True
    run = _Run(items, data, ctx)
    ctx.steps = 0
    try:
        return run.eval(0, 0) == 1
    except RecursionError:  # chains are capped (payload.MAX_ITEMS); this is a last line of defence
        log.warning("rule chain too deep for the interpreter stack; treated as no match")
        ctx.limit_hit = True
        return False


# -- transforms ---------------------------------------------------------------------------------

_WS = b" \t\n\x0b\x0c\r"
_WS_RUN = re.compile(rb"[ \t\n\x0b\x0c\r]+")
_PCT = re.compile(rb"%([0-9A-Fa-f]{2})")


def apply_transforms(transforms: tuple[Transform, ...], data: bytes) -> bytes:
    """Apply Suricata buffer transforms in order (hashes give the raw digest bytes)."""
    for t in transforms:
        if t is Transform.DOTPREFIX:
            data = b"." + data if data else data
        elif t is Transform.TO_LOWERCASE:
            data = data.lower()
        elif t is Transform.TO_UPPERCASE:
            data = data.upper()
        elif t is Transform.STRIP_WHITESPACE:
            data = data.translate(None, _WS)
        elif t is Transform.COMPRESS_WHITESPACE:
            data = _WS_RUN.sub(b" ", data)
        elif t is Transform.URL_DECODE:
            data = _PCT.sub(lambda m: bytes((int(m.group(1), 16),)), data.replace(b"+", b" "))
        elif t is Transform.TO_MD5:
            data = hashlib.md5(data).digest()
        elif t is Transform.TO_SHA1:
            data = hashlib.sha1(data).digest()
        elif t is Transform.TO_SHA256:
            data = hashlib.sha256(data).digest()
    return data


# -- numbers from the buffer ---------------------------------------------------------------------

_DIGITS = {10: b"0123456789", 16: b"0123456789abcdefABCDEF", 8: b"01234567"}


def strtoull(raw: bytes, base: int) -> tuple[int, int] | None:
    """C strtoull on ``raw``: leading whitespace, optional sign, ``0x`` for base 16. Returns
    (value, bytes consumed) or None when there are no digits or the value overflows."""
    i, n = 0, len(raw)
    while i < n and raw[i] in _WS:
        i += 1
    neg = i < n and raw[i] == 0x2D
    if i < n and raw[i] in b"+-":
        i += 1
    if base == 16 and raw[i : i + 2].lower() == b"0x" and i + 2 < n and raw[i + 2] in _DIGITS[16]:
        i += 2
    start = i
    digits = _DIGITS[base]
    while i < n and raw[i] in digits:
        i += 1
    if i == start:
        return None
    value = int(raw[start:i], base)
    if value > U64:
        return None
    return ((-value) & U64 if neg else value), i


def _read_number(data: bytes, ptr: int, nbytes: int, endian: Endian, base: int | None) -> tuple[int, int] | None:
    """(value, bytes consumed) of the number at ``ptr``; the caller checked the bounds."""
    if base is not None:
        return strtoull(data[ptr : ptr + (nbytes or 23)], base)
    order = "little" if endian is Endian.LITTLE else "big"
    return int.from_bytes(data[ptr : ptr + nbytes], order), nbytes


def _apply_bitmask(value: int, mask: int | None) -> int:
    if mask is None:
        return value
    value &= mask
    if value and mask:
        value >>= (mask & -mask).bit_length() - 1
    return value


def _b64decode(raw: bytes) -> bytes:
    """RFC 4648 decoding that stops at the first byte outside the alphabet (Suricata's default)."""
    m = re.match(rb"[A-Za-z0-9+/]*", raw)
    chars = m.group(0) if m else b""
    if len(chars) % 4 == 1:  # a lone trailing character carries no whole byte
        chars = chars[:-1]
    try:
        return base64.b64decode(chars + b"=" * (-len(chars) % 4))[:MAX_BASE64_OUT]
    except (binascii.Error, ValueError):
        return b""


# -- the evaluator -------------------------------------------------------------------------------


class _Run:
    """One match_section evaluation: eval(i, cursor) returns 1 match, 0 no match, -1 give up.
    A matched item continues with ``eval(i + 1, new_cursor)`` (2 stack frames per item)."""

    __slots__ = ("items", "data", "n", "ctx", "_lower", "last")

    def __init__(self, items: tuple[MatchItem, ...], data: bytes, ctx: MatchContext) -> None:
        self.items = items
        self.data = data
        self.n = len(data)
        self.ctx = ctx
        self._lower: bytes | None = None
        self.last = len(items) - 1

    def num(self, value: Num) -> int:
        return value if isinstance(value, int) else self.ctx.vars.get(value, 0)

    def lower(self) -> bytes:
        if self._lower is None:
            self._lower = self.data.lower()
        return self._lower

    def eval(self, i: int, cursor: int) -> int:
        ctx = self.ctx
        ctx.steps += 1
        if ctx.steps >= ctx.recursion_limit:
            ctx.limit_hit = True
            return -1
        item = self.items[i]
        kind = type(item)
        if kind is ContentMatch:
            return self.content(i, item, cursor)  # type: ignore[arg-type]
        if kind is PcreMatch:
            return self.pcre(i, item, cursor)  # type: ignore[arg-type]
        handler = _SIMPLE.get(kind)
        if handler is not None:
            r = handler(self, item, cursor)
            if r is None or r < 0:
                return -1 if r is not None else 0
            return 1 if i == self.last else self.eval(i + 1, r)
        if kind is Base64Decode:
            return self.base64(item, cursor)  # type: ignore[arg-type]
        if not self.check_len(item):
            return -1
        return 1 if i == self.last else self.eval(i + 1, cursor)

    def check_len(self, item: MatchItem) -> bool:
        if isinstance(item, (Bsize, UriLen)):
            return item.test(self.n)
        return False

    # -- content ---------------------------------------------------------------------------------

    def window(self, c: ContentMatch, prev: int) -> tuple[int, int]:
        """[offset, depth) where the content may lie (before clamping to the buffer)."""
        if c.distance is None and c.within is None:
            offset = self.num(c.offset)
            depth = offset + self.num(c.depth) if c.depth is not None else self.n
            return offset, depth
        offset, depth = prev, self.n
        distance = self.num(c.distance) if c.distance is not None else 0
        if c.distance is not None:
            offset = 0 if distance < 0 and -distance > offset else offset + distance
        if c.within is not None:
            depth = min(depth, prev + self.num(c.within) + distance)
        return offset, depth

    def find(self, c: ContentMatch, start: int, end: int) -> int:
        if c.endswith:
            pos = end - len(c.pattern)
            if end < self.n or pos < start:
                return -1
            hay = self.lower() if c.nocase else self.data
            return pos if hay.startswith(c.folded, pos) else -1
        if len(c.pattern) > end - start:
            return -1
        hay = self.lower() if c.nocase else self.data
        return hay.find(c.folded, start, end)

    def content(self, i: int, c: ContentMatch, cursor: int) -> int:
        offset, depth = self.window(c, cursor)
        relative = c.distance is not None or c.within is not None
        depth = min(depth, self.n)
        search_from = offset
        while True:
            if search_from > depth or depth <= 0:
                if not c.negated:
                    return 0
                return 1 if i == self.last else self.eval(i + 1, cursor)
            found = self.find(c, search_from, depth)
            if found < 0:
                if c.negated:
                    return 1 if i == self.last else self.eval(i + 1, cursor)
                return 0 if relative else -1
            if c.negated:
                return 0 if relative else -1
            r = 1 if i == self.last else self.eval(i + 1, found + len(c.pattern))
            if r != 0:
                return r
            if not c.retry:
                return -1
            search_from = found + 1

    # -- pcre ------------------------------------------------------------------------------------

    def pcre(self, i: int, p: PcreMatch, cursor: int) -> int:
        base = cursor if p.relative else 0
        subject = memoryview(self.data)[base:] if base else self.data
        run = p.regex.match if p.anchored else p.regex.search
        pos = 0
        while True:
            m = run(subject, pos) if pos <= len(subject) else None
            if p.negated:
                if m is not None:
                    return 0
                return 1 if i == self.last else self.eval(i + 1, cursor)
            if m is None:
                return 0
            if not p.retry:
                return 1 if i == self.last else self.eval(i + 1, base + m.end())
            r = 1 if i == self.last else self.eval(i + 1, base + m.end())
            if r != 0:
                return r
            pos = m.start() + 1

    # -- byte_* / isdataat ---------------------------------------------------------------------

    def byte_ptr(self, relative: bool, offset: int, nbytes: int, cursor: int) -> int:
        """Start of the bytes to read, or -1 when they are not inside the buffer."""
        if self.n == 0:
            return -1
        if relative:
            ptr = cursor + offset
            if self.n - ptr <= 0:
                return -1
        else:
            ptr = offset
        if ptr < 0 or nbytes > self.n - ptr:
            return -1
        return ptr

    def base64(self, b: Base64Decode, cursor: int) -> int:
        start = cursor if b.relative else 0
        avail = self.n - start
        if b.offset:
            if b.offset >= avail:
                return 0
            start += b.offset
            avail -= b.offset
        size = min(avail, b.nbytes) if b.nbytes else avail
        decoded = _b64decode(self.data[start : start + size])
        if not decoded or b.data is None:
            return 0
        inner = _Run(b.data.items, decoded, self.ctx)
        return 1 if inner.eval(0, 0) == 1 else 0


def _byte_test(run: _Run, t: ByteTest, cursor: int) -> int | None:
    nbytes = run.num(t.nbytes)
    ptr = run.byte_ptr(t.relative, run.num(t.offset), nbytes, cursor)
    if ptr < 0:
        return None
    got = _read_number(run.data, ptr, nbytes, t.endian, t.base)
    if got is None:
        return None
    val = _apply_bitmask(got[0], t.bitmask)
    want = run.num(t.value)
    op = t.op
    if op == "=":
        ok = val == want
    elif op == "<":
        ok = val < want
    elif op == ">":
        ok = val > want
    elif op == "&":
        ok = bool(val & want)
    elif op == "^":
        ok = bool(val ^ want)
    elif op == "<=":
        ok = val <= want
    else:
        ok = val >= want
    return cursor if ok != t.negated else None


def _byte_jump(run: _Run, j: ByteJump, cursor: int) -> int | None:
    nbytes = run.num(j.nbytes)
    ptr = run.byte_ptr(j.relative, run.num(j.offset), nbytes, cursor)
    if ptr < 0:
        return None
    got = _read_number(run.data, ptr, nbytes, j.endian, j.base)
    if got is None:
        return None
    val = _apply_bitmask(got[0], j.bitmask) * j.multiplier
    if j.align and val % 4:
        val += 4 - val % 4
    val += j.post_offset
    if j.from_beginning:
        jump = val
    elif j.from_end:
        jump = run.n + val
    else:
        jump = ptr + val + got[1]
    if jump >= run.n:
        return None
    return max(jump, 0)


def _byte_extract(run: _Run, e: ByteExtract, cursor: int) -> int | None:
    ptr = run.byte_ptr(e.relative, e.offset, e.nbytes, cursor)
    if ptr < 0:
        return None
    got = _read_number(run.data, ptr, e.nbytes, e.endian, e.base)
    if got is None:
        return None
    val = _apply_bitmask(got[0], e.bitmask) * e.multiplier
    if e.align and val % e.align:
        val += e.align - val % e.align
    run.ctx.vars[e.name] = val
    return ptr + got[1]


def _isdataat(run: _Run, d: IsDataAt, cursor: int) -> int | None:
    """Returns the cursor on match, None on no match, -1 to give up (Suricata's discontinue)."""
    is_var = not isinstance(d.value, int)
    amount = run.num(d.value)
    if is_var and amount >= ISDATAAT_VAR_MAX:
        return cursor if d.negated else None
    present = cursor + amount <= run.n if d.relative else amount < run.n
    if present != d.negated:
        return cursor
    if is_var or (d.negated and d.relative):
        return None
    return -1


_SIMPLE = {ByteTest: _byte_test, ByteJump: _byte_jump, ByteExtract: _byte_extract, IsDataAt: _isdataat}


# -- packet header checks ------------------------------------------------------------------------

_ICMP_ECHO_TYPES = {1: frozenset({0, 8, 13, 14, 15, 16, 17, 18}), 58: frozenset({128, 129})}


def _icmp_u16(pkt: "Packet", at: int) -> int | None:
    if pkt.proto not in _ICMP_ECHO_TYPES or pkt.icmp_type not in _ICMP_ECHO_TYPES[pkt.proto]:
        return None
    off = pkt.l4_offset + at
    if len(pkt.raw) < off + 2:
        return None
    return int.from_bytes(pkt.raw[off : off + 2], "big")


def _tcp_mss(pkt: "Packet") -> int | None:
    opts = pkt.tcp_options
    i = 0
    while i < len(opts):
        kind = opts[i]
        if kind == 0:
            return None
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(opts) or opts[i + 1] < 2:
            return None
        if kind == 2 and opts[i + 1] == 4 and i + 4 <= len(opts):
            return int.from_bytes(opts[i + 2 : i + 4], "big")
        i += opts[i + 1]
    return None


def _field(pkt: "Packet", f: PacketField) -> int | None:
    """The header value a FieldCheck tests, or None when the packet has no such field."""
    tcp = pkt.proto == 6 and pkt.l4_offset > 0 and pkt.frag_offset == 0
    if f is PacketField.DSIZE:
        return len(pkt.payload)
    if f is PacketField.TTL:
        return pkt.ttl if pkt.version else None
    if f is PacketField.ITYPE or f is PacketField.ICODE:
        if pkt.proto not in (1, 58) or pkt.icmp_type < 0:
            return None
        return pkt.icmp_type if f is PacketField.ITYPE else pkt.icmp_code
    if f is PacketField.ICMP_ID:
        return _icmp_u16(pkt, 4)
    if f is PacketField.ICMP_SEQ:
        return _icmp_u16(pkt, 6)
    if f is PacketField.IP_PROTO:
        return pkt.proto if pkt.version else None
    if f is PacketField.IP_ID:
        return pkt.ip_id if pkt.version == 4 else None
    if f is PacketField.FRAGOFFSET:  # the header field (8-byte units); IPv6 needs a fragment header
        if pkt.version == 4 or (pkt.version == 6 and 44 in pkt.ext_headers):
            return pkt.frag_offset >> 3
        return None
    if not tcp:
        return None
    if f is PacketField.TCP_ACK:
        return pkt.ack
    if f is PacketField.TCP_SEQ:
        return pkt.seq
    if f is PacketField.TCP_WINDOW:
        return pkt.window
    return _tcp_mss(pkt)


def _bits_match(have: int, want: int, mode: FlagMode) -> bool:
    if mode is FlagMode.EXACT:
        return have == want
    if mode is FlagMode.PLUS:
        return have & want == want
    if mode is FlagMode.ANY:
        return bool(have & want)
    return have & want != want


def _fragbits(pkt: "Packet") -> int | None:
    if pkt.version == 4 and len(pkt.raw) >= 8:
        return int.from_bytes(pkt.raw[6:8], "big") & 0xE000
    if pkt.version == 6:
        return 0x2000 if pkt.more_fragments else 0
    return None


def _ipv4_options(pkt: "Packet") -> list[int]:
    if pkt.version != 4 or not pkt.raw:
        return []
    ihl = (pkt.raw[0] & 0x0F) * 4
    opts = pkt.raw[20 : min(ihl, len(pkt.raw))]
    kinds: list[int] = []
    i = 0
    while i < len(opts) and len(kinds) < 40:
        kind = opts[i]
        kinds.append(kind)
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(opts) or opts[i + 1] < 2:
            break
        i += opts[i + 1]
    return kinds


def check_packet(check: object, pkt: "Packet") -> bool:
    """Evaluate one PacketCheck against a parsed packet."""
    if isinstance(check, FieldCheck):
        value = _field(pkt, check.field)
        return value is not None and check.test(value)
    if isinstance(check, FlagsCheck):
        if pkt.proto != 6 or pkt.l4_offset == 0:
            return False
        return _bits_match(pkt.tcp_flags & ~check.ignore & 0xFF, check.flags, check.mode)
    if isinstance(check, FragbitsCheck):
        bits = _fragbits(pkt)
        return bits is not None and _bits_match(bits, check.bits, check.mode)
    if isinstance(check, SameIpCheck):
        return bool(pkt.src_addr) and pkt.src_addr == pkt.dst_addr
    if isinstance(check, IpOptsCheck):
        kinds = _ipv4_options(pkt)
        if check.option == -1:
            return any(k not in (0, 1) for k in kinds)
        return check.option in kinds
    return False


def match_packet_checks(rule: Rule, pkt: "Packet") -> bool:
    """True when every header check of the rule (dsize, flags, ttl, itype, ...) holds."""
    for check in rule.packet_checks:
        if not check_packet(check, pkt):
            return False
    return True
