"""Each HTTP buffer's builder (app_buffers.http_builder, what Ips._http asks) gives what
``http_buffer`` gives, as a list ([] absent; an empty buffer that is there stays there), for
every buffer of rule.BUFFERS, both event directions and transactions at every stage: empty and
repeated headers, an empty URI, header names in other cases, HTTP/2, bodies."""
from __future__ import annotations

import itertools

from filters.app.events import HttpTransaction
from filters.ips.app_buffers import http_buffer, http_builder
from filters.ips.rule import BUFFERS, PKT


def transactions() -> list[HttpTransaction]:
    out = [HttpTransaction(tx_id=0)]  # nothing yet
    req_headers = [(b"Host", b"www.example.org"), (b"user-agent", b"Mozilla/5.0"), (b"ACCEPT", b""),
                   (b"Cookie", b"a=1"), (b"Accept", b"text/html"), (b"Content-Type", b"application/json"),
                   (b"Referer", b"http://a/"), (b"Content-Length", b"4")]
    resp_headers = [(b"Server", b"nginx"), (b"Content-Type", b"text/html"), (b"Set-Cookie", b"s=2"),
                    (b"location", b""), (b"Connection", b"close")]
    for uri, done, resp_done, body, proto in itertools.product(
            (b"", b"/a?b=1"), (False, True), (False, True), (b"", b"body"), (b"HTTP/1.1", b"HTTP/2")):
        tx = HttpTransaction(tx_id=1, method=b"POST" if body else b"", uri_raw=uri, uri=uri, protocol=proto,
                             request_line=b"POST " + uri + b" " + proto, request_headers=req_headers if done else [],
                             request_headers_raw=b"Host: www.example.org\r\n" if done else b"",
                             host=b"www.example.org" if done else b"", host_raw=b"www.Example.org" if done else b"",
                             user_agent=b"Mozilla/5.0" if done else b"", request_headers_done=done)
        tx.request_body = body
        if resp_done:
            tx.status_line, tx.status_code, tx.status_msg = b"HTTP/1.1 200 OK", b"200", b"OK"
            tx.response_protocol, tx.response_headers, tx.response_headers_done = b"HTTP/1.1", resp_headers, True
            tx.response_headers_raw = b"Server: nginx\r\n"
            tx.response_body = body * 2
        out.append(tx)
    empty_line = HttpTransaction(tx_id=2, request_line=b"GET", uri=b"", uri_raw=b"")  # a request line, no URI
    out.append(empty_line)
    return out


def test_builders_give_what_http_buffer_gives() -> None:
    names = [n for n, info in BUFFERS.items() if n != PKT and info.app_proto in (None, "http", "http1", "http2")]
    names += ["tls.sni", "no.such.buffer"]
    assert {"http.uri", "http.accept", "http.header", "file.data", "http.protocol"} <= set(names)
    for tx in transactions():
        for name in names:
            for to_server in (True, False):
                value = http_buffer(tx, name, to_server)
                assert http_builder(name, to_server)(tx) == ([value] if value is not None else []), (name, to_server)
