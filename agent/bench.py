"""Benchmarks (``vcr-agent bench``): the bare bridge against two agent configurations, and offline IPS throughput.

Every lab scenario is measured on the bare bridge (``Lab.bridge_bare``, the baseline) and through the
running agent (``vcr-agent bridge up`` + ``vcr-agent run``) in two configurations, firewall only and
the IPS with ET Open, in the same invocation, ``--runs`` times each, rotating the order of the modes.
The report gives medians, each configuration's ratio to (or, for latency, its difference from) the
baseline, and the goals. Without the lab, a synthetic capture is run through the pipeline with ET
Open as ``vcr-agent pcap -S`` does, next to hyperscan's raw scan rate over the same payload bytes.
Everything goes to docs/benchmarks.md.

The same module is the load generator inside the lab namespaces (``python -m agent.bench ROLE``):
``http-load`` (new HTTP connections per second), ``serve-close`` (a pre-fork HTTP server, used
when nginx is not available), ``tcp-rr`` (request/response round trips on one connection),
``udp-flows`` (one UDP packet per distinct flow, for the flow-table memory figure), and
``offline-ips`` (the offline measurement, in a process of its own so its RSS is the agent's).
"""
from __future__ import annotations

import argparse
import array
import contextlib
import dataclasses
import datetime as dt
import gzip
import itertools
import json
import logging
import math
import os
import platform
import random
import re
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from agent.lab import Lab
from agent.labrun import LabAgent
from agent.ruleset import MARK_ACCEPT, MARK_MASK

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
IPERF_PORT = 5201
BULK_REPEATS = 3  # iperf3 runs per bulk measurement; the median is the run's figure
BULK_OMIT = 1  # seconds of each iperf3 run left out of the bulk figure (iperf3 -O: TCP slow start)
HTTP_PORT = 8080
ECHO_PORT = 7007
SINK_PORT = 9  # UDP discard: the flow-table packets are dropped by web's own INPUT chain
HTTP_CONCURRENCY = 128
CLIENT_PORTS = "1024 65535"
PING_COUNT = 200
PING_INTERVAL = "0.01"
PING_SLOW_MS = 5.0  # a reply this slow was held up (the bare bridge answers in about 0.1 ms)
RR_COUNT = 2000
RR_SIZE = 64
UDP_PAYLOAD = 64
UDP_PROBE_SECONDS = 2
UDP_START_PPS = 20_000
UDP_SENDERS = ("pc1", "pc2")
UDP_PORTS = (IPERF_PORT, IPERF_PORT + 1)
UDP_MAX_PROBES = 5
UDP_SOCKET_BUFFER = "2M"
SATURATED = 0.9  # a probe that sent less than this share of its target rate is generator-limited
FLOW_TARGET = 100_000
FLOW_HOSTS = range(100, 200)  # secondary addresses 192.0.2.100-.199 on pc1
FLOW_PORT_BASE = 20_000
FLOW_RATE = 10_000
IPS_FLOW_RATE = 4_000  # the IPS inspects every flow's packet: about 5k pkt/s over two workers
FLOW_PASSES = 3
NGINX_PACKAGE = "nginx-light"
NFQUEUE_PROC = "/proc/net/netfilter/nfnetlink_queue"
CONNTRACK_MAX = "/proc/sys/net/netfilter/nf_conntrack_max"
HTTP_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
)
ET_OPEN = REPO.parent / "shared" / "peer" / "et-open" / "rules"  # beside the repo, as in CI
IPS_START_TIMEOUT = 120.0  # the agent compiles ET Open (about 8 s alone) before its workers bind
# the offline capture: a synthetic office mix, built once per bench run
CAPTURE_SEED = 1160
CAPTURE_EPOCH = 1_716_166_800  # 2024-05-20 01:00 UTC
CAPTURE_SECONDS = 60.0
CAPTURE_HTTP_FLOWS = 400
CAPTURE_DNS_QUERIES = 300
CAPTURE_TLS_FLOWS = 100
HTTP_BODY_RANGE = (1_000, 200_000)  # uncompressed page sizes, log-uniform
HTTP_GZIP_SHARE = 0.25
BULK_PORTS = (873, 9000, 3260, 5201)
BULK_BYTES = 2_500_000
DNS_SERVER = "198.51.100.53"
MSS = 1460
SEGMENT_GAP = 12e-6  # seconds between frames of a flow (about 1 Gbit/s)
OFFLINE_TIMEOUT = 900
PIPELINE_REPEATS = 3  # offline pipeline passes over the capture (about 10 s each with ET Open)
SCAN_REPEATS = 5  # hyperscan passes (well under a second each)
NOISE_SECONDS = 3.0
SETTLE_TIMEOUT = 15.0  # seconds a scenario waits for the queues the one before it filled to drain
TCP_FIN, TCP_SYN, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x08, 0x10
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
_UDP = struct.Struct("!HHHH")
_PCAP_FILE = struct.Struct("<IHHiIII")
_PCAP_RECORD = struct.Struct("<IIII")
NGINX_HEAD = """daemon off;
worker_processes {workers};
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 8192; multi_accept on; }}
http {{
  access_log off;
  keepalive_timeout 0;
  client_body_temp_path {dir}/tmp; proxy_temp_path {dir}/tmp; fastcgi_temp_path {dir}/tmp;
  uwsgi_temp_path {dir}/tmp; scgi_temp_path {dir}/tmp;
"""
# The benches' nginx: one head, each bench its own server block (format keys: workers, dir, port).
NGINX_CONF = NGINX_HEAD + """  server {{ listen {port} reuseport backlog=4096; location / {{ return 200 "ok\\n"; }} }}
}}
"""


KERNEL = "kernel"  # the mode of the kernel floor: the fast path's kernel work, no agent
BRNF = "brnf"  # br_netfilter alone: the bridge hands IP packets to empty netfilter hooks, no rules, no conntrack
BULK_ONLY = (BRNF, KERNEL)  # modes that only answer the bulk-throughput question
KERNEL_TITLE = "Kernel floor (the fast path without the agent)"
KERNEL_CHAIN = "VCR-FLOOR"
ACCT_SYSCTL = "net.netfilter.nf_conntrack_acct"


def floor_ruleset(bridge: str) -> str:
    """iptables-restore text of the kernel floor: what a decided flow costs the kernel in the agent's design.

    The same FORWARD jump as the agent's and the same first rule (the connmark compare of the fast
    path); the first packet of a connection sets the accept mark instead of going to NFQUEUE."""
    m = f"0x{MARK_MASK:x}"
    return "\n".join([
        "*filter",
        f":{KERNEL_CHAIN} - [0:0]",
        f"-A FORWARD -i {bridge} -o {bridge} -j {KERNEL_CHAIN}",
        f"-A {KERNEL_CHAIN} -m connmark --mark 0x{MARK_ACCEPT:x}/{m} -j ACCEPT",
        f"-A {KERNEL_CHAIN} -j CONNMARK --set-xmark 0x{MARK_ACCEPT:x}/{m}",
        "COMMIT",
        "",
    ])


KERNEL_DESCRIPTION = (
    "no agent. The bridge with br_netfilter on, conntrack with byte counters (as `bridge up` sets it) and, in "
    "both families, the agent's FORWARD jump (`-i br0 -o br0`) to one chain whose first rule is the fast path's "
    "connmark compare; a connection's first packet sets the accept mark there instead of going to NFQUEUE. This is "
    "the kernel work every packet of a decided flow costs in the agent's design (connmark offload through "
    "iptables), whatever the agent does: the firewall-only agent cannot be faster than this floor beyond run-to-run "
    "noise. The first row takes one step less: br_netfilter on with no rule at all, which any NFQUEUE on bridged "
    "traffic needs.")


class BenchError(RuntimeError):
    """One measurement could not be taken."""


