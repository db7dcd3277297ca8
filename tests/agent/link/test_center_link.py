"""The link against the real reference center (``lab.center``) on 127.0.0.1 over HTTPS:
activation and replacement, check-ins, exactly-once alarm delivery across a center restart, 401
handling without re-enrollment, clock skew, Retry-After and the drain rate limit."""
from __future__ import annotations

import collections
import re
import time
from pathlib import Path

import pytest

from agent.link import center as center_mod
from agent.link.center import ActivationError, CenterClient, CenterLink, Unreachable, activate, load_state
from agent.link.spool import TokenBucket
from agent.config import parse_config
from tests.waiting import wait

testing = pytest.importorskip("lab.center", reason="the reference center (opscenter/) is not there")


def box_config(ops, tmp: Path, **center: object):
    section = {
        "enabled": True, "url": ops.url, "ca_file": str(ops.ca), "state_file": str(tmp / "lib" / "center.json"),
        "heartbeat_interval": 1, "backoff_base": 0.2, "backoff_cap": 2, "request_timeout": 5,
        "spool": {"path": str(tmp / "lib" / "spool.db")}, "drain": {"rate": 1000, "batch": 100},
        "portcheck": {"enabled": False}, "ntp_servers": [],
    }
    for k, v in center.items():
        section[k] = {**section[k], **v} if isinstance(v, dict) else v  # type: ignore[dict-item]
    return parse_config({"logging": {"dir": str(tmp / "log")}, "center": section})


def alert(n: int, sev: int = 2) -> dict:
    return {"timestamp": "2026-11-25T19:08:56.000000+0000", "event_type": "alert", "n": n,
            "alert": {"action": "blocked", "gid": 1, "signature_id": 9000001, "rev": 1, "signature": f"test {n}",
                      "category": "Firewall policy", "severity": sev, "engine": "firewall"}}


def activated(ops, tmp: Path, contract: str, **center: object):
    cfg = box_config(ops, tmp, **center)
    serial = f"VCR-{contract}"
    state = activate(cfg, code=ops.issue_code(contract, serial=serial), serial=serial)
    return cfg, state


def stored_ids(ops, device_id: str) -> collections.Counter:
    return collections.Counter(a["event_id"] for a in ops.alarms(device_id, limit=100_000))


def test_activation_credential_and_replacement(ops, tmp_path: Path):
    cfg, state = activated(ops, tmp_path / "a", "C-ACT")
    path = Path(cfg.center.state_file)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    stored = load_state(path)
    assert stored["device_id"] == state["device_id"] and stored["token"] and stored["contract_id"] == "C-ACT"
    assert stored["license"]["term_end"] and abs(state["clock_offset_s"]) < 5
    assert ops.device(state["device_id"])["serial"] == "VCR-C-ACT"
    # activating again is refused locally: the box never enrolls twice by accident
    with pytest.raises(ActivationError, match="--replace"):
        activate(cfg, code="AAAA-BBBB", serial="VCR-C-ACT")
    # a used code is refused by the center, in Japanese and English
    other = box_config(ops, tmp_path / "b")
    with pytest.raises(ActivationError, match="アクティベーションコードが無効です .* not valid"):
        activate(other, code="0000-0000-0000-0000", serial="VCR-NEW")
    # a second box with a normal code for the same contract: 409 explains the replacement flow
    with pytest.raises(ActivationError, match="vcr-opscenter replace CONTRACT"):
        activate(other, code=ops.issue_code("C-ACT"), serial="VCR-NEW")
    # the explicit replacement flow: the operator's replacement code, `activate --replace`
    new = activate(other, code=ops.replace("C-ACT"), serial="VCR-NEW", replace=True)
    assert new["contract_id"] == "C-ACT" and new["device_id"] != state["device_id"]
    assert ops.device(state["device_id"])["status"] == "revoked"


def test_wrong_ca_is_refused(ops, tmp_path: Path):
    bogus = tmp_path / "other-ca.pem"
    bogus.write_bytes(Path("/etc/ssl/certs/ca-certificates.crt").read_bytes()
                      if Path("/etc/ssl/certs/ca-certificates.crt").exists() else b"")
    c = CenterClient(ops.url, str(bogus), timeout=5)
    with pytest.raises(Unreachable) as err:
        c.server_time()
    assert err.value.tls
    c.close()


def test_checkin_and_alarms_exactly_once_across_a_center_restart(ops, tmp_path: Path):
    cfg, state = activated(ops, tmp_path, "C-LINK")
    dev = state["device_id"]
    link = CenterLink(cfg)
    link.start()
    try:
        wait(lambda: link.checkins_ok >= 1, what="first check-in")
        d = ops.device(dev)
        assert d["last_checkin"] and d["status"] == "online" and d["health"]["uptime_s"] > 0
        assert d["versions"]["agent"] and d["spool"]["pending"] >= 0
        for i in range(50):
            link.spool.submit(alert(i))
        wait(lambda: sum(stored_ids(ops, dev).values()) >= 50, what="first 50 alarms")
        ops.stop()
        for i in range(50, 250):  # produced while the center is down
            link.spool.submit(alert(i, sev=1 + i % 4))
        wait(lambda: link.status()["state"] == "unreachable", what="link notices the outage")
        assert link.spool.flush(10) and link.spool.pending() >= 200
        time.sleep(1.5)  # a few failed tries, backing off
        ops.start()
        wait(lambda: link.spool.pending() == 0, timeout=30, what="backlog drained")
        ids = stored_ids(ops, dev)
        assert sum(ids.values()) == 250 and max(ids.values()) == 1  # every alarm once (the center dedups re-sends)
        got = sorted(a["event"]["n"] for a in ops.alarms(dev, limit=1000))
        assert got == list(range(250))
        # the check-in loop notices the center is back on its own (backed-off) schedule
        wait(lambda: link.status()["state"] == "ok", timeout=30, what="check-ins resume")
        assert link.status()["sent"]["events"] >= 250
    finally:
        link.stop()


