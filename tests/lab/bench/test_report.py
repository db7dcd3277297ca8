"""lab/bench/report.py: statistics, goals, rows and verdicts, and the tables every suite renders."""
from __future__ import annotations

import pytest

from lab.bench.dataplane_report import FW_METRICS, METRICS
from lab.bench.report import (
    Goal,
    aligned,
    closing_lines,
    compare_rows,
    header_lines,
    interval_verdict,
    md_table,
    median,
    median_interval,
    noise_note,
    paired,
    percentile,
    ratio,
    samples_cells,
    summarize,
    verdict_ok,
)

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


def test_paired_and_noise_note() -> None:
    assert paired([10.0, 20.0], [9.0, 10.0], delta=False) == [0.9, 0.5]
    assert paired([0.1, 0.2], [0.15, 0.2], delta=True) == pytest.approx([0.05, 0.0])
    note = noise_note(BULK, [10.0, 20.0, 10.0], [9.5, 10.0, 12.0])
    assert note is not None and "0.95×, 0.50×, 1.20×" in note and "2 of 3 meet it" in note
    assert noise_note(BULK, [10.0, 10.0], [9.5, 9.6]) is None  # all meet the goal
    assert noise_note(BULK, [10.0, 10.0], [5.0, 6.0]) is None  # none does
    assert noise_note(UDP, [1.0, 2.0], [2.0, 1.0]) is None  # no goal
    assert noise_note(BULK, [10.0], [5.0]) is None  # one run


def test_verdicts_that_let_a_bench_exit_0() -> None:
    assert all(verdict_ok(v) for v in ("pass", "reported", "skipped: ET Open not found"))
    assert not any(verdict_ok(v) for v in ("FAIL", "error"))


def test_compare_rows_pair_a_mode_with_its_baseline() -> None:
    samples = {"bare": {"bulk_gbps": [10.0, 10.0]}, "fw": {"bulk_gbps": [9.5, 9.0]}}
    errors = {"fw": {"ping_p50": ["fw, run 1: boom"]}}
    rows = {r.metric.key: r for r in compare_rows(METRICS, samples, errors, "bare", "fw")}
    assert [r.metric.key for r in compare_rows(METRICS, samples, errors, "bare", "fw")] == [m.key for m in METRICS]
    assert (rows["bulk_gbps"].bare, rows["bulk_gbps"].agent, rows["bulk_gbps"].verdict) == (10.0, 9.25, "pass")
    assert rows["ping_p50"].verdict == "error" and rows["ping_p50"].errors == ["fw, run 1: boom"]
    assert compare_rows(METRICS[:1], {}, {}, "bare", "nothing")[0].verdict == "error"


def test_tables_as_markdown_and_aligned_text() -> None:
    cells = [["Name", "Value"], ["a | b", "1"], ["longer name", "22"]]
    assert md_table(cells) == ["| Name | Value |", "|---|---|", "| a \\| b | 1 |", "| longer name | 22 |"]
    assert aligned(cells).splitlines() == ["Name         Value", "-----------  -----", "a | b        1",
                                           "longer name  22"]


def test_samples_cells_list_every_run_per_mode() -> None:
    samples = {"bare": {"bulk_gbps": [9.0, 9.25]}, "fw": {"bulk_gbps": [8.5], "rss_mib": [150.0]}}
    cells = samples_cells([BULK, RSS], samples, [("bare", "Bare bridge"), ("fw", "Agent"), ("ips", "IPS")])
    assert cells == [["Metric", "Bare bridge, per run", "Agent, per run", "IPS, per run"],
                     ["Bulk TCP, iperf3 -P 4 (Gbit/s)", "9.00, 9.25", "8.50", "—"],
                     ["Memory, agent RSS with 100k flows (MiB)", "n/a", "150.0", "—"]]


def test_header_and_closing_lines() -> None:
    machine = {"nproc": "2", "kernel": "6.18.0", "cpu": "AMD EPYC", "memory": "23.5 GiB"}
    head = header_lines("Benchmarks: x", "python -m lab x", "lab/bench/x.py", "2026-01-01 00:00 UTC", "", machine,
                        "`make x`", ["Before the bench: quiet."])
    assert head == ["# Benchmarks: x", "", "Generated by `python -m lab x` (lab/bench/x.py); do not edit by hand, run it "
                    "again.", "", "- Date: 2026-01-01 00:00 UTC",
                    "- Machine: 2 CPUs (AMD EPYC), 23.5 GiB RAM, kernel 6.18.0", "- Command: `make x`",
                    "- Noise, before the bench: quiet.", ""]
    assert closing_lines([], [], ["| t |"], [], []) == ["## Samples", "", "| t |", ""]
    full = closing_lines(["- e"], ["n"], ["| t |"], ["m"], ["d"])
    assert [line for line in full if line.startswith("## ")] == [
        "## Errors", "## Notes on this run", "## Samples", "## Method", "## Diagnostics"]


def test_median_interval_is_the_sign_test_inverted() -> None:
    # 10 values: the 2nd smallest to the 2nd largest, coverage 1 - 2 * (1 + 10) / 1024
    low, high, coverage = median_interval([float(v) for v in (7, 1, 9, 3, 10, 5, 2, 8, 4, 6)])
    assert (low, high) == (2.0, 9.0) and coverage == pytest.approx(1 - 22 / 1024)
    # 12 values: the 3rd to the 10th, 1 - 2 * (1 + 12 + 66) / 4096; the 4th would cover only 85 %
    assert median_interval([float(v) for v in range(1, 13)]) == (3.0, 10.0, pytest.approx(1 - 158 / 4096))
    assert median_interval([float(v) for v in range(1, 7)]) == (1.0, 6.0, pytest.approx(1 - 2 / 64))
    assert median_interval([1.0, 2.0, 3.0, 4.0, 5.0]) is None  # even min..max covers only 94 %
    assert median_interval([]) is None
    assert median_interval([1.0, 2.0, 3.0, 4.0, 5.0], 0.9) == (1.0, 5.0, pytest.approx(1 - 2 / 32))


def test_median_interval_covers_the_median_as_often_as_it_says() -> None:
    import random

    rng = random.Random(15)
    trials, covered = 4000, 0
    for _ in range(trials):  # skewed noise around a true median of 1.0 (lognormal: median exp(0) = 1)
        low, high, _ = median_interval([rng.lognormvariate(0.0, 0.2) for _ in range(10)])  # type: ignore[misc]
        covered += low <= 1.0 <= high
    assert covered / trials == pytest.approx(1 - 22 / 1024, abs=0.01)


def test_interval_verdict() -> None:
    assert interval_verdict(0.97, 1.05, 0.97) == "pass"  # all of it at or above the goal
    assert interval_verdict(0.90, 0.969, 0.97) == "FAIL"  # all of it below
    assert interval_verdict(0.95, 1.02, 0.97) == "within noise"
    assert interval_verdict(0.95, 0.97, 0.97) == "within noise"
    assert verdict_ok("within noise") and not verdict_ok("FAIL")


def test_goal_names_its_baseline() -> None:
    assert Goal("min_ratio", 0.9).describe("Gbit/s") == "agent ≥ 0.9× bare"
    assert Goal("min_ratio", 0.97, "floor").describe("Gbit/s") == "agent ≥ 0.97× floor"