# ----------------------------------------------------------------------------- statistics
def percentile(values: Sequence[float], pct: float) -> float:
    """The pct-th percentile (0..100) with linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile must be 0..100, got {pct}")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * pct / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float | None:
    """The median, or None when there is no value."""
    return statistics.median(values) if values else None


def ratio(agent: float | None, bare: float | None) -> float | None:
    """agent / bare, or None when either is missing or the baseline is zero."""
    if agent is None or bare is None or bare == 0:
        return None
    return agent / bare


@dataclass(frozen=True)
class Goal:
    """A goal from the product issue: agent/bare at least ``value`` or agent-bare at most ``value``."""

    kind: str  # "min_ratio" | "max_delta"
    value: float

    def describe(self, unit: str) -> str:
        if self.kind == "min_ratio":
            return f"agent ≥ {self.value:g}× bare"
        return f"agent − bare ≤ +{self.value:g} {unit}"

    def met(self, bare: float, agent: float) -> bool:
        if self.kind == "min_ratio":
            return agent >= self.value * bare
        return agent - bare <= self.value


@dataclass(frozen=True)
class Metric:
    """One row of the report."""

    key: str
    label: str
    unit: str
    digits: int
    goal: Goal | None = None
    delta: bool = False  # compare as agent - bare (latency) instead of agent / bare
    agent_only: bool = False


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
IPS_METRICS = tuple(dataclasses.replace(m, goal=Goal("min_ratio", 0.8) if m.key == "bulk_gbps" else None)
                    for m in METRICS)
ET_OPEN_MISSING = "skipped: ET Open not found"


@dataclass(frozen=True)
class Setup:
    """An agent configuration measured against the bare bridge: the shipped config plus ``overrides``."""

    mode: str  # its key in the samples: "fw" | "ips"
    title: str
    overrides: dict[str, Any]
    metrics: tuple[Metric, ...]
    description: str
    start_timeout: float = 30.0
    memory: bool = False  # run the 100k-flow memory scenario with it
    flow_rate: int = FLOW_RATE  # pkt/s of the memory scenario's sender (as fast as the workers keep up)
    skipped: str = ""  # why it is not measured (rows are marked, the bench goes on)


def shipped_engines() -> list[str]:
    """The engine sections of the shipped config/vcr-agent.yaml (the agent's configurations start from it)."""
    import yaml

    from agent.labrun import EXAMPLE_CONFIG

    data = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8")) or {}
    return sorted(data.get("engines") or {})


def engines_off(engines: Sequence[str], keep: set[str]) -> dict[str, Any]:
    """Overrides switching off every engine of ``engines`` but those in ``keep``."""
    return {f"engines.{name}.enabled": False for name in engines if name not in keep}


def _overrides_text(overrides: dict[str, Any]) -> str:
    return ", ".join(f"`{k}: false`" for k, v in overrides.items() if v is False)


def agent_setups(et_open: Path = ET_OPEN, engines: Sequence[str] | None = None) -> list[Setup]:
    """The two agent configurations: firewall only, and the firewall with the IPS loaded with ET Open
    (skipped without it). Each switches off the other engines of the shipped config (``engines``)."""
    engines = shipped_engines() if engines is None else engines
    off = engines_off(engines, {"firewall"})
    fw = Setup("fw", "Agent, firewall only", off, FW_METRICS,
               f"the shipped config/vcr-agent.yaml with {_overrides_text(off) or 'no change'}: the firewall engine "
               "and the connmark fast path. Goals of the foundation issue.", memory=True)
    rules, classification = et_open_files(et_open)
    off = engines_off(engines, {"firewall", "ips"})
    desc = (f"the shipped config with {_overrides_text(off) + ', ' if off else ''}`engines.ips.rule_files` = the "
            f"{len(rules)} `*.rules` files of {et_open} (sorted) and `engines.ips.classification` = its "
            "classification.config: the firewall as shipped and the IPS with ET Open. Goal: bulk ≥ 0.8× bare; the "
            "rest is reported.")
    if classification is None:
        return [fw, Setup("ips", "Agent, IPS with ET Open", {}, IPS_METRICS, desc,
                          skipped=f"{ET_OPEN_MISSING} (no *.rules and classification.config in {et_open})")]
    overrides = {**off, "engines.ips.rule_files": [str(f) for f in rules],
                 "engines.ips.classification": str(classification)}
    return [fw, Setup("ips", "Agent, IPS with ET Open", overrides, IPS_METRICS, desc, start_timeout=IPS_START_TIMEOUT,
                      memory=True, flow_rate=IPS_FLOW_RATE)]


@dataclass
class Row:
    """A metric's medians, comparison and verdict."""

    metric: Metric
    bare: float | None
    agent: float | None
    compare: str
    verdict: str  # "pass" | "FAIL" | "reported" | "error" | "skipped: ..."
    errors: list[str] = field(default_factory=list)


def paired(bare: Sequence[float], agent: Sequence[float], delta: bool) -> list[float]:
    """Per-run agent/bare ratios (or agent-bare differences), pairing the samples of the same run."""
    if delta:
        return [a - b for b, a in zip(bare, agent)]
    return [a / b for b, a in zip(bare, agent) if b]


def noise_note(metric: Metric, bare: Sequence[float], agent: Sequence[float]) -> str | None:
    """A note when the per-run comparisons fall on both sides of the goal (the verdict is noise-bound)."""
    if metric.goal is None or len(bare) != len(agent) or len(bare) < 2:
        return None
    per_run = paired(bare, agent, metric.delta)
    met = [metric.goal.met(b, a) for b, a in zip(bare, agent)]
    if all(met) or not any(met):
        return None
    shown = ", ".join(f"{v:+.3f} {metric.unit}" if metric.delta else f"{v:.2f}×" for v in per_run)
    return (f"{metric.label}: the runs disagree about the goal ({shown} per run, "
            f"{sum(met)} of {len(met)} meet it); the median verdict is within run-to-run noise.")


def _fmt(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def summarize(metric: Metric, bare: Sequence[float], agent: Sequence[float], errors: Sequence[str] = ()) -> Row:
    """Medians of the samples, the agent-vs-bare comparison and the verdict against the goal."""
    b, a = median(bare), median(agent)
    compare = "—"
    if metric.delta and a is not None and b is not None:
        r = ratio(a, b)
        compare = f"{a - b:+.{metric.digits}f} {metric.unit}" + (f" ({r:.2f}×)" if r is not None else "")
    elif not metric.delta and ratio(a, b) is not None:
        compare = f"{ratio(a, b):.2f}×"
    missing = a is None or (b is None and not metric.agent_only)
    if missing:
        verdict = "error"
    elif metric.goal is None or b is None:
        verdict = "reported"
    else:
        verdict = "pass" if metric.goal.met(b, a) else "FAIL"
    return Row(metric, b, a, compare, verdict, list(errors))


def skipped_rows(setup: Setup) -> list[Row]:
    """Rows of a configuration that was not measured, each saying why."""
    reason = setup.skipped.split(" (")[0]
    return [Row(m, None, None, "—", reason) for m in setup.metrics]


def verdict_ok(verdict: str) -> bool:
    """Whether a row lets the bench exit 0 (a skipped configuration does not fail it)."""
    return verdict in ("pass", "reported") or verdict.startswith("skipped")


# ----------------------------------------------------------------------------- parsing
def parse_ping(text: str) -> list[float]:
    """Round-trip times in ms from ``ping`` output (one ``time=X ms`` per reply)."""
    return [float(m) for m in re.findall(r"time[=<]([0-9.]+) ms", text)]


def ping_tail(rtts: Sequence[float], slow_ms: float = PING_SLOW_MS) -> str:
    """The shape of ping's tail: the slowest reply, and how many replies were slow in how many runs of
    consecutive ones (one long stall delays a run of pings queued behind it, each a little less)."""
    slow = [rtt > slow_ms for rtt in rtts]
    runs = sum(1 for i, s in enumerate(slow) if s and (i == 0 or not slow[i - 1]))
    return (f"slowest {max(rtts, default=0):.1f} ms; {sum(slow)} of {len(rtts)} replies over {slow_ms:g} ms"
            + (f", in {runs} run(s) of consecutive replies" if runs else ""))


def parse_iperf(text: str) -> dict[str, Any]:
    """iperf3 -J output; BenchError when it is not JSON or reports an error."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise BenchError(f"iperf3 printed no JSON: {text[-300:]!r}") from exc
    if data.get("error"):
        raise BenchError(f"iperf3: {data['error']}")
    return data


def iperf_tcp_gbps(data: dict[str, Any]) -> float:
    """Received Gbit/s of an iperf3 TCP test (without the omitted start, when -O was given)."""
    return float(data["end"]["sum_received"]["bits_per_second"]) / 1e9


def iperf_omitted_gbps(data: dict[str, Any]) -> float | None:
    """Sent Gbit/s over the omitted start of an iperf3 TCP test (-O), or None when nothing was omitted."""
    omitted = [i["sum"] for i in data.get("intervals", []) if i.get("sum", {}).get("omitted")]
    secs = sum(float(i["seconds"]) for i in omitted)
    if not omitted or secs <= 0:
        return None
    return sum(float(i["bytes"]) for i in omitted) * 8 / secs / 1e9


def iperf_udp(data: dict[str, Any]) -> tuple[float, int]:
    """(packets per second sent, packets lost) of an iperf3 UDP test."""
    total = data["end"]["sum"]
    seconds = float(total.get("seconds") or 0) or 1.0
    return int(total.get("packets", 0)) / seconds, int(total.get("lost_packets", 0))


def cpu_ticks(stat: str) -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from the first line of /proc/stat."""
    for line in stat.splitlines():
        if line.startswith("cpu "):
            ticks = [int(x) for x in line.split()[1:]]
            idle = sum(ticks[3:5])  # idle + iowait
            return sum(ticks) - idle, sum(ticks)
    return 0, 0


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Share of CPU time that was busy between two cpu_ticks() readings (0..1)."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else 0.0


@dataclass(frozen=True)
class QueueStats:
    """One line of /proc/net/netfilter/nfnetlink_queue."""

    queue: int
    waiting: int
    dropped: int
    user_dropped: int
    id_sequence: int


def parse_nfqueue(text: str) -> dict[int, QueueStats]:
    """Columns: queue_num portid queue_total copy_mode copy_range queue_dropped user_dropped id_sequence 1."""
    out = {}
    for line in text.splitlines():
        cols = line.split()
        if len(cols) >= 8 and all(c.isdigit() for c in cols[:8]):
            q = int(cols[0])
            out[q] = QueueStats(q, int(cols[2]), int(cols[5]), int(cols[6]), int(cols[7]))
    return out


def search_rate(probe: Callable[[int], tuple[float, bool]], start: int, max_probes: int) -> tuple[float, bool, list[tuple[int, float, bool]]]:
    """Highest zero-loss rate: double from ``start`` until a probe fails, then bisect.

    ``probe(target)`` returns (achieved rate, ok). A passing probe that fell short of its target
    means the generator is the limit: the search stops there. Returns (best achieved rate,
    generator-limited, [(target, achieved, ok), ...]).
    """
    best, limited = 0.0, False
    good, bad = 0, None
    target = start
    history: list[tuple[int, float, bool]] = []
    for _ in range(max_probes):
        achieved, ok = probe(target)
        history.append((target, achieved, ok))
        saturated = achieved < SATURATED * target
        if ok:
            if achieved > best:
                best, limited = achieved, saturated
            good = max(good, target)
            if saturated:
                break
        else:
            bad = target if bad is None else min(bad, target)
        if bad is None:
            target *= 2
        else:
            nxt = (good + bad) // 2
            if bad - good <= max(good, 1) * 0.1 or nxt in (good, bad):
                break
            target = nxt
    return best, limited, history


# ----------------------------------------------------------------------------- the report
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


def machine_info(cpuinfo: str, meminfo: str, nproc: int, kernel: str) -> dict[str, str]:
    """nproc, kernel, CPU model and memory from /proc text."""
    model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), "unknown")
    mem = next((ln.split()[1] for ln in meminfo.splitlines() if ln.startswith("MemTotal:")), "")
    return {
        "nproc": str(nproc),
        "kernel": kernel,
        "cpu": model,
        "memory": f"{int(mem) / (1 << 20):.1f} GiB" if mem.isdigit() else "unknown",
    }


def command_line(runs: int, seconds: float) -> str:
    """The command that produces the report (``make bench`` runs the defaults)."""
    cmd = f"vcr-agent bench --runs {runs} --seconds {seconds:g}"
    return f"`make bench` (= `{cmd}`)" if (runs, seconds) == (5, 5.0) else f"`{cmd}`"


def noise_line(when: str, busy: float, loads: Sequence[float], top: Sequence[tuple[float, str]]) -> str:
    """How busy the machine was with other work: CPU share, load averages and the busiest processes."""
    procs = ", ".join(f"{name} {pct:.0f}%" for pct, name in top) or "none above 1% of a CPU"
    return (f"{when}: {busy * 100:.0f}% of the CPUs busy over {NOISE_SECONDS:g} s with nothing of the bench running; "
            f"load average {' / '.join(f'{v:.2f}' for v in loads)} (1/5/15 min); busiest processes: {procs}.")


def table_cells(rows: Sequence[Row], headers: tuple[str, str, str] | None = None) -> list[list[str]]:
    """Header + one line per row: scenario, bare, agent, agent vs bare, goal, result."""
    base, measured, compare = headers or ("Bare bridge (median)", "Agent (median)", "Agent vs bare")
    out = [["Scenario", base, measured, compare, "Goal", "Result"]]
    for r in rows:
        m = r.metric
        unit = f" {m.unit}"
        bare = "n/a" if m.agent_only else _fmt(r.bare, m.digits) + (unit if r.bare is not None else "")
        agent = _fmt(r.agent, m.digits) + (unit if r.agent is not None else "")
        goal = m.goal.describe(m.unit) if m.goal else "reported"
        out.append([m.label, bare, agent, r.compare, goal, r.verdict])
    return out


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
         f"{_fmt(res.pipeline_pps, 0)} pkt/s ({res.pipeline_seconds:.1f} s, median of {len(res.pipeline_samples)})"],
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


def render_table(rows: Sequence[Row], headers: tuple[str, str, str] | None = None) -> str:
    """The results as an aligned plain-text table (for the terminal)."""
    return _aligned(table_cells(rows, headers))


def _aligned(cells: Sequence[Sequence[str]]) -> str:
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_terminal(report: Report) -> str:
    """Every section's table, then the offline figures, for the terminal."""
    out = []
    for sec in report.sections:
        out += [f"{sec.title}" + (f"  ** {sec.skipped} **" if sec.skipped else ""), render_table(sec.rows, sec.headers), ""]
    out.append("Offline IPS throughput (ET Open)")
    out.append(_aligned(offline_cells(report.offline)) if report.offline else f"  {report.offline_error}")
    return "\n".join(out)


def _md_table(cells: Sequence[Sequence[str]]) -> list[str]:
    esc = [[c.replace("|", "\\|") for c in line] for line in cells]
    out = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in esc[0]) + "|"]
    return out + ["| " + " | ".join(line) + " |" for line in esc[1:]]


def _samples_table(report: Report) -> list[str]:
    cells = [["Metric", *(f"{heading}, per run" for _, heading in report.columns)]]
    for m in METRICS:
        per_mode = [", ".join(_fmt(v, m.digits) for v in report.samples.get(mode, {}).get(m.key, [])) or "—"
                    for mode, _ in report.columns]
        if m.agent_only:
            per_mode = ["n/a" if mode == "bare" else v for (mode, _), v in zip(report.columns, per_mode)]
        cells.append([f"{m.label} ({m.unit})", *per_mode])
    return _md_table(cells)


def _section_md(sec: Section) -> list[str]:
    out = [f"## {sec.title}", "", f"Configuration: {sec.description}", ""]
    if sec.skipped:
        out += [f"**{sec.skipped.upper()[:1] + sec.skipped[1:]}: these rows were not measured.**", ""]
    return out + [*_md_table(table_cells(sec.rows, sec.headers)), ""]


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
        *_md_table(offline_cells(res)),
        "",
        *(f"- {line}" for line in offline_details(res)),
        "",
    ]
    return out


def render_markdown(report: Report) -> str:
    """docs/benchmarks.md."""
    mc = report.machine
    out = [
        "# Benchmarks: the agent against a bare bridge",
        "",
        "Generated by `vcr-agent bench` (agent/bench.py); do not edit by hand, run it again.",
        "",
        f"- Date: {report.date}" + (f" ({report.duration})" if report.duration else ""),
        f"- Machine: {mc.get('nproc', '?')} CPUs ({mc.get('cpu', '?')}), {mc.get('memory', '?')} RAM, "
        f"kernel {mc.get('kernel', '?')}",
        f"- Command: {report.command}",
        *(f"- Noise, {n[0].lower()}{n[1:]}" for n in report.noise),
        "",
    ]
    for sec in report.sections:
        out += _section_md(sec)
    out += _offline_md(report)
    errors = [f"- {sec.title}, {r.metric.label}: {e}" for sec in report.sections for r in sec.rows for e in r.errors]
    if errors:
        out += ["## Errors", "", *errors, ""]
    if report.notes:
        out += ["## Notes on this run", "", *(f"- {n}" for n in report.notes), ""]
    out += ["## Samples", "", *_samples_table(report), ""]
    out += ["## Method", "", *(f"- {m}" for m in report.method), ""]
    if report.diagnostics:
        out += ["## Diagnostics", "", *report.diagnostics, ""]
    return "\n".join(out).rstrip() + "\n"


