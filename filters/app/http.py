"""HTTP/1.x stream parser for the IPS: one sans-IO ``HttpParser`` per TCP flow, read like libhtp's IDS personality."""
from __future__ import annotations

import logging
import lzma
import re
import zlib
from collections import deque
from typing import Callable, Protocol

from filters.app import HttpEvent, HttpTransaction

log = logging.getLogger(__name__)

DEFAULT_BODY_LIMIT = 100 * 1024  # Suricata's request-body-limit / response-body-limit (0 = unlimited)
DEFAULT_DECOMPRESS_LAYERS = 2  # response-body-decompress-layer-limit
DEFAULT_MAX_DECOMPRESSED = 1 << 20  # libhtp compression bomb limit (bytes out) ...
DEFAULT_DECOMPRESS_RATIO = 2048  # ... when also above this out/in ratio
DEFAULT_MAX_HEADER_LINE = 18000  # libhtp field-limit: longest buffered line / header
DEFAULT_MAX_HEADERS = 1024  # libhtp number of headers limit
DEFAULT_MAX_TRANSACTIONS = 512  # libhtp max-tx: older completed ones are dropped from ``transactions``
MAX_LAYERS_HARD = 8  # decompress_layers=0 means libhtp's "no limit", still capped here
MAX_FOLDS = 128  # folded continuation lines merged into one header (libhtp MAX_NB_FOLD)
MAX_REPEATS = 64  # repeated header names merged per transaction (libhtp)
MAX_RAW_HEADERS = 64 * 1024  # request_headers_raw / response_headers_raw cap
LZMA_DICT_MAX = 1 << 20  # libhtp's lzma memlimit: a larger dictionary in the header is clamped to this
HTTP09_MAX_JUNK = 16  # whitespace after a protocol-less request line that still means HTTP/0.9
_STEP = 64 * 1024  # decompression output per zlib call
REPLAY_LIMIT = 64 * 1024  # input kept for a decoder retry while it has produced nothing

METHODS = frozenset(
    b"GET PUT POST DELETE CONNECT OPTIONS TRACE PATCH PROPFIND PROPPATCH MKCOL COPY MOVE LOCK UNLOCK "
    b"VERSION-CONTROL CHECKOUT UNCHECKOUT CHECKIN UPDATE LABEL REPORT MKWORKSPACE MKACTIVITY "
    b"BASELINE-CONTROL MERGE INVALID HEAD".split()
)
_SP = frozenset(b" \t\r\n\x0b\x0c")  # libhtp is_space
_SP_NUL = _SP | {0}
_LWS = frozenset(b" \t")  # nom is_space
_FOLD = frozenset(b" \t\x00")  # folding_lws
_SEPARATORS = frozenset(b'()<>@,;:\\"/[]?={} \t')
_TOKEN = frozenset(c for c in range(32, 127) if c not in _SEPARATORS)
_HEXDIGITS = frozenset(b"0123456789abcdefABCDEF")
_EOL_RESPONSE = re.compile(rb"[\r\n]")
_CHUNK_LEN = re.compile(rb"[ \t]*([0-9a-fA-F]*)[ \t]*")
_DIGITS = re.compile(rb"[0-9]+")
_PROTOCOL = re.compile(rb"\s*HTTP\s*/[\s0]*(\.9|1\.0|1\.1)\s*\Z", re.IGNORECASE)
_STATUS_LINE = re.compile(  # [space/NUL] protocol [space] status [ascii whitespace] message
    rb"[ \t\r\n\x0b\x0c\x00]*([^ \t\r\n\x0b\x0c]*)([ \t\r\n\x0b\x0c]*)([^ \t\r\n\x0b\x0c]*)([ \t\n\x0c\r]*)")
_URI_AUTHORITY = re.compile(  # scheme ":" [["//" [userinfo "@"]] host [":" port]], libhtp-style
    rb"[A-Za-z][A-Za-z0-9+.-]*:(?:(?://(?!/)(?:[^/?#@]*@)?)? *(?P<host>\[[^/?#\]]*\]?|[^/?#:]+)(?::[^/?#]*)?)?")
_NEXT_CODING = {"gzip": "deflate", "deflate": "zlib", "zlib": "gzip", "lzma": "deflate"}

# Parser states (one per direction).
IDLE, LINE, PROTOCOL, HEADERS, TRAILERS = "idle", "line", "protocol", "headers", "trailers"
BODY_CL, CHUNK_LEN, CHUNK_DATA, CHUNK_END, BODY_CLOSE = "body_cl", "chunk_len", "chunk_data", "chunk_end", "body_close"
AFTER, JUNK, CONNECT_WAIT, CONNECT_PROBE, IGNORE, TUNNEL, SYNC = (
    "after", "junk", "connect_wait", "connect_probe", "ignore", "tunnel", "sync")
_DIRECT_STATES = frozenset({BODY_CL, CHUNK_DATA, BODY_CLOSE})  # body bytes that need no buffering


class _NeedMore(Exception):
    """The header parser reached the end of the buffered bytes before it could decide."""


class _NoMatch(Exception):
    """The bytes at this position are not what the header grammar expects."""


# -- header blocks ---------------------------------------------------------------------------------

