"""The real agent inside the lab's UTM namespace: its config, start, readiness, stop and kill.

Shared by the demo, the end-to-end tests and the benchmarks, so they all exercise the same thing a
customer's box runs: ``vcr-agent bridge up`` and ``vcr-agent run`` with a YAML config.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import yaml

from agent.config import resolve_relative_paths
from agent.evelog import read_eve
from lab import shared_dir
from lab.netns import Lab, LabError

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIG = REPO / "config" / "vcr-agent.yaml"
UT1 = shared_dir() / "data" / "ut1"  # $VCR_SHARED or ../shared beside the checkout


def lab_config(workdir: Path, *, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The shipped example config, with logs and resolv.conf moved into ``workdir``."""
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    resolve_relative_paths(data, EXAMPLE_CONFIG.parent)  # the copy lives elsewhere
    data["logging"]["dir"] = str(workdir / "log")
    data["bridge"]["resolv_conf"] = str(workdir / "resolv.conf")
    data["bridge"]["state_file"] = str(workdir / "bridge.json")  # labs side by side keep apart
    if UT1.is_dir():  # the lab's category bundle: the real UT1 lists beside the repository
        data["engines"]["webfilter"]["database"] = str(UT1)
    for key, value in (overrides or {}).items():
        node = data
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return data


def _agent_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent.cli", *args]


class LabAgent:
    """One agent run in ``lab``'s UTM namespace."""

    def __init__(self, lab: Lab, workdir: Path, *, overrides: dict[str, Any] | None = None) -> None:
        self.lab = lab
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "vcr-agent.yaml"
        self.config = lab_config(self.workdir, overrides=overrides)
        self.config_path.write_text(yaml.safe_dump(self.config, allow_unicode=True, sort_keys=False), encoding="utf-8")
        self.log_dir = Path(self.config["logging"]["dir"])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def eve_path(self) -> Path:
        return self.log_dir / "eve.json"

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        return self.lab.exec("utm", _agent_argv(*args, "-c", str(self.config_path)), env=env, timeout=timeout)

    def bridge_up(self) -> None:
        res = self.cli("bridge", "up")
        if res.returncode != 0:
            raise LabError(f"bridge up failed:\n{res.stderr}")

    def bridge_down(self) -> None:
        res = self.cli("bridge", "down")
        if res.returncode != 0:
            raise LabError(f"bridge down failed:\n{res.stderr}")

    def start(self, timeout: float = 30.0) -> None:
        """Start ``vcr-agent run`` and wait until every worker has bound its queue."""
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        status = self.log_dir / "status.json"
        status.unlink(missing_ok=True)
        self.proc = self.lab.popen("utm", _agent_argv("run", "-c", str(self.config_path)), name="agent", env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.status()
            if st and st.get("ready") == len(st.get("workers", {})) and st.get("ready"):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise LabError(f"agent did not become ready:\n{self.lab.log_tail('utm', 'agent', 40)}")

    def activate(self, center: Any, contract: str, serial: str) -> None:
        """``vcr-agent activate`` with a code ``center`` issues for ``contract``, bound to ``serial``."""
        res = self.cli("activate", center.issue_code(contract, serial=serial), "--serial", serial)
        if res.returncode != 0:
            raise LabError(f"activate failed:\n{res.stderr}")

    @contextmanager
    def running(self, timeout: float = 30.0, *, activate: tuple[Any, str, str] | None = None) -> Iterator["LabAgent"]:
        """The bridge up and the agent started (activated first with ``(center, contract, serial)``);
        on leaving, the agent killed and the bridge down."""
        self.bridge_up()
        try:
            if activate is not None:
                self.activate(*activate)
            self.start(timeout)
            yield self
        finally:
            self.kill()
            self.bridge_down()

    def status(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.log_dir / "status.json").read_text())
        except (OSError, ValueError):
            return None

    def counter(self, section: str, key: str) -> int:
        st = self.status() or {}
        return int(st.get("counters", {}).get(section, {}).get(key, 0))

    def wait_counter(self, section: str, key: str, at_least: int, timeout: float = 8.0) -> int:
        """Poll the status file until a counter reaches ``at_least`` (returns the last value)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.counter(section, key)
            if value >= at_least or time.monotonic() > deadline:
                return value
            time.sleep(0.2)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def kill(self) -> None:
        """SIGKILL the agent and all its workers (a crash, as far as the kernel can tell)."""
        if self.proc is None:
            return
        try:
            os.killpg(os.getpgid(self.proc.pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(5)

    def alarms(self) -> list[dict[str, Any]]:
        return read_eve(self.eve_path)

    def wait_alarm(self, pred: Any, timeout: float = 5.0) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while True:
            for rec in self.alarms():
                if pred(rec):
                    return rec
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)


# ------------------------------------------------------------------------ the operations center
CENTER_IP = "198.51.100.80"  # the lab's "ops" host
CENTER_NAME = "center.vcr.example"
NTP_NAME = "ntp.vcr.example"
LAB_DNS_IP = "198.51.100.53"  # the lab's internet DNS server (host "dns"), as the box's settings sheet names it
LAB_NTP_IP = "198.51.100.123"


def serve_lab_dns(lab: Lab, names: dict[str, str] | None = None, *, center: bool = True, ntp: bool = False) -> None:
    """The lab's internet DNS server (host ``dns``) answering ``names`` (DNS name -> lab host role);
    with ``center``, CENTER_NAME for the ops host; with ``ntp``, NTP_NAME for an NTP server (host ``ntp``)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    lab.add_internet_host("dns", LAB_DNS_IP)
    wanted = {CENTER_NAME: "ops"} if center else {}
    if ntp:
        lab.add_internet_host("ntp", LAB_NTP_IP)
        wanted[NTP_NAME] = "ntp"
    wanted.update(names or {})
    answers = [f"{name}={lab.hosts[role].ipv4},{lab.hosts[role].ipv6}" for name, role in wanted.items()]
    lab.popen("dns", [sys.executable, "-m", "lab.dns", "53", *answers], name="dns", env=env)
    if ntp:
        lab.popen("ntp", [sys.executable, "-m", "agent.link.ntp", "serve"], name="ntp", env=env)


