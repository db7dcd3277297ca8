"""Rule protocols on HTTP/2 flows, as Suricata 7 has them: "http" rules (and app-layer-protocol:http)
match HTTP/1 and HTTP/2, "http1" and "http2" only their version; an HTTP/2 flow stays in Python
while such rules could still match it (it is not handed to the kernel)."""
from __future__ import annotations

from pathlib import Path

import pytest

from filters.app.layer import AppLayer, AppProto, AppState
from filters.ips.engine import Ips, _aliases
from tests.filters.app.h2_traffic import evil_exchange
from tests.filters.factories import tflow


def ips_with(tmp_path: Path, *rules: str) -> Ips:
    path = tmp_path / "t.rules"
    path.write_text("\n".join(rules) + "\n")
    ips = Ips()
    ips.reload([path])
    return ips


def flow_of(proto: AppProto, *, changed: bool = False):
    flow = tflow()
    flow.app_state = AppState(proto=proto, changed_from=AppProto.HTTP if changed else None)
    return flow


def test_aliases() -> None:
    assert "http2" in _aliases("http") and "http" in _aliases("http")
    assert "http2" not in _aliases("http1") and _aliases("http2") == {"http2"}


@pytest.mark.parametrize(("rule_proto", "proto", "changed", "keep"), [
    ("http", AppProto.HTTP2, False, True),
    ("http2", AppProto.HTTP2, False, True),
    ("http1", AppProto.HTTP2, False, False),
    ("http2", AppProto.HTTP, False, True),  # an HTTP/1 flow may still upgrade to h2c
    ("http2", AppProto.HTTP, True, False),
    ("tls", AppProto.HTTP2, True, False),
])
def test_needs_more_on_http2_flows(tmp_path: Path, rule_proto: str, proto: AppProto, changed: bool, keep: bool) -> None:
    ips = ips_with(tmp_path, f'alert {rule_proto} any any -> any any (msg:"x"; flow:established; sid:1;)'
                   if rule_proto == "tls" else f'alert {rule_proto} any any -> any any (msg:"x"; http.uri; content:"/a"; sid:1;)')
    assert ips.needs_more(flow_of(proto, changed=changed)) is keep


def test_needs_more_asks_a_reloaded_rule_set_afresh(tmp_path: Path) -> None:
    """The answer per app protocol is kept per rule set (Ips._app_fit): one for every packet of
    the flow, and a reload's rules answer anew."""
    ips = ips_with(tmp_path, 'alert dns any any -> any any (msg:"x"; dns.query; content:"a"; sid:1;)')
    assert ips.needs_more(flow_of(AppProto.HTTP2)) is False and ips.needs_more(flow_of(AppProto.HTTP2)) is False
    path = tmp_path / "new.rules"
    path.write_text('alert http2 any any -> any any (msg:"x"; http.uri; content:"/a"; sid:2;)\n')
    ips.reload([path])
    assert ips.needs_more(flow_of(AppProto.HTTP2)) is True


def test_app_layer_protocol_keyword(tmp_path: Path) -> None:
    ips = ips_with(tmp_path,
                   'alert http any any -> any any (msg:"any http"; app-layer-protocol:http; http.uri; content:"/evil"; sid:1;)',
                   'alert http any any -> any any (msg:"h1"; app-layer-protocol:http1; http.uri; content:"/evil"; sid:2;)',
                   'alert http any any -> any any (msg:"h2"; app-layer-protocol:http2; http.uri; content:"/evil"; sid:3;)')
    app, flow = AppLayer(), tflow()
    off = {True: 0, False: 0}
    fired: list[int] = []
    for to_server, data in evil_exchange().wire:
        for hook, ev in app.on_chunk(flow, to_server, data, off[to_server]):
            if hook.name == "HTTP_REQUEST":
                fired += [d.rule_id for d in ips.on_http_request(flow, ev) or []]
        off[to_server] += len(data)
    assert sorted(set(fired)) == [1, 3]


def test_header_buffers_on_http2_have_the_pseudo_headers() -> None:
    from filters.app.events import HttpEvent
    from filters.ips.app_buffers import http_buffer

    app, flow = AppLayer(), tflow()
    off = {True: 0, False: 0}
    tx = None
    for to_server, data in evil_exchange().wire:
        for _, ev in app.on_chunk(flow, to_server, data, off[to_server]):
            if isinstance(ev, HttpEvent) and tx is None:
                tx = ev.tx
        off[to_server] += len(data)
    header = http_buffer(tx, "http.header", True)
    assert header.startswith(b":method: GET\r\n:path: /evil/../evil/payload?x=1\r\n")
    assert b"user-agent: h2-test/1.0\r\n" in header
    assert http_buffer(tx, "http.header_names", True).startswith(b"\r\n:method\r\n:path\r\n")
    assert http_buffer(tx, "http.header", False).startswith(b":status: 200\r\n")
