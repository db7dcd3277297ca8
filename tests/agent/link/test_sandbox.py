"""The box's sandbox client against the real reference center (``lab.center``) over HTTPS: an unknown
file submitted and judged, the verdict shared by a second box, the verdict cache kept across a
restart, the retro alarm when the verdict comes after the file passed, and the bounds."""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import pytest

from agent.config import parse_config
from agent.dataplane.performers import perform
from agent.link import sandbox as client
from agent.link.center import activate
from filters.av.engine import FileData
from filters.engine import EngineContext, IORequest
from lab.sandbox_samples import pe

testing = pytest.importorskip("lab.center", reason="the reference center (opscenter/) is not there")


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory):
    c = testing.start_center(tmp_path_factory.mktemp("center"), "127.0.0.1:0",
                             settings={"checkin_rate": 0, "alarm_rate": 0, "sandbox_workers": 1})
    yield c
    c.close()


def box(ops, tmp: Path, name: str) -> dict[str, Any]:
    cfg = parse_config({"logging": {"dir": str(tmp / name / "log")}, "center": {
        "enabled": True, "url": ops.url, "ca_file": str(ops.ca), "state_file": str(tmp / name / "center.json"),
        "portcheck": {"enabled": False}, "ntp_servers": []}})
    serial = f"VCR-SB-{name}-{tmp.name}"
    activate(cfg, code=ops.issue_code(f"C-{serial}", serial=serial), serial=serial)
    return {"url": ops.url, "ca_file": str(ops.ca), "auth_file": str(tmp / name / "center.json"),
            "cache_file": str(tmp / name / "verdicts.db"), "poll_interval": 0.3, "verdict_wait": 60}


def check(args: dict[str, Any], data: bytes, **more: Any) -> tuple[Any, str | None]:
    return perform(IORequest("sandbox_check", {**args, "sha256": hashlib.sha256(data).hexdigest(),
                                               "data": FileData(data), "name": "setup.exe",
                                               "lan_host": "192.168.10.21", "magic": "PE32", **more}))


def test_unknown_file_is_submitted_judged_and_shared(ops, tmp_path: Path):
    a, b = box(ops, tmp_path, "a"), box(ops, tmp_path, "b")
    sample = pe(salt=tmp_path.name.encode())
    result, error = check(a, sample)
    assert error is None, error
    assert result["verdict"] == "malicious" and result["submitted"] is True and result["source"] == "center"
    assert any("VCR_Sandbox_Test_Marker" in r for r in result["reasons"])
    # the second box: the center already knows it, nothing is submitted again
    result, error = check(b, sample)
    assert error is None and result["verdict"] == "malicious" and result["submitted"] is False
    from opscenter.sandbox import queue

    [row] = [r for r in queue.listing(ops.db) if r["sha256"] == hashlib.sha256(sample).hexdigest()]
    assert row["submissions"] == 1 and row["status"] == "done"
    # a restart of the box: the verdict comes from its cache on disk, the center is not asked
    client._CACHES.clear()
    result, error = check({**a, "url": "https://127.0.0.1:1"}, sample)
    assert error is None and result["source"] == "cache" and result["verdict"] == "malicious"
    # a third box that cached the file as clean learns the verdict from its next check-in
    c3 = box(ops, tmp_path, "c3")
    client.cache_at(c3["cache_file"]).put(hashlib.sha256(sample).hexdigest(), "clean", 3600)
    from tests.opscenter.helpers import checkin_body

    token = __import__("json").loads(Path(c3["auth_file"]).read_text())["token"]
    reply = ops.session().post(f"{ops.url}/api/v1/checkin", json=checkin_body(),
                               headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
    assert client.apply_verdicts({**c3, "enabled": True}, reply["sandbox"]["verdicts"]) >= 1
    assert client.apply_verdicts(c3, {"../x": "malicious", "a" * 64: "evil", 5: None}) == 0  # malformed: skipped
    result, error = check({**c3, "url": "https://127.0.0.1:1"}, sample)
    assert error is None and result["verdict"] == "malicious" and result["source"] == "cache"
    clean = pe(marker=False, salt=tmp_path.name.encode())
    result, error = check(a, clean)
    assert error is None and (result["verdict"], result["submitted"]) == ("clean", True)


def test_retro_alarm_when_the_verdict_comes_after_the_pass(ops, tmp_path: Path):
    from filters.pipeline import Outcome
    from filters.sandbox.engine import Sandbox
    from tests.filters.sandbox.test_engine import Conn

    args = box(ops, tmp_path, "r")
    sb = Sandbox()
    sb.configure({"enabled": True, "url": args["url"], "ca_file": args["ca_file"], "auth_file": args["auth_file"],
                  "cache_file": args["cache_file"], "hold_timeout": 0.1, "poll_interval": 0.3}, EngineContext())
    conn = Conn(sb)
    sample = pe(salt=b"retro" + tmp_path.name.encode())
    assert conn.get(sample) == []
    ((hold_id, req),) = conn.pipe.take_io()
    done: list[Any] = []
    t = threading.Thread(target=lambda: done.append(perform(req)))
    t.start()
    (rel,) = conn.pipe.tick(conn.ts + 1)  # no verdict within hold_timeout: passed, with an alarm
    assert rel.outcome is Outcome.ACCEPT and conn.eve[-1]["alert"]["signature_id"] == 9600003
    t.join(60)
    result, error = done[0]
    assert error is None and result["verdict"] == "malicious"
    conn.pipe.io_done(hold_id, result, error, conn.ts + 2)
    retro = conn.eve[-1]
    assert retro["alert"]["signature_id"] == 9600004 and retro["sandbox"]["lan_host"] == "192.0.2.10"
    # and the next download of it is blocked at once
    again = Conn(sb)
    (rel,) = again.get(sample)
    assert rel.outcome is Outcome.DROP and again.pipe.take_io() == []


def test_bounds_and_refusals(ops, tmp_path: Path):
    args = box(ops, tmp_path, "c")
    big = pe(salt=b"big", extra=b"\0" * 5000)
    result, error = check(args, big, max_submit_size=4096)
    assert error is None and result["verdict"] == "unknown" and result["reasons"] == ["too large to submit"]
    from opscenter.sandbox import queue

    assert hashlib.sha256(big).hexdigest() not in {r["sha256"] for r in queue.listing(ops.db)}
    _, error = check({**args, "url": ops.url.replace("https://", "http://")}, pe(salt=b"h"))
    assert error is not None and "not https://" in error
    other = testing.init_ca(tmp_path / "other-pki", ["localhost"], ["127.0.0.1"])  # another CA: not trusted
    _, error = check({**args, "ca_file": str(other.ca_cert)}, pe(salt=b"ca"))
    assert error is not None and "SSL" in error
    _, error = check({**args, "auth_file": str(tmp_path / "none.json")}, pe(salt=b"tok"))
    assert error is not None and "401" in error
    client._SUBMITS.tokens = 0.0  # the box's own submission rate
    result, error = check({**args, "submit_rate": 0.001, "submit_burst": 1}, pe(salt=b"rate"))
    assert error is None and result["reasons"] == ["submission rate of the box exceeded"]
    client._SUBMITS.tokens = None