def test_401_keeps_the_credential_and_never_reenrolls(ops, tmp_path: Path):
    cfg, state = activated(ops, tmp_path, "C-401")
    before = Path(cfg.center.state_file).read_bytes()
    link = CenterLink(cfg)
    link.start()
    try:
        wait(lambda: link.checkins_ok >= 1, what="first check-in")
        ops.revoke(state["device_id"])
        link.spool.submit(alert(1))
        wait(lambda: link.status()["state"] == "credential_rejected", what="credential rejected")
        n_devices = len(ops.devices(include_revoked=True))
        time.sleep(3)  # keeps backing off, never activates
        assert len(ops.devices(include_revoked=True)) == n_devices
        assert Path(cfg.center.state_file).read_bytes() == before
        assert link.spool.pending() >= 2  # the alarm and the credential alarm wait in the spool
        assert not link.status()["clock_problem"]
        failed = link.checkins_failed
        assert failed < 10  # backing off (base 0.2 s, cap 2 s), not hammering
    finally:
        link.stop()


def test_clock_skew_is_detected_and_reported(ops, tmp_path: Path):
    cfg, state = activated(ops, tmp_path, "C-CLOCK", clock_skew_s=-3600)
    link = CenterLink(cfg)
    link.start()
    try:
        wait(lambda: link.status()["clock_problem"], what="clock problem")
        st = link.status()
        assert st["clock_offset_s"] == pytest.approx(3600, abs=5)
        # the clock alarm reaches the center; the box stays the same device
        alarm = wait(lambda: [a for a in ops.alarms(state["device_id"]) if a["event"].get("agent", {}).get("problem") == "clock"],
                     what="clock alarm at the center")[0]
        assert re.match(r"VCR agent: clock is off by \+(3599|3600|3601) s", alarm["signature"])
        assert [d["device_id"] for d in ops.devices() if d["contract_id"] == "C-CLOCK"] == [state["device_id"]]
        # revoked while the clock is wrong: the 401 is reported as a clock problem
        ops.revoke(state["device_id"])
        wait(lambda: link.status()["state"] == "clock", what="401 with a wrong clock")
        assert "clock is off" in link.status()["problem_detail"]
    finally:
        link.stop()


def test_retry_after_and_drain_rate(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path):
    # a center that takes one alarm batch every 2 s per device: the box honours the 429s
    slow = testing.start_center(tmp_path_factory.mktemp("slow"), "127.0.0.1:0", heartbeat_interval=5,
                                settings={"checkin_rate": 0, "alarm_rate": 0.5, "alarm_burst": 1})
    try:
        cfg, state = activated(slow, tmp_path / "a", "C-429", drain={"rate": 1000, "batch": 10})
        link = CenterLink(cfg)
        link.spool.put_many([alert(i) for i in range(40)])
        link.start()
        wait(lambda: link.spool.pending() == 0, timeout=60, what="drain under 429")
        link.stop()
        ids = stored_ids(slow, state["device_id"])
        assert sum(ids.values()) == 40 and max(ids.values()) == 1  # each event exactly once
        assert link.sent_batches == 4  # 4 batches of 10, the center taking one every 2 s ...
        assert 1 <= link.retry_later <= 12  # ... said 429 to the others: Retry-After waited out, not hammered
    finally:
        slow.close()


class RecordingBucket(TokenBucket):
    """The drain's token bucket, recording what it allowed: (tokens available, events taken)."""

    made: list[RecordingBucket] = []

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.takes: list[tuple[float, int]] = []
        self.waits: list[float] = []
        RecordingBucket.made.append(self)

    def wait_time(self, n: int) -> float:
        w = super().wait_time(n)
        self.waits.append(w)
        return w

    def take(self, n: int) -> None:
        self._refill()
        self.takes.append((self.tokens, n))
        super().take(n)


def test_drain_rate_limit(ops, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The drain sends a batch only when the token bucket holds it (rate 200/s, a burst of one batch);
    the bucket's arithmetic is test_spool's, the rate achieved a performance figure."""
    monkeypatch.setattr(center_mod, "TokenBucket", RecordingBucket)
    RecordingBucket.made.clear()
    cfg, state = activated(ops, tmp_path, "C-RATE", drain={"rate": 200, "batch": 50})
    link = CenterLink(cfg)
    link.spool.put_many([alert(i) for i in range(1000)])
    link.start()
    wait(lambda: link.spool.pending() == 0, timeout=60, what="drain")
    link.stop()
    assert sum(stored_ids(ops, state["device_id"]).values()) == 1000
    (bucket,) = RecordingBucket.made
    assert (bucket.rate, bucket.burst) == (200, 50)
    assert sum(n for _, n in bucket.takes) == 1000 and all(n <= 50 for _, n in bucket.takes)
    assert all(tokens >= n - 1e-9 for tokens, n in bucket.takes), "a batch went without the tokens for it"
    assert any(w > 0 for w in bucket.waits), "the limit never held the drain back"


def test_unlimited_drain_delivers_everything(ops, tmp_path: Path):
    cfg, state = activated(ops, tmp_path, "C-FAST", drain={"rate": 100000, "batch": 500})
    link = CenterLink(cfg)
    link.spool.put_many([alert(i) for i in range(5000)])
    link.start()
    wait(lambda: link.spool.pending() == 0, timeout=120, what="drain")
    link.stop()
    assert sum(stored_ids(ops, state["device_id"]).values()) == 5000
    assert link.sent_events == 5000 and 10 <= link.sent_batches  # batches of up to 500
