"""Rule matching on buffers: one BufferSection against one buffer (Suricata's content-inspection semantics) and buffer transforms.

Per-packet header checks (flags, ttl, itype, ...) are in ``filters.ips.packet_match``.

``match_section`` mirrors Suricata's DetectEngineContentInspection: the items run left to right
with a cursor; a content or pcre that has a dependent relative item after it (``retry``) is
searched again at its next occurrence when a later item fails; an independent failure stops the
whole section at once. Every recursive step counts against ``MatchContext.recursion_limit``
(Suricata's inspection-recursion-limit, 3000); running out counts as no match and sets
``MatchContext.limit_hit``. A pcre whose match runs into a PCRE2 limit (``filters.ips.pcre``)
gives up the whole section, counts as no match and sets ``MatchContext.pcre_limit``.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
from dataclasses import dataclass, field

from filters.ips.pcre import RegexLimit
from filters.ips.rule import (
    Base64Decode,
    Bsize,
    BufferSection,
    ByteExtract,
    ByteJump,
    ByteTest,
    ContentMatch,
    Endian,
    IsDataAt,
    MatchItem,
    Num,
    PcreMatch,
    Transform,
    UriLen,
)

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
    pcre_limit: RegexLimit | None = None  # a pcre match hit a PCRE2 bound (counts as no match)


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
        subject = self.data[base:] if base else self.data
        run = p.regex.match if p.anchored else p.regex.search
        pos = 0
        while True:
            try:
                m = run(subject, pos) if pos <= len(subject) else None
            except RegexLimit as exc:  # bounded: the rule does not match, the engine counts it
                self.ctx.pcre_limit = exc
                return -1
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

    def number_at(self, relative: bool, offset: int, nbytes: int, endian: Endian, base: int | None,
                  cursor: int) -> tuple[int, int, int] | None:
        """(start, value, bytes consumed) of the number a byte_test/byte_jump/byte_extract reads, or None
        when it is not inside the buffer or is no number."""
        ptr = self.byte_ptr(relative, offset, nbytes, cursor)
        if ptr < 0:
            return None
        got = _read_number(self.data, ptr, nbytes, endian, base)
        return None if got is None else (ptr, got[0], got[1])

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
    got = run.number_at(t.relative, run.num(t.offset), run.num(t.nbytes), t.endian, t.base, cursor)
    if got is None:
        return None
    val = _apply_bitmask(got[1], t.bitmask)
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
    got = run.number_at(j.relative, run.num(j.offset), run.num(j.nbytes), j.endian, j.base, cursor)
    if got is None:
        return None
    ptr, val, used = got
    val = _apply_bitmask(val, j.bitmask) * j.multiplier
    if j.align and val % 4:
        val += 4 - val % 4
    val += j.post_offset
    if j.from_beginning:
        jump = val
    elif j.from_end:
        jump = run.n + val
    else:
        jump = ptr + val + used
    if jump >= run.n:
        return None
    return max(jump, 0)


def _byte_extract(run: _Run, e: ByteExtract, cursor: int) -> int | None:
    got = run.number_at(e.relative, e.offset, e.nbytes, e.endian, e.base, cursor)
    if got is None:
        return None
    ptr, val, used = got
    val = _apply_bitmask(val, e.bitmask) * e.multiplier
    if e.align and val % e.align:
        val += e.align - val % e.align
    run.ctx.vars[e.name] = val
    return ptr + used


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
