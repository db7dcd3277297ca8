"""Port check: table 4's features from probe results, bilingual fixes, text and JSON output, real probes."""
from __future__ import annotations

import json
import socket
import threading

import pytest

from lab import dns as labdns
from agent.config import parse_config
from agent.link.portcheck import (
    CHECKS, FEATURES, CheckResult, PortcheckResult, check_tcp, dns_query, endpoints, format_text,
)


def result(*failed: str, unresolved: tuple[str, ...] = ()) -> PortcheckResult:
    res = PortcheckResult(checked_at="2026-11-25T22:00:00Z", center_host="ops.vcr.example")
    for check in CHECKS:
        target = {"udp/53": "198.51.100.53", "udp/123": "198.51.100.123"}.get(check, "ops.vcr.example")
        if check in unresolved:
            res.results.append(CheckResult(check, target, None, error="unresolved"))
        elif check in failed:
            res.results.append(CheckResult(check, target, False, "198.51.100.80", error="timeout", detail="timed out"))
        else:
            res.results.append(CheckResult(check, target, True, "198.51.100.80", 1.5))
    return res


def test_table_4_is_complete():
    assert [f[0] for f in FEATURES] == ["activation", "monitoring", "atp", "ips", "webfilter", "mail_av", "web_av",
                                        "antispam", "sandbox"]
    needs = {f[0]: set(f[3]) for f in FEATURES}
    assert needs["webfilter"] == {"udp/53", "tcp/80", "tcp/443", "tcp/6060", "tcp/6061"}
    assert needs["monitoring"] == {"udp/53", "tcp/443", "tcp/22", "udp/123"}
    assert needs["antispam"] == {"udp/53", "tcp/80", "tcp/443"}
    assert all({"udp/53", "tcp/443"} <= n for n in needs.values())


def test_all_ok():
    res = result()
    assert res.ok and res.fixes() == [] and all(f["ok"] for f in res.features())
    text = format_text(res)
    assert "すべての通信が可能です / everything the service needs is reachable" in text
    assert json.loads(json.dumps(res.as_dict()))["ok"] is True


def test_blocked_6060_names_only_the_web_filter():
    res = result("tcp/6060")
    assert not res.ok and res.failed_checks() == ["tcp/6060"]
    bad = [f["feature"] for f in res.features() if not f["ok"]]
    assert bad == ["webfilter"]
    [fix] = res.fixes()
    assert fix["ja"] == "ファイアウォールで ops.vcr.example への TCP 6060 の発信を許可してください"
    assert fix["en"] == "Allow outbound TCP 6060 to ops.vcr.example on your firewall"
    assert fix["features"] == ["webfilter"]
    text = format_text(res)
    assert "NG  TCP  6060  ops.vcr.example (198.51.100.80): 応答なし" in text
    assert "NG  Web フィルター (URL カテゴリ問い合わせ) / web filter (URL category queries)  <- TCP 6060" in text
    assert "影響する機能 / features affected: Web フィルター" in text


def test_blocked_443_breaks_everything_and_ntp_only_monitoring():
    res = result("tcp/443", "udp/123")
    assert {f["feature"] for f in res.features() if not f["ok"]} == {f[0] for f in FEATURES}
    fixes = {f["check"]: f for f in res.fixes()}
    assert fixes["udp/123"]["features"] == ["monitoring"]
    assert "UDP 123" in fixes["udp/123"]["ja"] and "Allow outbound UDP 123 (NTP)" in fixes["udp/123"]["en"]


def test_dns_failure_explains_untested_ports():
    res = result("udp/53", unresolved=("tcp/80",))
    fixes = {f["check"]: f for f in res.fixes()}
    assert "UDP 53" in fixes["udp/53"]["ja"] and "settings sheet" in fixes["udp/53"]["en"]
    assert "fix DNS (UDP 53) first" in fixes["tcp/80"]["en"]
    assert "--  TCP    80" in format_text(res)


def test_one_working_dns_server_is_enough():
    res = result()
    res.results.insert(0, CheckResult("udp/53", "192.0.2.99", False, error="timeout"))
    assert res.check_ok("udp/53") and res.ok


def test_endpoints_default_to_the_center_host():
    cfg = parse_config({"center": {"url": "https://ops.vcr.example:8443", "portcheck": {"endpoints": {6060: "wf.vcr.example"}}}})
    assert endpoints(cfg) == {443: "ops.vcr.example", 80: "ops.vcr.example", 22: "ops.vcr.example",
                              6060: "wf.vcr.example", 6061: "ops.vcr.example"}


def test_real_dns_query_and_tcp_probes():
    labdns.RECORDS["ops.vcr.example"] = ("198.51.100.80", "2001:db8:100::80")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(4096)
            except socket.timeout:
                continue
            reply = labdns.answer(data)
            if reply:
                sock.sendto(reply, peer)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    try:
        port = sock.getsockname()[1]
        assert dns_query("127.0.0.1", "ops.vcr.example", port=port, timeout=2) == ["198.51.100.80"]
        assert dns_query("127.0.0.1", "ops.vcr.example", qtype=28, port=port, timeout=2) == ["2001:db8:100::80"]
        with pytest.raises(LookupError, match="nxdomain"):
            dns_query("127.0.0.1", "nothing.vcr.example", port=port, timeout=2)
        ok = check_tcp(listener.getsockname()[1], "local", "127.0.0.1", 2)
        assert ok.ok and ok.check == f"tcp/{listener.getsockname()[1]}"
        refused = check_tcp(closed.getsockname()[1], "local", "127.0.0.1", 2)
        assert refused.ok is False and refused.error == "refused"
    finally:
        stop.set()
        t.join()
        for s in (sock, listener, closed):
            s.close()


def test_web_antivirus_needs_tcp_443_for_its_pattern_updates():
    from agent.link.portcheck import FEATURES

    needs = {key: ports for key, _, _, ports in FEATURES}
    assert "tcp/443" in needs["web_av"] and "udp/53" in needs["web_av"]
