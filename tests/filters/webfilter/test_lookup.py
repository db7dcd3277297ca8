"""Names the local lists do not have: asked of a category service, cached, never held past the timeout."""
from __future__ import annotations

import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
from scapy.layers.inet import IP, UDP

from agent.config import parse_config
from agent.dataplane.performers import perform
from agent.dataplane.worker import pipeline_from_config
from filters.app.dns import build_query
from filters.engine import ConfigError, InjectKind
from filters.packet import Side, parse_ip
from filters.pipeline import Outcome
from filters.webfilter.engine import WebFilter
from filters.webfilter.lookup import LookupCache

CA_FILE = [""]  # set by the pki fixture (the test CA the service's certificate comes from)
ANSWERS = {"fresh-phish.example": ["phishing"], "new-news.example": ["news"], "plain.example": []}


class CategoryService(BaseHTTPRequestHandler):
    hits: list[str] = []
    delay = 0.0

    def do_GET(self) -> None:  # noqa: N802
        from urllib.parse import parse_qs, urlparse

        name = parse_qs(urlparse(self.path).query).get("name", [""])[0]
        type(self).hits.append(name)
        time.sleep(type(self).delay)
        body = json.dumps({"name": name, "categories": ANSWERS.get(name, []), "ttl": 600}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from opscenter.ca import init_ca

    return init_ca(tmp_path_factory.mktemp("pki"), ["localhost"], ["127.0.0.1"])


@pytest.fixture
def service(pki: Any) -> Iterator[str]:
    """The category service over HTTPS with the test CA (the box sends its token only so)."""
    CategoryService.hits = []
    CategoryService.delay = 0.0
    srv = ThreadingHTTPServer(("127.0.0.1", 0), CategoryService)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pki.cert), str(pki.key))
    CA_FILE[0] = str(pki.ca_cert)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{srv.server_address[1]}/api/v1/category"
    srv.shutdown()


def dns_query(name: str, txid: int, sport: int) -> bytes:
    payload = build_query(name, txid=txid)
    return bytes(IP(src="192.0.2.11", dst="198.51.100.53") / UDP(sport=sport, dport=53) / payload)


