"""The soak's analysis and report (no lab here: pure functions over what lab/bench/soak.py recorded).

* **Memory, descriptors, threads** per process (the daemon and each worker slot; a killed worker's
  successor continues its slot) and for the whole agent: the medians of the first and the last third
  of the time after warm-up, compared with a stated tolerance (``Tolerance``).
* **Connectivity**: the prober's lines (``lab/bench/soak_roles.py``): the longest time between two
  successful probes (a *gap*), failures and round trips per probe kind.
* **Alarms**: every action of the alarm schedule must have raised exactly one alarm of its kind in
  eve.json (found by its source address and port), and the center must hold exactly the records of
  eve.json, each once.
"""
from __future__ import annotations

import collections
import json
import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from lab.bench.report import md_table, percentile

SOAK_SID = 9400001  # the soak's own IPS rule (outbound HTTP to /soak-canary/)
FIREWALL_TELNET = "VCR firewall: block outbound telnet"
FIREWALL_SMB = "VCR firewall: block outbound SMB"
INBOUND_SID = 9200001  # config/rules/local.rules: path traversal to /etc/passwd
IPS_DNS_SID = 9200010  # config/rules/local.rules: DNS query for *malware.example

# Alarm kinds: what raises the alarm (shown in the report) and which path raises it.
KIND_INFO: dict[str, tuple[str, str]] = {
    "telnet": ("firewall: outbound telnet rejected", "kernel"),
    "smb": ("firewall: outbound SMB dropped", "kernel"),
    "cnc-ip": ("ATP: connection to a listed C&C address", "kernel"),
    "ips-dns": ("IPS: DNS query for a malware domain (local rule)", "worker"),
    "ips-http": ("IPS: outbound HTTP canary (soak rule)", "worker"),
    "inbound": ("IPS: path traversal from the internet, dropped", "worker"),
    "wf-dns": ("web filter: DNS of a blocked category, sinkholed", "worker"),
    "wf-http": ("web filter: HTTP to a blocked category, block page", "worker"),
    "wf-sni": ("web filter: HTTPS (SNI) to a blocked category, reset", "worker"),
    "atp-dns": ("ATP: DNS of a C&C domain, sinkholed", "worker"),
    "deny-latest": ("web filter: the newest reloaded deny-list entry", "worker"),
    "bundle-latest": ("IPS: the newest signed bundle's canary rule", "worker"),
    "ti-latest": ("ATP: the newest threat-intel bundle's domain", "worker"),
}


@dataclass(frozen=True)
class Tolerance:
    """The pass criteria. Memory: last-third median ≤ first-third median × (1 + mem_pct) + mem_mib."""

    mem_pct: float = 0.10
    mem_mib: float = 16.0
    fds: int = 4  # last-third median fds ≤ first-third median + this
    threads: int = 2
    gap_s: float = 1.0  # the longest time with no successful probe
    office_fail_pct: float = 1.0  # everyday requests that may fail (%)
    restart_s: float = 30.0  # a killed worker must be back within this long

    def describe(self) -> str:
        return (f"memory ≤ first third × {1 + self.mem_pct:.2f} + {self.mem_mib:g} MiB; fds ≤ first third + {self.fds}; "
                f"threads ≤ first third + {self.threads}")


# ----------------------------------------------------------------------------- samples: memory, fds, threads
@dataclass(frozen=True)
class Sample:
    t: float  # seconds since the soak started
    slot: str  # "daemon", "worker 0", ...
    pid: int
    rss: float  # MiB
    pss: float  # MiB
    fds: int
    threads: int
    # A worker's kind of memory (``classify``): where its engines came from — "forked" (one of the
    # workers the daemon started with: the engines the daemon prepared, pages shared with it) or
    # "restarted" (any later worker process: a reload's successor, which built its engines itself, or
    # a killed worker's replacement) — and how many reloads completed since it was first sampled:
    # none, once, or 2+ (since issue 16 a reload replaces every worker process, so a process sees at
    # most the reload it was started for). E.g. "forked", "restarted". "" for the daemon; "mixed"
    # for a sum over workers of different kinds.
    state: str = ""
    busy: bool = False  # taken while a reload, bundle activation or worker restart was under way


STATE_ORDER = ("restarted, reloaded 2+", "forked, reloaded 2+", "restarted, reloaded once", "forked, reloaded once",
               "restarted", "forked", "")