METHOD = [
    "Topology: the lab of agent/lab.py: pc1/pc2 -- LAN switch -- UTM (lan0|wan0) -- router -- web "
    "(198.51.100.10), each a network namespace joined by veth pairs on one machine. Every client, server, "
    "the bridge and the agent share the same CPUs, so the agent's CPU time is taken from the load "
    "generators: the ratios are pessimistic for a box whose agent has cores of its own.",
    "Baseline: `Lab.bridge_bare()`, a plain Linux bridge br0 = lan0 + wan0 with bridge-nf-call-iptables off "
    "(no netfilter at all). Agent: `vcr-agent bridge up` + `vcr-agent run` (LabAgent) with the shipped "
    "config/vcr-agent.yaml plus the overrides of each configuration, i.e. br_netfilter, conntrack, the VCR-* "
    "chains, NFQUEUE with one worker per CPU, and the connmark fast path for decided flows. With ET Open the "
    f"agent is given {IPS_START_TIMEOUT:g} s to compile the rules and bind its queues.",
    "Kernel floor (`Bench.kernel_floor`): the bare bridge with br_netfilter on, conntrack byte counters on and "
    "`floor_ruleset`: the agent's FORWARD jump and fast-path compare, with the first packet of each connection "
    "marked accept in the kernel instead of queued. br_netfilter alone: the bare bridge with br_netfilter on and no "
    "rule at all (no conntrack either): the part of the floor that any NFQUEUE on bridged traffic brings. Only bulk "
    "TCP is measured in these two modes. They separate what the kernel mechanism of the design costs from what the "
    "agent adds.",
    "Each run measures every scenario in every mode (bare, br_netfilter alone, kernel floor, then each agent "
    "configuration); the order rotates from run to run (bare, brnf, kernel, fw, ips; brnf, kernel, fw, ips, bare; ...) "
    "so slow drift hits all of them. The agent is "
    "started afresh for each block and conntrack is flushed between blocks. With the agent, each scenario starts once "
    "no packet waits in its queues (/proc/net/netfilter/nfnetlink_queue), so a backlog the new-connection load left "
    "does not count as latency. Results are medians over the runs; "
    "latency percentiles are taken per run, then the median over runs.",
    f"Bulk TCP: `iperf3 -c web -P 4 -t SECONDS -O {BULK_OMIT} -J` from pc1, received Gbit/s over SECONDS after the "
    f"first {BULK_OMIT} s (iperf3's omit: TCP slow start, and with the IPS the inspection of each stream's first MiB "
    "in Python, are left out of the bulk rate and shown in a row of their own, sent Gbit/s over that first second), "
    f"{BULK_REPEATS} times back to back in each block; the block's figure is their median (each iperf3 run is listed under Diagnostics). Over veth this is CPU-bound: the "
    "figure follows the CPU share iperf3 and the bridge's softirq work get, which other load on the machine "
    "changes from run to run (see the CPU shares under Diagnostics).",
    "New connections: an HTTP/1.1 server in web that closes after each response; load generators in pc1 and pc2 "
    f"(one process each, {HTTP_CONCURRENCY} connections in flight each, epoll) open a new TCP connection per "
    "`GET /` with `Connection: close` for SECONDS and count completed responses (ephemeral ports "
    f"{CLIENT_PORTS.replace(' ', '-')}). The client closes with "
    "SO_LINGER 0 (RST) after reading the response, so neither side piles up TIME_WAIT sockets and a reused "
    "port never meets an old connection. With the agent every SYN goes to NFQUEUE and the firewall engine "
    "in Python decides the flow; the rest of the connection takes the connmark fast path unless an engine (the "
    "IPS) still wants to see it.",
    f"Latency: `ping -c {PING_COUNT} -i {PING_INTERVAL}` pc1 -> web, and {RR_COUNT} round trips of a "
    f"{RR_SIZE}-byte message on one TCP connection to an echo server in web (TCP_NODELAY); p50/p99 in ms. "
    "The goal is on agent minus bare.",
    f"Small packets: `iperf3 -u -l {UDP_PAYLOAD} -b RATE/2 -t {UDP_PROBE_SECONDS} -w {UDP_SOCKET_BUFFER}` from pc1 "
    "and from pc2 at the same time, each to its own iperf3 server in web; the total target rate starts at "
    f"{UDP_START_PPS:,} pkt/s and doubles until a probe loses a packet (iperf3's "
    "lost_packets), NFQUEUE drops one (queue_dropped + user_dropped in the UTM's "
    f"{NFQUEUE_PROC}) or a full queue lets one pass uninspected (fail-open: the packets the NFQUEUE rules of "
    "VCR-FWD counted minus the queues' id sequences, less queue_dropped), then bisects; at most {UDP_MAX_PROBES} probes. The figure is the achieved rate of the "
    "best loss-free probe. Each iperf3 3.x client sends from one thread; when they cannot reach their target the figure is "
    "marked generator-limited (a lower bound for the bridge). On this machine a sender's own CPU also runs the "
    "forwarding path of its packets (veth, bridge, router), so the generator limit is largely the cost of that path.",
    "Memory, for each agent configuration after the runs: "
    f"a fresh agent; pc1 gets secondary addresses 192.0.2.{FLOW_HOSTS[0]}-.{FLOW_HOSTS[-1]} and a raw "
    f"socket sends one UDP packet per (address, source port) pair to web port {SINK_PORT} (dropped by web's "
    f"INPUT chain), {len(FLOW_HOSTS) * (FLOW_TARGET // len(FLOW_HOSTS)):,} distinct flows paced at "
    f"{FLOW_RATE:,} pkt/s ({IPS_FLOW_RATE:,} pkt/s with ET Open, where every one goes through the IPS), "
    f"repeated (up to {FLOW_PASSES} passes) until the agent's "
    "`counters.flows.active` reaches the target. The flows spread over the "
    "workers by a symmetric 5-tuple hash (HMARK). RSS is summed over the agent process and its "
    "workers with psutil (forked workers share pages, so the RSS sum overstates; PSS is given in the notes). "
    "Every agent block also records the RSS right after start (idle, rules loaded): see the notes.",
    "Offline IPS throughput: no lab. A synthetic capture is written once to a temporary directory (agent/bench.py "
    f"`write_capture`, seed {CAPTURE_SEED}): {CAPTURE_HTTP_FLOWS} HTTP/1.1 flows (handshake, 1-3 GETs with browser "
    f"headers, HTML responses of {HTTP_BODY_RANGE[0] // 1000}-{HTTP_BODY_RANGE[1] // 1000} KB, log-uniform, "
    f"{HTTP_GZIP_SHARE:.0%} gzip, FIN close), {CAPTURE_DNS_QUERIES} DNS queries and answers, {CAPTURE_TLS_FLOWS} TLS "
    "flows (browser-like ClientHello, TLS 1.2 ServerHello, ciphertext), and TCP bulk of random bytes to ports "
    f"{', '.join(map(str, BULK_PORTS))}; clients in 192.168.10.0/24 (Suricata's default HOME_NET), servers in "
    f"198.51.100.0/24; {MSS}-byte segments, ACK every second segment. A child process (`python -m agent.bench "
    "offline-ips`) loads ET Open as `vcr-agent pcap -r FILE -S RULES` does (`offline_config(None, [], rule_files)`, "
    "`build_engines`), timed and with RSS before/after, then runs `agent.offline.run_pcap` over the capture with "
    "those engines (EVE to a file), timed alone. The limit: one hyperscan block-mode database of every fast "
    "pattern of the loaded detector (same flags as its prefilters: single-match, caseless where nocase) scans "
    "the L4 payload of every packet, timed without and with a Python match callback. The ratio compares both "
    "on the same payload bytes.",
]


# ----------------------------------------------------------------------------- host helpers
def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _helper_argv(role: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "agent.bench", role, *args]


def _helper_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


def ensure_nginx() -> tuple[str | None, str]:
    """Path of nginx (installing ``nginx-light`` with apt-get when missing) and a note saying what happened."""
    found = shutil.which("nginx")
    if found:
        return found, "nginx was already installed"
    if shutil.which("apt-get") is None:
        return None, "nginx is not installed and there is no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", NGINX_PACKAGE]
    print(f"bench: installing {NGINX_PACKAGE} with apt-get (the HTTP server of the connection scenario)", flush=True)
    for argv in (install, ["apt-get", "update", "-qq"], install):
        try:
            res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("%s: %s", " ".join(argv), exc)
            continue
        if argv is install and res.returncode == 0 and shutil.which("nginx"):
            return shutil.which("nginx"), f"nginx was installed by the bench (`apt-get install {NGINX_PACKAGE}`)"
    return None, f"`apt-get install {NGINX_PACKAGE}` failed"


def helper_results(procs: Sequence[subprocess.Popen], timeout: float, what: str) -> list[dict[str, Any]]:
    """The JSON result (last stdout line) of each helper process; BenchError naming ``what`` otherwise."""
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise BenchError(f"{what} did not finish") from None
        try:
            results.append(json.loads(out.decode().strip().splitlines()[-1]))
        except (ValueError, IndexError):
            raise BenchError(f"{what} failed: {err.decode()[-300:]}") from None
    return results


