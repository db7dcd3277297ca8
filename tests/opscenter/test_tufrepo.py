"""The center's TUF repository (opscenter/tufrepo.py): keys, publishing, expiry renewal, key
rotation, serving under /tuf/ of a FastAPI app, and the vcr-opscenter subcommands."""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import stat
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from tuf.api.metadata import Metadata, Root, Timestamp

from opscenter import tufrepo
from opscenter.tufrepo import RepoError, TufRepo

ROOT = Path(__file__).resolve().parents[2]
LOCAL_RULES = ROOT / "config" / "rules" / "local.rules"


@pytest.fixture
def repo(tmp_path: Path) -> TufRepo:
    r = TufRepo(tmp_path / "repo")
    r.init()
    return r


def rules_dir(tmp_path: Path) -> Path:
    d = tmp_path / "rules-src"
    d.mkdir(exist_ok=True)
    shutil.copy(LOCAL_RULES, d / "local.rules")
    (d / "notes.txt").write_text("not a rule file\n")
    return d


def test_init_layout_and_key_separation(tmp_path: Path, repo: TufRepo) -> None:
    meta = repo.meta_dir
    for name in ("1.root.json", "root.json", "1.targets.json", "1.snapshot.json", "timestamp.json"):
        assert (meta / name).exists(), name
    root = Metadata[Root].from_file(str(repo.root_path))
    assert root.signed.consistent_snapshot and root.signed.version == 1
    assert all(k.keytype == "ed25519" for k in root.signed.keys.values())
    assert len({tuple(r.keyids) for r in root.signed.roles.values()}) == 4, "one key per role"
    offline = sorted(p.name.split("-")[0] for p in repo.offline_keys.glob("*.pem"))
    online = sorted(p.name.split("-")[0] for p in repo.online_keys.glob("*.pem"))
    assert offline == ["root", "targets"] and online == ["snapshot", "timestamp"]
    for p in [*repo.offline_keys.glob("*.pem"), *repo.online_keys.glob("*.pem")]:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert not list(repo.dir.rglob("*.pem")), "no private key inside the served folder"
    with pytest.raises(RepoError, match="already"):
        repo.init()
    repo.init(force=True)
    assert Metadata[Root].from_file(str(repo.root_path)).signed.keys.keys() != root.signed.keys.keys()


def test_make_bundle_manifest(tmp_path: Path) -> None:
    out = tufrepo.make_bundle("ips", "2026.11.25.1", rules_dir(tmp_path), tmp_path / "b.tar.gz")
    m = tufrepo.read_manifest(out)
    assert m["kind"] == "ips" and m["version"] == "2026.11.25.1" and m["created"].endswith("Z")
    assert m["rule_count"] == 5, "the five active rules of local.rules; comments and other files do not count"
    assert {f["path"] for f in m["files"]} == {"local.rules", "notes.txt"}
    with tarfile.open(out) as tar:
        assert sorted(tar.getnames()) == ["local.rules", "manifest.json", "notes.txt"]
        assert all(mem.isreg() and not mem.name.startswith(("/", "..")) for mem in tar.getmembers())
    assert tufrepo.count_rules("webcat", {"a/domains": b"# x\nevil.example\n\nbad.example\n"}) == 2
    with pytest.raises(RepoError, match="unknown bundle kind"):
        tufrepo.make_bundle("nope", "1", LOCAL_RULES, tmp_path / "x.tar.gz")
    with pytest.raises(RepoError, match="bad version"):
        tufrepo.make_bundle("ips", "../1", LOCAL_RULES, tmp_path / "x.tar.gz")


def test_publish_signs_a_consistent_new_repository(tmp_path: Path, repo: TufRepo) -> None:
    res = repo.publish("ips", "2026.11.25.1", rules_dir(tmp_path))
    assert res.target == "ips/ips-2026.11.25.1.tar.gz" and res.rule_count == 5 and res.targets_version == 2
    served = repo.targets_dir / "ips" / f"{res.sha256}.ips-2026.11.25.1.tar.gz"
    assert served.stat().st_size == res.length
    targets = repo.load("targets")
    tf = targets.signed.targets[res.target]
    assert tf.custom == {"kind": "ips", "version": "2026.11.25.1", "rule_count": 5}
    assert tf.hashes == {"sha256": res.sha256}
    # every role verifies against root, and each file points at the next one's version
    root = repo.load("root")
    for role in ("targets", "snapshot", "timestamp"):
        root.verify_delegate(role, repo.load(role))
    snap, ts = repo.load("snapshot"), repo.load("timestamp")
    assert snap.signed.meta["targets.json"].version == 2 and (repo.meta_dir / "2.targets.json").exists()
    assert ts.signed.snapshot_meta.version == snap.signed.version == 2 and (repo.meta_dir / "2.snapshot.json").exists()
    with pytest.raises(RepoError, match="already published"):
        repo.publish("ips", "2026.11.25.1", rules_dir(tmp_path))
    # a ready bundle is published as is, if its manifest agrees
    b = tufrepo.make_bundle("webcat", "7", rules_dir(tmp_path), tmp_path / "w.tar.gz")
    assert repo.publish("webcat", "7", b).sha256
    with pytest.raises(RepoError, match="manifest says"):
        repo.publish("webcat", "8", b)
    assert [t["version"] for t in repo.list_targets("ips")] == ["2026.11.25.1"]
    repo.unpublish("ips", "2026.11.25.1")
    assert repo.list_targets("ips") == []