class _HeaderScanner:
    """libhtp's header-block grammar (folding, CR-only and LF-CR line ends, missing colons) on one buffer.

    Every decision that would look past the buffered bytes raises ``_NeedMore`` instead, so feeding
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
            raise _NeedMore

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
        return self.buf[p] in _FOLD

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
        except _NeedMore:
            if not self.closed:
                raise
            f = None
        if f is not None:
            return f, self.buf[f], f + 1
        e = self.eol(p)
        if e is None:
            raise _NoMatch
        return e, -1, e

    def value_bytes(self, p: int) -> tuple[bytes, int, int, int]:
        """(value, length of its EOL, folding char or -1, next position)."""
        buf = self.buf
        if self.response:
            m = _EOL_RESPONSE.search(buf, p)
            q = m.start() if m else -1
        else:
            q = buf.find(b"\n", p)
        if q < 0:
            raise _NeedMore
        if not self.response and q > p and buf[q - 1] == 0x0D:
            q -= 1
        e, fold, nxt = self.terminator(q)
        return buf[p:q], e - q, fold, nxt

    def looks_like_name(self, i: int) -> bool:
        """Response folding lookahead: ``  token :`` starts a new header rather than a continuation."""
        buf, end = self.buf, self.end
        j = i
        while j < end and buf[j] in _LWS:
            j += 1
        k = j
        while k < end and buf[k] in _TOKEN:
            k += 1
        q = k
        while q < end and buf[q] in _LWS:
            q += 1
        if q >= end:
            self._more()
            return False
        if buf[q] != 0x3A:
            return False
        q += 1
        while q < end and buf[q] in _LWS:
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
                m = _EOL_RESPONSE.search(buf, i, colon if colon >= 0 else end)
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
                raise _NoMatch
            name = buf[p:q]
            q += 1
            while q < self.end and buf[q] in _LWS:
                q += 1
            if q >= self.end:
                raise _NeedMore
            nxt, val = self.value(q)
            return nxt, name, val, True
        except _NoMatch:
            pass
        if buf.startswith(b"\r\n", p):
            raise _NoMatch
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
            except _NeedMore:
                if not out:
                    raise
                return i, out, False
            except _NoMatch:
                if not out:
                    e = self.eol_complete(i)
                    if e is not None:
                        return e, out, True
                raise
            i = nxt
            out.append((name, val, colon))
            try:
                e = self.eol_regular(i)
            except _NeedMore:
                return i, out, False
            if e is not None:
                return e, out, True


def _trim(b: bytes) -> bytes:
    return b.strip(b" \t\r\n\x0b\x0c")


# -- small value parsers ---------------------------------------------------------------------------

def parse_content_length(value: bytes) -> int | None:
    """libhtp: the first run of digits, junk before and after allowed; None without digits."""
    m = _DIGITS.search(value)
    if m is None or len(m.group()) > 19:
        return None
    return int(m.group())


def parse_chunk_length(line: bytes) -> int | None:
    """Hex length after leading control characters; -1 when the line carries no length at all."""
    s = line.lstrip(b"\r\n \t\x0b\x0c")
    m = _CHUNK_LEN.match(s)
    digits = m.group(1) if m else b""
    if not digits:
        return -1 if not s[m.end():] else None
    if len(digits) > 16:
        return None
    n = int(digits, 16)
    return -1 if n > 0x7FFFFFFF else n


def parse_status(status: bytes) -> int | None:
    if not status or not status.isdigit() or len(status) > 5:
        return None
    n = int(status)
    return n if 100 <= n <= 999 else None


def protocol_ok(protocol: bytes) -> bool:
    return _PROTOCOL.match(protocol) is not None


def protocol_at_least_11(protocol: bytes) -> bool:
    m = _PROTOCOL.match(protocol)
    return m is not None and m.group(1) == b"1.1"


def looks_like_status_line(line: bytes) -> bool:
    """Browsers read anything starting with optional whitespace/NUL then "http" as a status line."""
    s = line.lstrip(b" \t\r\n\x0b\x0c\x00")
    return s[:4].lower() == b"http"


def _nozero_lower(b: bytes) -> bytes:
    return b.replace(b"\x00", b"").lower()


# -- URI -----------------------------------------------------------------------------------------

def _pct_decode(data: bytes, *, path: bool) -> bytes:
    """%XX and %uXXXX decoding; invalid escapes keep their percent sign. Path mode also maps
    backslashes to slashes (IDS personality)."""
    if b"%" not in data and not (path and b"\\" in data):
        return data
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        c = data[i]
        if c == 0x25:
            h = data[i + 1:i + 3]
            if len(h) == 2 and h[0] in _HEXDIGITS and h[1] in _HEXDIGITS:
                c = int(h, 16)
                i += 3
            elif data[i + 1:i + 2] in (b"u", b"U") and len(data[i + 2:i + 6]) == 4 and all(
                    x in _HEXDIGITS for x in data[i + 2:i + 6]):
                cp = int(data[i + 2:i + 6], 16)
                c = cp if cp < 0x100 else (cp - 0xFEE0 if 0xFF01 <= cp <= 0xFF5E else 0x3F)
                i += 6
            else:
                i += 1
        else:
            i += 1
        if path and c == 0x5C:
            c = 0x2F
        out.append(c)
    return bytes(out)


def _bestfit_utf8(path: bytes) -> bytes:
    """IDS personality: a valid UTF-8 path is mapped to single bytes (fullwidth ASCII to ASCII)."""
    if path.isascii():
        return path
    try:
        text = path.decode("utf-8")
    except UnicodeDecodeError:
        return path
    out = bytearray()
    for ch in text:
        cp = ord(ch)
        out.append(cp if cp < 0x100 else (cp - 0xFEE0 if 0xFF01 <= cp <= 0xFF5E else 0x3F))
    return bytes(out)


def remove_dot_segments(path: bytes) -> bytes:
    """RFC 3986 section 5.2.4."""
    if b"." not in path:
        return path
    absolute = path.startswith(b"/")
    segs = path.split(b"/")
    out: list[bytes] = []
    for i, seg in enumerate(segs):
        last = i == len(segs) - 1
        if seg == b".":
            if last:
                out.append(b"")
            continue
        if seg == b"..":
            if out and not (len(out) == 1 and out[0] == b"" and absolute):
                out.pop()
            if last:
                out.append(b"")
            continue
        out.append(seg)
    result = b"/".join(out)
    if absolute and not result.startswith(b"/"):
        result = b"/" + result
    return result


def normalize_path(raw: bytes) -> bytes:
    """http.uri path: decoded, backslashes and %2f as separators, slashes compressed, dots removed."""
    p = _bestfit_utf8(_pct_decode(raw, path=True))
    while b"//" in p:
        p = p.replace(b"//", b"/")
    return remove_dot_segments(p)


def split_uri(uri: bytes) -> tuple[bytes, bytes, bytes | None, bytes | None]:
    """(authority host, path, query, fragment) as libhtp's parse_uri: a host only after a scheme."""
    host, rest = b"", uri
    m = _URI_AUTHORITY.match(uri) if uri[:1] != b"/" else None
    if m is not None:
        host, rest = (m.group("host") or b"").rstrip(b" "), uri[m.end():]
    frag = query = None
    h = rest.find(b"#")
    if h >= 0:
        rest, frag = rest[:h], rest[h + 1:]
    q = rest.find(b"?")
    if q >= 0:
        rest, query = rest[:q], rest[q + 1:]
    return host, rest, query, frag


def normalize_uri(uri: bytes) -> tuple[bytes, bytes]:
    """(http.uri, host from the URI authority, lowercased) for a request URI."""
    host, path, query, frag = split_uri(uri)
    out = normalize_path(path)
    if query is not None:
        out += b"?" + _pct_decode(query, path=False)
    if frag is not None:
        out += b"#" + _pct_decode(frag, path=False)
    return out, _pct_decode(host, path=False).lower().rstrip(b".")


def host_from_header(value: bytes) -> bytes:
    """http.host from a Host header value: hostname only, lowercased, port stripped."""
    v = value
    if v.startswith(b"//"):
        v = v[2:]
    v = v.lstrip(b" ")
    if v.startswith(b"["):
        end = v.find(b"]")
        host = v[:end + 1] if end >= 0 else v
    else:
        m = re.match(rb"[^/?#:]*", v)
        host = m.group() if m else b""
    return host.rstrip(b" ").lower()


def content_type(value: bytes) -> bytes:
    m = re.match(rb"\s*([^;, ]*)", value)
    return m.group(1).lower() if m else b""


# -- content decoding ----------------------------------------------------------------------------

class _Sink(Protocol):
    def write(self, data: bytes) -> None: ...

    def finish(self) -> None: ...

    def set_passthrough(self) -> None: ...


class _Corrupt(Exception):
    """A decoder rejected its input; ``remaining`` is the input of the failing step."""

    def __init__(self, remaining: bytes) -> None:
        super().__init__("corrupt")
        self.remaining = remaining


