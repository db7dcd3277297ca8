"""Remote configuration (agent/lifecycle/remoteconfig.py): validation, protected settings, history, rollback,
commit-confirmed with a fake clock, restart during the window, replacement-box restore."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.lifecycle.backup import encrypt_b64
from lab.agentrun import lab_config
from agent.lifecycle.remoteconfig import ConfigTaskError, RemoteConfig, remap_ports, restore_backup


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


class Posts:
    def __init__(self) -> None:
        self.got: list[tuple[int, str, str]] = []

    def post(self, task_id: int, status: str, detail: str = "") -> None:
        self.got.append((task_id, status, detail))


def dump(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


@pytest.fixture
def box(tmp_path: Path):
    data = lab_config(tmp_path)
    data["center"] = {"enabled": False, "state_file": str(tmp_path / "lib" / "center.json")}
    data["remote_config"] = {"confirm_window": 20}
    path = tmp_path / "vcr-agent.yaml"
    path.write_text(dump(data), encoding="utf-8")
    return path, data


def make(path: Path, tmp_path: Path, **kw: Any) -> tuple[RemoteConfig, Clock, Posts, list, list]:
    clock, posts, reloads, alarms = Clock(), Posts(), [], []

    def reload(timeout: float):
        reloads.append(yaml.safe_load(path.read_text()))
        return True, "2 workers reloaded"

    kw.setdefault("reload", reload)
    rc = RemoteConfig(path, tmp_path / "lib", runner=posts, alarm=alarms.append, clock=clock, **kw)
    return rc, clock, posts, reloads, alarms


def with_rule(data: dict[str, Any], port: int) -> dict[str, Any]:
    d = copy.deepcopy(data)
    d["engines"]["firewall"]["services"][f"p{port}"] = [f"tcp/{port}"]
    d["engines"]["firewall"]["rules"].append({"name": f"block {port}", "from": "lan", "to": "wan",
                                              "service": f"p{port}", "action": "reject"})
    return d


def progress_log():
    seen: list[tuple[str, str]] = []
    return seen, (lambda s, d: seen.append((s, d)))


def test_apply_confirm_and_history(box, tmp_path):
    path, data = box
    rc, clock, posts, reloads, _ = make(path, tmp_path)
    seen, progress = progress_log()
    rc.handle_task({"revision": 1, "config": dump(with_rule(data, 8081)), "_task_id": 11}, progress)
    assert [s for s, _ in seen] == ["applying", "confirming"]
    live = yaml.safe_load(path.read_text())
    assert live["engines"]["firewall"]["rules"][-1]["name"] == "block 8081"
    assert len(reloads) == 1 and rc.pending["revision"] == 1
    # a check-in that started before the reload does not confirm; a later one does
    rc.checked_in(clock.t - 1)
    assert rc.pending is not None
    clock.t += 5
    rc.checked_in(clock.t)
    assert rc.pending is None and posts.got[-1][:2] == (11, "applied")
    hist = rc.history.entries()
    assert [(m["revision"], m["status"], m["source"]) for m in hist] == [(0, "applied", "local"), (1, "applied", "center")]
    assert hist[-1]["current"] and not hist[0]["current"] and rc.current_revision() == 1
    clock.t += 1000
    rc.tick()  # nothing pending: nothing happens
    assert yaml.safe_load(path.read_text())["engines"]["firewall"]["rules"][-1]["name"] == "block 8081"


def test_no_checkin_in_window_rolls_back(box, tmp_path):
    path, data = box
    original = path.read_text()
    rc, clock, posts, reloads, alarms = make(path, tmp_path)
    rc.handle_task({"revision": 2, "config": dump(with_rule(data, 8082)), "_task_id": 12}, lambda s, d: None)
    clock.t += 19
    rc.tick()
    assert rc.pending is not None
    clock.t += 2
    rc.tick()
    assert rc.pending is None
    assert path.read_text() == original and len(reloads) == 2
    assert posts.got[-1][:2] == (12, "rolled_back") and "20 s confirm window" in posts.got[-1][2]
    assert alarms and alarms[-1]["agent"]["problem"] == "config_rolled_back"
    statuses = {m["revision"]: m["status"] for m in rc.history.entries()}
    assert statuses == {0: "applied", 2: "rolled_back"} and rc.current_revision() == 0


def test_restart_during_window(box, tmp_path):
    path, data = box
    original = path.read_text()
    rc, clock, posts, _, _ = make(path, tmp_path)
    rc.handle_task({"revision": 3, "config": dump(with_rule(data, 8083)), "_task_id": 13}, lambda s, d: None)
    # the agent restarts within the window: still pending, a check-in confirms
    rc2, clock2, posts2, _, _ = make(path, tmp_path)
    clock2.t = clock.t + 10
    rc2.tick()
    assert rc2.pending and rc2.pending["revision"] == 3
    rc2.checked_in(clock2.t)
    assert posts2.got[-1][:2] == (13, "applied")
    # another revision; the agent is down past the window: rolled back at start
    rc2.handle_task({"revision": 4, "config": dump(with_rule(data, 9999)), "_task_id": 14}, lambda s, d: None)
    rc3, clock3, posts3, reloads3, _ = make(path, tmp_path)
    clock3.t = clock2.t + 600
    rc3.start()
    rc3.stop()
    assert posts3.got[-1][:2] == (14, "rolled_back") and len(reloads3) == 1
    live = yaml.safe_load(path.read_text())
    assert live["engines"]["firewall"]["rules"][-1]["name"] == "block 8083" and path.read_text() != original


def test_validation_error_names_key_and_applies_nothing(box, tmp_path):
    path, data = box
    original = path.read_text()
    rc, _, posts, reloads, _ = make(path, tmp_path)
    bad = copy.deepcopy(data)
    bad["dataplane"]["queue_maxlen"] = 3
    with pytest.raises(ConfigTaskError) as e:
        rc.handle_task({"revision": 5, "config": dump(bad)}, lambda s, d: None)
    assert "dataplane.queue_maxlen" in str(e.value) and "revision 5" in str(e.value)
    bad2 = copy.deepcopy(data)
    bad2["engines"]["firewall"]["rules"].append({"name": "x", "from": "lan", "to": "wan", "service": "nope", "action": "deny"})
    with pytest.raises(ConfigTaskError, match="nope"):
        rc.handle_task({"revision": 6, "config": dump(bad2)}, lambda s, d: None)
    with pytest.raises(ConfigTaskError, match="YAML"):
        rc.handle_task({"revision": 7, "config": "a: [b"}, lambda s, d: None)
    with pytest.raises(ConfigTaskError, match="bad config task"):
        rc.handle_task({"config": "x"}, lambda s, d: None)
    assert path.read_text() == original and reloads == [] and rc.pending is None


@pytest.mark.parametrize("key,value", [
    ("settings_sheet.management_ip", "192.0.2.3/24"),
    ("settings_sheet.gateway", "192.0.2.254"),
    ("settings_sheet.dns", ["9.9.9.9"]),
    ("center.url", "https://evil.example"),
    ("center.heartbeat_interval", 5),
    ("bridge.wan_port", "eth9"),
    ("remote_config.confirm_window", 3600),
])
def test_protected_settings_refused(box, tmp_path, key, value):
    path, data = box
    original = path.read_text()
    rc, _, _, reloads, alarms = make(path, tmp_path)
    new = copy.deepcopy(data)
    section, name = key.split(".")
    new.setdefault(section, {})[name] = value
    with pytest.raises(ConfigTaskError, match=f"protected setting {key.split('.')[0]}"):
        rc.handle_task({"revision": 8, "config": dump(new)}, lambda s, d: None)
    assert path.read_text() == original and reloads == []
    assert alarms[-1]["agent"]["problem"] == "protected_setting"
    assert alarms[-1]["agent"]["key"] in (key, section)


def test_omitted_protected_sections_are_kept(box, tmp_path):
    path, data = box
    rc, clock, _, _, _ = make(path, tmp_path)
    new = with_rule(data, 8081)
    del new["center"], new["remote_config"], new["settings_sheet"]["dns"]
    rc.handle_task({"revision": 9, "config": dump(new)}, lambda s, d: None)
    live = yaml.safe_load(path.read_text())
    assert live["center"] == data["center"] and live["settings_sheet"]["dns"] == data["settings_sheet"]["dns"]


def test_reload_failure_restores_previous(box, tmp_path):
    path, data = box
    original = path.read_text()
    calls = []

    def reload(timeout):
        calls.append(1)
        return (False, "worker 0: boom") if len(calls) == 1 else (True, "ok")

    rc, _, _, _, _ = make(path, tmp_path, reload=reload)
    with pytest.raises(ConfigTaskError, match="boom"):
        rc.handle_task({"revision": 10, "config": dump(with_rule(data, 8081))}, lambda s, d: None)
    assert path.read_text() == original and len(calls) == 2 and rc.pending is None


def test_history_keeps_at_least_20_and_local_rollback(box, tmp_path):
    path, data = box
    rc, clock, _, _, _ = make(path, tmp_path)
    for rev in range(1, 31):
        rc.handle_task({"revision": rev, "config": dump(with_rule(data, 10000 + rev))}, lambda s, d: None)
        clock.t += 1
        rc.checked_in(clock.t)
    entries = rc.history.entries()
    assert len(entries) == 30 and entries[-1]["revision"] == 30  # keep = 30 by default (>= 20)
    target = rc.rollback(15)
    assert target["revision"] == 15 and rc.current_revision() == 15
    live = yaml.safe_load(path.read_text())
    assert live["engines"]["firewall"]["rules"][-1]["name"] == "block 10015"
    assert {m["revision"]: m["status"] for m in rc.history.entries()}[30] == "rolled_back"
    with pytest.raises(ConfigTaskError, match="not in the history"):
        rc.rollback(999)


def test_same_revision_again_is_a_no_op(box, tmp_path):
    path, data = box
    rc, clock, _, reloads, _ = make(path, tmp_path)
    text = dump(with_rule(data, 8081))
    rc.handle_task({"revision": 1, "config": text}, lambda s, d: None)
    clock.t += 1
    rc.checked_in(clock.t)
    seen, progress = progress_log()
    rc.handle_task({"revision": 1, "config": text}, progress)
    assert [s for s, _ in seen] == ["applying", "applied"] and len(reloads) == 1


def test_backup_sent_after_confirmation(box, tmp_path):
    path, data = box
    sent: list[tuple[int, str]] = []
    cred = {"contract_id": "C-9", "backup_secret": "k" * 43}
    rc, clock, _, _, _ = make(path, tmp_path, backup=lambda rev, blob: sent.append((rev, blob)), credential=lambda: cred)
    rc.handle_task({"revision": 1, "config": dump(with_rule(data, 8081))}, lambda s, d: None)
    assert sent == []  # not before it is confirmed
    clock.t += 1
    rc.checked_in(clock.t)
    assert [r for r, _ in sent] == [1]
    from agent.lifecycle.backup import decrypt_b64
    assert "block 8081" in decrypt_b64(sent[0][1], secret=cred["backup_secret"], contract_id="C-9", revision=1)["config"]
    rc.checked_in(clock.t + 1)
    assert len(sent) == 1  # once


def test_remap_ports():
    local = {"bridge": {"lan_port": "enp1s0", "wan_port": "enp2s0"}}
    restored = {"bridge": {"lan_port": "lan0", "wan_port": "wan0"}}
    exists = {"enp1s0", "enp2s0"}.__contains__
    notes = remap_ports(restored, local, exists)
    assert restored["bridge"] == {"lan_port": "enp1s0", "wan_port": "enp2s0"}
    assert notes == ["bridge.lan_port: lan0 -> enp1s0", "bridge.wan_port: wan0 -> enp2s0"]
    same = {"bridge": {"lan_port": "enp1s0"}}
    assert remap_ports(same, local, exists) == ["bridge.wan_port: wan0 -> enp2s0"]


def test_restore_backup_on_replacement_box(box, tmp_path):
    path, data = box
    customer = with_rule(data, 8081)
    customer["settings_sheet"]["contact"] = "経理部 佐藤"
    customer["settings_sheet"]["management_ip"] = "192.0.2.5/24"
    customer["center"] = {"enabled": True, "url": "https://old.example", "state_file": "/elsewhere/center.json"}
    customer["bridge"]["lan_port"] = "eth0"
    customer["bridge"]["wan_port"] = "eth1"
    secret = "contract-secret"
    restore = {"revision": 7, "blob": encrypt_b64(dump(customer), secret=secret, contract_id="C-1", revision=7),
               "created_at": "2026-01-01T00:00:00Z"}
    state = {"contract_id": "C-1", "backup_secret": secret}
    report = restore_backup(path, state, restore, exists={"lan0", "wan0"}.__contains__)
    live = yaml.safe_load(path.read_text())
    assert live["settings_sheet"]["contact"] == "経理部 佐藤" and live["settings_sheet"]["management_ip"] == "192.0.2.5/24"
    assert live["engines"]["firewall"]["rules"][-1]["name"] == "block 8081"
    assert live["center"] == data["center"]  # this box's own link settings
    assert (live["bridge"]["lan_port"], live["bridge"]["wan_port"]) == ("lan0", "wan0")
    assert report["remapped"] == ["bridge.lan_port: eth0 -> lan0", "bridge.wan_port: eth1 -> wan0"]
    rc = RemoteConfig(path, tmp_path / "lib")
    assert rc.current_revision() == 7 and rc.history.current()["source"] == "restore"
    from agent.lifecycle.backup import BackupError
    with pytest.raises(BackupError):
        restore_backup(path, {"contract_id": "C-1", "backup_secret": "wrong"}, restore)


def test_cli_history_and_rollback(box, tmp_path, capsys):
    from agent.cli import main
    path, data = box
    rc, clock, _, _, _ = make(path, tmp_path)
    for rev in (1, 2):
        rc.handle_task({"revision": rev, "config": dump(with_rule(data, 8080 + rev))}, lambda s, d: None)
        clock.t += 1
        rc.checked_in(clock.t)
    assert main(["config", "history", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    rows = out.splitlines()[1:]
    assert len(rows) == 3 and all(" applied " in r for r in rows) and rows[-1].startswith("*")
    assert main(["config", "rollback", "1", "-c", str(path)]) == 0
    assert "rolled back to revision 1" in capsys.readouterr().out
    assert main(["config", "history", "--json", "-c", str(path)]) == 0
    hist = json.loads(capsys.readouterr().out)
    assert [(m["revision"], m["status"], m["current"]) for m in hist][-2:] == [(1, "applied", True), (2, "rolled_back", False)]


# -- security issue, item 1: the center may set only what a change request can ask for ---------------------

EVIL = "/tmp/vcr-pwned"
ATTACK_COMMAND = ["/bin/sh", "-c", f"id > {EVIL}"]


def set_key(data: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    d = copy.deepcopy(data)
    node = d
    *parents, last = key.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return d


def run_task(rc: RemoteConfig, tmp_path: Path, params: dict[str, Any]) -> list[tuple[int, str, str]]:
    """The real task runner with the config handler: what the center would see."""
    from agent.link.tasks import TaskRunner

    got: list[tuple[int, str, str]] = []
    runner = TaskRunner(tmp_path / "runner", lambda tid, st, detail: got.append((tid, st, detail)), retry_base=0.01)
    runner.register("config", rc.handle_task)
    runner.submit([{"task_id": 77, "kind": "config", "params": params}])
    assert runner.wait_idle(10)
    deadline = __import__("time").monotonic() + 5
    while runner.pending_statuses() and __import__("time").monotonic() < deadline:
        __import__("time").sleep(0.01)
    runner.stop()
    return got


def test_restart_command_from_the_center_is_refused(box, tmp_path):
    """The attack: a revision sets upgrade.restart_command (run as root at the next upgrade)."""
    path, data = box
    original = path.read_text()
    rc, _, _, reloads, alarms = make(path, tmp_path)
    evil = set_key(with_rule(data, 8081), "upgrade.restart_command", ATTACK_COMMAND)
    got = run_task(rc, tmp_path, {"revision": 40, "config": dump(evil)})
    assert path.read_text() == original and reloads == [] and rc.pending is None  # nothing applied
    final = got[-1]
    assert final[:2] == (77, "failed")
    assert "protected setting upgrade.restart_command cannot be changed remotely" in final[2]
    assert "a command the box runs as root" in final[2] and "root 権限" in final[2]
    assert alarms[-1]["agent"]["problem"] == "protected_setting"
    assert alarms[-1]["agent"]["key"] == "upgrade.restart_command"
    assert not any(m.get("revision") == 40 for m in rc.history.entries())


@pytest.mark.parametrize("key,value,kind", [
    ("upgrade.restart_command", ATTACK_COMMAND, "command"),
    ("upgrade.enabled", True, "trust"),
    ("upgrade.precheck", False, "trust"),
    ("upgrade.releases_dir", "/tmp/releases", "trust"),
    ("updates.repository_url", "https://evil.example/tuf/", "trust"),
    ("updates.trusted_root", "/tmp/evil-root.json", "trust"),
    ("updates.metadata_dir", "/tmp/evil-metadata", "trust"),
    ("updates.bundles_dir", "/tmp/evil-bundles", "trust"),
    ("updates.ca_file", "/tmp/evil-ca.pem", "trust"),
    ("updates.min_rule_ratio", 0.0, "trust"),
    ("logging.dir", "/etc/cron.d", "path"),
    ("bridge.resolv_conf", "/etc/passwd", "path"),
    ("bridge.state_file", "/etc/shadow", "path"),
    ("engines.ips.rule_files", ["/tmp/evil.rules"], "path"),
    ("engines.ips.classification", "/tmp/evil.config", "path"),
    ("engines.webfilter.database", "/tmp/evil-db", "path"),
    ("engines.atp.feeds", [{"path": "/etc/shadow", "format": "plain"}], "path"),
    ("engines.webfilter.lookup", {"enabled": True, "url": "https://evil.example/c", "ca_file": "/tmp/ca.pem"}, "trust"),
    ("engines.webfilter.sinkhole_ipv4", "203.0.113.66", "trust"),
    ("engines.probe", {"enabled": True, "ports": [443], "url": "http://evil.example/"}, "trust"),
    ("dataplane.queue_base", 100, "plumbing"),
    ("center.ca_file", "/tmp/evil-ca.pem", "trust"),
    ("remote_config.history", 1000, "trust"),
    ("settings_sheet.dns", ["203.0.113.53"], "management"),
    ("something_new", {"x": 1}, "other"),
])
def test_local_only_keys_are_refused(box, tmp_path, key, value, kind):
    path, data = box
    original = path.read_text()
    rc, _, _, reloads, alarms = make(path, tmp_path)
    with pytest.raises(ConfigTaskError) as e:
        rc.handle_task({"revision": 41, "config": dump(set_key(data, key, value))}, lambda s, d: None)
    assert f"protected setting {key}" in str(e.value) and "cannot be changed remotely" in str(e.value)
    assert path.read_text() == original and reloads == []
    assert alarms[-1]["agent"]["key"].startswith(key)
    from agent.lifecycle.remotekeys import reason_for
    assert reason_for(tuple(alarms[-1]["agent"]["key"].split(".")))[0] == kind


def test_every_refused_key_is_named(box, tmp_path):
    path, data = box
    rc, _, _, _, alarms = make(path, tmp_path)
    evil = set_key(set_key(data, "upgrade.restart_command", ATTACK_COMMAND), "updates.trusted_root", "/tmp/r.json")
    with pytest.raises(ConfigTaskError) as e:
        rc.handle_task({"revision": 42, "config": dump(evil)}, lambda s, d: None)
    assert "upgrade.restart_command" in str(e.value) and "updates.trusted_root" in str(e.value)
    assert set(alarms[-1]["agent"]["keys"]) == {"upgrade.restart_command", "updates.trusted_root"}


def test_allowed_change_applies_and_local_only_keys_stay(box, tmp_path):
    """A category change applies; a revision that leaves local-only keys out keeps the box's values."""
    path, data = box
    local = set_key(data, "upgrade.restart_command", ["systemctl", "restart", "vcr-agent"])
    local = set_key(local, "updates.trusted_root", "/var/lib/vcr-agent/tuf/root.json")
    path.write_text(dump(local), encoding="utf-8")
    rc, clock, posts, reloads, _ = make(path, tmp_path)
    rev = copy.deepcopy(local)
    rev["engines"]["webfilter"]["blocked"] = [*rev["engines"]["webfilter"]["blocked"], "gambling"]
    rev["settings_sheet"]["contact"] = "総務部 鈴木"
    for section in ("upgrade", "updates", "logging", "bridge", "center", "remote_config"):
        rev.pop(section, None)
    del rev["engines"]["ips"]["rule_files"], rev["engines"]["webfilter"]["database"]
    rc.handle_task({"revision": 43, "config": dump(rev), "_task_id": 43}, lambda s, d: None)
    live = yaml.safe_load(path.read_text())
    assert "gambling" in live["engines"]["webfilter"]["blocked"] and live["settings_sheet"]["contact"] == "総務部 鈴木"
    for key in ("upgrade", "updates", "bridge", "center", "remote_config"):
        assert live[key] == local[key], key
    assert live["logging"]["dir"] == local["logging"]["dir"]
    assert live["engines"]["ips"]["rule_files"] == local["engines"]["ips"]["rule_files"]
    assert live["engines"]["webfilter"]["database"] == local["engines"]["webfilter"]["database"]
    assert len(reloads) == 1
    clock.t += 1
    rc.checked_in(clock.t)
    assert posts.got[-1][:2] == (43, "applied")


