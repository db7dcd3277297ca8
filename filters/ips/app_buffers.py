"""App-layer sticky buffers for rules: the bytes of ``http.*``, ``file.data``, ``tls.*`` and ``dns.query``
taken from the app-layer events (HTTP transactions, TLS hellos, DNS messages)."""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    from filters.app.events import DnsMessage, HttpTransaction, TlsHello


def _header_block(headers: list[tuple[bytes, bytes]], skip: tuple[bytes, ...] = ()) -> bytes:
    return b"".join(k + b": " + v + b"\r\n" for k, v in headers if k.lower() not in skip)


def _header_names(headers: list[tuple[bytes, bytes]]) -> bytes:
    return b"\r\n" + b"".join(k + b"\r\n" for k, _ in headers) + b"\r\n"


def _request_file(tx: "HttpTransaction") -> bytes:
    """A request body is file data (uploads, raw POST/PUT bodies) unless it is a plain form."""
    body = tx.request_body
    if not body:  # most requests: no need to look the content type up
        return b""
    ctype = (tx.header(b"content-type") or b"").lower()
    return b"" if ctype.startswith(b"application/x-www-form-urlencoded") else body


_HTTP_SIMPLE: dict[str, Callable[[Any, bool], bytes | None]] = {
    "http.uri": lambda tx, req: tx.uri if tx.request_line else None,
    "http.uri.raw": lambda tx, req: tx.uri_raw if tx.request_line else None,
    "http.method": lambda tx, req: tx.method or None,
    "http.request_line": lambda tx, req: tx.request_line or None,
    "http.request_body": lambda tx, req: tx.request_body or None,
    "http.host": lambda tx, req: tx.host or None,
    "http.host.raw": lambda tx, req: tx.host_raw or None,
    "http.user_agent": lambda tx, req: tx.user_agent or None,
    "http.stat_code": lambda tx, req: tx.status_code or None,
    "http.stat_msg": lambda tx, req: tx.status_msg or None,
    "http.response_line": lambda tx, req: tx.status_line or None,
    "http.response_body": lambda tx, req: tx.response_body or None,
    "file.data": lambda tx, req: (_request_file(tx) if req else tx.response_body) or None,
    "http.protocol": lambda tx, req: (tx.protocol if req else tx.response_protocol) or None,
}
_HTTP_NAMED = {
    "http.accept": b"accept", "http.accept_enc": b"accept-encoding", "http.accept_lang": b"accept-language",
    "http.referer": b"referer", "http.content_type": b"content-type", "http.content_len": b"content-length",
    "http.connection": b"connection", "http.server": b"server", "http.location": b"location",
}


def _h2_fields(raw: bytes) -> list[tuple[bytes, bytes]]:
    """Every field of an HTTP/2 header block, pseudo-headers included, from the transaction's
    ``*_headers_raw`` (the parser writes it as ``name: value`` lines)."""
    out = []
    for line in raw.split(b"\r\n"):
        name, sep, value = line.partition(b": ")
        if sep:
            out.append((name, value))
    return out


def http_buffer(tx: "HttpTransaction", name: str, to_server: bool) -> bytes | None:
    """One HTTP sticky buffer of a transaction for the side being inspected (None: not there)."""
    req = to_server
    simple = _HTTP_SIMPLE.get(name)
    if simple is not None:
        return simple(tx, req)
    if not (tx.request_headers_done if req else tx.response_headers_done):
        return None
    header = _HTTP_NAMED.get(name)
    if header is not None:
        return tx.header(header, response=not req)
    headers = tx.request_headers if req else tx.response_headers
    if name in ("http.header", "http.header_names") and tx.protocol == b"HTTP/2" and (
            not req or tx.request_line.endswith(b" HTTP/2")):
        # as Suricata builds them on HTTP/2: every field of the block, pseudo-headers included
        headers = _h2_fields(tx.request_headers_raw if req else tx.response_headers_raw)
    if name == "http.cookie":
        return tx.header(b"cookie" if req else b"set-cookie", response=not req)
    if name == "http.header":
        return _header_block(headers, (b"cookie", b"set-cookie")) or None
    if name == "http.header.raw":
        return (tx.request_headers_raw if req else tx.response_headers_raw) or None
    if name == "http.header_names":
        return _header_names(headers)
    if name == "http.start":
        line = tx.request_line if req else tx.status_line
        return line + b"\r\n" + _header_block(headers) + b"\r\n"
    return None