class _Layer:
    """One content-coding layer, with libhtp's recovery: a decode error before any output retries
    the input as the next of gzip/deflate/zlib (three times), then passes it through raw. An error
    after output keeps that output and ends the layer (a truncated stream). Until the first output
    the input is kept (up to ``REPLAY_LIMIT``) so a retry sees the same bytes however they were split."""

    __slots__ = ("coding", "inner", "stopped", "restarts", "passthrough", "dead", "obj", "gz", "gz_buf",
                 "gz_flags", "gz_left", "replay", "produced")

    def __init__(self, coding: str, inner: _Sink, stopped: Callable[[], bool]) -> None:
        self.coding = coding
        self.inner = inner
        self.stopped = stopped
        self.restarts = 0
        self.passthrough = False
        self.dead = False
        self._reset()

    def _reset(self) -> None:
        self.gz = 0  # header state: gzip 0 fixed, 1 xlen, 2 extra, 3 name, 4 comment, 5 crc; 6 done (also lzma)
        self.gz_buf = b""
        self.gz_flags = 0
        self.gz_left = 0
        self.replay: bytearray | None = bytearray()  # input since the (re)start, while nothing came out
        self.produced = False
        if self.coding == "zlib":
            self.obj: object = zlib.decompressobj(15)
        elif self.coding == "lzma":
            self.obj = lzma.LZMADecompressor(format=lzma.FORMAT_ALONE, memlimit=2 * LZMA_DICT_MAX)
        else:
            self.obj = zlib.decompressobj(-15)

    def set_passthrough(self) -> None:
        self.passthrough = True
        self.inner.set_passthrough()

    def _out(self, data: bytes) -> None:
        self.produced = True
        self.replay = None
        self.inner.write(data)

    def write(self, data: bytes) -> None:
        if self.dead or not data:
            return
        if self.passthrough:
            self.inner.write(data)
            return
        if self.replay is not None:
            if len(self.replay) + len(data) > REPLAY_LIMIT:
                self.replay = None
            else:
                self.replay += data
        try:
            if self.coding == "gzip" and self.gz < 6:
                data = self._gzip_header(data)
                if not data:
                    return
            if self.coding == "lzma":
                if self.gz < 6:
                    data = self._lzma_header(data)
                    if not data:
                        return
                self._unlzma(data)
            else:
                self._inflate(data)
        except _Corrupt as exc:
            self._failed(exc.remaining)

    def _failed(self, remaining: bytes) -> None:
        if self.produced:
            self.dead = True
            return
        again = bytes(self.replay) if self.replay is not None else remaining
        if self.restarts < 3:
            self.restarts += 1
            self.coding = _NEXT_CODING[self.coding]
            self._reset()
            self.write(again)
        else:
            self.set_passthrough()
            self.inner.write(again)

    def _gzip_header(self, data: bytes) -> bytes:
        """Skip a gzip header leniently (flags honoured, header CRC and reserved bits ignored)."""
        while data and self.gz < 6:
            if self.gz == 0:
                head = self.gz_buf + data
                if head[:3] != b"\x1f\x8b\x08"[:len(head[:3])]:
                    raise _Corrupt(data)
                if len(head) < 10:
                    self.gz_buf = head
                    return b""
                self.gz_flags, self.gz_buf, data, self.gz = head[3], b"", head[10:], 1
            elif self.gz in (1, 5):
                if not self.gz_flags & (0x04 if self.gz == 1 else 0x02):
                    self.gz += 1
                    continue
                head = self.gz_buf + data
                if len(head) < 2:
                    self.gz_buf = head
                    return b""
                self.gz_left = int.from_bytes(head[:2], "little") if self.gz == 1 else 0
                self.gz_buf, data, self.gz = b"", head[2:], self.gz + 1
            elif self.gz == 2:
                n = min(self.gz_left, len(data))
                data, self.gz_left = data[n:], self.gz_left - n
                if not self.gz_left:
                    self.gz = 3
            else:
                if self.gz_flags & (0x08 if self.gz == 3 else 0x10):
                    z = data.find(b"\x00")
                    if z < 0:
                        return b""
                    data = data[z + 1:]
                self.gz += 1
        if self.gz == 6 and self.replay is not None:
            self.replay = bytearray(data)  # libhtp retries a failing gzip body without its header
        return data

    def _lzma_header(self, data: bytes) -> bytes:
        """The 13-byte LZMA-alone header with its dictionary size clamped: liblzma would reserve it
        up front, lzma-rs (libhtp) grows it as output comes, up to the same 1 MiB limit."""
        head = self.gz_buf + data
        if len(head) < 13:
            self.gz_buf = head
            return b""
        self.gz, self.gz_buf = 6, b""
        if int.from_bytes(head[1:5], "little") > LZMA_DICT_MAX:
            head = head[:1] + LZMA_DICT_MAX.to_bytes(4, "little") + head[5:]
        return head

    def _inflate(self, data: bytes) -> None:
        obj = self.obj
        pending = data
        while not obj.eof and not self.stopped():  # type: ignore[attr-defined]
            snapshot = obj.copy()  # type: ignore[attr-defined]
            try:
                out = obj.decompress(pending, _STEP)  # type: ignore[attr-defined]
            except zlib.error:
                # A real compressed stream (output already handed on, or a valid gzip/zlib header)
                # keeps what still decodes. Headerless deflate failing before any output (e.g.
                # "Content-Encoding: gzip" on a plain body) retries the next format, then raw.
                trusted = self.produced or self.coding == "zlib" or (self.coding == "gzip" and self.gz == 6)
                partial = _salvage(snapshot, pending) if trusted else b""
                if partial:
                    self._out(partial)
                raise _Corrupt(pending) from None
            if out:
                self._out(out)
            pending = obj.unconsumed_tail  # type: ignore[attr-defined]
            if not pending and len(out) < _STEP:
                return

    def _unlzma(self, data: bytes) -> None:
        obj = self.obj
        pending = data
        while not obj.eof and not self.stopped():  # type: ignore[attr-defined]
            try:
                out = obj.decompress(pending, _STEP)  # type: ignore[attr-defined]
            except (lzma.LZMAError, EOFError):
                raise _Corrupt(pending) from None
            if out:
                self._out(out)
            pending = b""
            if obj.needs_input:  # type: ignore[attr-defined]
                return

    def finish(self) -> None:
        if not (self.dead or self.passthrough) and self.coding != "lzma" and not self.stopped():
            try:
                tail = self.obj.flush()  # type: ignore[attr-defined]
            except zlib.error:
                tail = b""
            if tail:
                self._out(tail)
        self.dead = True
        self.inner.finish()


def _salvage(snapshot: object, data: bytes) -> bytes:
    """What zlib had decoded before the error: output of the longest prefix that still decodes."""
    lo, hi, best = 0, len(data), b""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        trial = snapshot.copy()  # type: ignore[attr-defined]
        try:
            out = trial.decompress(data[:mid], _STEP)
        except zlib.error:
            hi = mid
            continue
        lo, best = mid, out
    return best


def codings_for(value: bytes | None, layer_limit: int) -> tuple[list[str], bool]:
    """Decoders for a Content-Encoding value, innermost first, and whether layers were dropped."""
    if value is None:
        return [], False
    exact = _nozero_lower(value)
    if exact in (b"gzip", b"x-gzip"):
        return ["gzip"], False
    if exact in (b"deflate", b"x-deflate"):
        return ["deflate"], False
    if exact == b"lzma":
        return ["lzma"], False
    if exact in (b"inflate", b"none", b""):
        return [], False
    limit = layer_limit if 0 < layer_limit < MAX_LAYERS_HARD else MAX_LAYERS_HARD
    out: list[str] = []
    layers = lzma_layers = 0
    for token in re.split(rb"[, ]", value):
        if not token:
            continue
        layers += 1
        if layers > limit:
            return out, True
        low = token.lower()
        if b"gzip" in low:
            out.append("gzip")
        elif b"deflate" in low:
            out.append("deflate")
        elif token == b"lzma":
            lzma_layers += 1
            if lzma_layers > 1:
                return out, True
            out.append("lzma")
    return out, False


# -- bodies --------------------------------------------------------------------------------------

class _Body:
    """One direction's body of one transaction: decoding chain, body limit and bomb caps.

    It is also the innermost sink of its decoding chain."""

    __slots__ = ("parser", "tx", "response", "limit", "data", "chain", "wire", "decoded", "stop", "finished")

    def __init__(self, parser: HttpParser, tx: HttpTransaction, response: bool, codings: list[str]) -> None:
        self.parser = parser
        self.tx = tx
        self.response = response
        self.limit = parser.response_body_limit if response else parser.request_body_limit
        self.data = bytearray()
        self.wire = 0  # bytes in, after de-chunking
        self.decoded = 0  # bytes out of the decoders
        self.stop = False  # nothing more will be stored
        self.finished = False
        head: _Sink = self
        for coding in codings:
            head = _Layer(coding, head, self.stopped)
        self.chain: _Sink | None = head if codings else None

    def stopped(self) -> bool:
        return self.stop

    def set_passthrough(self) -> None:
        pass

    def finish(self) -> None:
        pass

    def feed(self, data: bytes) -> None:
        """Body bytes as the peer sent them (de-chunked)."""
        if not data or self.stop:
            return
        self.wire += len(data)
        if self.chain is None:
            self.write(data)
        elif not self.finished:
            self.chain.write(data)
        else:
            self.parser._anomaly(self.tx, "http.body_after_decoding_ended")

    def end(self) -> None:
        if self.chain is not None and not self.finished:
            self.finished = True
            self.chain.finish()

    def gap(self) -> None:
        self.parser._anomaly(self.tx, "http.body_gap")
        self.end()

    def write(self, data: bytes) -> None:
        """Decoded bytes: store up to the body limit, stop at a decompression bomb."""
        if self.stop or not data:
            return
        parser = self.parser
        self.decoded += len(data)
        if self.chain is not None and self.decoded > parser.max_decompressed and \
                self.decoded > parser.decompress_ratio * max(self.wire, 1):
            self._truncate("http.decompression_bomb")
            return
        room = self.limit - len(self.data) if self.limit else len(data)
        if room < len(data):
            data = data[:max(room, 0)]
            self._truncate("http.body_limit")
        if data:
            self.data += data
            parser._body_added(self)

    def _truncate(self, anomaly: str) -> None:
        self.stop = True
        if self.response:
            self.tx.response_body_truncated = True
        else:
            self.tx.request_body_truncated = True
        self.parser._anomaly(self.tx, anomaly)

    def publish(self) -> None:
        if self.response:
            self.tx.response_body = bytes(self.data)
        else:
            self.tx.request_body = bytes(self.data)