def test_repeating_the_box_values_is_not_a_change(box, tmp_path):
    """The whole file with the box's own local-only values (or their defaults) applies."""
    path, data = box
    rc, _, _, reloads, _ = make(path, tmp_path)
    rev = with_rule(data, 8085)
    rev["upgrade"] = {"restart_command": ["systemctl", "--no-block", "restart", "vcr-agent.service"]}  # the default
    rc.handle_task({"revision": 44, "config": dump(rev)}, lambda s, d: None)
    assert len(reloads) == 1 and yaml.safe_load(path.read_text())["engines"]["firewall"]["rules"][-1]["name"] == "block 8085"
    assert "upgrade" not in yaml.safe_load(path.read_text())  # the box's (absent) value is kept


def test_restore_backup_keeps_the_boxs_local_only_keys(box, tmp_path):
    """A backup (the center holds its key) cannot carry a command, a path or a trust setting."""
    path, data = box
    customer = with_rule(data, 8086)
    customer["settings_sheet"]["management_ip"] = "192.0.2.6/24"
    customer = set_key(customer, "upgrade.restart_command", ATTACK_COMMAND)
    customer = set_key(customer, "updates.trusted_root", "/tmp/evil-root.json")
    customer = set_key(customer, "updates.repository_url", "https://evil.example/tuf/")
    customer = set_key(customer, "logging.dir", "/etc/cron.d")
    customer = set_key(customer, "bridge.resolv_conf", "/etc/passwd")
    customer = set_key(customer, "engines.webfilter.lookup", {"url": "https://evil.example/c", "ca_file": "/tmp/ca.pem"})
    secret = "contract-secret"
    restore = {"revision": 9, "blob": encrypt_b64(dump(customer), secret=secret, contract_id="C-1", revision=9)}
    report = restore_backup(path, {"contract_id": "C-1", "backup_secret": secret}, restore,
                            exists={"lan0", "wan0"}.__contains__)
    live = yaml.safe_load(path.read_text())
    assert live["engines"]["firewall"]["rules"][-1]["name"] == "block 8086"
    assert live["settings_sheet"]["management_ip"] == "192.0.2.6/24"  # where the old box stood
    assert "upgrade" not in live and "updates" not in live
    assert live["logging"]["dir"] == data["logging"]["dir"] and live["bridge"]["resolv_conf"] == data["bridge"]["resolv_conf"]
    assert "url" not in (live["engines"]["webfilter"].get("lookup") or {})
    kept = set(report["kept_local"])
    assert {"upgrade.restart_command", "updates.trusted_root", "updates.repository_url", "logging.dir",
            "bridge.resolv_conf", "engines.webfilter.lookup.url", "engines.webfilter.lookup.ca_file"} <= kept


