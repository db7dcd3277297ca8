"""What the data-path section of docs/benchmarks.md shows: the metrics and their goals, the ``Report``
of a run, and its rendering as Markdown (the ``dataplane`` section) and for the terminal.

The run that fills a ``Report`` is lab/bench/dataplane.py; the offline IPS figures come from
lab/bench/offline.py.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Sequence

from lab.bench.offline import OfflineResult
from lab.bench.report import (
    Goal,
    Metric,
    Row,
    aligned,
    closing_lines,
    fmt,
    header_lines,
    interval_verdict,
    markdown,
    md_table,
    median,
    median_interval,
    paired,
    render_table,
    samples_cells,
    table_cells,
)

BULK_OMIT = 1  # seconds of each iperf3 run left out of the bulk figure (iperf3 -O: TCP slow start)
TITLE = "Benchmarks: the agent against a bare bridge"
SOURCE = "lab/bench/dataplane.py"

METRICS = (
    Metric("bulk_gbps", "Bulk TCP, iperf3 -P 4", "Gbit/s", 2, Goal("min_ratio", 0.9)),
    Metric("bulk_start_gbps", f"Bulk TCP, first {BULK_OMIT} s of each run (left out of the row above)", "Gbit/s", 2),
    Metric("conn_rate", "New connections, HTTP `Connection: close`", "conn/s", 0, Goal("min_ratio", 0.3)),
    Metric("ping_p50", "Latency, ping p50", "ms", 3, Goal("max_delta", 0.2), delta=True),
    Metric("ping_p99", "Latency, ping p99", "ms", 3, delta=True),
    Metric("rr_p50", "Latency, TCP request/response p50", "ms", 3, Goal("max_delta", 0.2), delta=True),
    Metric("rr_p99", "Latency, TCP request/response p99", "ms", 3, delta=True),
    Metric("udp_pps", "Small packets, UDP 64 B, highest zero-loss rate", "pkt/s", 0),
    Metric("rss_mib", "Memory, agent RSS with 100k flows", "MiB", 1, agent_only=True),
)


FW_METRICS = METRICS  # the goals of the foundation issue
FLOOR_GOAL = 0.97  # issue 15: the firewall-only agent at least this share of the kernel floor's bulk rate
CONFIDENCE = 0.95  # of the interval the paired goal is judged on
FLOOR_PAIRED = Metric("floor_pairs", "Bulk TCP, iperf3 -P 4: agent, firewall only, against the kernel floor, paired "
                      "runs (the goal)", "Gbit/s", 2, Goal("min_ratio", FLOOR_GOAL, "floor"))
IPS_METRICS = tuple(dataclasses.replace(m, goal=Goal("min_ratio", 0.8) if m.key == "bulk_gbps" else None)
                    for m in METRICS)


@dataclass
class Section:
    """The results of one agent configuration against the bare bridge."""

    title: str
    description: str
    rows: list[Row]
    skipped: str = ""
    headers: tuple[str, str, str] | None = None  # baseline, measured, comparison columns (default: bare, agent)


@dataclass
class Report:
    """Everything docs/benchmarks.md shows."""

    date: str
    machine: dict[str, str]
    command: str
    sections: list[Section]
    samples: dict[str, dict[str, list[float]]]
    columns: list[tuple[str, str]]  # (mode, heading) of the per-run samples table
    notes: list[str]
    method: list[str]
    diagnostics: list[str]
    noise: list[str] = field(default_factory=list)
    offline: OfflineResult | None = None
    offline_error: str = ""
    duration: str = ""

    @property
    def rows(self) -> list[Row]:
        return [r for s in self.sections for r in s.rows]


def paired_row(metric: Metric, pairs: Sequence[tuple[float, float]], errors: Sequence[str] = (),
               confidence: float = CONFIDENCE) -> Row:
    """The row of a paired measurement: ``pairs`` are (baseline, measured) rates taken back to back; the
    figure is the median of the per-pair ratios and the verdict is on its distribution-free interval
    (``median_interval``): pass when all of it is at or above the goal, FAIL when all of it is below,
    "within noise" when it spans the goal or there are too few pairs for one. The rate columns are
    the medians of each side (for scale; the ratio is not their quotient)."""
    base, measured = [b for b, _ in pairs], [m for _, m in pairs]
    ratios = paired(base, measured, False)
    if not ratios:
        return Row(metric, median(base), median(measured), "—", "error", list(errors))
    mid = median(ratios)
    assert mid is not None and metric.goal is not None
    interval = median_interval(ratios, confidence)
    if interval is None:
        compare = f"{mid:.2f}× (median of {len(ratios)} pairs; too few for a {confidence:.0%} interval)"
        verdict = "within noise"
    else:
        low, high, _ = interval
        compare = f"{mid:.2f}× (median of {len(ratios)} pairs; {confidence:.0%} interval {low:.2f}–{high:.2f}×)"
        verdict = interval_verdict(low, high, metric.goal.value)
    return Row(metric, median(base), median(measured), compare, verdict, list(errors))


def command_line(runs: int, seconds: float) -> str:
    """The command that produces the report (``make bench`` runs the defaults)."""
    cmd = f"python -m lab bench --runs {runs} --seconds {seconds:g}"
    return f"`make bench` (= `{cmd}`)" if (runs, seconds) == (5, 5.0) else f"`{cmd}`"


def offline_cells(res: OfflineResult) -> list[list[str]]:
    """Header + the offline IPS figures: rule load, memory, pipeline, hyperscan and their ratio."""
    def rate(mbps: float | None) -> str:
        return "—" if mbps is None else f"{mbps:,.1f} Mbit/s"

    share = res.share_of_limit
    return [
        ["Measure", "Result"],
        ["Rules active / loaded", f"{res.rules_active:,} / {res.rules_loaded:,} ({res.rules_unsupported} unsupported, "
                                  f"{res.rules_bad} bad)"],
        ["Rule load (build_engines: parse + compile)", f"{res.load_seconds:.1f} s"],
        ["RSS after loading", f"{res.rss_after_mib:,.1f} MiB ({res.rss_before_mib:,.1f} MiB before)"],
        ["Pipeline, `vcr-agent pcap -S` (without the load)",
         f"{rate(res.pipeline_mbps)} of frames, {rate(res.pipeline_payload_mbps)} of payload, "
         f"{fmt(res.pipeline_pps, 0)} pkt/s ({res.pipeline_seconds:.1f} s, median of {len(res.pipeline_samples)})"],
        [f"Limit: hyperscan, one database of all {res.patterns:,} fast patterns, block scan of each payload",
         f"{rate(res.scan_mbps)} of payload ({res.scan_seconds:.2f} s, median of {len(res.scan_samples)}; with a "
         f"counting match callback {rate(res.scan_callback_mbps)}; compile {res.compile_seconds:.1f} s)"],
        ["Pipeline / hyperscan (same payload bytes)", "—" if share is None else f"{share:.3f}× ({share * 100:.1f}%)"],
    ]


def offline_details(res: OfflineResult) -> list[str]:
    """The per-pass samples and the garbage collector's figures of the offline run."""
    def secs(values: Sequence[float]) -> str:
        return ", ".join(f"{v:.2f}" for v in values) + " s"

    gens = "; ".join(f"generation {g}: {int(n):,} collections, longest {mx:.1f} ms, {total:.0f} ms in all"
                     for g, (n, mx, total) in sorted(res.gc.items())) or "no collection"
    return [
        f"Per pass: pipeline {secs(res.pipeline_samples)}; hyperscan {secs(res.scan_samples)}; hyperscan with the "
        f"match callback {secs(res.scan_callback_samples)}.",
        f"Garbage collector during the pipeline passes: {gens}. One full collection with ET Open loaded "
        f"({res.gc_objects:,} tracked objects) took {res.gc_full_ms:.0f} ms.",
    ]


