"""Software upgrades (agent/lifecycle/upgrade.py, agent/launcher.py): window, force, disk, signature, A/B switch,
verification and rollback.

Releases are real: ``build_release`` copies this repository's packages with a dist-info naming the
version, ``opscenter.tufrepo`` signs and publishes them, and the box's TUF updater fetches them over
HTTP from 127.0.0.1. The rollback tests run ``agent/launcher.py`` for real in a subprocess, with
releases whose code does not import, or never checks in; the old version it falls back to runs the
real ``Upgrader.on_start`` from its own release folder and writes what it reported to a file.
"""
from __future__ import annotations

import datetime as dt
import http.server
import json
import logging
import os
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from agent import launcher as L
from agent.config import parse_config
from agent.link.spool import rank_of
from agent.lifecycle.upgrade import Upgrader, build_release, release_version
from opscenter.tufrepo import TufRepo

REPO = Path(__file__).resolve().parents[3]
LAUNCHER = REPO / "agent" / "launcher.py"
UTC = dt.timezone.utc
OUTSIDE = dt.datetime(2026, 11, 25, 13, 0, tzinfo=UTC)  # Wed 25 Nov 22:00 JST: not the second Wednesday
INSIDE = dt.datetime(2026, 12, 9, 15, 30, tzinfo=UTC)  # Thu 10 Dec 00:30 JST: inside the 9 Dec window


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def repo(tmp_path: Path) -> Any:
    r = TufRepo(tmp_path / "center" / "repo")
    r.init()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(r.dir)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    r.url = f"http://127.0.0.1:{srv.server_address[1]}/"  # type: ignore[attr-defined]
    yield r
    srv.shutdown()
    srv.server_close()


def publish(repo: TufRepo, tmp: Path, version: str, **kw: Any) -> Path:
    folder = build_release(version, tmp / "src" / version, **kw)
    repo.publish("release", version, folder)
    return folder


class Box:
    """The box side: config, a fake clock, the task runner's post() and the daemon's exit."""

    def __init__(self, tmp: Path, repo: TufRepo, *, root_json: Path | None = None, **upgrade: Any) -> None:
        self.dir = tmp / "box"
        self.dir.mkdir(exist_ok=True)
        root = root_json or repo.root_path
        (self.dir / "root.json").write_bytes(Path(root).read_bytes())
        self.releases = self.dir / "releases"
        self.cfg = parse_config({
            "logging": {"dir": str(self.dir / "log")},
            "updates": {"repository_url": repo.url, "trusted_root": str(self.dir / "root.json"),  # type: ignore[attr-defined]
                        "metadata_dir": str(self.dir / "tuf" / "metadata"),
                        "download_dir": str(self.dir / "tuf" / "downloads"),
                        "bundles_dir": str(self.dir / "bundles"), "ntp_servers": [], "timeout": 5},
            "upgrade": {"enabled": True, "releases_dir": str(self.releases), "restart_command": [],
                        "min_free_mb": 0, "health_timeout": 30, **upgrade},
        })
        self.clock = [OUTSIDE]
        self.posts: list[tuple[int, str, str]] = []
        self.records: list[dict[str, Any]] = []
        self.exits: list[int] = []
        self.up = self.upgrader()

    def upgrader(self, **kw: Any) -> Upgrader:
        kw.setdefault("running_version", "0.1.0")
        kw.setdefault("running_release", None)
        kw.setdefault("launcher_root", str(self.releases))
        up: Upgrader = Upgrader(self.cfg, emit=self.records.append, post=lambda t, s, d: self.posts.append((t, s, d)),
                                request_exit=self._exit, now=lambda: self.clock[0], **kw)
        self.current_up = up
        return up

    def _exit(self, code: int) -> None:
        self.exits.append(code)
        self.current_up.stop()  # what the daemon's shutdown does

    def task(self, task_id: int, **params: Any) -> list[tuple[str, str]]:
        seen: list[tuple[str, str]] = []
        self.up.handle_task({"_task_id": task_id, **params}, lambda s, d="": seen.append((s, d)))
        return seen

    def statuses(self, task_id: int) -> list[str]:
        return [f"{s} {d.split(':')[0]}" for t, s, d in self.posts if t == task_id]

    def actions(self) -> list[str]:
        return [r["upgrade"]["action"] for r in self.records if r.get("event_type") == "upgrade"]