class Box:
    """The real pipeline with the web filter; I/O done by the real performer, when the test says."""

    def __init__(self, url: str, tmp_path: Path, timeout: float = 0.5, ca_file: str = "") -> None:
        db = tmp_path / "db"
        (db / "phishing").mkdir(parents=True)
        (db / "phishing" / "domains").write_text("known-phish.example\n")
        cfg = parse_config({
            "settings_sheet": {"management_ip": "192.0.2.2/24", "gateway": "192.0.2.1"},
            "engines": {"firewall": {"enabled": False},
                        "webfilter": {"enabled": True, "database": str(db),
                                      "lookup": {"enabled": True, "url": url, "timeout": timeout,
                                                 "ca_file": ca_file or CA_FILE[0]}}},
        })
        self.events: list[dict[str, Any]] = []
        self.pipeline = pipeline_from_config(cfg, self.events.append)
        self.sport = 40000

    def query(self, name: str, now: float) -> list[Any]:
        self.sport += 1
        return self.pipeline.process(parse_ip(dns_query(name, self.sport, self.sport), now, Side.LAN), self.sport, now)

    def do_io(self, now: float) -> list[Any]:
        out = []
        for hold_id, req in self.pipeline.take_io():
            result, error = perform(req)
            out += self.pipeline.io_done(hold_id, result, error, now)
        return out

    def alerts(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event_type") == "alert"]


def test_unknown_name_is_held_asked_and_blocked_then_cached(service: str, tmp_path: Path):
    box = Box(service, tmp_path)
    assert box.query("fresh-phish.example", 1.0) == []  # held while the center is asked
    (rel,) = box.do_io(1.01)
    assert rel.outcome is Outcome.DROP and rel.inject[0].kind is InjectKind.DNS_ANSWER  # sinkholed
    (alert,) = box.alerts()
    assert alert["webfilter"]["categories"] == ["phishing"] and alert["webfilter"]["matched"] == "center lookup"
    # Asked once: the second query is answered from the cache, without a hold.
    (rel2,) = box.query("fresh-phish.example", 2.0)
    assert rel2.outcome is Outcome.DROP
    assert box.pipeline.take_io() == []
    assert CategoryService.hits == ["fresh-phish.example"]


def test_known_and_allowed_names_pass_and_no_category_is_cached_too(service: str, tmp_path: Path):
    box = Box(service, tmp_path)
    (rel,) = box.query("known-phish.example", 1.0)  # in the local lists: no lookup
    assert rel.outcome is Outcome.DROP
    assert box.query("new-news.example", 1.1) == []
    (rel,) = box.do_io(1.11)
    assert rel.outcome is Outcome.ACCEPT  # news is not a blocked category
    assert box.query("plain.example", 1.2) == []
    (rel,) = box.do_io(1.21)
    assert rel.outcome is Outcome.ACCEPT
    for name in ("new-news.example", "plain.example"):
        (rel,) = box.query(name, 2.0)
        assert rel.outcome is Outcome.ACCEPT
    assert CategoryService.hits == ["new-news.example", "plain.example"]
    assert box.alerts() == [] or all(a["alert"]["signature_id"] != 9_300_020 for a in box.alerts())


def test_timeout_allows_and_logs_and_the_late_answer_still_fills_the_cache(service: str, tmp_path: Path):
    box = Box(service, tmp_path, timeout=0.2)
    assert box.query("fresh-phish.example", 10.0) == []
    io = box.pipeline.take_io()
    (rel,) = box.pipeline.tick(10.25)  # the center has not answered within the timeout
    assert rel.outcome is Outcome.ACCEPT
    (log,) = box.alerts()
    assert log["alert"]["action"] == "allowed" and "timed out" in log["alert"].get("reason", json.dumps(log))
    (hold_id, req), = io
    result, error = perform(req)  # the answer arrives late
    assert box.pipeline.io_done(hold_id, result, error, 10.4) == []
    (rel,) = box.query("fresh-phish.example", 11.0)  # the next lookup of the name is blocked at once
    assert rel.outcome is Outcome.DROP


def test_unreachable_center_allows_and_logs(tmp_path: Path, pki: Any):
    box = Box("https://127.0.0.1:9/api/v1/category", tmp_path, ca_file=str(pki.ca_cert))
    assert box.query("fresh-phish.example", 1.0) == []
    (rel,) = box.do_io(1.1)
    assert rel.outcome is Outcome.ACCEPT
    (log,) = box.alerts()
    assert log["alert"]["signature_id"] == 9_300_020 and log["alert"]["action"] == "allowed"
    (rel,) = box.query("fresh-phish.example", 1.2)  # the failure is remembered briefly: no hold
    assert rel.outcome is Outcome.ACCEPT


def test_cache_expires_and_evicts_the_least_recent():
    now = [0.0]
    cache = LookupCache(2, clock=lambda: now[0])
    cache.put("a", frozenset({"x"}), 10)
    cache.put("b", frozenset(), 10)
    assert cache.get("a") == {"x"}
    cache.put("c", frozenset({"y"}), 10)  # b was used least recently
    assert cache.get("b") is None and cache.get("a") == {"x"}
    now[0] = 11
    assert cache.get("a") is None and len(cache) == 1


@pytest.mark.parametrize("lookup, key", [
    ({"enabled": True}, "lookup.url"),
    ({"enabled": True, "url": "ftp://x"}, "lookup.url"),
    ({"enabled": True, "url": "http://center.example/api/v1/category", "ca_file": "/ca.crt"}, "lookup.url"),
    ({"enabled": False, "url": "HTTP://center.example/api/v1/category"}, "lookup.url"),
    ({"enabled": True, "url": "https://center.example/api/v1/category"}, "lookup.ca_file"),
    ({"enabled": True, "url": "https://center.example/api/v1/category", "ca_file": ""}, "lookup.ca_file"),
    ({"timeout": 30}, "lookup.timeout"),
    ({"timeout": "fast"}, "lookup.timeout"),
    ({"cache_size": 1}, "lookup.cache_size"),
    ({"colour": 1}, "lookup.colour"),
])
def test_bad_lookup_settings_name_the_key(lookup: dict[str, Any], key: str):
    with pytest.raises(ConfigError) as exc:
        WebFilter().configure({"lookup": lookup})
    assert exc.value.key == key


class _Recorder:
    """Stands in for the performer's HTTP session: records what would have been sent."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def get(self, url: str, **kw: Any) -> Any:
        self.calls.append({"url": url, **kw})
        raise ConnectionError("recorded, not sent")


@pytest.mark.parametrize("args", [
    {"url": "http://center.example/api/v1/category", "ca_file": "/etc/vcr-agent/center-ca.crt"},
    {"url": "https://center.example/api/v1/category", "ca_file": ""},
    {"url": "https://center.example/api/v1/category"},
])
def test_performer_never_sends_the_token_in_clear_or_to_the_system_cas(args: dict[str, Any], tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch):
    """Item 7 (box side): http:// or no CA file of the center: refused before anything is sent."""
    from agent.dataplane import performers
    from filters.engine import IORequest

    state = tmp_path / "center.json"
    state.write_text(json.dumps({"token": "secret-device-token"}))
    rec = _Recorder()
    monkeypatch.setattr(performers, "_SESSION", rec)
    result, error = perform(IORequest("category_lookup", {**args, "name": "x.example", "auth_file": str(state)}))
    assert result is None and error and "refused" in error
    assert rec.calls == []  # the token never left the box


def test_performer_uses_the_center_ca_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pki: Any):
    from agent.dataplane import performers
    from filters.engine import IORequest

    assert performers._SESSION.trust_env is False  # $REQUESTS_CA_BUNDLE cannot swap the CA in
    state = tmp_path / "center.json"
    state.write_text(json.dumps({"token": "secret-device-token"}))
    rec = _Recorder()
    monkeypatch.setattr(performers, "_SESSION", rec)
    perform(IORequest("category_lookup", {"url": "https://center.example/api/v1/category", "name": "x.example",
                                          "ca_file": str(pki.ca_cert), "auth_file": str(state)}))
    (call,) = rec.calls
    assert call["verify"] == str(pki.ca_cert) and call["allow_redirects"] is False
    assert call["headers"] == {"Authorization": "Bearer secret-device-token"}


def test_a_certificate_from_another_ca_is_refused(service: str, tmp_path: Path):
    """The service's certificate is from the test CA; trusting another CA (as the system store would be)
    fails the handshake, so the lookup errs and the name is allowed."""
    from opscenter.ca import init_ca

    other = init_ca(tmp_path / "other", ["localhost"], ["127.0.0.1"])
    box = Box(service, tmp_path, ca_file=str(other.ca_cert))
    assert box.query("fresh-phish.example", 1.0) == []
    (rel,) = box.do_io(1.1)
    assert rel.outcome is Outcome.ACCEPT and CategoryService.hits == []
