#!/usr/bin/env python3
"""Start vcr-agent from the live A/B release, and roll a bad upgrade back (the upgrade watchdog).

This file is the one part of the upgrade path that must work whatever the new release contains, so
it is version-independent on purpose: standard library only, it imports nothing from ``agent``, and
it is installed once at a fixed path (the base install, ``/opt/vcr-agent/agent/launcher.py``; an
upgrade never replaces it). systemd runs it as the service's main process:

    python launcher.py --root /var/lib/vcr-agent/releases -- run -c /etc/vcr-agent/vcr-agent.yaml

Releases (``agent/lifecycle/upgrade.py`` installs them)::

    ROOT/<version>/         a release: the agent's package tree (agent/, filters/, a dist-info naming the version)
    ROOT/current -> <ver>   the live release (absent: the base install in the venv)
    ROOT/previous -> <ver>  the one to go back to (absent: the base install)
    ROOT/upgrade.json       the marker of an upgrade under verification

The launcher starts ``PYTHON -m agent.cli ARGS`` with ``PYTHONPATH=ROOT/current`` (so ``agent``, and the
version ``importlib.metadata`` reports, come from the release) and supervises it: signals are passed on
(SIGTERM/SIGINT stop, SIGHUP reload), exit code 75 means "start me again" (the upgrade's restart).

While the marker says ``pending`` or ``verifying`` the new release is on probation:

* every start is counted; more than ``max_starts`` (it crashes, or cannot even import) -> roll back;
* the deadline (``health_timeout`` from its first start) passes before the new process has written
  ``done`` (it does so after its first successful check-in with the center) -> stop it, roll back.

Rolling back points ``current`` at ``previous`` (atomically: a new symlink renamed over the old one),
writes ``state: rolled_back`` with the reason, and starts the old version, which reports the rollback
to the center (task status and an EVE ``upgrade`` record) and sets ``reported``.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

RESTART_CODE = 75  # the agent asks to be started again (after an upgrade switched ``current``)
MARKER = "upgrade.json"
PROBATION = ("pending", "verifying")
STOP_GRACE = 20.0  # seconds a child gets to stop on SIGTERM before SIGKILL
CRASH_DELAY = 1.0  # seconds between starts of a crashing release on probation


def log(msg: str) -> None:
    print(f"vcr-agent-launcher: {msg}", file=sys.stderr, flush=True)


# -- the marker and the symlinks (agent/lifecycle/upgrade.py uses the same format) -----------------------------
def read_marker(root: str) -> dict | None:
    try:
        with open(os.path.join(root, MARKER), encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log(f"upgrade marker unreadable ({exc}); ignored")
        return None
    return data if isinstance(data, dict) else None


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_marker(root: str, data: dict) -> None:
    """Atomically (temp file, fsync, rename, fsync of the folder): a power cut leaves old or new."""
    path = os.path.join(root, MARKER)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps(data, indent=1, sort_keys=True).encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(root)


def link_target(root: str, name: str) -> str | None:
    """The version a symlink (``current``/``previous``) names, if that release folder exists."""
    try:
        target = os.readlink(os.path.join(root, name))
    except OSError:
        return None
    version = os.path.basename(target.rstrip("/"))
    return version if os.path.isdir(os.path.join(root, version)) else None


def set_link(root: str, name: str, version: str | None) -> None:
    """Point ``name`` at ``version`` atomically (None removes it: the base install)."""
    path = os.path.join(root, name)
    if version is None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    else:
        tmp = os.path.join(root, f".{name}.{os.getpid()}.tmp")
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        os.symlink(version, tmp)
        os.replace(tmp, path)
    _fsync_dir(root)


def rollback(root: str, marker: dict, reason: str) -> dict:
    """``current`` back to ``previous`` (or the base install); the marker records why."""
    back = link_target(root, "previous")
    if back is None or back == marker.get("to"):
        back = marker.get("from") if marker.get("from") and os.path.isdir(os.path.join(root, str(marker["from"]))) else None
    set_link(root, "current", back)
    marker = dict(marker, state="rolled_back", reason=reason, rolled_back_at=time.time(),
                  rolled_back_to=back, reported=False)
    write_marker(root, marker)
    log(f"upgrade to {marker.get('to')} rolled back to {back or 'the base install'}: {reason}")
    return marker


def probation_check(root: str, marker: dict, now: float) -> dict:
    """Before a start of a release on probation: count it, and roll back when it is out of chances."""
    current = link_target(root, "current")
    if current != marker.get("to"):
        # the switch never happened (stopped between the marker and the swap) or someone moved it
        marker = dict(marker, state="aborted", reason=f"current is {current or 'the base install'}, "
                      f"not {marker.get('to')}", reported=False)
        write_marker(root, marker)
        return marker
    starts = int(marker.get("starts") or 0) + 1
    max_starts = int(marker.get("max_starts") or 3)
    deadline = marker.get("deadline") or now + float(marker.get("health_timeout") or 300)
    marker = dict(marker, starts=starts, deadline=deadline)
    if starts > max_starts:
        return rollback(root, marker, f"the new version did not start: {starts - 1} starts failed "
                        f"(max_starts {max_starts})")
    if now > deadline:
        return rollback(root, marker, f"no successful check-in with the center within "
                        f"{float(marker.get('health_timeout') or 0):g} s")
    write_marker(root, marker)
    return marker


# -- the child --------------------------------------------------------------------------------------
class Launcher:
    def __init__(self, root: str, python: str, args: list[str]) -> None:
        self.root = root
        self.python = python
        self.args = args
        self.child: subprocess.Popen | None = None
        self.stopping = False

    def _signal(self, signum: int, _frame: object) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.stopping = True
        if self.child is not None and self.child.poll() is None:
            try:
                self.child.send_signal(signum)
            except OSError:
                pass

    def spawn(self) -> subprocess.Popen:
        env = dict(os.environ)
        env.pop("WATCHDOG_PID", None)  # systemd's watchdog names the launcher: the agent feeds it
        release = link_target(self.root, "current")
        if release:
            path = os.path.join(self.root, release)
            env["PYTHONPATH"] = path + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
            env["VCR_AGENT_RELEASE"] = release
        else:
            env.pop("VCR_AGENT_RELEASE", None)
        env["VCR_AGENT_RELEASES"] = self.root
        log(f"starting the agent from {('release ' + release) if release else 'the base install'}")
        return subprocess.Popen([self.python, "-m", "agent.cli", *self.args], env=env, cwd="/")

    def stop_child(self) -> None:
        child = self.child
        if child is None or child.poll() is not None:
            return
        child.terminate()
        try:
            child.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    def supervise(self, on_probation: bool) -> int | None:
        """Wait for the child; None when the probation deadline passed (the child was stopped)."""
        assert self.child is not None
        while True:
            try:
                return self.child.wait(0.5)
            except subprocess.TimeoutExpired:
                pass
            if not on_probation or self.stopping:
                continue
            marker = read_marker(self.root) or {}
            if marker.get("state") not in PROBATION:
                on_probation = False  # "done": the new version proved itself
                continue
            if time.time() > float(marker.get("deadline") or 0):
                log(f"release {marker.get('to')} did not check in within {marker.get('health_timeout')} s; stopping it")
                self.stop_child()
                if self.stopping:
                    return self.child.returncode
                if (read_marker(self.root) or {}).get("state") not in PROBATION:
                    return None  # it wrote "done" just as the deadline passed: start it again as it is
                rollback(self.root, marker, f"no successful check-in with the center within "
                         f"{float(marker.get('health_timeout') or 0):g} s")
                return None

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._signal)
        while True:
            marker = read_marker(self.root)
            on_probation = bool(marker and marker.get("state") in PROBATION)
            if on_probation:
                assert marker is not None
                marker = probation_check(self.root, marker, time.time())
                on_probation = marker.get("state") in PROBATION
            if self.stopping:
                return 0
            self.child = self.spawn()
            code = self.supervise(on_probation)
            if code is None:
                continue  # rolled back: start the old version
            if self.stopping:
                return code
            if code == RESTART_CODE:
                log("the agent asked for a restart")
                continue
            marker = read_marker(self.root)
            if marker and marker.get("state") in PROBATION:
                log(f"release {marker.get('to')} exited with code {code} while on probation")
                time.sleep(CRASH_DELAY)
                continue
            return code  # an ordinary failure: systemd's Restart= takes over


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="start vcr-agent from the live release; roll back a bad upgrade")
    p.add_argument("--root", default=os.environ.get("VCR_AGENT_RELEASES", "/var/lib/vcr-agent/releases"),
                   help="the releases folder (current, previous, upgrade.json)")
    p.add_argument("--python", default=sys.executable, help="the interpreter (the base install's venv)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="-- then vcr-agent's arguments, e.g. -- run -c FILE")
    ns = p.parse_args(argv)
    args = ns.args[1:] if ns.args[:1] == ["--"] else ns.args
    if not args:
        p.error("give the agent's arguments after --, e.g. -- run -c /etc/vcr-agent/vcr-agent.yaml")
    os.makedirs(ns.root, mode=0o755, exist_ok=True)
    return Launcher(ns.root, ns.python, args).run()


if __name__ == "__main__":
    sys.exit(main())
