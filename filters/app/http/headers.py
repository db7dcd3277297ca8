"""HTTP header blocks: libhtp's header-line grammar (folding, odd line ends, missing colons) and
the header list of one message (repeats merged, the header count capped)."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from filters.app.http.chars import EOL_RESPONSE, FOLD, LWS, SP, TOKEN
from filters.app.http.values import nozero_lower, parse_content_length

if TYPE_CHECKING:  # pragma: no cover
    from filters.app.events import HttpTransaction
    from filters.app.http.parser import HttpParser

MAX_FOLDS = 128  # folded continuation lines merged into one header (libhtp MAX_NB_FOLD)
MAX_REPEATS = 64  # repeated header names merged per transaction (libhtp)
HEADER_OVERHEAD = 96  # bytes a parsed header costs beyond its name and value (a tuple and two bytes objects)


_TOKEN_CLASS = b"[" + b"".join(b"\\x%02x" % c for c in sorted(TOKEN)) + b"]"
# One plain header line: a token name, the colon, a value without CR, LF or NUL, CRLF. A value's
# first byte is no space or tab, so a line splits one way only (no backtracking on a near miss).
_PLAIN_LINE = _TOKEN_CLASS + rb"+:[ \t]*(?:[^\x00\r\n \t][^\x00\r\n]*)?\r\n"
_PLAIN_BLOCK = re.compile(b"(?:" + _PLAIN_LINE + b")+")
_PLAIN_HEADER = re.compile(b"(" + _TOKEN_CLASS + rb"+):[ \t]*([^\x00\r\n]*)\r\n")


def plain_headers(data: bytes) -> tuple[int, list[tuple[bytes, bytes]]] | None:
    """The common header block in one piece, without the grammar walk: (end of the block, [(name, value)]).

    Only a complete block of ``token: value CRLF`` lines closed by an empty CRLF line qualifies (no
    folding, no bare CR or LF, no NUL, no missing colon, no odd name); on those ``HeaderScanner``
    reads every line the same one way, and decides nothing from bytes past the block. Anything
    else gives None, for the scanner. The headers are what ``HeaderScanner.headers`` returns with
    every colon present and the end of headers seen, whether or not a header of the block came
    before (the first byte is a name's, so neither start-of-block check applies); a test compares
    them on random and crafted blocks."""
    end = data.find(b"\r\n\r\n")
    if end < 0 or not _PLAIN_BLOCK.fullmatch(data, 0, end + 2):
        return None
    return end + 4, _PLAIN_HEADER.findall(data, 0, end + 2)


class NeedMore(Exception):
    """The header parser reached the end of the buffered bytes before it could decide."""


class NoMatch(Exception):
    """The bytes at this position are not what the header grammar expects."""


class HeaderScanner:
    """libhtp's header-block grammar (folding, CR-only and LF-CR line ends, missing colons) on one buffer.

    Every decision that would look past the buffered bytes raises ``NeedMore`` instead, so feeding
    a block in pieces gives the same headers as feeding it whole. ``closed`` lifts that for the
    final bytes of a stream."""

    __slots__ = ("buf", "end", "response", "closed")

    def __init__(self, buf: bytes, response: bool, closed: bool) -> None:
        self.buf = buf
        self.end = len(buf)
        self.response = response
        self.closed = closed

    def _more(self) -> None:
        if not self.closed:
            raise NeedMore

    def _starts(self, p: int, tag: bytes) -> bool:
        """Complete tag match; a partial match at the end of the buffer waits for more bytes."""
        buf = self.buf
        if buf.startswith(tag, p):
            return True
        if p + len(tag) > self.end and tag.startswith(buf[p:self.end]):
            self._more()
        return False

    def eol_regular(self, p: int) -> int | None:
        if self.response:
            for tag in (b"\r\n", b"\n\r", b"\n", b"\r"):
                if self._starts(p, tag):
                    return p + len(tag)
            return None
        for tag in (b"\r\n", b"\n"):
            if self._starts(p, tag):
                return p + len(tag)
        return None

    def _peek_lf_or_crlf(self, p: int) -> bool:
        return self._starts(p, b"\n") or self._starts(p, b"\r\n")

    def eol_deformed(self, p: int) -> int | None:
        if self._starts(p, b"\n\r\r\n") and self._peek_lf_or_crlf(p + 4):
            return p + 4
        if not self.response:
            return p + 2 if self._starts(p, b"\n\r") and self._starts(p + 2, b"\r\n") else None
        if not self._starts(p, b"\r\n\r"):
            return None
        q = p + 3
        buf, end = self.buf, self.end
        while q < end and buf[q] in b"\r \t":
            q += 1
        if q == p + 3:
            if q >= end:
                self._more()  # streaming take_while1
            return None
        if q >= end:
            self._more()
            return None
        if self._starts(q, b"\n"):
            q += 1
        if self._peek_lf_or_crlf(q):
            return None
        if q >= end:
            self._more()
        return q

    def eol_complete(self, p: int) -> int | None:
        e = self.eol_deformed(p)
        return e if e is not None else self.eol_regular(p)

    def fold_lws(self, p: int) -> bool:
        if p >= self.end:
            self._more()
            return False
        return self.buf[p] in FOLD

    def eol(self, p: int) -> int | None:
        e = self.eol_complete(p)
        if e is None or (not self.closed and self.fold_lws(e)):
            return None
        return e

    def folding(self, p: int) -> int | None:
        """End of EOL + one folding whitespace, or None."""
        e = self.eol_regular(p) if self.response else self.eol_complete(p)
        if e is None or not self.fold_lws(e):
            return None
        return e

    def terminator(self, p: int) -> tuple[int, int, int]:
        """After a value: (end of the EOL, folding char or -1, position after it)."""
        try:
            f = self.folding(p)
        except NeedMore:
            if not self.closed:
                raise
            f = None
        if f is not None:
            return f, self.buf[f], f + 1
        e = self.eol(p)
        if e is None:
            raise NoMatch
        return e, -1, e

    def value_bytes(self, p: int) -> tuple[bytes, int, int, int]:
        """(value, length of its EOL, folding char or -1, next position)."""
        buf = self.buf
        if self.response:
            m = EOL_RESPONSE.search(buf, p)
            q = m.start() if m else -1
        else:
            q = buf.find(b"\n", p)
        if q < 0:
            raise NeedMore
        if not self.response and q > p and buf[q - 1] == 0x0D:
            q -= 1
        e, fold, nxt = self.terminator(q)
        return buf[p:q], e - q, fold, nxt

    def looks_like_name(self, i: int) -> bool:
        """Response folding lookahead: ``  token :`` starts a new header rather than a continuation."""
        buf, end = self.buf, self.end
        j = i
        while j < end and buf[j] in LWS:
            j += 1
        k = j
        while k < end and buf[k] in TOKEN:
            k += 1
        q = k
        while q < end and buf[q] in LWS:
            q += 1
        if q >= end:
            self._more()
            return False
        if buf[q] != 0x3A:
            return False
        q += 1
        while q < end and buf[q] in LWS:
            q += 1
        if q >= end:
            self._more()
        return k > j

    def value(self, p: int) -> tuple[int, bytes]:
        """A header value with its folded continuation lines: (next position, value)."""
        val, _, fold, nxt = self.value_bytes(p)
        if fold < 0:
            return nxt, val
        value = bytearray(val)
        rest = i = nxt
        for _ in range(MAX_FOLDS):
            if self.response and self.looks_like_name(i):
                return i, bytes(value)
            val, eol_len, fold2, nxt2 = self.value_bytes(i)
            if value:
                value.append(fold)
            if val or eol_len > 1:
                rest = nxt2
                value += val
            elif nxt2 < self.end and self.buf[nxt2] == 0x0A:
                rest = nxt2  # an empty folded line before a bare LF: the LF ends the block
            i = nxt2
            if fold2 < 0:
                break
            fold = fold2
        return rest, bytes(value)

    def name_end(self, p: int) -> int:
        """libhtp's name scan: the colon may follow a line end only if spaces come after it."""
        buf, end = self.buf, self.end
        response = self.response
        i = p
        while True:
            colon = buf.find(b":", i)
            if response:
                m = EOL_RESPONSE.search(buf, i, colon if colon >= 0 else end)
                e = m.start() if m else -1
            else:
                e = buf.find(b"\n", i, colon if colon >= 0 else end)
            if e < 0:
                if colon < 0:
                    self._more()  # a colon may still come on this line (or on a folded one)
                    return p
                return colon
            term = buf[e]
            j = e + 1
            while j < end:
                c = buf[j]
                if c == 0x20:
                    break
                if c == 0x0A and term == 0x0D:
                    term = 0x0A
                    j += 1
                    continue
                return j - 1
            else:
                return p
            i = j + 1

    def header(self, p: int) -> tuple[int, bytes, bytes, bool]:
        """(next position, name, value, colon present)."""
        buf = self.buf
        try:
            q = self.name_end(p)
            if q >= self.end or buf[q] != 0x3A:
                raise NoMatch
            name = buf[p:q]
            q += 1
            while q < self.end and buf[q] in LWS:
                q += 1
            if q >= self.end:
                raise NeedMore
            nxt, val = self.value(q)
            return nxt, name, val, True
        except NoMatch:
            pass
        if buf.startswith(b"\r\n", p):
            raise NoMatch
        nxt, val = self.value(p)
        return nxt, b"", val, False

    def headers(self, p: int, block_start: bool) -> tuple[int, list[tuple[bytes, bytes, bool]], bool]:
        """Parse headers from ``p``: (position, [(name, value, has_colon)], end of headers seen).

        ``block_start``: no header of this block came before. A bare LF there ends the block
        (libhtp reads it as an empty header unless it ends the packet, and then takes the body or
        the next request for headers); otherwise this resumes libhtp's end-of-headers check."""
        out: list[tuple[bytes, bytes, bool]] = []
        i = p
        if block_start:
            if i < self.end and self.buf[i] == 0x0A:
                return i + 1, out, True
        else:
            e = self.eol_regular(i)
            if e is not None:
                return e, out, True
        while True:
            try:
                nxt, name, val, colon = self.header(i)
            except NeedMore:
                if not out:
                    raise
                return i, out, False
            except NoMatch:
                if not out:
                    e = self.eol_complete(i)
                    if e is not None:
                        return e, out, True
                raise
            i = nxt
            out.append((name, val, colon))
            try:
                e = self.eol_regular(i)
            except NeedMore:
                return i, out, False
            if e is not None:
                return e, out, True


def trim(b: bytes) -> bytes:
    return b.strip(b" \t\r\n\x0b\x0c")


def header_value(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """libhtp's get_nocase_nozero: first header whose name, NULs removed, matches case-insensitively."""
    for k, v in headers:
        if len(k) >= len(name) and nozero_lower(k) == name:
            return v
    return None


def header_map(headers: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """Every name as ``header_value`` looks it up (NULs removed, lower case) to its first value:
    one pass for the several framing headers a message's end reads."""
    out: dict[bytes, bytes] = {}
    for k, v in reversed(headers):
        out[k.replace(b"\x00", b"").lower()] = v
    return out


_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"content-encoding", b"host", b"content-type"})


class HeaderList:
    """Adds headers to a transaction the way libhtp does: repeats merged with ", " (Content-Length
    keeps the first), at most ``max_headers`` names (framing headers are still honoured past it)."""

    __slots__ = ("parser", "tx", "items", "index", "repeats", "response", "flags", "size")

    def __init__(self, parser: HttpParser, tx: HttpTransaction, response: bool) -> None:
        self.parser = parser
        self.tx = tx
        self.response = response
        self.items = tx.response_headers if response else tx.request_headers
        self.index: dict[bytes, int] = {}
        self.repeats = 0
        self.flags: set[str] = set()
        self.size = 0  # bytes the header list holds, HEADER_OVERHEAD per header included

    def add(self, raw_name: bytes, raw_value: bytes, colon: bool) -> None:
        parser, tx = self.parser, self.tx
        side = "response" if self.response else "request"
        name, value = trim(raw_name), trim(raw_value)
        if not colon:
            parser._anomaly(tx, f"http.{side}_header_missing_colon")
        elif not name:
            parser._anomaly(tx, f"http.{side}_header_empty_name")
        elif raw_name[0] in SP or any(c not in TOKEN for c in name):
            parser._anomaly(tx, f"http.{side}_header_invalid_name")
        self.add_valid(name, value)

    def add_plain(self, pairs: list[tuple[bytes, bytes]]) -> None:
        """``plain_headers``' (name, value) pairs: token names, so none of ``add``'s name checks
        applies. A new name under the limits is stored here; repeats and limits go to ``add_valid``.
        The transaction is charged once for the lot (the sum is what it holds)."""
        parser, index, items = self.parser, self.index, self.items
        max_headers, max_bytes = parser.max_headers, parser.max_header_bytes
        size, charge = self.size, 0
        for name, raw_value in pairs:
            value = raw_value.strip(b" \t\r\n\x0b\x0c")  # trim()
            key = name.lower()
            cost = len(name) + len(value) + HEADER_OVERHEAD
            if key in index or len(items) >= max_headers or size + cost > max_bytes:
                self.size = size
                self.add_valid(name, value)
                size = self.size
                continue
            size += cost
            charge += cost
            index[key] = len(items)
            items.append((name, value))
        self.size = size
        if charge:
            parser._charge(self.tx, charge)

    def add_valid(self, name: bytes, value: bytes) -> None:
        """A header whose name is a token and whose value is trimmed: nothing ``add`` checks can be
        wrong with it."""
        parser, tx = self.parser, self.tx
        side = "response" if self.response else "request"
        key = name.lower()
        at = self.index.get(key)
        if at is not None:
            self._repeat(at, key, value)
            return
        cost = len(name) + len(value) + HEADER_OVERHEAD
        if len(self.items) >= parser.max_headers or self.size + cost > parser.max_header_bytes:
            if len(self.items) >= parser.max_headers:
                parser._anomaly(tx, f"http.{side}_too_many_headers")
            else:
                parser._anomaly(tx, f"http.{side}_headers_too_large")
            if nozero_lower(name) not in _FRAMING:
                return
        self.size += cost
        parser._charge(tx, cost)
        self.index[key] = len(self.items)
        self.items.append((name, value))

    def _repeat(self, at: int, key: bytes, value: bytes) -> None:
        side = "response" if self.response else "request"
        if self.repeats >= MAX_REPEATS:
            self.parser._anomaly(self.tx, f"http.{side}_header_repetitions")
            return
        self.repeats += 1
        name, old = self.items[at]
        if key == b"content-length":
            if parse_content_length(old) != parse_content_length(value):
                self.parser._anomaly(self.tx, f"http.{side}_duplicate_content_length")
            self.flags.add("cl_repeated")
            return
        self.parser._anomaly(self.tx, f"http.{side}_header_repeated")
        if self.size + len(value) + 2 > self.parser.max_header_bytes:
            self.parser._anomaly(self.tx, f"http.{side}_headers_too_large")
            return
        self.size += len(value) + 2
        self.parser._charge(self.tx, len(value) + 2)
        self.items[at] = (name, old + b", " + value)
