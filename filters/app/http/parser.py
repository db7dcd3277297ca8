"""The HTTP/1.x parser of one TCP flow: both directions' streams, transactions, limits and events."""
from __future__ import annotations

import logging
from collections import deque

from filters.app.events import HttpEvent, HttpTransaction
from filters.app.http.book import TransactionBook, body_memcap_for, check_limits
from filters.app.http.streams import IGNORE, RequestStream, ResponseStream, TUNNEL

log = logging.getLogger(__name__)

DEFAULT_BODY_LIMIT = 100 * 1024  # Suricata's request-body-limit / response-body-limit (0 = unlimited)
DEFAULT_DECOMPRESS_LAYERS = 2  # response-body-decompress-layer-limit
DEFAULT_MAX_DECOMPRESSED = 1 << 20  # libhtp compression bomb limit (bytes out) ...
DEFAULT_DECOMPRESS_RATIO = 2048  # ... when also above this out/in ratio
DEFAULT_MAX_HEADER_LINE = 18000  # libhtp field-limit: longest buffered line / header
DEFAULT_MAX_HEADERS = 1024  # libhtp number of headers limit
DEFAULT_MAX_TRANSACTIONS = 32  # completed transactions kept in ``transactions`` (older ones are dropped)
DEFAULT_MAX_PENDING_REQUESTS = 64  # pipelined requests waiting for their response; past it requests are not parsed
DEFAULT_MAX_HEADER_BYTES = 128 * 1024  # header list of one message, HEADER_OVERHEAD per header included


class HttpParser(TransactionBook):
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
        max_pending_requests: int = DEFAULT_MAX_PENDING_REQUESTS,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        body_memcap: int | None = None,
    ) -> None:
        body_memcap = body_memcap_for(request_body_limit, response_body_limit, body_memcap)
        check_limits((("request_body_limit", request_body_limit), ("response_body_limit", response_body_limit),
                      ("decompress_layers", decompress_layers), ("max_decompressed", max_decompressed),
                      ("decompress_ratio", decompress_ratio), ("body_memcap", body_memcap)),
                     (("max_header_line", max_header_line), ("max_headers", max_headers),
                      ("max_transactions", max_transactions), ("max_pending_requests", max_pending_requests),
                      ("max_header_bytes", max_header_bytes)))
        self._init_book(request_body_limit=request_body_limit, response_body_limit=response_body_limit,
                        decompress_layers=decompress_layers, max_decompressed=max_decompressed,
                        decompress_ratio=decompress_ratio, body_memcap=body_memcap,
                        max_transactions=max_transactions, first_tx_id=0)
        self.max_header_line = max_header_line
        self.max_headers = max_headers
        self.max_pending_requests = max_pending_requests
        self.max_header_bytes = max_header_bytes
        self._awaiting: deque[HttpTransaction] = deque()  # requests whose response has not started
        self._is09: set[int] = set()
        self._req = RequestStream(self)
        self._resp = ResponseStream(self)
        self.tunnel: dict[bool, bytes] | None = None  # set when the flow leaves HTTP (see _tunnel)

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

    def held_bytes(self) -> int:
        """Bytes this parser holds now: buffered stream bytes, header blocks, transactions' lines and
        headers, decoded bodies (twice: the body buffer and the transaction's copy) and decoder state."""
        n = self.meta_held + len(self._req.buf) + len(self._resp.buf) + len(self._req.raw) + len(self._resp.raw)
        for body in self._live.values():
            n += body.held_bytes()
        for stream in (self._req, self._resp):
            body = stream.body
            if body is not None and id(body) not in self._live:
                n += body.held_bytes()
        return n

    def eof(self, to_server: bool) -> list[HttpEvent]:
        """One side closed its half of the connection (its FIN, every byte before it arrived). The
        server's: a response delimited by the close (no length, HTTP/0.9) or cut short ends here,
        on the FIN's packet, not when the flow ends (libhtp's stream EOF), so the packet that
        completes it can still be held. A client's half-close ends nothing (it still awaits answers)."""
        if to_server:
            return []
        self._guarded(self._resp.close)
        return self._flush()

    def close(self) -> list[HttpEvent]:
        """The flow ended: finish bodies delimited by close, HTTP/0.9 responses and partial messages."""
        self._guarded(self._req.close)
        self._guarded(self._resp.close)
        return self._flush()

    # -- internals -------------------------------------------------------------------------------
    def _failed(self) -> None:
        log.exception("HTTP parser error; flow no longer parsed")
        self._count("http.parser_error")
        for stream in (self._req, self._resp):
            stream.state = IGNORE
            del stream.buf[:]
            stream.pos = 0

    def _prune(self) -> None:
        """Keep at most ``max_transactions``: the oldest complete ones go first."""
        txs = self.transactions
        drop = len(txs) - self.max_transactions
        done = [tx for tx in txs if tx.request_done and tx.response_done][:drop]
        if done:
            self._drop_transactions(done, "http.transactions_pruned")

    def _request_tx(self) -> HttpTransaction | None:
        if len(self._awaiting) >= self.max_pending_requests:
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
        """CONNECT or 101: the rest of both directions is not HTTP. The bytes already received
        past the switch are kept in ``tunnel`` (per direction, True = to server) for the app
        layer, which detects the protocol inside (a protocol change, as Suricata makes one)."""
        self._count("http.tunnel")
        self.tunnel = {True: bytes(self._req.buf[self._req.pos:]), False: bytes(self._resp.buf[self._resp.pos:])}
        for stream in (self._req, self._resp):
            stream.state = TUNNEL
            del stream.buf[:]
            stream.pos = 0