# -- headers of one message ----------------------------------------------------------------------

def header_value(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """libhtp's get_nocase_nozero: first header whose name, NULs removed, matches case-insensitively."""
    for k, v in headers:
        if len(k) >= len(name) and _nozero_lower(k) == name:
            return v
    return None


_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"content-encoding", b"host", b"content-type"})


class _HeaderList:
    """Adds headers to a transaction the way libhtp does: repeats merged with ", " (Content-Length
    keeps the first), at most ``max_headers`` names (framing headers are still honoured past it)."""

    __slots__ = ("parser", "tx", "items", "index", "repeats", "response", "flags")

    def __init__(self, parser: HttpParser, tx: HttpTransaction, response: bool) -> None:
        self.parser = parser
        self.tx = tx
        self.response = response
        self.items = tx.response_headers if response else tx.request_headers
        self.index: dict[bytes, int] = {}
        self.repeats = 0
        self.flags: set[str] = set()

    def add(self, raw_name: bytes, raw_value: bytes, colon: bool) -> None:
        parser, tx = self.parser, self.tx
        side = "response" if self.response else "request"
        name, value = _trim(raw_name), _trim(raw_value)
        if not colon:
            parser._anomaly(tx, f"http.{side}_header_missing_colon")
        elif not name:
            parser._anomaly(tx, f"http.{side}_header_empty_name")
        elif raw_name[0] in _SP or any(c not in _TOKEN for c in name):
            parser._anomaly(tx, f"http.{side}_header_invalid_name")
        key = name.lower()
        at = self.index.get(key)
        if at is not None:
            self._repeat(at, key, value)
            return
        if len(self.items) >= parser.max_headers:
            parser._anomaly(tx, f"http.{side}_too_many_headers")
            if _nozero_lower(name) not in _FRAMING:
                return
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
        self.items[at] = (name, old + b", " + value)


# -- streams ----------------------------------------------------------------------------------------

_REQUEST_LINE_LIKE = re.compile(rb"[ \t]*\S+[ \t]+\S+[ \t]+HTTP/", re.IGNORECASE)
_START_REQUEST = re.compile(rb"[ \t]*(?:" + b"|".join(re.escape(m) for m in sorted(METHODS)) + rb") ")
_NEXT_REQUEST = re.compile(rb"\n" + _START_REQUEST.pattern)
_START_RESPONSE = re.compile(rb"[ \t]*HTTP/", re.IGNORECASE)
_NEXT_RESPONSE = re.compile(rb"\n[ \t]*HTTP/", re.IGNORECASE)
_LINE_STATES = frozenset({LINE, PROTOCOL, HEADERS, TRAILERS, CHUNK_LEN, AFTER, CONNECT_PROBE})