def agent_processes(pid: int) -> list[Any]:
    """psutil.Process of the agent and all its descendants."""
    import psutil

    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def agent_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of the agent and its workers so far."""
    import psutil

    total = 0.0
    for p in agent_processes(pid):
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def agent_memory(pid: int) -> tuple[float, float]:
    """(RSS, PSS) in MiB summed over the agent and its workers."""
    import psutil

    rss = pss = 0
    for p in agent_processes(pid):
        with contextlib.suppress(psutil.Error):
            info = p.memory_full_info()
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
    return rss / (1 << 20), pss / (1 << 20)


# ----------------------------------------------------------------------------- the benchmark run
class Bench:
    """One ``vcr-agent bench``: servers in web, every mode per run, samples, notes and diagnostics."""

    def __init__(self, lab: Lab, runs: int, seconds: float, workdir: Path, setups: Sequence[Setup]) -> None:
        self.lab = lab
        self.runs = runs
        self.seconds = seconds
        self.workdir = workdir
        self.setups = {s.mode: s for s in setups}
        self.modes = ["bare", *BULK_ONLY, *(s.mode for s in setups if not s.skipped)]
        self.web = lab.hosts["web"].ipv4
        every = ["bare", *BULK_ONLY, *self.setups]
        self.samples: dict[str, dict[str, list[float]]] = {m: {} for m in every}
        self.errors: dict[str, dict[str, list[str]]] = {m: {} for m in every}
        self.notes: list[str] = []
        self.diagnostics: dict[str, list[str]] = {}
        self.agent: LabAgent | None = None
        self.queued: dict[str, dict[str, list[str]]] = {m: {} for m in every}
        self.conn_errors = dict.fromkeys(every, 0)
        self.udp_limited = dict.fromkeys(every, 0)
        self.starts: dict[str, list[str]] = {m: [] for m in every}
        self.loads: list[str] = []
        self.bulk_cpu: list[str] = []
        self.engines: dict[str, list[str]] = {}
        self.iperf: dict[int, subprocess.Popen] = {}
        self.udp_errors: list[str] = []
        self.flow_addresses = False  # pc1 has the memory scenario's source addresses
        self.ping_tails: list[str] = []
        self.settles: list[str] = []  # scenarios that waited for a queue backlog to drain first

    # -- set-up ----------------------------------------------------------------------------
    def start_servers(self) -> None:
        lab = self.lab
        for port in {IPERF_PORT, *UDP_PORTS}:
            self.start_iperf(port)
        lab.start_tcp_listener("web", ECHO_PORT)
        lab.exec("web", ["iptables", "-A", "INPUT", "-p", "udp", "--dport", str(SINK_PORT), "-j", "DROP"])
        for pc in ("pc1", "pc2"):  # more ephemeral ports: fewer 4-tuples reused within a measurement
            lab.exec(pc, ["sysctl", "-q", "-w", f"net.ipv4.ip_local_port_range={CLIENT_PORTS}"])
        self._start_http()
        for port in {IPERF_PORT, HTTP_PORT, *UDP_PORTS}:
            self._wait_listening("web", port)

    def _wait_listening(self, host: str, port: int, timeout: float = 15.0) -> None:
        """Wait for a TCP listener without connecting to it (a bare connect upsets iperf3's server)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.lab.exec(host, ["ss", "-Hltn", f"sport = :{port}"]).stdout.strip():
                return
            time.sleep(0.2)
        raise BenchError(f"nothing listens on TCP port {port} in {host}")

    def _start_http(self) -> None:
        nginx, note = ensure_nginx()
        if nginx is not None:
            ngdir = self.workdir / "nginx"
            (ngdir / "tmp").mkdir(parents=True, exist_ok=True)
            conf = ngdir / "nginx.conf"
            conf.write_text(NGINX_CONF.format(workers=os.cpu_count() or 1, dir=ngdir, port=HTTP_PORT))
            self.lab.popen("web", [nginx, "-p", str(ngdir), "-c", str(conf)], name="nginx")
            version = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False).stderr.strip()
            self.notes.append(f"HTTP server: {version} ({note}), {os.cpu_count()} worker processes, access log off.")
            return
        procs = str(os.cpu_count() or 1)
        self.lab.popen("web", _helper_argv("serve-close", "--port", str(HTTP_PORT), "--procs", procs),
                       name="serve-close", env=_helper_env())
        self.notes.append(f"HTTP server: the pre-fork Python server of agent/bench.py ({procs} processes); {note}.")

    # -- modes -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def mode(self, mode: str, run: int) -> Iterator[None]:
        """The UTM as a bare bridge or with the agent running, for one block of measurements."""
        self.lab.exec("utm", ["conntrack", "-F"])
        if mode in ("bare", BRNF):  # a plain bridge; br_netfilter on (with no rule) in BRNF
            self.lab.bridge_bare(netfilter=mode == BRNF)
            try:
                self._wait_path()
                yield
            finally:
                self.lab.unbridge_bare()
            return
        if mode == KERNEL:
            with self.kernel_floor():
                self._wait_path()
                yield
            return
        setup = self.setups[mode]
        agent = LabAgent(self.lab, self.workdir / f"agent-{mode}-{run}", overrides=setup.overrides)
        try:
            agent.bridge_up()
            t0 = time.monotonic()
            agent.start(timeout=setup.start_timeout)
            ready = time.monotonic() - t0
            assert agent.proc is not None
            rss, pss = agent_memory(agent.proc.pid)
            self.starts[mode].append(f"ready in {ready:.1f} s, RSS {rss:.0f} MiB / PSS {pss:.0f} MiB")
            self.agent = agent
            self._wait_path()
            yield
        finally:
            self.agent = None
            agent.kill()
            try:
                agent.bridge_down()
            finally:
                # bridge down undoes what its state file says; the file is per machine, not per
                # namespace, so make sure the UTM is back to two unbridged ports whatever it said
                self.lab.unbridge_bare()

    @contextlib.contextmanager
    def kernel_floor(self) -> Iterator[None]:
        """The bridge with br_netfilter, conntrack (with byte counters, as the agent sets it) and
        ``floor_ruleset`` in both families; everything is undone afterwards."""
        lab = self.lab
        acct = lab.exec("utm", ["sysctl", "-n", ACCT_SYSCTL]).stdout.strip() or "0"
        lab.bridge_bare(netfilter=True)
        try:
            lab.exec("utm", ["sysctl", "-q", f"{ACCT_SYSCTL}=1"], check=True)
            for restore in ("iptables-restore", "ip6tables-restore"):
                lab.exec("utm", [restore, "--noflush", "-w"], input=floor_ruleset("br0"), check=True)
            yield
        finally:
            for tool in ("iptables", "ip6tables"):
                lab.exec("utm", [tool, "-w", "-D", "FORWARD", "-i", "br0", "-o", "br0", "-j", KERNEL_CHAIN])
                lab.exec("utm", [tool, "-w", "-F", KERNEL_CHAIN])
                lab.exec("utm", [tool, "-w", "-X", KERNEL_CHAIN])
            lab.exec("utm", ["sysctl", "-q", f"{ACCT_SYSCTL}={acct}"])
            lab.unbridge_bare()

    def _wait_path(self) -> None:
        if not self.lab.wait_tcp("pc1", self.web, ECHO_PORT, 10):
            raise BenchError("pc1 cannot reach web through the UTM")

    def nfqueue(self) -> dict[int, QueueStats]:
        return parse_nfqueue(self.lab.exec("utm", ["cat", NFQUEUE_PROC]).stdout)

    def nfq_drops(self) -> int:
        return sum(q.dropped + q.user_dropped for q in self.nfqueue().values())

    # -- scenarios -------------------------------------------------------------------------
    def bulk(self, mode: str) -> dict[str, float]:
        """BULK_REPEATS iperf3 runs back to back; the run's figure is their median (over veth the
        rate swings by a quarter from one run to the next, whatever the mode)."""
        secs = str(max(1, round(self.seconds)))
        rates, starts = [], []
        for _ in range(BULK_REPEATS):
            before = cpu_ticks(_read("/proc/stat"))
            res = self.lab.exec("pc1", ["iperf3", "-c", self.web, "-p", str(IPERF_PORT), "-P", "4", "-t", secs,
                                        "-O", str(BULK_OMIT), "-J"], timeout=self.seconds + BULK_OMIT + 60)
            busy = busy_share(before, cpu_ticks(_read("/proc/stat")))
            data = parse_iperf(res.stdout)
            gbps = iperf_tcp_gbps(data)
            rates.append(gbps)
            start = iperf_omitted_gbps(data)
            if start is not None:
                starts.append(start)
            cpu = data["end"].get("cpu_utilization_percent", {})
            self.bulk_cpu.append(f"{mode} {gbps:.2f} Gbit/s: iperf3 sender {cpu.get('host_total', 0):.0f}% + receiver "
                                 f"{cpu.get('remote_total', 0):.0f}% of a CPU, machine {busy * 100:.0f}% busy")
        mid, first = median(rates), median(starts)
        assert mid is not None
        return {"bulk_gbps": mid} | ({"bulk_start_gbps": first} if first is not None else {})

    def connections(self, mode: str) -> dict[str, float]:
        argv = _helper_argv("http-load", "--ip", self.web, "--port", str(HTTP_PORT), "--seconds", f"{self.seconds:g}",
                            "--concurrency", str(HTTP_CONCURRENCY))
        procs = [self.lab.popen(pc, argv, name=f"http-load-{pc}", env=_helper_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE) for pc in ("pc1", "pc2")]
        rate, errors = 0.0, 0
        for result in helper_results(procs, self.seconds + 60, "http load generator"):
            rate += result["done"] / max(result["elapsed"], 1e-6)
            errors += result["errors"]
        self.conn_errors[mode] += errors
        return {"conn_rate": rate}

    def latency(self, mode: str) -> dict[str, float]:
        res = self.lab.exec("pc1", ["ping", "-n", "-c", str(PING_COUNT), "-i", PING_INTERVAL, "-W", "1", self.web],
                            timeout=60)
        rtts = parse_ping(res.stdout)
        if len(rtts) < PING_COUNT * 0.9:
            raise BenchError(f"ping: only {len(rtts)} of {PING_COUNT} replies")
        self.ping_tails.append(f"{mode}: {ping_tail(rtts)}")
        rr = self.lab.exec("pc1", _helper_argv("tcp-rr", "--ip", self.web, "--port", str(ECHO_PORT),
                                               "--count", str(RR_COUNT), "--size", str(RR_SIZE)),
                           env=_helper_env(), timeout=120)
        try:
            rr_ms = json.loads(rr.stdout)["rtt_ms"]
        except (ValueError, KeyError):
            raise BenchError(f"tcp-rr failed: {rr.stderr[-300:]}") from None
        return {"ping_p50": percentile(rtts, 50), "ping_p99": percentile(rtts, 99),
                "rr_p50": percentile(rr_ms, 50), "rr_p99": percentile(rr_ms, 99)}

    def queue_bypassed(self) -> int:
        """Packets the NFQUEUE rules handed to a queue minus those the queues took (their id
        sequence): what a full queue let through uninspected (fail-open, NFQA_CFG_F_FAIL_OPEN; the
        kernel does not count these) or dropped (queue_dropped)."""
        if self.agent is None:
            return 0
        out = self.lab.exec("utm", ["iptables", "-w", "-L", "VCR-FWD", "-v", "-n", "-x"]).stdout
        ruled = sum(int(f[0]) for f in (line.split() for line in out.splitlines()[2:]) if len(f) > 2 and f[2] == "NFQUEUE")
        return ruled - sum(q.id_sequence for q in self.nfqueue().values())

    def udp_probe(self, mode: str, pps: int) -> tuple[float, bool]:
        """pc1 and pc2 each send half of ``pps`` to their own iperf3 server; (achieved pkt/s, loss-free).

        Loss-free means no packet lost, none dropped by a queue and none passed uninspected by a
        full queue (fail-open)."""
        before = self.nfq_drops()
        bypass0 = self.queue_bypassed() + sum(q.dropped for q in self.nfqueue().values())
        procs = []
        for pc, port in zip(UDP_SENDERS, UDP_PORTS):
            argv = ["iperf3", "-c", self.web, "-p", str(port), "-u", "-l", str(UDP_PAYLOAD),
                    "-b", str(pps * UDP_PAYLOAD * 8 // len(UDP_SENDERS)), "-t", str(UDP_PROBE_SECONDS),
                    "-w", UDP_SOCKET_BUFFER, "-J"]
            procs.append(self.lab.popen(pc, argv, name=f"iperf3-udp-{pc}", stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT))
        achieved, lost, failed = 0.0, 0, []
        for proc in procs:
            try:
                out, _ = proc.communicate(timeout=UDP_PROBE_SECONDS + 60)
                rate, n_lost = iperf_udp(parse_iperf(out.decode(errors="replace")))
            except (subprocess.TimeoutExpired, BenchError) as exc:
                proc.kill()
                failed.append(str(exc) or "iperf3 -u did not finish")
                continue
            achieved += rate
            lost += n_lost
        drops = self.nfq_drops() - before
        # a full queue's drops (queue_dropped) are in the rule count too: what is left passed uninspected
        bypassed = max(0, self.queue_bypassed() + sum(q.dropped for q in self.nfqueue().values()) - bypass0)
        log.info("udp probe %s %d pkt/s: sent %.0f pkt/s, lost %d, nfqueue drops %d, passed uninspected %d, errors %s",
                 mode, pps, achieved, lost, drops, bypassed, failed)
        if failed:  # counts as a lossy probe; a test that broke can leave iperf3's server "busy"
            self.udp_errors.append(f"{mode} at {pps:,} pkt/s: {'; '.join(failed)}")
            self.restart_udp_servers()
        return achieved, lost == 0 and drops == 0 and bypassed == 0 and not failed

    def restart_udp_servers(self) -> None:
        for port in UDP_PORTS:
            proc = self.iperf.pop(port, None)
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            self.start_iperf(port)
        for port in UDP_PORTS:
            self._wait_listening("web", port)

    def start_iperf(self, port: int) -> None:
        self.iperf[port] = self.lab.popen("web", ["iperf3", "-s", "-p", str(port)], name=f"iperf3-{port}")

    def small_packets(self, mode: str) -> dict[str, float]:
        def probe(pps: int) -> tuple[float, bool]:
            return self.udp_probe(mode, pps)

        best, limited, history = search_rate(probe, UDP_START_PPS, UDP_MAX_PROBES)
        if best <= 0:
            raise BenchError(f"no loss-free rate: {history}")
        self.udp_limited[mode] += int(limited)
        return {"udp_pps": best}

    def scenarios(self, mode: str) -> list[tuple[str, Callable[[], dict[str, float]], tuple[str, ...]]]:
        bulk = ("bulk TCP", lambda: self.bulk(mode), ("bulk_gbps", "bulk_start_gbps"))
        if mode in BULK_ONLY:
            return [bulk]  # the floors are a bulk-throughput question
        return [
            bulk,
            ("new connections", lambda: self.connections(mode), ("conn_rate",)),
            ("latency", lambda: self.latency(mode), ("ping_p50", "ping_p99", "rr_p50", "rr_p99")),
            ("small packets", lambda: self.small_packets(mode), ("udp_pps",)),
        ]

    def settle(self, mode: str, name: str) -> None:
        """Wait until no packet waits in the agent's queues (a scenario that saturated the workers
        leaves a backlog; the next one, latency above all, must start on an idle path)."""
        t0, empty = time.monotonic(), 0
        while empty < 2:
            queued = sum(q.waiting for q in self.nfqueue().values())
            empty = empty + 1 if queued == 0 else 0
            if time.monotonic() - t0 > SETTLE_TIMEOUT:
                self.settles.append(f"{mode} before {name}: {queued} packets still queued after {SETTLE_TIMEOUT:g} s")
                return
            time.sleep(0.02)
        took = time.monotonic() - t0
        if took > 0.1:
            self.settles.append(f"{mode} before {name}: {took:.1f} s")

    def run_scenarios(self, mode: str, run: int) -> None:
        for name, fn, keys in self.scenarios(mode):
            if self.agent:
                self.settle(mode, name)
            q0 = self.nfqueue() if self.agent else {}
            cpu0 = agent_cpu_seconds(self.agent.proc.pid) if self.agent and self.agent.proc else 0.0
            try:
                values = fn()
            except Exception as exc:  # noqa: BLE001 - one failed scenario must not stop the bench
                log.exception("%s (%s, run %d) failed", name, mode, run + 1)
                self.record_error(mode, keys, f"{mode}, run {run + 1}: {exc}")
                print(f"  {mode:5s} {name}: ERROR {exc}", flush=True)
                continue
            for key, value in values.items():
                self.samples[mode].setdefault(key, []).append(value)
            shown = ", ".join(f"{k}={v:,.3f}" if v < 100 else f"{k}={v:,.0f}" for k, v in values.items())
            print(f"  {mode:5s} {name}: {shown}", flush=True)
            if self.agent and self.agent.proc:
                self._record_queue_use(mode, name, q0, agent_cpu_seconds(self.agent.proc.pid) - cpu0)

    def record_error(self, mode: str, keys: Sequence[str], message: str) -> None:
        for key in keys:
            self.errors[mode].setdefault(key, []).append(message)

    def _record_queue_use(self, mode: str, name: str, before: dict[int, QueueStats], cpu: float) -> None:
        after = self.nfqueue()
        split = {q: s.id_sequence - before.get(q, QueueStats(q, 0, 0, 0, 0)).id_sequence for q, s in after.items()}
        drops = sum(s.dropped + s.user_dropped for s in after.values()) - sum(
            s.dropped + s.user_dropped for s in before.values())
        text = " / ".join(f"q{q}: {n:,}" for q, n in sorted(split.items()))
        self.queued[mode].setdefault(name, []).append(
            f"{sum(split.values()):,} packets queued ({text}), {drops:,} NFQUEUE drops, agent CPU {cpu:.2f} s")

    # -- memory ----------------------------------------------------------------------------
    def memory(self, mode: str) -> None:
        """Scenario 5, once, with a fresh agent: RSS after 100k distinct flows."""
        agent = self.agent
        assert agent is not None and agent.proc is not None
        self._check_conntrack_max()
        if not self.flow_addresses:
            batch = "".join(f"addr add 192.0.2.{h}/24 dev eth0\n" for h in FLOW_HOSTS)
            self.lab.exec("pc1", ["ip", "-batch", "-"], input=batch)
            self.flow_addresses = True
        time.sleep(2.5)
        idle_rss, idle_pss = agent_memory(agent.proc.pid)
        rate = self.setups[mode].flow_rate
        ports = FLOW_TARGET // len(FLOW_HOSTS)
        argv = _helper_argv("udp-flows", "--dst", self.web, "--dport", str(SINK_PORT), "--first", str(FLOW_HOSTS[0]),
                            "--last", str(FLOW_HOSTS[-1]), "--ports", str(ports), "--base-port", str(FLOW_PORT_BASE),
                            "--rate", str(rate))
        active, drops0 = 0, self.nfq_drops()
        for n in range(1, FLOW_PASSES + 1):
            res = self.lab.exec("pc1", argv, env=_helper_env(), timeout=FLOW_TARGET / rate * 3 + 60)
            if res.returncode != 0:
                raise BenchError(f"udp-flows failed: {res.stderr[-300:]}")
            active = self._wait_flows(agent, FLOW_TARGET)
            print(f"  agent memory: pass {n}: {active:,} active flows", flush=True)
            if active >= FLOW_TARGET:
                break
        rss, pss = agent_memory(agent.proc.pid)
        self.samples[mode].setdefault("rss_mib", []).append(rss)
        ct = self.lab.exec("utm", ["conntrack", "-C"]).stdout.strip()
        self.notes.append(
            f"Memory ({mode}): {active:,} active flows in the agent's flow table after {n} pass(es) (target "
            f"{FLOW_TARGET:,}); RSS {idle_rss:.1f} MiB idle -> {rss:.1f} MiB, PSS {idle_pss:.1f} -> {pss:.1f} MiB "
            f"(agent + {len(agent_processes(agent.proc.pid)) - 1} child processes); {ct or '?'} conntrack entries.")
        drops = self.nfq_drops() - drops0
        if drops or active < FLOW_TARGET:
            self.notes.append(f"Memory ({mode}): {drops:,} of the flow packets were dropped by full NFQUEUE queues (the "
                              "workers fell behind the sender); the next pass re-sent them.")

    def _wait_flows(self, agent: LabAgent, target: int, timeout: float = 12.0) -> int:
        """Poll the status file until the active-flow count reaches ``target`` or stops growing."""
        deadline = time.monotonic() + timeout
        last, still = -1, 0
        while time.monotonic() < deadline:
            active = agent.counter("flows", "active")
            if active >= target:
                return active
            still = still + 1 if active == last else 0
            if still >= 6 and not any(q.waiting for q in self.nfqueue().values()):
                return active
            last = active
            time.sleep(0.5)
        return max(last, 0)

    def _check_conntrack_max(self) -> None:
        need = int(FLOW_TARGET * 1.2)
        text = self.lab.exec("utm", ["cat", CONNTRACK_MAX]).stdout.strip()
        current = int(text) if text.isdigit() else 0
        if current >= need:
            note = (f"Memory: net.netfilter.nf_conntrack_max is {current:,} in the UTM namespace "
                    f"(enough for {FLOW_TARGET:,} flows; not changed).")
        else:
            raised = self.lab.exec("utm", ["sysctl", "-q", "-w", f"net.netfilter.nf_conntrack_max={need}"])
            state = "raised" if raised.returncode == 0 else "could not be raised (it is global, read-only in a netns)"
            note = f"Memory: net.netfilter.nf_conntrack_max was {current:,}; {state} to {need:,}."
        if note not in self.notes:
            self.notes.append(note)

    # -- diagnostics -----------------------------------------------------------------------
    def capture_diagnostics(self, mode: str) -> None:
        """iptables counters of the agent's chains, the agent's counters and its alerts, from this block."""
        agent = self.agent
        if agent is None:
            return
        fwd = self.lab.exec("utm", ["iptables", "-L", "VCR-FWD", "-v", "-n", "-x"]).stdout.strip()
        status = agent.status() or {}
        counters = status.get("counters", {})
        self.engines[mode] = sorted(set(counters) - {"pipeline", "flows", "worker"})
        keep = {k: counters[k] for k in ("pipeline", "worker", "firewall", "ips") if k in counters}
        keep["flows"] = {k: v for k, v in counters.get("flows", {}).items() if v}
        alerts, top = eve_alerts(agent.eve_path) if agent.eve_path.is_file() else (0, [])
        shown = "; ".join(f"{n:,}× {sig}" for sig, n in top)
        self.diagnostics[mode] = [
            "Counters of the last block of this configuration (all scenarios of that run together).",
            "",
            f"Alerts in its eve.json: {alerts:,}" + (f" (most frequent: {shown})." if top else "."),
            "",
            "`iptables -L VCR-FWD -v -n -x` in the UTM namespace:",
            "",
            "```",
            fwd,
            "```",
            "",
            "Agent counters (`status.json`, written every 2 s):",
            "",
            "```json",
            json.dumps(keep, indent=1, sort_keys=True),
            "```",
        ]

    def queue_notes(self, mode: str) -> list[str]:
        queued = self.queued.get(mode, {})
        out = ["NFQUEUE use and agent CPU per scenario (one entry per run):", ""] if queued else []
        out += [f"- {name}: " + "; ".join(lines) for name, lines in queued.items()]
        return out + [""] if queued else out

    def diagnostics_md(self) -> list[str]:
        out = []
        for mode, setup in self.setups.items():
            if mode in self.diagnostics or self.queued.get(mode):
                out += [f"### {setup.title}", "", *self.queue_notes(mode), *self.diagnostics.get(mode, []), ""]
        if self.ping_tails:
            out += ["### Ping, the tail", "", "Per block, in run order:", ""]
            out += [f"- {line}" for line in self.ping_tails] + [""]
        if self.bulk_cpu:
            out += ["### Bulk TCP, CPU", "", "CPU share the iperf3 processes got (iperf3's own accounting; the "
                    "bridge's softirq work is not all in it) and how busy the whole machine was (/proc/stat):", ""]
            out += [f"- {line}" for line in self.bulk_cpu] + [""]
        return out

    # -- driver ----------------------------------------------------------------------------
    def run(self) -> None:
        for run in range(self.runs):
            for mode in rotated(self.modes, run):
                self.block(mode, run)
        for setup in self.setups.values():
            if setup.memory and not setup.skipped:
                self.memory_block(setup.mode)

    def block(self, mode: str, run: int) -> None:
        """Every scenario in one mode, for one run."""
        load = os.getloadavg()[0]
        print(f"run {run + 1}/{self.runs}: {mode} (load average {load:.2f})", flush=True)
        others, t0 = foreign_cpu(), time.monotonic()
        try:
            self._block(mode, run)
        finally:
            share, top = foreign_use(others, foreign_cpu(), (time.monotonic() - t0) * (os.cpu_count() or 1))
            shown = ", ".join(f"{name} {sec:.1f} s" for sec, name in top)
            self.loads.append(f"run {run + 1} {mode}: load {load:.2f}, other processes {share:.0%}"
                              + (f" ({shown})" if shown else ""))

    def _block(self, mode: str, run: int) -> None:
        try:
            with self.mode(mode, run):
                self.run_scenarios(mode, run)
                if mode != "bare":
                    self.capture_diagnostics(mode)
        except Exception as exc:  # noqa: BLE001
            log.exception("%s mode, run %d failed", mode, run + 1)
            print(f"  {mode}: ERROR {exc}", flush=True)
            self.record_error(mode, [k for _, _, keys in self.scenarios(mode) for k in keys], f"{mode}, run {run + 1}: {exc}")

    def memory_block(self, mode: str) -> None:
        print(f"memory: {mode} agent with 100k flows", flush=True)
        try:
            with self.mode(mode, self.runs):
                self.memory(mode)
        except Exception as exc:  # noqa: BLE001
            log.exception("memory scenario failed")
            print(f"  memory: ERROR {exc}", flush=True)
            self.record_error(mode, ["rss_mib"], f"{mode}: {exc}")

    def sections(self) -> list[Section]:
        out = []
        for setup in self.setups.values():
            if setup.skipped:
                out.append(Section(setup.title, setup.description, skipped_rows(setup), setup.skipped))
                continue
            rows = [summarize(m, self.samples["bare"].get(m.key, []), self.samples[setup.mode].get(m.key, []),
                              self.errors["bare"].get(m.key, []) + self.errors[setup.mode].get(m.key, []))
                    for m in setup.metrics]
            out.append(Section(setup.title, setup.description, rows))
            if setup.mode == "fw":
                out.append(self.kernel_section())
        return out

    def kernel_section(self) -> Section:
        """Bulk through the kernel floor against the bare bridge, and the firewall-only agent against the floor."""
        bulk = next(m for m in METRICS if m.key == "bulk_gbps")
        samples = {mode: self.samples[mode].get(bulk.key, []) for mode in ("bare", BRNF, KERNEL, "fw")}
        errors = {mode: self.errors[mode].get(bulk.key, []) for mode in ("bare", BRNF, KERNEL, "fw")}
        rows = [
            summarize(dataclasses.replace(bulk, label=f"{bulk.label}: br_netfilter alone (no rules, no conntrack) "
                                          "against the bare bridge", goal=None),
                      samples["bare"], samples[BRNF], errors["bare"] + errors[BRNF]),
            summarize(dataclasses.replace(bulk, label=f"{bulk.label}: kernel floor against the bare bridge", goal=None),
                      samples["bare"], samples[KERNEL], errors["bare"] + errors[KERNEL]),
            summarize(dataclasses.replace(bulk, label=f"{bulk.label}: agent, firewall only, against the kernel floor",
                                          goal=None),
                      samples[KERNEL], samples["fw"], errors[KERNEL] + errors["fw"]),
        ]
        return Section(KERNEL_TITLE, KERNEL_DESCRIPTION, rows, headers=("Baseline (median)", "Measured (median)", "Ratio"))

    def run_notes(self) -> list[str]:
        notes = list(self.notes)
        for setup in self.setups.values():
            if setup.skipped:
                notes.append(f"{setup.title}: {setup.skipped}.")
                continue
            notes += self._setup_notes(setup)
        floor = self.samples[KERNEL].get("bulk_gbps", [])
        if floor:
            bare, fw = self.samples["bare"].get("bulk_gbps", []), self.samples["fw"].get("bulk_gbps", [])
            brnf = self.samples[BRNF].get("bulk_gbps", [])
            notes.append(f"{KERNEL_TITLE}: bulk per run against the bare bridge, br_netfilter alone "
                         + ", ".join(f"{v:.2f}×" for v in paired(bare, brnf, False))
                         + "; the floor "
                         + ", ".join(f"{v:.2f}×" for v in paired(bare, floor, False))
                         + "; the firewall-only agent against the floor per run "
                         + ", ".join(f"{v:.2f}×" for v in paired(floor, fw, False)) + ".")
        if self.settles:
            notes.append("Queue backlog left by the scenario before (each scenario with the agent starts once no packet "
                          "waits in its queues): " + "; ".join(self.settles) + ".")
        if any(self.conn_errors.values()):
            notes.append("New connections: failed connections counted by the load generators: "
                         + ", ".join(f"{m} {n}" for m, n in self.conn_errors.items()) + ".")
        if self.udp_errors:
            notes.append("Small packets: iperf3 tests that broke (counted as lossy probes): "
                         + "; ".join(self.udp_errors) + ".")
        for mode in self.modes:
            if self.udp_limited[mode]:
                notes.append(f"Small packets ({mode}): in {self.udp_limited[mode]} of {self.runs} runs the best "
                             "loss-free probe was generator-limited (iperf3 could not send its target rate): "
                             "the figure is a lower bound.")
        notes.append("Noise per block: the 1-minute load average at its start, and the share of all CPU time during "
                     "the block that processes outside the bench used (user processes only; softirq work is not in it), "
                     "with the biggest in CPU seconds: " + "; ".join(self.loads) + ". The load generators, the bridge "
                     "and the agent account for up to about 2 of the load average while a block runs; anything else on "
                     "the machine competes with them for the same 2 CPUs, so compare the per-run samples.")
        return notes

    def _setup_notes(self, setup: Setup) -> list[str]:
        mode, notes = setup.mode, []
        for m in setup.metrics:
            note = noise_note(m, self.samples["bare"].get(m.key, []), self.samples[mode].get(m.key, []))
            if note:
                notes.append(f"{setup.title}: {note}")
        if self.engines.get(mode):
            notes.append(f"{setup.title}: engines enabled (as the agent's counters show): "
                         + ", ".join(self.engines[mode]) + ". Only what they inspect reaches Python; decided flows "
                         "are offloaded to the kernel.")
        if self.starts[mode]:
            notes.append(f"{setup.title}: agent start to all workers ready, and its RSS/PSS then (idle): "
                         + "; ".join(self.starts[mode]) + ".")
        return notes


def rotated(modes: Sequence[str], run: int) -> list[str]:
    """The order of the modes in run ``run``: rotated by one each run (each mode leads once in len(modes) runs)."""
    k = run % len(modes) if modes else 0
    return [*modes[k:], *modes[:k]]


def _proc_name(info: dict[str, Any]) -> str:
    """A process's first words of command line on one line (``python -c`` scripts hold newlines)."""
    words = " ".join((info.get("cmdline") or [info.get("name") or "?"])[:4]).split()
    return " ".join(words)[:70]


def foreign_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds so far of every user process outside this bench's process tree (other people's work)."""
    import psutil

    me = psutil.Process()
    ours = {me.pid, *(c.pid for c in me.children(recursive=True))}
    out = {}
    for p in psutil.process_iter(["name", "cmdline", "cpu_times", "ppid", "status"]):
        info = p.info
        # 2 is kthreadd (kernel threads); a zombie is most likely a killed agent's worker, reparented
        if p.pid in ours or info.get("ppid") in (0, 2) or info.get("cpu_times") is None or info.get("status") == "zombie":
            continue
        out[p.pid] = (_proc_name(info), info["cpu_times"].user + info["cpu_times"].system)
    return out


def foreign_use(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
                cpu_seconds: float, top: int = 3) -> tuple[float, list[tuple[float, str]]]:
    """(share of ``cpu_seconds`` the other processes used between two foreign_cpu() readings, the
    biggest users as (seconds, name)); a process new since ``before`` counts with all its time."""
    used = [(sec - before.get(pid, (name, 0.0))[1], name) for pid, (name, sec) in after.items()]
    used = [(sec, name) for sec, name in used if sec > 0]
    share = sum(sec for sec, _ in used) / cpu_seconds if cpu_seconds > 0 else 0.0
    return share, [u for u in sorted(used, reverse=True)[:top] if u[0] >= 0.1]


def machine_noise(when: str) -> str:
    """A noise_line for now: CPU busy share over NOISE_SECONDS and the busiest processes (psutil)."""
    import psutil

    before = cpu_ticks(_read("/proc/stat"))
    procs = list(psutil.process_iter(["name", "cmdline"]))
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.cpu_percent(None)
    time.sleep(NOISE_SECONDS)
    busy = busy_share(before, cpu_ticks(_read("/proc/stat")))
    top = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            pct = p.cpu_percent(None)
            if pct >= 1 and p.pid != os.getpid():
                top.append((pct, _proc_name(p.info)))
    return noise_line(when, busy, os.getloadavg(), sorted(top, reverse=True)[:4])


def offline_throughput(workdir: Path) -> tuple[OfflineResult | None, str]:
    """Write the capture and run ``offline-ips`` on it; (result, "") or (None, why not)."""
    rules, classification = et_open_files()
    if not rules:
        return None, f"{ET_OPEN_MISSING} ({ET_OPEN}): offline IPS throughput skipped"
    folder = workdir / "offline"
    folder.mkdir(parents=True, exist_ok=True)
    pcap = folder / "office-mix.pcap"
    print(f"offline: writing the capture to {pcap}", flush=True)
    capture = write_capture(pcap)
    print(f"offline: {capture['packets']:,} packets, {capture['bytes'] / 1e6:.1f} MB; ET Open over it", flush=True)
    argv = _helper_argv("offline-ips", "--pcap", str(pcap), "--rules-dir", str(ET_OPEN), "--eve", str(folder / "eve.json"))
    try:
        res = subprocess.run(argv, env=_helper_env(), capture_output=True, text=True, timeout=OFFLINE_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return None, f"error: offline-ips did not finish in {OFFLINE_TIMEOUT} s"
    try:
        data = json.loads(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None, f"error: offline-ips failed: {res.stderr[-400:]}"
    data["top_alerts"] = [tuple(x) for x in data.get("top_alerts", [])]
    pcap.unlink(missing_ok=True)
    return OfflineResult(**data, capture=capture), ""


def build_report(bench: Bench, runs: int, seconds: float, offline: tuple[OfflineResult | None, str],
                 noise: list[str], duration: str) -> Report:
    machine = machine_info(_read("/proc/cpuinfo"), _read("/proc/meminfo"), os.cpu_count() or 0, platform.release())
    notes = bench.run_notes()
    res = offline[0]
    if res is not None:
        top = "; ".join(f"{n:,}× {sig}" for sig, n in res.top_alerts)
        counters = ", ".join(f"{k} {v:,}" for k, v in sorted(res.pipeline_counters.items()))
        notes.append(f"Offline: {res.alerts:,} alerts over the capture" + (f" (most frequent: {top})" if top else "")
                     + f"; pipeline counters: {counters}; hyperscan reported {res.matches:,} pattern matches "
                     "(single-match: at most one per pattern and payload).")
    return Report(
        date=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        machine=machine,
        command=command_line(runs, seconds),
        sections=bench.sections(),
        samples=bench.samples,
        columns=[("bare", "Bare bridge"), (BRNF, "br_netfilter alone"), (KERNEL, "Kernel floor"),
                 *((s.mode, s.title) for s in bench.setups.values())],
        notes=notes,
        method=METHOD,
        diagnostics=bench.diagnostics_md(),
        noise=noise,
        offline=res,
        offline_error=offline[1],
        duration=duration,
    )


def run_bench(args: argparse.Namespace) -> int:
    """``vcr-agent bench``: measure, print the tables, write args.out; 1 when a goal is missed or a row failed."""
    if args.runs < 1 or args.seconds <= 0:
        print("bench: --runs must be >= 1 and --seconds > 0", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="vcr-bench-"))
    started = time.monotonic()
    setups = agent_setups()
    for s in setups:
        if s.skipped:
            print(f"bench: WARNING: {s.title}: {s.skipped}; its rows are marked skipped", file=sys.stderr, flush=True)
    print(f"bench: lab {args.prefix}, {args.runs} run(s) of {args.seconds:g} s per scenario; work dir {workdir}", flush=True)
    noise = [machine_noise("Before the bench")]
    print(f"bench: {noise[0]}", flush=True)
    offline = offline_throughput(workdir)
    with Lab(args.prefix, log_dir=workdir / "lab") as lab:
        bench = Bench(lab, args.runs, args.seconds, workdir, setups)
        bench.start_servers()
        bench.run()
    noise.append(machine_noise("After the bench"))
    took = time.monotonic() - started
    report = build_report(bench, args.runs, args.seconds, offline, noise, f"the bench took {took / 60:.1f} min")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from agent.benchdoc import write_section

    write_section(out, "dataplane", render_markdown(report))
    print()
    print(render_terminal(report))
    print(f"\nbench: {took:.0f} s; report written to {out}")
    failed = any(r.verdict == "error" for r in report.rows) or report.offline_error.startswith("error")
    if failed:
        print(f"bench: logs of the failed measurements are kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if all(verdict_ok(r.verdict) for r in report.rows) and not failed else 1


# ----------------------------------------------------------------------------- synthetic capture
def inet_checksum(data: bytes) -> int:
    """The RFC 1071 Internet checksum of ``data`` (the value for the header field, host order)."""
    if len(data) % 2:
        data += b"\0"
    words = array.array("H", data)
    if sys.byteorder == "little":
        words.byteswap()
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _mac(addr: bytes) -> bytes:
    return b"\x02\x00" + addr  # locally administered, derived from the IPv4 address


class Capture:
    """Ethernet/IPv4 frames being built with their timestamps; written sorted by time as classic pcap."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, int, bytes]] = []
        self._ids = itertools.count(1)

    def add(self, ts: float, src: bytes, dst: bytes, proto: int, segment: bytes, csum_at: int) -> None:
        """One IPv4 packet carrying ``segment`` (a TCP/UDP header + data whose checksum field is at
        ``csum_at`` and still zero); fills in both checksums."""
        pseudo = src + dst + struct.pack("!BBH", 0, proto, len(segment))
        csum = inet_checksum(pseudo + segment) or 0xFFFF
        segment = segment[:csum_at] + struct.pack("!H", csum) + segment[csum_at + 2:]
        hdr = bytearray(_IPV4.pack(0x45, 0, 20 + len(segment), next(self._ids) & 0xFFFF, 0x4000, 64, proto, 0, src, dst))
        hdr[10:12] = struct.pack("!H", inet_checksum(bytes(hdr)))
        self.frames.append((ts, len(self.frames), _mac(dst) + _mac(src) + b"\x08\x00" + bytes(hdr) + segment))

    def udp(self, ts: float, src: tuple[bytes, int], dst: tuple[bytes, int], data: bytes) -> None:
        self.add(ts, src[0], dst[0], socket.IPPROTO_UDP, _UDP.pack(src[1], dst[1], 8 + len(data), 0) + data, 6)

    def write(self, path: Path) -> tuple[int, int]:
        """Write the frames as pcap (Ethernet, microseconds); (frames, bytes of frames)."""
        self.frames.sort()
        total = 0
        with open(path, "wb") as fh:
            fh.write(_PCAP_FILE.pack(0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
            for ts, _, frame in self.frames:
                sec = int(ts)
                fh.write(_PCAP_RECORD.pack(CAPTURE_EPOCH + sec, int((ts - sec) * 1e6), len(frame), len(frame)))
                fh.write(frame)
                total += len(frame)
        return len(self.frames), total


class TcpConversation:
    """One TCP connection in a Capture: handshake, data in MSS segments acknowledged every second
    segment, FIN close. Sequence and acknowledgement numbers stay consistent."""

    def __init__(self, cap: Capture, client: tuple[bytes, int], server: tuple[bytes, int], ts: float,
                 rtt: float, rng: random.Random) -> None:
        self.cap = cap
        self.ends = {True: client, False: server}
        self.seq = {True: rng.getrandbits(32), False: rng.getrandbits(32)}
        self.ts = ts
        self.rtt = rtt

    def segment(self, from_client: bool, flags: int, data: bytes = b"") -> None:
        (src, sport), (dst, dport) = self.ends[from_client], self.ends[not from_client]
        ack = self.seq[not from_client] if flags & TCP_ACK else 0
        hdr = _TCP.pack(sport, dport, self.seq[from_client], ack, 5 << 4, flags, 64240, 0, 0)
        self.cap.add(self.ts, src, dst, socket.IPPROTO_TCP, hdr + data, 16)
        used = len(data) + (1 if flags & (TCP_SYN | TCP_FIN) else 0)
        self.seq[from_client] = (self.seq[from_client] + used) & 0xFFFFFFFF
        self.ts += SEGMENT_GAP

    def open(self) -> None:
        self.segment(True, TCP_SYN)
        self.ts += self.rtt / 2
        self.segment(False, TCP_SYN | TCP_ACK)
        self.ts += self.rtt / 2
        self.segment(True, TCP_ACK)

    def send(self, from_client: bool, data: bytes) -> None:
        for n, off in enumerate(range(0, len(data), MSS)):
            last = off + MSS >= len(data)
            self.segment(from_client, TCP_ACK | (TCP_PSH if last else 0), data[off:off + MSS])
            if n % 2 or last:
                self.segment(not from_client, TCP_ACK)
        self.ts += self.rtt / 2

    def close(self) -> None:
        self.segment(True, TCP_FIN | TCP_ACK)
        self.ts += self.rtt / 2
        self.segment(False, TCP_FIN | TCP_ACK)
        self.ts += self.rtt / 2
        self.segment(True, TCP_ACK)


_WORDS = ("the office network update product news service support contact company report customer order "
          "price delivery account login search results page archive download manual release security notice "
          "meeting schedule project team market sales data cloud mobile device printer storage backup "
          "お知らせ 製品情報 会社概要 お問い合わせ 採用情報 サポート 新着 東京 大阪 営業部").split()
_HTML_HEAD = ('<!DOCTYPE html>\n<html lang="ja">\n<head>\n<meta charset="utf-8">\n<title>{title}</title>\n'
              '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
              '<link rel="stylesheet" href="/static/css/site.{n:08x}.css">\n'
              '<script src="/static/js/app.{n:08x}.js" defer></script>\n</head>\n<body>\n<header class="site-header">'
              '<nav><ul><li><a href="/">Home</a></li><li><a href="/news/">News</a></li>'
              '<li><a href="/products/">Products</a></li></ul></nav></header>\n<main>\n')
_USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0",
)
_SITES = ("www.example.com", "news.example.net", "shop.example.org", "intranet.example.co.jp", "cdn.example.com",
          "docs.example.net", "support.example.org", "blog.example.com")


def _paragraphs(rng: random.Random, count: int) -> list[str]:
    """HTML fragments to assemble pages from."""
    def words(k: int) -> str:
        return " ".join(rng.choices(_WORDS, k=k))

    out = []
    for n in range(count):
        out.append(f'<article class="item item-{n % 17}" id="a{n}">\n<h2>{words(rng.randint(3, 8))}</h2>\n'
                   f'<p>{words(rng.randint(30, 90))}</p>\n<p><a href="/{rng.choice(_WORDS)}/{n}.html">'
                   f'{words(3)}</a> &middot; <time datetime="2024-05-{n % 28 + 1:02d}">{n % 28 + 1}日</time></p>\n'
                   "</article>\n")
    return out


def html_page(rng: random.Random, pool: Sequence[str], size: int) -> bytes:
    """An HTML page of about ``size`` bytes (at least the head and tail)."""
    parts = [_HTML_HEAD.format(title=" ".join(rng.choices(_WORDS, k=4)), n=rng.getrandbits(32))]
    total = len(parts[0])
    while total < size:
        parts.append(rng.choice(pool))
        total += len(parts[-1])
    parts.append("</main>\n<footer>&copy; 2024 Example Co., Ltd.</footer>\n</body>\n</html>\n")
    return "".join(parts).encode()


def http_request(rng: random.Random, host: str, path: str) -> bytes:
    cookie = f"session={rng.getrandbits(128):032x}; lang=ja"
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {rng.choice(_USER_AGENTS)}\r\n"
            "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n"
            "Accept-Language: ja,en-US;q=0.7,en;q=0.3\r\nAccept-Encoding: gzip, deflate\r\n"
            f"Referer: http://{host}/\r\nCookie: {cookie}\r\nConnection: keep-alive\r\n"
            "Upgrade-Insecure-Requests: 1\r\n\r\n").encode()


