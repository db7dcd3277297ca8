"""The pure parts of the benchmark: statistics, verdicts, parsers, the rate search, the configurations,
the synthetic capture, the offline figures and the Markdown report."""
from __future__ import annotations

import gzip
import json
import random
import socket
from pathlib import Path

import pytest

from agent.bench import (
    ET_OPEN_MISSING,
    FW_METRICS,
    IPS_METRICS,
    BenchError,
    Capture,
    Goal,
    METRICS,
    Metric,
    OfflineResult,
    Report,
    Section,
    TcpConversation,
    agent_setups,
    busy_share,
    command_line,
    cpu_ticks,
    dns_message,
    foreign_use,
    engines_off,
    eve_alerts,
    et_open_files,
    http_response,
    inet_checksum,
    iperf_tcp_gbps,
    iperf_udp,
    machine_info,
    median,
    noise_line,
    noise_note,
    offline_cells,
    paired,
    parse_iperf,
    parse_nfqueue,
    parse_ping,
    percentile,
    ping_tail,
    ratio,
    render_markdown,
    render_table,
    render_terminal,
    rotated,
    search_rate,
    shipped_engines,
    skipped_rows,
    summarize,
    tls_client_hello,
    verdict_ok,
    write_capture,
)
from agent.pcapfile import PcapReader
from filters.app.tls import TlsParser
from filters.packet import parse_linktype

BULK = next(m for m in FW_METRICS if m.key == "bulk_gbps")
PING50 = next(m for m in METRICS if m.key == "ping_p50")
RSS = next(m for m in METRICS if m.key == "rss_mib")
UDP = next(m for m in METRICS if m.key == "udp_pps")


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([4, 1, 3, 2], 50) == 2.5
    assert percentile([1, 2, 3, 4], 0) == 1
    assert percentile([1, 2, 3, 4], 100) == 4
    assert percentile(list(range(101)), 99) == pytest.approx(99)
    assert percentile([7.0], 99) == 7.0


def test_percentile_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_median_and_ratio() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([]) is None
    assert ratio(4.5, 9.0) == 0.5
    assert ratio(None, 9.0) is None
    assert ratio(1.0, 0.0) is None


def test_goals() -> None:
    assert Goal("min_ratio", 0.9).met(10.0, 9.0)
    assert not Goal("min_ratio", 0.9).met(10.0, 8.9)
    assert Goal("max_delta", 0.2).met(0.1, 0.3)
    assert not Goal("max_delta", 0.2).met(0.1, 0.31)
    assert Goal("min_ratio", 0.3).describe("conn/s") == "agent ≥ 0.3× bare"
    assert Goal("max_delta", 0.2).describe("ms") == "agent − bare ≤ +0.2 ms"


def test_summarize_ratio_metric() -> None:
    row = summarize(BULK, [9.0, 10.0, 11.0], [8.0, 9.5, 9.9])
    assert (row.bare, row.agent) == (10.0, 9.5)
    assert row.compare == "0.95×"
    assert row.verdict == "pass"
    assert summarize(BULK, [10.0], [5.0]).verdict == "FAIL"


def test_summarize_delta_metric() -> None:
    row = summarize(PING50, [0.05, 0.06, 0.07], [0.10, 0.11, 0.30])
    assert row.compare == "+0.050 ms (1.83×)"
    assert row.verdict == "pass"
    assert summarize(PING50, [0.05], [0.5]).verdict == "FAIL"


def test_summarize_missing_samples_is_an_error_and_goalless_is_reported() -> None:
    row = summarize(BULK, [9.0], [], ["agent, run 1: boom"])
    assert row.verdict == "error" and row.errors == ["agent, run 1: boom"]
    assert summarize(UDP, [50_000.0], [40_000.0]).verdict == "reported"
    rss = summarize(RSS, [], [120.0])
    assert rss.verdict == "reported" and rss.bare is None


def test_parse_ping() -> None:
    text = (
        "PING 198.51.100.10 (198.51.100.10) 56(84) bytes of data.\n"
        "64 bytes from 198.51.100.10: icmp_seq=1 ttl=63 time=0.330 ms\n"
        "64 bytes from 198.51.100.10: icmp_seq=2 ttl=63 time=0.127 ms\n"
        "rtt min/avg/max/mdev = 0.048/0.115/0.855/0.045 ms\n"
    )
    assert parse_ping(text) == [0.330, 0.127]