# -- the maintenance window and the override --------------------------------------------------------
def test_upgrade_outside_the_window_waits_then_runs_in_it(tmp_path: Path, repo: TufRepo) -> None:
    publish(repo, tmp_path, "0.2.0")
    box = Box(tmp_path, repo)
    seen = box.task(7, version="0.2.0")
    assert seen[0][0] == "running" and seen[0][1].startswith("waiting for maintenance window"), seen
    assert "2026-12-09 23:00 JST" in seen[0][1] and "メンテナンス時間" in seen[0][1]
    wait = box.up.run_pending()
    assert wait == pytest.approx((dt.datetime(2026, 12, 9, 14, 0, tzinfo=UTC) - OUTSIDE).total_seconds())
    assert not (box.releases / "0.2.0").exists() and box.posts == [] and box.actions() == ["waiting"]
    box.clock[0] += dt.timedelta(days=7)  # still outside: still waiting, and it survives a restart
    box.up = box.upgrader()
    assert box.up.run_pending() > 0 and box.up.state()["scheduled"]["task_id"] == 7

    box.clock[0] = INSIDE
    assert box.up.run_pending() == 0
    assert box.statuses(7) == ["running checking disk space and the package signature / ディスク容量と署名を確認しています",
                               "running installed", "running switching"]
    assert box.exits == [75]
    assert L.link_target(str(box.releases), "current") == "0.2.0"
    assert L.link_target(str(box.releases), "previous") is None  # the base install
    marker = L.read_marker(str(box.releases))
    assert marker and marker["state"] == "pending" and marker["to"] == "0.2.0" and marker["task_id"] == 7
    assert marker["from"] is None and marker["from_version"] == "0.1.0" and marker["health_timeout"] == 30
    assert release_version(box.releases / "0.2.0") == "0.2.0"
    assert box.up.state()["scheduled"] is None


