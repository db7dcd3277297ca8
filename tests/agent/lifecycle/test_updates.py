"""Signed bundle updates: a real TUF repository (opscenter.tufrepo) on disk, served over HTTP on
127.0.0.1, and the box's updater (agent.lifecycle.updates, python-tuf ngclient) against it. "Loads" means the
real IPS rule loader: bundles hold rules from config/rules/local.rules (and, in the tests about real
rules, ET Open's from the shared test data), and the reload hook rebuilds the engines from the config
file exactly as the daemon's SIGHUP reload does."""
from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import io
import json
import os
import shutil
import socket
import tarfile
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.engines import build_engines, load_effective_config
from agent.lifecycle import updates
from agent.lifecycle.updates import BundleUpdater, UpdateError, apply_live_bundles, check_clock, unpack_bundle
from agent.link import ntp
from filters.ips.netspec import Variables
from filters.ips.rule_parser import LoadResult, load_classification, load_files
from opscenter import tufrepo
from opscenter.tufrepo import TufRepo
from tests import shared_data as shared

ROOT = Path(__file__).resolve().parents[3]
LOCAL_RULES = ROOT / "config" / "rules" / "local.rules"
CLASSIFICATION = ROOT / "config" / "rules" / "classification.config"  # the same as ET Open's
V1, V2, V3 = "2026.11.25.1", "2026.11.26.1", "2026.11.27.1"
ET = 60  # ET Open rules in the bundles of the tests about real rules
NEW_RULE = ('alert http $EXTERNAL_NET any -> $HOME_NET any (msg:"VCR BUNDLE test rule v2"; flow:established,to_server; '
            'http.uri; content:"/vcr-bundle-v2-probe"; classtype:web-application-attack; sid:9300001; rev:1;)\n')


def et_rules(n: int) -> str:
    """The first ``n`` active rules of ET Open's emerging-scan (shared test data: required)."""
    path = shared.require("peer", "et-open", "rules", "emerging-scan.rules")
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith(("alert ", "drop "))]
    return "\n".join(lines[:n]) + "\n"


def rule_folder(tmp: Path, name: str, *, et: int = 0, extra: str = "", local: bool = True) -> Path:
    """A bundle's source folder: the shipped local rules, ``et`` ET Open rules (shared test data,
    only for the tests about real rules), ``extra`` text."""
    d = tmp / "src" / name
    (d / "rules").mkdir(parents=True)
    if local:
        shutil.copy(LOCAL_RULES, d / "rules" / "local.rules")
    if et:
        (d / "rules" / "et-scan.rules").write_text(et_rules(et))
    if extra:
        (d / "rules" / "extra.rules").write_text(extra)
    shutil.copy(CLASSIFICATION, d / "classification.config")
    return d


def bundle_rules(folder: Path) -> LoadResult:
    """What the real rule loader makes of a bundle folder: the box must load exactly these (the
    variables decide what a rule matches, not whether it loads)."""
    return load_files(sorted((folder / "rules").glob("*.rules")), Variables.suricata_defaults(),
                      classification=load_classification(folder / "classification.config"))


def sids(result: LoadResult) -> set[int]:
    return {r.sid for r in result.rules}


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def center(tmp_path: Path) -> Any:
    """A TUF repository, served by a plain http.server in a thread."""
    repo = TufRepo(tmp_path / "center" / "repo")
    repo.init()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(repo.dir)))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    repo.url = f"http://127.0.0.1:{srv.server_address[1]}/"  # type: ignore[attr-defined]
    yield repo
    srv.shutdown()
    srv.server_close()