def http_response(rng: random.Random, body: bytes, gzipped: bool) -> bytes:
    if gzipped:
        body = gzip.compress(body, 6, mtime=0)
    extra = "Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n" if gzipped else ""
    return (f"HTTP/1.1 200 OK\r\nDate: Mon, 20 May 2024 01:{rng.randint(0, 59):02d}:00 GMT\r\nServer: nginx/1.24.0\r\n"
            f"Content-Type: text/html; charset=utf-8\r\nContent-Length: {len(body)}\r\n{extra}"
            f'Cache-Control: max-age=600\r\nETag: "{rng.getrandbits(64):016x}"\r\nConnection: keep-alive\r\n\r\n'
            ).encode() + body


def _http_path(rng: random.Random, n: int) -> str:
    return rng.choice((
        "/", f"/news/2024/05/article-{n}.html", f"/products/{rng.choice(_WORDS[:40])}-{n}",
        f"/search?q={rng.choice(_WORDS[:40])}+{rng.choice(_WORDS[:40])}&page={n % 9 + 1}", f"/docs/manual/ch{n % 20}.html",
    ))


def _add_http(cap: Capture, rng: random.Random, counts: Counter[str]) -> None:
    pool = _paragraphs(rng, 400)
    lo, hi = HTTP_BODY_RANGE
    for n in range(CAPTURE_HTTP_FLOWS):
        host = rng.choice(_SITES)
        conv = TcpConversation(cap, (_client(n), 40_000 + n), (_server(n), 80), rng.uniform(0, CAPTURE_SECONDS),
                               rng.uniform(0.005, 0.05), rng)
        conv.open()
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            body = html_page(rng, pool, int(math.exp(rng.uniform(math.log(lo), math.log(hi)))))
            gzipped = rng.random() < HTTP_GZIP_SHARE
            conv.send(True, http_request(rng, host, _http_path(rng, n)))
            conv.send(False, http_response(rng, body, gzipped))
            conv.ts += rng.uniform(0.01, 0.3)
            counts["http transactions"] += 1
            counts["gzip responses"] += gzipped
            counts["http body bytes (before gzip)"] += len(body)
        conv.close()
        counts["http flows"] += 1


