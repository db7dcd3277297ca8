"""The center's TUF repository of signed bundles (signatures and software releases).

Built on python-tuf's Metadata API. Layout::

    <repo_dir>/                 served as static files at /tuf/ (``mount``)
        metadata/1.root.json, 2.root.json, ...   every root version (clients walk them)
        metadata/root.json                        the newest root (what a box is shipped with)
        metadata/<N>.targets.json, <N>.snapshot.json   consistent snapshots
        metadata/timestamp.json
        metadata/targets.json, snapshot.json      current copies (for the repository's own use)
        targets/<kind>/<sha256>.<kind>-<version>.tar.gz
    <keys_dir>/offline/<role>-<keyid16>.pem     root and targets keys (may live elsewhere)
    <keys_dir>/online/<role>-<keyid16>.pem      snapshot and timestamp keys (the server's cron)

Every write goes in dependency order (target file, targets, snapshot, then timestamp last, each
atomically renamed), so a box downloading while the center publishes sees the old or the new
repository, never a mix. ``refresh`` (a cron) re-signs the timestamp before it expires, and the
snapshot and targets when their own expiry is near.

A bundle is a tar.gz holding ``manifest.json`` ({kind, version, created, files, rule_count}) and
its payload files; ``make_bundle`` builds one from a folder.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner, Signer
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

log = logging.getLogger(__name__)

KINDS = ("ips", "threatintel", "webcat", "av", "antispam", "release")
ROLES = ("root", "targets", "snapshot", "timestamp")
OFFLINE_ROLES = frozenset({"root", "targets"})
VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+-]{0,63}$")
MANIFEST = "manifest.json"

# How long each role's signature is valid, and how long before expiry ``refresh`` renews it.
DEFAULT_EXPIRY = {
    "root": dt.timedelta(days=365),
    "targets": dt.timedelta(days=90),
    "snapshot": dt.timedelta(days=14),
    "timestamp": dt.timedelta(days=1),
}
RENEW_BEFORE = {
    "root": dt.timedelta(days=60),
    "targets": dt.timedelta(days=30),
    "snapshot": dt.timedelta(days=7),
    "timestamp": dt.timedelta(hours=12),
}

_SERIALIZER = JSONSerializer(compact=False)


class RepoError(Exception):
    """A repository operation that cannot be done (the message says why and what to do)."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def version_key(version: str) -> tuple[Any, ...]:
    """Order bundle versions: numeric parts numerically ("2026.11.25.10" > "2026.11.25.9")."""
    parts = re.split(r"[._+-]", version)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def target_name(kind: str, version: str) -> str:
    return f"{kind}/{kind}-{version}.tar.gz"


def check_kind_version(kind: str, version: str) -> None:
    if kind not in KINDS:
        raise RepoError(f"unknown bundle kind {kind!r} (known: {', '.join(KINDS)})")
    if not VERSION_RE.match(version):
        raise RepoError(f"bad version {version!r}: letters, digits and . _ + - only (e.g. 2026.11.25.1)")


# -- bundles -------------------------------------------------------------------------------------
def count_rules(kind: str, files: dict[str, bytes]) -> int:
    """What the bundle's manifest states as ``rule_count``: for IPS the active rules, for the
    list-shaped kinds the non-comment lines; a release has none."""
    if kind == "release":
        return 0
    n = 0
    for name, data in files.items():
        if kind == "ips" and not name.endswith(".rules"):
            continue
        for line in data.decode("utf-8", "replace").splitlines():
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            n += 1
    return n


def make_bundle(kind: str, version: str, src: str | os.PathLike[str], out: str | os.PathLike[str],
                *, created: str | None = None, rule_count: int | None = None) -> Path:
    """Pack the files under ``src`` (a folder, or one file) into a bundle tar.gz at ``out``."""
    check_kind_version(kind, version)
    src = Path(src)
    if src.is_dir():
        paths = sorted(p for p in src.rglob("*") if p.is_file() and p.name != MANIFEST)
        files = {p.relative_to(src).as_posix(): p.read_bytes() for p in paths}
    elif src.is_file():
        files = {src.name: src.read_bytes()}
    else:
        raise RepoError(f"{src}: no such file or folder")
    if not files:
        raise RepoError(f"{src}: nothing to pack")
    manifest = {
        "kind": kind,
        "version": version,
        "created": created or _now().isoformat().replace("+00:00", "Z"),
        "files": [{"path": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                  for name, data in sorted(files.items())],
        "rule_count": count_rules(kind, files) if rule_count is None else rule_count,
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w:gz") as tar:
        _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=1).encode())
        for name, data in sorted(files.items()):
            _add_bytes(tar, name, data)
    return out


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def read_manifest(bundle: str | os.PathLike[str]) -> dict[str, Any]:
    with tarfile.open(bundle, "r:gz") as tar:
        member = tar.extractfile(MANIFEST)
        if member is None:
            raise RepoError(f"{bundle}: no {MANIFEST}")
        return json.loads(member.read())


