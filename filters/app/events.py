"""Application-layer events: what the protocol parsers (HTTP, TLS, DNS, SMTP) hand to the engines.

One dataclass per kind of event; ``filters.app.layer.AppLayer`` pairs each with the engine hook it
goes to (``filters.engine.Hook``). Every buffer here is ``bytes``; names follow Suricata's sticky
buffers.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from filters.packet import ntop


class FileTail:
    """A body that goes on past the IPS body limit, for the file engines (``file_depth``): its
    bytes beyond the limit are hashed as they pass and handed out once (``chunks``, the bytes of
    the last flush, at file offset ``base``), never kept: the antivirus streams them to clamd.
    ``size`` and ``sha256`` are those of the whole body (the kept head included); ``cut``: the
    body went on past ``file_depth`` (the file is not whole)."""

    __slots__ = ("hasher", "size", "chunks", "base", "cut")

    def __init__(self) -> None:
        self.hasher = hashlib.sha256()
        self.size = 0
        self.chunks: list[bytes] = []
        self.base = 0
        self.cut = False

    def add_head(self, data: bytes) -> None:
        """Bytes kept in the body (under the body limit): hashed and counted, not handed out."""
        self.hasher.update(data)
        self.size += len(data)
        self.base = self.size

    def add(self, data: bytes) -> None:
        """Bytes past the body limit: hashed, counted, handed out with the next flush."""
        self.hasher.update(data)
        if not self.chunks:
            self.base = self.size
        self.chunks.append(data)
        self.size += len(data)

    def release(self) -> None:
        """The engines saw the chunks: they go."""
        self.chunks = []
        self.base = self.size

    @property
    def pending(self) -> int:
        return sum(len(c) for c in self.chunks)

    @property
    def sha256(self) -> str:
        return self.hasher.hexdigest()


@dataclass(slots=True, eq=False)
class HttpTransaction:
    """One HTTP/1.x request/response pair, or one HTTP/2 stream (``protocol`` ``b"HTTP/2"``,
    filled the same way by ``filters.app.http2``). Filled progressively; the same object is passed
    again as it advances (``request_done``/``response_done`` and the ``*_body`` buffers grow)."""

    tx_id: int  # 0-based per flow, in request order (pipelining)
    # request line and headers
    method: bytes = b""  # http.method
    uri_raw: bytes = b""  # http.uri.raw: as on the wire
    uri: bytes = b""  # http.uri: normalized (percent-decoded where safe, path normalized, as libhtp)
    protocol: bytes = b""  # e.g. b"HTTP/1.1"; b"" for HTTP/0.9
    request_line: bytes = b""
    request_headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # (name, value), order kept
    request_headers_raw: bytes = b""  # http.header.raw for the request (header block as received)
    host: bytes = b""  # http.host: lower-cased, port stripped (from URI authority or Host header)
    host_raw: bytes = b""
    user_agent: bytes = b""
    cookie: bytes = b""
    request_content_type: bytes = b""
    # request_body (property below): http.request_body / http_client_body: de-chunked, decompressed, capped
    request_headers_done: bool = False
    request_done: bool = False
    # response
    status_line: bytes = b""
    status_code: bytes = b""  # http.stat_code, e.g. b"200"
    status_msg: bytes = b""
    response_protocol: bytes = b""
    response_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    response_headers_raw: bytes = b""
    response_content_type: bytes = b""
    # response_body (property below): http.response_body / file.data (to client): de-chunked, decompressed, capped
    response_headers_done: bool = False
    response_done: bool = False
    # bookkeeping
    request_body_truncated: bool = False  # hit the body limit
    response_body_truncated: bool = False
    request_body_incomplete: bool = False  # body bytes never arrived: a stream gap, or the flow ended before the body did
    response_body_incomplete: bool = False
    anomalies: list[str] = field(default_factory=list)  # e.g. "http.bad_chunk", "http.decompress_limit"
    # The bodies: the parser publishes its growing buffer (``*_live``); the bytes are made from it
    # when read, once per change. Copying a growing body on every packet cost O(n^2): 38 of 49 s
    # of a 20 MB download through the antivirus (docs/benchmarks.md, antivirus section).
    _request_body: bytes = field(default=b"", repr=False)
    _response_body: bytes = field(default=b"", repr=False)
    request_live: bytearray | None = field(default=None, repr=False)
    response_live: bytearray | None = field(default=None, repr=False)
    # past the body limit, up to the file engines' depth (``file_depth``): hashed and streamed, not kept
    request_file: FileTail | None = field(default=None, repr=False)
    response_file: FileTail | None = field(default=None, repr=False)

    def _body(self, response: bool) -> bytes:
        live = self.response_live if response else self.request_live
        kept = self._response_body if response else self._request_body
        if live is not None and len(live) != len(kept):
            kept = bytes(live)
            if response:
                self._response_body = kept
            else:
                self._request_body = kept
        return kept

    def _set_body(self, response: bool, value: bytes, live: bytearray | None = None) -> None:
        if response:
            self._response_body, self.response_live = value, live
        else:
            self._request_body, self.request_live = value, live

    request_body = property(lambda self: self._body(False), lambda self, v: self._set_body(False, v),
                            doc="http.request_body: the request body so far (bytes)")
    response_body = property(lambda self: self._body(True), lambda self, v: self._set_body(True, v),
                             doc="http.response_body / file.data: the response body so far (bytes)")

    def header(self, name: bytes, *, response: bool = False) -> bytes | None:
        """First value of a header (case-insensitive name)."""
        lname, n = name.lower(), len(name)
        for k, v in self.response_headers if response else self.request_headers:
            if len(k) == n and k.lower() == lname:  # (lower() keeps the length: compare that first)
                return v
        return None


@dataclass(frozen=True, slots=True)
class HttpEvent:
    """An HTTP transaction reached a new stage. ``stage`` is one of "request_headers",
    "request_body", "request_done", "response_headers", "response_body", "response_done"."""

    tx: HttpTransaction
    stage: str
    to_server: bool


@dataclass(frozen=True, slots=True)
class TlsHello:
    """A TLS ClientHello (to_server) or ServerHello with its certificates (to_client)."""

    to_server: bool
    version: int = 0  # legacy_version from the hello (e.g. 0x0303)
    sni: bytes = b""  # tls.sni (ClientHello server_name, host_name type)
    alpn: tuple[bytes, ...] = ()
    ciphers: tuple[int, ...] = ()
    extensions: tuple[int, ...] = ()
    supported_versions: tuple[int, ...] = ()
    # ServerHello / Certificate (to_client)
    cert_subject: bytes = b""  # tls.cert_subject of the leaf, RFC 4514-ish text like b"CN=example.com, O=..."
    cert_issuer: bytes = b""
    cert_serial: bytes = b""
    cert_sans: tuple[bytes, ...] = ()  # dNSName entries of the leaf
    certs: tuple[bytes, ...] = ()  # tls.certs: every certificate, DER
    ja3: str = ""  # JA3 string (not hashed) for the ClientHello
    ja3s: str = ""  # JA3S string (not hashed) for the ServerHello
    ja4: str = ""  # JA4 fingerprint of the ClientHello (e.g. t13d1516h2_8daaf6152771_e5627efa2ab1)


@dataclass(frozen=True, slots=True)
class DnsQuestion:
    name: bytes  # dns.query: dotted, as in the packet (no trailing dot), case preserved
    rrtype: int
    rrclass: int = 1


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    name: bytes
    rrtype: int
    ttl: int
    data: bytes  # A/AAAA: packed address; CNAME/NS/PTR: dotted name; other: raw rdata


@dataclass(frozen=True, slots=True)
class DnsMessage:
    """A DNS query (to_server) or response (to_client)."""

    to_server: bool
    txid: int
    flags: int
    rcode: int
    questions: tuple[DnsQuestion, ...]
    answers: tuple[DnsAnswer, ...] = ()
    truncated: bool = False  # parsing stopped early (bad compression pointer, short data); fields so far are kept


@dataclass(frozen=True, slots=True)
class SmtpEvent:
    """SMTP envelope/commands seen so far, and the message once DATA ends."""

    to_server: bool
    command: bytes = b""  # e.g. b"MAIL", b"RCPT", b"DATA", b"EHLO"
    argument: bytes = b""
    helo: bytes = b""
    mail_from: bytes = b""
    rcpt_to: tuple[bytes, ...] = ()
    message: bytes = b""  # the RFC 5322 message (dot-unstuffed), when complete
    message_done: bool = False


@dataclass(frozen=True, slots=True)
class FileEvent:
    """A file seen in traffic: an HTTP request body (upload) or response body (download), or one
    file part of a multipart form upload, handed out once its message is complete.

    ``data`` is the body (or part) as the app layer kept it (de-chunked and decoded, at most the
    body limit); ``truncated`` says bytes of it are missing (body limit, decompression cap, a
    stream gap, or the flow ended before the body did), so ``size`` and ``sha256`` are those of
    ``data``, not of the whole file. ``partial``: a range of a file only (``206 Partial Content``),
    ``range`` the (first, last, total) bytes it covers when the response said. The files of one
    message come together, numbered ``part`` of ``parts``. Mail attachments come later;
    ``magic`` is detected from ``data`` ("" for a range that does not start the file).
    ``streamed``: a file engine asked for more than the body limit (``file_depth``) and the body
    went on past it: ``data`` is its first body-limit bytes, the rest went by as ``FileTail``
    chunks (``tx.response_file``/``request_file``); ``size`` and ``sha256`` are the whole file's.
    """

    name: bytes  # Content-Disposition filename, else the last segment of the URI path (may be b"")
    data: bytes
    size: int  # len(data); the whole file's when ``streamed``
    sha256: str  # hex digest of data; the whole file's when ``streamed``
    to_server: bool  # True: upload (client to server), False: download
    proto: str = "http"  # the protocol the file came in
    tx_id: int = 0  # the HTTP transaction's id in its flow
    tx: Any = None  # the transaction it came from (HttpTransaction)
    lan_addr: bytes = b""  # packed address of the LAN host of the flow (the client when sides are unknown)
    content_type: bytes = b""  # declared Content-Type, lower-cased, without parameters
    magic: str = ""  # file type detected from the bytes, in libmagic's words (filters.app.magic)
    truncated: bool = False
    part: int = 0  # index among the files of the same message (multipart form upload, byteranges)
    parts: int = 1  # files of the same message
    partial: bool = False  # a range of the file only (206 Partial Content)
    range: tuple[int, int, int | None] | None = None  # (first, last, total or None) of a partial file
    streamed: bool = False  # went on past the body limit: ``data`` is its head, ``size``/``sha256`` the whole file's

    @property
    def lan_ip(self) -> str:
        return ntop(self.lan_addr)