def test_refresh_renews_what_is_near_expiry(tmp_path: Path, repo: TufRepo) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    assert repo.refresh(now=now) == {"renewed": [], "pending": []}
    v = repo.load("timestamp").signed.version
    assert repo.refresh(now=now + dt.timedelta(hours=13))["renewed"] == ["timestamp"]
    assert repo.load("timestamp").signed.version == v + 1
    assert repo.refresh(now=now + dt.timedelta(days=8))["renewed"] == ["snapshot", "timestamp"]
    assert repo.refresh(now=now + dt.timedelta(days=61))["renewed"] == ["targets", "snapshot", "timestamp"]
    assert repo.load("targets").signed.expires > now + dt.timedelta(days=89)


def test_offline_keys_can_live_elsewhere(tmp_path: Path, repo: TufRepo) -> None:
    vault = tmp_path / "usb-stick"
    shutil.move(str(repo.offline_keys), vault)
    now = dt.datetime.now(dt.timezone.utc)
    # the cron needs only the online keys
    assert repo.refresh(now=now + dt.timedelta(hours=13))["renewed"] == ["timestamp"]
    # targets near expiry without its key: reported, and the rest still renewed
    done = repo.refresh(now=now + dt.timedelta(days=61))
    assert done["pending"] and "targets" in done["pending"][0] and "snapshot" in done["renewed"]
    with pytest.raises(RepoError, match="offline keys"):
        repo.publish("ips", "1", rules_dir(tmp_path))
    with_vault = TufRepo(repo.dir, offline_keys_dir=vault)
    assert with_vault.publish("ips", "1", rules_dir(tmp_path)).targets_version == 2


def test_timestamp_key_rotation(repo: TufRepo) -> None:
    root1 = repo.load("root")
    old = root1.signed.roles["timestamp"].keyids[0]
    new = repo.rotate_key("timestamp")
    assert new != old
    root2 = Metadata[Root].from_file(str(repo.meta_dir / "2.root.json"))
    root1.verify_delegate("root", root2)  # the old root vouches for the new one
    root2.verify_delegate("root", root2)
    assert root2.signed.roles["timestamp"].keyids == [new]
    ts = Metadata[Timestamp].from_file(str(repo.meta_dir / "timestamp.json"))
    root2.verify_delegate("timestamp", ts)
    with pytest.raises(Exception):
        root1.verify_delegate("timestamp", ts)
    assert list(repo.online_keys.glob("timestamp-*.pem.retired"))
    assert repo.bump_timestamp() == ts.signed.version + 1  # signs with the new key from now on


def _serve_app(app: Any) -> tuple[Any, threading.Thread, int]:
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    return server, t, server.servers[0].sockets[0].getsockname()[1]


def test_mount_serves_the_repository_to_ngclient(tmp_path: Path, repo: TufRepo) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from tuf.ngclient import Updater

    res = repo.publish("ips", "2026.11.25.1", rules_dir(tmp_path))
    app = FastAPI()
    tufrepo.mount(app, repo.dir)
    client = TestClient(app)
    r = client.get("/tuf/metadata/1.root.json")
    assert r.status_code == 200 and r.content == (repo.meta_dir / "1.root.json").read_bytes()
    assert client.get("/tuf/metadata/99.root.json").status_code == 404  # ngclient's "no newer root"
    server, thread, port = _serve_app(app)
    try:
        base = f"http://127.0.0.1:{port}/tuf/"
        (tmp_path / "client").mkdir()
        up = Updater(str(tmp_path / "client"), base + "metadata/", str(tmp_path / "dl"), base + "targets/",
                     bootstrap=repo.root_path.read_bytes())
        up.refresh()
        info = up.get_targetinfo(res.target)
        assert info is not None and info.custom["rule_count"] == 5
        path = up.download_target(info)
        assert tufrepo.read_manifest(path)["version"] == "2026.11.25.1"
    finally:
        server.should_exit = True
        thread.join(5)


def test_cli_init_publish_refresh(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from opscenter.cli import main

    repo_dir = str(tmp_path / "r")
    assert main(["tuf-init", "--repo", repo_dir]) == 0
    assert "trusted root" in capsys.readouterr().out
    assert main(["publish", "--repo", repo_dir, "ips", "2026.11.25.1", str(rules_dir(tmp_path))]) == 0
    assert "ips/ips-2026.11.25.1.tar.gz" in capsys.readouterr().out
    assert main(["publish", "--repo", repo_dir, "ips", "2026.11.25.1", str(rules_dir(tmp_path))]) == 1
    assert "cannot publish" in capsys.readouterr().out
    assert main(["tuf-refresh", "--repo", repo_dir, "--rotate-timestamp-key"]) == 0
    out = capsys.readouterr().out
    status = json.loads(out[out.index("{"):])["status"]
    assert status["root"]["version"] == 2 and status["targets_count"] == 1
    assert main(["tuf-init", "--repo", repo_dir]) == 1
    assert not os.path.exists(os.path.join(repo_dir, "keys"))
