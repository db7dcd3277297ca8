"""lab/bench/reports.py: the benchmark's section, and the screenshot command's pages."""
from __future__ import annotations

from pathlib import Path

from lab.bench.reports import TARGET, render_md


def _result(wall: float, cpu: float, n: int = 100) -> dict:
    return {"command": "python -m lab report-bench", "date": "2026-12-07 01:00", "machine": "2 CPUs",
            "load_before": "1 / 1 / 1", "load_after": "1 / 1 / 1", "contracts": n, "workers": 2,
            "alarms": 300_000, "checkins": 74_000, "setup_s": 200.0, "sample": 3,
            "steps": {"model": 0.02, "charts": 0.3, "html": 0.0, "pdf": 1.5}, "wall": wall, "cpu": cpu,
            "done": n, "failed": 0, "sizes": [{"pdf": 250 * 1024, "html": 70 * 1024, "record": 4300}],
            "db_mb": 100.0, "month": "2026-11", "alarms_per_day": 100}


def test_extrapolation_and_verdict():
    md = render_md(_result(wall=230.0, cpu=120.0))
    assert f"{TARGET * 2.3 / 3600:.1f} h" in md and "**within a night (8 h)**" in md
    assert "2.30 s per report" in md and "1.20 CPU-s per report" in md and "PDF 250 KiB" in md
    slow = render_md(_result(wall=700.0, cpu=700.0))  # 7 s a report: 9.7 h
    assert "**more than a night (8 h)**" in slow


def test_block_page_files(tmp_path: Path):
    from lab.screenshots_report import block_pages

    pages = block_pages(tmp_path)
    assert set(pages) == {"phishing", "cnc", "policy-games", "denylist", "antivirus", "sandbox"}
    assert all('name="viewport"' in p.read_text(encoding="utf-8") for p in pages.values())
