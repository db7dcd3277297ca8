"""End to end: the sandbox on the lab bridge with the real center over HTTPS. pc1 downloads an
executable nobody has seen (a harmless test file the shipped YARA rule flags, lab/sandbox_samples.py):
the antivirus finds nothing, then the box holds it up to hold_timeout, submits it over its center
link, and passes it at the timeout with an alarm; the center's worker judges it malicious and the box raises a retro alarm naming pc1
(at the center too). pc2's next download of the same file is blocked at once; a clean executable
passes byte-identical; a virus is stopped by the antivirus and never submitted."""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from lab.agentrun import LabAgent, center_overrides, start_lab_center
from lab.netns import Lab
from lab.sandbox_samples import pe
from tests.waiting import wait

pytestmark = pytest.mark.lab
testing = pytest.importorskip("lab.center", reason="SANDBOX E2E SKIPPED: the reference center (opscenter/) is missing")

PORT = 8080


@pytest.fixture(scope="module")
def center(office: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    c = start_lab_center(office, tmp_path_factory.mktemp("center"),
                         settings={"checkin_rate": 0, "alarm_rate": 0, "sandbox_workers": 1})
    yield c
    c.close()


@pytest.fixture(scope="module")
def files(office: Lab, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("files")
    salt = folder.name.encode()  # a file no center has seen before
    out = {"tool.exe": pe(salt=salt), "printer-setup.exe": pe(marker=False, salt=salt),
           # a Windows executable of the ClamAV test files: the starter database knows it
           "virus.exe": Path("/usr/share/clamav-testfiles/clam.exe").read_bytes()}
    for name, data in out.items():
        (folder / name).write_bytes(data)
    office.popen("web", [sys.executable, "-m", "http.server", str(PORT), "--bind", "0.0.0.0", "--directory",
                         str(folder)], name="sandbox-files")
    assert office.wait_tcp("web", "127.0.0.1", PORT, 10)
    return out


@pytest.fixture(scope="module")
def box(office: Lab, center: Any, clamd: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabAgent]:
    work = tmp_path_factory.mktemp("agent")
    overrides = {
        **center_overrides(center, work),
        "engines.ips.enabled": False,
        # the antivirus first on every file (its private clamd), then the sandbox: the two holds in turn
        "engines.av": {"enabled": True, "clamd_socket": clamd.socket, "database": str(clamd.database)},
        "engines.sandbox": {"enabled": True, "url": center.url, "ca_file": str(center.ca),
                            "auth_file": str(work / "lib" / "center.json"),
                            "cache_file": str(work / "lib" / "sandbox-verdicts.db"),
                            "hold_timeout": 0.3, "poll_interval": 1.0, "verdict_wait": 120},
    }
    a = LabAgent(office, work, overrides=overrides)
    with a.running(activate=(center, "C-SANDBOX", "VCR116W-SANDBOX1")):
        yield a


def fetch(lab: Lab, pc: str, url: str, out: Path) -> tuple[int, bytes | None]:
    out.unlink(missing_ok=True)
    res = lab.exec(pc, ["curl", "-sS", "--max-time", "10", "-o", str(out), url])
    return res.returncode, out.read_bytes() if out.exists() else None


def test_unknown_executable_judged_at_the_center_then_blocked_at_the_next_pc(office: Lab, center: Any,
                                                                              files: dict[str, bytes], box: LabAgent,
                                                                              tmp_path: Path):
    web, pc1, pc2 = office.hosts["web"].ipv4, office.hosts["pc1"].ipv4, office.hosts["pc2"].ipv4
    sample = files["tool.exe"]
    sha = hashlib.sha256(sample).hexdigest()
    # pc1: unknown, no verdict within hold_timeout: the file arrives whole, with an alarm
    code, got = fetch(office, "pc1", f"http://{web}:{PORT}/tool.exe", tmp_path / "pc1.exe")
    assert code == 0 and got == sample
    passed = box.wait_alarm(lambda r: r.get("alert", {}).get("signature_id") == 9600003, timeout=10)
    assert passed is not None and passed["sandbox"]["lan_host"] == pc1 and passed["fileinfo"]["sha256"] == sha
    # the center judged it; the box's retro alarm names pc1
    retro = box.wait_alarm(lambda r: r.get("alert", {}).get("signature_id") == 9600004, timeout=60)
    assert retro is not None, "no retro alarm"
    assert retro["sandbox"]["lan_host"] == pc1 and retro["sandbox"]["verdict"] == "malicious"
    assert pc1 in retro["alert"]["signature"] and retro["alert"]["severity"] == 1
    assert any("VCR_Sandbox_Test_Marker" in r for r in retro["sandbox"]["reasons"])
    from opscenter.sandbox import queue

    row = queue.detail(center.db, sha)
    assert row is not None and row["effective"] == "malicious" and row["submissions_list"][0]["lan_host"] == pc1
    # pc2's download of the same file: blocked (block page or reset), alarm naming pc2
    code, got = fetch(office, "pc2", f"http://{web}:{PORT}/tool.exe", tmp_path / "pc2.exe")
    assert got != sample and (code != 0 or (got is not None and "危険なファイル".encode() in got))
    blocked = box.wait_alarm(lambda r: r.get("alert", {}).get("signature_id") == 9600001, timeout=10)
    assert blocked is not None and blocked["sandbox"]["lan_host"] == pc2 and blocked["alert"]["action"] == "blocked"
    # the alarms reach the center
    device = center.devices()[0]["device_id"]
    wait(lambda: {9600001, 9600004} <= {(a["event"].get("alert") or {}).get("signature_id")
                                         for a in center.alarms(device)}, timeout=30, what="sandbox alarms at the center")
    # a clean executable passes byte-identical (after its verdict: held up to hold_timeout at most)
    clean = files["printer-setup.exe"]
    code, got = fetch(office, "pc2", f"http://{web}:{PORT}/printer-setup.exe", tmp_path / "clean.exe")
    assert code == 0 and got == clean
    wait(lambda: queue.verdicts(center.db, [hashlib.sha256(clean).hexdigest()])[hashlib.sha256(clean).hexdigest()]
         ["verdict"] == "clean", timeout=30, what="clean verdict")


def test_a_virus_is_stopped_by_the_antivirus_and_never_submitted(office: Lab, center: Any, files: dict[str, bytes],
                                                                  box: LabAgent, tmp_path: Path):
    web = office.hosts["web"].ipv4
    sample = files["virus.exe"]
    code, got = fetch(office, "pc1", f"http://{web}:{PORT}/virus.exe", tmp_path / "v.exe")
    assert got != sample
    rec = box.wait_alarm(lambda r: r.get("fileinfo", {}).get("filename") == "virus.exe" and "av" in r, timeout=10)
    assert rec is not None and rec["av"]["virus"] and rec["alert"]["action"] == "blocked"
    from opscenter.sandbox import queue

    assert queue.detail(center.db, hashlib.sha256(sample).hexdigest()) is None  # the sandbox never saw it
    assert not [r for r in box.alarms() if r.get("fileinfo", {}).get("filename") == "virus.exe" and "sandbox" in r]
