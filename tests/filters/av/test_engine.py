"""The antivirus engine alone (sans-IO): its settings, its bundle check and its verdicts on scan
results given by hand (the real clamd: tests/agent/dataplane/test_antivirus.py)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from filters.av.engine import Antivirus, check_database
from filters.engine import Action, BundleError, ConfigError, EngineContext, Hold, InjectKind
from filters.flow import FlowTable
from filters.packet import ACK, PSH
from filters.pipeline import Outcome, Pipeline
from tests.filters.factories import HttpConn

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def engine(**section: Any) -> Antivirus:
    av = Antivirus()
    av.configure({"enabled": True, **section}, EngineContext())
    return av


def test_defaults():
    av = engine()
    c = av.conf
    assert (c.max_size, c.scan_timeout, c.max_concurrent) == (10 << 20, 5.0, 4)
    assert (c.encrypted_action, c.corrupt_action, c.monitor_only) == ("alert", "alert", False)
    assert c.scan_uploads and c.scan_downloads and c.clamd_socket == "/run/vcr-clamd/clamd.sock"
    assert all(f.description for f in type(c).model_fields.values())


@pytest.mark.parametrize("section, key", [
    ({"max_size": 0}, "max_size"), ({"scan_timeout": 100}, "scan_timeout"), ({"encrypted_action": "drop"}, "encrypted_action"),
    ({"colour": 1}, "colour"), ({"max_concurrent": "4"}, "max_concurrent"),
])
def test_bad_settings_name_the_key(section: dict[str, Any], key: str):
    with pytest.raises(ConfigError) as err:
        engine(**section)
    assert err.value.key == key


def test_bundle_check(tmp_path: Path):
    db = tmp_path / "db"
    db.mkdir()
    (db / "a.hsb").write_text("275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f:68:Eicar-Test-Signature\n")
    (db / "b.ndb").write_text("X.Test:0:*:41424344\n")
    (db / "manifest.json").write_text("{}")
    assert check_database(db) == (2, 2)
    load = Antivirus.load_bundle("av", db, {"rule_count": 2}, {}, EngineContext())
    assert load.rules_loaded == 2
    assert Antivirus.apply_bundle({"enabled": True}, "av", db) == {"enabled": True, "database": str(db)}
    (db / "c.ndb").write_text("broken line\n")
    with pytest.raises(BundleError, match="c.ndb:1"):
        check_database(db)
    (db / "c.ndb").unlink()
    (db / "evil.sh").write_text("rm -rf /\n")
    with pytest.raises(BundleError, match="not a ClamAV database"):
        check_database(db)


def test_the_starter_database_passes_the_bundle_check(tmp_path: Path):
    from shutil import which
    import subprocess

    if which("sigtool") is None or not Path("/usr/share/clamav-testfiles").is_dir():
        if os.environ.get("CI"):
            pytest.fail("CLAMAV TOOLS MISSING IN CI (scripts/setup.sh installs clamav-daemon clamav-testfiles)")
        pytest.skip("CLAMAV TEST SKIPPED: sigtool or clamav-testfiles missing")
    root = Path(__file__).resolve().parents[3]
    subprocess.run([str(root / "config/av/build-starter-db.sh"), str(tmp_path / "db")], check=True, capture_output=True)
    count, files = check_database(tmp_path / "db")
    n = len([p for p in Path("/usr/share/clamav-testfiles").iterdir() if p.is_file()])
    assert files == 3 and count == 2 * (n + 1) + 4  # sha256 + md5 of each test file and EICAR; 4 body sigs


class Conn(HttpConn):
    def get(self, body: bytes) -> list[Any]:  # type: ignore[override]
        return super().get(body, url=b"h.example/x.zip", split=True)


@pytest.mark.parametrize("section, virus, sid, blocked", [
    ({}, "Heuristics.Encrypted.Zip", 9500005, False),
    ({"encrypted_action": "block"}, "Heuristics.Encrypted.Zip", 9500005, True),
    ({}, "Heuristics.Broken.Executable", 9500006, False),
    ({"corrupt_action": "block"}, "Heuristics.Broken.Executable", 9500006, True),
    ({"monitor_only": True}, "Win.Trojan.Agent", 9500001, False),
    ({}, "Win.Trojan.Agent", 9500001, True),
])
def test_verdicts_on_scan_results(section: dict[str, Any], virus: str, sid: int, blocked: bool):
    conn = Conn(engine(**section))
    assert conn.get(b"PK\x03\x04" + b"\0" * 100) == []  # held
    ((hold_id, req),) = conn.pipe.take_io()
    assert req.kind == "clamd_scan" and len(req.args["data"]) == 104
    (rel,) = conn.pipe.io_done(hold_id, {"status": "FOUND", "virus": virus}, None, conn.ts)
    assert rel.outcome is (Outcome.DROP if blocked else Outcome.ACCEPT)
    if blocked:
        assert [i.kind for i in rel.inject] == [InjectKind.TCP_RESET]


def test_uploads_and_downloads_can_be_left_unscanned():
    conn = Conn(engine(scan_downloads=False))
    (rel,) = conn.get(EICAR)
    assert rel.outcome is Outcome.ACCEPT and conn.pipe.take_io() == []


def test_hold_carries_a_timeout_alarm():
    av = engine(scan_timeout=0.3)
    conn = Conn(av)
    conn.get(EICAR)
    flow = next(iter(conn.pipe._holds.values())).hold
    assert isinstance(flow, Hold) and flow.timeout == 0.3 and flow.on_timeout is Action.PASS
    assert flow.timeout_verdict is not None and flow.timeout_verdict.rule_id == 9500003


def test_the_files_of_a_multipart_upload_are_scanned_under_one_hold_and_an_infected_one_blocks():
    conn = Conn(engine())
    body = (b"--b\r\nContent-Disposition: form-data; name=\"a\"; filename=\"memo.txt\"\r\n\r\nclean text\r\n"
            b"--b\r\nContent-Disposition: form-data; name=\"b\"; filename=\"tool.com\"\r\n\r\n" + EICAR + b"\r\n--b--\r\n")
    req = (b"POST /up HTTP/1.1\r\nHost: h.example\r\nContent-Type: multipart/form-data; boundary=b\r\n"
           b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert conn.send(False, ACK | PSH, conn.cseq, conn.sseq, req) == []  # held
    ((hold_id, io),) = conn.pipe.take_io()
    assert [f.name for f in io.args["files"]] == ["memo.txt", "tool.com"]
    assert [p.take() for p in io.args["parts"]] == [b"clean text", EICAR]
    result = {"status": "OK", "results": [{"status": "OK", "virus": ""},
                                          {"status": "FOUND", "virus": "Eicar-Test-Signature"}]}
    events: list[dict[str, Any]] = []
    conn.pipe.emit = events.append
    (rel,) = conn.pipe.io_done(hold_id, result, None, conn.ts)
    assert rel.outcome is Outcome.DROP and [i.kind for i in rel.inject] == [InjectKind.HTTP_BLOCK_PAGE]
    alerts = [e for e in events if e.get("event_type") == "alert"]
    assert [a["fileinfo"]["filename"] for a in alerts] == ["tool.com"]
    assert {e["fileinfo"]["filename"] for e in events if e.get("event_type") == "fileinfo"} == {"memo.txt", "tool.com"}


def test_an_infected_range_is_blocked_and_the_alarm_says_what_was_not_scanned():
    conn = Conn(engine())
    req = b"GET /big.bin HTTP/1.1\r\nHost: h.example\r\nRange: bytes=1000-1067\r\n\r\n"
    conn.send(False, ACK | PSH, conn.cseq, conn.sseq, req)
    conn.cseq += len(req)
    head = b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 1000-1067/5000\r\nContent-Length: 68\r\n\r\n"
    conn.send(True, ACK | PSH, conn.sseq, conn.cseq, head)
    conn.sseq += len(head)
    assert conn.send(True, ACK | PSH, conn.sseq, conn.cseq, EICAR) == []
    ((hold_id, io),) = conn.pipe.take_io()
    events: list[dict[str, Any]] = []
    conn.pipe.emit = events.append
    (rel,) = conn.pipe.io_done(hold_id, {"status": "FOUND", "virus": "Eicar-Test-Signature"}, None, conn.ts)
    assert rel.outcome is Outcome.DROP
    (alert,) = [e for e in events if e.get("event_type") == "alert"]
    assert alert["fileinfo"]["state"] == "TRUNCATED" and alert["fileinfo"]["partial"]["range"] == "bytes 1000-1067/5000"
    assert alert["av"]["not_scanned"] == "bytes 0-999, bytes 1068-4999"


def test_a_file_cut_short_when_its_flow_expires_is_still_scanned_and_alarmed():
    """The flow went idle in the middle of a download: no packet is left to hold, but what arrived
    is scanned (detached I/O) and an infection raises the alarm, saying it could not be blocked."""
    conn = Conn(engine())
    req = b"GET /x.exe HTTP/1.1\r\nHost: h.example\r\n\r\n"
    conn.send(False, ACK | PSH, conn.cseq, conn.sseq, req)
    conn.cseq += len(req)
    conn.send(True, ACK | PSH, conn.sseq, conn.cseq, b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + EICAR)
    assert conn.pipe.take_io() == []  # not complete yet
    events: list[dict[str, Any]] = []
    conn.pipe.emit = events.append
    assert conn.pipe.tick(conn.ts + 100_000) == []  # the flow expires
    ((hold_id, io),) = conn.pipe.take_io()
    assert io.detached and io.args["data"].take() == EICAR
    assert conn.pipe.io_done(hold_id, {"status": "FOUND", "virus": "Eicar-Test-Signature"}, None, conn.ts) == []
    (alert,) = [e for e in events if e.get("event_type") == "alert"]
    assert alert["av"]["action"] == "passed" and "before the scan" in alert["av"]["note"]
    assert alert["fileinfo"]["state"] == "TRUNCATED" and alert["av"]["not_scanned"].startswith("the rest of the file")


def test_a_scan_feed_queues_at_most_its_backlog_and_nothing_once_clamd_failed():
    from filters.av.engine import FEED_BACKLOG, ScanFeed

    slow = ScanFeed()
    slow.put(b"a" * (FEED_BACKLOG // 2))
    assert slow.take(0.1) == b"a" * (FEED_BACKLOG // 2)  # taken: room again
    slow.put(b"b" * (FEED_BACKLOG // 2))
    slow.put(b"c" * (FEED_BACKLOG // 2 + 1))  # clamd reads slower than the download comes: dropped
    assert slow.aborted and slow.failed and slow.take(0.1) is None
    failed = ScanFeed()
    failed.put(b"x" * 10)
    failed.finish(error="clamd: connection reset")
    failed.put(b"y" * 1000)
    assert failed.fed == 10 and failed.failed


def test_a_scan_feed_waits_until_the_sender_caught_up():
    import threading

    from filters.av.engine import ScanFeed

    feed = ScanFeed()
    feed.put(b"z" * 4096)
    assert not feed.wait_below(1024, 0.05)  # nobody takes: no room within the time
    threading.Timer(0.05, feed.take, args=(1.0,)).start()
    assert feed.wait_below(1024, 5.0) and feed.backlog == 0


def test_a_download_faster_than_clamd_is_held_until_the_stream_caught_up():
    """Past the body limit the file is not kept: when clamd takes it slower than it arrives, the
    packet that pushed the backlog past FEED_HIGH is held (clamd_drain) instead of piling up."""
    from filters.app.layer import AppLayer
    from filters.av.engine import FEED_HIGH, Antivirus
    from filters.flow import FlowTable
    from filters.pipeline import Pipeline
    from tests.filters.app.test_files import Conversation, download

    av = Antivirus()
    av.configure({"enabled": True, "clamd_socket": "/nonexistent.sock"})
    pipe = Pipeline([av], FlowTable(), app=AppLayer())
    conv = Conversation(pipe)
    request, response = download(b"\x01" * (6 << 20))
    conv.client(request)
    conv.server(response[:(3 << 20)])
    reqs = pipe.take_io()
    kinds = [r.kind for _, r in reqs]
    assert kinds[0] == "clamd_stream" and "clamd_drain" in kinds, kinds
    feed = reqs[0][1].args["feed"]
    assert av.counters["stream_backpressure"] == 1
    assert FEED_HIGH < feed.backlog < FEED_HIGH + 65536  # the packets behind the hold wait uninspected
    drain_id = next(i for i, r in reqs if r.kind == "clamd_drain")
    feed.take(1.0)  # clamd caught up
    released = pipe.io_done(drain_id, {"status": "DRAINED"}, None, conv.ts)
    assert released and feed.fed > FEED_HIGH + 65536  # the queued packets were inspected and fed


def _scanned(conn: Conn, body: bytes, result: dict[str, Any]) -> list[Any]:
    """A download held for its scan, answered with ``result``: the releases."""
    assert conn.get(body) == []  # held
    ((hold_id, req),) = conn.pipe.take_io()
    assert req.kind == "clamd_scan"
    return conn.pipe.io_done(hold_id, result, None, conn.ts)


CLEAN = {"status": "OK", "virus": ""}


def test_a_file_found_clean_passes_at_once_when_it_comes_again_with_its_fileinfo():
    """The verdict cache: the same bytes, with the same database, are not held for clamd again (other
    connections, other PCs of the worker); the fileinfo record is written all the same."""
    av = engine()
    body = b"GIF89a" + bytes(range(256)) * 40
    (rel,) = _scanned(Conn(av), body, CLEAN)
    assert rel.outcome is Outcome.ACCEPT
    for c in (Conn(av), Conn(av)):
        (rel,) = c.get(body)
        assert rel.outcome is Outcome.ACCEPT and c.pipe.take_io() == []
        infos = [e for e in c.eve if e.get("event_type") == "fileinfo"]
        assert infos[-1]["fileinfo"]["sha256"] == hashlib.sha256(body).hexdigest()
        assert infos[-1]["fileinfo"]["state"] == "CLOSED" and infos[-1]["http"]["url"] == "/x.zip"
        assert not [e for e in c.eve if e.get("event_type") == "alert"]
    assert av.counters["cache_hits"] == 2 and av.counters["scans"] == 1
    assert _scanned(Conn(av), body + b"!", CLEAN)  # other bytes: scanned


@pytest.mark.parametrize("result, error", [
    ({"status": "FOUND", "virus": "Eicar-Test-Signature"}, None),
    ({"status": "FOUND", "virus": "Heuristics.Encrypted.Zip"}, None),
    ({"status": "FOUND", "virus": "Heuristics.Broken.Executable"}, None),
    (None, "ClamdError: clamd: connection refused"),
    ({"status": "ERROR", "error": "size limit"}, None),
])
def test_only_clean_verdicts_are_cached(result: dict[str, Any] | None, error: str | None):
    """Whatever blocks or alarms goes to clamd every time: the cache can only spare clean scans."""
    av = engine()
    for _ in range(2):
        conn = Conn(av)
        assert conn.get(EICAR) == []
        ((hold_id, _req),) = conn.pipe.take_io()
        conn.pipe.io_done(hold_id, result, error, conn.ts)
    assert av.counters.get("cache_hits", 0) == 0 and av.counters["scans"] == 2


def test_a_new_database_the_ttl_or_a_disabled_cache_scan_the_file_again(tmp_path: Path):
    body = b"%PDF-1.4 " + b"x" * 3000
    av = engine(database=str(tmp_path / "v1"))
    _scanned(Conn(av), body, CLEAN)
    (rel,) = Conn(av).get(body)
    assert rel.outcome is Outcome.ACCEPT
    av.configure({"enabled": True, "database": str(tmp_path / "v2")}, EngineContext())  # a new av bundle
    _scanned(Conn(av), body, CLEAN)
    conn = Conn(av)
    assert conn.get(body) and conn.pipe.take_io() == []
    off = engine(verdict_cache=0)
    _scanned(Conn(off), body, CLEAN)
    _scanned(Conn(off), body, CLEAN)


def test_the_verdict_cache_expires_and_keeps_the_most_recent_entries():
    from filters.av.engine import VerdictCache

    cache = VerdictCache(2, ttl=10.0)
    a, b, c = (("a" * 64, 1, ""), ("b" * 64, 1, ""), ("c" * 64, 1, ""))
    cache.add(a, 0.0)
    cache.add(b, 0.0)
    assert cache.hit(a, 5.0)  # a is now the most recent
    cache.add(c, 5.0)  # b goes
    assert not cache.hit(b, 5.0) and cache.hit(a, 9.9) and cache.hit(c, 9.9)
    assert not cache.hit(a, 10.0) and len(cache) == 1  # expired, dropped
    assert not cache.hit(("a" * 64, 2, ""), 6.0)  # same hash, other size: another key


def test_parts_of_files_are_not_cached_and_a_late_clean_verdict_is():
    """A range (206) says nothing of the whole file; a scan that answered after its hold timed out
    still fills the cache."""
    av = engine()
    for _ in range(2):
        conn = Conn(av)
        req = b"GET /big.bin HTTP/1.1\r\nHost: h.example\r\nRange: bytes=0-99\r\n\r\n"
        conn.send(False, ACK | PSH, conn.cseq, conn.sseq, req)
        conn.cseq += len(req)
        head = b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-99/5000\r\nContent-Length: 100\r\n\r\n"
        assert conn.send(True, ACK | PSH, conn.sseq, conn.cseq, head + b"r" * 100) == []
        ((hold_id, _req),) = conn.pipe.take_io()
        conn.pipe.io_done(hold_id, CLEAN, None, conn.ts)
    assert av.counters.get("cache_hits", 0) == 0
    slow = engine(scan_timeout=0.2)
    conn = Conn(slow)
    assert conn.get(b"late" * 100) == []
    ((hold_id, _req),) = conn.pipe.take_io()
    (rel,) = conn.pipe.tick(conn.ts + 1.0)  # timed out: passed with the alarm
    assert rel.outcome is Outcome.ACCEPT
    assert conn.pipe.io_done(hold_id, CLEAN, None, conn.ts + 2.0) == []
    again = Conn(slow)
    (rel,) = again.get(b"late" * 100)
    assert rel.outcome is Outcome.ACCEPT and again.pipe.take_io() == [] and slow.counters["cache_hits"] == 1


def test_scans_count_their_hold_time():
    av = engine()
    _scanned(Conn(av), b"q" * 500, CLEAN)
    assert sum(v for k, v in av.counters.items() if k.startswith("hold_ms.") and k != "hold_ms.total") == 1


def test_the_verdict_cache_changes_no_verdict_and_no_record():
    """Differential: the same downloads (clean ones again and again, infected ones, other bytes)
    through an engine with the cache and one without give the same outcomes, alarms and fileinfo
    records; only the scans differ."""
    import random

    rng = random.Random(15)
    bodies = [b"clean %d " % i * 50 for i in range(5)] + [EICAR, b"pad " * 10 + EICAR]
    downloads = [rng.choice(bodies) for _ in range(80)]

    def run(av: Antivirus) -> list[Any]:
        seen: list[Any] = []
        for body in downloads:
            conn = Conn(av)
            rels = conn.get(body)
            for hold_id, req in conn.pipe.take_io():
                data = req.args["data"].take()
                result = {"status": "FOUND", "virus": "Eicar-Test-Signature"} if EICAR in data else CLEAN
                rels = conn.pipe.io_done(hold_id, result, None, conn.ts)
            records = [(e["event_type"], e.get("alert", {}).get("signature_id"), e["fileinfo"]["sha256"],
                        e["fileinfo"]["state"]) for e in conn.eve if e.get("event_type") in ("alert", "fileinfo")]
            seen.append(([r.outcome for r in rels], [tuple(i.kind for i in r.inject) for r in rels], records))
        return seen

    cached, uncached = engine(), engine(verdict_cache=0)
    assert run(cached) == run(uncached)
    assert cached.counters["cache_hits"] > 40 and cached.counters["scans"] < uncached.counters["scans"] == 80


@pytest.mark.parametrize("size", [0, 3, 65536, 65537, 200_000])
def test_a_file_framed_in_one_send_is_the_same_instream_as_sent_chunk_by_chunk(size: int):
    """filters/av/clamd.py sends small files in one buffer: the bytes clamd gets are those of
    the command, ``send_chunks`` and ``end_stream``."""
    import socket

    from filters.av import clamd

    data = os.urandom(size)
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"zINSTREAM\0")
        clamd.send_chunks(a, data)
        clamd.end_stream(a)
        a.shutdown(socket.SHUT_WR)
        chunked = b"".join(iter(lambda: b.recv(1 << 16), b""))
    assert clamd.framed(b"INSTREAM", data) == chunked


def test_all_feeds_of_a_worker_share_one_budget_and_give_it_back():
    """Downloads waiting for a free clamd stream keep queueing what arrives: together they stay
    within ``max_stream_memory``; the feed that would go past it is dropped, and every byte taken,
    dropped or finished returns to the budget."""
    from filters.av.engine import FeedBudget, ScanFeed

    budget = FeedBudget(3 << 20)
    waiting = [ScanFeed(budget) for _ in range(3)]
    for feed in waiting[:2]:
        feed.put(b"a" * (1 << 20))
        feed.put(b"b" * (512 << 10))
    assert budget.queued == 3 << 20 and not any(f.aborted for f in waiting)
    waiting[2].put(b"c")  # one byte too many: this download stops streaming
    assert waiting[2].aborted and waiting[2].take(0.1) is None and budget.refused == 1
    assert budget.queued == 3 << 20
    assert waiting[0].take(0.1) == b"a" * (1 << 20) + b"b" * (512 << 10)  # clamd took one: room again
    assert budget.queued == 3 << 19
    late = ScanFeed(budget)
    late.put(b"d" * (1 << 20))
    waiting[1].abort()
    late.finish(result={"status": "OK"})
    assert budget.queued == 0
