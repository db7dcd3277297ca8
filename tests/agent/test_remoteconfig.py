"""Remote configuration (agent/remoteconfig.py): validation, protected settings, history, rollback,
commit-confirmed with a fake clock, restart during the window, replacement-box restore."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.backup import encrypt_b64
from agent.labrun import lab_config
from agent.remoteconfig import ConfigTaskError, RemoteConfig, remap_ports, restore_backup


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
    from agent.backup import decrypt_b64
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
    from agent.backup import BackupError
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