class FakeNtp:
    """An SNTP responder on 127.0.0.1 telling time + ``offset`` (agent.link.ntp.make_reply)."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.queries = 0
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            try:
                data, peer = self.sock.recvfrom(512)
            except OSError:
                continue
            reply = ntp.make_reply(data, now=time.time(), offset=self.offset)
            if reply:
                self.queries += 1
                self.sock.sendto(reply, peer)

    def close(self) -> None:
        self.running = False
        self.thread.join(1)
        self.sock.close()


@pytest.fixture
def clock() -> Any:
    f = FakeNtp()
    yield f
    f.close()


class Box:
    """The box side: a config file with updates enabled, the updater, and a reload that rebuilds
    the engines from the config file (what each worker does on SIGHUP)."""

    def __init__(self, tmp: Path, center: TufRepo, clock: FakeNtp, **updates_kw: Any) -> None:
        self.dir = tmp / "box"
        self.dir.mkdir()
        shutil.copy(center.root_path, self.dir / "root.json")  # the trusted root shipped at activation
        self.config_path = self.dir / "vcr-agent.yaml"
        cfg = {
            "home_net": ["192.0.2.0/24"],
            "logging": {"dir": str(self.dir / "log")},
            "engines": {"ips": {"enabled": True, "rule_files": []}, "firewall": {"enabled": False}},
            "updates": {
                "enabled": True,
                "repository_url": center.url,  # type: ignore[attr-defined]
                "trusted_root": "root.json",
                "metadata_dir": str(self.dir / "tuf" / "metadata"),
                "download_dir": str(self.dir / "tuf" / "downloads"),
                "bundles_dir": str(self.dir / "bundles"),
                "ntp_servers": [f"127.0.0.1:{clock.port}"],
                "max_clock_skew": 300,
                "min_rule_ratio": 0.5,
                "timeout": 5,
                **updates_kw,
            },
        }
        self.config_path.write_text(yaml.safe_dump(cfg))
        self.alarms: list[dict[str, Any]] = []
        self.reloads = 0
        self.reload_ok = True
        self.sids: set[int] = set()
        self.reload()
        self.reloads = 0
        self.updater = BundleUpdater(load_effective_config(self.config_path), emit=self.alarms.append, reload=self.reload)

    def reload(self) -> bool:
        if not self.reload_ok:
            return False
        cfg = load_effective_config(self.config_path)
        engines = build_engines(cfg)
        ips = next(e for e in engines if e.name == "ips")
        self.sids = {r.sid for r in ips.load.rules} if ips.load else set()
        self.reloads += 1
        return True

    def rejections(self) -> list[dict[str, Any]]:
        return [a["update"] for a in self.alarms if a["update"]["action"] == "rejected"]

    @property
    def live(self) -> str | None:
        return self.updater.live_versions().get("ips")


@pytest.fixture
def box(tmp_path: Path, center: TufRepo, clock: FakeNtp) -> Box:
    return Box(tmp_path, center, clock)


def publish(center: TufRepo, tmp: Path, version: str, **kw: Any) -> Path:
    """Publish a rule folder as an ips bundle; the folder, for what it should load."""
    folder = rule_folder(tmp, version, **kw)
    center.publish("ips", version, folder)
    return folder


# -- the good path ------------------------------------------------------------------------------
def test_publish_v1_then_v2_changes_the_live_rules(tmp_path: Path, center: TufRepo, box: Box) -> None:
    assert box.live is None and 9200001 not in box.sids
    v1 = bundle_rules(publish(center, tmp_path, V1, et=ET))
    assert {Path(r.file).name for r in v1.rules} == {"local.rules", "et-scan.rules"} and not v1.errors
    res = box.updater.check("ips")
    assert res.status == "activated", res
    assert box.live == V1 and res.rules_loaded == v1.loaded
    assert box.sids == sids(v1) and {9200001, 9200002} <= box.sids  # every rule of the bundle, really loaded
    assert box.reloads == 1
    bundles = box.dir / "bundles" / "ips"
    assert os.readlink(bundles / "current") == V1 and (bundles / V1 / "rules" / "local.rules").exists()
    assert box.updater.check("ips").status == "up_to_date"

    v2 = bundle_rules(publish(center, tmp_path, V2, et=ET, extra=NEW_RULE))
    res = box.updater.check("ips")
    assert res.status == "activated" and res.version == V2 and res.live == V1
    assert box.live == V2 and box.sids == sids(v1) | {9300001} == sids(v2) and box.reloads == 2
    assert (bundles / V1).is_dir(), "the previous version is kept for rollback"
    st = box.updater.status()["kinds"]["ips"]
    assert st["live"] == V2 and st["previous"] == V1 and st["rules_loaded"] == v2.loaded == v1.loaded + 1
    assert not box.rejections()
    assert [a["update"]["version"] for a in box.alarms if a["update"]["action"] == "activated"] == [V1, V2]


def test_check_and_stage_then_activate(tmp_path: Path, center: TufRepo, box: Box) -> None:
    folder = publish(center, tmp_path, V1)
    staged = box.updater.check_and_stage("ips")
    assert isinstance(staged, updates.Staged)
    assert staged.manifest["kind"] == "ips" and staged.manifest["version"] == V1
    assert staged.manifest["rule_count"] == bundle_rules(folder).active  # the bundle's active rules
    assert (staged.path / "rules" / "local.rules").read_bytes() == LOCAL_RULES.read_bytes()
    assert box.live is None and box.reloads == 0, "staging alone changes nothing"
    res = box.updater.activate(staged)
    assert res.status == "activated" and box.live == V1 and not staged.path.exists()


def test_config_load_points_ips_at_the_live_bundle(tmp_path: Path, center: TufRepo, box: Box) -> None:
    publish(center, tmp_path, V1)
    box.updater.check("ips")
    data = yaml.safe_load(box.config_path.read_text())
    assert apply_live_bundles(data, str(box.dir / "bundles"))
    files = data["engines"]["ips"]["rule_files"]
    # the real version folder, not the symlink: a reload reads one whole version
    assert files and all(f"/bundles/ips/{V1}/" in f for f in files)
    assert data["engines"]["ips"]["classification"].endswith(f"/{V1}/classification.config")


def test_heartbeat_waits_for_the_workers_confirmation(tmp_path: Path, center: TufRepo, box: Box) -> None:
    publish(center, tmp_path, V1)
    box.updater.check("ips")
    publish(center, tmp_path, V2, extra=NEW_RULE)
    asked: list[int] = []
    box.updater.reload = lambda: asked.append(1)  # type: ignore[assignment,return-value]  # the daemon: async
    assert box.updater.check("ips").status == "activated" and asked
    assert box.live == V1, "the workers still run V1 until they report the reload"
    box.updater.on_reload_result(True)
    assert box.live == V2


def test_workers_failing_to_load_switch_back(tmp_path: Path, center: TufRepo, box: Box) -> None:
    publish(center, tmp_path, V1)
    box.updater.check("ips")
    publish(center, tmp_path, V2, extra=NEW_RULE)
    box.updater.reload = lambda: None  # type: ignore[assignment]
    box.updater.check("ips")
    box.updater.on_reload_result(False, "worker 0: out of memory")
    assert box.live == V1 and os.readlink(box.dir / "bundles" / "ips" / "current") == V1
    assert box.rejections()[-1]["reason"] == "load_failed"
    assert box.updater.check("ips").status == "rejected", "not retried"


def test_timestamp_key_rotation_is_followed(tmp_path: Path, center: TufRepo, box: Box) -> None:
    publish(center, tmp_path, V1)
    box.updater.check("ips")
    center.rotate_key("timestamp")
    publish(center, tmp_path, V2, extra=NEW_RULE)
    assert box.updater.check("ips").status == "activated" and box.live == V2
    assert (box.dir / "tuf" / "metadata" / "root_history" / "2.root.json").exists()


def test_refresh_keeps_the_box_updating(tmp_path: Path, center: TufRepo, box: Box) -> None:
    publish(center, tmp_path, V1)
    box.updater.check("ips")
    ts = center.load("timestamp").signed.version
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=20)
    assert "timestamp" in center.refresh(now=later)["renewed"]
    assert center.load("timestamp").signed.version == ts + 1
    assert box.updater.check("ips").status == "up_to_date"


# -- rejections ------------------------------------------------------------------------------------
def _served_target(center: TufRepo, version: str) -> Path:
    return next((center.targets_dir / "ips").glob(f"*.ips-{version}.tar.gz"))


@pytest.mark.parametrize("how", ["same_length", "longer"])
def test_tampered_bundle_is_rejected(tmp_path: Path, center: TufRepo, box: Box, how: str) -> None:
    publish(center, tmp_path, V1)
    box.updater.check("ips")
    publish(center, tmp_path, V2, extra=NEW_RULE)
    path = _served_target(center, V2)
    evil = rule_folder(tmp_path, "evil", extra=NEW_RULE.replace("sid:9300001", "sid:9399999"))
    fake = tufrepo.make_bundle("ips", V2, evil, tmp_path / "evil.tar.gz").read_bytes()
    good = path.read_bytes()
    path.write_bytes(fake[:len(good)].ljust(len(good), b"\0") if how == "same_length" else good + b"x" * 100)
    res = box.updater.check("ips")
    assert res.status == "rejected" and res.reason == "tampered", res
    assert box.live == V1 and 9399999 not in box.sids and box.reloads == 1
    (alarm,) = box.rejections()
    assert alarm["reason"] == "tampered" and alarm["kind"] == "ips" and alarm["version"] == V2
    assert alarm["live_version"] == V1 and "改ざん" in alarm["message"] and "tampering" in alarm["message"]
    assert not list((box.dir / "bundles" / "ips").glob(".staging-*"))


def test_replayed_old_metadata_is_a_rollback(tmp_path: Path, center: TufRepo, box: Box) -> None:
    publish(center, tmp_path, V1)
    old = {p.name: p.read_bytes() for p in center.meta_dir.iterdir()}
    publish(center, tmp_path, V2, extra=NEW_RULE)
    assert box.updater.check("ips").status == "activated" and box.live == V2
    for name, data in old.items():  # the server serves the earlier repository again
        (center.meta_dir / name).write_bytes(data)
    res = box.updater.check("ips")
    assert res.status == "rejected" and res.reason == "rollback", res
    assert box.live == V2 and 9300001 in box.sids
    assert box.rejections()[-1]["reason"] == "rollback" and "巻き戻し" in box.rejections()[-1]["message"]


def test_resigned_lower_timestamp_version_is_a_rollback(tmp_path: Path, center: TufRepo, box: Box) -> None:
    publish(center, tmp_path, V1)
    box.updater.check("ips")
    ts = center.load("timestamp")
    ts.signed.version = 1  # validly signed by the online key, but older than what the box trusts
    for s in center.signers("timestamp"):
        ts.sign(s)
    ts.to_file(str(center.meta_dir / "timestamp.json"))
    res = box.updater.check("ips")
    assert res.reason == "rollback" and "BadVersionNumber" in res.detail and box.live == V1


def test_older_bundle_than_the_live_one_is_refused(tmp_path: Path, center: TufRepo, box: Box) -> None:
    publish(center, tmp_path, V1)
    publish(center, tmp_path, V2, extra=NEW_RULE)
    box.updater.check("ips")
    assert box.live == V2
    center.unpublish("ips", V2)  # fresh, correctly signed metadata whose newest ips bundle is V1
    res = box.updater.check("ips")
    assert res.status == "rejected" and res.reason == "rollback" and res.version == V1
    assert box.live == V2 and box.rejections()[-1]["version"] == V1


def test_frozen_metadata_is_rejected_after_an_ntp_check(tmp_path: Path, center: TufRepo, box: Box,
                                                        clock: FakeNtp) -> None:
    publish(center, tmp_path, V1)
    box.updater.check("ips")
    publish(center, tmp_path, V2, extra=NEW_RULE)
    center.bump_timestamp(expires=dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(hours=1))
    before = clock.queries
    res = box.updater.check("ips")
    assert res.status == "rejected" and res.reason == "freeze", res
    assert clock.queries > before, "the clock was checked before blaming the metadata"
    alarm = box.rejections()[-1]
    assert alarm["ntp"]["ok"] is True and abs(alarm["ntp"]["offset_s"]) < 5
    assert "有効期限" in alarm["message"] and "expired" in alarm["message"]
    assert box.live == V1 and 9300001 not in box.sids


def test_frozen_metadata_without_ntp_says_the_clock_is_unverified(tmp_path: Path, center: TufRepo,
                                                                  clock: FakeNtp) -> None:
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens: the query fails at once
    b = Box(tmp_path, center, clock, ntp_servers=[f"127.0.0.1:{port}"])
    publish(center, tmp_path, V1)
    center.bump_timestamp(expires=dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(hours=1))
    res = b.updater.check("ips")
    assert res.reason == "freeze"
    assert b.rejections()[-1]["ntp"]["ok"] is None and b.rejections()[-1]["ntp"]["error"]


def test_wrong_clock_is_a_clock_alarm_not_a_silent_stop(tmp_path: Path, center: TufRepo, box: Box,
                                                        clock: FakeNtp) -> None:
    publish(center, tmp_path, V1)
    center.bump_timestamp(expires=dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(hours=1))
    clock.offset = -2 * 86400.0  # NTP says the box's clock runs two days ahead
    res = box.updater.check("ips")
    assert res.status == "rejected" and res.reason == "clock", res
    alarm = box.rejections()[-1]
    assert alarm["ntp"]["ok"] is False and alarm["ntp"]["offset_s"] < -172000
    assert "ahead" in alarm["detail"] and "時計" in alarm["message"] and "NTP" in alarm["message"]
    assert box.live is None


def test_clock_too_far_behind_holds_updates_back(tmp_path: Path, center: TufRepo, box: Box, clock: FakeNtp) -> None:
    """A clock running behind would take expired metadata as fresh: nothing is installed."""
    publish(center, tmp_path, V1)
    clock.offset = 3 * 86400.0
    res = box.updater.check("ips")
    assert res.reason == "clock" and "behind" in res.detail and box.live is None
    clock.offset = 0.0
    box.updater.clock_check(force=True)
    assert box.updater.check("ips").status == "activated"


@pytest.mark.parametrize("role", ["timestamp", "targets"])
def test_metadata_signed_by_unknown_keys_is_rejected(tmp_path: Path, center: TufRepo, box: Box, role: str) -> None:
    from securesystemslib.signer import CryptoSigner

    publish(center, tmp_path, V1)
    box.updater.check("ips")
    publish(center, tmp_path, V2, extra=NEW_RULE)
    intruder = CryptoSigner.generate_ed25519()
    md = center.load(role)
    md.signed.version += 1
    md.sign(intruder)  # replaces the real signature
    if role == "targets":
        data = md.to_bytes(tufrepo._SERIALIZER)  # as the repository writes it (snapshot records length/hash)
        center.meta_dir.joinpath(f"{md.signed.version}.targets.json").write_bytes(data)
        center.meta_dir.joinpath("targets.json").write_bytes(data)
        # snapshot and timestamp, correctly signed, then point at it
        center.bump_snapshot()
    else:
        md.to_file(str(center.meta_dir / "timestamp.json"))
    res = box.updater.check("ips")
    assert res.status == "rejected" and res.reason == "bad_signature", res
    assert box.live == V1 and box.rejections()[-1]["reason"] == "bad_signature"


def test_rule_count_collapse_is_not_swapped(tmp_path: Path, center: TufRepo, box: Box) -> None:
    v1 = bundle_rules(publish(center, tmp_path, V1, et=ET))
    box.updater.check("ips")
    assert box.live == V1 and box.sids == sids(v1)
    local = bundle_rules(publish(center, tmp_path, V2))  # the local rules alone: loads, but collapsed
    assert 0 < local.loaded < 0.5 * v1.loaded, "the test needs a drop below updates.min_rule_ratio (0.5)"
    res = box.updater.check("ips")
    assert res.status == "rejected" and res.reason == "rule_count", res
    assert box.live == V1 and box.sids == sids(v1) and box.reloads == 1
    alarm = box.rejections()[-1]
    assert alarm["rules_loaded"] == local.loaded and alarm["previous_rules"] == v1.loaded
    # refused once: not downloaded and alarmed again on every check
    again = box.updater.check("ips")
    assert again.status == "rejected" and "refused earlier" in again.detail and len(box.rejections()) == 1
    publish(center, tmp_path, V3, et=ET, extra=NEW_RULE)
    assert box.updater.check("ips").status == "activated" and box.live == V3


def test_bundle_whose_rules_do_not_load_is_rejected(tmp_path: Path, center: TufRepo, box: Box) -> None:
    d = tmp_path / "src" / "broken"
    d.mkdir(parents=True)
    (d / "broken.rules").write_text("alert tcp any any -> any any (msg:\"unterminated; sid:1;\n" * 3)
    center.publish("ips", V1, d)
    res = box.updater.check("ips")
    assert res.status == "rejected" and res.reason == "load_failed" and box.live is None and box.reloads == 0


def test_manifest_that_lies_about_a_file_is_rejected(tmp_path: Path, center: TufRepo, box: Box) -> None:
    data = LOCAL_RULES.read_bytes()
    manifest = {"kind": "ips", "version": V1, "created": "2026-11-25T00:00:00Z", "rule_count": 5,
                "files": [{"path": "local.rules", "size": len(data), "sha256": hashlib.sha256(b"other").hexdigest()}]}
    path = tmp_path / "lying.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, body in (("manifest.json", json.dumps(manifest).encode()), ("local.rules", data)):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    center.publish("ips", V1, path)
    res = box.updater.check("ips")
    assert res.reason == "manifest" and box.live is None


def test_unpack_refuses_paths_outside_and_links(tmp_path: Path) -> None:
    for member in ("../escape.rules", "/abs.rules"):
        path = tmp_path / "bad.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            info = tarfile.TarInfo(member)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
        with pytest.raises(UpdateError) as exc:
            unpack_bundle(path, tmp_path / "out", kind="ips", version=V1)
        assert exc.value.reason == "manifest"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("link.rules")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(UpdateError, match="only files and folders"):
        unpack_bundle(path, tmp_path / "out", kind="ips", version=V1)
    assert not (tmp_path / "escape.rules").exists()


def test_repeated_rejection_raises_one_alarm(tmp_path: Path, center: TufRepo, box: Box) -> None:
    publish(center, tmp_path, V1)
    box.updater.check("ips")
    publish(center, tmp_path, V2, extra=NEW_RULE)
    path = _served_target(center, V2)
    path.write_bytes(path.read_bytes() + b"junk")
    for _ in range(3):
        assert box.updater.check("ips").reason == "tampered"
    assert len(box.rejections()) == 1
    path.write_bytes(path.read_bytes()[:-4])  # the center repairs the file: installed on the next check
    assert box.updater.check("ips").status == "activated" and box.live == V2


# -- rollback and status --------------------------------------------------------------------------
def test_rollback_to_previous_version(tmp_path: Path, center: TufRepo, box: Box) -> None:
    publish(center, tmp_path, V1)
    box.updater.check("ips")
    publish(center, tmp_path, V2, extra=NEW_RULE)
    box.updater.check("ips")
    res = box.updater.rollback("ips")
    assert res.status == "rolled_back" and res.version == V1 and box.live == V1
    assert 9300001 not in box.sids and box.reloads == 3
    assert box.alarms[-1]["update"]["action"] == "rolled_back"
    assert box.updater.check("ips").status == "rejected", "the version rolled back from is not re-installed"
    assert box.updater.rollback("ips").reason == "no_previous"
    publish(center, tmp_path, V3, extra=NEW_RULE)
    assert box.updater.check("ips").status == "activated" and box.live == V3


def test_old_versions_are_pruned(tmp_path: Path, center: TufRepo, box: Box) -> None:
    versions = [f"2026.12.{d}.1" for d in range(1, 6)]
    for v in versions:
        publish(center, tmp_path, v)
        assert box.updater.check("ips").status == "activated"
    on_disk = sorted(p.name for p in (box.dir / "bundles" / "ips").iterdir() if p.is_dir() and not p.is_symlink())
    assert on_disk == versions[-3:]


def test_other_kinds_stage_without_an_engine(tmp_path: Path, center: TufRepo, box: Box) -> None:
    src = tmp_path / "src" / "spam"
    src.mkdir(parents=True)
    (src / "spam-hashes.txt").write_text("# comment\nabc\ndef\n")
    center.publish("antispam", "1", src)
    res = box.updater.check("antispam")
    assert res.status == "activated" and box.updater.live_versions() == {"antispam": "1"}
    assert box.updater.check_and_stage("release").status == "no_bundle"  # type: ignore[union-attr]


def test_release_is_staged_but_not_activated_here(tmp_path: Path, center: TufRepo, box: Box) -> None:
    src = tmp_path / "src" / "rel"
    src.mkdir(parents=True)
    (src / "vcr-agent-0.2.0.whl").write_bytes(b"PK\x03\x04 not really")
    center.publish("release", "0.2.0", src)
    staged = box.updater.check_and_stage("release")
    assert isinstance(staged, updates.Staged)
    assert box.updater.activate(staged).status == "deferred"


# -- clock helper, versions, kinds ---------------------------------------------------------------
def test_check_clock_against_sntp(clock: FakeNtp) -> None:
    clock.offset = 1000.0
    r = check_clock([f"127.0.0.1:{clock.port}"], max_skew=300)
    assert r["ok"] is False and 990 < r["offset_s"] < 1010
    clock.offset = 0.0
    assert check_clock(["bad.invalid", f"127.0.0.1:{clock.port}"], max_skew=300, timeout=1)["ok"] is True
    assert check_clock([], max_skew=300)["ok"] is None


def test_version_order_and_kinds_match_the_center() -> None:
    assert updates.KINDS == tufrepo.KINDS
    vs = ["2026.11.25.10", "2026.11.25.9", "2026.11.3.1", "2027.1.1.1"]
    assert sorted(vs, key=updates.version_key) == ["2026.11.3.1", "2026.11.25.9", "2026.11.25.10", "2027.1.1.1"]
    assert [updates.version_key(v) for v in vs] == [tufrepo.version_key(v) for v in vs]


def test_update_records_are_eve_with_japanese_and_english() -> None:
    rec = updates.update_record("ips", "rollback", version="1", live="2")
    assert rec["event_type"] == "update" and rec["timestamp"].endswith("+0000")
    assert rec["update"]["severity"] == 1 and " / " in rec["update"]["message"]
    for reason, (sev, ja, en) in updates.REASONS.items():
        assert 1 <= sev <= 4 and ja and en and not ja.isascii() and en.isascii(), reason


# -- command line -----------------------------------------------------------------------------------
def test_cli_bundles_check_status_rollback(tmp_path: Path, center: TufRepo, box: Box,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli import main
    from agent.evelog import read_eve

    publish(center, tmp_path, V1)
    cfg = str(box.config_path)
    assert main(["bundles", "check", "ips", "-c", cfg]) == 0
    (res,) = json.loads(capsys.readouterr().out)
    assert res["status"] == "activated" and res["version"] == V1
    publish(center, tmp_path, V2, extra=NEW_RULE)
    assert main(["bundles", "check", "-c", cfg]) == 0
    assert {r["kind"]: r["status"] for r in json.loads(capsys.readouterr().out)}["ips"] == "activated"
    assert main(["bundles", "status", "-c", cfg]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["live"] == {"ips": V2} and st["kinds"]["ips"]["previous"] == V1
    assert main(["bundles", "rollback", "ips", "-c", cfg]) == 0
    assert json.loads(capsys.readouterr().out)[0]["version"] == V1
    center.publish("ips", V3, rule_folder(tmp_path, V3, extra=NEW_RULE))
    _served_target(center, V3).write_bytes(b"tampered")
    assert main(["bundles", "check", "ips", "-c", cfg]) == 1
    assert json.loads(capsys.readouterr().out)[0]["reason"] == "tampered"
    events = [e["update"] for e in read_eve(box.dir / "log" / "eve.json")]
    assert [(e["action"], e["reason"]) for e in events] == [
        ("activated", "activated"), ("activated", "activated"), ("rolled_back", "rolled_back"), ("rejected", "tampered")]


def test_config_naming_the_bundle_itself_loads_it_once(tmp_path: Path, center: TufRepo, box: Box) -> None:
    publish(center, tmp_path, V1)
    box.updater.check("ips")
    data = yaml.safe_load(box.config_path.read_text())
    data["engines"]["ips"]["rule_files"] = [str(box.dir / "bundles" / "ips" / "current" / "rules" / "*.rules")]
    apply_live_bundles(data, str(box.dir / "bundles"))
    assert len(data["engines"]["ips"]["rule_files"]) == 1


def test_live_threat_intel_bundle_joins_the_atp_feeds(tmp_path: Path) -> None:
    bundles = tmp_path / "bundles"
    v1 = bundles / "threatintel" / "2026.11.25.1"
    v1.mkdir(parents=True)
    (v1 / "feodo.csv").write_text("dst_ip,dst_port,c2_status,malware\n203.0.113.99,4443,online,QakBot\n")
    (bundles / "threatintel" / "current").symlink_to(v1.name)
    data = {"engines": {"atp": {"enabled": True, "feeds": [str(bundles / "threatintel"), "/etc/vcr-agent/own.txt"]}}}
    assert apply_live_bundles(data, str(bundles))
    assert data["engines"]["atp"]["feeds"] == ["/etc/vcr-agent/own.txt", str(v1.resolve())]
    from filters.atp import Atp

    engine = Atp()
    engine.configure({**data["engines"]["atp"], "feeds": [str(v1.resolve())], "allow_documentation_addresses": True})
    engine.prepare()
    assert engine.intel.match_ip("203.0.113.99", 4443).threat == "QakBot"
