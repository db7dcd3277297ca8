"""The scale benchmark: a small real run, and its report section next to the other benchmarks' sections."""
from __future__ import annotations

import argparse
from pathlib import Path

from opscenter.bench import add_arguments, run_bench, write_report


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