class _Stream:
    """One direction: buffered bytes and the message state machine shared by requests and responses."""

    response = False

    def __init__(self, parser: HttpParser) -> None:
        self.p = parser
        self.buf = bytearray()
        self.pos = 0
        self.state = IDLE
        self.tx: HttpTransaction | None = None
        self.body: _Body | None = None
        self.hdrs: _HeaderList | None = None
        self.raw = bytearray()  # the header block as received
        self.left = 0  # bytes left in a Content-Length body or in the current chunk
        self.last_tx: HttpTransaction | None = None  # the message that completed last (junk after it)
        self.last_body: _Body | None = None
        self.closed = False
        self.skip_to_lf = False  # an overlong line was cut: drop bytes up to its line end
        self.sync_start = False
        self.junk_noted = False
        self.block_headers = 0  # headers parsed so far in the current header or trailer block
        self.handlers: dict[str, Callable[[], bool]] = {
            BODY_CL: self._st_body_cl, CHUNK_LEN: self._st_chunk_len, CHUNK_DATA: self._st_chunk_data,
            CHUNK_END: self._st_chunk_end, BODY_CLOSE: self._st_body_close, TRAILERS: self._st_trailers,
            JUNK: self._st_junk, SYNC: self._st_sync, IGNORE: self._st_wait, TUNNEL: self._st_wait,
            CONNECT_WAIT: self._st_wait,
        }

    # -- buffer --------------------------------------------------------------------------------
    def avail(self) -> int:
        return len(self.buf) - self.pos

    def take(self, n: int) -> bytes:
        data = bytes(self.buf[self.pos:self.pos + n])
        self.pos += len(data)
        return data

    def push(self, data: bytes) -> None:
        if self.state in (TUNNEL, IGNORE):
            return
        if self.skip_to_lf:
            if self.response and self.state == LINE:  # a status line also ends at a bare CR
                m = _EOL_RESPONSE.search(data)
                lf = m.start() if m else -1
            else:
                lf = data.find(b"\n")
            if lf < 0:
                return
            data, self.skip_to_lf = data[lf:], False
        if self.state in _DIRECT_STATES and not self.avail():
            data = self._direct(data)  # the common case: body bytes go straight to the body
            if not data:
                return
        self.buf += data
        self.run()

    def _direct(self, data: bytes) -> bytes:
        """Body bytes without copying them through the buffer; returns what is left over."""
        assert self.body is not None
        if self.state == BODY_CLOSE:
            self.body.feed(data)
            return b""
        n = min(self.left, len(data))
        self.body.feed(data[:n])
        self.left -= n
        if not self.left:
            if self.state == BODY_CL:
                self._done()
            else:
                self.state = CHUNK_END
        return data[n:]

    def run(self) -> None:
        budget = 4 * self.avail() + 64  # every step consumes bytes or changes state; this only guards bugs
        cap = self.p.max_header_line
        while budget > 0:
            budget -= 1
            if self.state in _LINE_STATES and len(self.buf) - self.pos > cap:
                self._cut_complete_lines(cap)
            if not self.handlers[self.state]():
                if not self._cut_long_line():
                    break
        else:
            self.p._anomaly(self.tx, "http.parser_stuck")
            self.state = IGNORE
        if self.pos and (self.pos >= len(self.buf) or self.pos > 65536):
            del self.buf[:self.pos]
            self.pos = 0

    def _cut_complete_lines(self, cap: int) -> None:
        """Cut complete overlong lines the way a stalled one is cut, so segmentation never changes the result.

        The line at the read position, and in a header or trailer block every line up to the blank one,
        keeps its first ``cap`` bytes and its LF. An overlong response line that is no status line
        makes the rest of the stream body (``_line_overflow``)."""
        buf, line = self.buf, self.pos
        if self.response and self.state == LINE:  # a status line ends at CRLF, CR or LF
            m = _EOL_RESPONSE.search(buf, line)
            if m is None or m.start() - line <= cap:
                return
            if looks_like_status_line(bytes(buf[line:line + 64])):
                self.p._anomaly(self.tx, "http.line_too_long")
                del buf[line + cap:m.start()]
            else:
                self._line_overflow()  # no status line: body to the end, as when it comes in pieces
            return
        block = self.state in (HEADERS, TRAILERS)
        while True:
            lf = buf.find(b"\n", line)
            if lf < 0:
                return  # the unterminated tail is _cut_long_line's, once the handler waits for it
            end = lf - 1 if lf > line and buf[lf - 1] == 13 else lf
            if end - line > cap:
                self.p._anomaly(self.tx, "http.line_too_long")
                del buf[line + cap:lf]
                lf = line + cap
            elif end == line or not block:
                return
            if not block:
                return
            line = lf + 1

    def _cut_long_line(self) -> bool:
        """Enforce max_header_line on a line still waiting for its end: keep its head, drop the middle."""
        cap = self.p.max_header_line
        if self.state not in _LINE_STATES or self.avail() <= cap or self.closed:
            return False
        # find the first buffered line longer than the cap; a stalled handler whose lines all fit
        # (it waits for a line after them) has nothing to cut
        line = self.pos
        while True:
            lf = self.buf.find(b"\n", line)
            end = len(self.buf) if lf < 0 else lf
            if self.buf[end - 1:end] == b"\r":  # the CR of a CRLF (or of one still coming) is not content
                end -= 1
            if end - line > cap:
                break
            if lf < 0:
                return False
            line = lf + 1
        self.p._anomaly(self.tx, "http.line_too_long")
        start = line + cap
        if lf < 0:
            del self.buf[start:]
            self.skip_to_lf = True
        else:
            del self.buf[start:lf]
        return True

    # -- messages ------------------------------------------------------------------------------
    def _emit(self, stage: str) -> None:
        assert self.tx is not None
        self.p._emit(self.tx, stage, not self.response)

    def _parse_headers(self) -> tuple[bool, bool]:
        """Parse buffered header lines into ``self.hdrs``: (made progress, end of headers reached)."""
        data = bytes(self.buf[self.pos:])
        scanner = _HeaderScanner(data, self.response, self.closed)
        try:
            nxt, items, eoh = scanner.headers(0, not self.block_headers)
        except _NeedMore:
            # A blank line that ends the buffered bytes ends the block now: waiting for the CR of a
            # deformed LF-CR / CRLF-CR end (libhtp) would hold every header block that ends a segment.
            # This is the one place where a segment boundary changes the parse.
            if data in (b"\r\n", b"\n") or (self.closed and data):
                self._consume_raw(len(data))
                return True, True
            return self.closed, self.closed
        except _NoMatch:
            lf = data.find(b"\n")
            self.p._anomaly(self.tx, "http.header_unparsable")
            self._consume_raw(lf + 1 if lf >= 0 else len(data))
            return True, False
        assert self.hdrs is not None
        for name, value, colon in items:
            self.hdrs.add(name, value, colon)
        self.block_headers += len(items)
        self._consume_raw(nxt)
        return nxt > 0, eoh

    def _consume_raw(self, n: int) -> None:
        if len(self.raw) < MAX_RAW_HEADERS:
            self.raw += self.buf[self.pos:self.pos + min(n, MAX_RAW_HEADERS - len(self.raw))]
        self.pos += n

    def _open_body(self, state: str, length: int, content_encoding: bytes | None) -> None:
        assert self.tx is not None
        codings, dropped = codings_for(content_encoding, self.p.decompress_layers)
        if dropped:
            self.p._anomaly(self.tx, "http.too_many_encoding_layers")
        body = _Body(self.p, self.tx, self.response, codings)
        if self.body is not None and self.body.tx is self.tx:  # junk before the status line stays body
            body.data, body.wire, body.decoded = self.body.data, self.body.wire, self.body.decoded
            self.p._dirty.pop(id(self.body), None)
            self.p._dirty[id(body)] = body
        self.body = body
        self.state, self.left = state, length

    def _raw_body(self, tx: HttpTransaction, data: bytes) -> None:
        """Body bytes outside the framing (junk after a message, a response without status line)."""
        body = self.body if tx is self.tx else self.last_body
        if body is None or body.tx is not tx:
            body = _Body(self.p, tx, self.response, [])
            if tx is self.tx:
                self.body = body
            else:
                self.last_body = body
        if body.chain is None:
            body.feed(data)

    def _done(self) -> None:
        """The current message is complete."""
        tx = self.tx
        assert tx is not None
        if self.body is not None:
            self.body.end()
            self.p._dirty[id(self.body)] = self.body
        if self.response:
            tx.response_done = True
        else:
            tx.request_done = True
        self._emit("response_done" if self.response else "request_done")
        self.last_tx, self.last_body = tx, self.body
        self.tx = self.body = self.hdrs = None
        self.raw.clear()
        self.state, self.block_headers = AFTER, 0

    # -- bodies ---------------------------------------------------------------------------------
    def _st_body_cl(self) -> bool:
        n = min(self.left, self.avail())
        if n:
            assert self.body is not None
            self.body.feed(self.take(n))
            self.left -= n
        if not self.left:
            self._done()
            return True
        return False

    def _st_chunk_len(self) -> bool:
        while True:
            lf = self.buf.find(b"\n", self.pos)
            if lf < 0:
                head = bytes(self.buf[self.pos:self.pos + 64]).lstrip(b"\r\n \t\x0b\x0c")
                if head and head[0] not in _HEXDIGITS:
                    return self._chunks_invalid()
                return False
            line = bytes(self.buf[self.pos:lf + 1])
            if not line.strip(b"\r\n \t\x0b\x0c"):
                self.pos = lf + 1
                continue
            n = parse_chunk_length(line)
            if n is None:
                return self._chunks_invalid()
            self.pos = lf + 1
            if n > 0:
                self.state, self.left = CHUNK_DATA, n
                return True
            if n == 0:
                self.state, self.block_headers = TRAILERS, 0
                return True
            self.p._anomaly(self.tx, "http.chunk_length_ignored")

    def _chunks_invalid(self) -> bool:
        """libhtp: a bad chunk length turns the rest of the stream into an identity body."""
        self.p._anomaly(self.tx, "http.invalid_chunk_length")
        self.state = BODY_CLOSE
        return True

    def _st_chunk_data(self) -> bool:
        n = min(self.left, self.avail())
        if not n:
            return False
        assert self.body is not None
        self.body.feed(self.take(n))
        self.left -= n
        if not self.left:
            self.state = CHUNK_END
        return True

    def _st_chunk_end(self) -> bool:
        """Skip to the end of the line after chunk data (libhtp ignores what is there)."""
        lf = self.buf.find(b"\n", self.pos)
        end = lf if lf >= 0 else len(self.buf)
        if not self.junk_noted and self.buf[self.pos:end].strip(b"\r"):
            self.junk_noted = True
            self.p._anomaly(self.tx, "http.chunk_trailing_junk")
        if lf < 0:
            self.pos = end
            return False
        self.pos = lf + 1
        self.state, self.junk_noted = CHUNK_LEN, False
        return True

    def _st_body_close(self) -> bool:
        if not self.avail():
            return False
        assert self.body is not None
        self.body.feed(self.take(self.avail()))
        return False

    def _st_trailers(self) -> bool:
        if not self.avail() and not self.closed:
            return False
        progress, eoh = self._parse_headers()
        if eoh:
            self._done()
            return True
        return progress

    def _to_junk(self) -> bool:
        """Leave AFTER for JUNK: the next line does not start a message."""
        tx = self.last_tx
        if tx is not None:
            self.p._anomaly(tx, f"http.{'response' if self.response else 'request'}_body_unexpected")
            if self.last_body is not None and self.last_body.chain is not None:
                self.p._anomaly(tx, "http.body_after_decoding_ended")  # libhtp gives up here; we drop the line
        self.state = JUNK
        return True

    def _st_junk(self) -> bool:
        """Bytes after a complete message that do not start a new one: body of that message."""
        lf = self.buf.find(b"\n", self.pos)
        n = lf + 1 - self.pos if lf >= 0 else self.avail()
        if not n:
            return False
        if self.last_tx is not None:
            self._raw_body(self.last_tx, self.take(n))
        else:
            self.pos += n
        if lf >= 0:
            self.state = AFTER
        return True

    def _st_sync(self) -> bool:
        """After a gap in a framing part: skip to a line that starts a message."""
        start, anywhere = (_START_RESPONSE, _NEXT_RESPONSE) if self.response else (_START_REQUEST, _NEXT_REQUEST)
        if self.sync_start:  # the bytes right after the gap may begin a message
            if self.avail() < 16 and not self.closed:
                return False
            self.sync_start = False
            if start.match(self.buf, self.pos):
                self.state = IDLE
                return True
        m = anywhere.search(self.buf, self.pos)
        if m is None:
            self.pos = max(self.pos, len(self.buf) - 24)
            return False
        self.pos = m.start() + 1
        self.state = IDLE
        return True

    def _st_wait(self) -> bool:
        return False

    # -- gaps and close -------------------------------------------------------------------------
    def gap(self, length: int) -> None:
        if self.state in (TUNNEL, IGNORE) or length <= 0:
            return
        self.p._anomaly(self.tx or self.last_tx, "http.gap")
        if self.state == BODY_CL and self.body is not None:
            n = min(self.left, length)
            self.left -= n
            self.body.gap()
            if not self.left:
                self._done()
            if n == length:
                return
        elif self.state == CHUNK_DATA and self.body is not None and length <= self.left:
            self.left -= length
            self.body.gap()
            if not self.left:
                self.state = CHUNK_END
            return
        elif self.state == BODY_CLOSE and self.body is not None:
            self.body.gap()
            return
        if self.tx is not None:
            self._done()
        del self.buf[:]
        self.pos = 0
        self.skip_to_lf = False
        self.state, self.sync_start = SYNC, True

    def close(self) -> None:
        if self.state in (TUNNEL, IGNORE):
            return
        self.closed = True
        self.run()
        if self.tx is not None:
            self._close_message()

    def _close_message(self) -> None:
        self._done()


