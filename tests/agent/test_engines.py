"""A new engine plugs in by being registered in filters/registry.py: nothing in the agent names it.

A fake antivirus engine declares a bundle kind ("av") and two kernel sets. Without touching any
agent code, the config loader validates its section through its model, the live bundle reaches
its section, the updater has it build a staged bundle, and the daemon loads its kernel sets (the
kernel commands recorded, not run), matches them in the ruleset, lets it describe their drops,
starts the local service it asks for, and rebuilds it on reload.
"""
from __future__ import annotations

import gc
import ipaddress
import json
import os
import struct
import subprocess
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping

import pytest
import yaml
from pydantic import Field

from agent.config import load_config
from agent.engines import build_engines, load_effective_config, overlay_live_bundles
from agent.lifecycle.updates import BundleUpdater, Staged
from filters import registry
from filters.engine import (Action, BlockPage, BundleError, BundleLoad, ConfigError, Engine, EngineConfig, EngineContext,
                            KernelSet, LocalService, Verdict)
from filters.packet import Packet


def _hosts(folder: Path) -> list[str]:
    path = folder / "hosts.txt"
    return path.read_text().split() if path.is_file() else []


class FakeAvConfig(EngineConfig):
    signatures: str = Field("", description="the signature folder (the live av bundle)")
    greeting: str = Field("blocked", description="what the block page says")


class FakeAv(Engine):
    """Lists hosts (from its signature folder) in kernel sets, one per family."""

    Config = FakeAvConfig
    name: ClassVar[str] = "fakeav"
    bundle_kinds = ("av",)
    kernel_sets = (KernelSet("vcr-test-av4", 4, "av"), KernelSet("vcr-test-av6", 6, "av", maxelem=1024))

    def __init__(self) -> None:
        super().__init__()
        self.folder = ""
        self.greeting = ""
        self.listed: list[str] = []

    def configure(self, section: Mapping[str, Any], ctx: EngineContext = EngineContext()) -> None:
        conf = self.check_section(section)
        self.folder, self.greeting = conf.signatures, conf.greeting

    def prepare(self) -> None:
        self.listed = _hosts(Path(self.folder)) if self.folder else []

    def summary(self) -> dict[str, Any]:
        version = Path(self.folder).name if self.folder else ""
        return {"listed": len(self.listed), "version": version, "signatures": {"av": version} if version else {}}

    @classmethod
    def apply_bundle(cls, section: Mapping[str, Any], kind: str, folder: Path) -> dict[str, Any]:
        return {**section, "signatures": str(folder)}

    @classmethod
    def load_bundle(cls, kind: str, folder: Path, manifest: Mapping[str, Any], section: Mapping[str, Any],
                    ctx: EngineContext) -> BundleLoad:
        hosts = _hosts(folder)
        if not hosts:
            raise BundleError("the av bundle lists no host")
        return BundleLoad(len(hosts), {"hosts": len(hosts)}, counts_manifest_rules=True)

    def kernel_set_entries(self) -> Mapping[str, Iterable[str]]:
        by_family = {4: [h for h in self.listed if ":" not in h], 6: [h for h in self.listed if ":" in h]}
        return {s.name: by_family[s.family] for s in self.kernel_sets}

    def kernel_drop_verdict(self, pkt: Packet) -> Verdict:
        return Verdict(Action.DROP, self.name, rule_id=9_500_001, signature=f"VCR fakeav: listed host ({len(self.listed)})",
                       reason="kernel")

    def local_services(self) -> tuple[LocalService, ...]:
        return (BlockPage(lambda host: (["malware"], self.greeting), box="fake-box"),)


@pytest.fixture
def fake_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    # in place of the real antivirus engine, which takes the same bundle kind
    engines = tuple(e for e in registry.ENGINES if "av" not in e[0].bundle_kinds)
    monkeypatch.setattr(registry, "ENGINES", (*engines, (FakeAv, False)))


def publish(bundles: Path, version: str, hosts: list[str]) -> Path:
    """A live av bundle: <bundles>/av/<version>/hosts.txt and the current symlink."""
    folder = bundles / "av" / version
    folder.mkdir(parents=True)
    (folder / "hosts.txt").write_text("\n".join(hosts) + "\n")
    cur = bundles / "av" / "current"
    tmp = bundles / "av" / ".current"
    tmp.symlink_to(version)
    os.replace(tmp, cur)
    return folder


