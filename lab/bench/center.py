"""Scale benchmark: thousands of simulated boxes against a real center over HTTPS.

``python -m lab center-bench --db sqlite|postgres --devices N --duration S``:

1. starts a center (``lab.center.start_center``) on 127.0.0.1 with the lab CA, on SQLite or on
   a throwaway PostgreSQL cluster (``lab.pgtemp``, fsync on), rate limits off;
2. enrolls N boxes: the operator issues N codes, each box activates over HTTPS;
3. fleet phase: every box checks in once at a random moment of S seconds (N/S check-ins a second:
   with S = 60 that is the real load of N boxes on the 60 s interval); one box in five then sends
   an alarm batch, and one batch in ten is sent twice (a retry: the center must count duplicates);
4. saturation phase: the client threads go as fast as they can for S seconds (check-ins, and an
   alarm batch every few operations) to find the rates the center sustains;
5. checks that every box checked in and that the alarms table holds each event exactly once, and
   writes the results into the operations center section of docs/benchmarks.md.

The client is ``http.client`` over TLS with one keep-alive connection per thread (each thread
speaks for many boxes; the center does not care which connection a box uses); it presents a box's
credential as the box does (``agent.link.center.auth_headers``).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import ssl
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from agent.link.center import auth_headers
from lab.bench import host
from lab.bench.host import cpu_seconds
from lab.bench.report import md_table

SECTION_NAME = "opscenter"  # <!-- bench:opscenter begin/end --> in docs/benchmarks.md
TITLE = "# Benchmarks: operations center"
LABELS = {"sqlite": "SQLite", "postgres": "PostgreSQL"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--devices", type=int, default=5000)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of each phase")
    p.add_argument("--workers", type=int, help="uvicorn workers (default: 1 for SQLite, 2 for PostgreSQL)")
    p.add_argument("--clients", type=int, default=32, help="client threads (keep-alive connections)")
    p.add_argument("--batch", type=int, default=20, help="events per alarm batch")
    p.add_argument("--alarm-every", type=int, default=4, help="saturation: an alarm batch every K operations")
    p.add_argument("--out", default="docs/benchmarks.md", help="report file ('-' = print only)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")


# client ----------------------------------------------------------------------------------------

class Client:
    """One keep-alive HTTPS connection; reconnects after an error."""

    def __init__(self, host: str, port: int, ctx: ssl.SSLContext) -> None:
        self.host, self.port, self.ctx = host, port, ctx
        self.conn: http.client.HTTPSConnection | None = None

    def post(self, path: str, body: Any, token: str | None = None) -> tuple[int, dict[str, Any], float]:
        data = json.dumps(body, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "Content-Length": str(len(data)), **auth_headers(token)}
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=60)
            t0 = time.perf_counter()
            try:
                self.conn.request("POST", path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
                took = time.perf_counter() - t0
                return resp.status, json.loads(raw) if raw else {}, took
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


@dataclass
class Stats:
    lat: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    events_sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    late: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, took: float) -> None:
        with self.lock:
            self.lat.setdefault(kind, []).append(took)

    def error(self, what: str) -> None:
        with self.lock:
            self.errors[what] = self.errors.get(what, 0) + 1


def pct(values: list[float], p: float) -> float:
    """The nearest-rank percentile (report.percentile interpolates; this report has always used the rank)."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def eve(i: int) -> dict[str, Any]:
    return {"timestamp": "2026-11-25T22:00:00.000000+0000", "event_type": "alert", "flow_id": 1_000_000 + i,
            "in_iface": "br0", "src_ip": "192.0.2.10", "src_port": 40000 + i % 20000, "dest_ip": "198.51.100.7",
            "dest_port": 445, "proto": "TCP",
            "alert": {"action": "blocked", "gid": 1, "signature_id": 2100000 + i % 50, "rev": 3,
                      "signature": "ET POLICY SMB outbound to the internet", "category": "Potential Corporate "
                      "Privacy Violation", "severity": 2},
            "flow": {"pkts_toserver": 1, "pkts_toclient": 0, "bytes_toserver": 74, "bytes_toclient": 0,
                     "start": "2026-11-25T22:00:00.000000+0000"}}


def make_batch(n: int) -> dict[str, Any]:
    return {"events": [{"event_id": str(uuid.uuid4()), "severity": 2, "event": eve(i)} for i in range(n)]}


