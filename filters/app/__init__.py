"""Application-layer events (HTTP, TLS, DNS, SMTP) that the protocol parsers hand to the engines.

The parsers in this package are sans-IO and work on the in-order stream bytes the flow table
delivers (or on datagrams for UDP). ``filters.app.layer.AppLayer`` detects the protocol of each
flow, feeds the parser and turns its output into ``(Hook, event)`` pairs for the pipeline.
Every buffer here is ``bytes``; names follow Suricata's sticky buffers.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True, eq=False)
class HttpTransaction:
    """One HTTP/1.x request/response pair. Filled progressively; the same object is passed again
    as it advances (``request_done``/``response_done`` and the ``*_body`` buffers grow)."""

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
    request_body: bytes = b""  # http.request_body / http_client_body: de-chunked, decompressed, capped
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
    response_body: bytes = b""  # http.response_body / file.data (to client): de-chunked, decompressed, capped
    response_headers_done: bool = False
    response_done: bool = False
    # bookkeeping
    request_body_truncated: bool = False  # hit the body limit
    response_body_truncated: bool = False
    anomalies: list[str] = field(default_factory=list)  # e.g. "http.bad_chunk", "http.decompress_limit"

    def header(self, name: bytes, *, response: bool = False) -> bytes | None:
        """First value of a header (case-insensitive name)."""
        lname = name.lower()
        for k, v in self.response_headers if response else self.request_headers:
            if k.lower() == lname:
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