def utm_resolv_conf(lab: Lab) -> Path:
    """Where ``bridge up`` should write the settings sheet's DNS servers in the lab.

    ``ip netns exec`` bind-mounts ``/etc/netns/NS/resolv.conf`` over ``/etc/resolv.conf``, so the
    agent's own lookups (the center's name) go to the lab's DNS server as on a real box. Deleting
    the namespace removes the folder (``lab.netns.delete_netns``).
    """
    folder = Path("/etc/netns") / lab.utm_netns
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "resolv.conf"


def start_lab_center(lab: Lab, workdir: Path, *, names: tuple[str, ...] = (CENTER_NAME,), **kw: Any) -> Any:
    """The real reference center (``vcr-opscenter serve``) on the lab's ops host, port 443, own CA."""
    from lab.center import start_center

    if "ops" not in lab.hosts:
        lab.add_internet_host("ops", CENTER_IP)
    kw.setdefault("settings", {"checkin_rate": 0, "alarm_rate": 0})
    return start_center(workdir, f"{lab.hosts['ops'].ipv4}:443", netns=lab.netns("ops"), names=list(names), **kw)


def serve_tuf_repo(lab: Lab, folder: Path, port: int) -> tuple[Any, Any]:
    """A new TUF repository (opscenter/tufrepo.py) in ``folder``, served over plain HTTP by the ops
    host on ``port``: (the repository, its server process)."""
    from opscenter.tufrepo import TufRepo

    repo = TufRepo(folder)
    repo.init()
    server = lab.popen("ops", [sys.executable, "-m", "http.server", str(port), "--bind", lab.hosts["ops"].ipv4,
                               "--directory", str(repo.dir)], name="tuf-repo")
    return repo, server


def updates_overrides(repo: Any, url: str, box: Path) -> dict[str, Any]:
    """The ``updates`` section of a box whose state lives in ``box``, trusting ``repo``'s root
    (copied to ``box/root.json``) and fetching from ``url``."""
    box.mkdir(parents=True, exist_ok=True)
    (box / "root.json").write_bytes(repo.root_path.read_bytes())
    return {"repository_url": url, "trusted_root": str(box / "root.json"),
            "metadata_dir": str(box / "tuf" / "metadata"), "download_dir": str(box / "tuf" / "downloads"),
            "bundles_dir": str(box / "bundles"), "ntp_servers": [], "timeout": 10}


def center_overrides(center: Any, workdir: Path, *, url: str | None = None, **center_keys: Any) -> dict[str, Any]:
    """LabAgent overrides that point the box at ``center`` (state and spool under ``workdir``)."""
    out: dict[str, Any] = {
        "center.enabled": True,
        "center.url": url or center.url,
        "center.ca_file": str(center.ca),
        "center.state_file": str(workdir / "lib" / "center.json"),
        "center.spool": {"path": str(workdir / "lib" / "spool.db")},
        "center.heartbeat_interval": 2,
        "center.backoff_base": 0.5,
        "center.backoff_cap": 4,
    }
    out.update({f"center.{k}": v for k, v in center_keys.items()})
    return out
