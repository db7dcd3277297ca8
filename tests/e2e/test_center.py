"""End to end: the box and the real reference operations center over real HTTPS in the lab.

The center (``vcr-opscenter serve``, its own CA) runs on the lab's ops host (198.51.100.80:443) as
``center.vcr.example``; the lab DNS server (198.51.100.53, the shipped settings sheet's DNS) knows
that name and ``ntp.vcr.example`` (198.51.100.123, an SNTP responder); the ops host listens on
80, 22, 6060 and 6061 too, so the port check of table 4 is real. The agent resolves the center's
name through the settings sheet's DNS (``bridge up`` writes the UTM namespace's resolv.conf).

Issue 5 §7: activation; the heartbeat at the center; an alarm from real blocked traffic at the
center; the center stopped and restarted with no alarm lost or duplicated; the agent killed with -9
in the middle of a batch with nothing lost; a wrong clock detected and reported without
re-enrollment; the port check naming the features a blocked port breaks.
"""
from __future__ import annotations

import collections
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agent.link.center import load_state
from lab.netns import Lab
from lab.agentrun import (
    CENTER_NAME, NTP_NAME, LabAgent, center_overrides, serve_lab_dns, start_lab_center, utm_resolv_conf)
from tests.waiting import wait

pytestmark = pytest.mark.lab
testing = pytest.importorskip("lab.center", reason="CENTER E2E SKIPPED: the reference center (opscenter/) is missing")

TELNET_SIG = "VCR firewall: block outbound telnet"


@pytest.fixture(scope="module")
def center(office: Lab, tmp_path_factory: pytest.TempPathFactory):
    serve_lab_dns(office, ntp=True)
    for port in (80, 22, 6060, 6061):  # the other endpoints of table 4
        office.start_tcp_listener("ops", port)
    c = start_lab_center(office, tmp_path_factory.mktemp("center"), heartbeat_interval=2)
    yield c
    c.close()


class Box:
    """One VCR box in the lab: its config points at the center; state and spool survive restarts."""

    def __init__(self, lab: Lab, center: Any, workdir: Path, **center_keys: Any) -> None:
        self.lab, self.center, self.workdir = lab, center, workdir
        center_keys.setdefault("ntp_servers", [NTP_NAME])
        self.overrides = {
            **center_overrides(center, workdir, url=f"https://{CENTER_NAME}", **center_keys),
            "bridge.resolv_conf": str(utm_resolv_conf(lab)),
        }
        self.agent = LabAgent(lab, workdir, overrides=self.overrides)
        self.serial = f"VCR116W-{workdir.name[-12:]}".replace("_", "-")

    def start(self, *, bridge: bool = True) -> None:
        if bridge:
            self.agent.bridge_up()
        self.agent.start()

    def restart(self) -> None:
        self.agent = LabAgent(self.lab, self.workdir, overrides=self.overrides)
        self.agent.start()

    def activate(self, contract: str) -> str:
        code = self.center.issue_code(contract, serial=self.serial)
        res = self.agent.cli("activate", code, "--serial", self.serial)
        assert res.returncode == 0, res.stderr
        assert "アクティベーション完了 / activated" in res.stdout
        state = load_state(self.workdir / "lib" / "center.json")
        assert state is not None
        return str(state["device_id"])

    def link(self) -> dict[str, Any]:
        return (self.agent.status() or {}).get("center") or {}

    def eve(self) -> list[dict[str, Any]]:
        return self.agent.alarms()

    def stop(self) -> None:
        self.agent.kill()
        self.agent.bridge_down()


@pytest.fixture
def box(office: Lab, center: Any, tmp_path: Path, request: pytest.FixtureRequest):
    b = Box(office, center, tmp_path, **(getattr(request, "param", None) or {}))
    try:
        yield b
    finally:
        b.stop()


def blocked_telnet(lab: Lab, n: int) -> None:
    """n real connection attempts from pc1 to the web server's telnet port: the firewall rejects them."""
    code = ("import socket,sys\n"
            "for _ in range(int(sys.argv[2])):\n"
            " s=socket.socket(); s.settimeout(2)\n"
            " try: s.connect((sys.argv[1], 23)); print('open')\n"
            " except ConnectionRefusedError: print('refused')\n"
            " except OSError: print('timeout')\n"
            " s.close()\n")
    res = lab.exec("pc1", [sys.executable, "-c", code, lab.hosts["web"].ipv4, str(n)], timeout=60)
    assert res.stdout.split() == ["refused"] * n, res.stdout


