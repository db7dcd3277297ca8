"""Lab benchmarks (``vcr-agent bench``): the bare bridge against the agent, written to docs/benchmarks.md.

Every scenario is measured on the bare bridge (``Lab.bridge_bare``, the baseline) and through the
running agent (``vcr-agent bridge up`` + ``vcr-agent run`` with the shipped config) in the same
invocation, ``--runs`` times each, alternating the two modes. The report gives medians, the agent's
ratio to (or, for latency, its difference from) the baseline, and the goal of the product issue.

The same module is the load generator inside the lab namespaces (``python -m agent.bench ROLE``):
``http-load`` (new HTTP connections per second), ``serve-close`` (a pre-fork HTTP server, used
when nginx is not available), ``tcp-rr`` (request/response round trips on one connection) and
``udp-flows`` (one UDP packet per distinct flow, for the flow-table memory figure).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import logging
import os
import platform
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from agent.lab import Lab
from agent.labrun import LabAgent

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
IPERF_PORT = 5201
HTTP_PORT = 8080
ECHO_PORT = 7007
SINK_PORT = 9  # UDP discard: the flow-table packets are dropped by web's own INPUT chain
HTTP_CONCURRENCY = 128
CLIENT_PORTS = "1024 65535"
PING_COUNT = 200
PING_INTERVAL = "0.01"
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
FLOW_PASSES = 3
NGINX_PACKAGE = "nginx-light"
NFQUEUE_PROC = "/proc/net/netfilter/nfnetlink_queue"
CONNTRACK_MAX = "/proc/sys/net/netfilter/nf_conntrack_max"
HTTP_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
)
NGINX_CONF = """daemon off;
worker_processes {workers};
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 8192; multi_accept on; }}
http {{
  access_log off;
  keepalive_timeout 0;
  client_body_temp_path {dir}/tmp; proxy_temp_path {dir}/tmp; fastcgi_temp_path {dir}/tmp;
  uwsgi_temp_path {dir}/tmp; scgi_temp_path {dir}/tmp;
  server {{ listen {port} reuseport backlog=4096; location / {{ return 200 "ok\\n"; }} }}
}}
"""


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
    Metric("conn_rate", "New connections, HTTP `Connection: close`", "conn/s", 0, Goal("min_ratio", 0.3)),
    Metric("ping_p50", "Latency, ping p50", "ms", 3, Goal("max_delta", 0.2), delta=True),
    Metric("ping_p99", "Latency, ping p99", "ms", 3, delta=True),
    Metric("rr_p50", "Latency, TCP request/response p50", "ms", 3, Goal("max_delta", 0.2), delta=True),
    Metric("rr_p99", "Latency, TCP request/response p99", "ms", 3, delta=True),
    Metric("udp_pps", "Small packets, UDP 64 B, highest zero-loss rate", "pkt/s", 0),
    Metric("rss_mib", "Memory, agent RSS with 100k flows", "MiB", 1, agent_only=True),
)


@dataclass
class Row:
    """A metric's medians, comparison and verdict."""

    metric: Metric
    bare: float | None
    agent: float | None
    compare: str
    verdict: str  # "pass" | "FAIL" | "reported" | "error"
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


# ----------------------------------------------------------------------------- parsing
def parse_ping(text: str) -> list[float]:
    """Round-trip times in ms from ``ping`` output (one ``time=X ms`` per reply)."""
    return [float(m) for m in re.findall(r"time[=<]([0-9.]+) ms", text)]


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
    """Received Gbit/s of an iperf3 TCP test."""
    return float(data["end"]["sum_received"]["bits_per_second"]) / 1e9


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
class Report:
    """Everything docs/benchmarks.md shows."""

    date: str
    machine: dict[str, str]
    command: str
    rows: list[Row]
    samples: dict[str, dict[str, list[float]]]
    notes: list[str]
    method: list[str]
    diagnostics: list[str]


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
    return f"`make bench` (= `{cmd}`)" if (runs, seconds) == (3, 5.0) else f"`{cmd}`"