def dns_name(name: str) -> bytes:
    return b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"


def dns_message(txid: int, name: str, answers: Sequence[bytes] = (), response: bool = False) -> bytes:
    """A DNS query for ``name`` (type A), or its response with ``answers`` (IPv4 addresses)."""
    head = struct.pack("!HHHHHH", txid, 0x8180 if response else 0x0100, 1, len(answers), 0, 0)
    body = dns_name(name) + struct.pack("!HH", 1, 1)
    body += b"".join(b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 4) + a for a in answers)
    return head + body


def _add_dns(cap: Capture, rng: random.Random, counts: Counter[str]) -> None:
    resolver = (socket.inet_aton(DNS_SERVER), 53)
    for n in range(CAPTURE_DNS_QUERIES):
        name = rng.choice((rng.choice(_SITES), f"{rng.choice(_WORDS[:40])}{n}.example.com", "time.example.net"))
        client, ts, txid = (_client(n), 30_000 + n), rng.uniform(0, CAPTURE_SECONDS), rng.getrandbits(16)
        cap.udp(ts, client, resolver, dns_message(txid, name))
        answers = [_server(rng.randrange(1000)) for _ in range(rng.randint(1, 3))]
        cap.udp(ts + rng.uniform(0.001, 0.03), resolver, client, dns_message(txid, name, answers, response=True))
        counts["dns queries"] += 1