def classify(samples: Sequence[Sample], reloads_done: Sequence[float]) -> list[Sample]:
    """``samples`` with each worker sample's ``state`` set from the reloads completed (times in the
    samples' clock) since its process was first sampled; workers of the first sampling round are "forked"."""
    from dataclasses import replace

    first_round = min((s.t for s in samples), default=0.0)
    forked = {s.pid for s in samples if s.t == first_round and s.slot != "daemon"}
    seen: dict[int, float] = {}
    for s in sorted(samples, key=lambda x: x.t):
        seen.setdefault(s.pid, s.t)
    out = []
    for s in samples:
        if s.slot == "daemon":
            out.append(replace(s, state=""))
            continue
        n = sum(1 for r in reloads_done if seen[s.pid] < r <= s.t)
        origin = "forked" if s.pid in forked else "restarted"
        out.append(replace(s, state=origin + ("" if n == 0 else ", reloaded once" if n == 1 else ", reloaded 2+")))
    return out


@dataclass
class SlotRow:
    slot: str
    pids: list[int]
    first: dict[str, float]  # medians over the first third after warm-up: rss, pss, fds, threads
    last: dict[str, float]
    peak_rss: float
    slope_mib_h: float | None  # PSS trend after warm-up (least squares), MiB per hour
    problems: list[str] = field(default_factory=list)
    compared: str = ""  # which samples the memory verdict compares (e.g. "reloaded: 9 / 8 samples")

    @property
    def ok(self) -> bool:
        return not self.problems


TREND_MIN_SPAN = 600.0  # seconds after warm-up below which a PSS trend is not shown (a few reloads dominate it)


