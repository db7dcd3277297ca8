"""The ATP (C&C) engine through the real pipeline, offline: what is blocked where, and what the alarm says."""
from __future__ import annotations

import io
import json
import random
import socket
from pathlib import Path
from typing import Any

import pytest

from lab.bench.capture import Capture, TcpConversation, tls_client_hello
from agent.config import parse_config
from agent.offline.replay import OfflineOptions, run_pcap
from filters.app.dns import build_query, build_response, encode_name
from filters.atp import SID_DNS, SID_DNS_ANSWER, SID_HTTP_HOST, SID_IP, SID_TLS, SID_URL, Atp
from filters.engine import ConfigError, EngineContext

PC = socket.inet_aton("192.0.2.11")
CNC = socket.inet_aton("203.0.113.66")
WEB = socket.inet_aton("198.51.100.10")
DNS = socket.inet_aton("198.51.100.53")

FEED = """\
# Feodo Tracker style: the botnet C2s
first_seen_utc,dst_ip,dst_port,c2_status,last_online,malware
2026-11-01 10:00:00,203.0.113.66,4443,online,2026-11-25,QakBot
2026-11-01 10:00:00,198.51.100.77,8080,offline,2026-11-02,Emotet
"""
DOMAINS = "# C2 domains\nevil-c2.example\nbad.example\n"
URLS = "||malware-host.example/payload/^\n"


def dns_query(name: str, txid: int = 0x1234, rrtype: int = 1) -> bytes:
    return build_query(name, rrtype, txid=txid)


def dns_answer(name: str, records: list[tuple[int, bytes]], txid: int = 0x1234) -> bytes:
    return build_response(build_query(name, txid=txid), answers=records, ttl=60)


@pytest.fixture
def feeds(tmp_path: Path) -> Path:
    d = tmp_path / "threatintel"
    d.mkdir()
    (d / "feodo.csv").write_text(FEED)
    (d / "domains.txt").write_text(DOMAINS)
    (d / "urlhaus-filter.txt").write_text("[Adblock Plus]\n! URLhaus style\n" + URLS)
    # a bundle's documentation is not a feed (a URL in a licence must not become an indicator)
    (d / "LICENSE-CC0.md").write_text("https://creativecommons.org/publicdomain/zero/1.0/\n")
    (d / "README").write_text("bad.example is an example\n")
    (d / "manifest.json").write_text('{"files": []}')
    return d