def table_cells(rows: Sequence[Row]) -> list[list[str]]:
    """Header + one line per row: scenario, bare, agent, agent vs bare, goal, result."""
    out = [["Scenario", "Bare bridge (median)", "Agent (median)", "Agent vs bare", "Goal", "Result"]]
    for r in rows:
        m = r.metric
        unit = f" {m.unit}"
        bare = "n/a" if m.agent_only else _fmt(r.bare, m.digits) + (unit if r.bare is not None else "")
        agent = _fmt(r.agent, m.digits) + (unit if r.agent is not None else "")
        goal = m.goal.describe(m.unit) if m.goal else "reported"
        out.append([m.label, bare, agent, r.compare, goal, r.verdict])
    return out


def render_table(rows: Sequence[Row]) -> str:
    """The results as an aligned plain-text table (for the terminal)."""
    cells = table_cells(rows)
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _md_table(cells: Sequence[Sequence[str]]) -> list[str]:
    esc = [[c.replace("|", "\\|") for c in line] for line in cells]
    out = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in esc[0]) + "|"]
    return out + ["| " + " | ".join(line) + " |" for line in esc[1:]]


def _samples_table(report: Report) -> list[str]:
    cells = [["Metric", "Bare bridge, per run", "Agent, per run"]]
    for m in METRICS:
        per_mode = [", ".join(_fmt(v, m.digits) for v in report.samples.get(mode, {}).get(m.key, [])) or "—"
                    for mode in ("bare", "agent")]
        cells.append([f"{m.label} ({m.unit})", "n/a" if m.agent_only else per_mode[0], per_mode[1]])
    return _md_table(cells)


def render_markdown(report: Report) -> str:
    """docs/benchmarks.md."""
    mc = report.machine
    out = [
        "# Benchmarks: the agent against a bare bridge",
        "",
        "Generated by `vcr-agent bench` (agent/bench.py); do not edit by hand, run it again.",
        "",
        f"- Date: {report.date}",
        f"- Machine: {mc.get('nproc', '?')} CPUs ({mc.get('cpu', '?')}), {mc.get('memory', '?')} RAM, "
        f"kernel {mc.get('kernel', '?')}",
        f"- Command: {report.command}",
        "",
        "## Results",
        "",
        *_md_table(table_cells(report.rows)),
        "",
    ]
    errors = [f"- {r.metric.label}: {e}" for r in report.rows for e in r.errors]
    if errors:
        out += ["### Errors", "", *errors, ""]
    if report.notes:
        out += ["### Notes on this run", "", *(f"- {n}" for n in report.notes), ""]
    out += ["### Samples", "", *_samples_table(report), ""]
    out += ["## Method", "", *(f"- {m}" for m in report.method), ""]
    if report.diagnostics:
        out += ["## Diagnostics (agent mode)", "", *report.diagnostics, ""]
    return "\n".join(out).rstrip() + "\n"