class _RequestStream(_Stream):
    """Client to server: request lines, headers and bodies."""

    response = False

    def __init__(self, parser: HttpParser) -> None:
        super().__init__(parser)
        self.handlers.update({
            IDLE: self._st_idle, LINE: self._st_line, PROTOCOL: self._st_protocol, HEADERS: self._st_headers,
            AFTER: self._st_after, CONNECT_PROBE: self._st_connect_probe,
        })

    def _st_idle(self) -> bool:
        buf, pos, end = self.buf, self.pos, len(self.buf)
        while pos < end and buf[pos] in _SP:
            pos += 1
        self.pos = pos
        if pos == end:
            return False
        tx = self.p._request_tx()
        if tx is None:
            self.state = IGNORE
            return False
        self.tx = tx
        self.hdrs = _HeaderList(self.p, tx, False)
        self.state = LINE
        return True

    def _st_line(self) -> bool:
        lf = self.buf.find(b"\n", self.pos)
        if lf < 0:
            if not (self.closed and self.avail()):
                return False
            lf = len(self.buf) - 1
        line = self.take(lf + 1 - self.pos)
        tx = self.tx
        assert tx is not None
        method, uri, protocol, lead = split_request_line(line)
        if lead:
            self.p._anomaly(tx, "http.request_line_leading_whitespace")
        tx.request_line = line.rstrip(b"\r\n")
        tx.method, tx.uri_raw, tx.protocol = method, uri, protocol
        if method == b"CONNECT":
            tx.uri, tx.host_raw = uri, uri
            tx.host = host_from_header(uri)
        else:
            tx.uri, host = normalize_uri(uri)
            if host:
                tx.host, tx.host_raw = host, split_uri(uri)[0]
        if method not in METHODS:
            self.p._anomaly(tx, "http.request_unknown_method")
        if protocol and not protocol_ok(protocol):
            self.p._anomaly(tx, "http.request_invalid_protocol")
        self.state = HEADERS if protocol else PROTOCOL
        return True

    def _st_protocol(self) -> bool:
        """A request line without protocol: HTTP/0.9 unless header lines follow."""
        buf, pos, end = self.buf, self.pos, len(self.buf)
        j = pos
        while j < end and buf[j] in _SP and j - pos <= HTTP09_MAX_JUNK:
            j += 1
        if j < end:
            self.p._anomaly(self.tx, "http.request_line_no_protocol")
            self.state = HEADERS
            return True
        if self.closed:
            self.decide_09()
            return True
        return False

    def decide_09(self) -> None:
        """No headers came before the response (or the end): a genuine HTTP/0.9 request."""
        if self.state != PROTOCOL or self.tx is None:
            return
        tx = self.tx
        self.p._is09.add(tx.tx_id)
        tx.request_headers_done = True
        self._emit("request_headers")
        self._done()
        self.state = IGNORE
        del self.buf[:]
        self.pos = 0

    def _st_headers(self) -> bool:
        if not self.avail() and not self.closed:
            return False
        progress, eoh = self._parse_headers()
        if eoh:
            self._headers_done()
            return True
        return progress

    def _headers_done(self) -> None:
        tx = self.tx
        assert tx is not None and self.hdrs is not None
        tx.request_headers_done = True
        tx.request_headers_raw = bytes(self.raw)
        self.raw.clear()
        headers = tx.request_headers
        host = header_value(headers, b"host")
        if host is not None and not tx.host:
            tx.host, tx.host_raw = host_from_header(host), host
        elif host is not None and host_from_header(host) != tx.host:
            self.p._anomaly(tx, "http.host_ambiguous")
        tx.user_agent = header_value(headers, b"user-agent") or b""
        tx.cookie = header_value(headers, b"cookie") or b""
        ct = header_value(headers, b"content-type")
        tx.request_content_type = content_type(ct) if ct is not None else b""
        self._emit("request_headers")
        if tx.method == b"CONNECT":
            self._done()
            self.state = CONNECT_WAIT
            return
        self._request_body(headers)

    def _request_body(self, headers: list[tuple[bytes, bytes]]) -> None:
        tx = self.tx
        assert tx is not None and self.hdrs is not None
        te, cl = header_value(headers, b"transfer-encoding"), header_value(headers, b"content-length")
        ce = header_value(headers, b"content-encoding")
        if te is not None and b"chunked" in _nozero_lower(te):
            if not protocol_at_least_11(tx.protocol):
                self.p._anomaly(tx, "http.request_chunked_old_protocol")
            if cl is not None:
                self.p._anomaly(tx, "http.request_smuggling")
            self._open_body(CHUNK_LEN, 0, ce)
            return
        if te is not None:
            self.p._anomaly(tx, "http.request_invalid_transfer_encoding")
        if cl is not None:
            n = parse_content_length(cl)
            if "cl_repeated" in self.hdrs.flags:
                self.p._anomaly(tx, "http.request_smuggling")
            if n is None:
                self.p._anomaly(tx, "http.request_invalid_content_length")
            elif n > 0:
                self._open_body(BODY_CL, n, ce)
                return
        self._done()

    def _st_after(self) -> bool:
        """After a complete request: a new request, or junk that belongs to the last body."""
        buf, pos, end = self.buf, self.pos, len(self.buf)
        while pos < end and buf[pos] in _SP:
            pos += 1
        self.pos = pos
        if pos == end:
            return False
        lf = buf.find(b"\n", pos)
        head = bytes(buf[pos:lf + 1 if lf >= 0 else end])
        token = head.split(None, 1)[0] if head.split(None, 1) else b""
        complete = lf >= 0 or self.closed or len(token) < len(head.rstrip(b"\x00"))
        if token in METHODS and complete:
            self.state = IDLE
            return True
        if lf < 0 and not self.closed:
            return False
        if _REQUEST_LINE_LIKE.match(head):
            self.state = IDLE
            return True
        return self._to_junk()

    def expectation_failed(self, tx: HttpTransaction) -> None:
        """A 4xx answer to ``Expect: 100-continue`` before any body: the client will not send it."""
        if self.tx is not tx or self.state != BODY_CL or self.body is None or self.body.wire:
            return
        expect = header_value(tx.request_headers, b"expect")
        if expect is not None and expect.lower() == b"100-continue":
            self._done()

    def connect_answered(self, tx: HttpTransaction, established: bool) -> None:
        if self.state != CONNECT_WAIT or self.last_tx is not tx:
            return
        self.state = CONNECT_PROBE if established else AFTER

    def _st_connect_probe(self) -> bool:
        """After an accepted CONNECT: plain HTTP continues to be parsed, anything else is a tunnel."""
        if not self.avail():
            return False
        head = bytes(self.buf[self.pos:self.pos + 32])
        m = re.match(rb"[A-Z][^\s\x00]*", head)
        if m is None:
            self.p._tunnel()
            return False
        if m.end() == len(head) and len(head) < 32 and not self.closed:
            return False
        if m.group() in METHODS:
            self.state = IDLE
            if self.p._resp.state == CONNECT_WAIT:
                self.p._resp.state = AFTER
            return True
        self.p._tunnel()
        return False

    def _close_message(self) -> None:
        if self.state == PROTOCOL:
            self.decide_09()
            return
        if self.state == HEADERS:
            self._headers_done()
            if self.tx is None:
                return
        self._done()


