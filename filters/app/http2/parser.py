"""The HTTP/2 parser of one TCP flow (cleartext h2c): both directions' frames, HPACK, streams as
HTTP transactions, limits and events.

Anomalies (in the transaction concerned, else in ``Http2Parser.anomalies``; all in ``counters``).
Suricata's HTTP/2 app-layer event names:

* ``http2.invalid_client_magic``: the client did not start with the connection preface;
* ``http2.invalid_frame_header``: a frame on the wrong stream (SETTINGS/PING/GOAWAY off stream 0,
  HEADERS/PRIORITY/RST_STREAM on it, a client PUSH_PROMISE, an even client stream), a header block
  interrupted by another frame, a CONTINUATION without its HEADERS;
* ``http2.invalid_frame_length``: a payload length its type forbids (PING not 8, SETTINGS not a
  multiple of 6, ...), or shorter than its padding/priority fields;
* ``http2.invalid_frame_data``: padding longer than the frame, a bad SETTINGS value, a stream
  depending on itself, a bad promised stream;
* ``http2.invalid_header``: HPACK errors (bad index, Huffman, table size update), fields RFC 9113
  8.2/8.3 forbids (uppercase or non-token names, CR/LF/NUL in values, connection-specific fields,
  misplaced/unknown/repeated/missing pseudo-headers, a bad ``:status``), trailers without END_STREAM;
* ``http2.header_integer_overflow``: an HPACK integer too long (the rest of the block is lost);
* ``http2.long_frame_data``: a frame over the receiver's SETTINGS_MAX_FRAME_SIZE (read anyway);
* ``http2.stream_id_reuse``: HEADERS opening a stream id not above the last one, or a header
  block on a stream already half-closed by its sender;
* ``http2.invalid_http1_settings``: ``Upgrade: h2c`` with a missing or bad ``HTTP2-Settings``;
* ``http2.failed_decompression``: a body no content decoder could read (passed on as it came);
* ``http2.too_many_streams``: more open streams than ``max_streams`` (the oldest is closed);
* ``http2.authority_host_mismatch``, ``http2.userinfo_in_uri``: ``:authority`` vs ``Host``, ``user@``;
* ``http2.reassembly_limit_reached``: a header block over ``max_header_block`` bytes or
  ``max_continuations`` CONTINUATION frames (a CONTINUATION flood);
* ``http2.data_stream_zero``: DATA on stream 0.

Ours: ``http2.header_list_too_large`` (fields past ``max_header_list`` not kept),
``http2.data_without_stream`` (DATA on a stream not open for it), ``http2.response_without_request``,
``http2.content_length_mismatch``, ``http2.gap`` (a stream gap outside DATA: the direction is no
longer read), ``http2.parser_error`` (an internal error: parsing stops). Body anomalies are
HTTP/1's (``http.body_limit``, ``http.decompression_bomb``, ``http.body_gap``...).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from filters.app.events import HttpEvent, HttpTransaction
from filters.app.http.body import Body
from filters.app.http.book import TransactionBook, body_memcap_for, check_limits
from filters.app.http.decoding import CodingLayer, codings_for
from filters.app.http.headers import HEADER_OVERHEAD, header_value
from filters.app.http.parser import (
    DEFAULT_BODY_LIMIT,
    DEFAULT_DECOMPRESS_LAYERS,
    DEFAULT_DECOMPRESS_RATIO,
    DEFAULT_MAX_DECOMPRESSED,
    DEFAULT_MAX_TRANSACTIONS,
)
from filters.app.http.uri import content_type, host_from_header, normalize_uri
from filters.app.http.values import parse_content_length, parse_status
from filters.app.http2.frames import (
    ACK,
    CONNECTION_SPECIFIC,
    CONTINUATION,
    DATA,
    DEFAULT_MAX_FRAME_SIZE,
    END_HEADERS,
    END_STREAM,
    FRAME_HEADER,
    GOAWAY,
    HEADERS,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    PUSH_PROMISE,
    REQUEST_PSEUDO,
    RESPONSE_PSEUDO,
    RST_STREAM,
    SETTINGS,
    SETTINGS_HEADER_TABLE_SIZE,
    SETTINGS_MAX_FRAME_SIZE,
    WINDOW_UPDATE,
    fixed_length_ok,
    http1_settings,
    parse_settings,
    settings_problem,
)
from filters.app.http2.hpack import HpackStream

log = logging.getLogger(__name__)

DEFAULT_MAX_STREAMS = 256  # open streams tracked per flow; past it the oldest is closed (http2.too_many_streams)
DEFAULT_MAX_TABLE_SIZE = 65536  # largest HPACK dynamic table a peer may ask for (Suricata's max-table-size)
DEFAULT_MAX_HEADER_LIST = 65536  # decoded header list kept per block (RFC 7541 sizes); the rest is dropped
DEFAULT_MAX_HEADER_BLOCK = 256 * 1024  # wire bytes of one header block (HEADERS + CONTINUATION)
DEFAULT_MAX_CONTINUATIONS = 1024  # CONTINUATION frames in one header block
MAX_CONTROL_FRAME = 16384  # control frame payload buffered (SETTINGS, PING, GOAWAY...); larger ones are skipped
STREAM_OVERHEAD = 256  # bytes an open stream costs beyond its transaction
MAX_ANOMALIES = 32  # connection-level anomaly names kept in ``anomalies``
MAX_RAW_HEADERS = 64 * 1024  # request_headers_raw / response_headers_raw cap (as HTTP/1)

# per-direction frame reader states
S_PREFACE, S_HEADER, S_PREFIX, S_CONTENT, S_PAD, S_SKIP, S_CONTROL, S_LOST = range(8)


@dataclass(slots=True, eq=False)
class _Stream:
    sid: int
    tx: HttpTransaction
    req_body: Body | None = None
    resp_body: Body | None = None
    pushed: bool = False


@dataclass(slots=True, eq=False)
class _Side:
    """One direction's frame reader: the frame in progress, its header block and HPACK context."""

    to_server: bool
    hpack: HpackStream
    state: int = S_HEADER
    buf: bytearray = field(default_factory=bytearray)  # a cut frame header, prefix or preface
    ctrl: bytearray = field(default_factory=bytearray)  # a control frame's payload being gathered
    ftype: int = 0
    flags: int = 0
    sid: int = 0
    length: int = 0
    left: int = 0  # bytes left in the current part (prefix, content, padding, skip, control)
    prefix: int = 0  # pad length byte + priority fields / promised stream id
    pad: int = 0
    promised: int = 0
    max_frame: int = DEFAULT_MAX_FRAME_SIZE  # the receiver's SETTINGS_MAX_FRAME_SIZE
    block_sid: int | None = None  # header block in progress (until END_HEADERS) on this stream
    block_type: int = HEADERS
    block_end_stream: bool = False
    block_promised: int = 0
    block_wire: int = 0
    block_frames: int = 0
    block_limited: bool = False
    block_errors: list[str] = field(default_factory=list)  # anomalies of the block in progress (its tx comes at its end)
    data_stream: _Stream | None = None  # DATA frame in progress: its stream (None: ignored)