def test_ping_tail() -> None:
    stall = [0.1] * 50 + [40.0, 30.0, 20.0, 10.0] + [0.1] * 50 + [6.0]
    assert ping_tail(stall) == "slowest 40.0 ms; 5 of 105 replies over 5 ms, in 2 run(s) of consecutive replies"
    assert ping_tail([0.1, 0.2]) == "slowest 0.2 ms; 0 of 2 replies over 5 ms"


def test_parse_iperf() -> None:
    tcp = {"end": {"sum_received": {"bits_per_second": 9.0e9}, "sum_sent": {"bits_per_second": 9.1e9}}}
    assert iperf_tcp_gbps(parse_iperf(json.dumps(tcp))) == 9.0
    from agent.bench import iperf_omitted_gbps

    assert iperf_omitted_gbps(tcp) is None  # no -O: nothing omitted
    # -O 1 (iperf3 3.12 layout): the omitted interval is flagged, the end sums leave it out
    omitted = {"intervals": [
        {"sum": {"start": 0, "end": 1.0, "seconds": 1.0, "bytes": 1.0e9, "bits_per_second": 8.0e9, "omitted": True}},
        {"sum": {"start": 0, "end": 1.0, "seconds": 1.0, "bytes": 2.5e9, "bits_per_second": 20.0e9, "omitted": False}},
    ], **tcp}
    assert iperf_omitted_gbps(omitted) == 8.0 and iperf_tcp_gbps(omitted) == 9.0
    udp = {"end": {"sum": {"seconds": 2.0, "packets": 100_000, "lost_packets": 3}}}
    assert iperf_udp(parse_iperf(json.dumps(udp))) == (50_000.0, 3)
    with pytest.raises(BenchError, match="busy"):
        parse_iperf(json.dumps({"error": "the server is busy running a test"}))
    with pytest.raises(BenchError):
        parse_iperf("iperf3: error - unable to connect")


def test_parse_nfqueue() -> None:
    text = "    0  31163     5 2  4016     7     1    18165  1\n    1  31164     0 2  4016     0     0   121534  1\n"
    qs = parse_nfqueue(text)
    assert sorted(qs) == [0, 1]
    assert (qs[0].waiting, qs[0].dropped, qs[0].user_dropped, qs[0].id_sequence) == (5, 7, 1, 18165)
    assert parse_nfqueue("") == {}


def test_search_rate_doubles_then_bisects() -> None:
    capacity = 70_000

    def probe(target: int) -> tuple[float, bool]:
        return float(target), target <= capacity

    best, limited, history = search_rate(probe, 20_000, 5)
    assert [h[0] for h in history] == [20_000, 40_000, 80_000, 60_000, 70_000]
    assert best == 70_000 and not limited


def test_search_rate_stops_when_the_generator_is_the_limit() -> None:
    def probe(target: int) -> tuple[float, bool]:
        return float(min(target, 50_000)), True

    best, limited, history = search_rate(probe, 20_000, 5)
    assert best == 50_000 and limited
    assert [h[0] for h in history] == [20_000, 40_000, 80_000]


def test_search_rate_goes_down_when_the_first_probe_fails() -> None:
    def probe(target: int) -> tuple[float, bool]:
        return float(target), target <= 12_000

    best, _, history = search_rate(probe, 20_000, 4)
    assert [h[0] for h in history] == [20_000, 10_000, 15_000, 12_500]
    assert best == 10_000


def test_machine_info_and_command() -> None:
    info = machine_info("processor\t: 0\nmodel name\t: AMD EPYC\n", "MemTotal:       24684000 kB\n", 2, "6.18.0")
    assert info == {"nproc": "2", "kernel": "6.18.0", "cpu": "AMD EPYC", "memory": "23.5 GiB"}
    assert machine_info("", "", 1, "x")["cpu"] == "unknown"
    assert command_line(5, 5.0) == "`make bench` (= `vcr-agent bench --runs 5 --seconds 5`)"
    assert command_line(3, 5.0) == "`vcr-agent bench --runs 3 --seconds 5`"
    assert command_line(1, 2.5) == "`vcr-agent bench --runs 1 --seconds 2.5`"


