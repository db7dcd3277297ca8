"""The web antivirus end to end in one process: the real pipeline with the av engine, the real
performer and a real private clamd (the ``clamd`` fixture, starter database)."""
from __future__ import annotations

import gzip
import hashlib
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from agent.config import parse_config
from agent.dataplane import clamd as clamd_client
from agent.dataplane.performers import perform
from agent.dataplane.worker import pipeline_from_config
from filters.engine import InjectKind
from filters.packet import ACK, FIN, PSH, SYN
from filters.pipeline import Outcome
from tests.filters.factories import tpacket

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
TESTFILES = Path("/usr/share/clamav-testfiles")


class Box:
    """The pipeline with the av engine; each I/O the engine asks for is done by the real performer."""

    def __init__(self, sock: str, **av: Any) -> None:
        cfg = parse_config({
            "settings_sheet": {"management_ip": "192.0.2.2/24", "gateway": "192.0.2.1"},
            "app_layer": {"http": {"request_body_limit": 16 << 20, "response_body_limit": 16 << 20}},
            "dataplane": {"flows": {"stream_depth": 32 << 20}},
            "engines": {"firewall": {"enabled": False}, "av": {"enabled": True, "clamd_socket": sock, **av}},
        })
        self.events: list[dict[str, Any]] = []
        self.pipeline = pipeline_from_config(cfg, self.events.append)
        self.ts = 1.0
        self.port = 40000
        self.auto_io = True
        self.io_ms: list[float] = []

    # one TCP connection
    def connect(self) -> None:
        self.port += 1
        self.cseq, self.sseq = 1001, 5001
        self._send(False, SYN, 1000, 0)
        self._send(True, SYN | ACK, 5000, 1001)
        self._send(False, ACK, self.cseq, self.sseq)

    def _send(self, reply: bool, flags: int, seq: int, ack: int, payload: bytes = b"") -> list[Any]:
        self.ts += 0.001
        ports = {"sport": 80, "dport": self.port} if reply else {"sport": self.port, "dport": 80}
        pkt = tpacket(reply=reply, tcp_flags=flags, seq=seq, ack=ack, payload=payload, ts=self.ts, **ports)
        out = list(self.pipeline.process(pkt, (reply, seq), self.ts))
        if self.auto_io:
            out += self.do_io()
        return out

    def do_io(self) -> list[Any]:
        out = []
        for hold_id, req in self.pipeline.take_io():
            t0 = time.perf_counter()
            result, error = perform(req)
            self.io_ms.append((time.perf_counter() - t0) * 1000)
            out += self.pipeline.io_done(hold_id, result, error, self.ts)
        return out

    def client(self, data: bytes, mss: int = 1400) -> list[Any]:
        out = []
        for i in range(0, len(data), mss):
            part = data[i:i + mss]
            out += self._send(False, ACK | PSH, self.cseq, self.sseq, part)
            self.cseq += len(part)
        return out

    def server(self, data: bytes, mss: int = 1400) -> list[Any]:
        out = []
        for i in range(0, len(data), mss):
            part = data[i:i + mss]
            out += self._send(True, ACK | PSH, self.sseq, self.cseq, part)
            self.sseq += len(part)
        return out

    def download(self, body: bytes, *, name: str = "file.bin", headers: bytes = b"", chunked: bool = False,
                 split_headers: bool = True) -> list[Any]:
        """A GET and its response; returns the releases of the response's packets."""
        self.connect()
        self.client(f"GET /dl/{name} HTTP/1.1\r\nHost: files.example\r\n\r\n".encode())
        if chunked:
            wire = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 700]), body[i:i + 700]) for i in range(0, len(body), 700))
            wire += b"0\r\n\r\n"
            head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" + headers + b"\r\n"
        else:
            wire = body
            head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(body) + headers + b"\r\n"
        if split_headers:
            return self.server(head) + self.server(wire)
        return self.server(head + wire)

    def upload(self, body: bytes, name: str = "report.exe") -> list[Any]:
        self.connect()
        head = (f"POST /upload/{name} HTTP/1.1\r\nHost: up.example\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        return self.client(head) + self.client(body)

    def alerts(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event_type") == "alert"]

    def fileinfos(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event_type") == "fileinfo"]


def _blocked(releases: list[Any]) -> Any:
    """The release of the held last packet: dropped, with what is sent back."""
    last = releases[-1]
    assert last.outcome is Outcome.DROP and last.offload
    return last


def _passed(releases: list[Any]) -> None:
    assert releases and all(r.outcome is Outcome.ACCEPT for r in releases)


@pytest.fixture()
def box(clamd: Any) -> Box:
    return Box(clamd.socket)


def test_eicar_download_is_cut_with_an_alarm_naming_the_virus_and_the_file(box: Box):
    last = _blocked(box.download(EICAR, name="eicar.com"))
    assert [i.kind for i in last.inject] == [InjectKind.TCP_RESET]  # the response started: cut both sides
    (alert,) = box.alerts()
    assert alert["alert"]["signature_id"] == 9500001 and alert["alert"]["action"] == "blocked"
    assert alert["av"]["virus"].startswith("Eicar-Test-Signature")
    assert alert["fileinfo"] == {"filename": "eicar.com", "magic": "EICAR virus test files", "gaps": False,
                                 "state": "CLOSED", "sha256": hashlib.sha256(EICAR).hexdigest(), "stored": False,
                                 "size": 68, "tx_id": 0}
    assert alert["http"]["hostname"] == "files.example" and alert["direction"] == "to_client"
    assert box.fileinfos()[0]["fileinfo"]["sha256"] == alert["fileinfo"]["sha256"]


def test_eicar_gzip_encoded_and_chunked(box: Box):
    _blocked(box.download(gzip.compress(EICAR), headers=b"Content-Encoding: gzip\r\n"))
    _blocked(box.download(EICAR * 30, chunked=True))  # the hash does not match: the body signature does
    _blocked(box.download(gzip.compress(EICAR), headers=b"Content-Encoding: gzip\r\n", chunked=True))
    alerts = box.alerts()
    assert len(alerts) == 3 and all(a["av"]["virus"].startswith("Eicar-Test-Signature") for a in alerts)


def test_response_in_one_packet_gets_the_block_page_in_its_place(box: Box):
    last = _blocked(box.download(EICAR, name="eicar.com", split_headers=False))
    (inj,) = last.inject
    assert inj.kind is InjectKind.HTTP_BLOCK_PAGE and inj.args["replace"] is True
    assert "Eicar-Test-Signature" in inj.args["html"] and "eicar.com" in inj.args["html"]
    assert "ウイルス" in inj.args["html"]


def test_infected_upload_is_answered_with_the_block_page(box: Box):
    last = _blocked(box.upload(b"MZ" + b"\0" * 100 + b"VCR-AV-PE-MARKER" + b"\0" * 3000))
    (inj,) = last.inject
    assert inj.kind is InjectKind.HTTP_BLOCK_PAGE and not inj.args.get("replace")
    (alert,) = box.alerts()
    assert alert["av"]["virus"].startswith("VCR.Test.PEMarker") and alert["av"]["direction"] == "upload"


def test_clean_file_passes_with_a_fileinfo_record_and_no_alarm(box: Box):
    body = bytes(range(256)) * 200
    _passed(box.download(body, name="clean.bin"))
    assert box.alerts() == []
    (info,) = box.fileinfos()
    assert info["fileinfo"]["sha256"] == hashlib.sha256(body).hexdigest() and info["fileinfo"]["size"] == len(body)


@pytest.mark.parametrize("name", ["clam.exe", "clam.zip", "clam.7z", "clam.pdf", "clam.ole.doc", "clam-upx.exe"])
def test_clamav_testfiles_are_detected(box: Box, name: str):
    data = (TESTFILES / name).read_bytes()
    _blocked(box.download(data, name=name))
    (alert,) = box.alerts()
    assert alert["av"]["virus"].startswith("VCR.Test.") and alert["fileinfo"]["filename"] == name


def test_a_file_above_max_size_passes_with_an_alarm(clamd: Any):
    box = Box(clamd.socket, max_size=1000)
    _passed(box.download(EICAR + b"\0" * 2000, name="big.bin"))
    (alert,) = box.alerts()
    assert alert["alert"]["signature_id"] == 9500002 and alert["alert"]["action"] == "allowed"
    assert alert["av"] == {"action": "passed", "reason": "too_large", "max_size": 1000}
    assert alert["fileinfo"]["size"] == 2068 and alert["fileinfo"]["filename"] == "big.bin"
    box.events.clear()  # chunked: no length announced, the whole body is over the limit
    _passed(box.download(b"\0" * 3000, chunked=True))
    assert [a["av"]["reason"] for a in box.alerts()] == ["too_large"]


def test_clamd_down_passes_with_an_alarm(tmp_path: Path):
    box = Box(str(tmp_path / "nothing.sock"))
    _passed(box.download(EICAR))
    (alert,) = box.alerts()
    assert alert["alert"]["signature_id"] == 9500004 and alert["av"]["reason"] == "unavailable"
    assert alert["fileinfo"]["sha256"] == hashlib.sha256(EICAR).hexdigest()


def test_scan_timeout_passes_with_an_alarm(clamd: Any):
    box = Box(clamd.socket, scan_timeout=0.5)
    box.auto_io = False
    box.download(EICAR)
    assert box.pipeline.held_packets == 1  # the last packet waits; nothing else does
    released = box.pipeline.tick(box.ts + 1.0)
    assert [r.outcome for r in released] == [Outcome.ACCEPT]
    (alert,) = box.alerts()
    assert alert["alert"]["signature_id"] == 9500003 and alert["av"]["reason"] == "timeout"
    assert alert["fileinfo"]["filename"] == "file.bin"
    assert box.do_io() == []  # the late result changes nothing


def test_overloaded_clamd_passes_with_an_alarm(clamd: Any, monkeypatch: pytest.MonkeyPatch):
    box = Box(clamd.socket, max_concurrent=1)
    monkeypatch.setitem(clamd_client._IN_FLIGHT, clamd.socket, 1)  # one scan already in flight
    _passed(box.download(EICAR))
    (alert,) = box.alerts()
    assert alert["av"]["reason"] == "overloaded"


def test_encrypted_archive_alarm_and_configurable_block(clamd: Any, tmp_path: Path):
    if shutil.which("zip") is None:
        pytest.skip("zip is not installed")
    import subprocess

    (tmp_path / "a.txt").write_text("secret\n" * 50)
    subprocess.run(["zip", "-q", "-P", "pw", str(tmp_path / "enc.zip"), "a.txt"], cwd=tmp_path, check=True)
    data = (tmp_path / "enc.zip").read_bytes()
    box = Box(clamd.socket)
    _passed(box.download(data, name="enc.zip"))
    (alert,) = box.alerts()
    assert alert["alert"]["signature_id"] == 9500005 and alert["av"]["virus"].startswith("Heuristics.Encrypted")
    assert alert["fileinfo"]["magic"] == "Zip archive data"
    box = Box(clamd.socket, encrypted_action="block")
    _blocked(box.download(data, name="enc.zip"))


def test_hold_latency_is_small(box: Box):
    """The measurement quoted in docs/engines.md: how long the last packet of a file waits."""
    for i in range(20):  # other bytes each time: a file seen before passes from the verdict cache, unscanned
        box.download(bytes(range(256)) * 400 + b"%d" % i)  # 100 KiB, clean
    box.io_ms.sort()
    median, worst = box.io_ms[len(box.io_ms) // 2], box.io_ms[-1]
    print(f"hold latency for a 100 KiB file: median {median:.1f} ms, max {worst:.1f} ms")
    assert median < 200


def test_new_database_folder_makes_clamd_reload_without_a_gap(clamd: Any, tmp_path: Path):
    """A new av bundle: the performer sends RELOAD once; scans during the reload still find EICAR
    (clamd keeps the old database until the new one is loaded)."""
    first = Box(clamd.socket, database=str(clamd.database))
    _blocked(first.download(EICAR))
    newdb = tmp_path / "av-2"
    shutil.copytree(clamd.database, newdb)
    second = Box(clamd.socket, database=str(newdb))
    for _ in range(10):
        _blocked(second.download(EICAR))
    log = Path(clamd.base) / "clamd.log"
    deadline = time.monotonic() + 20
    while "Database correctly reloaded" not in log.read_text(errors="replace") and time.monotonic() < deadline:
        _blocked(second.download(EICAR))
        time.sleep(0.05)
    assert "Database correctly reloaded" in log.read_text(errors="replace")
    assert log.read_text(errors="replace").count("Database correctly reloaded") == 1  # once, not per scan


def test_a_request_kept_for_a_late_result_holds_no_file(clamd: Any):
    box = Box(clamd.socket)
    box.auto_io = False
    box.download(b"A" * 50_000)
    ((hold_id, req),) = box.pipeline.take_io()
    assert len(req.args["data"]) == 50_000
    result, error = perform(req)
    assert error is None and result["status"] == "OK"
    assert len(req.args["data"]) == 0  # the performer took the bytes: nothing left to keep
    box.pipeline.io_done(hold_id, result, error, box.ts)


def test_the_starter_database_goes_live_as_an_av_bundle_and_reaches_the_engine(tmp_path: Path, clamd: Any):
    """The updater has the av engine check a staged bundle (the starter database), makes it live,
    and the overlay puts its folder into engines.av.database; a bundle with a foreign file is refused."""
    import yaml

    from agent.engines import build_engines, load_effective_config
    from agent.lifecycle.updates import BundleUpdater, Staged

    path = tmp_path / "vcr-agent.yaml"
    path.write_text(yaml.safe_dump({
        "settings_sheet": {"management_ip": "192.0.2.2/24", "gateway": "192.0.2.1"},
        "logging": {"dir": str(tmp_path / "log")}, "bridge": {"state_file": str(tmp_path / "bridge.json")},
        "dataplane": {"workers": 1},
        "engines": {"firewall": {"enabled": False}, "av": {"enabled": True, "clamd_socket": clamd.socket}},
        "updates": {"enabled": True, "bundles_dir": str(tmp_path / "bundles")},
    }))
    updater = BundleUpdater(load_effective_config(path))
    (tmp_path / "bundles" / "av").mkdir(parents=True)

    def staged(version: str, extra: dict[str, str] | None = None) -> Staged:
        folder = tmp_path / "staging" / version
        shutil.copytree(clamd.database, folder)
        for name, text in (extra or {}).items():
            (folder / name).write_text(text)
        return Staged("av", version, folder, {"kind": "av", "version": version, "files": []}, "0" * 64, 1)

    res = updater.activate(staged("2026.12.7"))
    assert res.status == "activated" and res.rules_loaded >= 90
    cfg = load_effective_config(path)
    assert cfg.engines["av"]["database"].endswith("/av/2026.12.7")
    (engine,) = build_engines(cfg)
    assert engine.summary()["signatures"] == {"av": "2026.12.7"}
    res = updater.activate(staged("2026.12.8", {"run.sh": "#!/bin/sh\n"}))
    assert (res.status, res.reason) == ("rejected", "load_failed") and "not a ClamAV database" in res.detail
    assert updater.live_versions() == {"av": "2026.12.7"}


def test_a_multipart_form_upload_is_scanned_file_by_file(box: Box):
    """A browser's form upload: a clean part and a ClamAV test file under a Japanese name."""
    clean = bytes(range(256)) * 40
    virus = (TESTFILES / "clam.zip").read_bytes()
    name = "見積書.zip"
    body = (b"------WebKitFormBoundaryQ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n"
            b"------WebKitFormBoundaryQ\r\nContent-Disposition: form-data; name=\"a\"; filename=\"data.bin\"\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n" + clean + b"\r\n"
            b"------WebKitFormBoundaryQ\r\nContent-Disposition: form-data; name=\"b\"; filename=\"" + name.encode("cp932")
            + b"\"\r\nContent-Type: application/zip\r\n\r\n" + virus + b"\r\n------WebKitFormBoundaryQ--\r\n")
    box.connect()
    head = (b"POST /form HTTP/1.1\r\nHost: up.example\r\nContent-Type: multipart/form-data; "
            b"boundary=----WebKitFormBoundaryQ\r\nContent-Length: %d\r\n\r\n" % len(body))
    last = _blocked(box.client(head) + box.client(body))
    assert [i.kind for i in last.inject] == [InjectKind.HTTP_BLOCK_PAGE]
    (alert,) = box.alerts()
    assert alert["fileinfo"]["filename"] == name and alert["av"]["virus"].startswith("VCR.Test.")
    assert alert["fileinfo"]["sha256"] == hashlib.sha256(virus).hexdigest() and alert["fileinfo"]["magic"] == "Zip archive data"
    infos = {i["fileinfo"]["filename"]: i["fileinfo"] for i in box.fileinfos()}
    assert infos["data.bin"]["sha256"] == hashlib.sha256(clean).hexdigest() and set(infos) == {"data.bin", name}


def test_a_range_holding_eicar_is_blocked_and_a_clean_range_passes_marked_partial(box: Box):
    for body, blocked in ((EICAR, True), (b"\0" * 500, False)):
        box.events.clear()
        box.connect()
        box.client(b"GET /big.iso HTTP/1.1\r\nHost: files.example\r\nRange: bytes=2000-\r\n\r\n")
        head = (b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 2000-%d/900000\r\nContent-Length: %d\r\n\r\n"
                % (2000 + len(body) - 1, len(body)))
        rels = box.server(head) + box.server(body)
        (info,) = box.fileinfos()
        assert info["fileinfo"]["state"] == "TRUNCATED"
        assert info["fileinfo"]["partial"]["not_scanned"] == f"bytes 0-1999, bytes {2000 + len(body)}-899999"
        if blocked:
            _blocked(rels)
            (alert,) = box.alerts()
            assert alert["av"]["virus"].startswith("Eicar") and alert["av"]["not_scanned"].startswith("bytes 0-1999")
        else:
            _passed(rels)
            assert box.alerts() == []


def test_a_body_delimited_by_the_close_is_judged_on_the_servers_fin(box: Box):
    """No Content-Length, no chunking: the file ends when the server closes. The FIN's packet is
    the one held; an infected file never completes at the PC (the FIN is dropped, both sides reset)."""
    for body, infected in ((EICAR, True), (b"plain text, nothing here\n" * 40, False)):
        box.events.clear()
        box.connect()
        box.client(b"GET /old.com HTTP/1.0\r\nHost: files.example\r\n\r\n")
        assert all(r.outcome is Outcome.ACCEPT for r in box.server(b"HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n" + body))
        (rel,) = box._send(True, FIN | ACK, box.sseq, box.cseq)
        if infected:
            assert rel.outcome is Outcome.DROP and [i.kind for i in rel.inject] == [InjectKind.TCP_RESET]
            (alert,) = box.alerts()
            assert alert["av"]["action"] == "blocked" and "note" not in alert["av"]
        else:
            assert rel.outcome is Outcome.ACCEPT and box.alerts() == []
            (info,) = box.fileinfos()
            assert info["fileinfo"]["state"] == "CLOSED" and info["fileinfo"]["size"] == len(body)


def _zlib(data: bytes) -> bytes:
    return __import__("zlib").compress(data)


def _raw_deflate(data: bytes) -> bytes:
    import zlib
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


# Content-Encoding value and how the body is encoded (the last coding listed is the outermost)
ENCODINGS: dict[str, tuple[bytes, Any]] = {
    "identity": (b"", lambda d: d),
    "gzip": (b"gzip", gzip.compress),
    "deflate-zlib": (b"deflate", _zlib),
    "deflate-raw": (b"deflate", _raw_deflate),
    "layered gzip,deflate": (b"gzip, deflate", lambda d: _zlib(gzip.compress(d))),
    "layered deflate,gzip": (b"deflate, gzip", lambda d: gzip.compress(_raw_deflate(d))),
}


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_every_test_file_and_eicar_in_every_encoding_is_blocked_and_clean_files_pass(box: Box, encoding: str,
                                                                                     chunked: bool):
    """All of clamav-testfiles and EICAR, in each Content-Encoding (layered too), with a length or
    chunked: each is blocked, named by its own signature; a clean file of each type passes."""
    value, encode = ENCODINGS[encoding]
    headers = b"Content-Encoding: " + value + b"\r\n" if value else b""
    files = {"eicar.com": EICAR, **{p.name: p.read_bytes() for p in sorted(TESTFILES.iterdir()) if p.is_file()}}
    missed = []
    for name, data in files.items():
        box.events.clear()
        rels = box.download(encode(data), name=name, headers=headers, chunked=chunked)
        alerts = box.alerts()
        if not (rels[-1].outcome is Outcome.DROP and len(alerts) == 1 and alerts[0]["fileinfo"]["filename"] == name
                and alerts[0]["fileinfo"]["sha256"] == hashlib.sha256(data).hexdigest()):
            missed.append(f"{name}: {rels[-1].outcome} {[a['av'] for a in alerts]}")
    clean = (TESTFILES / "clam.exe").read_bytes() + b"\0" * 512  # an executable whose hash is not listed
    box.events.clear()
    _passed(box.download(encode(clean), name="clean.exe", headers=headers, chunked=chunked))
    (info,) = box.fileinfos()
    assert box.alerts() == [] and info["fileinfo"]["sha256"] == hashlib.sha256(clean).hexdigest()
    assert not missed, "\n".join(missed)


def test_a_large_download_is_streamed_to_clamd_while_it_arrives(box: Box):
    """From 256 KiB on, the body goes to clamd as it arrives; the last packet waits only for the
    verdict. An infected large download is blocked, a clean one passes, chunked and gzip too."""
    big = b"MZ" + bytes(range(256)) * 2000 + b"VCR-AV-PE-MARKER" + bytes(range(256)) * 200  # ~560 KB, body signature
    clean = bytes(range(256)) * 2400
    for body, infected, kw in ((big, True, {}), (clean, False, {}), (big, True, {"chunked": True}),
                               (gzip.compress(clean + b"gz"), False, {"headers": b"Content-Encoding: gzip\r\n"})):
        box.events.clear()
        rels = box.download(body, name="setup.exe", **kw)
        av = next(e for e in box.pipeline.engines if e.name == "av")
        assert av.counters.get("stream_verdicts", 0) >= 1
        if infected:
            _blocked(rels)
            (alert,) = box.alerts()
            assert alert["av"]["virus"].startswith("VCR.Test.PEMarker")
        else:
            _passed(rels)
            assert box.alerts() == []
    assert av.counters["stream_verdicts"] == 4 and av.counters["streamed"] == 4


def test_a_stream_that_fails_falls_back_to_a_whole_file_scan(clamd: Any, tmp_path: Path):
    """clamd goes away while the download streams (here: the stream's socket is wrong from the
    start): the file is scanned whole at its end, on the right socket."""
    box = Box(clamd.socket)
    real = clamd_client.stream

    def broken(args):
        return real({**args, "socket": str(tmp_path / "gone.sock")})

    from agent.dataplane import performers
    performers.PERFORMERS["clamd_stream"] = broken
    try:
        big = b"MZ" + bytes(range(256)) * 2000 + b"VCR-AV-PE-MARKER"
        _blocked(box.download(big, name="setup.exe"))
        (alert,) = box.alerts()
        assert alert["av"]["virus"].startswith("VCR.Test.PEMarker")
    finally:
        performers.PERFORMERS["clamd_stream"] = performers.clamd_stream


def test_corrupt_executable_alarm_and_configurable_block(clamd: Any):
    """A PE whose header claims 65535 sections: clamd (AlertBrokenExecutables, the shipped
    clamd.conf) answers Heuristics.Broken.Executable; the default passes it with an alarm,
    corrupt_action: block blocks it."""
    import struct

    exe = bytearray((TESTFILES / "clam.exe").read_bytes() + b"\0" * 700)
    struct.pack_into("<H", exe, struct.unpack_from("<I", exe, 0x3C)[0] + 6, 0xFFFF)
    box = Box(clamd.socket)
    _passed(box.download(bytes(exe), name="tool.exe"))
    (alert,) = box.alerts()
    assert alert["alert"]["signature_id"] == 9500006 and alert["av"]["virus"].startswith("Heuristics.Broken.Executable")
    assert alert["alert"]["action"] == "allowed" and alert["av"]["reason"] == "corrupt"
    box = Box(clamd.socket, corrupt_action="block")
    _blocked(box.download(bytes(exe), name="tool.exe"))
    assert box.alerts()[0]["av"]["action"] == "blocked"


def test_a_download_beyond_max_streams_waits_for_a_free_stream(clamd: Any):
    """A stream is not refused at a burst of downloads (a file past the body limit is kept only by
    its stream): it waits for a free one, its bytes queued, and gets its verdict; only when
    STREAM_WAITERS per stream already wait is a download not streamed."""
    from filters.av.engine import ScanFeed

    args = {"socket": clamd.socket, "max_streams": 1, "timeout": 10.0}
    first, second = ScanFeed(), ScanFeed()
    assert clamd_client.stream({**args, "feed": first})["status"] == "STREAMING"
    deadline = time.monotonic() + 5
    while clamd_client._STREAMS.get(clamd.socket, 0) < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert clamd_client.stream({**args, "feed": second})["status"] == "STREAMING"
    second.put(EICAR)
    second.close()
    time.sleep(0.3)
    assert not second.done.is_set()  # the only stream is the first download's
    waiting = [ScanFeed() for _ in range(clamd_client.STREAM_WAITERS - 1)]
    for feed in waiting:
        assert clamd_client.stream({**args, "feed": feed})["status"] == "STREAMING"
    refused = ScanFeed()
    assert clamd_client.stream({**args, "feed": refused})["status"] == "NOT_STARTED" and refused.failed
    for feed in waiting:
        feed.abort()
    first.put(b"clean text " * 100)
    first.close()
    assert first.done.wait(10) and first.result is not None and first.result["status"] == "OK"
    assert second.done.wait(10) and second.result is not None
    assert second.result["virus"].startswith("Eicar-Test-Signature")
    for feed in waiting:
        assert feed.done.wait(5) and feed.error == "aborted"
    assert clamd_client._STREAMS.get(clamd.socket, 0) == 0 and clamd_client._WAITING.get(clamd.socket, 0) == 0