class _ResponseStream(_Stream):
    """Server to client: status lines, headers and bodies, matched to requests in order."""

    response = True

    def __init__(self, parser: HttpParser) -> None:
        super().__init__(parser)
        self.seen_100: HttpTransaction | None = None
        self.handlers.update(
            {IDLE: self._st_idle, LINE: self._st_line, HEADERS: self._st_headers, AFTER: self._st_after})

    def _st_idle(self) -> bool:
        if not self.avail():
            return False
        tx = self.p._response_tx()
        self.tx = tx
        self.hdrs = _HeaderList(self.p, tx, True)
        if tx.tx_id in self.p._is09:
            tx.response_headers_done = True
            self._emit("response_headers")
            self._open_body(BODY_CLOSE, 0, None)
            return True
        self.state = LINE
        return True

    def _status_line(self) -> bytes | None:
        """The next line ended by CRLF, CR or LF (libhtp's take_till_eol), or None."""
        m = _EOL_RESPONSE.search(self.buf, self.pos)
        if m is None:
            if self.closed and self.avail():
                return self.take(self.avail())
            return None
        e = m.start()
        if self.buf[e] == 0x0D:
            if e + 1 >= len(self.buf) and not self.closed:
                return None
            if self.buf[e + 1:e + 2] == b"\n":
                e += 1
        return self.take(e + 1 - self.pos)

    def _st_line(self) -> bool:
        start = self.pos
        line = self._status_line()
        if line is None:
            return self._line_overflow()
        tx = self.tx
        assert tx is not None
        if line in (b"\r\n", b"\n", b"\r"):
            return True
        if not looks_like_status_line(line):
            nxt = bytes(self.buf[self.pos:self.pos + 2])
            if len(nxt) < 2 and not self.closed:
                self.pos = start
                return False
            if len(nxt) >= 2 and (nxt[:1] == b"H" or len(line.rstrip(b"\r\n")) <= 2):
                self.p._anomaly(tx, "http.response_line_ignored")
                return True
            self.p._anomaly(tx, "http.response_without_status_line")
            self._raw_body(tx, line)
            return True
        fill_status_line(tx, line)
        if not protocol_ok(tx.response_protocol):
            self.p._anomaly(tx, "http.response_invalid_protocol")
        if parse_status(tx.status_code) is None:
            self.p._anomaly(tx, "http.response_invalid_status")
        self.state = HEADERS
        return True

    def _line_overflow(self) -> bool:
        """An overlong line that is no status line is body: the rest of the stream is too."""
        if self.avail() <= self.p.max_header_line or looks_like_status_line(bytes(self.buf[self.pos:self.pos + 64])):
            return False
        assert self.tx is not None
        self.p._anomaly(self.tx, "http.response_without_status_line")
        self._open_body(BODY_CLOSE, 0, None)
        return True

    def _st_headers(self) -> bool:
        if not self.avail() and not self.closed:
            return False
        progress, eoh = self._parse_headers()
        if eoh:
            self._headers_done()
            return True
        return progress

    def _headers_done(self) -> None:
        tx = self.tx
        assert tx is not None
        tx.response_headers_raw = bytes(self.raw)
        self.raw.clear()
        headers = tx.response_headers
        code = parse_status(tx.status_code)
        cl, te = header_value(headers, b"content-length"), header_value(headers, b"transfer-encoding")
        if code == 100 and te is None and not (cl is not None and (parse_content_length(cl) or 0) > 0):
            self._continue_100(tx)
            return
        tx.response_headers_done = True
        ct = header_value(headers, b"content-type")
        tx.response_content_type = content_type(ct) if ct is not None else b""
        self._emit("response_headers")
        if self._switches(tx, code, cl, te):
            return
        if code is not None and 400 <= code <= 499:
            self.p._req.expectation_failed(tx)
        if tx.method == b"HEAD" or (
                code is not None and (code < 200 or code in (204, 304)) and te is None and cl is None):
            self._done()
            return
        self._response_body(tx, cl, te, header_value(headers, b"content-encoding"))

    def _continue_100(self, tx: HttpTransaction) -> None:
        """An interim 100 Continue: forget it and read the real status line for the same request."""
        if self.seen_100 is tx:
            self.p._anomaly(tx, "http.continue_already_seen")
        self.seen_100 = tx
        tx.response_headers.clear()
        tx.status_line = tx.status_code = tx.status_msg = tx.response_protocol = b""
        self.hdrs = _HeaderList(self.p, tx, True)
        self.state, self.block_headers = LINE, 0

    def _switches(self, tx: HttpTransaction, code: int | None, cl: bytes | None, te: bytes | None) -> bool:
        """CONNECT answers and 101 Switching Protocols; True when the response is over."""
        if tx.method == b"CONNECT":
            established = code is not None and 200 <= code <= 299
            self.p._req.connect_answered(tx, established)
            if established:
                self._done()
                self.state = CONNECT_WAIT
                return True
            return False
        if code == 101:
            if te is None and cl is None:
                self._done()
                self.p._tunnel()
                return True
            self.p._anomaly(tx, "http.switching_protocols_with_body")
        return False

    def _response_body(self, tx: HttpTransaction, cl: bytes | None, te: bytes | None, ce: bytes | None) -> None:
        if te is not None and b"chunked" in _nozero_lower(te):
            if _nozero_lower(te) != b"chunked":
                self.p._anomaly(tx, "http.response_abnormal_transfer_encoding")
            if cl is not None:
                self.p._anomaly(tx, "http.response_smuggling")
            if not protocol_at_least_11(tx.response_protocol):
                self.p._anomaly(tx, "http.response_chunked_old_protocol")
            self._open_body(CHUNK_LEN, 0, ce)
            return
        if cl is not None:
            n = parse_content_length(cl)
            if n is None:
                self.p._anomaly(tx, "http.response_invalid_content_length")
            elif n == 0:
                self._done()
                return
            else:
                self._open_body(BODY_CL, n, ce)
                return
        self._open_body(BODY_CLOSE, 0, ce)

    def _st_after(self) -> bool:
        """After a complete response: a new status line, or junk that browsers add to the last body."""
        buf, pos, end = self.buf, self.pos, len(self.buf)
        while pos < end and buf[pos] in _SP_NUL:
            pos += 1
        self.pos = pos
        if pos == end:
            return False
        head = bytes(buf[pos:pos + 4]).lower()
        if len(head) < 4 and b"http".startswith(head) and not self.closed:
            return False
        if head == b"http":
            self.state = IDLE
            return True
        return self._to_junk()

    def _close_message(self) -> None:
        if self.state == HEADERS:
            self._headers_done()
            if self.tx is None:
                return
        self._done()


def split_request_line(line: bytes) -> tuple[bytes, bytes, bytes, bool]:
    """(method, uri, protocol, leading whitespace) as libhtp's generic request line parser."""
    data = line.rstrip(b"\r\n")
    stripped = data.lstrip(b" \t\r\n\x0b\x0c")
    lead = len(stripped) != len(data)
    m = re.match(rb"[^ \t\r\n\x0b\x0c]*", stripped)
    method = m.group() if m else b""
    rest = stripped[len(method):].strip(b" \t\r\n\x0b\x0c")
    if not rest:
        return method, b"", b"", lead
    last = re.search(rb"[ \t\x0b\x0c]+(\S+)$", rest)
    if last is not None and last.group(1)[:5].upper() == b"HTTP/":
        # Suricata runs libhtp with allow_space_uri: the URI runs up to the protocol.
        return method, _trim(rest[: last.start()]), _trim(last.group(1)), lead
    uri, _, protocol = rest.partition(b" ")
    if len(uri) == len(rest) and any(c in _SP for c in uri):
        parts = re.split(rb"[ \t\r\n\x0b\x0c]", rest, maxsplit=1)
        uri, protocol = parts[0], parts[1] if len(parts) > 1 else b""
    return method, _trim(uri), _trim(protocol), lead


