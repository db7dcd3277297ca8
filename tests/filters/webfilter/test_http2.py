"""The web filter on HTTP/2 (h2c): the site is ``:authority``, and a block resets the connection
(an HTTP/1 block page would be a broken frame to an HTTP/2 client)."""
from __future__ import annotations

from filters.app.events import HttpEvent
from filters.app.layer import AppLayer
from filters.engine import Action, InjectKind
from filters.webfilter.categories import CategoryDB
from filters.webfilter.engine import WebFilter
from tests.filters.app.h2_traffic import H2Talk, evil_exchange
from tests.filters.factories import tflow


def first_request(wire):
    app, flow = AppLayer(), tflow()
    off = {True: 0, False: 0}
    for to_server, data in wire:
        for _, ev in app.on_chunk(flow, to_server, data, off[to_server]):
            if isinstance(ev, HttpEvent) and ev.stage == "request_headers":
                return flow, ev
        off[to_server] += len(data)
    raise AssertionError("no request")


def webfilter() -> WebFilter:
    wf = WebFilter()
    wf.configure({"blocked": ["malware"]})
    wf.db = CategoryDB.from_entries({"malware": ["evil.example"], "games": ["fun.example"]})
    return wf


def test_authority_is_categorised_and_blocked_with_resets() -> None:
    wf = webfilter()
    flow, ev = first_request(evil_exchange().wire)
    assert wf.needs_more(flow)
    (verdict,) = wf.on_http_request(flow, ev)
    assert verdict.action is Action.DROP
    assert [i.kind for i in verdict.inject] == [InjectKind.TCP_RESET]
    details = verdict.metadata["webfilter"]
    assert details["host"] == "evil.example" and details["categories"] == ["malware"]
    assert not wf.needs_more(flow)  # judged once per connection, as HTTP/1


def test_allowed_authority_passes() -> None:
    talk = H2Talk()
    talk.request(1, [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "fun.example")])
    wf = webfilter()
    flow, ev = first_request(talk.wire)
    assert ev.tx.host == b"fun.example"
    assert wf.on_http_request(flow, ev) == []