def _offline() -> OfflineResult:
    return OfflineResult(
        packets=40_000, frame_bytes=40_000_000, payload_bytes=36_000_000, payload_packets=26_000, load_seconds=7.5,
        rules_active=24_827, rules_loaded=24_811, rules_unsupported=16, rules_bad=0, rss_before_mib=48.0,
        rss_after_mib=216.5, pipeline_samples=[12.5, 12.0, 11.0], alerts=2, top_alerts=[("ET INFO x", 2)],
        pipeline_counters={"packets": 40_000}, patterns=23_507, compile_seconds=1.4, scan_samples=[0.3, 0.4, 0.2],
        scan_callback_samples=[0.5], matches=600_000, gc={"0": [61, 0.8, 6.1], "1": [5, 1.1, 4.8]},
        gc_full_ms=253.0, gc_objects=396_030,
        capture={"http flows": 400, "http transactions": 660, "gzip responses": 170, "dns queries": 300},
    )


def _report(offline: OfflineResult | None = None) -> Report:
    fw_rows = [
        summarize(BULK, [9.0, 9.2, 9.1], [8.5, 8.6, 8.4]),
        summarize(PING50, [0.05, 0.06, 0.05], [0.08, 0.07, 0.09]),
        summarize(RSS, [], [150.0]),
        summarize(Metric("x", "Broken | scenario", "u", 0), [], [], ["bare, run 1: no route"]),
    ]
    ips = next(s for s in agent_setups(Path("/nonexistent")) if s.mode == "ips")
    return Report(
        date="2026-01-01 00:00 UTC",
        machine={"nproc": "2", "kernel": "6.18.0", "cpu": "AMD EPYC", "memory": "23.5 GiB"},
        command=command_line(5, 5.0),
        sections=[Section("Agent, firewall only", "shipped config, IPS off.", fw_rows),
                  Section(ips.title, ips.description, skipped_rows(ips), ips.skipped)],
        samples={"bare": {"bulk_gbps": [9.0, 9.2, 9.1]}, "fw": {"bulk_gbps": [8.5, 8.6, 8.4], "rss_mib": [150.0]},
                 "ips": {"bulk_gbps": [7.0, 7.5, 7.2]}},
        columns=[("bare", "Bare bridge"), ("fw", "Agent, firewall only"), ("ips", "Agent, IPS with ET Open")],
        notes=["HTTP server: nginx"],
        method=["Baseline: a bare bridge."],
        diagnostics=["```", "Chain VCR-FWD", "```"],
        noise=["Before the bench: 3% of the CPUs busy"],
        offline=offline,
        offline_error="" if offline else "skipped: ET Open not found (/x): offline IPS throughput skipped",
        duration="the bench took 9.5 min",
    )


def test_render_markdown() -> None:
    md = render_markdown(_report())
    assert md.startswith("# Benchmarks")
    assert "- Date: 2026-01-01 00:00 UTC (the bench took 9.5 min)" in md
    assert "2 CPUs (AMD EPYC), 23.5 GiB RAM, kernel 6.18.0" in md
    assert "`make bench` (= `vcr-agent bench --runs 5 --seconds 5`)" in md
    assert "- Noise, before the bench: 3% of the CPUs busy" in md
    assert "## Agent, firewall only" in md and "## Agent, IPS with ET Open" in md
    assert "| Scenario | Bare bridge (median) | Agent (median) | Agent vs bare | Goal | Result |" in md
    assert "| Bulk TCP, iperf3 -P 4 | 9.10 Gbit/s | 8.50 Gbit/s | 0.93× | agent ≥ 0.9× bare | pass |" in md
    assert "| Latency, ping p50 | 0.050 ms | 0.080 ms | +0.030 ms (1.60×) | agent − bare ≤ +0.2 ms | pass |" in md
    assert "| Memory, agent RSS with 100k flows | n/a | 150.0 MiB | — | reported | reported |" in md
    assert "Broken \\| scenario" in md and "| error |" in md
    assert "- Agent, firewall only, Broken | scenario: bare, run 1: no route" in md
    assert "| Metric | Bare bridge, per run | Agent, firewall only, per run | Agent, IPS with ET Open, per run |" in md
    assert "| Bulk TCP, iperf3 -P 4 (Gbit/s) | 9.00, 9.20, 9.10 | 8.50, 8.60, 8.40 | 7.00, 7.50, 7.20 |" in md
    assert "| Memory, agent RSS with 100k flows (MiB) | n/a | 150.0 | — |" in md
    assert "## Method" in md and "## Diagnostics" in md
    assert md.endswith("\n") and not md.endswith("\n\n")