# -- keys ----------------------------------------------------------------------------------------
def _key_file(keys: Path, role: str, keyid: str) -> Path:
    return keys / f"{role}-{keyid[:16]}.pem"


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@dataclass
class PublishResult:
    target: str
    kind: str
    version: str
    length: int
    sha256: str
    rule_count: int
    targets_version: int


class TufRepo:
    """The center's repository: metadata and target files in ``repo_dir``, signing keys outside it."""

    def __init__(self, repo_dir: str | os.PathLike[str], keys_dir: str | os.PathLike[str] | None = None, *,
                 offline_keys_dir: str | os.PathLike[str] | None = None,
                 online_keys_dir: str | os.PathLike[str] | None = None,
                 expiry: dict[str, dt.timedelta] | None = None) -> None:
        self.dir = Path(repo_dir)
        self.meta_dir = self.dir / "metadata"
        self.targets_dir = self.dir / "targets"
        keys = Path(keys_dir) if keys_dir else self.dir.parent / f"{self.dir.name}-keys"
        self.keys_dir = keys
        self.offline_keys = Path(offline_keys_dir) if offline_keys_dir else keys / "offline"
        self.online_keys = Path(online_keys_dir) if online_keys_dir else keys / "online"
        self.expiry = {**DEFAULT_EXPIRY, **(expiry or {})}

    # -- paths and loading ------------------------------------------------------------------
    def _keys_for(self, role: str) -> Path:
        return self.offline_keys if role in OFFLINE_ROLES else self.online_keys

    @property
    def root_path(self) -> Path:
        """The newest root metadata: install this on a box as its trusted root."""
        return self.meta_dir / "root.json"

    def exists(self) -> bool:
        return self.root_path.exists() and (self.meta_dir / "timestamp.json").exists()

    def load(self, role: str) -> Metadata[Any]:
        path = self.meta_dir / f"{role}.json"
        if not path.exists():
            raise RepoError(f"{path}: no such metadata; run `vcr-opscenter tuf-init` first")
        return Metadata.from_file(str(path))

    def signers(self, role: str, root: Metadata[Root] | None = None) -> list[Signer]:
        """The private keys on hand for ``role`` (those root lists for it)."""
        root = root or self.load("root")
        out: list[Signer] = []
        for keyid in root.signed.roles[role].keyids:
            path = _key_file(self._keys_for(role), role, keyid)
            if not path.exists():
                continue
            priv = load_pem_private_key(path.read_bytes(), None)
            out.append(CryptoSigner(priv, root.signed.keys[keyid]))  # type: ignore[arg-type]
        threshold = root.signed.roles[role].threshold
        if len(out) < threshold:
            raise RepoError(
                f"{role}: {len(out)} of {threshold} signing key(s) found in {self._keys_for(role)}"
                + (" (offline keys: pass --offline-keys)" if role in OFFLINE_ROLES else "")
            )
        return out

    def _new_key(self, role: str) -> CryptoSigner:
        signer = CryptoSigner.generate_ed25519()
        _write_private(_key_file(self._keys_for(role), role, signer.public_key.keyid), signer.private_bytes)
        return signer

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time (a publish and the refresh cron may meet)."""
        self.keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.keys_dir / "repo.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _write(self, md: Metadata[Any], *, versioned: bool) -> None:
        data = md.to_bytes(_SERIALIZER)
        role = md.signed.type
        if versioned:
            _atomic_write(self.meta_dir / f"{md.signed.version}.{role}.json", data)
        _atomic_write(self.meta_dir / f"{role}.json", data)

    def _sign(self, md: Metadata[Any], root: Metadata[Root] | None = None) -> None:
        md.signatures.clear()
        for s in self.signers(md.signed.type, root):
            md.sign(s, append=True)

    # -- init --------------------------------------------------------------------------------
    def init(self, *, force: bool = False) -> Path:
        """Create keys (ed25519, one per role) and the first metadata; returns the root path."""
        if self.exists() and not force:
            raise RepoError(f"{self.dir}: a repository is already here (use --force to replace it)")
        with self._locked():
            now = _now()
            root = Metadata(Root(expires=now + self.expiry["root"], consistent_snapshot=True))
            signers: dict[str, CryptoSigner] = {}
            for role in ROLES:
                signers[role] = self._new_key(role)
                root.signed.add_key(signers[role].public_key, role)
            root.sign(signers["root"])
            targets = Metadata(Targets(expires=now + self.expiry["targets"]))
            targets.sign(signers["targets"])
            snapshot = Metadata(Snapshot(expires=now + self.expiry["snapshot"]))
            snapshot.signed.meta["targets.json"] = self._meta_file(targets)
            snapshot.sign(signers["snapshot"])
            timestamp = Metadata(Timestamp(expires=now + self.expiry["timestamp"]))
            timestamp.signed.snapshot_meta = self._meta_file(snapshot)
            timestamp.sign(signers["timestamp"])
            self.targets_dir.mkdir(parents=True, exist_ok=True)
            for md in (root, targets, snapshot):
                self._write(md, versioned=True)
            self._write(timestamp, versioned=False)
        log.info("TUF repository initialised in %s (keys in %s)", self.dir, self.keys_dir)
        return self.root_path

    @staticmethod
    def _meta_file(md: Metadata[Any]) -> MetaFile:
        data = md.to_bytes(_SERIALIZER)
        return MetaFile(version=md.signed.version, length=len(data),
                        hashes={"sha256": hashlib.sha256(data).hexdigest()})

    # -- publishing ---------------------------------------------------------------------------
    def publish(self, kind: str, version: str, path: str | os.PathLike[str]) -> PublishResult:
        """Add a bundle as target ``<kind>/<kind>-<version>.tar.gz`` and sign new metadata.

        ``path`` is a bundle tar.gz (its manifest must say this kind and version) or a folder /
        file, packed into a bundle here."""
        check_kind_version(kind, version)
        src = Path(path)
        with tempfile.TemporaryDirectory() as tmp:
            if src.is_file() and src.name.endswith((".tar.gz", ".tgz")):
                bundle = src
            else:
                bundle = make_bundle(kind, version, src, Path(tmp) / "bundle.tar.gz")
            try:
                manifest = read_manifest(bundle)
            except (OSError, tarfile.TarError, ValueError) as exc:
                raise RepoError(f"{bundle}: not a bundle: {exc}") from None
            if manifest.get("kind") != kind or str(manifest.get("version")) != version:
                raise RepoError(f"{bundle}: its manifest says {manifest.get('kind')} {manifest.get('version')}, "
                                f"not {kind} {version}")
            data = bundle.read_bytes()
        name = target_name(kind, version)
        digest = hashlib.sha256(data).hexdigest()
        rule_count = int(manifest.get("rule_count") or 0)
        with self._locked():
            targets = self.load("targets")
            if name in targets.signed.targets:
                raise RepoError(f"{name} is already published; publish a new version instead")
            # The file goes first: clients only learn of it from the metadata written after it.
            _atomic_write(self.targets_dir / kind / f"{digest}.{kind}-{version}.tar.gz", data)
            tf = TargetFile(length=len(data), hashes={"sha256": digest}, path=name,
                            unrecognized_fields={"custom": {"kind": kind, "version": version, "rule_count": rule_count}})
            targets.signed.targets[name] = tf
            self._commit_targets(targets)
        log.info("published %s (%d bytes, %d rules), targets v%d", name, len(data), rule_count,
                 targets.signed.version)
        return PublishResult(name, kind, version, len(data), digest, rule_count, targets.signed.version)

    def unpublish(self, kind: str, version: str) -> None:
        """Withdraw a target (boxes that have it keep it; they never install it again)."""
        name = target_name(kind, version)
        with self._locked():
            targets = self.load("targets")
            if targets.signed.targets.pop(name, None) is None:
                raise RepoError(f"{name} is not published")
            self._commit_targets(targets)

    def _commit_targets(self, targets: Metadata[Targets]) -> None:
        root = self.load("root")
        targets.signed.version += 1
        targets.signed.expires = _now() + self.expiry["targets"]
        self._sign(targets, root)
        self._write(targets, versioned=True)
        self._bump_snapshot(root, targets)

    def _bump_snapshot(self, root: Metadata[Root], targets: Metadata[Targets] | None = None) -> None:
        targets = targets or self.load("targets")
        snapshot = self.load("snapshot")
        snapshot.signed.version += 1
        snapshot.signed.expires = _now() + self.expiry["snapshot"]
        snapshot.signed.meta["targets.json"] = self._meta_file(targets)
        self._sign(snapshot, root)
        self._write(snapshot, versioned=True)
        self._bump_timestamp(root, snapshot)

    def _bump_timestamp(self, root: Metadata[Root], snapshot: Metadata[Snapshot] | None = None,
                        *, expires: dt.datetime | None = None) -> Metadata[Timestamp]:
        snapshot = snapshot or self.load("snapshot")
        timestamp = self.load("timestamp")
        timestamp.signed.version += 1
        timestamp.signed.expires = expires or _now() + self.expiry["timestamp"]
        timestamp.signed.snapshot_meta = self._meta_file(snapshot)
        self._sign(timestamp, root)
        self._write(timestamp, versioned=False)
        return timestamp

    def bump_timestamp(self, *, expires: dt.datetime | None = None) -> int:
        """Re-sign the timestamp (new version); ``expires`` overrides the expiry (tests: a stale one)."""
        with self._locked():
            return self._bump_timestamp(self.load("root"), expires=expires).signed.version

    def bump_snapshot(self) -> int:
        with self._locked():
            self._bump_snapshot(self.load("root"))
            return self.load("snapshot").signed.version

    def refresh(self, *, now: dt.datetime | None = None) -> dict[str, Any]:
        """The cron job: renew whatever is near its expiry (timestamp always within RENEW_BEFORE).

        Needs only the online keys, unless targets or root are near expiry too (then their
        offline keys must be on hand, or the renewal is reported as pending)."""
        now = now or _now()
        done: dict[str, Any] = {"renewed": [], "pending": []}
        with self._locked():
            root = self.load("root")
            near = lambda md, role: md.signed.expires - now <= RENEW_BEFORE[role]  # noqa: E731
            if near(root, "root"):
                try:
                    self._resign_root(root)
                    done["renewed"].append("root")
                except RepoError as exc:
                    done["pending"].append(f"root: {exc}")
                root = self.load("root")
            targets = self.load("targets")
            if near(targets, "targets"):
                try:
                    self._commit_targets(targets)
                    done["renewed"] += ["targets", "snapshot", "timestamp"]
                    return done
                except RepoError as exc:
                    done["pending"].append(f"targets: {exc}")
            if near(self.load("snapshot"), "snapshot"):
                self._bump_snapshot(root)
                done["renewed"] += ["snapshot", "timestamp"]
            elif near(self.load("timestamp"), "timestamp"):
                self._bump_timestamp(root)
                done["renewed"].append("timestamp")
        for p in done["pending"]:
            log.warning("renewal pending: %s", p)
        return done

    # -- keys --------------------------------------------------------------------------------
    def _resign_root(self, root: Metadata[Root], old_signers: list[Signer] | None = None) -> None:
        """Write root version N+1, signed by the current root keys (and the previous ones when
        they changed, so clients can walk from N to N+1)."""
        root.signed.version += 1
        root.signed.expires = _now() + self.expiry["root"]
        root.signatures.clear()
        signers = {s.public_key.keyid: s for s in (old_signers or [])}
        for s in self.signers("root", root):
            signers[s.public_key.keyid] = s
        for s in signers.values():
            root.sign(s, append=True)
        self._write(root, versioned=True)

    def rotate_key(self, role: str = "timestamp") -> str:
        """Replace ``role``'s key (default: the online timestamp key) and publish a new root.

        Needs the offline root key. Boxes pick the new root up on their next check (ngclient walks
        the root versions) and from then on accept only the new key. Returns the new keyid."""
        if role not in ROLES:
            raise RepoError(f"unknown role {role!r}")
        with self._locked():
            root = self.load("root")
            old_root_signers = self.signers("root", root)
            old_ids = list(root.signed.roles[role].keyids)
            new = self._new_key(role)
            for keyid in old_ids:
                root.signed.revoke_key(keyid, role)
            root.signed.add_key(new.public_key, role)
            self._resign_root(root, old_root_signers if role == "root" else None)
            root = self.load("root")
            # Re-sign what the rotated role signs, with the new key.
            if role == "targets":
                self._commit_targets(self.load("targets"))
            elif role == "snapshot":
                self._bump_snapshot(root)
            elif role == "timestamp":
                self._bump_timestamp(root)
            for keyid in old_ids:  # the old private key is retired
                with contextlib.suppress(FileNotFoundError):
                    old = _key_file(self._keys_for(role), role, keyid)
                    old.rename(old.with_suffix(".pem.retired"))
        log.info("rotated the %s key: %s", role, new.public_key.keyid)
        return new.public_key.keyid

    # -- listing -----------------------------------------------------------------------------
    def list_targets(self, kind: str | None = None) -> list[dict[str, Any]]:
        targets = self.load("targets")
        out = []
        for name, tf in targets.signed.targets.items():
            custom = tf.custom or {}
            if kind and custom.get("kind") != kind:
                continue
            out.append({"target": name, "length": tf.length, **custom})
        return sorted(out, key=lambda t: (t.get("kind", ""), version_key(str(t.get("version", "")))))

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"repo": str(self.dir)}
        for role in ROLES:
            md = self.load(role)
            out[role] = {"version": md.signed.version, "expires": md.signed.expires.isoformat()}
        out["targets_count"] = len(self.load("targets").signed.targets)
        return out


# -- serving --------------------------------------------------------------------------------------
def mount(app: Any, repo_dir: str | os.PathLike[str], path: str = "/tuf") -> None:
    """Serve the repository read-only as static files at ``/tuf/`` of a FastAPI app."""
    from fastapi.staticfiles import StaticFiles

    Path(repo_dir).mkdir(parents=True, exist_ok=True)
    app.mount(path, StaticFiles(directory=str(repo_dir), check_dir=False), name="tuf")


# -- command line ---------------------------------------------------------------------------------
def _repo(args: argparse.Namespace) -> TufRepo:
    return TufRepo(args.repo, args.keys, offline_keys_dir=getattr(args, "offline_keys", None))


def _reported(fn: Any) -> Any:
    """A RepoError becomes one line for the operator and exit status 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except RepoError as exc:
            print(f"エラー / error: {exc}")
            return 1

    return run


