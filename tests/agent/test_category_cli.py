"""`vcr-agent category`: categories and verdict for support staff, on the real UT1 lists."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.cli import main
from tests.shared_data import SharedData


def first_entry(db: Path, category: str) -> str:
    for line in (db / category / "domains").read_text().splitlines():
        if line.count(".") >= 1 and not line.replace(".", "").isdigit():
            return line.strip()
    raise AssertionError(category)


@pytest.fixture
def db(shared_data: SharedData) -> Path:
    return shared_data.path("data", "ut1")


def test_json_output_per_input(db: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path):
    bad, game = first_entry(db, "phishing"), first_entry(db, "games")
    cfg = tmp_path / "none.yaml"
    assert main(["category", "--db", str(db), "--json", bad, f"https://sub.{bad}/login", game, "notlisted.example", "-c", str(_cfg(cfg))]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["input"] for r in rows] == [bad, f"https://sub.{bad}/login", game, "notlisted.example"]
    assert rows[0]["verdict"] == "block" and "phishing" in rows[0]["categories"]
    assert rows[1]["verdict"] == "block"  # a subdomain of a listed name
    assert rows[2]["verdict"] == "allow" and "games" in rows[2]["categories"]  # listed, but not a blocked category
    assert rows[3] == {"input": "notlisted.example", "categories": [], "verdict": "allow", "reason": "not blocked", "matched": ""}


def test_missing_db_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["category", "--db", str(tmp_path / "nope"), "example.com", "-c", str(_cfg(tmp_path / "c.yaml"))]) == 2
    assert "cannot load the category database" in capsys.readouterr().err


def _cfg(path: Path) -> Path:
    path.write_text("engines:\n  webfilter:\n    blocked: [malware, phishing]\n")
    return path