def test_render_markdown_marks_a_missing_et_open_loudly() -> None:
    md = render_markdown(_report())
    assert "**Skipped: ET Open not found (no *.rules and classification.config in /nonexistent): these rows" in md
    assert "| Bulk TCP, iperf3 -P 4 | — | — | — | agent ≥ 0.8× bare | skipped: ET Open not found |" in md
    assert "## Offline IPS throughput (ET Open, no lab)" in md
    assert "**skipped: ET Open not found (/x): offline IPS throughput skipped**" in md
    assert "ET Open not found" in render_terminal(_report())


def test_render_markdown_offline_section() -> None:
    md = render_markdown(_report(_offline()))
    assert "Capture: 40,000 packets, 40.0 MB of frames, 36.0 MB of TCP/UDP payload in 26,000 packets: 400 HTTP/1.1" in md
    assert "660 transactions (170 gzip responses" in md
    assert "| Rules active / loaded | 24,811" not in md
    assert "| Rules active / loaded | 24,827 / 24,811 (16 unsupported, 0 bad) |" in md
    assert "| Rule load (build_engines: parse + compile) | 7.5 s |" in md
    assert "| RSS after loading | 216.5 MiB (48.0 MiB before) |" in md
    assert "26.7 Mbit/s of frames, 24.0 Mbit/s of payload, 3,333 pkt/s (12.0 s, median of 3)" in md
    assert ("960.0 Mbit/s of payload (0.30 s, median of 3; with a counting match callback 576.0 Mbit/s; "
            "compile 1.4 s)") in md
    assert "| Pipeline / hyperscan (same payload bytes) | 0.025× (2.5%) |" in md
    assert "- Per pass: pipeline 12.50, 12.00, 11.00 s; hyperscan 0.30, 0.40, 0.20 s; hyperscan with the match" in md
    assert ("generation 0: 61 collections, longest 0.8 ms, 6 ms in all; generation 1: 5 collections, longest "
            "1.1 ms, 5 ms in all. One full collection with ET Open loaded (396,030 tracked objects) took 253 ms.") in md


def test_offline_rates_and_ratio() -> None:
    res = _offline()
    assert res.pipeline_mbps == pytest.approx(40e6 * 8 / 12 / 1e6)
    assert res.pipeline_payload_mbps == pytest.approx(24.0)
    assert res.pipeline_pps == pytest.approx(40_000 / 12)
    assert res.scan_mbps == pytest.approx(960.0)
    assert res.share_of_limit == pytest.approx(0.3 / 12)  # the same bytes: scan time over pipeline time
    cells = offline_cells(res)
    assert cells[0] == ["Measure", "Result"] and len(cells) == 7
    zero = OfflineResult(**{**res.__dict__, "pipeline_samples": [], "scan_samples": [0.0]})
    assert zero.pipeline_mbps is None and zero.share_of_limit is None
    assert offline_cells(zero)[-1][1] == "—"


def test_render_table_aligns_columns() -> None:
    text = render_table(_report().rows)
    lines = text.splitlines()
    assert lines[0].startswith("Scenario")
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert any("8.50 Gbit/s" in ln and "pass" in ln for ln in lines)


def test_cpu_ticks_and_busy_share() -> None:
    before = cpu_ticks("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n")
    after = cpu_ticks("cpu  200 0 100 850 50 0 0 0 0 0\n")
    assert before == (150, 1000) and after == (300, 1200)
    assert busy_share(before, after) == 0.75
    assert busy_share((0, 0), (0, 0)) == 0.0
    assert cpu_ticks("") == (0, 0)


def test_paired_and_noise_note() -> None:
    assert paired([10.0, 20.0], [9.0, 10.0], delta=False) == [0.9, 0.5]
    assert paired([0.1, 0.2], [0.15, 0.2], delta=True) == pytest.approx([0.05, 0.0])
    note = noise_note(BULK, [10.0, 20.0, 10.0], [9.5, 10.0, 12.0])
    assert note is not None and "0.95×, 0.50×, 1.20×" in note and "2 of 3 meet it" in note
    assert noise_note(BULK, [10.0, 10.0], [9.5, 9.6]) is None  # all meet the goal
    assert noise_note(BULK, [10.0, 10.0], [5.0, 6.0]) is None  # none does
    assert noise_note(UDP, [1.0, 2.0], [2.0, 1.0]) is None  # no goal
    assert noise_note(BULK, [10.0], [5.0]) is None  # one run