# -- vcr-agent config check-remote -------------------------------------------------------------------------

def test_check_remote_cli(box, tmp_path, capsys):
    from agent.cli import main
    path, data = box
    ok = tmp_path / "ok.yaml"
    ok.write_text(dump({"engines": {"webfilter": {"blocked": ["malware", "gambling"]},
                                    "firewall": data["engines"]["firewall"]},
                        "settings_sheet": {"contact": "総務部"}}), encoding="utf-8")
    assert main(["config", "check-remote", str(ok)]) == 0
    out = capsys.readouterr().out
    assert "適用できます" in out and "may apply" in out
    assert main(["config", "check-remote", str(ok), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["ok"] is True and res["refused"] == []

    bad = tmp_path / "bad.yaml"
    bad.write_text(dump({"upgrade": {"restart_command": ATTACK_COMMAND},
                         "updates": {"trusted_root": "/tmp/r.json"},
                         "engines": {"webfilter": {"blocked": ["gambling"], "database": "/tmp/db"}}}), encoding="utf-8")
    assert main(["config", "check-remote", str(bad), "--json"]) == 1
    res = json.loads(capsys.readouterr().out)
    assert res["ok"] is False
    by_key = {r["key"]: r for r in res["refused"]}
    assert set(by_key) == {"upgrade.restart_command", "updates.trusted_root", "engines.webfilter.database"}
    assert by_key["upgrade.restart_command"]["class"] == "command"
    assert by_key["engines.webfilter.database"]["class"] == "path"
    assert "root" in by_key["upgrade.restart_command"]["reason_en"] and by_key["upgrade.restart_command"]["reason_ja"]
    assert main(["config", "check-remote", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "適用できません" in out and "may not apply" in out and "upgrade.restart_command" in out

    # the box's whole file: without the box's config every local-only key is refused (the center
    # cannot know the box's values); checked against the box's own config, only changes are
    assert main(["config", "check-remote", str(path), "--json"]) == 1
    res = json.loads(capsys.readouterr().out)
    assert "center.state_file" in {r["key"] for r in res["refused"]} and all(r["how"] == "present" for r in res["refused"])
    assert main(["config", "check-remote", str(path), "--json", "-c", str(path)]) == 0
    capsys.readouterr()
    changed = tmp_path / "changed.yaml"
    changed.write_text(dump(set_key(data, "logging.dir", "/etc/cron.d")), encoding="utf-8")
    assert main(["config", "check-remote", str(changed), "--json", "-c", str(path)]) == 1
    assert [r["key"] for r in json.loads(capsys.readouterr().out)["refused"]] == ["logging.dir"]

    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [b", encoding="utf-8")
    assert main(["config", "check-remote", str(broken), "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["ok"] is False
    assert main(["config", "check-remote", str(tmp_path / "missing.yaml"), "--json"]) == 2
    capsys.readouterr()
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text(dump({"dataplane": {"queue_maxlen": 3}}), encoding="utf-8")
    assert main(["config", "check-remote", str(invalid), "--json"]) == 1
    res = json.loads(capsys.readouterr().out)
    assert res["refused"][0]["key"] == "dataplane.queue_maxlen" and res["refused"][0]["class"] == "invalid"
