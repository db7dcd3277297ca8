"""End to end: software upgrades of the real agent in the lab, driven by the real reference center.

The box runs as in production: ``agent/launcher.py`` (the systemd unit's ExecStart) starts ``vcr-agent
run`` from the releases folder. The center (``vcr-opscenter serve`` on the ops host, HTTPS, its own
CA) sends ``upgrade`` tasks; the signed releases come from a TUF repository made with
opscenter/tufrepo.py. The reference center does not mount ``/tuf/`` yet, so the repository is served
by a static HTTP server on the ops host (port 8090), as in tests/e2e/test_updates.py.

Issue 6 §5: an upgrade outside the window waits (the center sees "waiting for maintenance window");
a forced good upgrade completes and the heartbeat carries the new ``agent_version``; a broken release
(it never checks in) rolls back by itself and the center sees ``rolled_back``.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agent import launcher as L
from agent.lifecycle import maintenance
from agent.link.center import load_state
from lab.netns import Lab, LabError
from lab.agentrun import (
    CENTER_NAME, NTP_NAME, REPO, LabAgent, center_overrides, serve_lab_dns, serve_tuf_repo, start_lab_center,
    updates_overrides, utm_resolv_conf)
from agent.lifecycle.upgrade import build_release

pytestmark = pytest.mark.lab
testing = pytest.importorskip("lab.center", reason="UPGRADE E2E SKIPPED: the reference center is missing")

OPS = "198.51.100.80"
TUF_PORT = 8090
LAUNCHER = REPO / "agent" / "launcher.py"
NEVER_CHECKS_IN = '''

# A broken build (test): the check-in always fails, so this version can never prove itself healthy.
def _broken_checkin(self, token, body):
    raise Unreachable("broken release: the check-in code fails")


CenterClient.checkin = _broken_checkin
'''


class LaunchedAgent(LabAgent):
    """``vcr-agent run`` under the launcher, as the systemd unit starts it."""

    def __init__(self, lab: Lab, workdir: Path, releases: Path, **kw: Any) -> None:
        super().__init__(lab, workdir, **kw)
        self.releases = releases

    def start(self, timeout: float = 60.0) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        (self.log_dir / "status.json").unlink(missing_ok=True)
        self.proc = self.lab.popen("utm", [sys.executable, str(LAUNCHER), "--root", str(self.releases), "--",
                                           "run", "-c", str(self.config_path)], name="agent", env=env)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 60.0, *, other_than: int | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.status()
            if st and st.get("ready") and st.get("ready") == len(st.get("workers", {})) and st.get("pid") != other_than:
                return st
            assert self.proc is not None
            if self.proc.poll() is not None:
                break
            time.sleep(0.3)
        raise LabError(f"agent did not become ready:\n{self.lab.log_tail('utm', 'agent', 60)}")


@pytest.fixture(scope="module")
def center(office: Lab, tmp_path_factory: pytest.TempPathFactory):
    serve_lab_dns(office, ntp=True)
    c = start_lab_center(office, tmp_path_factory.mktemp("center"), heartbeat_interval=2)
    yield c
    c.close()


def live_version(center: Any, device: str) -> str | None:
    """The agent_version of the box's last check-in, as the center shows it."""
    return ((center.device(device) or {}).get("versions") or {}).get("agent")


def task(center: Any, device: str, task_id: int) -> dict[str, Any]:
    return next(t for t in center.tasks(device) if t["task_id"] == task_id)


def wait_task(center: Any, device: str, task_id: int, pred: Any, timeout: float) -> dict[str, Any]:
    try:
        return center.wait_for(lambda: (lambda t: t if pred(t) else None)(task(center, device, task_id)), timeout, 0.5)
    except TimeoutError:
        raise AssertionError(f"task {task_id}: {task(center, device, task_id)}") from None


