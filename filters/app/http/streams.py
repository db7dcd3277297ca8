"""HTTP message streams: the per-direction state machine (request line or status line, headers,
bodies by length, chunks or close, tunnels, junk and resynchronisation) that fills transactions."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Callable

from filters.app.http.body import Body
from filters.app.http.chars import EOL_RESPONSE, HEXDIGITS, METHODS, SP, SP_NUL
from filters.app.http.decoding import codings_for
from filters.app.http.headers import (
    HeaderList, HeaderScanner, NeedMore, NoMatch, header_map, header_value, plain_headers, trim,
)
from filters.app.http.uri import content_type, host_from_header, normalize_uri, split_uri
from filters.app.http.values import (
    looks_like_status_line,
    nozero_lower,
    parse_chunk_length,
    parse_content_length,
    parse_status,
    protocol_at_least_11,
    protocol_ok,
)

if TYPE_CHECKING:  # pragma: no cover
    from filters.app.events import HttpTransaction
    from filters.app.http.parser import HttpParser

MAX_RAW_HEADERS = 64 * 1024  # request_headers_raw / response_headers_raw cap
HTTP09_MAX_JUNK = 16  # whitespace after a protocol-less request line that still means HTTP/0.9
_STATUS_LINE = re.compile(  # [space/NUL] protocol [space] status [ascii whitespace] message
    rb"[ \t\r\n\x0b\x0c\x00]*([^ \t\r\n\x0b\x0c]*)([ \t\r\n\x0b\x0c]*)([^ \t\r\n\x0b\x0c]*)([ \t\n\x0c\r]*)")

# Parser states (one per direction).
IDLE, LINE, PROTOCOL, HEADERS, TRAILERS = "idle", "line", "protocol", "headers", "trailers"
BODY_CL, CHUNK_LEN, CHUNK_DATA, CHUNK_END, BODY_CLOSE = "body_cl", "chunk_len", "chunk_data", "chunk_end", "body_close"
AFTER, JUNK, CONNECT_WAIT, CONNECT_PROBE, IGNORE, TUNNEL, SYNC = (
    "after", "junk", "connect_wait", "connect_probe", "ignore", "tunnel", "sync")
UPGRADE_WAIT = "upgrade_wait"  # after a request asking for h2c: the next bytes may be HTTP/2 (see RequestStream._done)
_DIRECT_STATES = frozenset({BODY_CL, CHUNK_DATA, BODY_CLOSE})  # body bytes that need no buffering
_FRAMED_BODY_STATES = frozenset({BODY_CL, CHUNK_LEN, CHUNK_DATA, CHUNK_END})  # inside a body that has an end

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
        self.body: Body | None = None
        self.hdrs: HeaderList | None = None
        self.raw = bytearray()  # the header block as received
        self.left = 0  # bytes left in a Content-Length body or in the current chunk
        self.last_tx: HttpTransaction | None = None  # the message that completed last (junk after it)
        self.last_body: Body | None = None
        self.closed = False
        self.skip_to_lf = False  # an overlong line was cut: drop bytes up to its line end
        self.sync_start = False
        self.junk_noted = False
        self.block_headers = 0  # headers parsed so far in the current header or trailer block

    # Each state's handler by method name; ``handlers`` maps states to the class's functions, built
    # once per class (not per stream: a connection makes two streams).
    _STATE_METHODS = {
        BODY_CL: "_st_body_cl", CHUNK_LEN: "_st_chunk_len", CHUNK_DATA: "_st_chunk_data",
        CHUNK_END: "_st_chunk_end", BODY_CLOSE: "_st_body_close", TRAILERS: "_st_trailers",
        JUNK: "_st_junk", SYNC: "_st_sync", IGNORE: "_st_wait", TUNNEL: "_st_wait",
        CONNECT_WAIT: "_st_wait", UPGRADE_WAIT: "_st_wait",
    }
    handlers: dict[str, Callable[[_Stream], bool]] = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        names: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            names.update(klass.__dict__.get("_STATE_METHODS", {}))
        cls.handlers = {state: getattr(cls, name) for state, name in names.items()}

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
                m = EOL_RESPONSE.search(data)
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
        buf, handlers = self.buf, self.handlers  # the buffer is only ever changed in place
        budget = 4 * (len(buf) - self.pos) + 64  # every step consumes bytes or changes state; this only guards bugs
        cap = self.p.max_header_line
        while budget > 0:
            budget -= 1
            if len(buf) - self.pos > cap and self.state in _LINE_STATES:
                self._cut_complete_lines(cap)  # (may change the state)
            if not handlers[self.state](self):
                # (_cut_long_line's own first test, without the call for the common short buffer)
                if len(buf) - self.pos <= cap or not self._cut_long_line():
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
            m = EOL_RESPONSE.search(buf, line)
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
        assert self.hdrs is not None
        plain = plain_headers(data)
        if plain is not None:
            nxt, pairs = plain
            self.hdrs.add_plain(pairs)
            self.block_headers += len(pairs)
            self._consume_raw(nxt)
            return True, True
        scanner = HeaderScanner(data, self.response, self.closed)
        try:
            nxt, items, eoh = scanner.headers(0, not self.block_headers)
        except NeedMore:
            # A blank line that ends the buffered bytes ends the block now: waiting for the CR of a
            # deformed LF-CR / CRLF-CR end (libhtp) would hold every header block that ends a segment.
            # This is the one place where a segment boundary changes the parse.
            if data in (b"\r\n", b"\n") or (self.closed and data):
                self._consume_raw(len(data))
                return True, True
            return self.closed, self.closed
        except NoMatch:
            lf = data.find(b"\n")
            self.p._anomaly(self.tx, "http.header_unparsable")
            self._consume_raw(lf + 1 if lf >= 0 else len(data))
            return True, False
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
        body = Body(self.p, self.tx, self.response, codings)
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
            body = Body(self.p, tx, self.response, [])
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
            self.body.complete = True  # inspected once this flush's events are handed out: then released
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
                if head and head[0] not in HEXDIGITS:
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

    def _st_headers(self) -> bool:
        return self._header_block(self._headers_done)

    def _headers_done(self) -> None:  # the request's / the response's
        raise NotImplementedError

    def _st_trailers(self) -> bool:
        return self._header_block(self._done)

    def _header_block(self, end: Callable[[], None]) -> bool:
        """Header lines (or trailers) until the empty line; then ``end``."""
        if not self.avail() and not self.closed:
            return False
        progress, eoh = self._parse_headers()
        if eoh:
            end()
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
            if self.body is not None and self.state in _FRAMED_BODY_STATES:
                self.body.lost()  # the body's length or last chunk said more was coming
            self._close_message()

    def _close_message(self) -> None:
        self._done()


class RequestStream(_Stream):
    """Client to server: request lines, headers and bodies."""

    response = False

    _STATE_METHODS = {
        IDLE: "_st_idle", LINE: "_st_line", PROTOCOL: "_st_protocol", HEADERS: "_st_headers",
        AFTER: "_st_after", CONNECT_PROBE: "_st_connect_probe",
    }

    def _done(self) -> None:
        tx = self.tx
        super()._done()
        if tx is not None and b"h2c" in (header_value(tx.request_headers, b"upgrade") or b"").lower():
            # Upgrade: h2c asked: what the client sends next is HTTP/2 if the answer is 101 (a
            # client may send its preface and frames before the answer, as h2c servers read them
            # after the switch), HTTP/1 otherwise. Kept unparsed until the answer says which.
            self.state = UPGRADE_WAIT

    def upgrade_answered(self, tx: HttpTransaction) -> None:
        """The answer to an ``Upgrade: h2c`` request did not switch: parse what came after it as HTTP/1."""
        if self.state == UPGRADE_WAIT and self.last_tx is tx:
            self.state = AFTER

    def close(self) -> None:
        if self.state == UPGRADE_WAIT:
            self.state = AFTER
        super().close()

    def _st_idle(self) -> bool:
        buf, pos, end = self.buf, self.pos, len(self.buf)
        while pos < end and buf[pos] in SP:
            pos += 1
        self.pos = pos
        if pos == end:
            return False
        tx = self.p._request_tx()
        if tx is None:
            self.state = IGNORE
            return False
        self.tx = tx
        self.hdrs = HeaderList(self.p, tx, False)
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
        self.p._charge(tx, 3 * len(line))  # request_line, uri_raw and the normalized uri
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
        while j < end and buf[j] in SP and j - pos <= HTTP09_MAX_JUNK:
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

    def _headers_done(self) -> None:
        tx = self.tx
        assert tx is not None and self.hdrs is not None
        tx.request_headers_done = True
        tx.request_headers_raw = bytes(self.raw)
        self.p._charge(tx, len(self.raw))
        self.raw.clear()
        headers = header_map(tx.request_headers)
        host = headers.get(b"host")
        if host is not None and not tx.host:
            tx.host, tx.host_raw = host_from_header(host), host
        elif host is not None and host_from_header(host) != tx.host:
            self.p._anomaly(tx, "http.host_ambiguous")
        tx.user_agent = headers.get(b"user-agent") or b""
        tx.cookie = headers.get(b"cookie") or b""
        ct = headers.get(b"content-type")
        tx.request_content_type = content_type(ct) if ct is not None else b""
        self._emit("request_headers")
        if tx.method == b"CONNECT":
            self._done()
            self.state = CONNECT_WAIT
            return
        self._request_body(headers)

    def _request_body(self, headers: dict[bytes, bytes]) -> None:
        tx = self.tx
        assert tx is not None and self.hdrs is not None
        te, cl = headers.get(b"transfer-encoding"), headers.get(b"content-length")
        ce = headers.get(b"content-encoding")
        if te is not None and b"chunked" in nozero_lower(te):
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
        while pos < end and buf[pos] in SP:
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


class ResponseStream(_Stream):
    """Server to client: status lines, headers and bodies, matched to requests in order."""

    response = True

    _STATE_METHODS = {IDLE: "_st_idle", LINE: "_st_line", HEADERS: "_st_headers", AFTER: "_st_after"}

    def __init__(self, parser: HttpParser) -> None:
        super().__init__(parser)
        self.seen_100: HttpTransaction | None = None

    def _st_idle(self) -> bool:
        if not self.avail():
            return False
        tx = self.p._response_tx()
        self.tx = tx
        self.hdrs = HeaderList(self.p, tx, True)
        if tx.tx_id in self.p._is09:
            tx.response_headers_done = True
            self._emit("response_headers")
            self._open_body(BODY_CLOSE, 0, None)
            return True
        self.state = LINE
        return True

    def _status_line(self) -> bytes | None:
        """The next line ended by CRLF, CR or LF (libhtp's take_till_eol), or None."""
        m = EOL_RESPONSE.search(self.buf, self.pos)
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

    def _headers_done(self) -> None:
        tx = self.tx
        assert tx is not None
        tx.response_headers_raw = bytes(self.raw)
        self.p._charge(tx, len(self.raw))
        self.raw.clear()
        headers = header_map(tx.response_headers)
        code = parse_status(tx.status_code)
        cl, te = headers.get(b"content-length"), headers.get(b"transfer-encoding")
        if code == 100 and te is None and not (cl is not None and (parse_content_length(cl) or 0) > 0):
            self._continue_100(tx)
            return
        tx.response_headers_done = True
        ct = headers.get(b"content-type")
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
        self._response_body(tx, cl, te, headers.get(b"content-encoding"))

    def _continue_100(self, tx: HttpTransaction) -> None:
        """An interim 100 Continue: forget it and read the real status line for the same request."""
        if self.seen_100 is tx:
            self.p._anomaly(tx, "http.continue_already_seen")
        self.seen_100 = tx
        tx.response_headers.clear()
        tx.status_line = tx.status_code = tx.status_msg = tx.response_protocol = b""
        self.hdrs = HeaderList(self.p, tx, True)
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
        self.p._req.upgrade_answered(tx)
        return False

    def _response_body(self, tx: HttpTransaction, cl: bytes | None, te: bytes | None, ce: bytes | None) -> None:
        if te is not None and b"chunked" in nozero_lower(te):
            if nozero_lower(te) != b"chunked":
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

    # Same shape as RequestStream._st_after: kept apart, the two differ in what they skip (NULs too)
    # and in what starts the next message; both run per buffered segment on the packet path.
    def _st_after(self) -> bool:
        """After a complete response: a new status line, or junk that browsers add to the last body."""
        buf, pos, end = self.buf, self.pos, len(self.buf)
        while pos < end and buf[pos] in SP_NUL:
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


# The common request line: method, one space, URI, one space, HTTP/ protocol (no other whitespace),
# which split_request_line_general reads the same way (a test compares them).
_PLAIN_REQUEST_LINE = re.compile(
    rb"([^ \t\r\n\x0b\x0c]+) ([^ \t\r\n\x0b\x0c]+) ([Hh][Tt][Tt][Pp]/[^ \t\r\n\x0b\x0c]*)[\r\n]*")


def split_request_line(line: bytes) -> tuple[bytes, bytes, bytes, bool]:
    """(method, uri, protocol, leading whitespace) as libhtp's generic request line parser."""
    m = _PLAIN_REQUEST_LINE.fullmatch(line)
    if m is not None:
        return m[1], m[2], m[3], False
    return split_request_line_general(line)


def split_request_line_general(line: bytes) -> tuple[bytes, bytes, bytes, bool]:
    """``split_request_line`` for any line: odd whitespace, no protocol, spaces in the URI."""
    data = line.rstrip(b"\r\n")
    stripped = data.lstrip(b" \t\r\n\x0b\x0c")
    lead = len(stripped) != len(data)
    m = re.match(rb"[^ \t\r\n\x0b\x0c]*", stripped)
    method = m.group() if m else b""
    rest = stripped[len(method):].strip(b" \t\r\n\x0b\x0c")
    if not rest:
        return method, b"", b"", lead
    last = _last_token(rest)
    if last is not None and last[1][:5].upper() == b"HTTP/":
        # Suricata runs libhtp with allow_space_uri: the URI runs up to the protocol.
        return method, trim(rest[: last[0]]), trim(last[1]), lead
    uri, _, protocol = rest.partition(b" ")
    if len(uri) == len(rest) and any(c in SP for c in uri):
        parts = re.split(rb"[ \t\r\n\x0b\x0c]", rest, maxsplit=1)
        uri, protocol = parts[0], parts[1] if len(parts) > 1 else b""
    return method, trim(uri), trim(protocol), lead


def _last_token(rest: bytes) -> tuple[int, bytes] | None:
    """What ``re.search(rb"[ \\t\\x0b\\x0c]+(\\S+)$", rest)`` finds, as (start of the blank run, the
    token), in linear time: that search backtracks quadratically on a long run of blanks."""
    start = max(rest.rfind(c) for c in (b" ", b"\t", b"\r", b"\n", b"\x0b", b"\x0c")) + 1
    if start == 0 or start == len(rest) or rest[start - 1] not in b" \t\x0b\x0c":
        return None
    return len(rest[:start].rstrip(b" \t\x0b\x0c")), rest[start:]


def fill_status_line(tx: HttpTransaction, line: bytes) -> None:
    """Status line fields as libhtp splits them: protocol, status code and message."""
    m = _STATUS_LINE.match(line)
    assert m is not None  # every part may be empty
    tx.status_line = line.rstrip(b"\r\n")
    protocol, ws1, status, ws2 = m.groups()
    tx.response_protocol = protocol
    tx.status_code = status if ws1 and protocol else b""
    tx.status_msg = line[m.end():].rstrip(b"\r\n") if ws2 and tx.status_code else b""