def test_forced_upgrade_outside_the_window_is_logged(tmp_path: Path, repo: TufRepo,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    publish(repo, tmp_path, "0.2.0")
    box = Box(tmp_path, repo)
    caplog.set_level(logging.WARNING, logger="agent.lifecycle.upgrade")
    seen = box.task(8, version="0.2.0", force=True, forced_by="operator yamada", reason="CVE-2026-0001 fix")
    assert seen[0][1].startswith("accepted: upgrade to 0.2.0 starts now (forced by operator yamada)")
    assert box.up.run_pending() == 0 and box.exits == [75]
    assert any("forced outside the maintenance window by task 8 (operator yamada: CVE-2026-0001 fix)" in r.getMessage()
               for r in caplog.records)
    forced = next(r["upgrade"] for r in box.records if r["upgrade"]["action"] == "forced")
    assert forced["forced_by"] == "operator yamada" and forced["why"] == "CVE-2026-0001 fix" and forced["severity"] == 3
    assert box.statuses(8)[0].startswith("running forced")
    assert L.read_marker(str(box.releases))["forced_by"].startswith("task 8 (operator yamada")  # type: ignore[index]


# -- refusals before anything changes --------------------------------------------------------------
def test_not_enough_disk_space_is_refused(tmp_path: Path, repo: TufRepo) -> None:
    publish(repo, tmp_path, "0.2.0")
    box = Box(tmp_path, repo, min_free_mb=10 ** 9)
    box.clock[0] = INSIDE
    box.task(9, version="0.2.0")
    assert box.up.run_pending() == 0
    status, detail = box.posts[-1][1:]
    assert status == "failed" and detail.startswith("disk:") and "upgrade.min_free_mb" in detail
    assert box.records[-1]["upgrade"]["reason"] == "disk" and box.exits == []
    assert L.link_target(str(box.releases), "current") is None and box.up.releases() == []


def test_tampered_release_is_refused(tmp_path: Path, repo: TufRepo) -> None:
    publish(repo, tmp_path, "0.2.0")
    target = next((repo.targets_dir / "release").glob("*.release-0.2.0.tar.gz"))
    data = target.read_bytes()
    target.write_bytes(data[:-64] + bytes(64))
    box = Box(tmp_path, repo)
    box.clock[0] = INSIDE
    box.task(10, version="0.2.0")
    box.up.run_pending()
    status, detail = box.posts[-1][1:]
    assert status == "failed" and detail.startswith("tampered:"), detail
    rec = box.records[-1]["upgrade"]
    assert rec["reason"] == "tampered" and rec["severity"] == 1 and box.exits == []
    assert box.up.releases() == [] and L.read_marker(str(box.releases)) is None


def test_release_signed_with_unknown_keys_is_refused(tmp_path: Path, repo: TufRepo) -> None:
    publish(repo, tmp_path, "0.2.0")
    other = TufRepo(tmp_path / "other" / "repo")
    other.init()  # the box trusts another root: the center's metadata is not signed by its keys
    box = Box(tmp_path, repo, root_json=other.root_path)
    box.clock[0] = INSIDE
    box.task(11, version="0.2.0")
    box.up.run_pending()
    status, detail = box.posts[-1][1:]
    assert status == "failed" and detail.startswith("bad_signature:"), detail
    assert box.up.releases() == [] and box.exits == []


def test_unpublished_version_and_release_whose_code_does_not_load(tmp_path: Path, repo: TufRepo) -> None:
    publish(repo, tmp_path, "0.2.0", patch={"agent/dataplane/daemon.py": "raise ImportError('broken build')\n"})
    box = Box(tmp_path, repo)
    box.clock[0] = INSIDE
    box.task(12, version="0.9.9")
    box.up.run_pending()
    assert box.posts[-1][1] == "failed" and box.posts[-1][2].startswith("no_release:")
    box.task(13, version="0.2.0")
    box.up.run_pending()
    status, detail = box.posts[-1][1:]
    assert status == "failed" and detail.startswith("precheck:") and "broken build" in detail, detail
    assert box.up.releases() == [] and L.link_target(str(box.releases), "current") is None and box.exits == []


def test_no_switch_without_the_launcher(tmp_path: Path, repo: TufRepo) -> None:
    publish(repo, tmp_path, "0.2.0")
    box = Box(tmp_path, repo)
    box.up = box.upgrader(launcher_root="")
    box.clock[0] = INSIDE
    box.task(14, version="0.2.0")
    box.up.run_pending()
    assert box.posts[-1][1] == "failed" and box.posts[-1][2].startswith("no_launcher:")


def test_downgrade_needs_an_explicit_request(tmp_path: Path, repo: TufRepo) -> None:
    publish(repo, tmp_path, "0.0.9")
    box = Box(tmp_path, repo)
    box.clock[0] = INSIDE
    box.task(15, version="0.0.9")
    box.up.run_pending()
    assert box.posts[-1][2].startswith("downgrade:")
    box.task(16, version="0.0.9", downgrade=True)
    box.up.run_pending()
    assert box.exits == [75] and L.link_target(str(box.releases), "current") == "0.0.9"


# -- A/B, verification, pruning ------------------------------------------------------------------------
def test_ab_switch_verify_done_and_prune(tmp_path: Path, repo: TufRepo) -> None:
    box = Box(tmp_path, repo)
    box.clock[0] = INSIDE
    running = None
    for n, version in enumerate(["0.2.0", "0.3.0", "0.4.0"]):
        publish(repo, tmp_path, version)
        box.exits.clear()
        box.up = box.upgrader(running_version=running or "0.1.0", running_release=running)
        box.task(20 + n, version=version)
        assert box.up.run_pending() == 0 and box.exits == [75], box.posts[-3:]
        assert L.link_target(str(box.releases), "current") == version
        assert L.link_target(str(box.releases), "previous") == running
        # the launcher starts the new version on probation ...
        marker = L.probation_check(str(box.releases), L.read_marker(str(box.releases)), time.time())  # type: ignore[arg-type]
        assert marker["state"] == "pending" and marker["starts"] == 1
        # ... which reports "verifying", and "done" after its first check-in
        new = box.upgrader(running_version=version, running_release=version)
        new.start()
        assert box.posts[-1][1] == "running" and box.posts[-1][2].startswith(f"verifying: {version} started")
        new.checked_in(time.time())
        new.stop()
        assert box.posts[-1][1] == "done" and f"-> {version}" in box.posts[-1][2]
        assert L.read_marker(str(box.releases))["state"] == "done"  # type: ignore[index]
        new.checked_in(time.time())  # later check-ins change nothing
        assert box.posts[-1][1] == "done" and box.actions().count("done") == n + 1
        running = version
    assert box.up.releases() == ["0.3.0", "0.4.0"]  # keep_releases 2: the live and the previous one


def test_the_next_task_waits_while_one_is_verified_and_a_new_one_supersedes_a_waiting_one(tmp_path: Path,
                                                                                           repo: TufRepo) -> None:
    box = Box(tmp_path, repo)
    box.task(30, version="0.2.0")
    box.task(31, version="0.3.0")
    assert (30, "failed", "superseded by task 31 / 新しいタスク 31 に置き換えられました") in box.posts
    assert box.up.state()["scheduled"]["task_id"] == 31
    L.write_marker(str(box.releases), {"state": "pending", "to": "0.3.0", "task_id": 31})
    with pytest.raises(Exception, match="another upgrade is being verified"):
        box.task(32, version="0.4.0")


# -- the launcher, for real ---------------------------------------------------------------------------
REPORTER = '''
import json, sys, time
from agent.config import parse_config
from agent.lifecycle.upgrade import Upgrader


def main():
    cfg = parse_config({"upgrade": {"enabled": True, "releases_dir": sys.argv[-2]}})
    out = []
    up = Upgrader(cfg, emit=out.append, post=lambda t, s, d: out.append([t, s, d]))
    up.on_start()
    with open(sys.argv[-1], "a") as fh:
        fh.write(json.dumps({"version": up.running_version, "release": up.running_release, "out": out}) + "\\n")
    if MODE == "healthy":
        up.checked_in(time.time())
        with open(sys.argv[-1], "a") as fh:
            fh.write(json.dumps({"version": up.running_version, "out": out}) + "\\n")
    elif MODE == "silent":
        time.sleep(600)


if __name__ == "__main__":
    main()
'''


def fake_release(root: Path, version: str, mode: str) -> None:
    """A release whose ``agent.cli`` is a stand-in: the real Upgrader's start-up report, then
    ``healthy`` (checks in), ``silent`` (never does) or ``old`` (just exits), or ``broken`` (cannot import)."""
    cli = "raise ImportError('this release cannot even import')\n" if mode == "broken" else \
        REPORTER.replace("MODE", repr(mode))
    build_release(version, root / version, patch={"agent/cli.py": cli})


def run_launcher(root: Path, out: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VCR_AGENT_RELEASE", "VCR_AGENT_RELEASES")}
    return subprocess.run([sys.executable, str(LAUNCHER), "--root", str(root), "--", str(root), str(out)],
                          env=env, capture_output=True, text=True, timeout=timeout)


def switched(root: Path, old: str, new: str, **marker: Any) -> None:
    L.set_link(str(root), "previous", old)
    L.set_link(str(root), "current", new)
    L.write_marker(str(root), {"state": "pending", "task_id": 41, "from": old, "to": new, "from_version": old,
                               "health_timeout": 30, "max_starts": 2, "starts": 0, "deadline": None,
                               "switched_at": time.time(), **marker})


def reports(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_launcher_rolls_back_a_release_that_cannot_import(tmp_path: Path) -> None:
    root = tmp_path / "releases"
    fake_release(root, "0.1.1", "old")
    fake_release(root, "0.2.0", "broken")
    switched(root, "0.1.1", "0.2.0")
    out = tmp_path / "out.jsonl"
    res = run_launcher(root, out)
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("starting the agent from release 0.2.0") == 2  # max_starts
    assert "cannot even import" in res.stderr and "rolled back to 0.1.1" in res.stderr
    assert L.link_target(str(root), "current") == "0.1.1"
    marker = L.read_marker(str(root))
    assert marker["state"] == "rolled_back" and marker["reported"] is True  # type: ignore[index]
    assert "the new version did not start: 2 starts failed" in marker["reason"]  # type: ignore[index]
    (rep,) = reports(out)
    assert rep["version"] == "0.1.1" and rep["release"] == "0.1.1"  # the old code, its own version
    task_id, status, detail = rep["out"][0]
    assert task_id == 41 and status == "rolled_back" and detail.startswith("rolled_back: 0.2.0 -> 0.1.1")
    alarm = rep["out"][1]["upgrade"]
    assert alarm["action"] == "rolled_back" and alarm["severity"] == 1 and "did not start" in alarm["why"]
    assert rank_of(rep["out"][1]) == 1  # the spool keeps it among the most important events


def test_launcher_rolls_back_a_release_that_never_checks_in(tmp_path: Path) -> None:
    root = tmp_path / "releases"
    fake_release(root, "0.1.1", "old")
    fake_release(root, "0.2.0", "silent")
    switched(root, "0.1.1", "0.2.0", health_timeout=3)
    out = tmp_path / "out.jsonl"
    res = run_launcher(root, out)
    assert res.returncode == 0, res.stderr
    assert "release 0.2.0 did not check in within 3 s; stopping it" in res.stderr
    marker = L.read_marker(str(root))
    assert marker["state"] == "rolled_back"  # type: ignore[index]
    assert marker["rolled_back_at"] > marker["deadline"]  # type: ignore[index]  # waited out the probation, no less
    new, old = reports(out)
    assert new["version"] == "0.2.0" and new["out"][0][1] == "running" and new["out"][0][2].startswith("verifying")
    assert old["version"] == "0.1.1" and old["out"][0][1] == "rolled_back"
    assert "no successful check-in with the center within 3 s" in old["out"][0][2]
    assert L.link_target(str(root), "current") == "0.1.1"


def test_launcher_keeps_a_release_that_checks_in(tmp_path: Path) -> None:
    root = tmp_path / "releases"
    fake_release(root, "0.1.1", "old")
    fake_release(root, "0.2.0", "healthy")
    switched(root, "0.1.1", "0.2.0")
    out = tmp_path / "out.jsonl"
    res = run_launcher(root, out)
    assert res.returncode == 0, res.stderr
    first, after = reports(out)
    assert first["version"] == "0.2.0" and first["out"][0][2].startswith("verifying")
    assert [o[1] for o in after["out"] if isinstance(o, list)] == ["running", "done"]
    assert L.read_marker(str(root))["state"] == "done" and L.link_target(str(root), "current") == "0.2.0"  # type: ignore[index]
    assert res.stderr.count("starting the agent") == 1


def test_launcher_without_a_marker_runs_current_and_passes_the_restart_code(tmp_path: Path) -> None:
    root = tmp_path / "releases"
    build_release("0.2.0", root / "0.2.0", patch={"agent/cli.py": (
        "import os, sys\nfrom pathlib import Path\n"
        "p = Path(sys.argv[-1]); n = int(p.read_text()) if p.exists() else 0; p.write_text(str(n + 1))\n"
        "sys.exit(75 if n == 0 else 3)\n")})
    L.set_link(str(root), "current", "0.2.0")
    res = run_launcher(root, tmp_path / "count")
    assert res.returncode == 3 and (tmp_path / "count").read_text() == "2"  # 75 = start again; 3 is passed on


# -- records and the spool ------------------------------------------------------------------------------
def test_update_and_upgrade_records_rank_by_their_own_severity() -> None:
    from agent.lifecycle.updates import update_record
    from agent.lifecycle.upgrade import upgrade_record

    assert rank_of(update_record("ips", "tampered")) == 1
    assert rank_of(update_record("ips", "activated", action="activated")) == 4
    assert rank_of(upgrade_record("rolled_back")) == 1
    assert rank_of(upgrade_record("waiting")) == 4
    assert rank_of({"event_type": "stats"}) > 4


# -- the daemon's wiring ----------------------------------------------------------------------------
def test_daemon_confirms_bundle_reloads_and_exits_for_the_launcher() -> None:
    from types import SimpleNamespace

    from tests.agent.dataplane.bare import bare_daemon

    d = bare_daemon()
    d.procs = {0: SimpleNamespace(pid=100), 1: SimpleNamespace(pid=101)}  # type: ignore[dict-item]
    calls: list[tuple[bool, str]] = []

    class Updates:
        def on_reload_result(self, ok: bool, error: str = "") -> None:
            calls.append((ok, error))

    d.updates = Updates()
    # A reload already under way (generation 1, e.g. a SIGHUP) when the bundle goes live: its
    # workers' replies must not confirm the bundle, whose reload is generation 2 (issue 16: the
    # bundle was reported live one reload early).
    d.gens.begin()
    assert d._bundle_reload() is None and d.reload_requested.is_set()
    d._handle(("ready", 0, 1, 100))
    d._handle(("reloaded", 0, {}, 1))
    d._handle(("ready", 1, 1, 101))
    d._handle(("reloaded", 1, {}, 1))
    assert calls == []  # generation 1 is not the bundle's reload
    assert d.gens.begin() == 2  # the main loop takes up the bundle's request
    d._handle(("ready", 0, 2, 100))
    d._handle(("reloaded", 0, {}, 2))
    assert calls == []
    d._handle(("ready", 1, 2, 101))
    d._handle(("reloaded", 1, {}, 2))
    assert calls == [(True, "")] and d.reloads["workers_reloaded"] == 4
    d._handle(("reloaded", 0, {}, 2))  # a reply nobody waits for
    assert calls == [(True, "")]
    d._bundle_reload()
    d.gens.begin()
    d._handle(("reload_failed", 0, "bad rules", 3))
    assert calls[-1] == (False, "bad rules") and not d._waiters
    # a request whose reload the daemon refused (a bad file) fails at once
    d._bundle_reload()
    d.gens.refuse("configuration error")
    d._check_waiters()
    assert calls[-1] == (False, "configuration error")
    d._request_exit(L.RESTART_CODE)
    assert d.exit_code == 75 and d.stopping.is_set()