def run(tmp_path: Path, cap: Capture, feeds: Path, **atp: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    pcap = tmp_path / "t.pcap"
    cap.write(pcap)
    section = {"enabled": True, "feeds": [str(feeds)], "allow_documentation_addresses": True, **atp}
    cfg = parse_config({
        "settings_sheet": {"management_ip": "192.0.2.2/24", "gateway": "192.0.2.1"},
        "engines": {"firewall": {"enabled": False}, "atp": section},
        "home_net": ["192.0.2.0/24"],
    })
    out = io.StringIO()
    result = run_pcap(OfflineOptions(pcap=pcap, simulate_ips=True), cfg, out)
    return [json.loads(line) for line in out.getvalue().splitlines()], result


def alerts(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("event_type") == "alert"]


def test_dns_query_for_a_listed_domain_is_sinkholed_and_names_host_indicator_threat(tmp_path: Path, feeds: Path):
    cap = Capture()
    cap.udp(1.0, (PC, 40000), (DNS, 53), dns_query("www.evil-c2.example"))
    cap.udp(1.1, (PC, 40001), (DNS, 53), dns_query("notevil-c2.example"))  # never matches evil-c2.example
    records, result = run(tmp_path, cap, feeds)
    (a,) = alerts(records)
    assert a["alert"]["signature_id"] == SID_DNS
    assert a["alert"]["action"] == "blocked"
    assert a["alert"]["severity"] == 1
    meta = a["atp"]
    assert meta["lan_host"] == "192.0.2.11"
    assert meta["indicator"] == "evil-c2.example"
    assert meta["seen"] == "www.evil-c2.example"
    assert meta["threat"] == "malware"
    assert result["dropped"] == 1  # the real query; the agent answers it


def test_dns_answer_with_a_listed_address_or_cname_is_dropped(tmp_path: Path, feeds: Path):
    cap = Capture()
    cap.udp(1.0, (PC, 40000), (DNS, 53), dns_query("innocent.example"))
    cap.udp(1.01, (DNS, 53), (PC, 40000), dns_answer("innocent.example", [(1, CNC)]))
    cap.udp(1.1, (PC, 40002), (DNS, 53), dns_query("cdn.example", txid=7))
    cap.udp(1.11, (DNS, 53), (PC, 40002), dns_answer("cdn.example", [(5, encode_name("x.bad.example"))], txid=7))
    records, _ = run(tmp_path, cap, feeds)
    got = sorted((a["alert"]["signature_id"], a["atp"]["indicator"]) for a in alerts(records))
    assert got == [(SID_DNS_ANSWER, "203.0.113.66"), (SID_DNS_ANSWER, "bad.example")]


def test_connection_to_a_listed_c2_is_dropped_at_its_first_packet(tmp_path: Path, feeds: Path):
    rng = random.Random(1)
    cap = Capture()
    conv = TcpConversation(cap, (PC, 50000), (CNC, 4443), 1.0, 0.01, rng)
    conv.open()
    conv.send(True, b"beacon")
    ok = TcpConversation(cap, (PC, 50001), (WEB, 80), 2.0, 0.01, rng)
    ok.open()
    ok.send(True, b"GET / HTTP/1.1\r\nHost: www.example.org\r\n\r\n")
    records, result = run(tmp_path, cap, feeds)
    (a,) = alerts(records)
    assert a["alert"]["signature_id"] == SID_IP
    assert (a["src_ip"], a["dest_ip"], a["dest_port"]) == ("192.0.2.11", "203.0.113.66", 4443)
    assert a["atp"]["threat"] == "QakBot"
    assert a["atp"]["indicator"] in ("203.0.113.66", "203.0.113.66:4443")
    assert result["dropped"] >= 1


def test_offline_c2_is_listed_by_port_only(tmp_path: Path, feeds: Path):
    rng = random.Random(2)
    cap = Capture()
    TcpConversation(cap, (PC, 50000), (socket.inet_aton("198.51.100.77"), 443), 1.0, 0.01, rng).open()
    hit = TcpConversation(cap, (PC, 50001), (socket.inet_aton("198.51.100.77"), 8080), 2.0, 0.01, rng)
    hit.open()
    records, _ = run(tmp_path, cap, feeds)
    (a,) = alerts(records)
    assert (a["dest_port"], a["atp"]["indicator"], a["atp"]["threat"]) == (8080, "198.51.100.77:8080", "Emotet")


def test_tls_sni_and_http_host_and_url(tmp_path: Path, feeds: Path):
    rng = random.Random(3)
    cap = Capture()
    tls = TcpConversation(cap, (PC, 50010), (WEB, 443), 1.0, 0.01, rng)
    tls.open()
    tls.send(True, tls_client_hello(rng, "api.evil-c2.example"))
    host = TcpConversation(cap, (PC, 50011), (WEB, 80), 2.0, 0.01, rng)
    host.open()
    host.send(True, b"GET /gate.php HTTP/1.1\r\nHost: bad.example\r\n\r\n")
    url = TcpConversation(cap, (PC, 50012), (WEB, 80), 3.0, 0.01, rng)
    url.open()
    url.send(True, b"GET /payload/x.exe HTTP/1.1\r\nHost: cdn.malware-host.example\r\n\r\n")
    clean = TcpConversation(cap, (PC, 50013), (WEB, 80), 4.0, 0.01, rng)
    clean.open()
    clean.send(True, b"GET /payloads HTTP/1.1\r\nHost: malware-host.example\r\n\r\n")  # not at a separator
    records, _ = run(tmp_path, cap, feeds)
    got = {a["src_port"]: (a["alert"]["signature_id"], a["atp"]["indicator"], a["atp"]["where"]) for a in alerts(records)}
    assert got == {
        50010: (SID_TLS, "evil-c2.example", "tls_sni"),
        50011: (SID_HTTP_HOST, "bad.example", "http_host"),
        50012: (SID_URL, "malware-host.example/payload/", "http_url"),
    }
    assert got and all(a["alert"]["action"] == "blocked" for a in alerts(records))


def test_monitor_only_alerts_without_blocking(tmp_path: Path, feeds: Path):
    cap = Capture()
    cap.udp(1.0, (PC, 40000), (DNS, 53), dns_query("evil-c2.example"))
    records, result = run(tmp_path, cap, feeds, monitor_only=True)
    (a,) = alerts(records)
    assert a["alert"]["action"] == "allowed"
    assert result["dropped"] == 0


def test_documentation_addresses_need_the_lab_opt_in(tmp_path: Path, feeds: Path):
    rng = random.Random(4)
    cap = Capture()
    TcpConversation(cap, (PC, 50000), (CNC, 4443), 1.0, 0.01, rng).open()
    records, _ = run(tmp_path, cap, feeds, allow_documentation_addresses=False)
    assert alerts(records) == []  # a real box never lists documentation/private addresses


def test_bad_feed_is_reported_and_the_rest_loads(tmp_path: Path, feeds: Path):
    engine = Atp()
    engine.configure({"feeds": [str(feeds), str(tmp_path / "absent.txt"),
                                {"path": str(feeds / "domains.txt"), "format": "plain"}],
                      "allow_documentation_addresses": True}, EngineContext(management_ipv4="192.0.2.2"))
    engine.prepare()
    summary = engine.summary()
    assert summary["feeds"] == 4  # three feed files of the folder (not its licence, README, manifest) + one file
    assert engine.intel.match_url("creativecommons.org", "/publicdomain/zero/1.0/") is None
    assert any("absent.txt" in e for e in summary["feed_errors"])
    assert summary["by_kind"]["domain"] == 2 and summary["by_kind"]["ip_port"] == 2
    assert engine.intel.match_domain("evil-c2.example") is not None


@pytest.mark.parametrize("section, key", [
    ({"feeds": "x"}, "feeds"),
    ({"feeds": [{"path": "x", "format": "nope"}]}, "feeds[0].format"),
    ({"feeds": [{"file": "x"}]}, "feeds[0].file"),
    ({"dns_action": "drop"}, "dns_action"),
    ({"sinkhole_ipv4": "2001:db8::1"}, "sinkhole_ipv4"),
    ({"monitor_only": "yes"}, "monitor_only"),
    ({"colour": 1}, "colour"),
])
def test_bad_config_names_the_key(section: dict[str, Any], key: str):
    with pytest.raises(ConfigError) as exc:
        Atp().configure(section)
    assert exc.value.key == key


def test_c2_channel_is_found_when_the_servers_packet_comes_first(tmp_path: Path, feeds: Path):
    """A flow whose start was not seen (a bypassed queue, a forgotten flow) begins here with the
    server's packet, so its 'client' is the C&C server: its listed ip:port channel is still found,
    and the alarm names the LAN host, not the server."""
    rng = random.Random(3)
    cap = Capture()
    conv = TcpConversation(cap, (PC, 50001), (socket.inet_aton("198.51.100.77"), 8080), 1.0, 0.01, rng)
    conv.segment(False, 0x18, b"tasks")  # PSH+ACK from the server, no handshake seen
    records, _ = run(tmp_path, cap, feeds)
    (a,) = alerts(records)
    assert a["alert"]["signature_id"] == SID_IP and a["atp"]["indicator"] == "198.51.100.77:8080"
    assert a["atp"]["lan_host"] == "192.0.2.11" and a["atp"]["seen"] == "198.51.100.77:8080"
