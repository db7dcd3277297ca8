"""The http-evader cases of suricata-verify through the antivirus: ``vcr-agent pcap -r input.pcap
--clamd SOCKET`` (a real private clamd, starter database) on every case's capture. Each capture
hides the EICAR file behind one HTTP evasion (odd chunking, layered or broken compression, bad
status lines, HTTP/0.9, close-delimited bodies...); Suricata's file rules see it in every case
(the case's test.yaml), so the antivirus must too: exactly one antivirus alarm naming EICAR, raised
while a packet of the download could still be held (never only after the connection ended), and
where test.yaml checks Suricata's ``fileinfo`` (file name, method, host), our fileinfo record has
the same."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.cli import main
from tests import shared_data as shared
from tests.shared_data import SharedData

ROOT = shared.find("peer", "suricata-verify")
CASES = sorted(p.name for p in ROOT.glob("http-evader-*") if (p / "input.pcap").is_file()) if ROOT else []
EICAR_SHA256 = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f"


def fileinfo_checks(case_dir: Path) -> list[dict[str, Any]]:
    """The ``match`` of each test.yaml check on fileinfo records (count 1 each)."""
    spec = yaml.safe_load((case_dir / "test.yaml").read_text())
    out = []
    for check in spec.get("checks", []):
        f = check.get("filter", {})
        if f.get("match", {}).get("event_type") == "fileinfo":
            assert f.get("count") == 1
            out.append(f["match"])
    return out


def dotted(rec: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        if not isinstance(rec, dict) or part not in rec:
            return None
        rec = rec[part]
    return rec


@pytest.fixture(scope="module")
def evader(shared_data: SharedData) -> Path:
    return shared_data.path("peer", "suricata-verify")


def test_every_http_evader_file_is_seen_by_the_antivirus(evader: Path, clamd: Any, tmp_path: Path):
    cases = sorted(p.name for p in evader.glob("http-evader-*") if (p / "input.pcap").is_file())
    assert len(cases) >= 250, f"only {len(cases)} http-evader cases in {evader}"
    problems = []
    for case in cases:
        log = tmp_path / case
        with contextlib.redirect_stdout(io.StringIO()):
            rc = main(["pcap", "-r", str(evader / case / "input.pcap"), "-k", "none", "--set",
                       "app-layer.protocols.http.libhtp.default-config.response-body-decompress-layer-limit=3",
                       "--clamd", clamd.socket, "-l", str(log)])
        recs = [json.loads(line) for line in (log / "eve.json").read_text().splitlines()]
        av = [r for r in recs if r["event_type"] == "alert" and "av" in r]
        found = [r for r in av if r["av"].get("virus", "").startswith("Eicar-Test-Signature")]
        if rc != 0 or len(found) != 1:
            problems.append(f"{case}: rc {rc}, antivirus alarms {[(r['alert']['signature_id'], r['av']) for r in av]}")
            continue
        (alarm,) = found
        # the file decoded and de-chunked: EICAR exactly, or (a dozen cases, where libhtp's body
        # holds the file twice) starting with it
        info = alarm["fileinfo"]
        if info["sha256"] != EICAR_SHA256 and not (info["magic"] == "EICAR virus test files" and info["size"] > 68):
            problems.append(f"{case}: fileinfo {info}")
        if "note" in alarm["av"]:  # found only once the flow was gone: inline, the PC would have had the file
            problems.append(f"{case}: seen only after the connection ended")
        infos = [r for r in recs if r["event_type"] == "fileinfo"]
        for match in fileinfo_checks(evader / case):
            hits = [r for r in infos if all(dotted(r, k) == v for k, v in match.items() if k != "event_type")]
            if len(hits) != 1:
                problems.append(f"{case}: {len(hits)} fileinfo records match {match}: {[r['fileinfo'] for r in infos]}")
    print(f"{len(cases)} http-evader cases, {len(problems)} problems")
    assert not problems, "\n".join(problems)