def write_config(tmp_path: Path, **fakeav: Any) -> Path:
    path = tmp_path / "vcr-agent.yaml"
    path.write_text(yaml.safe_dump({
        "settings_sheet": {"management_ip": "192.0.2.2/24", "gateway": "192.0.2.1"},
        "logging": {"dir": str(tmp_path / "log")},
        "bridge": {"state_file": str(tmp_path / "bridge.json")},
        "dataplane": {"workers": 1},
        "engines": {"firewall": {"enabled": False}, "fakeav": {"enabled": True, **fakeav}},
        "updates": {"enabled": True, "bundles_dir": str(tmp_path / "bundles")},
    }))
    return path


# -- config and updates ---------------------------------------------------------------------------
def test_config_validates_the_new_engines_section_through_its_model(tmp_path: Path, fake_registered: None) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, colour="blue"))
    assert err.value.key == "engines.fakeav.colour" and err.value.problem == "unknown key"
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, greeting=5))
    assert err.value.key == "engines.fakeav.greeting" and str(tmp_path) in str(err.value)


def test_the_live_bundle_reaches_the_new_engine_only_through_the_explicit_overlay(tmp_path: Path,
                                                                                fake_registered: None) -> None:
    v1 = publish(tmp_path / "bundles", "2026.12.1", ["192.0.2.66", "2001:db8::66"])
    path = write_config(tmp_path)
    plain = load_config(path)
    assert plain.engines["fakeav"] == {"enabled": True}, "load_config applies nothing"
    cfg = overlay_live_bundles(plain)
    assert cfg.engines["fakeav"]["signatures"] == str(v1.resolve()) and plain.engines["fakeav"] == {"enabled": True}
    assert load_effective_config(path).engines == cfg.engines
    (engine,) = build_engines(cfg)
    assert isinstance(engine, FakeAv) and engine.listed == ["192.0.2.66", "2001:db8::66"]


def test_the_updater_has_the_new_engine_build_a_staged_bundle(tmp_path: Path, fake_registered: None) -> None:
    cfg = load_effective_config(write_config(tmp_path))
    updater = BundleUpdater(cfg)
    (tmp_path / "bundles" / "av").mkdir(parents=True)  # made by check_and_stage on the way

    def staged(version: str, hosts: list[str], claimed: int) -> Staged:
        folder = tmp_path / "staging" / version
        folder.mkdir(parents=True)
        (folder / "hosts.txt").write_text("\n".join(hosts))
        return Staged("av", version, folder, {"kind": "av", "version": version, "rule_count": claimed, "files": []},
                      "0" * 64, 1)

    res = updater.activate(staged("2026.12.2", ["192.0.2.7", "192.0.2.8"], 2))
    assert (res.status, res.rules_loaded) == ("activated", 2)
    assert updater.live_versions() == {"av": "2026.12.2"}
    assert overlay_live_bundles(cfg).engines["fakeav"]["signatures"].endswith("/av/2026.12.2")
    res = updater.activate(staged("2026.12.3", [], 3))
    assert (res.status, res.reason) == ("rejected", "load_failed") and "lists no host" in res.detail
    res = updater.activate(staged("2026.12.4", ["192.0.2.9"], 10))  # the engine counts what the manifest counts
    assert (res.status, res.reason) == ("rejected", "load_failed") and "1 of the 10" in res.detail
    assert updater.live_versions() == {"av": "2026.12.2"}