def render_terminal(report: Report) -> str:
    """Every section's table, then the offline figures, for the terminal."""
    out = []
    for sec in report.sections:
        out += [f"{sec.title}" + (f"  ** {sec.skipped} **" if sec.skipped else ""), render_table(sec.rows, sec.headers), ""]
    out.append("Offline IPS throughput (ET Open)")
    out.append(aligned(offline_cells(report.offline)) if report.offline else f"  {report.offline_error}")
    return "\n".join(out)


def _section_md(sec: Section) -> list[str]:
    out = [f"## {sec.title}", "", f"Configuration: {sec.description}", ""]
    if sec.skipped:
        out += [f"**{sec.skipped.upper()[:1] + sec.skipped[1:]}: these rows were not measured.**", ""]
    return out + [*md_table(table_cells(sec.rows, sec.headers)), ""]


def _offline_md(report: Report) -> list[str]:
    out = ["## Offline IPS throughput (ET Open, no lab)", ""]
    res = report.offline
    if res is None:
        return out + [f"**{report.offline_error}**", ""]
    cap = res.capture
    out += [
        f"Capture: {res.packets:,} packets, {res.frame_bytes / 1e6:,.1f} MB of frames, {res.payload_bytes / 1e6:,.1f} MB "
        f"of TCP/UDP payload in {res.payload_packets:,} packets: {cap.get('http flows', 0)} HTTP/1.1 flows with "
        f"{cap.get('http transactions', 0)} transactions ({cap.get('gzip responses', 0)} gzip responses, "
        f"{cap.get('http body bytes (before gzip)', 0) / 1e6:.1f} MB of HTML before compression), "
        f"{cap.get('dns queries', 0)} DNS queries with answers, {cap.get('tls flows', 0)} TLS flows "
        f"({cap.get('tls application bytes', 0) / 1e6:.1f} MB of application data), "
        f"{cap.get('tcp bulk flows', 0)} TCP bulk flows ({cap.get('tcp bulk bytes', 0) / 1e6:.1f} MB of random bytes).",
        "",
        *md_table(offline_cells(res)),
        "",
        *(f"- {line}" for line in offline_details(res)),
        "",
    ]
    return out


def render_markdown(report: Report) -> str:
    """The ``dataplane`` section of docs/benchmarks.md."""
    out = header_lines(TITLE, "python -m lab bench", SOURCE, report.date, report.duration, report.machine,
                       report.command, report.noise)
    for sec in report.sections:
        out += _section_md(sec)
    out += _offline_md(report)
    errors = [f"- {sec.title}, {r.metric.label}: {e}" for sec in report.sections for r in sec.rows for e in r.errors]
    samples = md_table(samples_cells(METRICS, report.samples, report.columns))
    return markdown(out + closing_lines(errors, report.notes, samples, report.method, report.diagnostics))
