"""End to end: the web antivirus on the lab bridge. A PC downloads EICAR and every ClamAV test file
over HTTP through the box (a private clamd with the starter database): each is cut before it
completes (connection reset, or the antivirus block page when the file travels with its headers),
with an alarm in eve.json; clean files of the same types pass byte-identical (sha256 compared at
the PC); an infected upload is answered with the block page."""
from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import random
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from lab.agentrun import LabAgent
from lab.netns import Lab

pytestmark = pytest.mark.lab

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
TESTFILES = Path("/usr/share/clamav-testfiles")
PORT = 8080
# lab/fileserver.py: /NAME in one write (a small file travels with its headers), /CODING/NAME chunked and
# compressed (gzip, deflate, both layered)
FILES_PORT = 8090


# 9 MiB of padding (near max_size), then the starter database's body signature (VCR.Test.BodyMarker): found only
# when the whole file is scanned (90x the IPS body limit, 9x the stream depth as shipped)
PADDED = random.Random(13).randbytes(9 << 20) + b"VCR-AV-TEST-MARKER-7f3a9c\n"


def clean_files() -> dict[str, bytes]:
    """Clean files of the types of the test files (executable, archives, compressed, PDF, HTML, text)."""
    text = b"Quarterly report of a small office, nothing to see here.\n" * 200
    z = io.BytesIO()
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as f:
        f.writestr("report.txt", text)
    t = io.BytesIO()
    with tarfile.open(fileobj=t, mode="w:gz") as f:
        info = tarfile.TarInfo("report.txt")
        info.size = len(text)
        f.addfile(info, io.BytesIO(text))
    pdf = (b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n"
           b"trailer<</Root 1 0 R>>\n%%EOF\n")
    return {
        "clean.exe": (TESTFILES / "clam.exe").read_bytes() + b"\0" * 512,  # another executable: its hash is not listed
        "clean.zip": z.getvalue(),
        "clean.tar.gz": t.getvalue(),
        "clean.bz2": bz2.compress(text),
        "clean.gz": gzip.compress(text),
        "clean.pdf": pdf,
        "clean.html": b"<!doctype html><html><body><p>hello</p></body></html>\n",
        "clean.txt": text,
    }