@_reported
def cmd_init(args: argparse.Namespace) -> int:
    repo = _repo(args)
    root = repo.init(force=args.force)
    print(f"TUF リポジトリを作成しました / TUF repository created: {repo.dir}")
    print(f"  trusted root for the boxes: {root}")
    print(f"  offline keys (root, targets): {repo.offline_keys}   online keys: {repo.online_keys}")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    try:
        res = _repo(args).publish(args.kind, args.version, args.path)
    except RepoError as exc:
        print(f"公開できません / cannot publish: {exc}")
        return 1
    print(f"公開しました / published {res.target} ({res.length} bytes, {res.rule_count} rules, "
          f"sha256 {res.sha256[:16]}…, targets v{res.targets_version})")
    return 0


@_reported
def cmd_refresh(args: argparse.Namespace) -> int:
    repo = _repo(args)
    if args.rotate_timestamp_key:
        print(f"new timestamp key: {repo.rotate_key('timestamp')}")
    done = repo.refresh()
    print(json.dumps({**done, "status": repo.status()}, indent=1))
    return 1 if done["pending"] else 0


def add_cli(subparsers: Any, *, default_repo: str = "/var/lib/vcr-opscenter/tuf/repo",
            default_keys: str | None = None) -> None:
    """Add ``tuf-init``, ``publish`` and ``tuf-refresh`` to the center's argparse subparsers."""

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--repo", default=default_repo, help="repository folder (served at /tuf/)")
        p.add_argument("--keys", default=default_keys, help="keys folder (default: <repo>-keys beside it)")
        p.add_argument("--offline-keys", help="folder with the offline root/targets keys, if not under --keys")

    p = subparsers.add_parser("tuf-init", help="create the TUF repository of signed bundles and its keys")
    common(p)
    p.add_argument("--force", action="store_true", help="replace an existing repository")
    p.set_defaults(fn=cmd_init)

    p = subparsers.add_parser("publish", help="publish a signed bundle (IPS rules, threat intel, ...) to the boxes")
    common(p)
    p.add_argument("kind", choices=KINDS)
    p.add_argument("version", help="bundle version, e.g. 2026.11.25.1 (newer must sort higher)")
    p.add_argument("path", help="a bundle .tar.gz, or a folder/file to pack into one")
    p.set_defaults(fn=cmd_publish)

    p = subparsers.add_parser("tuf-refresh", help="renew TUF metadata before it expires (run from cron)")
    common(p)
    p.add_argument("--rotate-timestamp-key", action="store_true", help="replace the online timestamp key first")
    p.set_defaults(fn=cmd_refresh)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m opscenter.tufrepo``) until the center's CLI has these."""
    parser = argparse.ArgumentParser(prog="tufrepo")
    add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(main())