def checkin_body(i: int) -> dict[str, Any]:
    return {
        "sent_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "agent_version": "0.1.0",
        "config_revision": 3, "signatures": {"ips": "2026.11.25.1", "webcat": "2026.11.20"},
        "health": {"cpu_percent": random.uniform(1, 30), "memory_percent": 41.0, "disk_percent": 12.0,
                   "load": [0.1, 0.2, 0.3], "uptime_s": 86400 + i,
                   "interfaces": {n: {"rx_bytes": 10**9, "tx_bytes": 10**9, "rx_packets": 10**6,
                                      "tx_packets": 10**6, "errin": 0, "errout": 0, "dropin": 0, "dropout": 0}
                                  for n in ("lan0", "wan0", "br0")}},
        "engines": {"firewall": {"rules": 40, "denied": 12}, "ips": {"rules_loaded": 24811, "alerts": 3},
                    "webfilter": {"blocked": 2}},
        "spool": {"pending": 0, "dropped": 0},
        "portcheck": {"checked_at": "2026-11-25T21:59:00Z", "ok": True,
                      "results": [{"feature": "activation", "proto": "tcp", "port": 443, "ok": True}]},
    }


def run_threads(n: int, target: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def run_clients(center: Any, ctx: ssl.SSLContext, clients: int, items: Iterable[Any],
                fn: Callable[[Client, Any], None]) -> None:
    """``clients`` threads, each with a connection of its own, call ``fn`` on the next of ``items`` until
    none is left."""
    pending = iter(items)
    lock = threading.Lock()

    def worker(_t: int) -> None:
        cl = Client(center.host, center.port, ctx)
        while True:
            with lock:
                item = next(pending, None)
            if item is None:
                break
            fn(cl, item)
        cl.close()

    run_threads(clients, worker)


# phases ----------------------------------------------------------------------------------------

@dataclass
class Box:
    serial: str
    code: str
    token: str = ""
    device_id: str = ""


def enroll_boxes(center: Any, n: int, clients: int, ctx: ssl.SSLContext, stats: Stats) -> list[Box]:
    from opscenter.enroll import issue_code

    boxes = [Box(f"BENCH-{i:05d}", issue_code(center.db, f"BC-{i:05d}", serial=f"BENCH-{i:05d}").code)
             for i in range(n)]

    def activate(cl: Client, b: Box) -> None:
        status, body, took = cl.post("/api/v1/activate", {"serial": b.serial, "activation_code": b.code,
                                                          "agent_version": "0.1.0", "hostname": b.serial})
        if status != 201:
            stats.error(f"activate {status}")
            return
        stats.add("activate", took)
        b.token, b.device_id = body["token"], body["device_id"]

    run_clients(center, ctx, clients, boxes, activate)
    return boxes


def _check_in(cl: Client, box: Box, i: int, stats: Stats) -> None:
    status, _body, took = cl.post("/api/v1/checkin", checkin_body(i), box.token)
    if status != 200:
        stats.error(f"checkin {status}")
    else:
        stats.add("checkin", took)


def _send_new_alarms(cl: Client, box: Box, batch_size: int, stats: Stats, sent_ids: set[tuple[str, str]]) -> dict[str, Any]:
    """A new batch of ``batch_size`` events from ``box``, counted as sent; the batch."""
    batch = make_batch(batch_size)
    with stats.lock:
        sent_ids.update((box.device_id, e["event_id"]) for e in batch["events"])
        stats.events_sent += batch_size
    _send_alarms(cl, box, batch, stats, "alarms")
    return batch


def _send_alarms(cl: Client, box: Box, batch: dict[str, Any], stats: Stats, kind: str) -> None:
    status, body, took = cl.post("/api/v1/alarms", batch, box.token)
    if status != 200:
        stats.error(f"{kind} {status}")
        return
    stats.add(kind, took)
    with stats.lock:
        stats.accepted += body["accepted"]
        stats.duplicates += body["duplicates"]


def fleet_phase(center: Any, boxes: list[Box], duration: float, clients: int, batch_size: int,
                ctx: ssl.SSLContext, stats: Stats, sent_ids: set[tuple[str, str]]) -> float:
    """Each box checks in once at a random moment; some send alarms. Returns the wall time."""
    rnd = random.Random(1)
    schedule = sorted((rnd.uniform(0, duration), i) for i in range(len(boxes)))
    start = time.monotonic() + 0.5

    def check_in(cl: Client, item: tuple[float, int]) -> None:
        at, i = item
        delay = start + at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            with stats.lock:
                stats.late.append(-delay)
        box = boxes[i]
        _check_in(cl, box, i, stats)
        if rnd.random() < 0.2:
            batch = _send_new_alarms(cl, box, batch_size, stats, sent_ids)
            if rnd.random() < 0.1:
                with stats.lock:
                    stats.events_sent += batch_size
                _send_alarms(cl, box, batch, stats, "alarms (re-send)")

    t0 = time.monotonic()
    run_clients(center, ctx, clients, schedule, check_in)
    return time.monotonic() - t0


def saturation_phase(center: Any, boxes: list[Box], duration: float, clients: int, batch_size: int,
                     alarm_every: int, ctx: ssl.SSLContext, stats: Stats, sent_ids: set[tuple[str, str]]) -> float:
    stop_at = time.monotonic() + duration
    counter = iter(range(10**9))
    lock = threading.Lock()

    def worker(_t: int) -> None:
        cl = Client(center.host, center.port, ctx)
        while time.monotonic() < stop_at:
            with lock:
                k = next(counter)
            box = boxes[k % len(boxes)]
            if k % alarm_every == alarm_every - 1:
                _send_new_alarms(cl, box, batch_size, stats, sent_ids)
            else:
                _check_in(cl, box, k, stats)
        cl.close()

    t0 = time.monotonic()
    run_threads(clients, worker)
    return time.monotonic() - t0


# report ----------------------------------------------------------------------------------------

def _ms(v: float) -> str:
    return f"{v * 1000:.1f} ms"


def lat_cells(name: str, values: list[float], wall: float) -> list[str]:
    """A line of the phase table: requests, their rate over ``wall`` seconds, p50, p99 and max latency."""
    if not values:
        return [name, "0", "–", "–", "–", "–"]
    return [name, f"{len(values):,}", f"{len(values) / wall:,.0f}/s", _ms(pct(values, 50)), _ms(pct(values, 99)),
            _ms(max(values))]


def render(res: dict[str, Any]) -> str:
    a = res
    lines = [
        f"## {LABELS[a['db']]}",
        "",
        f"- Command: `{a['command']}`",
        f"- Date: {a['date']}; machine: {a['machine']}; load average before: {a['load_before']}",
        f"- Database: {a['db_version']}; center: {a['workers']} uvicorn worker(s), {a['clients']} client threads "
        f"(http.client, TLS 1.3 keep-alive, on the same machine)",
        f"- Devices enrolled: {a['devices']:,} (activation over HTTPS: {a['enroll_rate']:,.0f}/s, "
        f"p50 {_ms(a['enroll_p50'])}, p99 {_ms(a['enroll_p99'])})",
        "",
    ]
    f, s = a["fleet"], a["saturation"]
    lines += md_table([
        ["Phase", "Requests", "Rate", "p50", "p99", "max"],
        lat_cells(f"Fleet: check-ins ({a['devices']:,} boxes once in {a['duration']:.0f} s)", f["checkin"], f["wall"]),
        lat_cells(f"Fleet: alarm batches ({a['batch']} events)", f["alarms"], f["wall"]),
        lat_cells("Fleet: alarm re-sends (all duplicates)", f["resend"], f["wall"]),
        lat_cells("Saturation: check-ins", s["checkin"], s["wall"]),
        lat_cells(f"Saturation: alarm batches ({a['batch']} events)", s["alarms"], s["wall"]),
    ])
    lines += [
        "",
        f"- Saturation rates: **{len(s['checkin']) / s['wall']:,.0f} check-ins/s** and "
        f"**{len(s['alarms']) * a['batch'] / s['wall']:,.0f} alarm events/s** at the same time. "
        f"At the 60 s interval {a['devices']:,} boxes need {a['devices'] / 60:,.0f} check-ins/s; the center "
        f"sustained {len(s['checkin']) / s['wall'] / (a['devices'] / 60):.1f}× that while also ingesting alarms.",
        f"- Fleet phase: the client fell behind its schedule by at most {_ms(f['late_max'])} "
        f"(p99 {_ms(f['late_p99'])}).",
        f"- CPU (user+system) during the two phases: center {a['cpu_center']:.0f} s"
        + (f", database server {a['cpu_db']:.0f} s" if a["db"] == "postgres" else " (SQLite runs inside it)")
        + f", bench client {a['cpu_client']:.0f} s, over {a['phase_wall']:.0f} s of wall time "
        f"on {os.cpu_count()} CPUs.",
        f"- Checks: {a['checked_in']:,} of {a['devices']:,} boxes checked in at least once; alarm rows "
        f"{a['alarm_rows']:,} = unique events sent {a['unique_events']:,} ({a['events_sent']:,} sent, "
        f"{a['duplicates']:,} duplicates reported); errors: {a['errors'] or 'none'}. "
        f"**{'PASS' if a['ok'] else 'FAIL'}**",
        "",
    ]
    return "\n".join(lines)


INTRO = """Generated by `python -m lab center-bench` (lab/bench/center.py); run it again rather than editing.
Each run replaces only its own database's subsection (SQLite or PostgreSQL).

Method: the bench starts the reference center (`vcr-opscenter serve`, HTTPS with the lab CA, rate
limits off) on 127.0.0.1, enrolls N simulated boxes (the operator issues N codes; each box
activates over HTTPS), then runs two phases of the same length. **Fleet**: every box checks in
once at a random moment (N boxes on the 60 s interval when the phase lasts 60 s); one box in five
sends an alarm batch after its check-in and one batch in ten is sent again, as a retry.
**Saturation**: the client threads send check-ins and alarm batches (one operation in four) as
fast as the center answers. At the end the bench checks that every box checked in and that the
alarms table holds every event exactly once. PostgreSQL is a throwaway cluster
(`lab/pgtemp.py`) with fsync and synchronous_commit on; SQLite runs in WAL mode with
`synchronous=FULL`: an acknowledged alarm is on disk. Client, center and database share the
machine's two CPUs with whatever else runs (the load average before the run is given).
"""


def write_report(path: Path, db: str, block: str) -> None:
    """Replace this database's subsection of the ``opscenter`` section of docs/benchmarks.md (marked
    sections, lab/bench/doc.py: each benchmark command owns one), keeping the other database's."""
    from lab.bench.doc import read_section, write_section

    old = read_section(path, SECTION_NAME) or ""
    subs: dict[str, str] = {}
    for label in LABELS.values():
        marker = f"## {label}\n"
        i = old.find(marker)
        if i >= 0:
            j = old.find("\n## ", i + 1)
            subs[label] = old[i:] if j < 0 else old[i:j + 1]
    subs[LABELS[db]] = block
    body = [TITLE, "", INTRO.strip(), ""]
    for label in LABELS.values():
        if label in subs:
            body += [subs[label].rstrip("\n"), ""]
    write_section(path, SECTION_NAME, "\n".join(body))


def machine() -> str:
    """CPUs (and their model) and memory of this machine."""
    mc = host.machine()
    return f"{mc['nproc']} CPUs ({mc['cpu']}), {mc['memory']} RAM"


# main ------------------------------------------------------------------------------------------

def run_bench(args: argparse.Namespace) -> int:
    from lab import pgtemp
    from lab.center import start_center

    workers = args.workers or (2 if args.db == "postgres" else 1)
    work = Path(tempfile.mkdtemp(prefix="vcr-ocbench-"))
    pg = None
    center = None
    load_before = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    try:
        if args.db == "postgres":
            reason = pgtemp.unavailable_reason()
            if reason:
                print(f"bench: PostgreSQL unavailable: {reason}", file=sys.stderr)
                return 2
            pg = pgtemp.PgTemp(fsync=True, max_connections=max(100, workers * 60 + 20)).start()
            url = pg.url
            db_version = "PostgreSQL " + pg.psql("SHOW server_version").strip()
        else:
            url = f"sqlite:///{work / 'center.db'}"
            import sqlite3

            db_version = f"SQLite {sqlite3.sqlite_version} (WAL, synchronous=FULL)"
        settings = {"checkin_rate": 0, "alarm_rate": 0, "activate_rate": 0, "html_page": False,
                    "db_pool_size": 20, "db_max_overflow": 20, "threadpool": 40, "log_level": "warning"}
        center = start_center(work / "center", "127.0.0.1:0", db=url, workers=workers, settings=settings,
                              timeout=60)
        ctx = ssl.create_default_context(cafile=str(center.ca))
        stats = Stats()
        print(f"bench: center on {center.url} ({workers} worker(s), {db_version}); enrolling {args.devices} boxes",
              file=sys.stderr)
        t0 = time.monotonic()
        boxes = enroll_boxes(center, args.devices, args.clients, ctx, stats)
        enroll_wall = time.monotonic() - t0 - 0.0
        act = stats.lat.get("activate", [])
        boxes = [b for b in boxes if b.token]
        print(f"bench: {len(boxes)} boxes activated in {enroll_wall:.1f} s; fleet phase {args.duration:.0f} s",
              file=sys.stderr)
        pids = [center.proc.pid] if center.proc else []
        db_pids: list[int] = []
        if pg is not None:
            try:
                db_pids = [int((pg.data / "postmaster.pid").read_text().split()[0])]
            except (OSError, ValueError, IndexError):
                db_pids = []
        cpu0 = (cpu_seconds(pids), cpu_seconds(db_pids), time.process_time())
        wall0 = time.monotonic()
        sent_ids: set[tuple[str, str]] = set()
        fstats = Stats()
        fwall = fleet_phase(center, boxes, args.duration, args.clients, args.batch, ctx, fstats, sent_ids)
        print(f"bench: fleet phase done in {fwall:.1f} s; saturation phase {args.duration:.0f} s", file=sys.stderr)
        sstats = Stats()
        swall = saturation_phase(center, boxes, args.duration, args.clients, args.batch, args.alarm_every, ctx,
                                 sstats, sent_ids)
        cpu1 = (cpu_seconds(pids), cpu_seconds(db_pids), time.process_time())
        phase_wall = time.monotonic() - wall0
        devs = center.devices()
        checked_in = sum(1 for d in devs if d["checkins"] >= 1 and d["serial"].startswith("BENCH-"))
        rows = center.alarm_count()
        errors = {**stats.errors}
        for st in (fstats, sstats):
            for k, v in st.errors.items():
                errors[k] = errors.get(k, 0) + v
        events_sent = fstats.events_sent + sstats.events_sent
        accepted = fstats.accepted + sstats.accepted
        duplicates = fstats.duplicates + sstats.duplicates
        ok = (checked_in == args.devices and rows == len(sent_ids) == accepted and not errors
              and accepted + duplicates == events_sent)
        res = {
            "db": args.db, "devices": args.devices, "duration": args.duration, "workers": workers,
            "clients": args.clients, "batch": args.batch,
            "command": f"python -m lab center-bench --db {args.db} --devices {args.devices} --duration {args.duration:g}"
                       + (f" --workers {args.workers}" if args.workers else ""),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
            "load_before": load_before, "db_version": db_version,
            "enroll_rate": len(act) / enroll_wall if enroll_wall else 0.0,
            "enroll_p50": pct(act, 50), "enroll_p99": pct(act, 99),
            "fleet": {"checkin": fstats.lat.get("checkin", []), "alarms": fstats.lat.get("alarms", []),
                      "resend": fstats.lat.get("alarms (re-send)", []), "wall": fwall,
                      "late_max": max(fstats.late, default=0.0), "late_p99": pct(fstats.late, 99)
                      if fstats.late else 0.0},
            "saturation": {"checkin": sstats.lat.get("checkin", []), "alarms": sstats.lat.get("alarms", []),
                           "wall": swall},
            "cpu_center": cpu1[0] - cpu0[0], "cpu_db": cpu1[1] - cpu0[1], "cpu_client": cpu1[2] - cpu0[2],
            "phase_wall": phase_wall, "checked_in": checked_in, "alarm_rows": rows, "unique_events": len(sent_ids),
            "events_sent": events_sent, "duplicates": duplicates,
            "errors": ", ".join(f"{k}: {v}" for k, v in sorted(errors.items())), "ok": ok,
        }
        block = render(res)
        print(block)
        if args.out != "-":
            write_report(Path(args.out), args.db, block)
            print(f"bench: written to {args.out}", file=sys.stderr)
        return 0 if ok else 1
    finally:
        if center is not None:
            center.close()
        if pg is not None:
            pg.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"bench: work folder kept: {work}", file=sys.stderr)