@pytest.fixture(scope="module")
def served(office: Lab, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("files")
    files = {"eicar.com": EICAR, **{p.name: p.read_bytes() for p in sorted(TESTFILES.iterdir()) if p.is_file()},
             **clean_files(), "padded.bin": PADDED}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    office.popen("web", [sys.executable, "-m", "http.server", str(PORT), "--bind", "0.0.0.0", "--directory", str(folder)],
                 name="files")
    office.popen("web", [sys.executable, "-m", "lab.fileserver", str(FILES_PORT), str(folder)], name="fileserver")
    assert office.wait_tcp("web", "127.0.0.1", PORT, 10) and office.wait_tcp("web", "127.0.0.1", FILES_PORT, 10)
    return files


@pytest.fixture(scope="module")
def av_agent(office: Lab, clamd: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabAgent]:
    overrides = {
        "engines.av": {"enabled": True, "clamd_socket": clamd.socket, "database": str(clamd.database)},
        # downloads: the IPS body limit and stream depth as shipped (the antivirus follows files to
        # its max_size on its own); uploads are not streamed past the request body limit yet
        "app_layer.http.request_body_limit": 10 << 20,
    }
    a = LabAgent(office, tmp_path_factory.mktemp("agent"), overrides=overrides)
    with a.running():
        yield a


def fetch(lab: Lab, url: str, out: Path) -> tuple[int, str, bytes | None]:
    """curl at the PC: (exit code, stderr, the bytes written, None when no file was written)."""
    out.unlink(missing_ok=True)
    res = lab.exec("pc1", ["curl", "-sS", "--max-time", "8", "-o", str(out), url])
    return res.returncode, res.stderr, out.read_bytes() if out.exists() else None


def test_infected_downloads_are_cut_and_clean_ones_pass_byte_identical(office: Lab, served: dict[str, bytes],
                                                                        av_agent: LabAgent, tmp_path: Path):
    web = office.hosts["web"].ipv4
    infected = [n for n in served if not n.startswith("clean.")]
    problems, seen = [], {"reset": 0, "block page": 0}
    for name in infected:
        code, err, got = fetch(office, f"http://{web}:{PORT}/{name}", tmp_path / name)
        whole = got is not None and hashlib.sha256(got).digest() == hashlib.sha256(served[name]).digest()
        page = got is not None and "ウイルスが検出されたため".encode() in got
        seen["block page" if page else "reset"] += 1
        if whole or not (code != 0 or page):
            problems.append(f"{name}: curl {code} {err.strip()!r}, {len(got or b'')} bytes reached the PC")
        rec = av_agent.wait_alarm(lambda r, n=name: r.get("fileinfo", {}).get("filename") == n
                                  and r["event_type"] == "alert", timeout=8)
        if rec is None:
            problems.append(f"{name}: no alarm")
        elif rec["alert"]["action"] != "blocked" or not rec["av"]["virus"]:
            problems.append(f"{name}: alarm {rec['alert']} {rec['av']}")
    for name in [n for n in served if n.startswith("clean.")]:
        code, err, got = fetch(office, f"http://{web}:{PORT}/{name}", tmp_path / name)
        if code != 0 or got is None or hashlib.sha256(got).hexdigest() != hashlib.sha256(served[name]).hexdigest():
            problems.append(f"clean {name}: curl {code} {err.strip()!r}, not byte-identical")
    print(f"{len(infected)} infected downloads: {seen}")
    assert not problems, "\n".join(problems)
    eicar = av_agent.wait_alarm(lambda r: r.get("fileinfo", {}).get("filename") == "eicar.com" and "av" in r)
    assert eicar is not None and eicar["av"]["virus"].startswith("Eicar-Test-Signature")
    assert eicar["fileinfo"]["sha256"] == hashlib.sha256(EICAR).hexdigest() and eicar["fileinfo"]["size"] == 68
    assert eicar["fileinfo"]["magic"] == "EICAR virus test files" and eicar["av"]["lan_host"] == office.hosts["pc1"].ipv4


def test_infected_upload_gets_the_block_page(office: Lab, served: dict[str, bytes], av_agent: LabAgent,
                                             tmp_path: Path):
    web = office.hosts["web"].ipv4
    (tmp_path / "up.com").write_bytes(EICAR)
    res = office.exec("pc1", ["curl", "-sS", "--max-time", "8", "--data-binary", f"@{tmp_path / 'up.com'}",
                              "-H", "Content-Type: application/octet-stream", f"http://{web}/upload/up.com"])
    assert "ウイルスが検出されたため、アップロードをブロックしました" in res.stdout and "Eicar-Test-Signature" in res.stdout
    rec = av_agent.wait_alarm(lambda r: r.get("av", {}).get("direction") == "upload")
    assert rec is not None and rec["alert"]["action"] == "blocked" and rec["direction"] == "to_server"


def test_a_small_infected_file_sent_with_its_headers_gets_the_block_page(office: Lab, served: dict[str, bytes],
                                                                          av_agent: LabAgent):
    web = office.hosts["web"].ipv4
    res = office.exec("pc1", ["curl", "-sS", "--max-time", "8", "-w", "\n%{http_code}", f"http://{web}:{FILES_PORT}/eicar.com"])
    assert res.stdout.endswith("403"), (res.returncode, res.stderr)
    page = res.stdout
    assert "ウイルスが検出されたため、ダウンロードをブロックしました" in page and "A virus was found" in page
    assert "Eicar-Test-Signature" in page and "eicar.com" in page and EICAR.decode() not in page
    res = office.exec("pc1", ["curl", "-sS", "--max-time", "8", "-o", "/dev/null", "-w", "%{http_code}",
                              f"http://{web}:{FILES_PORT}/clean.txt"])
    assert res.stdout == "200"  # a clean file from the same server passes


@pytest.mark.parametrize("coding", ["gzip", "deflate", "gzip,deflate"])
def test_every_infected_file_chunked_and_compressed_is_cut_and_clean_ones_pass(office: Lab, served: dict[str, bytes],
                                                                               av_agent: LabAgent, tmp_path: Path,
                                                                               coding: str):
    """EICAR and every ClamAV test file, chunked and compressed (layered too), through the lab:
    each download fails at the PC (the connection is cut) with an alarm naming the file; clean
    ones pass byte-identical after decoding.

    Not asserted: that the PC holds less than the whole file. The held packet is the one that
    ends the HTTP message; when the server sends the last chunk's data and the chunked terminator
    in separate segments, every data byte has passed before it (docs/antivirus.md, limits)."""
    web = office.hosts["web"].ipv4
    problems = []
    infected = [n for n in served if not n.startswith("clean.")]
    for name, data in served.items():
        out = tmp_path / name
        out.unlink(missing_ok=True)
        res = office.exec("pc1", ["curl", "-sS", "--compressed", "--max-time", "8", "-o", str(out),
                                  f"http://{web}:{FILES_PORT}/{coding}/{name}"])
        got = out.read_bytes() if out.exists() else None
        whole = got is not None and hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        if name.startswith("clean."):
            if res.returncode != 0 or not whole:
                problems.append(f"clean {name}: curl {res.returncode} {res.stderr.strip()!r}, not byte-identical")
        elif res.returncode == 0:
            problems.append(f"{name}: the download completed ({len(got or b'')} bytes)")
    for name in infected:
        rec = av_agent.wait_alarm(lambda r, n=name: r["event_type"] == "alert" and r.get("fileinfo", {}).get("filename") == n
                                  and r.get("http", {}).get("url", "").startswith(f"/{coding}/"), timeout=8)
        if rec is None or rec["alert"]["action"] != "blocked" or not rec["av"].get("virus"):
            problems.append(f"{name}: alarm {rec and rec['av']}")
    assert not problems, "\n".join(problems)