def canon(rec: dict[str, Any]) -> str:
    return json.dumps(rec, sort_keys=True, ensure_ascii=False)


def at_center(center: Any, device_id: str) -> collections.Counter:
    return collections.Counter(canon(a["event"]) for a in center.alarms(device_id, limit=100_000))


def assert_exactly_once(box: Box, device_id: str) -> None:
    """Every EVE record the agent wrote is stored at the center exactly once, and nothing else."""
    local = collections.Counter(canon(r) for r in box.eve())
    wait(lambda: box.link().get("spool", {}).get("pending") == 0, 60, "the spool to drain")
    remote = wait(lambda: (lambda r: r if sum(r.values()) >= sum(local.values()) else None)(at_center(box.center, device_id)),
                  30, "every alarm at the center")
    assert remote == local
    ids = collections.Counter(a["event_id"] for a in box.center.alarms(device_id, limit=100_000))
    assert max(ids.values()) == 1 and sum(ids.values()) == sum(local.values())


def health_body(center: Any, device_id: str) -> dict[str, Any]:
    from sqlalchemy import select

    from opscenter.db import health

    with center.db.read() as conn:
        row = conn.execute(select(health.c.body).where(health.c.device_id == device_id)).first()
    return row[0] if row else {}


def test_activation_heartbeat_and_alarm_from_blocked_traffic(box: Box, office: Lab, center: Any):
    box.start()
    wait(lambda: box.link().get("state") == "not_activated", what="link waiting for activation")
    blocked_telnet(office, 1)  # an alarm before activation waits in the spool
    wait(lambda: box.link().get("spool", {}).get("pending", 0) >= 1, what="alarm spooled")
    device_id = box.activate("C-E2E-1")
    dev = wait(lambda: (d := center.device(device_id)) and d["last_checkin"] and d, what="heartbeat at the center")
    assert dev["status"] == "online" and dev["serial"] == box.serial
    body = wait(lambda: (b := health_body(center, device_id)) and b.get("portcheck") and b, what="port check in the heartbeat")
    h = body["health"]
    assert {"lan0", "wan0", "br0"} <= set(h["interfaces"]) and h["interfaces"]["br0"]["rx_packets"] > 0
    assert h["uptime_s"] > 0 and 0 <= h["memory_percent"] <= 100 and len(h["load"]) == 3
    assert body["engines"]["ips"]["summary"]["rules_loaded"] > 0 and "firewall" in body["engines"]
    assert body["signatures"]["ips"].startswith("sha256:") and body["agent_version"]
    assert body["portcheck"]["ok"] is True, json.dumps(body["portcheck"]["fixes"], ensure_ascii=False)
    assert center.device(device_id)["portcheck"]["ok"] is True
    # an alarm from real blocked traffic, after activation too
    blocked_telnet(office, 1)
    got = wait(lambda: [a for a in center.alarms(device_id) if a["signature"] == TELNET_SIG], what="telnet alarm at the center")
    ev = got[0]["event"]
    assert ev["src_ip"] == office.hosts["pc1"].ipv4 and ev["dest_port"] == 23 and ev["alert"]["action"] == "blocked"
    assert got[0]["severity"] == ev["alert"]["severity"]
    assert_exactly_once(box, device_id)
    # status.json is rewritten every few seconds: wait for one written after a successful check-in
    st = wait(lambda: (s := box.link()) and s.get("state") == "ok" and s.get("last_checkin_ok") and s,
              what="link state ok in the status")
    assert st["activated"] and st["device_id"] == device_id
    assert st["license"]["term_end"]


def test_center_restart_loses_and_duplicates_nothing(box: Box, office: Lab, center: Any):
    box.start()
    device_id = box.activate("C-E2E-2")
    wait(lambda: box.link().get("checkins_ok", 0) >= 1, what="first check-in")
    center.stop()
    try:
        blocked_telnet(office, 25)
        wait(lambda: box.link().get("state") == "unreachable", what="the link noticing the outage")
        wait(lambda: box.link()["spool"]["pending"] >= 25, what="alarms spooled while the center is down")
        time.sleep(3)  # a few failed tries, backing off
    finally:
        center.start()
    wait(lambda: box.link().get("state") == "ok", 30, "the link back")
    assert_exactly_once(box, device_id)