def fill_status_line(tx: HttpTransaction, line: bytes) -> None:
    """Status line fields as libhtp splits them: protocol, status code and message."""
    m = _STATUS_LINE.match(line)
    assert m is not None  # every part may be empty
    tx.status_line = line.rstrip(b"\r\n")
    protocol, ws1, status, ws2 = m.groups()
    tx.response_protocol = protocol
    tx.status_code = status if ws1 and protocol else b""
    tx.status_msg = line[m.end():].rstrip(b"\r\n") if ws2 and tx.status_code else b""


# -- the parser ------------------------------------------------------------------------------------

class HttpParser:
    """HTTP/1.x parser for one TCP flow, fed the in-order stream bytes of both directions.

    Reads like libhtp (Suricata's HTTP parser) in the IDS personality, lenient like a browser:
    LF-only and CR-only line ends, folded and malformed header lines, NULs, Content-Length and
    Transfer-Encoding conflicts (chunked wins), odd chunk lengths (a bad one makes the rest of the
    stream identity body), bodies delimited by close, 1xx interim responses, HEAD/204/304,
    CONNECT and 101 tunnels, pipelining (responses matched to requests in order), responses
    without status line (HTTP/0.9 style), junk after a complete message (appended to its body, as
    browsers do) and Content-Encoding layers (gzip/x-gzip, deflate as raw or zlib, lzma) decoded
    with libhtp's recovery (gzip header flags honoured, checksums ignored, a failing decoder is
    retried as the next format, then the bytes pass through raw; truncated streams keep what
    decoded).

    Limits are strict and counted in ``counters`` (and per transaction in ``anomalies``): body
    bytes kept per direction (0 = unlimited), decoding layers, decompressed size and ratio, line
    length, header count and transactions kept. Nothing raises: an internal error is counted
    (``http.parser_error``) and parsing stops for the flow.

    Events: ``request_headers``/``response_headers`` once the line and headers are in,
    ``*_body`` whenever body bytes were added (at most once in a row per feed), ``*_done`` when the
    message is complete. Junk after a complete message can still add body (with an anomaly).
    ``gap`` reports missing stream bytes; its events come with the next ``feed`` or ``close``.
    """

    def __init__(
        self,
        *,
        request_body_limit: int = DEFAULT_BODY_LIMIT,
        response_body_limit: int = DEFAULT_BODY_LIMIT,
        decompress_layers: int = DEFAULT_DECOMPRESS_LAYERS,
        max_decompressed: int = DEFAULT_MAX_DECOMPRESSED,
        decompress_ratio: int = DEFAULT_DECOMPRESS_RATIO,
        max_header_line: int = DEFAULT_MAX_HEADER_LINE,
        max_headers: int = DEFAULT_MAX_HEADERS,
        max_transactions: int = DEFAULT_MAX_TRANSACTIONS,
    ) -> None:
        for name, value in (("request_body_limit", request_body_limit), ("response_body_limit", response_body_limit),
                            ("decompress_layers", decompress_layers), ("max_decompressed", max_decompressed),
                            ("decompress_ratio", decompress_ratio)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0")
        for name, value in (("max_header_line", max_header_line), ("max_headers", max_headers),
                            ("max_transactions", max_transactions)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1")
        self.request_body_limit = request_body_limit
        self.response_body_limit = response_body_limit
        self.decompress_layers = decompress_layers
        self.max_decompressed = max_decompressed
        self.decompress_ratio = decompress_ratio
        self.max_header_line = max_header_line
        self.max_headers = max_headers
        self.max_transactions = max_transactions
        self.transactions: list[HttpTransaction] = []
        self.counters: dict[str, int] = {}
        self._events: list[HttpEvent] = []
        self._dirty: dict[int, _Body] = {}
        self._awaiting: deque[HttpTransaction] = deque()  # requests whose response has not started
        self._is09: set[int] = set()
        self._next_id = 0
        self._req = _RequestStream(self)
        self._resp = _ResponseStream(self)

    # -- API -------------------------------------------------------------------------------------
    def feed(self, to_server: bool, data: bytes) -> list[HttpEvent]:
        """Parse the next in-order bytes of one direction; returns the events they caused."""
        if data:
            stream, other = (self._req, self._resp) if to_server else (self._resp, self._req)
            self._guarded(stream.push, bytes(data))
            self._guarded(other.run)
        return self._flush()

    def gap(self, to_server: bool, length: int) -> None:
        """``length`` stream bytes of one direction are missing (events come with the next call)."""
        self._guarded((self._req if to_server else self._resp).gap, length)

    def close(self) -> list[HttpEvent]:
        """The flow ended: finish bodies delimited by close, HTTP/0.9 responses and partial messages."""
        self._guarded(self._req.close)
        self._guarded(self._resp.close)
        return self._flush()

    # -- internals -------------------------------------------------------------------------------
    def _guarded(self, fn: Callable[..., None], *args: object) -> None:
        try:
            fn(*args)
        except Exception:  # never out of the packet path: stop parsing this flow
            log.exception("HTTP parser error; flow no longer parsed")
            self._count("http.parser_error")
            for stream in (self._req, self._resp):
                stream.state = IGNORE
                del stream.buf[:]
                stream.pos = 0

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def _anomaly(self, tx: HttpTransaction | None, name: str) -> None:
        self._count(name)
        if tx is not None and name not in tx.anomalies:
            tx.anomalies.append(name)

    def _emit(self, tx: HttpTransaction, stage: str, to_server: bool) -> None:
        events = self._events
        if events and events[-1].tx is tx and events[-1].stage == stage:
            return
        events.append(HttpEvent(tx, stage, to_server))

    def _body_added(self, body: _Body) -> None:
        self._dirty[id(body)] = body
        self._emit(body.tx, "response_body" if body.response else "request_body", not body.response)

    def _flush(self) -> list[HttpEvent]:
        for body in self._dirty.values():
            body.publish()
        self._dirty.clear()
        if len(self.transactions) > self.max_transactions:
            self._prune()
        events, self._events = self._events, []
        return events

    def _prune(self) -> None:
        """Keep at most ``max_transactions``: the oldest complete ones go first."""
        txs = self.transactions
        drop = len(txs) - self.max_transactions
        done = [tx for tx in txs if tx.request_done and tx.response_done][:drop]
        if done:
            gone = {id(tx) for tx in done}
            self.transactions = [tx for tx in txs if id(tx) not in gone]
            self.counters["http.transactions_pruned"] = self.counters.get("http.transactions_pruned", 0) + len(done)

    def _new_tx(self) -> HttpTransaction:
        tx = HttpTransaction(tx_id=self._next_id)
        self._next_id += 1
        self.transactions.append(tx)
        return tx

    def _request_tx(self) -> HttpTransaction | None:
        if len(self._awaiting) >= 2 * self.max_transactions:
            self._anomaly(None, "http.too_many_transactions")
            return None
        tx = self._new_tx()
        self._awaiting.append(tx)
        return tx

    def _response_tx(self) -> HttpTransaction:
        self._req.decide_09()
        if not self._awaiting and self._req.avail():
            self._req.run()  # a request may be waiting in the buffer (after CONNECT, say): match it first
        if self._awaiting:
            return self._awaiting.popleft()
        tx = self._new_tx()
        tx.request_done = True
        self._anomaly(tx, "http.response_without_request")
        return tx

    def _tunnel(self) -> None:
        """CONNECT or 101: the rest of both directions is not HTTP."""
        self._count("http.tunnel")
        for stream in (self._req, self._resp):
            stream.state = TUNNEL
            del stream.buf[:]
            stream.pos = 0
