"""The sandbox engine alone (sans-IO): which files it judges, its settings, and its verdicts on
answers given by hand (the real center: tests/agent/link/test_sandbox.py)."""
from __future__ import annotations

import io
import zipfile
from typing import Any

import pytest

from filters.app.magic import detect
from filters.engine import ConfigError, EngineContext, InjectKind
from filters.packet import ACK, PSH
from filters.pipeline import Outcome
from filters.sandbox.engine import Sandbox
from filters.sandbox.types import code_kind
from lab.sandbox_samples import elf, pe
from tests.filters.factories import HttpConn as Conn

CENTER = {"url": "https://center.example:8443", "ca_file": "/etc/vcr-agent/center-ca.crt"}


def engine(**section: Any) -> Sandbox:
    sb = Sandbox()
    sb.configure({"enabled": True, **CENTER, **section}, EngineContext())
    return sb


def _zip(**members: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n, d in members.items():
            z.writestr(n.replace("_", "."), d)
    return buf.getvalue()


@pytest.mark.parametrize("data, name, kind", [
    (pe(), b"a.bin", "pe"), (elf(), b"", "elf"), (b"\xcf\xfa\xed\xfe" + b"\0" * 60, b"", "macho"),
    (b"#!/bin/sh\necho hi\n", b"x", "script"), (b"Write-Host hi\r\n", b"run.ps1", "script"),
    (b"%PDF-1.7\n<< /OpenAction << /S /JavaScript /JS (app.alert(1)) >> >>", b"", "pdf"),
    (_zip(setup_exe=b"MZ..."), b"x.zip", "archive"), (_zip(word_vbaProject_bin=b"x"), b"x.docm", "office"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 100 + "_VBA_PROJECT".encode("utf-16-le"), b"", "office"),
    (b"7z\xbc\xaf\x27\x1c" + b"\0" * 30, b"", "archive"),
])
def test_code_carrying_kinds(data: bytes, name: bytes, kind: str):
    assert code_kind(data, detect(data), name) == kind


@pytest.mark.parametrize("data, name", [
    (b"%PDF-1.7\n<< /Type /Catalog >>", b"a.pdf"), (_zip(readme_txt=b"hi"), b"a.zip"), (b"hello\n", b"a.txt"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, b"x.exe"), (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 100, b"a.doc"),
    (b"PK\x03\x04broken", b"a.zip"), (b"<html><script>x</script>", b"a.js"),
])
def test_files_without_code_are_not_judged(data: bytes, name: bytes):
    assert code_kind(data, detect(data), name) is None


def test_settings():
    c = engine().conf
    assert (c.hold_timeout, c.hold_until_verdict, c.verdict_wait, c.submit) == (10.0, False, 600.0, True)
    assert all(f.description for f in type(c).model_fields.values())
    for section, key in [({"url": "http://center"}, "url"), ({"ca_file": ""}, "ca_file"),
                         ({"kinds": ["pe", "docx"]}, "kinds[1]"), ({"hold_timeout": 0}, "hold_timeout")]:
        with pytest.raises(ConfigError) as err:
            engine(**section)
        assert err.value.key == key


@pytest.mark.parametrize("split", [False, True])
def test_malicious_answer_blocks_with_the_page_or_resets(split: bool):
    conn = Conn(engine())
    assert conn.get(pe(), split=split) == []  # held
    ((hold_id, req),) = conn.pipe.take_io()
    assert req.kind == "sandbox_check" and req.args["url"] == CENTER["url"] and req.args["name"] == "setup.exe"
    assert req.args["lan_host"] == "192.0.2.10" and len(req.args["data"]) == len(pe())
    (rel,) = conn.pipe.io_done(hold_id, {"verdict": "malicious", "reasons": ["yara X (+100)"], "source": "center"},
                               None, conn.ts)
    assert rel.outcome is Outcome.DROP
    assert [i.kind for i in rel.inject] == [InjectKind.TCP_RESET if split else InjectKind.HTTP_BLOCK_PAGE]
    if not split:
        html = rel.inject[0].args["html"]
        assert "危険なファイル" in html and "setup.exe" in html and "危険 / malicious" in html
    alert = next(e for e in conn.eve if e["event_type"] == "alert")
    assert alert["alert"]["signature_id"] == 9600001 and alert["sandbox"]["reasons"] == ["yara X (+100)"]
    assert alert["fileinfo"]["sha256"] == req.args["sha256"] and alert["sandbox"]["action"] == "blocked"
    # known now: the next download of the same file is blocked without asking
    again = Conn(conn.pipe.engines[0])
    (rel,) = again.get(pe())
    assert rel.outcome is Outcome.DROP and again.pipe.take_io() == []


@pytest.mark.parametrize("answer, outcome, sid", [
    ({"verdict": "clean"}, Outcome.ACCEPT, None),
    ({"verdict": "suspicious", "reasons": ["PDF with JavaScript (+30)"]}, Outcome.ACCEPT, 9600002),
    ({"verdict": "unknown", "reasons": ["too large to submit"]}, Outcome.ACCEPT, 9600005),
])
def test_other_answers_pass(answer: dict, outcome: Outcome, sid: int | None):
    conn = Conn(engine())
    conn.get(elf())
    ((hold_id, _),) = conn.pipe.take_io()
    (rel,) = conn.pipe.io_done(hold_id, answer, None, conn.ts)
    assert rel.outcome is outcome
    alerts = [e for e in conn.eve if e["event_type"] == "alert"]
    assert [a["alert"]["signature_id"] for a in alerts] == ([sid] if sid else [])


def test_block_suspicious_and_monitor_only():
    conn = Conn(engine(block_suspicious=True))
    conn.get(elf())
    ((hold_id, _),) = conn.pipe.take_io()
    assert conn.pipe.io_done(hold_id, {"verdict": "suspicious"}, None, conn.ts)[0].outcome is Outcome.DROP
    conn = Conn(engine(monitor_only=True))
    conn.get(elf())
    ((hold_id, _),) = conn.pipe.take_io()
    assert conn.pipe.io_done(hold_id, {"verdict": "malicious"}, None, conn.ts)[0].outcome is Outcome.ACCEPT


def test_timeout_passes_with_an_alarm_and_a_late_bad_verdict_is_a_retro_alarm():
    conn = Conn(engine(hold_timeout=0.5))
    conn.get(pe())
    ((hold_id, _),) = conn.pipe.take_io()
    (rel,) = conn.pipe.tick(conn.ts + 1)
    assert rel.outcome is Outcome.ACCEPT
    assert conn.eve[-1]["alert"]["signature_id"] == 9600003
    conn.pipe.io_done(hold_id, {"verdict": "malicious", "reasons": ["yara VCR_Sandbox_Test_Marker (+100)"]}, None,
                      conn.ts + 30)
    retro = conn.eve[-1]
    assert retro["alert"]["signature_id"] == 9600004 and retro["alert"]["severity"] == 1
    assert "delivered to 192.0.2.10" in retro["alert"]["signature"] and retro["sandbox"]["lan_host"] == "192.0.2.10"
    assert retro["src_ip"] in ("192.0.2.10", "198.51.100.10") and retro["fileinfo"]["filename"] == "setup.exe"


def test_hold_until_verdict_blocks_when_none_comes():
    conn = Conn(engine(hold_until_verdict=True, verdict_wait=30))
    conn.get(pe())
    assert conn.pipe.tick(conn.ts + 20) == []  # still held past hold_timeout
    (rel,) = conn.pipe.tick(conn.ts + 31)
    alerts = [e for e in conn.eve if e["event_type"] == "alert"]
    assert rel.outcome is Outcome.DROP and [a["alert"]["signature_id"] for a in alerts] == [9600006]
    conn = Conn(engine(hold_until_verdict=True))  # the center gave up (pending, unknown): blocked too
    conn.get(pe())
    ((hold_id, _),) = conn.pipe.take_io()
    (rel,) = conn.pipe.io_done(hold_id, {"verdict": "pending"}, None, conn.ts)
    assert rel.outcome is Outcome.DROP and conn.eve[-2]["alert"]["signature_id"] == 9600006


def test_center_failure_passes_with_an_alarm_and_plain_files_are_not_held():
    conn = Conn(engine())
    conn.get(pe())
    ((hold_id, _),) = conn.pipe.take_io()
    (rel,) = conn.pipe.io_done(hold_id, None, "ConnectionError: refused", conn.ts)
    assert rel.outcome is Outcome.ACCEPT and conn.eve[-1]["sandbox"]["reason"] == "unavailable"
    conn = Conn(engine())
    (rel,) = conn.get(b"just text\n" * 10)
    assert rel.outcome is Outcome.ACCEPT and conn.pipe.take_io() == []
    conn = Conn(engine(kinds=["pdf"]))
    (rel,) = conn.get(pe())
    assert rel.outcome is Outcome.ACCEPT and conn.pipe.take_io() == []


def test_after_the_antivirus_in_turn():
    from filters.av.engine import Antivirus

    av = Antivirus()
    av.configure({"enabled": True})
    conn = Conn(av, engine())
    conn.get(pe())
    ((h1, r1),) = conn.pipe.take_io()
    assert r1.kind == "clamd_scan"
    assert conn.pipe.io_done(h1, {"status": "OK"}, None, conn.ts) == []  # clean for clamd: the sandbox's turn
    ((h2, r2),) = conn.pipe.take_io()
    assert r2.kind == "sandbox_check"
    (rel,) = conn.pipe.io_done(h2, {"verdict": "malicious"}, None, conn.ts)
    assert rel.outcome is Outcome.DROP


def test_an_executable_past_the_body_limit_is_judged_by_the_hash_of_the_whole_file():
    """sid 9600005 used to be all a 300 KiB executable got (cut at the 100 KiB body limit, its hash
    not the file's): the sandbox declares its file depth, the whole file is hashed as it passes."""
    import hashlib

    big = pe(salt=b"\x00" * (300 << 10))
    sb = engine()
    conn = Conn(sb)
    assert conn.pipe.app is not None and conn.pipe.app.settings.file_depth == sb.conf.max_submit_size
    req_line = b"GET /dl/setup.exe HTTP/1.1\r\nHost: files.example\r\n\r\n"
    conn.send(False, ACK | PSH, conn.cseq, conn.sseq, req_line)
    conn.cseq += len(req_line)
    wire = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big) + big
    for i in range(0, len(wire), 1400):
        conn.send(True, ACK | PSH, conn.sseq, conn.cseq, wire[i:i + 1400])
        conn.sseq += len(wire[i:i + 1400])
    ((hold_id, req),) = conn.pipe.take_io()
    assert req.args["sha256"] == hashlib.sha256(big).hexdigest()
    assert not req.args["submit"] and len(req.args["data"]) == 0  # only its head is kept: looked up, not submitted
    assert sb.counters.get("unsubmitted.streamed") == 1
    (rel,) = conn.pipe.io_done(hold_id, {"verdict": "malicious", "reasons": ["known (+100)"], "source": "center"},
                               None, conn.ts)
    assert rel.outcome is Outcome.DROP