def test_agent_killed_mid_batch_loses_nothing(box: Box, office: Lab, center: Any):
    box.start()
    device_id = box.activate("C-E2E-3")
    wait(lambda: box.link().get("checkins_ok", 0) >= 1, what="first check-in")
    assert center.proc is not None
    pgid = center.proc.pid
    os.killpg(pgid, signal.SIGSTOP)  # the center takes requests and never answers: a batch hangs in flight
    try:
        blocked_telnet(office, 15)
        wait(lambda: box.link().get("spool", {}).get("in_flight", 0) > 0, what="a batch in flight")
        box.agent.kill()  # kill -9 in the middle of the batch: sent, not acknowledged
    finally:
        os.killpg(pgid, signal.SIGCONT)
    time.sleep(1.0)  # the center may still store the half-delivered batch: the box re-sends it anyway
    box.restart()
    wait(lambda: box.link().get("state") == "ok", 30, "the restarted link")
    assert_exactly_once(box, device_id)
    sent = box.link()["sent"]
    print(f"\nafter kill -9 mid-batch: re-sent {sent['events']} events, {sent['duplicates']} already at the center")


@pytest.mark.parametrize("box", [{"clock_skew_s": -3600}], indirect=True)
def test_wrong_clock_is_reported_without_reenrollment(box: Box, office: Lab, center: Any):
    """The box's clock is an hour behind (center.clock_skew_s, a test-only key: the system clock
    cannot be changed safely and the reference center has no fake-time option)."""
    box.start()
    device_id = box.activate("C-E2E-4")
    cred_before = (box.workdir / "lib" / "center.json").read_bytes()
    st = wait(lambda: (s := box.link()) and s.get("clock_problem") and s, what="clock problem in status.json")
    assert st["clock_offset_s"] == pytest.approx(3600, abs=5)
    alarm = wait(lambda: [a for a in center.alarms(device_id) if (a["event"].get("agent") or {}).get("problem") == "clock"],
                 what="clock alarm at the center")[0]
    assert alarm["signature"].startswith("VCR agent: clock is off by +") and alarm["event"]["agent"]["source"] == "operations center"
    # the operator revokes the token while the clock is wrong: the 401 is explained by the clock
    center.revoke(device_id)
    wait(lambda: box.link().get("state") == "clock", what="401 reported as a clock problem")
    time.sleep(4)  # the link backs off and keeps the credential; it never activates by itself
    assert (box.workdir / "lib" / "center.json").read_bytes() == cred_before
    same_contract = [d for d in center.devices(include_revoked=True) if d["contract_id"] == "C-E2E-4"]
    assert [d["device_id"] for d in same_contract] == [device_id]
    assert "clock" in box.link()["problem_detail"]


def test_portcheck_names_the_features_a_firewall_breaks(box: Box, office: Lab, center: Any):
    rules = [["iptables", "-I", "FORWARD", "-p", "tcp", "--dport", "6060", "-j", "DROP"],
             ["iptables", "-I", "FORWARD", "-p", "udp", "--dport", "123", "-j", "DROP"]]
    for r in rules:
        assert office.exec("router", r).returncode == 0
    try:
        box.start()
        device_id = box.activate("C-E2E-5")
        res = box.agent.cli("portcheck", "--json")
        assert res.returncode == 1, res.stderr
        out = json.loads(res.stdout)
        bad = {f["feature"]: f["failed"] for f in out["features"] if not f["ok"]}
        assert bad == {"webfilter": ["tcp/6060"], "monitoring": ["udp/123"]}
        fixes = {f["check"]: f for f in out["fixes"]}
        assert fixes["tcp/6060"]["ja"] == f"ファイアウォールで {CENTER_NAME} への TCP 6060 の発信を許可してください"
        assert fixes["tcp/6060"]["en"] == f"Allow outbound TCP 6060 to {CENTER_NAME} on your firewall"
        assert fixes["udp/123"]["features"] == ["monitoring"]
        text = box.agent.cli("portcheck")
        assert text.returncode == 1
        assert "NG  Web フィルター (URL カテゴリ問い合わせ) / web filter (URL category queries)  <- TCP 6060" in text.stdout
        assert "OK  アクティベーション (ライセンス同期) / activation (license sync)" in text.stdout
        # the agent's own start-up check went to the center with the heartbeat
        pc = wait(lambda: (d := center.device(device_id)) and d["portcheck"] and d["portcheck"], what="port check at the center")
        assert pc["ok"] is False and set(pc["failed"]) == {"tcp/6060", "udp/123"}
    finally:
        for r in rules:
            office.exec("router", [r[0], "-D", *r[2:]])
    ok = box.agent.cli("portcheck")
    assert ok.returncode == 0 and "すべての通信が可能です" in ok.stdout