def test_agent_setups_with_and_without_et_open(tmp_path: Path) -> None:
    (tmp_path / "b.rules").write_text("")
    (tmp_path / "a.rules").write_text("")
    (tmp_path / "classification.config").write_text("")
    fw, ips = agent_setups(tmp_path, ["firewall", "ips", "webfilter"])
    assert (fw.mode, fw.memory, fw.skipped) == ("fw", True, "")
    assert fw.overrides == {"engines.ips.enabled": False, "engines.webfilter.enabled": False}
    assert "`engines.ips.enabled: false`, `engines.webfilter.enabled: false`" in fw.description
    assert ips.overrides == {"engines.webfilter.enabled": False,
                             "engines.ips.rule_files": [str(tmp_path / "a.rules"), str(tmp_path / "b.rules")],
                             "engines.ips.classification": str(tmp_path / "classification.config")}
    assert ips.start_timeout == 120 and ips.memory and not ips.skipped and ips.flow_rate < fw.flow_rate
    assert et_open_files(tmp_path)[1] == tmp_path / "classification.config"
    _, missing = agent_setups(tmp_path / "nowhere", ["firewall", "ips"])
    assert missing.skipped.startswith(ET_OPEN_MISSING) and missing.overrides == {}
    assert et_open_files(tmp_path / "nowhere") == ([], None)
    fw_only, _ = agent_setups(tmp_path, ["firewall"])
    assert fw_only.overrides == {} and "with no change" in fw_only.description


def test_engines_off_and_the_shipped_config() -> None:
    assert engines_off(["firewall", "ips", "webfilter"], {"firewall"}) == {
        "engines.ips.enabled": False, "engines.webfilter.enabled": False}
    assert engines_off(["firewall", "ips"], {"firewall", "ips"}) == {}
    assert {"firewall", "ips"} <= set(shipped_engines())


def test_goals_per_configuration() -> None:
    fw = {m.key: m.goal for m in FW_METRICS}
    assert fw["bulk_gbps"] == Goal("min_ratio", 0.9) and fw["conn_rate"] == Goal("min_ratio", 0.3)
    assert fw["ping_p50"] == Goal("max_delta", 0.2) and fw["udp_pps"] is None and "rss_mib" in fw
    ips = {m.key: m.goal for m in IPS_METRICS}
    assert ips["bulk_gbps"] == Goal("min_ratio", 0.8)
    assert ips["conn_rate"] is None and ips["ping_p50"] is None and ips["rss_mib"] is None
    bulk_ips = next(m for m in IPS_METRICS if m.key == "bulk_gbps")
    assert summarize(bulk_ips, [10.0], [8.5]).verdict == "pass"
    assert summarize(BULK, [10.0], [8.5]).verdict == "FAIL"


def test_skipped_rows_and_exit_verdicts() -> None:
    _, ips = agent_setups(Path("/nonexistent"))
    rows = skipped_rows(ips)
    assert [r.metric.key for r in rows] == [m.key for m in IPS_METRICS]
    assert {r.verdict for r in rows} == {ET_OPEN_MISSING}
    assert all(verdict_ok(v) for v in ("pass", "reported", ET_OPEN_MISSING))
    assert not any(verdict_ok(v) for v in ("FAIL", "error"))


def test_rotated_puts_each_mode_first_once() -> None:
    modes = ["bare", "fw", "ips"]
    assert [rotated(modes, r) for r in range(4)] == [
        ["bare", "fw", "ips"], ["fw", "ips", "bare"], ["ips", "bare", "fw"], ["bare", "fw", "ips"]]
    assert rotated(["bare", "fw"], 1) == ["fw", "bare"]


def test_noise_line() -> None:
    line = noise_line("Before the bench", 0.42, (1.5, 1.25, 0.75), [(88.0, "pytest -q tests"), (12.4, "nginx")])
    assert line.startswith("Before the bench: 42% of the CPUs busy over 3 s")
    assert "load average 1.50 / 1.25 / 0.75 (1/5/15 min)" in line and "pytest -q tests 88%, nginx 12%" in line
    assert "none above 1% of a CPU" in noise_line("After", 0.0, (0, 0, 0), [])