METHOD = [
    "Topology: the lab of agent/lab.py: pc1/pc2 -- LAN switch -- UTM (lan0|wan0) -- router -- web "
    "(198.51.100.10), each a network namespace joined by veth pairs on one machine. Every client, server, "
    "the bridge and the agent share the same CPUs, so the agent's CPU time is taken from the load "
    "generators: the ratios are pessimistic for a box whose agent has cores of its own.",
    "Baseline: `Lab.bridge_bare()`, a plain Linux bridge br0 = lan0 + wan0 with bridge-nf-call-iptables off "
    "(no netfilter at all). Agent: `vcr-agent bridge up` + `vcr-agent run` with the shipped "
    "config/vcr-agent.yaml (LabAgent), i.e. br_netfilter, conntrack, the VCR-* chains, NFQUEUE with one "
    "worker per CPU, and the connmark fast path for decided flows.",
    "Each run measures every scenario in both modes; the order alternates (bare, agent, then agent, bare, ...) "
    "so slow drift hits both. The agent is started afresh for each run and conntrack is flushed between modes. "
    "Results are medians over the runs; latency percentiles are taken per run, then the median over runs.",
    "Bulk TCP: `iperf3 -c web -P 4 -t SECONDS -J` from pc1, received Gbit/s. Over veth this is CPU-bound: the "
    "figure follows the CPU share iperf3 and the bridge's softirq work get, which other load on the machine "
    "changes from run to run (see the CPU shares under Diagnostics).",
    "New connections: an HTTP/1.1 server in web that closes after each response; load generators in pc1 and pc2 "
    f"(one process each, {HTTP_CONCURRENCY} connections in flight each, epoll) open a new TCP connection per "
    "`GET /` with `Connection: close` for SECONDS and count completed responses (ephemeral ports "
    f"{CLIENT_PORTS.replace(' ', '-')}). The client closes with "
    "SO_LINGER 0 (RST) after reading the response, so neither side piles up TIME_WAIT sockets and a reused "
    "port never meets an old connection. With the agent every SYN goes to NFQUEUE and the firewall engine "
    "in Python decides the flow; the rest of the connection takes the connmark fast path.",
    f"Latency: `ping -c {PING_COUNT} -i {PING_INTERVAL}` pc1 -> web, and {RR_COUNT} round trips of a "
    f"{RR_SIZE}-byte message on one TCP connection to an echo server in web (TCP_NODELAY); p50/p99 in ms. "
    "The goal is on agent minus bare.",
    f"Small packets: `iperf3 -u -l {UDP_PAYLOAD} -b RATE/2 -t {UDP_PROBE_SECONDS} -w {UDP_SOCKET_BUFFER}` from pc1 "
    "and from pc2 at the same time, each to its own iperf3 server in web; the total target rate starts at {UDP_START_PPS:,} pkt/s and doubles until a probe loses a packet (iperf3's "
    "lost_packets) or NFQUEUE drops one (queue_dropped + user_dropped in the UTM's "
    f"{NFQUEUE_PROC}), then bisects; at most {UDP_MAX_PROBES} probes. The figure is the achieved rate of the "
    "best loss-free probe. Each iperf3 3.x client sends from one thread; when they cannot reach their target the figure is "
    "marked generator-limited (a lower bound for the bridge). On this machine a sender's own CPU also runs the "
    "forwarding path of its packets (veth, bridge, router), so the generator limit is largely the cost of that path.",
    f"Memory: a fresh agent; pc1 gets secondary addresses 192.0.2.{FLOW_HOSTS[0]}-.{FLOW_HOSTS[-1]} and a raw "
    f"socket sends one UDP packet per (address, source port) pair to web port {SINK_PORT} (dropped by web's "
    f"INPUT chain), {len(FLOW_HOSTS) * (FLOW_TARGET // len(FLOW_HOSTS)):,} distinct flows paced at "
    f"{FLOW_RATE:,} pkt/s, repeated (up to {FLOW_PASSES} passes) until the agent's "
    "`counters.flows.active` reaches the target. Different source addresses spread the flows over the "
    "workers (`--queue-balance` hashes the address pair). RSS is summed over the agent process and its "
    "workers with psutil (forked workers share pages, so the RSS sum overstates; PSS is given in the notes).",
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
    """One ``vcr-agent bench``: servers in web, both modes per run, samples, notes and diagnostics."""

    def __init__(self, lab: Lab, runs: int, seconds: float, workdir: Path) -> None:
        self.lab = lab
        self.runs = runs
        self.seconds = seconds
        self.workdir = workdir
        self.web = lab.hosts["web"].ipv4
        self.samples: dict[str, dict[str, list[float]]] = {"bare": {}, "agent": {}}
        self.errors: dict[str, list[str]] = {}
        self.notes: list[str] = []
        self.diagnostics: list[str] = []
        self.agent: LabAgent | None = None
        self.queued: dict[str, list[str]] = {}
        self.conn_errors = {"bare": 0, "agent": 0}
        self.udp_limited = {"bare": 0, "agent": 0}
        self.loads: list[str] = []
        self.bulk_cpu: list[str] = []
        self.engines: list[str] = []
        self.iperf: dict[int, subprocess.Popen] = {}
        self.udp_errors: list[str] = []

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
        if mode == "bare":
            self.lab.bridge_bare()
            try:
                self._wait_path()
                yield
            finally:
                self.lab.unbridge_bare()
            return
        agent = LabAgent(self.lab, self.workdir / f"agent-{run}")
        try:
            agent.bridge_up()
            agent.start()
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

    def _wait_path(self) -> None:
        if not self.lab.wait_tcp("pc1", self.web, ECHO_PORT, 10):
            raise BenchError("pc1 cannot reach web through the UTM")

    def nfqueue(self) -> dict[int, QueueStats]:
        return parse_nfqueue(self.lab.exec("utm", ["cat", NFQUEUE_PROC]).stdout)

    def nfq_drops(self) -> int:
        return sum(q.dropped + q.user_dropped for q in self.nfqueue().values())

    # -- scenarios -------------------------------------------------------------------------
    def bulk(self, mode: str) -> dict[str, float]:
        secs = str(max(1, round(self.seconds)))
        before = cpu_ticks(_read("/proc/stat"))
        res = self.lab.exec("pc1", ["iperf3", "-c", self.web, "-p", str(IPERF_PORT), "-P", "4", "-t", secs, "-J"],
                            timeout=self.seconds + 60)
        busy = busy_share(before, cpu_ticks(_read("/proc/stat")))
        data = parse_iperf(res.stdout)
        gbps = iperf_tcp_gbps(data)
        cpu = data["end"].get("cpu_utilization_percent", {})
        self.bulk_cpu.append(f"{mode} {gbps:.2f} Gbit/s: iperf3 sender {cpu.get('host_total', 0):.0f}% + receiver "
                             f"{cpu.get('remote_total', 0):.0f}% of a CPU, machine {busy * 100:.0f}% busy")
        return {"bulk_gbps": gbps}

    def connections(self, mode: str) -> dict[str, float]:
        argv = _helper_argv("http-load", "--ip", self.web, "--port", str(HTTP_PORT), "--seconds", f"{self.seconds:g}",
                            "--concurrency", str(HTTP_CONCURRENCY))
        procs = [self.lab.popen(pc, argv, name=f"http-load-{pc}", env=_helper_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE) for pc in ("pc1", "pc2")]
        rate, errors = 0.0, 0
        for proc in procs:
            try:
                out, err = proc.communicate(timeout=self.seconds + 60)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise BenchError("http load generator did not finish") from None
            try:
                result = json.loads(out.decode().strip().splitlines()[-1])
            except (ValueError, IndexError):
                raise BenchError(f"http load generator failed: {err.decode()[-300:]}") from None
            rate += result["done"] / max(result["elapsed"], 1e-6)
            errors += result["errors"]
        self.conn_errors[mode] += errors
        return {"conn_rate": rate}

    def latency(self) -> dict[str, float]:
        res = self.lab.exec("pc1", ["ping", "-n", "-c", str(PING_COUNT), "-i", PING_INTERVAL, "-W", "1", self.web],
                            timeout=60)
        rtts = parse_ping(res.stdout)
        if len(rtts) < PING_COUNT * 0.9:
            raise BenchError(f"ping: only {len(rtts)} of {PING_COUNT} replies")
        rr = self.lab.exec("pc1", _helper_argv("tcp-rr", "--ip", self.web, "--port", str(ECHO_PORT),
                                               "--count", str(RR_COUNT), "--size", str(RR_SIZE)),
                           env=_helper_env(), timeout=120)
        try:
            rr_ms = json.loads(rr.stdout)["rtt_ms"]
        except (ValueError, KeyError):
            raise BenchError(f"tcp-rr failed: {rr.stderr[-300:]}") from None
        return {"ping_p50": percentile(rtts, 50), "ping_p99": percentile(rtts, 99),
                "rr_p50": percentile(rr_ms, 50), "rr_p99": percentile(rr_ms, 99)}

    def udp_probe(self, mode: str, pps: int) -> tuple[float, bool]:
        """pc1 and pc2 each send half of ``pps`` to their own iperf3 server; (achieved pkt/s, loss-free)."""
        before = self.nfq_drops()
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
        log.info("udp probe %s %d pkt/s: sent %.0f pkt/s, lost %d, nfqueue drops %d, errors %s",
                 mode, pps, achieved, lost, drops, failed)
        if failed:  # counts as a lossy probe; a test that broke can leave iperf3's server "busy"
            self.udp_errors.append(f"{mode} at {pps:,} pkt/s: {'; '.join(failed)}")
            self.restart_udp_servers()
        return achieved, lost == 0 and drops == 0 and not failed

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
        return [
            ("bulk TCP", lambda: self.bulk(mode), ("bulk_gbps",)),
            ("new connections", lambda: self.connections(mode), ("conn_rate",)),
            ("latency", self.latency, ("ping_p50", "ping_p99", "rr_p50", "rr_p99")),
            ("small packets", lambda: self.small_packets(mode), ("udp_pps",)),
        ]

    def run_scenarios(self, mode: str, run: int) -> None:
        for name, fn, keys in self.scenarios(mode):
            q0 = self.nfqueue() if self.agent else {}
            cpu0 = agent_cpu_seconds(self.agent.proc.pid) if self.agent and self.agent.proc else 0.0
            try:
                values = fn()
            except Exception as exc:  # noqa: BLE001 - one failed scenario must not stop the bench
                log.exception("%s (%s, run %d) failed", name, mode, run + 1)
                self.record_error(keys, f"{mode}, run {run + 1}: {exc}")
                print(f"  {mode:5s} {name}: ERROR {exc}", flush=True)
                continue
            for key, value in values.items():
                self.samples[mode].setdefault(key, []).append(value)
            shown = ", ".join(f"{k}={v:,.3f}" if v < 100 else f"{k}={v:,.0f}" for k, v in values.items())
            print(f"  {mode:5s} {name}: {shown}", flush=True)
            if self.agent and self.agent.proc:
                self._record_queue_use(name, q0, agent_cpu_seconds(self.agent.proc.pid) - cpu0)

    def record_error(self, keys: Sequence[str], message: str) -> None:
        for key in keys:
            self.errors.setdefault(key, []).append(message)

    def _record_queue_use(self, name: str, before: dict[int, QueueStats], cpu: float) -> None:
        after = self.nfqueue()
        split = {q: s.id_sequence - before.get(q, QueueStats(q, 0, 0, 0, 0)).id_sequence for q, s in after.items()}
        drops = sum(s.dropped + s.user_dropped for s in after.values()) - sum(
            s.dropped + s.user_dropped for s in before.values())
        text = " / ".join(f"q{q}: {n:,}" for q, n in sorted(split.items()))
        self.queued.setdefault(name, []).append(
            f"{sum(split.values()):,} packets queued ({text}), {drops:,} NFQUEUE drops, agent CPU {cpu:.2f} s")

    # -- memory ----------------------------------------------------------------------------
    def memory(self) -> None:
        """Scenario 5, once, with a fresh agent: RSS after 100k distinct flows."""
        agent = self.agent
        assert agent is not None and agent.proc is not None
        self._check_conntrack_max()
        batch = "".join(f"addr add 192.0.2.{h}/24 dev eth0\n" for h in FLOW_HOSTS)
        self.lab.exec("pc1", ["ip", "-batch", "-"], input=batch)
        time.sleep(2.5)
        idle_rss, idle_pss = agent_memory(agent.proc.pid)
        ports = FLOW_TARGET // len(FLOW_HOSTS)
        argv = _helper_argv("udp-flows", "--dst", self.web, "--dport", str(SINK_PORT), "--first", str(FLOW_HOSTS[0]),
                            "--last", str(FLOW_HOSTS[-1]), "--ports", str(ports), "--base-port", str(FLOW_PORT_BASE),
                            "--rate", str(FLOW_RATE))
        active, drops0 = 0, self.nfq_drops()
        for n in range(1, FLOW_PASSES + 1):
            res = self.lab.exec("pc1", argv, env=_helper_env(), timeout=FLOW_TARGET / FLOW_RATE * 3 + 60)
            if res.returncode != 0:
                raise BenchError(f"udp-flows failed: {res.stderr[-300:]}")
            active = self._wait_flows(agent, FLOW_TARGET)
            print(f"  agent memory: pass {n}: {active:,} active flows", flush=True)
            if active >= FLOW_TARGET:
                break
        rss, pss = agent_memory(agent.proc.pid)
        self.samples["agent"].setdefault("rss_mib", []).append(rss)
        ct = self.lab.exec("utm", ["conntrack", "-C"]).stdout.strip()
        self.notes.append(
            f"Memory: {active:,} active flows in the agent's flow table after {n} pass(es) (target "
            f"{FLOW_TARGET:,}); RSS {idle_rss:.1f} MiB idle -> {rss:.1f} MiB, PSS {idle_pss:.1f} -> {pss:.1f} MiB "
            f"(agent + {len(agent_processes(agent.proc.pid)) - 1} child processes); {ct or '?'} conntrack entries.")
        drops = self.nfq_drops() - drops0
        if drops or active < FLOW_TARGET:
            self.notes.append(f"Memory: {drops:,} of the flow packets were dropped by full NFQUEUE queues (the "
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
            self.notes.append(f"Memory: net.netfilter.nf_conntrack_max is {current:,} in the UTM namespace "
                              f"(enough for {FLOW_TARGET:,} flows; not changed).")
            return
        raised = self.lab.exec("utm", ["sysctl", "-q", "-w", f"net.netfilter.nf_conntrack_max={need}"])
        state = "raised" if raised.returncode == 0 else "could not be raised (it is global, read-only in a netns)"
        self.notes.append(f"Memory: net.netfilter.nf_conntrack_max was {current:,}; {state} to {need:,}.")

    # -- diagnostics -----------------------------------------------------------------------
    def capture_diagnostics(self) -> None:
        """iptables counters of the agent's chains and the agent's counters, from the last agent run."""
        agent = self.agent
        if agent is None:
            return
        fwd = self.lab.exec("utm", ["iptables", "-L", "VCR-FWD", "-v", "-n", "-x"]).stdout.strip()
        status = agent.status() or {}
        counters = status.get("counters", {})
        self.engines = sorted(set(counters) - {"pipeline", "flows", "worker"})
        keep = {k: counters.get(k, {}) for k in ("pipeline", "worker", "firewall")}
        keep["flows"] = {k: v for k, v in counters.get("flows", {}).items() if v}
        self.diagnostics = [
            "Counters of the last regular agent run (all scenarios of that run together).",
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

    def queue_notes(self) -> list[str]:
        out = ["NFQUEUE use and agent CPU per scenario (agent mode, one entry per run):", ""]
        for name, lines in self.queued.items():
            out += [f"- {name}: " + "; ".join(lines)]
        out = out + [""] if self.queued else []
        if self.bulk_cpu:
            out += ["Bulk TCP, CPU share the iperf3 processes got (iperf3's own accounting; the bridge's softirq "
                    "work is not all in it) and how busy the whole machine was (/proc/stat):", ""]
            out += [f"- {line}" for line in self.bulk_cpu] + [""]
        return out

    # -- driver ----------------------------------------------------------------------------
    def run(self) -> None:
        for run in range(self.runs):
            order = ("bare", "agent") if run % 2 == 0 else ("agent", "bare")
            for mode in order:
                load = os.getloadavg()[0]
                self.loads.append(f"run {run + 1} {mode}: {load:.2f}")
                print(f"run {run + 1}/{self.runs}: {mode} (load average {load:.2f})", flush=True)
                try:
                    with self.mode(mode, run):
                        self.run_scenarios(mode, run)
                        if mode == "agent":
                            self.capture_diagnostics()
                except Exception as exc:  # noqa: BLE001
                    log.exception("%s mode, run %d failed", mode, run + 1)
                    print(f"  {mode}: ERROR {exc}", flush=True)
                    self.record_error([m.key for m in METRICS if not m.agent_only], f"{mode}, run {run + 1}: {exc}")
        print("memory: agent with 100k flows", flush=True)
        try:
            with self.mode("agent", self.runs):
                self.memory()
        except Exception as exc:  # noqa: BLE001
            log.exception("memory scenario failed")
            print(f"  memory: ERROR {exc}", flush=True)
            self.record_error(["rss_mib"], f"agent: {exc}")

    def rows(self) -> list[Row]:
        return [summarize(m, self.samples["bare"].get(m.key, []), self.samples["agent"].get(m.key, []),
                          self.errors.get(m.key, [])) for m in METRICS]

    def run_notes(self) -> list[str]:
        notes = list(self.notes)
        for m in METRICS:
            note = noise_note(m, self.samples["bare"].get(m.key, []), self.samples["agent"].get(m.key, []))
            if note:
                notes.append(note)
        if self.engines:
            notes.append("Engines enabled by the shipped config (as the agent's counters show): "
                         + ", ".join(self.engines) + ". Only what they inspect reaches Python; decided flows are "
                         "offloaded to the kernel.")
        if any(self.conn_errors.values()):
            notes.append(f"New connections: failed connections counted by the load generators: "
                         f"bare {self.conn_errors['bare']}, agent {self.conn_errors['agent']}.")
        if self.udp_errors:
            notes.append("Small packets: iperf3 tests that broke (counted as lossy probes): "
                         + "; ".join(self.udp_errors) + ".")
        for mode in ("bare", "agent"):
            if self.udp_limited[mode]:
                notes.append(f"Small packets ({mode}): in {self.udp_limited[mode]} of {self.runs} runs the best "
                             "loss-free probe was generator-limited (iperf3 could not send its target rate): "
                             "the figure is a lower bound.")
        notes.append("1-minute load average at the start of each block: " + "; ".join(self.loads) + ". The load "
                     "generators, the bridge and the agent account for up to about 2 of it while a block runs; anything "
                     "else on the machine competes with them for the same 2 CPUs, so compare the per-run samples.")
        return notes


def build_report(bench: Bench, runs: int, seconds: float) -> Report:
    machine = machine_info(_read("/proc/cpuinfo"), _read("/proc/meminfo"), os.cpu_count() or 0, platform.release())
    return Report(
        date=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        machine=machine,
        command=command_line(runs, seconds),
        rows=bench.rows(),
        samples=bench.samples,
        notes=bench.run_notes(),
        method=METHOD,
        diagnostics=bench.queue_notes() + bench.diagnostics,
    )


def run_bench(args: argparse.Namespace) -> int:
    """``vcr-agent bench``: measure, print the table, write args.out; 1 when a goal is missed or a row failed."""
    if args.runs < 1 or args.seconds <= 0:
        print("bench: --runs must be >= 1 and --seconds > 0", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="vcr-bench-"))
    started = time.monotonic()
    print(f"bench: lab {args.prefix}, {args.runs} run(s) of {args.seconds:g} s per scenario; work dir {workdir}", flush=True)
    with Lab(args.prefix, log_dir=workdir / "lab") as lab:
        bench = Bench(lab, args.runs, args.seconds, workdir)
        bench.start_servers()
        bench.run()
    report = build_report(bench, args.runs, args.seconds)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_markdown(report), encoding="utf-8")
    print()
    print(render_table(report.rows))
    print(f"\nbench: {time.monotonic() - started:.0f} s; report written to {out}")
    if any(r.verdict == "error" for r in report.rows):
        print(f"bench: logs of the failed measurements are kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if all(r.verdict in ("pass", "reported") for r in report.rows) else 1


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The load generators, run inside lab namespaces: ``python -m agent.bench ROLE ...``."""
    args = _parser().parse_args(argv)
    if args.role == "http-load":
        print(json.dumps(HttpLoad(args.ip, args.port, args.concurrency).run(args.seconds)))
    elif args.role == "serve-close":
        return serve_close(args.port, args.procs)
    elif args.role == "tcp-rr":
        print(json.dumps({"rtt_ms": tcp_rr(args.ip, args.port, args.count, args.size)}))
    else:
        sources = [f"192.0.2.{h}" for h in range(args.first, args.last + 1)]
        print(json.dumps(udp_flows(args.dst, args.dport, sources, args.ports, args.base_port, args.rate)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
