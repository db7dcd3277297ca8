"""Monthly report benchmark: how long the center takes to generate every contract's report.

``python -m lab report-bench --contracts N [--workers W] [--alarms-per-day A]``:

1. simulates N contracts for one month in a fresh SQLite center database (lab/reportsim.py: each
   box activated, a month of check-ins and A alarms a day stored through the center's own
   functions; every third box has an outage);
2. times the per-step cost on a few contracts in this process (data model, charts, HTML, PDF);
3. runs the monthly pass (``opscenter.report.schedule.run_due``: claim, render, sign, store) over all
   N contracts with W processes, measuring wall time and CPU time;
4. extrapolates to 5,000 contracts and writes the ``reports`` section of docs/benchmarks.md.

The simulated boxes check in hourly (the spans the operating record reads are the same size for any
interval: one row per unbroken run of check-ins), so the setup stays short; what a report costs
depends on its alarms, which are simulated at the chosen rate.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SECTION_NAME = "reports"
TARGET = 5000
NIGHT_S = 8 * 3600


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--contracts", type=int, default=40, help="contracts simulated and reported (extrapolated to 5,000)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="report processes (default: one per CPU)")
    p.add_argument("--alarms-per-day", type=int, default=100, help="alarms per box and day")
    p.add_argument("--month", default="2026-11")
    p.add_argument("--out", default="docs/benchmarks.md", help="report file ('-' = print only)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument("--json", help="also write the raw results here (JSON)")


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _work_dir() -> Path:
    shm = Path("/dev/shm")  # the database on tmpfs: the setup's fsyncs cost nothing
    return Path(tempfile.mkdtemp(prefix="vcr-reportbench-", dir=shm if shm.is_dir() else None))


def simulate_fleet(url: str, n: int, month: Any, alarms_per_day: int) -> tuple[int, int]:
    from lab.reportsim import Plan, simulate
    from opscenter.db import Database

    db = Database(url)
    db.create_tables()
    rng = random.Random(5000)
    alarms = checkins = 0
    for i in range(n):
        outages = []
        if i % 3 == 0:
            a = month.start + dt.timedelta(days=rng.randrange(month.days - 1), hours=rng.randrange(20))
            outages = [(a, a + dt.timedelta(hours=rng.randrange(2, 6)))]
        plan = Plan(f"C-{i + 1:05d}", f"VCR116W-{i + 1:05d}", month, interval=3600.0, outages=outages,
                    alarms_per_day=alarms_per_day, lan_hosts=rng.randrange(10, 40), seed=i)
        res = simulate(db, plan)
        alarms += res.alarms
        checkins += res.checkins
        if (i + 1) % 10 == 0:
            print(f"  simulated {i + 1}/{n} contracts", file=sys.stderr)
    db.dispose()
    return alarms, checkins


def step_times(url: str, key_path: Path, month: Any, sample: list[str]) -> dict[str, float]:
    """Mean seconds per step over ``sample`` (after one warm-up report: imports, fonts)."""
    from opscenter.db import Database
    from opscenter.report import render
    from opscenter.report.model import build
    from opscenter.report.signing import SigningKey, sign_record

    db = Database(url)
    key = SigningKey.load(key_path)
    now = month.end + dt.timedelta(hours=3)
    render.render_report(db, sample[0], month, key=key, now=now)  # warm-up
    total = {"model": 0.0, "charts": 0.0, "html": 0.0, "pdf": 0.0}
    for c in sample:
        t0 = time.perf_counter()
        data = build(db, c, month, misses=3, default_interval=60.0, now=now)
        record = sign_record(data.operating, key, "2026-12-01T02:00:00Z")
        t1 = time.perf_counter()
        v = render.view(data, record, key)
        t2 = time.perf_counter()
        html = render.html_of(v, screen=False)
        t3 = time.perf_counter()
        render.pdf_of(html, record, "r.json")
        t4 = time.perf_counter()
        for k, d in (("model", t1 - t0), ("charts", t2 - t1), ("html", t3 - t2), ("pdf", t4 - t3)):
            total[k] += d / len(sample)
    db.dispose()
    return total


def run_bench(args: argparse.Namespace) -> int:
    from opscenter.report import store
    from opscenter.report.period import Month
    from opscenter.report.schedule import run_due
    from opscenter.report.signing import ensure_key
    from opscenter.settings import Settings

    month = Month.parse(args.month)
    work = _work_dir()
    load_before = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    try:
        url = f"sqlite:///{work / 'center.db'}"
        key_path, _, _ = ensure_key(work / "keys")
        print(f"report-bench: simulating {args.contracts} contracts for {month} in {work}", file=sys.stderr)
        t = time.perf_counter()
        alarms, checkins = simulate_fleet(url, args.contracts, month, args.alarms_per_day)
        setup_s = time.perf_counter() - t
        print("report-bench: timing the steps", file=sys.stderr)
        sample = [f"C-{i + 1:05d}" for i in range(min(3, args.contracts))]
        steps = step_times(url, key_path, month, sample)
        settings = Settings.model_validate({"db": url, "report_key": str(key_path)})
        print(f"report-bench: the monthly pass, {args.workers} process(es)", file=sys.stderr)
        cpu0, t0 = _cpu(), time.perf_counter()
        res = run_due(settings, month=month, now=month.end + dt.timedelta(hours=3), workers=args.workers)
        wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
        from opscenter.db import Database

        db = Database(url)
        rows = store.list_reports(db, month=month.key)
        sizes = [r["summary"]["sizes"] for r in rows if r["status"] == "done"]
        db.dispose()
        db_mb = (work / "center.db").stat().st_size / 2**20
        result = {
            "command": f"python -m lab report-bench --contracts {args.contracts} --workers {args.workers} "
                       f"--alarms-per-day {args.alarms_per_day}",
            "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "machine": machine(), "load_before": load_before,
            "load_after": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
            "contracts": args.contracts, "workers": args.workers, "alarms": alarms, "checkins": checkins,
            "setup_s": setup_s, "steps": steps, "wall": wall, "cpu": cpu, "done": len(res.done),
            "failed": len(res.failed), "sizes": sizes, "db_mb": db_mb, "month": month.key,
            "alarms_per_day": args.alarms_per_day, "sample": len(sample),
        }
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(result, indent=1))
    block = render_md(result)
    print(block)
    if args.out != "-":
        from lab.bench.doc import write_section

        write_section(Path(args.out), SECTION_NAME, block)
        print(f"report-bench: written to {args.out}", file=sys.stderr)
    return 0 if result["done"] == args.contracts and not result["failed"] else 1


def machine() -> str:
    from lab.bench import host

    mc = host.machine()
    return f"{mc['nproc']} CPUs ({mc['cpu']}), {mc['memory']} RAM"


def render_md(r: dict[str, Any]) -> str:
    n, wall, cpu = r["contracts"], r["wall"], r["cpu"]
    per_wall, per_cpu = wall / n, cpu / n
    ncpu = os.cpu_count() or 1
    est_wall = TARGET * per_wall
    est_one_cpu = TARGET * per_cpu
    s = r["steps"]
    avg = lambda k: sum(x[k] for x in r["sizes"]) / max(1, len(r["sizes"])) / 1024  # noqa: E731
    fits = est_wall <= NIGHT_S
    lines = [
        "# Benchmarks: monthly reports",
        "",
        "Generated by `python -m lab report-bench` (lab/bench/reports.py); run it again rather than editing.",
        "",
        "Method: N contracts are simulated for one month in a fresh SQLite center database through the "
        "center's own functions (lab/reportsim.py: activation, a month of check-ins, alarms), then the "
        "monthly pass that the schedule runs on the 1st (`opscenter.report.schedule.run_due`: claim, data "
        "model, charts, HTML, PDF, signed operating record, stored in the `reports` table) makes all N "
        "reports with W processes. The figure for 5,000 contracts is extrapolated linearly from the "
        "time per report (each report reads only its own contract's rows through indexes, so the cost "
        "per report does not grow with the number of contracts).",
        "",
        f"- Command: `{r['command']}`",
        f"- Date: {r['date']}; machine: {r['machine']}; load average before / after: {r['load_before']} / "
        f"{r['load_after']} (the machine is shared: the CPU time below is the steadier figure)",
        f"- Data: {n:,} contracts, {r['alarms']:,} alarms ({r['alarms_per_day']} per box and day, of which about "
        f"70% count as attacks and threats), {r['checkins']:,} check-ins; simulated in {r['setup_s']:.0f} s",
        "",
        "| Figure | Value |",
        "| --- | --- |",
        f"| Reports made | {r['done']:,} of {n:,} ({r['failed']} failed) |",
        f"| Wall time, {r['workers']} process(es) | {wall:.1f} s: **{per_wall:.2f} s per report** |",
        f"| CPU time (all processes) | {cpu:.1f} s: {per_cpu:.2f} CPU-s per report |",
        f"| Steps, one report (mean of {r['sample']}) | data model and signature {s['model']:.2f} s, "
        f"charts {s['charts']:.2f} s, HTML {s['html']:.2f} s, PDF {s['pdf']:.2f} s |",
        f"| Sizes, mean | PDF {avg('pdf'):.0f} KiB, HTML {avg('html'):.0f} KiB, record {avg('record'):.1f} KiB |",
        f"| **5,000 contracts, this machine ({r['workers']} processes on {ncpu} CPUs)** | "
        f"**{est_wall / 3600:.1f} h** ({est_wall:,.0f} s) |",
        f"| 5,000 contracts on one CPU | {est_one_cpu / 3600:.1f} h |",
        f"| 5,000 contracts, {min(r['workers'], ncpu)} processes on an otherwise idle {ncpu}-CPU machine (CPU time "
        f"/ processes) | {est_one_cpu / min(r['workers'], ncpu) / 3600:.1f} h |",
        "",
        f"- Verdict: 5,000 reports take about {est_wall / 3600:.1f} h here, "
        + ("**within a night (8 h)**" if fits else "**more than a night (8 h)**")
        + f"; the CPU time alone ({est_one_cpu / 3600:.1f} CPU-hours) would fit in 8 h on "
          f"{max(1, -(-int(est_one_cpu) // NIGHT_S))} CPU(s). The schedule starts at 02:00 JST on the 1st "
          "(`report_hour`) with `report_workers` processes at a lower CPU priority than the API.",
        "- What costs: the PDF (WeasyPrint's layout of Japanese text and tables) and the two matplotlib "
        "charts; each process loads fonts and templates once and reuses them for all its reports.",
    ]
    return "\n".join(lines)