HttpBuild = Callable[["HttpTransaction"], list[bytes]]


def _field(attr: str, gate: str | None = None) -> HttpBuild:
    """A transaction's field as a buffer (absent when empty, or when ``gate`` is)."""
    if gate is None:
        def build(tx: "HttpTransaction") -> list[bytes]:
            value = getattr(tx, attr)
            return [value] if value else []
    else:
        def build(tx: "HttpTransaction") -> list[bytes]:  # present, even empty, once the gate is set
            return [getattr(tx, attr)] if getattr(tx, gate) else []
    return build


def _named(header: bytes, response: bool) -> HttpBuild:
    """A header's first value (case-insensitive name; an empty value is there, as in
    HttpTransaction.header), once the message's headers are done."""
    n = len(header)
    done, listed = ("response_headers_done", "response_headers") if response else (
        "request_headers_done", "request_headers")

    def build(tx: "HttpTransaction") -> list[bytes]:
        if getattr(tx, done):
            for k, v in getattr(tx, listed):
                if len(k) == n and k.lower() == header:
                    return [v]
        return []
    return build


def http_builder(name: str, to_server: bool) -> HttpBuild:
    """``http_buffer`` of one buffer and side as a function of the transaction alone, its answer
    as a list ([] absent): an event's buffers are asked for by name once per prefilter, and the
    dispatch by name and side is done here once rather than on every call."""
    if name in _FIELDS:
        return _field(*_FIELDS[name])
    if name == "http.protocol":
        return _field("protocol" if to_server else "response_protocol")
    header = _HTTP_NAMED.get(name)
    if header is not None:
        return _named(header, not to_server)

    def build(tx: "HttpTransaction") -> list[bytes]:
        value = http_buffer(tx, name, to_server)
        return [value] if value is not None else []
    return build


# the buffers of _HTTP_SIMPLE that are a field of the transaction (with the field that must be set first)
_FIELDS: dict[str, tuple[str, str | None]] = {
    "http.uri": ("uri", "request_line"), "http.uri.raw": ("uri_raw", "request_line"), "http.method": ("method", None),
    "http.request_line": ("request_line", None), "http.host": ("host", None), "http.host.raw": ("host_raw", None),
    "http.user_agent": ("user_agent", None), "http.stat_code": ("status_code", None),
    "http.stat_msg": ("status_msg", None), "http.response_line": ("status_line", None),
}


def tls_buffers(hello: "TlsHello", name: str) -> list[bytes]:
    if name == "tls.sni":
        return [hello.sni] if hello.sni else []
    if name == "tls.cert_subject":
        return [hello.cert_subject] if hello.cert_subject else []
    if name == "tls.cert_issuer":
        return [hello.cert_issuer] if hello.cert_issuer else []
    if name == "tls.cert_serial":
        return [hello.cert_serial] if hello.cert_serial else []
    if name == "tls.certs":
        return list(hello.certs)
    if name.startswith("ja"):
        return _fingerprint(hello, name)
    if name == "tls.cert_fingerprint" and hello.certs:
        digest = hashlib.sha1(hello.certs[0]).hexdigest()
        return [":".join(digest[i:i + 2] for i in range(0, 40, 2)).encode()]
    return []


def _fingerprint(hello: "TlsHello", name: str) -> list[bytes]:
    """ja3.hash / ja3.string (ClientHello), ja3s.hash / ja3s.string (ServerHello), ja4.hash."""
    text = {"ja3": hello.ja3, "ja3s": hello.ja3s, "ja4": hello.ja4}.get(name.partition(".")[0], "")
    if not text:
        return []
    if name == "ja3.hash" or name == "ja3s.hash":
        return [hashlib.md5(text.encode(), usedforsecurity=False).hexdigest().encode()]
    return [text.encode()]


def dns_buffers(msg: "DnsMessage", name: str) -> list[bytes]:
    if name == "dns.query":
        return [q.name for q in msg.questions]
    return []