def test_upgrade_waits_then_forced_upgrade_completes_and_broken_release_rolls_back(
        office: Lab, center: Any, tmp_path: Path) -> None:
    repo, server = serve_tuf_repo(office, tmp_path / "tuf" / "repo", TUF_PORT)
    box = tmp_path / "box"
    updates = updates_overrides(repo, f"http://{OPS}:{TUF_PORT}/", box)
    releases = box / "releases"
    overrides = {
        **center_overrides(center, box, url=f"https://{CENTER_NAME}", ntp_servers=[NTP_NAME],
                           portcheck={"enabled": False}),
        "bridge.resolv_conf": str(utm_resolv_conf(office)),
        "updates": updates,
        "upgrade": {"enabled": True, "releases_dir": str(releases), "restart_command": [], "health_timeout": 30,
                    "min_free_mb": 10, "max_starts": 3},
    }
    a = LaunchedAgent(office, box / "agent", releases, overrides=overrides)
    a.bridge_up()
    try:
        assert office.wait_tcp("utm", OPS, TUF_PORT, 10), "the box cannot reach the repository"
        a.start()
        serial = "VCR116W-UPG-0001"
        res = a.cli("activate", center.issue_code("C-UPG-1", serial=serial), "--serial", serial)
        assert res.returncode == 0, res.stderr
        device = load_state(box / "lib" / "center.json")["device_id"]  # type: ignore[index]
        base = center.wait_for(lambda: live_version(center, device), 30)

        good = build_release("0.2.0", tmp_path / "src" / "0.2.0")
        repo.publish("release", "0.2.0", good)
        pid = a.status()["pid"]  # type: ignore[index]

        # 1. outside the window the upgrade waits, and the center sees it waiting
        if maintenance.in_window():
            pytest.skip("the lab's clock is inside the real maintenance window: nothing would wait")
        waiting = center.add_task(device, "upgrade", {"version": "0.2.0"})
        t = wait_task(center, device, waiting, lambda t: "waiting for maintenance window" in (t["detail"] or ""), 60)
        assert t["status"] == "running" and "JST" in t["detail"], t
        time.sleep(3)
        assert a.status()["pid"] == pid and L.link_target(str(releases), "current") is None  # type: ignore[index]

        # 2. the center forces it (logged with who and why): it installs, switches, restarts, proves itself
        forced = center.add_task(device, "upgrade", {"version": "0.2.0", "force": True, "forced_by": "e2e operator",
                                                     "reason": "security fix"})
        t = wait_task(center, device, forced, lambda t: t["status"] in ("done", "failed", "rolled_back"), 240)
        assert t["status"] == "done" and "-> 0.2.0" in t["detail"], t
        assert task(center, device, waiting)["status"] == "failed"  # superseded by the forced one
        assert center.wait_for(lambda: live_version(center, device) == "0.2.0", 30)
        assert base != "0.2.0"
        st = a.wait_ready(60, other_than=pid)  # the restarted agent's own status (the old one's may linger)
        assert st["upgrade"]["running_version"] == "0.2.0"
        assert L.link_target(str(releases), "current") == "0.2.0"
        kinds = [r["event"].get("upgrade", {}).get("action") for r in center.alarms(device)
                 if r["event"].get("event_type") == "upgrade"]
        assert "forced" in kinds and "done" in kinds, kinds

        # 3. a broken release (it can never check in) goes back to 0.2.0 by itself and says so
        broken = build_release("0.3.0", tmp_path / "src" / "0.3.0")
        (broken / "agent" / "link" / "center.py").write_text((broken / "agent" / "link" / "center.py").read_text() + NEVER_CHECKS_IN)
        repo.publish("release", "0.3.0", broken)
        pid = st["pid"]
        bad = center.add_task(device, "upgrade", {"version": "0.3.0", "force": True, "forced_by": "e2e operator"})
        t = wait_task(center, device, bad, lambda t: t["status"] in ("done", "failed", "rolled_back"), 300)
        assert t["status"] == "rolled_back" and "no successful check-in" in t["detail"], t
        assert L.link_target(str(releases), "current") == "0.2.0"
        assert center.wait_for(lambda: live_version(center, device) == "0.2.0", 30)
        alarm = center.wait_for(lambda: next((r for r in center.alarms(device)
                                              if r["event"].get("upgrade", {}).get("action") == "rolled_back"), None), 30)
        assert alarm["event"]["upgrade"]["version"] == "0.3.0" and alarm["severity"] == 1, alarm
        # the status of the process rolled back to (the broken one's may linger a moment)
        assert center.wait_for(lambda: (s := a.status() or {}).get("ready")
                               and (s.get("upgrade") or {}).get("running_version") == "0.2.0", 60)
    finally:
        server.kill()
        a.kill()
        a.bridge_down()