def _vec(width: int, data: bytes) -> bytes:
    return len(data).to_bytes(width, "big") + data


def _ext(kind: int, body: bytes) -> bytes:
    return struct.pack("!H", kind) + _vec(2, body)


def tls_record(ctype: int, payload: bytes) -> bytes:
    return struct.pack("!BHH", ctype, 0x0303, len(payload)) + payload


def tls_handshake(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + _vec(3, body)


def tls_client_hello(rng: random.Random, sni: str) -> bytes:
    """A ClientHello record as a current browser sends it (TLS 1.2/1.3, SNI, ALPN, key share)."""
    ciphers = (0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC013, 0xC014, 0x009C,
               0x009D, 0x002F, 0x0035)
    exts = b"".join((
        _ext(0, _vec(2, b"\0" + _vec(2, sni.encode()))), _ext(23, b""), _ext(0xFF01, b"\0"),
        _ext(10, _vec(2, struct.pack("!HHH", 29, 23, 24))), _ext(11, _vec(1, b"\0")), _ext(35, b""),
        _ext(16, _vec(2, _vec(1, b"h2") + _vec(1, b"http/1.1"))), _ext(5, b"\x01\0\0\0\0"),
        _ext(13, _vec(2, struct.pack("!8H", 0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601))),
        _ext(51, _vec(2, struct.pack("!H", 29) + _vec(2, rng.randbytes(32)))),
        _ext(43, _vec(1, struct.pack("!HH", 0x0304, 0x0303))), _ext(45, _vec(1, b"\x01")),
    ))
    body = (struct.pack("!H", 0x0303) + rng.randbytes(32) + _vec(1, rng.randbytes(32))
            + _vec(2, b"".join(struct.pack("!H", c) for c in ciphers)) + _vec(1, b"\0") + _vec(2, exts))
    return tls_record(22, tls_handshake(1, body))


def tls_server_hello(rng: random.Random) -> bytes:
    """ServerHello (TLS 1.2, ECDHE-RSA-AES128-GCM) and ServerHelloDone records."""
    exts = _ext(0xFF01, b"\0") + _ext(23, b"")
    body = struct.pack("!H", 0x0303) + rng.randbytes(32) + _vec(1, rng.randbytes(32)) + struct.pack("!HB", 0xC02F, 0)
    return tls_record(22, tls_handshake(2, body + _vec(2, exts))) + tls_record(22, tls_handshake(14, b""))


def _tls_data(rng: random.Random, size: int) -> bytes:
    """Application data records (random bytes: ciphertext) carrying ``size`` bytes."""
    return b"".join(tls_record(23, rng.randbytes(min(16_384, size - off))) for off in range(0, size, 16_384))


def _add_tls(cap: Capture, rng: random.Random, counts: Counter[str]) -> None:
    for n in range(CAPTURE_TLS_FLOWS):
        conv = TcpConversation(cap, (_client(n), 50_000 + n), (_server(n + 7), 443),
                               rng.uniform(0, CAPTURE_SECONDS), rng.uniform(0.005, 0.05), rng)
        conv.open()
        conv.send(True, tls_client_hello(rng, rng.choice(_SITES)))
        conv.send(False, tls_server_hello(rng))
        finished = tls_record(20, b"\x01") + tls_record(22, rng.randbytes(40))
        conv.send(True, tls_record(22, tls_handshake(16, _vec(1, rng.randbytes(32)))) + finished)
        conv.send(False, finished)
        conv.send(True, _tls_data(rng, rng.randint(300, 900)))
        size = rng.randint(2_000, 60_000)
        conv.send(False, _tls_data(rng, size))
        conv.close()
        counts["tls flows"] += 1
        counts["tls application bytes"] += size


def _add_bulk(cap: Capture, rng: random.Random, counts: Counter[str]) -> None:
    for n, port in enumerate(BULK_PORTS):
        conv = TcpConversation(cap, (_client(n + 3), 60_000 + n), (_server(n + 11), port),
                               rng.uniform(0, CAPTURE_SECONDS), 0.002, rng)
        conv.open()
        conv.send(True, rng.randbytes(BULK_BYTES))
        conv.close()
        counts["tcp bulk flows"] += 1
        counts["tcp bulk bytes"] += BULK_BYTES


def _client(n: int) -> bytes:
    return socket.inet_aton(f"192.168.10.{10 + n % 50}")  # Suricata's default HOME_NET


def _server(n: int) -> bytes:
    return socket.inet_aton(f"198.51.100.{20 + n % 200}")


def write_capture(path: Path, seed: int = CAPTURE_SEED) -> dict[str, int]:
    """A synthetic office capture: HTTP/1.1 browsing (some gzip), DNS, TLS and TCP bulk; what it holds."""
    rng = random.Random(seed)
    cap = Capture()
    counts: Counter[str] = Counter()
    for add in (_add_http, _add_dns, _add_tls, _add_bulk):
        add(cap, rng, counts)
    counts["packets"], counts["bytes"] = cap.write(path)
    return dict(counts)


# ----------------------------------------------------------------------------- offline IPS throughput
def et_open_files(folder: Path = ET_OPEN) -> tuple[list[Path], Path | None]:
    """The ET Open rule files (sorted) and classification.config; ([], None) when the folder is missing."""
    rules = sorted(folder.glob("*.rules")) if folder.is_dir() else []
    classification = folder / "classification.config"
    return rules, classification if rules and classification.is_file() else None


def _hs_escape(pattern: bytes) -> bytes:
    return b"".join(b"\\x%02x" % c for c in pattern)


def capture_payloads(pcap: Path) -> tuple[list[bytes], int]:
    """The L4 payload of every packet of ``pcap`` (non-empty ones) and the total frame bytes."""
    from agent.pcapfile import PcapReader
    from filters.packet import parse_linktype

    payloads, frame_bytes = [], 0
    with PcapReader(pcap) as reader:
        for rec in reader:
            frame_bytes += len(rec.data)
            pkt = parse_linktype(rec.data, rec.linktype, rec.ts)
            if pkt.payload:
                payloads.append(pkt.payload)
    return payloads, frame_bytes


def eve_alerts(path: Path, top: int = 5) -> tuple[int, list[tuple[str, int]]]:
    """Alert count and the most frequent signatures of an EVE file."""
    sigs: Counter[str] = Counter()
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                if rec.get("event_type") == "alert":
                    sigs[rec.get("alert", {}).get("signature", "?")] += 1
    return sum(sigs.values()), sigs.most_common(top)


def _timed(fn: Callable[[], Any], repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn``."""
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def fast_pattern_scan(detector: Any, payloads: Sequence[bytes]) -> dict[str, Any]:
    """The limit: one hyperscan database of every fast pattern the detector prefilters on, block-scanning
    each payload; timed without a match callback (the engine alone) and with a counting one."""
    import hyperscan as hs

    pats = [(i.idx, i.rule.fast_pattern.pattern, i.rule.fast_pattern.nocase) for i in detector.infos
            if i.group != "iponly" and i.rule.fast_pattern is not None and i.rule.fast_pattern.pattern]
    t0 = time.perf_counter()
    db = hs.Database(mode=hs.HS_MODE_BLOCK)
    db.compile(expressions=[_hs_escape(p) for _, p, _ in pats], ids=[i for i, _, _ in pats], elements=len(pats),
               flags=[hs.HS_FLAG_SINGLEMATCH | (hs.HS_FLAG_CASELESS if nc else 0) for _, _, nc in pats])
    compile_s = time.perf_counter() - t0
    hits = [0]

    def on_match(rule_id: int, start: int, end: int, flags: int, ctx: Any) -> None:
        hits[0] += 1

    def scan() -> None:
        for data in payloads:
            db.scan(data)

    def scan_counting() -> None:
        hits[0] = 0
        for data in payloads:
            db.scan(data, match_event_handler=on_match)

    return {"patterns": len(pats), "compile_seconds": compile_s, "scan_samples": _timed(scan, SCAN_REPEATS),
            "scan_callback_samples": _timed(scan_counting, SCAN_REPEATS), "matches": hits[0]}


@contextlib.contextmanager
def gc_pauses() -> Iterator[dict[int, list[float]]]:
    """Collect the garbage collector's pauses (ms) per generation while the block runs."""
    import gc

    pauses: dict[int, list[float]] = {}
    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.setdefault(info["generation"], []).append((time.perf_counter() - started[0]) * 1e3)

    gc.callbacks.append(callback)
    try:
        yield pauses
    finally:
        gc.callbacks.remove(callback)


def offline_ips(pcap: Path, rules_dir: Path, eve: Path) -> dict[str, Any]:
    """``vcr-agent pcap -r PCAP -S RULES`` timed without its rule load, then the hyperscan limit."""
    import functools
    import gc
    from unittest import mock

    import psutil

    from agent import offline
    from agent.worker import pipeline_from_config
    from filters.registry import build_engines

    proc = psutil.Process()
    rules, _ = et_open_files(rules_dir)
    cfg = offline.offline_config(None, [], rule_files=[str(f) for f in rules])  # what `-S` builds
    rss0 = proc.memory_info().rss
    t0 = time.perf_counter()
    engines = build_engines(cfg)
    load_s = time.perf_counter() - t0
    rss1 = proc.memory_info().rss
    ips = next(e for e in engines if e.name == "ips")
    # run_pcap builds its pipeline with pipeline_from_config(cfg, ...): hand it the engines loaded above
    prepared = functools.partial(pipeline_from_config, engines=engines)
    summary: dict[str, Any] = {}

    def run() -> None:
        with open(eve, "w", encoding="utf-8") as fh:
            summary.update(offline.run_pcap(offline.OfflineOptions(pcap=pcap), cfg, out=fh))

    with mock.patch.object(offline, "pipeline_from_config", prepared), gc_pauses() as pauses:
        pipeline = _timed(run, PIPELINE_REPEATS)
    full_gc = _timed(gc.collect, 1)[0]
    payloads, frame_bytes = capture_payloads(pcap)
    alerts, top = eve_alerts(eve)
    load = ips.summary()
    return {
        "packets": summary["packets"], "frame_bytes": frame_bytes, "payload_bytes": sum(map(len, payloads)),
        "payload_packets": len(payloads), "load_seconds": load_s, "rules_active": load.get("rules_active", 0),
        "rules_loaded": load.get("rules_loaded", 0), "rules_unsupported": load.get("rules_unsupported", 0),
        "rules_bad": load.get("rules_bad", 0), "rss_before_mib": rss0 / (1 << 20), "rss_after_mib": rss1 / (1 << 20),
        "pipeline_samples": pipeline, "alerts": alerts, "top_alerts": top,
        "pipeline_counters": summary["stats"].get("pipeline", {}),
        "gc": {str(g): [len(v), max(v), sum(v)] for g, v in sorted(pauses.items())},
        "gc_full_ms": full_gc * 1e3, "gc_objects": len(gc.get_objects()),
        **fast_pattern_scan(ips.detector, payloads),
    }


@dataclass(frozen=True)
class OfflineResult:
    """What ``python -m agent.bench offline-ips`` measured, plus what the capture holds."""

    packets: int
    frame_bytes: int
    payload_bytes: int
    payload_packets: int
    load_seconds: float
    rules_active: int
    rules_loaded: int
    rules_unsupported: int
    rules_bad: int
    rss_before_mib: float
    rss_after_mib: float
    pipeline_samples: list[float]  # seconds per pass over the capture
    alerts: int
    top_alerts: list[tuple[str, int]]
    pipeline_counters: dict[str, int]
    patterns: int
    compile_seconds: float
    scan_samples: list[float]  # seconds per hyperscan pass over the payloads, no match callback
    scan_callback_samples: list[float]  # the same with a counting match callback
    matches: int
    gc: dict[str, list[float]] = field(default_factory=dict)  # generation -> [collections, max ms, total ms]
    gc_full_ms: float = 0.0  # one full collection with the rules loaded
    gc_objects: int = 0  # objects the collector tracks then
    capture: dict[str, int] = field(default_factory=dict)

    @property
    def pipeline_seconds(self) -> float:
        return median(self.pipeline_samples) or 0.0

    @property
    def scan_seconds(self) -> float:
        return median(self.scan_samples) or 0.0

    @property
    def scan_callback_seconds(self) -> float:
        return median(self.scan_callback_samples) or 0.0

    @staticmethod
    def mbps(nbytes: int, seconds: float) -> float | None:
        return nbytes * 8 / seconds / 1e6 if seconds > 0 else None

    @property
    def pipeline_mbps(self) -> float | None:
        return self.mbps(self.frame_bytes, self.pipeline_seconds)

    @property
    def pipeline_payload_mbps(self) -> float | None:
        return self.mbps(self.payload_bytes, self.pipeline_seconds)

    @property
    def pipeline_pps(self) -> float | None:
        return self.packets / self.pipeline_seconds if self.pipeline_seconds > 0 else None

    @property
    def scan_mbps(self) -> float | None:
        return self.mbps(self.payload_bytes, self.scan_seconds)

    @property
    def scan_callback_mbps(self) -> float | None:
        return self.mbps(self.payload_bytes, self.scan_callback_seconds)

    @property
    def share_of_limit(self) -> float | None:
        """Pipeline over hyperscan on the same payload bytes (= scan time / pipeline time)."""
        return ratio(self.pipeline_payload_mbps, self.scan_mbps)


# ----------------------------------------------------------------------------- load generators
_CONNECTING, _SENT, _READING = range(3)


class HttpLoad:
    """Keeps ``concurrency`` one-request HTTP connections in flight with epoll; counts completed responses."""

    def __init__(self, ip: str, port: int, concurrency: int) -> None:
        self.addr = (ip, port)
        self.concurrency = concurrency
        self.request = f"GET / HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n".encode()
        self.ep = select.epoll()
        self.conns: dict[int, list[Any]] = {}  # fd -> [socket, state]
        self.done = 0
        self.errors = 0

    def _open(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(self.addr)
        self.conns[s.fileno()] = [s, _CONNECTING]
        self.ep.register(s.fileno(), select.EPOLLOUT)

    def _next(self, fd: int, ok: bool) -> None:
        """Close a finished (RST, no TIME_WAIT) or failed connection, count it and open the next one."""
        s, _ = self.conns.pop(fd)
        self.ep.unregister(fd)
        with contextlib.suppress(OSError):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        if ok:
            self.done += 1
        else:
            self.errors += 1
        self._open()

    def _event(self, fd: int, ev: int) -> None:
        s, state = self.conns[fd]
        if state == _CONNECTING:
            try:
                if ev & (select.EPOLLERR | select.EPOLLHUP):
                    raise OSError("connect failed")
                s.send(self.request)
            except OSError:
                self._next(fd, False)
                return
            self.conns[fd][1] = _SENT
            self.ep.modify(fd, select.EPOLLIN)
            return
        try:
            data = s.recv(65536)
        except OSError:
            self._next(fd, False)
            return
        if data:
            self.conns[fd][1] = _READING
        else:
            self._next(fd, state == _READING)

    def run(self, seconds: float) -> dict[str, float]:
        start = time.monotonic()
        for _ in range(self.concurrency):
            self._open()
        end = start + seconds
        while time.monotonic() < end:
            for fd, ev in self.ep.poll(0.1):
                self._event(fd, ev)
        return {"done": self.done, "errors": self.errors, "elapsed": time.monotonic() - start}


def serve_close(port: int, procs: int) -> int:
    """Pre-fork HTTP server: every process accepts on its own SO_REUSEPORT socket, answers and closes."""
    children = []
    for _ in range(max(1, procs)):
        pid = os.fork()
        if pid == 0:
            try:
                _serve_close_loop(port)
            finally:
                os._exit(0)
        children.append(pid)
    signal.signal(signal.SIGTERM, lambda *_: [os.kill(c, signal.SIGTERM) for c in children])
    for pid in children:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    return 0


def _serve_close_loop(port: int) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(4096)
    while True:
        conn, _ = srv.accept()
        try:
            conn.settimeout(5)
            if conn.recv(4096):
                conn.sendall(HTTP_RESPONSE)
        except OSError:
            pass
        finally:
            conn.close()


def tcp_rr(ip: str, port: int, count: int, size: int) -> list[float]:
    """Round-trip times (ms) of ``count`` ``size``-byte messages echoed on one TCP connection."""
    msg = b"x" * size
    out = []
    with socket.create_connection((ip, port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(count):
            t0 = time.perf_counter_ns()
            s.sendall(msg)
            got = 0
            while got < size:
                chunk = s.recv(size - got)
                if not chunk:
                    raise ConnectionError("echo server closed the connection")
                got += len(chunk)
            out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


def udp_flows(dst: str, dport: int, sources: Sequence[str], ports: int, base_port: int, rate: float) -> dict[str, float]:
    """Send one UDP packet per (source address, source port): distinct flows, paced at ``rate`` pkt/s."""
    payload = b"vcr-agent bench flow"
    daddr = socket.inet_aton(dst)
    saddrs = [socket.inet_aton(a) for a in sources]
    sent, start = 0, time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as s:
        for sport, saddr in itertools.product(range(base_port, base_port + ports), saddrs):
            udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
            hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0, saddr, daddr)
            s.sendto(hdr + udp, (dst, 0))
            sent += 1
            if sent % 200 == 0:
                ahead = sent / rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
    return {"sent": sent, "seconds": time.monotonic() - start}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m agent.bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="role", required=True)
    p = sub.add_parser("http-load", help="new HTTP connections per second")
    p.add_argument("--ip", required=True)
    p.add_argument("--port", type=int, default=HTTP_PORT)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=HTTP_CONCURRENCY)
    p = sub.add_parser("serve-close", help="pre-fork HTTP server that closes after each response")
    p.add_argument("--port", type=int, default=HTTP_PORT)
    p.add_argument("--procs", type=int, default=2)
    p = sub.add_parser("tcp-rr", help="request/response round trips on one TCP connection")
    p.add_argument("--ip", required=True)
    p.add_argument("--port", type=int, default=ECHO_PORT)
    p.add_argument("--count", type=int, default=RR_COUNT)
    p.add_argument("--size", type=int, default=RR_SIZE)
    p = sub.add_parser("udp-flows", help="one UDP packet per distinct flow (raw socket)")
    p.add_argument("--dst", required=True)
    p.add_argument("--dport", type=int, default=SINK_PORT)
    p.add_argument("--first", type=int, default=FLOW_HOSTS[0])
    p.add_argument("--last", type=int, default=FLOW_HOSTS[-1])
    p.add_argument("--ports", type=int, default=FLOW_TARGET // len(FLOW_HOSTS))
    p.add_argument("--base-port", type=int, default=FLOW_PORT_BASE)
    p.add_argument("--rate", type=float, default=FLOW_RATE)
    p = sub.add_parser("offline-ips", help="IPS throughput over a capture with ET Open, and the hyperscan limit")
    p.add_argument("--pcap", required=True, type=Path)
    p.add_argument("--rules-dir", type=Path, default=ET_OPEN)
    p.add_argument("--eve", required=True, type=Path)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The load generators, run inside lab namespaces: ``python -m agent.bench ROLE ...``."""
    args = _parser().parse_args(argv)
    if args.role == "http-load":
        print(json.dumps(HttpLoad(args.ip, args.port, args.concurrency).run(args.seconds)))
    elif args.role == "serve-close":
        return serve_close(args.port, args.procs)
    elif args.role == "offline-ips":
        logging.basicConfig(level=logging.WARNING)
        print(json.dumps(offline_ips(args.pcap, args.rules_dir, args.eve)))
    elif args.role == "tcp-rr":
        print(json.dumps({"rtt_ms": tcp_rr(args.ip, args.port, args.count, args.size)}))
    else:
        sources = [f"192.0.2.{h}" for h in range(args.first, args.last + 1)]
        print(json.dumps(udp_flows(args.dst, args.dport, sources, args.ports, args.base_port, args.rate)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