class Http2Parser(TransactionBook):
    """Passive HTTP/2 parser for one TCP flow (prior-knowledge h2c, or after ``Upgrade: h2c``).

    Both directions are read as frames (RFC 9113): each has its own HPACK decoding context
    (``filters.app.http2.hpack``). A client stream is one ``HttpTransaction``, filled like an
    HTTP/1 one so the engines see no difference: method, URI (``:path`` normalized as libhtp
    does), host from ``:authority`` (else ``Host``), headers, status, bodies decoded (gzip,
    deflate... as HTTP/1, with the same body limits), ``protocol`` ``b"HTTP/2"``,
    ``request_line`` ``b"GET /path HTTP/2"`` and ``status_line`` ``b"HTTP/2 200"`` as Suricata
    builds them for its ``http.*`` buffers on HTTP/2. Events are HTTP/1's ``HttpEvent`` stages per
    stream: ``request_headers``, ``request_body``, ``request_done`` (END_STREAM), and the same for
    responses. Pseudo-headers are not in the header lists (they are in method/uri/host/status);
    ``*_headers_raw`` has every field as ``name: value`` lines, pseudo-headers included.

    Bounds: frame payloads are streamed (DATA to the body, header block fragments to HPACK), so no
    frame is buffered whole but control frames up to ``MAX_CONTROL_FRAME``; header lists are capped
    (``max_header_list``), and so are HPACK tables (``max_table_size``), header blocks
    (``max_header_block`` bytes, ``max_continuations`` frames), open streams (``max_streams``),
    kept transactions and body bytes (as HTTP/1). Nothing raises: malformed input raises anomalies
    (Suricata's HTTP/2 app-layer event names, ``http2.*``) in the transaction concerned and in
    ``counters``; connection-level ones also in ``anomalies``. An internal error stops parsing
    (``http2.parser_error``).

    Flow control, priorities and stream states beyond open/half-closed are not enforced: an
    observer reads what the peers send, and a receiver that rejects a frame closes the stream or
    connection itself.
    """

    # Same first parameters as HttpParser.__init__: kept as declarations (the engines' settings pass
    # them by keyword); what they set is shared, in TransactionBook._init_book.
    def __init__(
        self,
        *,
        request_body_limit: int = DEFAULT_BODY_LIMIT,
        response_body_limit: int = DEFAULT_BODY_LIMIT,
        decompress_layers: int = DEFAULT_DECOMPRESS_LAYERS,
        max_decompressed: int = DEFAULT_MAX_DECOMPRESSED,
        decompress_ratio: int = DEFAULT_DECOMPRESS_RATIO,
        max_transactions: int = DEFAULT_MAX_TRANSACTIONS,
        max_streams: int = DEFAULT_MAX_STREAMS,
        max_table_size: int = DEFAULT_MAX_TABLE_SIZE,
        max_header_list: int = DEFAULT_MAX_HEADER_LIST,
        max_header_block: int = DEFAULT_MAX_HEADER_BLOCK,
        max_continuations: int = DEFAULT_MAX_CONTINUATIONS,
        body_memcap: int | None = None,
        upgrade: HttpTransaction | None = None,
        first_tx_id: int = 0,
    ) -> None:
        body_memcap = body_memcap_for(request_body_limit, response_body_limit, body_memcap)
        check_limits((("request_body_limit", request_body_limit), ("response_body_limit", response_body_limit),
                      ("decompress_layers", decompress_layers), ("max_decompressed", max_decompressed),
                      ("decompress_ratio", decompress_ratio), ("body_memcap", body_memcap),
                      ("max_table_size", max_table_size)),
                     (("max_transactions", max_transactions), ("max_streams", max_streams),
                      ("max_header_list", max_header_list), ("max_header_block", max_header_block),
                      ("max_continuations", max_continuations)))
        self._init_book(request_body_limit=request_body_limit, response_body_limit=response_body_limit,
                        decompress_layers=decompress_layers, max_decompressed=max_decompressed,
                        decompress_ratio=decompress_ratio, body_memcap=body_memcap,
                        max_transactions=max_transactions, first_tx_id=first_tx_id)
        self.max_streams = max_streams
        self.max_header_block = max_header_block
        self.max_continuations = max_continuations
        self.streams: dict[int, _Stream] = {}  # open streams, oldest first
        self.anomalies: list[str] = []  # connection-level anomaly names (first MAX_ANOMALIES)
        self.tunnel: dict[bool, bytes] | None = None  # never set: HTTP/2 is not left for another protocol
        self._last_client_sid = 0
        self._sides = {
            True: _Side(True, HpackStream(max_table_size, max_header_list), state=S_PREFACE),
            False: _Side(False, HpackStream(max_table_size, max_header_list)),
        }
        self._preface_seen = 0  # bytes of the client preface matched so far
        if upgrade is not None:
            self._guarded(self._upgrade, upgrade)

    # -- API -------------------------------------------------------------------------------------
    def feed(self, to_server: bool, data: bytes) -> list[HttpEvent]:
        """Parse the next in-order bytes of one direction; returns the events they caused."""
        if data:
            self._guarded(self._read, self._sides[to_server], bytes(data))
        return self._flush()

    def gap(self, to_server: bool, length: int) -> None:
        """``length`` bytes of one direction are missing. Inside a DATA payload or padding the body
        is marked incomplete and reading goes on; elsewhere frame boundaries (and HPACK state) are
        lost and the direction is no longer read (``http2.gap``)."""
        self._guarded(self._gap, self._sides[to_server], length)

    def held_bytes(self) -> int:
        """Bytes held: buffered frame bytes, HPACK tables and blocks in progress, transactions'
        headers, open streams, decoded bodies and decoder state."""
        n = self.meta_held + STREAM_OVERHEAD * len(self.streams)
        for side in self._sides.values():
            n += len(side.buf) + len(side.ctrl) + side.hpack.held_bytes()
        for body in self._live.values():
            n += body.held_bytes()
        for st in self.streams.values():
            for body in (st.req_body, st.resp_body):
                if body is not None and id(body) not in self._live:
                    n += body.held_bytes()
        return n

    def close(self) -> list[HttpEvent]:
        """The flow ended: header blocks and streams still open end as they are (bodies incomplete)."""
        self._guarded(self._close)
        return self._flush()

    # -- bookkeeping -----------------------------------------------------------------------------
    def _failed(self) -> None:
        log.exception("HTTP/2 parser error; flow no longer parsed")
        self._conn_anomaly("http2.parser_error")
        for side in self._sides.values():
            side.state = S_LOST
            side.buf = bytearray()
            side.ctrl = bytearray()

    def _anomaly(self, tx: HttpTransaction | None, name: str) -> None:
        TransactionBook._anomaly(self, tx, name)
        if tx is None and name not in self.anomalies and len(self.anomalies) < MAX_ANOMALIES:
            self.anomalies.append(name)

    def _conn_anomaly(self, name: str) -> None:
        self._anomaly(None, name)

    def _stream_anomaly(self, sid: int, name: str) -> None:
        st = self.streams.get(sid)
        self._anomaly(st.tx if st is not None else None, name)

    def _prune(self) -> None:
        """Keep at most ``max_transactions``: the oldest ones whose stream is closed go first."""
        txs = self.transactions
        drop = len(txs) - self.max_transactions
        open_ids = {id(st.tx) for st in self.streams.values()}
        gone = [tx for tx in txs if id(tx) not in open_ids][:drop]
        if gone:
            self._drop_transactions(gone, "http2.transactions_pruned")

    def _new_tx(self) -> HttpTransaction:
        return TransactionBook._new_tx(self, protocol=b"HTTP/2")

    # -- frame reading ---------------------------------------------------------------------------
    def _read(self, side: _Side, data: bytes) -> None:
        if side.state == S_LOST:
            return
        if side.buf:
            data = bytes(side.buf) + data
            side.buf = bytearray()
        pos, end = 0, len(data)
        while pos < end and side.state != S_LOST:
            state = side.state
            if state == S_CONTENT:
                n = min(side.left, end - pos)
                chunk = data[pos:pos + n]
                pos += n
                side.left -= n
                self._content(side, chunk)
                if not side.left:
                    self._content_end(side)
            elif state == S_HEADER:
                if end - pos < FRAME_HEADER:
                    break
                self._frame_start(side, data[pos:pos + FRAME_HEADER])
                pos += FRAME_HEADER
            elif state in (S_PAD, S_SKIP):
                n = min(side.left, end - pos)
                pos += n
                side.left -= n
                if not side.left:
                    side.state = S_HEADER
            elif state == S_PREFIX:
                if end - pos < side.prefix:
                    break
                self._prefix(side, data[pos:pos + side.prefix])
                pos += side.prefix
            elif state == S_CONTROL:
                n = min(side.left, end - pos)
                side.ctrl += data[pos:pos + n]
                pos += n
                side.left -= n
                if not side.left:
                    payload, side.ctrl = bytes(side.ctrl), bytearray()
                    side.state = S_HEADER
                    self._control(side, payload)
            elif state == S_PREFACE:
                n = min(len(PREFACE) - self._preface_seen, end - pos)
                if data[pos:pos + n] != PREFACE[self._preface_seen:self._preface_seen + n]:
                    self._conn_anomaly("http2.invalid_client_magic")
                    side.state = S_LOST
                    break
                pos += n
                self._preface_seen += n
                if self._preface_seen == len(PREFACE):
                    side.state = S_HEADER
        if pos < end and side.state in (S_HEADER, S_PREFIX):
            side.buf = bytearray(data[pos:])

    def _frame_start(self, side: _Side, head: bytes) -> None:
        length = int.from_bytes(head[:3], "big")
        ftype, flags = head[3], head[4]
        sid = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        side.ftype, side.flags, side.sid, side.length = ftype, flags, sid, length
        side.pad = side.promised = 0
        self._count("http2.frames")
        if length > side.max_frame:
            self._stream_anomaly(sid, "http2.long_frame_data")
        if side.block_sid is not None and ftype != CONTINUATION:
            # a header block must be followed by its CONTINUATION frames and nothing else
            side.block_errors.append("http2.invalid_frame_header")
            self._block_end(side)
        if ftype == CONTINUATION:
            if side.block_sid is None or sid != side.block_sid:
                self._stream_anomaly(sid, "http2.invalid_frame_header")
                return self._skip(side, length)
            side.block_frames += 1
            if side.block_frames > self.max_continuations:
                self._block_limit(side)
            return self._payload(side, 0)
        if ftype == DATA:
            if sid == 0:
                self._conn_anomaly("http2.data_stream_zero")
                return self._skip(side, length)
            return self._payload(side, 1 if flags & PADDED else 0)
        if ftype == HEADERS:
            if sid == 0:  # still decoded below: the HPACK context must see every block
                self._conn_anomaly("http2.invalid_frame_header")
            return self._payload(side, (1 if flags & PADDED else 0) + (5 if flags & PRIORITY_FLAG else 0))
        if ftype == PUSH_PROMISE:
            if side.to_server or sid == 0:
                self._stream_anomaly(sid, "http2.invalid_frame_header")
            return self._payload(side, (1 if flags & PADDED else 0) + 4)
        # control frames (and unknown types, which are ignored)
        if not fixed_length_ok(ftype, length):
            self._stream_anomaly(sid, "http2.invalid_frame_length")
            return self._skip(side, length)
        if length > MAX_CONTROL_FRAME:
            self._count("http2.control_frame_skipped")
            return self._skip(side, length)
        side.left = length
        side.state = S_CONTROL
        if not length:
            side.state = S_HEADER
            self._control(side, b"")

    def _skip(self, side: _Side, length: int) -> None:
        side.left = length
        side.state = S_SKIP if length else S_HEADER

    def _payload(self, side: _Side, prefix: int) -> None:
        if prefix > side.length:
            self._stream_anomaly(side.sid, "http2.invalid_frame_length")
            if side.ftype in (HEADERS, PUSH_PROMISE):  # a block the peer cannot decode either
                self._stream_anomaly(side.sid, "http2.invalid_header")
            return self._skip(side, side.length)
        side.prefix = prefix
        if prefix:
            side.state = S_PREFIX
            return
        self._content_begin(side, side.length)

    def _prefix(self, side: _Side, prefix: bytes) -> None:
        pad = prefix[0] if side.flags & PADDED else 0
        if side.ftype == PUSH_PROMISE:
            side.promised = int.from_bytes(prefix[-4:], "big") & 0x7FFFFFFF
        elif side.ftype == HEADERS and side.flags & PRIORITY_FLAG:
            dep = int.from_bytes(prefix[-5:-1], "big") & 0x7FFFFFFF
            if dep == side.sid:
                self._stream_anomaly(side.sid, "http2.invalid_frame_data")
        content = side.length - side.prefix - pad
        if content < 0:  # padding longer than the frame
            self._stream_anomaly(side.sid, "http2.invalid_frame_data")
            return self._skip(side, side.length - side.prefix)
        side.pad = pad
        self._content_begin(side, content)

    def _content_begin(self, side: _Side, content: int) -> None:
        ftype = side.ftype
        if ftype in (HEADERS, PUSH_PROMISE):
            side.hpack.begin()
            side.block_sid, side.block_type = side.sid, ftype
            side.block_end_stream = bool(side.flags & END_STREAM) and ftype == HEADERS
            side.block_promised = side.promised
            side.block_wire, side.block_frames, side.block_limited = 0, 1, False
            side.block_errors = []
        elif ftype == DATA:
            side.data_stream = self._data_stream(side)
        side.left = content
        side.state = S_CONTENT
        if not content:
            self._content_end(side)

    def _content(self, side: _Side, chunk: bytes) -> None:
        if side.ftype == DATA:
            st = side.data_stream
            if st is not None:
                body = st.req_body if side.to_server else st.resp_body
                if body is not None:
                    body.feed(chunk)
            return
        side.block_wire += len(chunk)
        if side.block_wire > self.max_header_block:
            self._block_limit(side)
        side.hpack.feed(chunk)

    def _content_end(self, side: _Side) -> None:
        side.state = S_PAD if side.pad else S_HEADER
        side.left = side.pad
        if side.ftype == DATA:
            st, side.data_stream = side.data_stream, None
            if st is not None and side.flags & END_STREAM:
                self._end_message(st, side.to_server)
        elif side.flags & END_HEADERS and side.block_sid is not None:
            self._block_end(side)

    def _block_limit(self, side: _Side) -> None:
        """A CONTINUATION flood: the block goes on being decoded (for the HPACK context) but is flagged."""
        if not side.block_limited and side.block_sid is not None:
            side.block_limited = True
            side.block_errors.append("http2.reassembly_limit_reached")

    # -- control frames --------------------------------------------------------------------------
    def _control(self, side: _Side, payload: bytes) -> None:
        ftype, sid = side.ftype, side.sid
        if ftype == SETTINGS:
            if sid:
                self._conn_anomaly("http2.invalid_frame_header")
            if side.flags & ACK:
                if payload:
                    self._conn_anomaly("http2.invalid_frame_length")
                return
            self._settings(side.to_server, payload)
        elif ftype == RST_STREAM:
            if not sid:
                self._conn_anomaly("http2.invalid_frame_header")
                return
            st = self.streams.get(sid)
            if st is not None:
                self._count("http2.rst_stream")
                self._close_stream(st)
        elif ftype in (PING, GOAWAY):
            if sid:
                self._conn_anomaly("http2.invalid_frame_header")
            if ftype == GOAWAY:
                self._count("http2.goaway")
        elif ftype in (PRIORITY, WINDOW_UPDATE):
            if ftype == PRIORITY and not sid:
                self._conn_anomaly("http2.invalid_frame_header")
        else:
            self._count("http2.unknown_frame_type")

    def _settings(self, from_client: bool, payload: bytes) -> None:
        """SETTINGS of one peer: they bound what the other peer sends."""
        receiver_of_other = self._sides[not from_client]
        for ident, value in parse_settings(payload):
            if settings_problem(ident, value):
                self._conn_anomaly("http2.invalid_frame_data")
                continue
            if ident == SETTINGS_MAX_FRAME_SIZE:
                receiver_of_other.max_frame = value
            elif ident == SETTINGS_HEADER_TABLE_SIZE:
                self._count("http2.settings_header_table_size")

    # -- header blocks ---------------------------------------------------------------------------
    def _block_end(self, side: _Side) -> None:
        sid, side.block_sid = side.block_sid, None
        hp = side.hpack
        headers = hp.end()
        errors = side.block_errors + hp.errors
        side.block_errors = []
        if hp.oversize:
            errors.append("http2.header_list_too_large")
        if sid is None:
            return
        if side.block_type == PUSH_PROMISE:
            self._push_promise(sid, side.block_promised, headers, errors)
        elif side.to_server:
            self._request_headers(sid, headers, side.block_end_stream, errors)
        else:
            self._response_headers(sid, headers, side.block_end_stream, errors)

    def _open_stream(self, sid: int) -> _Stream:
        if len(self.streams) >= self.max_streams:
            oldest = next(iter(self.streams.values()))
            self._anomaly(oldest.tx, "http2.too_many_streams")
            self._close_stream(oldest)
        st = _Stream(sid, self._new_tx())
        self.streams[sid] = st
        return st

    def _request_headers(self, sid: int, headers: list[tuple[bytes, bytes]], end_stream: bool,
                         errors: list[str]) -> None:
        if sid == 0:
            return
        st = self.streams.get(sid)
        if st is not None and st.tx.request_headers_done:
            self._trailers(st, headers, end_stream, errors, response=False)
            return
        if st is None:
            if sid % 2 == 0:
                self._conn_anomaly("http2.invalid_frame_header")
            reused = sid <= self._last_client_sid
            self._last_client_sid = max(self._last_client_sid, sid)
            st = self._open_stream(sid)
            if reused:
                self._anomaly(st.tx, "http2.stream_id_reuse")
        tx = st.tx
        for name in errors:
            self._anomaly(tx, name)
        self._fill_request(tx, headers)
        tx.request_headers_done = True
        self._emit(tx, "request_headers", True)
        if end_stream:
            self._end_message(st, True)
        else:
            st.req_body = self._body(tx, False)

    # Its tail mirrors _request_headers' (fill, headers done, event, end or body): kept apart, each
    # side sets its own fields and body.
    def _response_headers(self, sid: int, headers: list[tuple[bytes, bytes]], end_stream: bool,
                          errors: list[str]) -> None:
        if sid == 0:
            return
        st = self.streams.get(sid)
        if st is None:
            st = self._open_stream(sid)
            st.tx.request_done = True
            self._anomaly(st.tx, "http2.response_without_request")
        tx = st.tx
        for name in errors:
            self._anomaly(tx, name)
        if tx.response_headers_done:
            self._trailers(st, headers, end_stream, errors, response=True)
            return
        status = next((v for k, v in headers if k == b":status"), None)
        code = parse_status(status) if status is not None else None
        if code is not None and 100 <= code <= 199 and code != 101:
            if end_stream:  # an interim response cannot end the stream
                self._anomaly(tx, "http2.invalid_header")
            return
        if code == 101:  # no protocol switch in HTTP/2 (RFC 9113 8.6)
            self._anomaly(tx, "http2.invalid_header")
        self._fill_response(tx, headers)
        tx.response_headers_done = True
        self._emit(tx, "response_headers", False)
        if end_stream:
            self._end_message(st, False)
        else:
            st.resp_body = self._body(tx, True)

    def _push_promise(self, sid: int, promised: int, headers: list[tuple[bytes, bytes]], errors: list[str]) -> None:
        """A server push: the promised stream's request comes from the server. The transaction gets the
        request's fields but no request events (the client sent nothing); its response is read as usual."""
        parent = self.streams.get(sid)
        for name in errors:
            self._anomaly(parent.tx if parent is not None else None, name)
        if promised == 0 or promised % 2 or promised in self.streams:
            self._anomaly(parent.tx if parent is not None else None, "http2.invalid_frame_data")
            return
        st = self._open_stream(promised)
        st.pushed = True
        tx = st.tx
        self._fill_request(tx, headers)
        tx.request_headers_done = tx.request_done = True
        self._count("http2.push_promise")

    def _trailers(self, st: _Stream, headers: list[tuple[bytes, bytes]], end_stream: bool, errors: list[str],
                  *, response: bool) -> None:
        tx = st.tx
        for name in errors:
            self._anomaly(tx, name)
        if tx.response_done if response else tx.request_done:
            self._anomaly(tx, "http2.stream_id_reuse")  # a new header block on a half-closed stream
            return
        items = tx.response_headers if response else tx.request_headers
        index = {k: i for i, (k, _) in enumerate(items)}
        bad = not end_stream
        for name, value in headers:
            if name.startswith(b":") or _bad_field(name, value):
                bad = True
                continue
            self._add_header(tx, items, index, name, value)
        if bad:
            self._anomaly(tx, "http2.invalid_header")
        self._end_message(st, not response)

    def _body(self, tx: HttpTransaction, response: bool) -> Body:
        headers = tx.response_headers if response else tx.request_headers
        codings, dropped = codings_for(header_value(headers, b"content-encoding"), self.decompress_layers)
        if dropped:
            self._anomaly(tx, "http.too_many_encoding_layers")
        return Body(self, tx, response, codings)

    def _data_stream(self, side: _Side) -> _Stream | None:
        st = self.streams.get(side.sid)
        if st is None:
            self._conn_anomaly("http2.data_without_stream")
            return None
        tx = st.tx
        if side.to_server:
            ok = tx.request_headers_done and not tx.request_done and st.req_body is not None
        else:
            ok = tx.response_headers_done and not tx.response_done and st.resp_body is not None
        if not ok:
            self._anomaly(tx, "http2.data_without_stream")
            return None
        return st

    # -- messages and streams ------------------------------------------------------------------
    def _end_message(self, st: _Stream, request: bool) -> None:
        tx = st.tx
        body = st.req_body if request else st.resp_body
        if body is not None:
            self._finish_body(tx, body, request)
        if request:
            tx.request_done = True
        else:
            tx.response_done = True
        self._emit(tx, "request_done" if request else "response_done", request)
        if tx.request_done and tx.response_done:
            self.streams.pop(st.sid, None)

    def _finish_body(self, tx: HttpTransaction, body: Body, request: bool) -> None:
        body.end()
        body.complete = True
        self._dirty[id(body)] = body
        layer = body.chain
        while isinstance(layer, CodingLayer):
            if layer.passthrough:  # no decoder could read it: handed on as it came
                self._anomaly(tx, "http2.failed_decompression")
                break
            layer = layer.inner
        headers = tx.request_headers if request else tx.response_headers
        cl = header_value(headers, b"content-length")
        incomplete = tx.request_body_incomplete if request else tx.response_body_incomplete
        if cl is not None and not body.stop and not incomplete and parse_content_length(cl) != body.wire:
            self._anomaly(tx, "http2.content_length_mismatch")

    def _close_stream(self, st: _Stream) -> None:
        """The stream ends before its messages did (RST_STREAM, too many streams, end of the flow)."""
        tx = st.tx
        if not tx.request_done:
            if st.req_body is not None:
                st.req_body.lost()
            self._end_message(st, True)
        if tx.response_headers_done and not tx.response_done:
            if st.resp_body is not None:
                st.resp_body.lost()
            self._end_message(st, False)
        self.streams.pop(st.sid, None)

    def _gap(self, side: _Side, length: int) -> None:
        if side.state == S_LOST or length <= 0:
            return
        if side.state == S_CONTENT and side.ftype == DATA and length <= side.left:
            side.left -= length
            st = side.data_stream
            body = None if st is None else st.req_body if side.to_server else st.resp_body
            if body is not None:
                body.gap()
            if not side.left:
                self._content_end(side)
            return
        if side.state in (S_PAD, S_SKIP) and length <= side.left:
            side.left -= length
            if not side.left:
                side.state = S_HEADER
            return
        self._conn_anomaly("http2.gap")
        side.state = S_LOST
        side.buf = bytearray()
        side.ctrl = bytearray()

    def _close(self) -> None:
        for side in self._sides.values():
            if side.block_sid is not None and side.state != S_LOST:
                side.block_errors.append("http2.invalid_header")
                self._block_end(side)
        for st in list(self.streams.values()):
            self._close_stream(st)

    # -- transactions ----------------------------------------------------------------------------
    def _upgrade(self, h1: HttpTransaction) -> None:
        """``Upgrade: h2c`` accepted: the HTTP/1 request is stream 1, its response comes in HTTP/2.
        The request was inspected as HTTP/1: here it only gives the response its context."""
        tx = self._new_tx()
        for name in ("method", "uri_raw", "uri", "request_line", "host", "host_raw", "user_agent", "cookie",
                     "request_content_type", "request_headers_raw"):
            setattr(tx, name, getattr(h1, name))
        tx.request_headers = list(h1.request_headers)
        self._charge(tx, len(tx.request_headers_raw) + sum(len(k) + len(v) + HEADER_OVERHEAD
                                                           for k, v in tx.request_headers))
        tx.request_headers_done = tx.request_done = True
        self.streams[1] = _Stream(1, tx)
        self._last_client_sid = 1
        value = h1.header(b"http2-settings")
        payload = http1_settings(value) if value is not None else None
        if payload is None:
            self._anomaly(tx, "http2.invalid_http1_settings")
        else:
            self._settings(True, payload)

    def _add_header(self, tx: HttpTransaction, items: list[tuple[bytes, bytes]], index: dict[bytes, int],
                    name: bytes, value: bytes) -> None:
        """Repeated fields merged as HTTP/1's are (", "), cookies with "; " (RFC 9113 8.2.3)."""
        at = index.get(name)
        if at is not None:
            sep = b"; " if name == b"cookie" else b", "
            items[at] = (name, items[at][1] + sep + value)
            self._charge(tx, len(sep) + len(value))
            return
        index[name] = len(items)
        items.append((name, value))
        self._charge(tx, len(name) + len(value) + HEADER_OVERHEAD)

    def _fields(self, tx: HttpTransaction, headers: list[tuple[bytes, bytes]], pseudo_names: frozenset[bytes],
                items: list[tuple[bytes, bytes]]) -> tuple[dict[bytes, bytes], bytes]:
        """Split a header list into pseudo-headers and regular fields (added to ``items``), checking
        RFC 9113 8.2 and 8.3; returns (pseudo-headers, the raw block as name: value lines)."""
        pseudo: dict[bytes, bytes] = {}
        index = {k: i for i, (k, _) in enumerate(items)}
        raw = bytearray()
        regular = bad = False
        for name, value in headers:
            if len(raw) < MAX_RAW_HEADERS:
                raw += name + b": " + value + b"\r\n"
            if name[:1] == b":":
                if regular or name not in pseudo_names or name in pseudo:
                    bad = True
                if name not in pseudo:
                    pseudo[name] = value
                continue
            regular = True
            if _bad_field(name, value) or name in CONNECTION_SPECIFIC or (name == b"te" and value.lower() != b"trailers"):
                bad = True
            self._add_header(tx, items, index, name, value)
        if bad:
            self._anomaly(tx, "http2.invalid_header")
        raw_bytes = bytes(raw[:MAX_RAW_HEADERS])
        self._charge(tx, len(raw_bytes))
        return pseudo, raw_bytes

    def _fill_request(self, tx: HttpTransaction, headers: list[tuple[bytes, bytes]]) -> None:
        pseudo, raw = self._fields(tx, headers, REQUEST_PSEUDO, tx.request_headers)
        tx.request_headers_raw = raw
        method = pseudo.get(b":method", b"")
        path = pseudo.get(b":path")
        authority = pseudo.get(b":authority")
        connect = method == b"CONNECT" and b":protocol" not in pseudo
        if not method or (connect and (path is not None or b":scheme" in pseudo)) or (
                not connect and (not path or b":scheme" not in pseudo)):
            self._anomaly(tx, "http2.invalid_header")
        tx.method = method
        tx.uri_raw = path if path is not None else (authority or b"") if connect else b""
        tx.uri = normalize_uri(tx.uri_raw)[0] if tx.uri_raw else b""
        tx.request_line = method + b" " + tx.uri_raw + b" HTTP/2"
        items = tx.request_headers
        host_hdr = header_value(items, b"host")
        if authority is not None:
            host_part = authority
            if b"@" in authority:
                self._anomaly(tx, "http2.userinfo_in_uri")
                host_part = authority.rsplit(b"@", 1)[1]
            tx.host, tx.host_raw = host_from_header(host_part), authority
            if host_hdr is not None and host_from_header(host_hdr) != tx.host:
                self._anomaly(tx, "http2.authority_host_mismatch")
        elif host_hdr is not None:
            tx.host, tx.host_raw = host_from_header(host_hdr), host_hdr
        tx.user_agent = header_value(items, b"user-agent") or b""
        tx.cookie = header_value(items, b"cookie") or b""
        ct = header_value(items, b"content-type")
        tx.request_content_type = content_type(ct) if ct is not None else b""
        self._charge(tx, len(tx.request_line) + len(tx.uri))

    def _fill_response(self, tx: HttpTransaction, headers: list[tuple[bytes, bytes]]) -> None:
        pseudo, raw = self._fields(tx, headers, RESPONSE_PSEUDO, tx.response_headers)
        tx.response_headers_raw = raw
        status = pseudo.get(b":status", b"")
        if parse_status(status) is None:
            self._anomaly(tx, "http2.invalid_header")
        tx.status_code = status
        tx.response_protocol = b"HTTP/2"
        tx.status_line = b"HTTP/2 " + status
        ct = header_value(tx.response_headers, b"content-type")
        tx.response_content_type = content_type(ct) if ct is not None else b""


_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")


def _bad_field(name: bytes, value: bytes) -> bool:
    """RFC 9113 8.2.1: lowercase token names; values without NUL, CR, LF or surrounding whitespace."""
    if not name or any(c not in _TOKEN for c in name):
        return True
    if b"\x00" in value or b"\r" in value or b"\n" in value:
        return True
    return bool(value) and (value[0] in b" \t" or value[-1] in b" \t")