def test_inet_checksum() -> None:
    # RFC 1071's example words 0001 f203 f4f5 f6f7 sum to ddf2 (folded), checksum 220d
    assert inet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
    assert inet_checksum(b"\x01") == ~0x0100 & 0xFFFF  # odd length: padded with a zero byte


def test_tcp_conversation_is_consistent(tmp_path: Path) -> None:
    cap = Capture()
    client, server = (socket.inet_aton("192.168.10.10"), 40_000), (socket.inet_aton("198.51.100.20"), 80)
    conv = TcpConversation(cap, client, server, 1.0, 0.01, random.Random(1))
    conv.open()
    conv.send(True, b"GET / HTTP/1.1\r\n\r\n")
    conv.send(False, b"x" * 4000)
    conv.close()
    pcap = tmp_path / "t.pcap"
    assert cap.write(pcap)[0] == len(cap.frames)
    with PcapReader(pcap) as reader:
        pkts = [parse_linktype(r.data, r.linktype, r.ts) for r in reader]
    assert [p.anomaly for p in pkts] == [None] * len(pkts)
    data = [p for p in pkts if p.payload]
    assert [len(p.payload) for p in data] == [18, 1460, 1460, 1080]
    # every data segment starts where the previous one of its direction ended, and the peer's
    # acknowledgements never run ahead of what was sent
    sent = {}
    for p in pkts:
        if p.tcp_flags & 0x01:  # FIN: the last ACK acknowledges it too
            break
        if p.payload:
            assert sent.get(p.src_addr, p.seq) == p.seq
            sent[p.src_addr] = p.seq + len(p.payload)
        elif p.tcp_flags == 0x10 and p.dst_addr in sent:
            assert p.ack <= sent[p.dst_addr]
    assert pkts[0].tcp_flags == 0x02 and pkts[1].ack == pkts[0].seq + 1
    assert sum(1 for p in pkts if p.src_addr == server[0] and not p.payload) >= 2  # SYN/ACK, FIN
    assert [p.ts for p in pkts] == sorted(p.ts for p in pkts)