def thirds(warmup: float, end: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """The first and the last third of the time after warm-up."""
    span = (end - warmup) / 3
    return (warmup, warmup + span), (end - span, end)


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (t seconds, value) in value per hour; None with fewer than 3 points."""
    if len(points) < 3:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    if den == 0:
        return None
    return sum((t - mt) * (v - mv) for t, v in points) / den * 3600


def total_samples(samples: Sequence[Sample], slots: Sequence[str]) -> list[Sample]:
    """One "all" sample per sampling round that has every slot: RSS, PSS, fds and threads summed;
    its state is the workers' common state ("mixed" when they differ), busy when any is."""
    rounds: dict[float, list[Sample]] = collections.defaultdict(list)
    for s in samples:
        rounds[s.t].append(s)
    out = []
    for t, group in sorted(rounds.items()):
        if {s.slot for s in group} >= set(slots):
            states = {s.state for s in group if s.slot != "daemon"}
            out.append(Sample(t, "all", 0, sum(s.rss for s in group), sum(s.pss for s in group),
                              sum(s.fds for s in group), sum(s.threads for s in group),
                              states.pop() if len(states) == 1 else "mixed", any(s.busy for s in group)))
    return out


def _medians(xs: Sequence[Sample]) -> dict[str, float]:
    return {k: _median([getattr(s, k) for s in xs]) for k in ("rss", "pss", "fds", "threads")}


def comparable(a: Sequence[Sample], b: Sequence[Sample]) -> tuple[list[Sample], list[Sample], str]:
    """The samples of the first (``a``) and last (``b``) third to compare memory on: those taken while
    nothing was under way, of a kind of process both thirds have (a reloaded worker against reloaded
    ones, a fresh one against fresh ones: a restarted worker's engines take less memory than reloaded
    ones); with no kind in common, all the quiet samples."""
    qa, qb = [s for s in a if not s.busy] or list(a), [s for s in b if not s.busy] or list(b)
    for state in STATE_ORDER:
        xa, xb = [s for s in qa if s.state == state], [s for s in qb if s.state == state]
        if len(xa) >= 2 and len(xb) >= 2:
            return xa, xb, f"{state or 'all'}: {len(xa)} / {len(xb)} samples"
    return qa, qb, f"all quiet samples ({len(qa)} / {len(qb)}; the thirds share no kind of process)"


def slot_rows(samples: Sequence[Sample], warmup: float, end: float, tol: Tolerance) -> list[SlotRow]:
    """One row per slot (in order of appearance) and one for the whole agent ("all", PSS judged:
    forked workers share pages, so their RSS sum overstates). Memory compares ``comparable`` samples;
    descriptors and threads every quiet sample."""
    first_w, last_w = thirds(warmup, end)
    slots = list(dict.fromkeys(s.slot for s in samples))
    rows = []
    for slot in [*slots, "all"]:
        mine = total_samples(samples, slots) if slot == "all" else [s for s in samples if s.slot == slot]
        a = [s for s in mine if first_w[0] <= s.t <= first_w[1]]
        b = [s for s in mine if last_w[0] <= s.t <= last_w[1]]
        after = [s for s in mine if s.t >= warmup]
        trend = slope([(s.t, s.pss) for s in after]) if end - warmup >= TREND_MIN_SPAN else None
        ma, mb, how = comparable(a, b)
        qa, qb = [s for s in a if not s.busy] or a, [s for s in b if not s.busy] or b
        first = {**_medians(ma), **{k: v for k, v in _medians(qa).items() if k in ("fds", "threads")}}
        last = {**_medians(mb), **{k: v for k, v in _medians(qb).items() if k in ("fds", "threads")}}
        row = SlotRow(slot, list(dict.fromkeys(s.pid for s in mine if s.pid)), first, last,
                      max((s.rss for s in mine), default=float("nan")), trend, compared=how)
        if not a or not b:
            row.problems.append("no samples in the first or the last third")
        else:
            keys = ("pss",) if slot == "all" else ("rss", "pss")
            for k in keys:
                limit = row.first[k] * (1 + tol.mem_pct) + tol.mem_mib
                if row.last[k] > limit:
                    row.problems.append(f"{k.upper()} grew {row.first[k]:.1f} -> {row.last[k]:.1f} MiB (limit {limit:.1f})")
            if slot != "all":
                if row.last["fds"] > row.first["fds"] + tol.fds:
                    row.problems.append(f"fds {row.first['fds']:g} -> {row.last['fds']:g}")
                if row.last["threads"] > row.first["threads"] + tol.threads:
                    row.problems.append(f"threads {row.first['threads']:g} -> {row.last['threads']:g}")
        rows.append(row)
    return rows


def timeline(samples: Sequence[Sample], end: float, bins: int = 12) -> list[list[str]]:
    """Header + one line per time bin: medians per slot (RSS/PSS MiB, fds, threads)."""
    slots = list(dict.fromkeys(s.slot for s in samples))
    cells = [["t (s)", *(f"{s}: RSS / PSS MiB, fds, threads" for s in slots), "all: PSS MiB"]]
    total = total_samples(samples, slots)
    width = end / bins if end > 0 else 1
    for i in range(bins):
        lo, hi = i * width, (i + 1) * width
        line = [f"{lo:.0f}–{hi:.0f}"]
        for slot in slots:
            xs = [s for s in samples if s.slot == slot and lo <= s.t < hi]
            line.append("—" if not xs else
                        f"{_median([s.rss for s in xs]):.0f} / {_median([s.pss for s in xs]):.0f}, "
                        f"{_median([s.fds for s in xs]):g}, {_median([s.threads for s in xs]):g}")
        ts = [s.pss for s in total if lo <= s.t < hi]
        line.append(f"{_median(ts):.0f}" if ts else "—")
        cells.append(line)
    return cells


# ----------------------------------------------------------------------------- the prober
@dataclass
class ProbeStats:
    kind: str
    probes: int
    failed: int
    max_gap: float  # seconds between two successful probes at most
    max_gap_at: float  # send time (epoch) of the probe that ended the longest gap
    rtt_p50: float | None
    rtt_p99: float | None
    rtt_max: float | None
    long_gaps: list[tuple[float, float]]  # (ended at, seconds) of gaps over 3 probe intervals
    broken: int = 0  # the held connection: times it broke


def parse_probes(lines: Iterable[str]) -> dict[str, list[tuple[float, float | None]]]:
    """Probe lines "KIND T RTT_MS" (-1: failed) -> {kind: [(t, rtt_ms or None)]}; "held-broken" lines as kind "held-broken"."""
    out: dict[str, list[tuple[float, float | None]]] = collections.defaultdict(list)
    for line in lines:
        parts = line.split()
        if len(parts) != 3:
            continue
        try:
            t, v = float(parts[1]), float(parts[2])
        except ValueError:
            continue
        out[parts[0]].append((t, None if v < 0 else v))
    return out


def probe_stats(kind: str, probes: Sequence[tuple[float, float | None]], interval: float,
                start: float | None = None, end: float | None = None, broken: int = 0) -> ProbeStats:
    """Gaps between successful probes (the soak's start and end count as successes: a prober that
    never got through has one gap of the whole run)."""
    probes = sorted(probes, key=lambda p: p[0])
    ok = [t for t, r in probes if r is not None]
    edges = ([start] if start is not None else []) + ok + ([end] if end is not None else [])
    gaps = [(b, b - a) for a, b in zip(edges, edges[1:])]
    worst = max(gaps, key=lambda g: g[1], default=(0.0, 0.0))
    rtts = [r for _, r in probes if r is not None]
    return ProbeStats(kind, len(probes), len(probes) - len(ok), worst[1], worst[0],
                      percentile(rtts, 50) if rtts else None, percentile(rtts, 99) if rtts else None,
                      max(rtts) if rtts else None, [g for g in gaps if g[1] > 3 * interval], broken)


def rtt_by_phase(probes: Sequence[tuple[float, float | None]], windows: Sequence[tuple[float, float]]) -> dict[str, dict[str, Any]]:
    """Round trips of probes sent inside any of ``windows`` (epoch start, end) against the rest:
    {"during": {...}, "otherwise": {...}} with probes, failed, p50, p99, max (ms)."""
    out: dict[str, dict[str, Any]] = {}
    for phase in ("during", "otherwise"):
        xs = [(t, r) for t, r in probes if any(a <= t <= b for a, b in windows) == (phase == "during")]
        rtts = [r for _, r in xs if r is not None]
        out[phase] = {"probes": len(xs), "failed": sum(1 for _, r in xs if r is None),
                      "p50": percentile(rtts, 50) if rtts else None, "p99": percentile(rtts, 99) if rtts else None,
                      "max": max(rtts) if rtts else None}
    return out


def phase_note(split: dict[str, dict[str, Any]], seconds: float) -> str:
    def one(d: dict[str, Any]) -> str:
        return (f"{d['probes']:,} probes, {d['failed']} failed, round trip p50 {_f(d['p50'], 1)} ms, p99 {_f(d['p99'], 0)} ms, "
                f"max {_f(d['max'], 0)} ms")

    return (f"New-flow probes (TCP and UDP) while a reload or a bundle activation was under way ({seconds:.0f} s in all): "
            f"{one(split['during'])}; the rest of the time: {one(split['otherwise'])}. A reload builds the new engines in "
            "new worker processes while the running ones serve their queues (docs/dataplane.md): what remains is the "
            "competition for the CPUs.")


# ----------------------------------------------------------------------------- alarms
def alarm_matches(kind: str, rec: dict[str, Any], action: dict[str, Any]) -> bool:
    """Whether EVE record ``rec`` is the alarm an action of ``kind`` should raise (same source already checked)."""
    if rec.get("event_type") != "alert":
        return False
    a = rec.get("alert") or {}
    where = (rec.get("webfilter") or {}).get("where")
    atp = (rec.get("atp") or {}).get("where")
    return {
        "telnet": a.get("signature") == FIREWALL_TELNET,
        "smb": a.get("signature") == FIREWALL_SMB,
        "cnc-ip": atp == "kernel",
        "ips-dns": a.get("signature_id") == IPS_DNS_SID,
        "ips-http": a.get("signature_id") == SOAK_SID,
        "bundle-latest": a.get("signature_id") == action.get("sid"),
        "inbound": a.get("signature_id") == INBOUND_SID,
        "wf-dns": where == "dns",
        "deny-latest": where == "dns",
        "wf-http": where == "http",
        "wf-sni": where == "tls_sni",
        "atp-dns": atp == "dns",
        "ti-latest": atp == "dns",
    }.get(kind, False)


def _key(rec: dict[str, Any]) -> tuple[str, int]:
    return str(rec.get("src_ip")), int(rec.get("src_port") or 0)


def eve_time(rec: dict[str, Any]) -> float | None:
    """An EVE record's timestamp ("2026-12-07T00:43:29.750091+0000") in epoch seconds."""
    import datetime as dt

    try:
        return dt.datetime.strptime(str(rec["timestamp"]), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
    except (KeyError, ValueError):
        return None


MATCH_BEFORE = 2.0  # an action's alarm is stamped at most this long before the action's start ...
MATCH_AFTER = 15.0  # ... and at most this long after its end (a source port comes round again in a long soak)


def in_window(rec: dict[str, Any], act: dict[str, Any]) -> bool:
    t, start = eve_time(rec), act.get("t")
    if t is None or start is None:
        return True
    return start - MATCH_BEFORE <= t <= start + float(act.get("ms") or 0) / 1000 + MATCH_AFTER


def canon(rec: dict[str, Any]) -> str:
    return json.dumps(rec, sort_keys=True, ensure_ascii=False)


@dataclass
class KindRow:
    kind: str
    actions: int = 0  # delivered actions: each must raise its alarm
    undelivered: int = 0  # the connection never opened (e.g. under load): nothing was sent, no alarm expected
    misbehaved: int = 0  # the traffic did not get the treatment expected (e.g. telnet connected)
    in_eve: int = 0
    at_center: int = 0
    missing: list[dict[str, Any]] = field(default_factory=list)  # actions without their alarm in eve.json
    extra: int = 0  # alarms beyond one per action
    results: collections.Counter[str] = field(default_factory=collections.Counter)


@dataclass
class AlarmResult:
    kinds: list[KindRow]
    eve_records: int
    center_records: int
    missing_at_center: int  # eve.json records the center does not have
    extra_at_center: int  # center records not in eve.json
    duplicate_ids: int  # center event ids stored more than once
    skipped_paused: int
    other: list[tuple[str, int]]  # EVE records not raised by a schedule action: (what, count)
    related: list[tuple[str, int]] = field(default_factory=list)  # further records of the actions' flows (e.g. drop events)

    @property
    def expected(self) -> int:
        return sum(k.actions for k in self.kinds)

    @property
    def matched_eve(self) -> int:
        return sum(min(k.in_eve, k.actions) for k in self.kinds)

    @property
    def matched_center(self) -> int:
        return sum(min(k.at_center, k.actions) for k in self.kinds)

    @property
    def problems(self) -> list[str]:
        out = []
        for k in self.kinds:
            if k.missing:
                out.append(f"{k.kind}: {len(k.missing)} of {k.actions} actions raised no alarm in eve.json")
            if k.extra:
                out.append(f"{k.kind}: {k.extra} alarms more than one per action")
            if k.at_center != k.in_eve:
                out.append(f"{k.kind}: {k.in_eve} in eve.json but {k.at_center} at the center")
        if self.missing_at_center:
            out.append(f"{self.missing_at_center} eve.json records are not at the center")
        if self.extra_at_center:
            out.append(f"{self.extra_at_center} center records are not in eve.json")
        if self.duplicate_ids:
            out.append(f"{self.duplicate_ids} event ids stored twice at the center")
        return out


def _what(rec: dict[str, Any]) -> str:
    if rec.get("event_type") == "alert":
        return f"alert: {(rec.get('alert') or {}).get('signature', '?')}"
    if rec.get("event_type") == "drop":
        return f"drop: {(rec.get('drop') or {}).get('signature', '?')}"
    if rec.get("event_type") == "update":
        u = rec.get("update") or {}
        return f"update: {u.get('kind')} {u.get('action')} {u.get('reason')}"
    return str(rec.get("event_type"))


def match_alarms(actions: Sequence[dict[str, Any]], eve: Sequence[dict[str, Any]],
                 center: Sequence[dict[str, Any]], center_ids: Sequence[str] = ()) -> AlarmResult:
    """Each performed action against eve.json and the center's records (``center``: the events as stored)."""
    eve_by = collections.defaultdict(list)
    for r in eve:
        eve_by[_key(r)].append(r)
    center_by = collections.defaultdict(list)
    for r in center:
        center_by[_key(r)].append(r)
    rows: dict[str, KindRow] = {}
    used: set[int] = set()
    matched: set[int] = set()
    skipped = 0
    for act in actions:
        if act.get("skipped"):
            skipped += 1
            continue
        if "sport" not in act:
            continue
        kind = act["kind"]
        row = rows.setdefault(kind, KindRow(kind))
        row.results[str(act.get("result"))] += 1
        key = (str(act["src_ip"]), int(act["sport"]))
        mine = [r for r in eve_by.get(key, []) if in_window(r, act)]
        for r in mine:
            used.add(id(r))
        if act.get("delivered") is False:
            row.undelivered += 1
            continue
        row.actions += 1
        if act.get("as_expected") is False:
            row.misbehaved += 1
        found = [r for r in mine if alarm_matches(kind, r, act)]
        matched.update(id(r) for r in found)
        at_center = [r for r in center_by.get(key, []) if in_window(r, act) and alarm_matches(kind, r, act)]
        row.in_eve += len(found)
        row.at_center += len(at_center)
        if not found:
            row.missing.append(act)
        row.extra += max(0, len(found) - 1)
    eve_c = collections.Counter(canon(r) for r in eve)
    cen_c = collections.Counter(canon(r) for r in center)
    ids = collections.Counter(center_ids)
    other = collections.Counter(_what(r) for r in eve if id(r) not in used)
    related = collections.Counter(_what(r) for r in eve if id(r) in used and id(r) not in matched)
    order = list(KIND_INFO)
    kinds = sorted(rows.values(), key=lambda k: order.index(k.kind) if k.kind in order else len(order))
    return AlarmResult(kinds, len(eve), len(center), sum((eve_c - cen_c).values()), sum((cen_c - eve_c).values()),
                       sum(n - 1 for n in ids.values() if n > 1), skipped, other.most_common(), related.most_common())


# ----------------------------------------------------------------------------- the whole result
@dataclass
class Check:
    name: str
    criterion: str
    measured: str
    ok: bool


@dataclass
class EventRow:
    t: float  # planned, seconds since the start
    started: float  # actual
    took: float
    kind: str
    detail: str
    ok: bool


@dataclass
class SoakResult:
    title: str
    command: str
    date: str
    duration: float  # seconds of traffic
    warmup: float
    wall: float  # seconds the whole command took
    machine: dict[str, str]
    config: list[str]  # lines describing the agent's configuration
    noise: list[str]
    tol: Tolerance
    slots: list[SlotRow]
    timeline: list[list[str]]
    probes: list[ProbeStats]
    alarms: AlarmResult
    office: dict[str, dict[str, Any]]
    events: list[EventRow]
    restarts: list[float]  # seconds each killed worker's queue stayed unbound
    checks: list[Check]
    notes: list[str] = field(default_factory=list)
    partial: str = ""  # why the run is shorter than a full soak
    t0: float = 0.0  # epoch seconds when the traffic started (probe times are shown relative to it)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def failures(self) -> list[str]:
        return [f"{c.name}: {c.measured} (criterion: {c.criterion})" for c in self.checks if not c.ok]


def office_failure_pct(office: dict[str, dict[str, Any]]) -> tuple[int, int, float]:
    ok = sum(int(c.get("ok", 0)) for c in office.values())
    failed = sum(int(c.get("failed", 0)) for c in office.values())
    total = ok + failed
    return total, failed, (100.0 * failed / total if total else 100.0)


def build_checks(slots: Sequence[SlotRow], probes: Sequence[ProbeStats], alarms: AlarmResult,
                 office: dict[str, dict[str, Any]], events: Sequence[EventRow], restarts: Sequence[float],
                 kills_planned: int, tol: Tolerance) -> list[Check]:
    checks = []
    for row in slots:
        name = "whole agent (PSS)" if row.slot == "all" else row.slot
        crit = (f"last-third PSS ≤ first third × {1 + tol.mem_pct:.2f} + {tol.mem_mib:g} MiB" if row.slot == "all"
                else f"RSS and PSS ≤ first third × {1 + tol.mem_pct:.2f} + {tol.mem_mib:g} MiB; fds ≤ +{tol.fds}; threads ≤ +{tol.threads}")
        measured = (f"PSS {row.first['pss']:.1f} -> {row.last['pss']:.1f} MiB" if row.slot == "all" else
                    f"RSS {row.first['rss']:.1f} -> {row.last['rss']:.1f} MiB, PSS {row.first['pss']:.1f} -> "
                    f"{row.last['pss']:.1f} MiB, fds {row.first['fds']:g} -> {row.last['fds']:g}, threads "
                    f"{row.first['threads']:g} -> {row.last['threads']:g}")
        if row.problems:
            measured += " — " + "; ".join(row.problems)
        checks.append(Check(f"memory/fds/threads: {name}", crit, measured, row.ok))
    probes_conn = [p for p in probes if p.kind in ("tcp", "udp")]
    worst = max(probes_conn, key=lambda p: p.max_gap, default=None)
    checks.append(Check("fail-open: longest gap between successful probes", f"≤ {tol.gap_s:g} s (new TCP and UDP flows every 100 ms)",
                        "no probes" if worst is None else f"{worst.max_gap:.2f} s ({worst.kind})",
                        worst is not None and worst.max_gap <= tol.gap_s))
    held = next((p for p in probes if p.kind == "held"), None)
    checks.append(Check("established connection never broken", "0 breaks (an echo later than 1 s is reported, not a break)",
                        "no probes" if held is None else
                        f"{held.broken} breaks; {held.failed} of {held.probes:,} echoes later than 1 s, longest wait {held.max_gap:.2f} s",
                        held is not None and held.broken == 0 and held.probes > 0))
    back = [r for r in restarts if r >= 0]
    checks.append(Check("killed workers restarted", f"{kills_planned} kills, each back within {tol.restart_s:g} s",
                        f"{len(back)} of {len(restarts)} back, longest {max(back, default=0):.2f} s",
                        len(restarts) == kills_planned and len(back) == len(restarts) and max(back, default=0) <= tol.restart_s))
    checks.append(Check("alarms: each action raised its alarm in eve.json, once", "expected = in eve.json",
                        f"{alarms.expected} expected, {alarms.matched_eve} in eve.json"
                        + (f" ({'; '.join(p for p in alarms.problems if 'eve.json' in p and 'center' not in p)})"
                           if alarms.matched_eve != alarms.expected or any(k.extra for k in alarms.kinds) else ""),
                        alarms.matched_eve == alarms.expected and not any(k.extra for k in alarms.kinds)))
    checks.append(Check("alarms: the center stored every eve.json record exactly once", "eve.json = center, no duplicate",
                        f"{alarms.eve_records} in eve.json, {alarms.center_records} at the center, "
                        f"{alarms.missing_at_center} missing, {alarms.extra_at_center} extra, {alarms.duplicate_ids} duplicate ids",
                        alarms.missing_at_center == 0 and alarms.extra_at_center == 0 and alarms.duplicate_ids == 0
                        and alarms.eve_records > 0))
    bad = sum(k.misbehaved for k in alarms.kinds)
    checks.append(Check("blocked traffic was blocked", "every alarm action treated as expected (reset, dropped, sinkholed, block page)",
                        f"{bad} of {alarms.expected} not", bad == 0 and alarms.expected > 0))
    total, failed, pct = office_failure_pct(office)
    checks.append(Check("office traffic kept working", f"≤ {tol.office_fail_pct:g}% of requests failed",
                        f"{failed} of {total} failed ({pct:.2f}%)", total > 0 and pct <= tol.office_fail_pct))
    bad_events = [e for e in events if not e.ok]
    checks.append(Check("reloads, bundle updates, outages and kills succeeded", "every event confirmed",
                        f"{len(events) - len(bad_events)} of {len(events)}"
                        + (": failed " + "; ".join(f"{e.kind} at {e.started:.0f} s ({e.detail})" for e in bad_events) if bad_events else ""),
                        not bad_events and bool(events)))
    return checks


# ----------------------------------------------------------------------------- rendering
def _f(v: float | None, digits: int = 1) -> str:
    return "—" if v is None or v != v else f"{v:,.{digits}f}"


def slot_cells(rows: Sequence[SlotRow], restarts_by_slot: dict[str, int]) -> list[list[str]]:
    cells = [["Process", "PIDs", "RSS first → last third (MiB)", "PSS first → last third (MiB)", "Peak RSS (MiB)",
              "fds first → last", "threads first → last", "Memory compared on", "Result"]]
    for r in rows:
        pids = "—" if r.slot == "all" else ", ".join(map(str, r.pids)) + (
            f" ({restarts_by_slot.get(r.slot, 0)} restarts)" if restarts_by_slot.get(r.slot) else "")
        cells.append(["whole agent (sum)" if r.slot == "all" else r.slot, pids,
                      f"{_f(r.first['rss'])} → {_f(r.last['rss'])}", f"{_f(r.first['pss'])} → {_f(r.last['pss'])}",
                      _f(r.peak_rss), f"{r.first['fds']:g} → {r.last['fds']:g}",
                      f"{r.first['threads']:g} → {r.last['threads']:g}", r.compared,
                      "pass" if r.ok else "FAIL: " + "; ".join(r.problems)])
    return cells


def alarm_cells(res: AlarmResult) -> list[list[str]]:
    cells = [["Action", "Raised by", "Actions (= alarms expected)", "Treated as expected", "Alarms in eve.json",
              "At the center", "Missing", "Extra", "Outcomes"]]
    for k in res.kinds:
        what, path = KIND_INFO.get(k.kind, (k.kind, "?"))
        outcomes = ", ".join(f"{r} × {n}" for r, n in k.results.most_common())
        cells.append([f"{what} (`{k.kind}`)", path, str(k.actions) + (f" (+{k.undelivered} not sent)" if k.undelivered else ""),
                      str(k.actions - k.misbehaved), str(k.in_eve), str(k.at_center), str(len(k.missing)), str(k.extra), outcomes])
    cells.append(["**all actions**", "", str(res.expected), str(res.expected - sum(k.misbehaved for k in res.kinds)),
                  str(sum(k.in_eve for k in res.kinds)), str(sum(k.at_center for k in res.kinds)),
                  str(sum(len(k.missing) for k in res.kinds)), str(sum(k.extra for k in res.kinds)), ""])
    cells.append(["**every eve.json record** (alarms above, plus any other)", "", "", "", str(res.eve_records),
                  str(res.center_records), str(res.missing_at_center), str(res.extra_at_center), ""])
    return cells


def probe_cells(probes: Sequence[ProbeStats], start: float) -> list[list[str]]:
    label = {"tcp": "new TCP connection", "udp": "UDP echo, new flow", "held": "round trip on one held TCP connection"}
    cells = [["Probe (every 100 ms)", "Probes", "Failed", "Longest gap", "at (s)", "Gaps > 0.3 s", "RTT p50 (ms)", "RTT p99 (ms)", "RTT max (ms)"]]
    for p in probes:
        cells.append([label.get(p.kind, p.kind) + (f", {p.broken} breaks" if p.kind == "held" else ""), f"{p.probes:,}",
                      str(p.failed), f"{p.max_gap:.2f} s", f"{p.max_gap_at - start:.0f}", str(len(p.long_gaps)),
                      _f(p.rtt_p50, 2), _f(p.rtt_p99, 2), _f(p.rtt_max, 1)])
    return cells


def event_cells(events: Sequence[EventRow]) -> list[list[str]]:
    cells = [["Planned (s)", "Started (s)", "Took (s)", "Event", "Outcome", "Result"]]
    for e in events:
        cells.append([f"{e.t:.0f}", f"{e.started:.1f}", f"{e.took:.1f}", e.kind, e.detail, "ok" if e.ok else "FAIL"])
    return cells


def office_cells(office: dict[str, dict[str, Any]]) -> list[list[str]]:
    label = {"http": "web page, HTTP", "https": "web page, HTTPS with SNI", "dns": "DNS look-up", "bulk": "bulk download"}
    cells = [["Everyday traffic (pc1)", "Done", "Failed", "Slowest (ms)", "Volume", "Failures"]]
    for kind, c in office.items():
        fails = ", ".join(f"{k} × {v}" for k, v in (c.get("failures") or {}).items()) or "—"
        cells.append([label.get(kind, kind), f"{c.get('ok', 0):,}", str(c.get("failed", 0)), _f(c.get("ms_max"), 0),
                      f"{c.get('bytes', 0) / 1e6:,.0f} MB" if c.get("bytes") else "—", fails])
    return cells


def check_cells(checks: Sequence[Check]) -> list[list[str]]:
    return [["Check", "Criterion", "Measured", "Result"], *([c.name, c.criterion, c.measured, "pass" if c.ok else "FAIL"] for c in checks)]


def render_markdown(res: SoakResult, method: Sequence[str]) -> str:
    mc = res.machine
    restarts = collections.Counter(e.detail.split(":")[0] for e in res.events if e.kind == "kill")
    lines = [
        f"# {res.title}",
        "",
        "Generated by `python -m lab soak` (lab/bench/soak.py); do not edit by hand, run it again.",
        "",
        f"- Date: {res.date} ({res.duration / 60:.1f} min of traffic after set-up, {res.wall / 60:.1f} min in all)",
        f"- Machine: {mc.get('nproc', '?')} CPUs ({mc.get('cpu', '?')}), {mc.get('memory', '?')} RAM, kernel {mc.get('kernel', '?')}",
        f"- Command: {res.command}",
        *(f"- Noise, {n[0].lower()}{n[1:]}" for n in res.noise),
        f"- Result: **{'pass' if res.ok else 'FAIL'}**" + (f" ({'; '.join(res.failures())})" if not res.ok else ""),
        "",
    ]
    if res.partial:
        lines += [f"> {res.partial}", ""]
    lines += ["## Configuration", "", *(f"- {c}" for c in res.config), "",
              "## Checks", "", *md_table(check_cells(res.checks)), "",
              f"## Memory, file descriptors and threads per process (warm-up: first {res.warmup:.0f} s; "
              f"thirds of the {res.duration - res.warmup:.0f} s after it)", "",
              *md_table(slot_cells(res.slots, {f"worker {k.split()[-1]}": v for k, v in restarts.items()})), "",
              "## Alarms: generated, written, stored at the center", "",
              *md_table(alarm_cells(res.alarms)), ""]
    if res.alarms.skipped_paused:
        lines += [f"Worker-path actions held back around worker kills (not performed, not expected): {res.alarms.skipped_paused}.", ""]
    missing = [a for k in res.alarms.kinds for a in k.missing]
    if missing:
        lines += ["Actions whose alarm is not in eve.json (time since the start, kind, outcome, what was asked for):", "",
                  *(f"- {float(a.get('t', res.t0)) - res.t0:.1f} s: `{a['kind']}` {a.get('result')} "
                    f"{a.get('name') or a.get('path') or a.get('host') or ''}" for a in sorted(missing, key=lambda a: a.get("t", 0))[:30]),
                  ""]
    if res.alarms.related:
        lines += ["Further eve.json records of the actions' flows (not counted as their alarm): "
                  + "; ".join(f"{what} × {n}" for what, n in res.alarms.related) + ".", ""]
    if res.alarms.other:
        lines += ["Other eve.json records (not raised by an action of the schedule): "
                  + "; ".join(f"{what} × {n}" for what, n in res.alarms.other) + ".", ""]
    lines += ["## Connectivity through the bridge (fail-open)", "",
              *md_table(probe_cells(res.probes, res.t0)), "",
              "## Everyday traffic", "", *md_table(office_cells(res.office)), "",
              "## Events", "", *md_table(event_cells(res.events)), "",
              "## Memory over time (medians per bin)", "", *md_table(res.timeline), ""]
    if res.notes:
        lines += ["## Notes", "", *(f"- {n}" for n in res.notes), ""]
    lines += ["## Method", "", *(f"- {m}" for m in method), ""]
    return "\n".join(lines).rstrip() + "\n"


def render_terminal(res: SoakResult) -> str:
    from lab.bench.report import aligned

    out = [f"soak: {'PASS' if res.ok else 'FAIL'} after {res.duration:.0f} s of traffic", "", aligned(check_cells(res.checks)), ""]
    out += [aligned(slot_cells(res.slots, {})), "", aligned(alarm_cells(res.alarms)), ""]
    return "\n".join(out)
