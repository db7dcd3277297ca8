"""The pure parts of the benchmark: statistics, verdicts, parsers, the rate search and the Markdown report."""
from __future__ import annotations

import json

import pytest

from agent.bench import (
    BenchError,
    Goal,
    METRICS,
    Metric,
    Report,
    busy_share,
    command_line,
    cpu_ticks,
    iperf_tcp_gbps,
    iperf_udp,
    machine_info,
    median,
    noise_note,
    paired,
    parse_iperf,
    parse_nfqueue,
    parse_ping,
    percentile,
    ratio,
    render_markdown,
    render_table,
    search_rate,
    summarize,
)

BULK = next(m for m in METRICS if m.key == "bulk_gbps")
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


def test_parse_iperf() -> None:
    tcp = {"end": {"sum_received": {"bits_per_second": 9.0e9}, "sum_sent": {"bits_per_second": 9.1e9}}}
    assert iperf_tcp_gbps(parse_iperf(json.dumps(tcp))) == 9.0
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
    assert command_line(3, 5.0) == "`make bench` (= `vcr-agent bench --runs 3 --seconds 5`)"
    assert command_line(1, 2.5) == "`vcr-agent bench --runs 1 --seconds 2.5`"


def _report() -> Report:
    rows = [
        summarize(BULK, [9.0, 9.2, 9.1], [8.5, 8.6, 8.4]),
        summarize(PING50, [0.05, 0.06, 0.05], [0.08, 0.07, 0.09]),
        summarize(RSS, [], [150.0]),
        summarize(Metric("x", "Broken | scenario", "u", 0), [], [], ["bare, run 1: no route"]),
    ]
    return Report(
        date="2026-01-01 00:00 UTC",
        machine={"nproc": "2", "kernel": "6.18.0", "cpu": "AMD EPYC", "memory": "23.5 GiB"},
        command=command_line(3, 5.0),
        rows=rows,
        samples={"bare": {"bulk_gbps": [9.0, 9.2, 9.1]}, "agent": {"bulk_gbps": [8.5, 8.6, 8.4], "rss_mib": [150.0]}},
        notes=["HTTP server: nginx"],
        method=["Baseline: a bare bridge."],
        diagnostics=["```", "Chain VCR-FWD", "```"],
    )


def test_render_markdown() -> None:
    md = render_markdown(_report())
    assert md.startswith("# Benchmarks")
    assert "- Date: 2026-01-01 00:00 UTC" in md
    assert "2 CPUs (AMD EPYC), 23.5 GiB RAM, kernel 6.18.0" in md
    assert "`make bench` (= `vcr-agent bench --runs 3 --seconds 5`)" in md
    assert "| Scenario | Bare bridge (median) | Agent (median) | Agent vs bare | Goal | Result |" in md
    assert "| Bulk TCP, iperf3 -P 4 | 9.10 Gbit/s | 8.50 Gbit/s | 0.93× | agent ≥ 0.9× bare | pass |" in md
    assert "| Latency, ping p50 | 0.050 ms | 0.080 ms | +0.030 ms (1.60×) | agent − bare ≤ +0.2 ms | pass |" in md
    assert "| Memory, agent RSS with 100k flows | n/a | 150.0 MiB | — | reported | reported |" in md
    assert "Broken \\| scenario" in md and "| error |" in md
    assert "- Broken | scenario: bare, run 1: no route" in md
    assert "9.00, 9.20, 9.10" in md
    assert "## Method" in md and "## Diagnostics (agent mode)" in md
    assert md.endswith("\n") and not md.endswith("\n\n")


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