def test_app_payload_builders() -> None:
    rng = random.Random(2)
    hello = tls_client_hello(rng, "www.example.com")
    parsed = TlsParser().feed(True, hello)
    assert len(parsed) == 1 and parsed[0].sni == b"www.example.com"
    query = dns_message(0x1234, "www.example.com")
    assert query[:4] == b"\x12\x34\x01\x00" and b"\x03www\x07example\x03com\x00" in query
    answer = dns_message(0x1234, "www.example.com", [b"\xc6\x33\x64\x14"], response=True)
    assert answer.endswith(b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x01\x2c\x00\x04\xc6\x33\x64\x14")
    resp = http_response(rng, b"<html>" * 100, gzipped=True)
    head, body = resp.split(b"\r\n\r\n", 1)
    assert b"Content-Encoding: gzip" in head and f"Content-Length: {len(body)}".encode() in head
    assert gzip.decompress(body) == b"<html>" * 100


def test_eve_alerts(tmp_path: Path) -> None:
    eve = tmp_path / "eve.json"
    lines = [{"event_type": "alert", "alert": {"signature": "A"}}, {"event_type": "flow"},
             {"event_type": "alert", "alert": {"signature": "B"}}, {"event_type": "alert", "alert": {"signature": "A"}}]
    eve.write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    assert eve_alerts(eve) == (3, [("A", 2), ("B", 1)])


def test_foreign_use() -> None:
    before = {10: ("pytest -q", 5.0), 11: ("sshd", 1.0)}
    after = {10: ("pytest -q", 8.0), 11: ("sshd", 1.0), 12: ("make lint", 1.0), 13: ("cron", 0.05)}
    share, top = foreign_use(before, after, 20.0)
    assert share == pytest.approx((3.0 + 1.0 + 0.05) / 20.0)
    assert top == [(3.0, "pytest -q"), (1.0, "make lint")]  # below 0.1 s is not named
    assert foreign_use({}, {}, 0.0) == (0.0, [])


def test_floor_ruleset_is_the_agents_jump_and_fast_path_compare() -> None:
    from agent.bench import KERNEL_CHAIN, floor_ruleset
    from agent.ruleset import DataplaneSpec, jump_rule, render
    from filters.firewall import parse_policy

    text = floor_ruleset("br0").splitlines()
    assert text[0] == "*filter" and text[-1] == "COMMIT"
    spec = DataplaneSpec("br0", "lan0", "wan0", queue_base=0, workers=2, fail_open=True, nflog_group=17,
                         stream_depth=1 << 20)
    # the same jump and the same first compare as the agent's ruleset: only the queue is left out
    assert text[2] == "-A FORWARD " + " ".join(jump_rule(spec)).replace("VCR-FWD", KERNEL_CHAIN)
    agent_first = next(l for l in render(spec, parse_policy({}), 4).splitlines() if l.startswith("-A VCR-FWD"))
    assert text[3] == agent_first.replace("VCR-FWD", KERNEL_CHAIN)
    assert text[4] == f"-A {KERNEL_CHAIN} -j CONNMARK --set-xmark 0x10000000/0x70000000"
    assert not any("NFQUEUE" in l for l in text)


class _FakeLab:
    hosts = {"web": type("H", (), {"ipv4": "198.51.100.10"})()}


def test_kernel_floor_section_compares_floor_to_bare_and_agent_to_floor(tmp_path: Path) -> None:
    from agent.bench import BRNF, KERNEL, KERNEL_TITLE, Bench, render_table

    setups = [s for s in agent_setups(Path("/nonexistent")) if s.mode == "fw"]
    bench = Bench(_FakeLab(), 3, 5.0, tmp_path, setups)  # type: ignore[arg-type]
    assert bench.modes == ["bare", BRNF, KERNEL, "fw"]
    assert [name for name, _, _ in bench.scenarios(KERNEL)] == ["bulk TCP"]
    assert [name for name, _, _ in bench.scenarios(BRNF)] == ["bulk TCP"]
    bench.samples["bare"]["bulk_gbps"] = [20.0, 22.0, 21.0]
    bench.samples[BRNF]["bulk_gbps"] = [19.0, 18.0, 18.0]
    bench.samples[KERNEL]["bulk_gbps"] = [17.0, 18.0, 16.0]
    bench.samples["fw"]["bulk_gbps"] = [16.0, 18.0, 17.0]
    secs = bench.sections()
    assert [s.title for s in secs] == ["Agent, firewall only", KERNEL_TITLE]
    floor = secs[1]
    assert [(r.bare, r.agent, r.compare, r.verdict) for r in floor.rows] == [
        (21.0, 18.0, "0.86×", "reported"), (21.0, 17.0, "0.81×", "reported"), (17.0, 17.0, "1.00×", "reported")]
    table = render_table(floor.rows, floor.headers)
    assert "Baseline (median)" in table and "against the kernel floor" in table and "br_netfilter alone" in table
    note = next(n for n in bench.run_notes() if n.startswith(KERNEL_TITLE))
    assert "br_netfilter alone 0.95×, 0.82×, 0.86×" in note
    assert "the floor 0.85×, 0.82×, 0.76×" in note and "0.94×, 1.00×, 1.06×" in note


def test_settle_waits_for_the_queues_to_drain(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from agent.bench import Bench

    def line(q: int, waiting: int) -> str:
        return f"    {q}  1234  {waiting} 2 65531  0  0  {1000 + q}  1"

    backlog = [(300, 40), (120, 0), (0, 0), (0, 0), (0, 0)]  # queue 0 and 1 waiting, per read

    class Lab(_FakeLab):
        reads = 0

        def exec(self, host: str, argv: list[str], **kw: object) -> SimpleNamespace:
            w0, w1 = backlog[min(self.reads, len(backlog) - 1)]
            self.reads += 1
            return SimpleNamespace(stdout="\n".join([line(0, w0), line(1, w1)]))

    lab = Lab()
    bench = Bench(lab, 1, 5.0, tmp_path, [s for s in agent_setups(Path("/nonexistent")) if s.mode == "fw"])  # type: ignore[arg-type]
    bench.settle("fw", "latency")
    assert lab.reads == 4  # two reads with packets waiting, then two empty ones in a row
    assert bench.settles == []  # well under 0.1 s: not worth a note
    backlog[:] = [(5, 0)]  # never drains
    import agent.bench as mod

    old, mod.SETTLE_TIMEOUT = mod.SETTLE_TIMEOUT, 0.1
    try:
        bench.settle("fw", "latency")
    finally:
        mod.SETTLE_TIMEOUT = old
    assert bench.settles == ["fw before latency: 5 packets still queued after 0.1 s"]
