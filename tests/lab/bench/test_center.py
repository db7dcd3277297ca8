"""lab/bench/center.py: a small real run, its rendering, and its report section next to the other benchmarks' sections."""
from __future__ import annotations

import argparse
from pathlib import Path

from lab.bench.center import add_arguments, render, run_bench, write_report


def _args(**kw: object) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    ns = p.parse_args([])
    for k, v in kw.items():
        setattr(ns, k, v)
    return ns


def test_small_run_passes_and_is_written(tmp_path: Path):
    out = tmp_path / "benchmarks.md"
    out.write_text("<!-- bench:dataplane begin -->\n# Benchmarks: the agent\n\nkeep me\n<!-- bench:dataplane end -->\n")
    assert run_bench(_args(devices=40, duration=2.0, clients=4, out=str(out))) == 0
    text = out.read_text()
    assert "keep me" in text and "<!-- bench:opscenter begin -->" in text
    assert "## SQLite" in text and "40 of 40 boxes checked in at least once" in text and "**PASS**" in text
    assert "errors: none" in text


def test_report_keeps_the_other_database_and_other_sections(tmp_path: Path):
    out = tmp_path / "benchmarks.md"
    out.write_text("<!-- bench:filter begin -->\n# Filter\n<!-- bench:filter end -->\n")
    write_report(out, "sqlite", "## SQLite\n\nsqlite numbers v1\n")
    write_report(out, "postgres", "## PostgreSQL\n\npg numbers\n")
    write_report(out, "sqlite", "## SQLite\n\nsqlite numbers v2\n")
    text = out.read_text()
    assert "# Filter" in text and "pg numbers" in text and "sqlite numbers v2" in text
    assert "v1" not in text and text.count("# Benchmarks: operations center") == 1
    assert text.index("## SQLite") < text.index("## PostgreSQL")


def test_render_the_phase_table_and_the_checks() -> None:
    res = {
        "db": "sqlite", "devices": 5000, "duration": 60.0, "workers": 1, "clients": 32, "batch": 20,
        "command": "python -m lab center-bench --db sqlite --devices 5000 --duration 60", "date": "2026-01-01 00:00 UTC",
        "machine": "2 CPUs (AMD EPYC), 23.5 GiB RAM", "load_before": "0.10 / 0.20 / 0.30", "db_version": "SQLite 3.45",
        "enroll_rate": 250.0, "enroll_p50": 0.01, "enroll_p99": 0.05,
        "fleet": {"checkin": [0.002, 0.004, 0.010], "alarms": [0.020], "resend": [], "wall": 60.0, "late_max": 0.003,
                  "late_p99": 0.002},
        "saturation": {"checkin": [0.001] * 6000, "alarms": [0.030] * 2000, "wall": 60.0},
        "cpu_center": 50.0, "cpu_db": 0.0, "cpu_client": 30.0, "phase_wall": 120.0, "checked_in": 5000,
        "alarm_rows": 40_020, "unique_events": 40_020, "events_sent": 40_040, "duplicates": 20, "errors": "", "ok": True,
    }
    lines = render(res).splitlines()
    start = lines.index("| Phase | Requests | Rate | p50 | p99 | max |")
    assert lines[start + 1:start + 7] == [
        "|---|---|---|---|---|---|",
        "| Fleet: check-ins (5,000 boxes once in 60 s) | 3 | 0/s | 4.0 ms | 10.0 ms | 10.0 ms |",
        "| Fleet: alarm batches (20 events) | 1 | 0/s | 20.0 ms | 20.0 ms | 20.0 ms |",
        "| Fleet: alarm re-sends (all duplicates) | 0 | – | – | – | – |",
        "| Saturation: check-ins | 6,000 | 100/s | 1.0 ms | 1.0 ms | 1.0 ms |",
        "| Saturation: alarm batches (20 events) | 2,000 | 33/s | 30.0 ms | 30.0 ms | 30.0 ms |",
    ]
    assert lines[0] == "## SQLite" and lines[-1].endswith("errors: none. **PASS**")
