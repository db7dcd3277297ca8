"""`vcr-opscenter task add DEVICE config`: the box's allow-list check runs before anything is queued
(security issue, item 1). The check is the agent's own ``config check-remote``, run as a subprocess
(opscenter does not import agent)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from opscenter import enroll
from opscenter.cli import main
from opscenter.db import Database
from opscenter.fleet import list_tasks


@pytest.fixture
def center(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    db = Database(url)
    db.create_tables()
    code = enroll.issue_code(db, "C-CFG").code
    device = enroll.activate(db, code=code, serial="SN-CFG", hostname="", agent_version="", client_ip=None,
                             heartbeat_interval=60)["device_id"]
    return db, ["--db", url], device


def params(revision: int, config: dict) -> str:
    return json.dumps({"revision": revision, "config": yaml.safe_dump(config, allow_unicode=True)})


def test_revision_with_a_command_is_not_queued(center, capsys: pytest.CaptureFixture[str]):
    db, opts, device = center
    evil = {"engines": {"webfilter": {"blocked": ["gambling"]}},
            "upgrade": {"restart_command": ["/bin/sh", "-c", "id > /tmp/pwned"]},
            "updates": {"trusted_root": "/tmp/evil-root.json"}}
    assert main(["task", "add", device, "config", "--params", params(5, evil)] + opts) == 1
    err = capsys.readouterr().err
    assert "登録しません" in err and "not queued" in err
    assert "upgrade.restart_command [command]" in err and "root" in err
    assert "updates.trusted_root [trust]" in err
    assert list_tasks(db, device) == []  # nothing queued


@pytest.mark.parametrize("bad,what", [
    ({"revision": 1}, "params.config"),
    ({"revision": "1", "config": "engines: {}"}, "params.revision"),
    ({"revision": 2, "config": "a: [b"}, "YAML"),
    ({"revision": 3, "config": "bridge:\n  resolv_conf: /etc/passwd\n"}, "bridge.resolv_conf [path]"),
    ({"revision": 4, "config": "settings_sheet:\n  management_ip: 192.0.2.9/24\n  gateway: 192.0.2.1\n"},
     "settings_sheet.management_ip [management]"),
])
def test_malformed_or_local_only_is_not_queued(center, capsys: pytest.CaptureFixture[str], bad, what):
    db, opts, device = center
    assert main(["task", "add", device, "config", "--params", json.dumps(bad)] + opts) == 1
    assert what in capsys.readouterr().err
    assert list_tasks(db, device) == []


def test_allowed_revision_is_queued(center, capsys: pytest.CaptureFixture[str]):
    db, opts, device = center
    good = {"engines": {"webfilter": {"enabled": True, "blocked": ["malware", "phishing", "gambling"]},
                        "firewall": {"rules": [{"name": "block 8081", "from": "lan", "to": "wan",
                                                "service": "tcp/8081", "action": "reject"}]}},
            "settings_sheet": {"contact": "総務部 鈴木"}, "home_net": ["192.0.2.0/24"]}
    assert main(["task", "add", device, "config", "--params", params(6, good), "--json"] + opts) == 0
    task_id = json.loads(capsys.readouterr().out)["task_id"]
    [task] = list_tasks(db, device)
    assert task["task_id"] == task_id and task["kind"] == "config" and task["params"]["revision"] == 6


def test_other_kinds_are_not_checked(center, capsys: pytest.CaptureFixture[str]):
    db, opts, device = center
    assert main(["task", "add", device, "update_check", "--params", "{}"] + opts) == 0
    assert len(list_tasks(db, device)) == 1