# -- the daemon ---------------------------------------------------------------------------------------
class Kernel:
    """Records the commands agent/dataplane/bridge.py runs (ipset, iptables, conntrack)."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], str | None]] = []

    def run(self, argv: list[str], *, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        self.calls.append((list(argv), input))
        return subprocess.CompletedProcess(argv, 0, "", "")

    def restored(self) -> str:
        return "".join(inp or "" for argv, inp in self.calls if argv[:2] == ["ipset", "restore"])

    def created(self) -> list[str]:
        return [argv[2] for argv, _ in self.calls if argv[:2] == ["ipset", "create"]]


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> Kernel:
    from agent.dataplane import bridge

    k = Kernel()
    monkeypatch.setattr(bridge, "run", k.run)
    return k


@pytest.fixture
def daemon(tmp_path: Path, fake_registered: None, kernel: Kernel) -> Any:
    from agent.dataplane.daemon import Daemon

    publish(tmp_path / "bundles", "2026.12.1", ["192.0.2.66", "198.51.100.0/24", "2001:db8::66"])
    path = write_config(tmp_path)
    d = Daemon(load_effective_config(path), config_path=str(path))
    gc.unfreeze()  # the daemon freezes its engines for the forked workers; not wanted in the test process
    yield d
    # a reload starts real worker processes (successors): none may outlive the test
    for p in [*d.procs.values(), *(p for _, p in d.successors.values()), *(p for _, p in d.retiring)]:
        p.kill()
        p.join(5)
    d.eve.close()


def _tcp(src: str, dst: str) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, 6, 0, ipaddress.ip_address(src).packed,
                     ipaddress.ip_address(dst).packed)
    return ip + struct.pack("!HHIIBBHHH", 40000, 443, 1, 0, 0x50, 0x02, 65535, 0, 0)


def test_the_daemon_loads_the_new_engines_kernel_sets(daemon: Any, kernel: Kernel) -> None:
    daemon._sync_kernel_sets()
    restored = kernel.restored()
    assert "add vcr-test-av4-new 192.0.2.66 -exist" in restored and "add vcr-test-av4-new 198.51.100.0/24 -exist" in restored
    assert "add vcr-test-av6-new 2001:db8::66 -exist" in restored and "maxelem 1024" in restored
    assert ["ipset", "swap", "vcr-test-av4-new", "vcr-test-av4"] in [argv for argv, _ in kernel.calls]
    assert "add vcr-ti4-new" not in restored  # ATP is off: its sets are loaded empty
    assert "create vcr-ti4-new hash:net family inet maxelem 2000000 counters -exist" in restored
    status = daemon.status()["threat_sets"]
    assert status["entries"]["vcr-test-av4"] == 2 and status["entries"]["vcr-test-av6"] == 1
    assert status["entries"]["vcr-ti4"] == 0 and status["version"] == "2026.12.1"


def test_the_ruleset_matches_the_new_engines_sets_and_the_engine_describes_their_drops(
        tmp_path: Path, daemon: Any, kernel: Kernel) -> None:
    from agent.dataplane.bridge import BridgeControl
    from agent.dataplane.nflog import NflogRecord
    from agent.dataplane.ruleset import render

    text = render(daemon.spec, daemon.policy, 4)
    assert '-A VCR-BLOCK -m set --match-set vcr-test-av4 dst -m limit' in text and '"vcr:av:0:drop"' in text
    assert "-A VCR-BLOCK -m set --match-set vcr-test-av4 src -j DROP" in text and "vcr-test-av6" not in text
    assert "vcr-test-av6 dst" in render(daemon.spec, daemon.policy, 6)
    BridgeControl(daemon.cfg).ensure_ipsets()
    assert {"vcr-test-av4", "vcr-test-av6", "vcr-ti4"} <= set(kernel.created())

    rec = NflogRecord("vcr:av:0:drop", _tcp("192.0.2.10", "192.0.2.66"), 0x0800, 0, 0, 0, 0, 0, 1.0)
    daemon._nflog_alarm(rec, {})
    daemon.eve.close()
    (alarm,) = [json.loads(line) for line in (tmp_path / "log" / "eve.json").read_text().splitlines()]
    assert alarm["alert"]["signature"] == "VCR fakeav: listed host (3)" and alarm["alert"]["action"] == "blocked"
    assert daemon.nflog_count == 1


def test_the_daemon_starts_the_service_the_new_engine_asks_for(daemon: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.dataplane import blockpage

    started: list[tuple[Any, ...]] = []

    class Server:
        def __init__(self, address: str, port: int, describe: Any, box: str = "") -> None:
            started.append((address, port, describe("x.example"), box))

        def start(self) -> None:
            pass

    monkeypatch.setattr(blockpage, "BlockPageServer", Server)
    daemon._start_services()
    assert started == [("192.0.2.2", 80, (["malware"], "blocked"), "fake-box")]


def test_reload_rebuilds_the_engines_that_own_kernel_sets(tmp_path: Path, daemon: Any, kernel: Kernel) -> None:
    first = daemon._running(FakeAv)
    assert first is not None and len(first.listed) == 3
    publish(tmp_path / "bundles", "2026.12.2", ["203.0.113.5"])
    kernel.calls.clear()
    daemon._reload()
    assert daemon.reloads["failed"] == 0, daemon.reloads
    fresh = daemon._running(FakeAv)
    assert fresh is not first and fresh.listed == ["203.0.113.5"]
    assert "add vcr-test-av4-new 203.0.113.5 -exist" in kernel.restored()
    assert daemon.status()["threat_sets"]["entries"]["vcr-test-av4"] == 1
    assert daemon.status()["threat_sets"]["version"] == "2026.12.2"


def test_the_heartbeat_reports_the_signature_versions_the_engines_name(daemon: Any) -> None:
    from agent.link.health import Versions, engines_report

    status = {"engines": {**daemon.reload_summary, "ips": {"rules_loaded": 5, "signatures": {"ips": "sha256:0123"}},
                          "firewall": {"rules": 3}}}
    assert Versions(daemon.cfg).signatures(status) == {"av": "2026.12.1", "ips": "sha256:0123"}
    report = engines_report(status)
    assert report["fakeav"]["summary"] == {"listed": 3, "version": "2026.12.1"}, "the versions go to signatures"
