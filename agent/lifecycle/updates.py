"""Signed bundle updates on the box: TUF (python-tuf ngclient) download, staging, load check, swap.

One bundle kind at a time (``ips``, ``threatintel``, ``webcat``, ``av``, ``antispam``; ``release``
is staged here and installed by the upgrade path in the maintenance window):

1. ``check_and_stage(kind)``: the NTP clock check, a TUF refresh (root -> timestamp -> snapshot ->
   targets, every signature, version and expiry checked), the newest target of that kind, its
   download checked against the signed length and hash, the tarball unpacked safely into a staging
   folder and its manifest checked file by file.
2. ``activate(staged)``: the engine that takes the kind (``Engine.bundle_kinds``, asked of
   filters/registry.py) builds from the staged files beside the running one (``Engine.load_bundle``;
   IPS: the real rule loader and compiler). The bundle is installed only if it loads and its
   rule count is not below ``min_rule_ratio`` of the live bundle's. Then it moves to
   ``<bundles_dir>/<kind>/<version>/``, the ``current`` symlink is switched atomically and the
   daemon reloads (the workers build their engines beside the running ones and swap, no restart).
   The previous version stays on disk for ``rollback``.

Every rejection raises an EVE record (``event_type: "update"``) with a reason: ``tampered``
(length/hash mismatch), ``rollback`` (older metadata, or a bundle older than the live one),
``freeze`` (expired metadata with a correct clock), ``clock`` (the box's clock is wrong, so expiry
cannot be judged), ``bad_signature`` (metadata not signed by the keys root lists), ``manifest``,
``load_failed``, ``rule_count``, ``disk``, ``invalid_metadata``. The messages are Japanese with
English.

The engines see the live bundles through their config sections: ``apply_live_bundles`` (called by
agent/engines.py after ``load_config``) has each engine that takes a kind put ``current``'s real
path into its section (``Engine.apply_bundle``: the IPS rule files, the web filter's database, the
ATP feeds), so every config load and reload (SIGHUP) picks up exactly the live version.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import random
import re
import shutil
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from agent.fsutil import atomic_write

if TYPE_CHECKING:  # pragma: no cover
    from agent.config import AgentConfig, Updates

log = logging.getLogger(__name__)

KINDS = ("ips", "threatintel", "webcat", "av", "antispam", "release")  # "release" is the upgrade's
MANIFEST = "manifest.json"
VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+-]{0,63}$")
MAX_UNPACKED = 4 << 30  # bytes a bundle may unpack to
DISK_MARGIN = 64 << 20  # bytes kept free on the state partition
ALARM_REPEAT = 6 * 3600.0  # the same rejection (kind, reason, version) is raised again after this
NTP_CHECK_EVERY = 3600.0

# reason -> (severity, Japanese, English); a table of texts like upgrade.py MESSAGES (alike by design)
REASONS: dict[str, tuple[int, str, str]] = {
    "tampered": (1, "署名と一致しない更新ファイルを拒否しました（改ざんの可能性）",
                 "update rejected: the file does not match its signed length/hash (possible tampering)"),
    "rollback": (1, "古いバージョンへの巻き戻しを拒否しました（ロールバック攻撃の可能性）",
                 "update rejected: older metadata or bundle than the one already trusted (possible rollback attack)"),
    "freeze": (2, "更新情報の有効期限が切れています（凍結攻撃またはセンターの署名更新漏れ）",
               "update rejected: the repository metadata has expired (freeze attack, or the center stopped re-signing)"),
    "clock": (2, "本体の時計がずれているため更新情報の有効期限を判断できません。NTP (UDP 123) を確認してください",
              "the box's clock is wrong, so update expiry cannot be judged; check NTP (UDP 123)"),
    "bad_signature": (1, "信頼する鍵で署名されていない更新情報を拒否しました",
                      "update rejected: metadata is not signed by the keys the trusted root lists"),
    "invalid_metadata": (2, "更新情報が不正です", "update rejected: invalid repository metadata"),
    "manifest": (1, "更新パッケージの内容が署名済みの内容と一致しません",
                 "update rejected: the bundle's contents do not match its manifest/signed metadata"),
    "load_failed": (2, "新しいシグネチャを読み込めないため、現在のシグネチャで運用を続けます",
                    "update rejected: the new bundle does not load; the running signatures stay"),
    "rule_count": (2, "新しいシグネチャのルール数が大きく減ったため適用しませんでした",
                   "update rejected: the new bundle's rule count collapsed; the running signatures stay"),
    "disk": (2, "ディスクの空き容量が不足しているため更新できません", "update not installed: not enough free disk space"),
    "rolled_back": (3, "シグネチャを前のバージョンに戻しました", "bundle rolled back to the previous version"),
    "activated": (4, "シグネチャを更新しました", "bundle updated"),
}


class UpdateError(Exception):
    """A rejected or failed update step; ``reason`` is a key of REASONS (or "unreachable")."""

    def __init__(self, reason: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.extra = extra


@dataclass
class Loaded:
    """What a loader built from a staged bundle: the rule count it checks and a summary."""

    rules_loaded: int
    summary: dict[str, Any] = field(default_factory=dict)
    engine: Any = None
    counts_manifest_rules: bool = False  # rules_loaded counts what the manifest's rule_count does


@dataclass
class Staged:
    kind: str
    version: str
    path: Path  # the unpacked, verified staging folder
    manifest: dict[str, Any]
    sha256: str
    length: int


@dataclass
class Result:
    kind: str
    status: str  # up_to_date | activated | rejected | unreachable | no_bundle | staged | rolled_back | deferred
    version: str | None = None
    live: str | None = None
    reason: str | None = None
    detail: str = ""
    alarm: dict[str, Any] | None = None
    rules_loaded: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None and k != "alarm"}


def version_key(version: str) -> tuple[Any, ...]:
    """Order bundle versions: numeric parts numerically ("2026.11.25.10" > "2026.11.25.9")."""
    parts = re.split(r"[._+-]", version)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def target_name(kind: str, version: str) -> str:
    return f"{kind}/{kind}-{version}.tar.gz"


def _utc(ts: float | None = None) -> str:
    from filters.eve import timestamp

    return timestamp(time.time() if ts is None else ts)


def update_record(kind: str, reason: str, *, action: str = "rejected", version: str | None = None,
                  live: str | None = None, detail: str = "", **extra: Any) -> dict[str, Any]:
    """The EVE record of an update event (a rejection is an alarm; activation/rollback are info)."""
    severity, ja, en = REASONS.get(reason, (2, "更新に失敗しました", "update failed"))
    upd: dict[str, Any] = {"kind": kind, "action": action, "reason": reason, "severity": severity,
                           "message": f"{ja} / {en}"}
    if version is not None:
        upd["version"] = version
    if live is not None:
        upd["live_version"] = live
    if detail:
        upd["detail"] = detail
    upd.update({k: v for k, v in extra.items() if v is not None})
    return {"timestamp": _utc(), "event_type": "update", "update": upd}


# -- clock ----------------------------------------------------------------------------------------
def _split_server(server: str) -> tuple[str, int]:
    if server.startswith("["):  # [v6]:port
        host, _, port = server[1:].partition("]")
        return host, int(port.lstrip(":") or 123)
    if server.count(":") == 1:
        host, port = server.split(":")
        return host, int(port)
    return server, 123


def check_clock(servers: list[str], *, max_skew: float, timeout: float = 3.0,
                query: Callable[..., Any] | None = None) -> dict[str, Any]:
    """Ask the NTP servers in turn; ``ok`` is True/False, or None when none answered.

    SNTP is unauthenticated: its answer only explains a failure or holds an update back, it never
    makes the box accept metadata that its own clock says has expired."""
    if query is None:
        from agent.link.ntp import query
    errors = []
    for server in servers:
        host, port = _split_server(server)
        try:
            r = query(host, port=port, timeout=timeout)
        except OSError as exc:
            errors.append(f"{server}: {exc}")
            continue
        offset = float(r.offset if hasattr(r, "offset") else r[0])
        return {"ok": abs(offset) <= max_skew, "server": server, "offset_s": round(offset, 3),
                "max_skew_s": max_skew, "checked_at": _utc()}
    return {"ok": None, "error": "; ".join(errors) or "no NTP server configured", "checked_at": _utc()}


def _describe_offset(offset: float) -> str:
    way = "ahead of" if offset < 0 else "behind"
    return f"the box's clock is {abs(offset):.0f} s {way} NTP time"


# -- loaders --------------------------------------------------------------------------------------
Loader = Callable[[Path, Mapping[str, Any], "AgentConfig | None"], Loaded]


def load_with_engine(kind: str) -> Loader:
    """The loader of ``kind``: the engine that takes it builds the staged bundle beside the running
    one, configured from the running section (``Engine.load_bundle``). A kind no engine takes yet
    is checked against its manifest only."""
    from filters.engine import BundleError, Engine
    from filters.registry import engine_for_kind

    cls = engine_for_kind(kind) or Engine

    def load(staged: Path, manifest: Mapping[str, Any], cfg: "AgentConfig | None") -> Loaded:
        from filters.engine import EngineContext

        section = dict((cfg.engines.get(cls.name) if cfg else None) or {})
        try:
            res = cls.load_bundle(kind, staged, manifest, section, cfg.engine_context() if cfg else EngineContext())
        except BundleError as exc:
            raise UpdateError("load_failed", str(exc)) from None
        return Loaded(res.rules_loaded, res.summary, res.engine, res.counts_manifest_rules)

    return load


# -- the live bundles, seen from the config -------------------------------------------------------
def live_path(bundles_dir: str | os.PathLike[str], kind: str) -> Path | None:
    """The real folder of ``kind``'s live version, or None."""
    cur = Path(bundles_dir) / kind / "current"
    try:
        real = Path(os.path.realpath(cur))
    except OSError:
        return None
    return real if cur.is_symlink() and real.is_dir() else None


def apply_live_bundles(data: dict[str, Any], bundles_dir: str) -> bool:
    """Point the raw config's engines at the live bundles (agent/engines.py, after ``load_config``).

    For every kind with a live version, the engine that takes it (filters/registry.py) puts the
    version folder's real path into its section (``Engine.apply_bundle``), so a reload loads one
    whole version. Only engines the config has a section for are touched. Returns whether anything
    changed."""
    from filters.registry import engine_classes

    engines = data.get("engines")
    if not isinstance(engines, dict):
        return False
    changed = False
    for cls in engine_classes():
        for kind in cls.bundle_kinds:
            section = engines.get(cls.name)
            live = live_path(bundles_dir, kind)
            if not isinstance(section, dict) or live is None:
                continue
            new = cls.apply_bundle(section, kind, live)
            if new != section:
                engines[cls.name] = new
                changed = True
    return changed


# -- HTTP for ngclient (the center's own CA) ------------------------------------------------------
def _make_fetcher(ca_file: str, timeout: float) -> Any:
    import urllib3
    from tuf.api import exceptions
    from tuf.ngclient.fetcher import FetcherInterface

    class Fetcher(FetcherInterface):
        def __init__(self) -> None:
            kw: dict[str, Any] = {"retries": urllib3.Retry(total=2, backoff_factor=0.5, redirect=0)}
            if ca_file:
                kw.update(cert_reqs="CERT_REQUIRED", ca_certs=ca_file)
            self.pool = urllib3.PoolManager(**kw)

        def _fetch(self, url: str) -> Iterator[bytes]:
            try:
                resp = self.pool.request("GET", url, preload_content=False, timeout=urllib3.Timeout(timeout),
                                         headers={"User-Agent": "vcr-agent-updates"})
            except urllib3.exceptions.MaxRetryError as exc:
                if isinstance(exc.reason, urllib3.exceptions.TimeoutError):
                    raise exceptions.SlowRetrievalError from exc
                raise exceptions.DownloadError(f"{url}: {exc.reason}") from exc
            if resp.status >= 400:
                resp.close()
                raise exceptions.DownloadHTTPError(f"HTTP {resp.status} for {url}", resp.status)
            return self._chunks(resp)

        @staticmethod
        def _chunks(resp: Any) -> Iterator[bytes]:
            try:
                yield from resp.stream(256 * 1024)
            except urllib3.exceptions.HTTPError as exc:
                raise exceptions.DownloadError(str(exc)) from exc
            finally:
                resp.release_conn()

    return Fetcher()


# -- the updater ----------------------------------------------------------------------------------
def settings_from_config(cfg: "AgentConfig") -> "Updates":
    return cfg.updates  # type: ignore[attr-defined]


def repository_url(cfg: "AgentConfig") -> str:
    """``updates.repository_url``, or ``<center url>/tuf/`` when the config has a center section."""
    upd = cfg.updates  # type: ignore[attr-defined]
    if upd.repository_url:
        return upd.repository_url.rstrip("/") + "/"
    center = getattr(cfg, "center", None)
    url = getattr(center, "url", "") if center is not None else ""
    return url.rstrip("/") + "/tuf/" if url else ""


def ca_file(cfg: "AgentConfig") -> str:
    upd = cfg.updates  # type: ignore[attr-defined]
    if upd.ca_file:
        return upd.ca_file
    center = getattr(cfg, "center", None)
    for name in ("ca_file", "ca_bundle", "ca"):
        value = getattr(center, name, "") if center is not None else ""
        if isinstance(value, str) and value:
            return value
    return ""


class BundleUpdater:
    """Checks, stages, activates and rolls back bundles. Thread-safe; one check at a time (a lock
    file also keeps a CLI run and the daemon's loop apart)."""

    def __init__(self, cfg: "AgentConfig", *, emit: Callable[[dict[str, Any]], None] | None = None,
                 reload: Callable[[], bool | None] | None = None, loaders: Mapping[str, Loader] | None = None,
                 ntp_query: Callable[..., Any] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.s = settings_from_config(cfg)
        self.url = repository_url(cfg)
        self.ca_file = ca_file(cfg)
        self.emit = emit
        self.reload = reload
        self.loaders: dict[str, Loader] = dict(loaders or {})  # kind -> loader, instead of the engine's
        self.ntp_query = ntp_query
        self.clock = clock
        self.bundles = Path(self.s.bundles_dir)
        self.metadata_dir = Path(self.s.metadata_dir)
        self.download_dir = Path(self.s.download_dir)
        center = getattr(cfg, "center", None)
        self.ntp_servers = list(self.s.ntp_servers if self.s.ntp_servers is not None
                                else getattr(center, "ntp_servers", []) or [])
        self.max_skew = float(self.s.max_clock_skew or getattr(center, "clock_tolerance", 300.0))
        self.last_clock: dict[str, Any] | None = None
        self._last_clock_at = 0.0
        self._alarmed: dict[tuple[str, str, str], float] = {}
        self._pending: list[tuple[str, str, str | None]] = []  # (kind, new, previous) awaiting reload confirmation
        self._lock = threading.RLock()
        self.last_results: dict[str, dict[str, Any]] = {}

    # -- state files --------------------------------------------------------------------------
    def _kind_dir(self, kind: str) -> Path:
        return self.bundles / kind

    def _state_path(self, kind: str) -> Path:
        return self._kind_dir(kind) / "state.json"

    def state(self, kind: str) -> dict[str, Any]:
        try:
            st = json.loads(self._state_path(kind).read_text())
        except (OSError, ValueError):
            st = {}
        st.setdefault("versions", {})
        st.setdefault("refused", {})  # version -> {sha256, reason}: not retried
        return st

    def _save_state(self, kind: str, st: dict[str, Any]) -> None:
        path = self._state_path(kind)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(st, indent=1, sort_keys=True), 0o644)

    def current(self, kind: str) -> str | None:
        cur = self._kind_dir(kind) / "current"
        try:
            target = os.readlink(cur)
        except OSError:
            return None
        return Path(target).name if (self._kind_dir(kind) / target).is_dir() else None

    def live_versions(self) -> dict[str, str]:
        """{kind: version} of the bundles the engines run now (for the heartbeat's ``signatures``).

        A version whose reload is still unconfirmed is reported once the workers confirm it (until
        then the previous one, which they still run)."""
        out: dict[str, str] = {}
        pending = {k: prev for k, _, prev in self._pending}
        for kind in KINDS:
            if kind in pending:
                if pending[kind]:
                    out[kind] = pending[kind]  # type: ignore[assignment]
                continue
            v = self.current(kind)
            if v:
                out[kind] = v
        return out

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        self.bundles.mkdir(parents=True, exist_ok=True)
        with self._lock, open(self.bundles / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- alarms --------------------------------------------------------------------------------
    def _alarm(self, kind: str, err: UpdateError, *, version: str | None, live: str | None) -> dict[str, Any]:
        rec = update_record(kind, err.reason, version=version, live=live, detail=err.detail, **err.extra)
        key = (kind, err.reason, version or "")
        now = self.clock()
        if now - self._alarmed.get(key, -1e18) >= ALARM_REPEAT:
            self._alarmed[key] = now
            log.warning("update %s: %s (%s)", kind, rec["update"]["message"], err.detail)
            if self.emit:
                self.emit(rec)
        return rec

    def _info(self, kind: str, reason: str, action: str, **kw: Any) -> dict[str, Any]:
        rec = update_record(kind, reason, action=action, **kw)
        log.info("update %s: %s %s", kind, action, kw.get("version", ""))
        if self.emit:
            self.emit(rec)
        return rec

    # -- clock ---------------------------------------------------------------------------------
    def clock_check(self, *, force: bool = False) -> dict[str, Any] | None:
        if not self.ntp_servers:
            return None
        now = self.clock()
        if force or self.last_clock is None or now - self._last_clock_at >= NTP_CHECK_EVERY:
            self.last_clock = check_clock(self.ntp_servers, max_skew=self.max_skew, query=self.ntp_query)
            self._last_clock_at = now
        return self.last_clock

    # -- TUF ---------------------------------------------------------------------------------
    def _tuf(self) -> Any:
        from tuf.ngclient import Updater, UpdaterConfig

        if not self.url:
            raise UpdateError("unreachable", "no repository URL (updates.repository_url or the center's url)")
        try:
            root = Path(self.s.trusted_root).read_bytes()
        except OSError as exc:
            raise UpdateError("invalid_metadata", f"trusted root {self.s.trusted_root}: {exc.strerror}") from None
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        self.download_dir.mkdir(parents=True, exist_ok=True)
        return Updater(str(self.metadata_dir), self.url + "metadata/", str(self.download_dir), self.url + "targets/",
                       fetcher=_make_fetcher(self.ca_file, self.s.timeout),
                       config=UpdaterConfig(app_user_agent="vcr-agent"), bootstrap=root)

    def _classify(self, exc: Exception, clock: dict[str, Any] | None) -> UpdateError:
        """Map a python-tuf failure to a rejection reason (checking the clock for expiry)."""
        from tuf.api import exceptions as tex

        if isinstance(exc, UpdateError):
            return exc
        text = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, tex.ExpiredMetadataError):
            clock = self.clock_check(force=True) or clock
            if clock is not None and clock.get("ok") is False:
                return UpdateError("clock", f"{text}; {_describe_offset(clock['offset_s'])}", ntp=clock)
            if clock is None:
                clock = {"ok": None, "error": "no NTP server configured: the clock could not be verified"}
            return UpdateError("freeze", text, ntp=clock)
        if isinstance(exc, tex.BadVersionNumberError):
            return UpdateError("rollback", text)
        if isinstance(exc, tex.UnsignedMetadataError):
            return UpdateError("bad_signature", text)
        if isinstance(exc, (tex.LengthOrHashMismatchError, tex.DownloadLengthMismatchError)):
            return UpdateError("tampered", text)
        if isinstance(exc, (tex.DownloadError, OSError)):
            return UpdateError("unreachable", text)
        return UpdateError("invalid_metadata", text)  # RepositoryError and anything unexpected

    def _newest(self, kind: str, want: str | None = None) -> tuple[str, Any] | None:
        """After a refresh: the newest (version, TargetFile) of ``kind`` in the trusted targets
        (``want``: exactly that version, e.g. the release an upgrade task names)."""
        from tuf.api.metadata import Metadata

        # ngclient persists targets.json only once it verified it; the chosen entry is then
        # fetched through the public get_targetinfo.
        targets = Metadata.from_file(str(self.metadata_dir / "targets.json")).signed.targets
        best: tuple[tuple[Any, ...], str, str] | None = None
        for name, tf in targets.items():
            custom = tf.custom if isinstance(tf.custom, dict) else {}
            version = str(custom.get("version", ""))
            if custom.get("kind") != kind or not VERSION_RE.match(version) or name != target_name(kind, version):
                continue
            if want is not None and version != want:
                continue
            key = version_key(version)
            if best is None or key > best[0]:
                best = (key, version, name)
        if best is None:
            return None
        return best[1], best[2]

    # -- check and stage ---------------------------------------------------------------------
    def check_and_stage(self, kind: str, version: str | None = None) -> Staged | Result:
        """Refresh the trusted metadata, then download, verify and unpack ``kind``'s newest bundle
        (or exactly ``version``) if it is newer than the live one. Returns a Staged bundle, or a
        Result (up to date, or a rejection whose alarm was raised)."""
        want = version
        if kind not in KINDS:
            raise ValueError(f"unknown bundle kind {kind!r}")
        with self._exclusive():
            live = self.current(kind)
            clock = self.clock_check()
            version = None
            try:
                if clock is not None and clock.get("ok") is False:
                    raise UpdateError("clock", f"{_describe_offset(clock['offset_s'])} (more than "
                                      f"{self.max_skew:g} s): metadata expiry cannot be judged", ntp=clock)
                updater = self._tuf()
                try:
                    updater.refresh()
                    newest = self._newest(kind, want)
                except Exception as exc:  # noqa: BLE001 - every failure is classified and reported
                    raise self._classify(exc, clock) from None
                if newest is None:
                    return self._result(Result(kind, "no_bundle", want, live=live, detail=(
                        f"version {want} is not published" if want else "no bundle of this kind published")))
                version, name = newest
                st = self.state(kind)
                if live is not None and version == live:
                    return self._result(Result(kind, "up_to_date", version, live))
                if live is not None and version_key(version) < version_key(live):
                    raise UpdateError("rollback", f"the newest published {kind} bundle {version} is older than the "
                                      f"live {live}", offered=version)
                try:
                    info = updater.get_targetinfo(name)
                except Exception as exc:  # noqa: BLE001
                    raise self._classify(exc, clock) from None
                if info is None:
                    raise UpdateError("invalid_metadata", f"{name} vanished from the targets")
                digest = info.hashes.get("sha256", "")
                refused = st["refused"].get(version)
                if refused and refused.get("sha256") == digest:
                    return self._result(Result(kind, "rejected", version, live, refused.get("reason"),
                                               "refused earlier; waiting for a newer version"))
                self._check_disk(info.length * 3)
                return self._download_and_stage(kind, version, info, updater, live)
            except UpdateError as err:
                return self._reject(kind, err, version=err.extra.pop("offered", None) or version, live=live)

    def _result(self, res: Result) -> Result:
        self.last_results[res.kind] = {**res.as_dict(), "at": _utc()}
        return res

    def _reject(self, kind: str, err: UpdateError, *, version: str | None, live: str | None) -> Result:
        if err.reason == "unreachable":
            log.warning("update %s: repository unreachable: %s", kind, err.detail)
            return self._result(Result(kind, "unreachable", version, live, "unreachable", err.detail))
        alarm = self._alarm(kind, err, version=version, live=live)
        return self._result(Result(kind, "rejected", version, live, err.reason, err.detail, alarm))

    def _check_disk(self, need: int) -> None:
        self.bundles.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.bundles).free
        if free - need < DISK_MARGIN:
            raise UpdateError("disk", f"{free >> 20} MiB free in {self.bundles}, {need >> 20} MiB needed")

    def _download_and_stage(self, kind: str, version: str, info: Any, updater: Any, live: str | None) -> Staged:
        dest = self.download_dir / f"{kind}-{version}.tar.gz"
        try:
            updater.download_target(info, str(dest))
        except Exception as exc:  # noqa: BLE001
            with contextlib.suppress(FileNotFoundError):
                dest.unlink()
            raise self._classify(exc, None) from None
        staging = self._kind_dir(kind) / f".staging-{version}"
        try:
            manifest = unpack_bundle(dest, staging, kind=kind, version=version)
            custom = info.custom if isinstance(info.custom, dict) else {}
            if "rule_count" in custom and int(custom["rule_count"]) != int(manifest.get("rule_count") or 0):
                raise UpdateError("manifest", f"manifest rule_count {manifest.get('rule_count')} differs from the "
                                  f"signed metadata's {custom['rule_count']}")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                dest.unlink()
        return Staged(kind, version, staging, manifest, info.hashes.get("sha256", ""), info.length)

    # -- activate ------------------------------------------------------------------------------
    def activate(self, staged: Staged) -> Result:
        """Load the staged bundle into a new engine; if it loads and its rule count holds, install
        it, switch ``current`` and reload the daemon. The previous version is kept."""
        kind, version = staged.kind, staged.version
        with self._exclusive():
            st = self.state(kind)
            live = self.current(kind)
            try:
                if kind == "release":
                    raise UpdateError("deferred", "software releases install through the upgrade path, "
                                      "in the maintenance window")
                loader = self.loaders.get(kind) or load_with_engine(kind)
                try:
                    loaded = loader(staged.path, staged.manifest, self.cfg)
                except UpdateError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a loader crash is a failed load
                    raise UpdateError("load_failed", f"{type(exc).__name__}: {exc}") from None
                self._check_count(kind, loaded, staged.manifest, st, live)
                self._install(staged, loaded, st, live)
            except UpdateError as err:
                shutil.rmtree(staged.path, ignore_errors=True)
                if err.reason == "deferred":
                    return self._result(Result(kind, "deferred", version, live, None, err.detail))
                if err.reason in ("load_failed", "rule_count", "manifest"):
                    st["refused"][version] = {"sha256": staged.sha256, "reason": err.reason, "at": _utc()}
                    self._save_state(kind, st)
                return self._reject(kind, err, version=version, live=live)
        res = Result(kind, "activated", version, live, rules_loaded=loaded.rules_loaded)
        confirmed = self._trigger_reload(kind, version, live)
        if confirmed is False:
            return self._result(Result(kind, "rejected", version, live, "load_failed",
                                       "the daemon's engines did not load it; rolled back",
                                       alarm=None))
        self._info(kind, "activated", "activated", version=version, live=live,
                   rules_loaded=loaded.rules_loaded, previous=live)
        return self._result(res)

    def _check_count(self, kind: str, loaded: Loaded, manifest: Mapping[str, Any], st: dict[str, Any],
                     live: str | None) -> None:
        ratio = self.s.min_rule_ratio
        claimed = int(manifest.get("rule_count") or 0)
        if claimed and loaded.rules_loaded == 0:
            raise UpdateError("load_failed", f"none of the {claimed} rules loaded", rules_loaded=0)
        if loaded.counts_manifest_rules and claimed and loaded.rules_loaded < ratio * claimed:
            raise UpdateError("load_failed", f"only {loaded.rules_loaded} of the {claimed} rules the manifest "
                              f"states loaded (minimum ratio {ratio:g})", rules_loaded=loaded.rules_loaded)
        prev = (st["versions"].get(live) or {}).get("rules_loaded") if live else None
        if prev and loaded.rules_loaded < ratio * prev:
            raise UpdateError("rule_count", f"{loaded.rules_loaded} rules against {prev} in the live {live} "
                              f"(minimum ratio {ratio:g})", rules_loaded=loaded.rules_loaded, previous_rules=prev)

    def _install(self, staged: Staged, loaded: Loaded, st: dict[str, Any], live: str | None) -> None:
        kind, version = staged.kind, staged.version
        kdir = self._kind_dir(kind)
        final = kdir / version
        if final.exists():  # an earlier install of this version (e.g. rolled back from): replace it
            trash = kdir / f".trash-{version}-{os.getpid()}"
            os.rename(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.rename(staged.path, final)
        _fsync_dir(kdir)
        st["versions"][version] = {"sha256": staged.sha256, "length": staged.length,
                                   "rule_count": staged.manifest.get("rule_count"),
                                   "rules_loaded": loaded.rules_loaded, "summary": loaded.summary,
                                   "created": staged.manifest.get("created"), "installed_at": _utc()}
        st["previous"] = live
        st["current"] = version
        st.pop("blocked", None)
        self._switch(kind, version)
        self._save_state(kind, st)
        self._prune(kind, st)

    def _switch(self, kind: str, version: str) -> None:
        """Point ``current`` at ``version`` atomically (rename of a new symlink over the old)."""
        kdir = self._kind_dir(kind)
        tmp = kdir / f".current-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(version, tmp)
        os.replace(tmp, kdir / "current")
        _fsync_dir(kdir)

    def _prune(self, kind: str, st: dict[str, Any]) -> None:
        keep = {st.get("current"), st.get("previous")}
        versions = sorted((v for v in st["versions"] if (self._kind_dir(kind) / v).is_dir()), key=version_key)
        extra = [v for v in versions if v not in keep]
        while len(extra) and len(extra) + len(keep - {None}) > self.s.keep_versions:
            v = extra.pop(0)
            shutil.rmtree(self._kind_dir(kind) / v, ignore_errors=True)
            st["versions"].pop(v, None)
        self._save_state(kind, st)

    def _trigger_reload(self, kind: str, version: str, previous: str | None) -> bool | None:
        if self.reload is None:
            return True  # nothing runs: the next start loads the new version
        self._pending.append((kind, version, previous))
        try:
            ok = self.reload()
        except Exception as exc:  # noqa: BLE001
            log.exception("reload trigger failed")
            ok = None
            self.last_results.setdefault(kind, {})["reload_error"] = str(exc)
        if ok is None:
            return None  # confirmed later by on_reload_result
        self.on_reload_result(bool(ok), "" if ok else "the engines failed to load the new bundle")
        return bool(ok)

    def on_reload_result(self, ok: bool, error: str = "") -> None:
        """The daemon tells the outcome of the reload that activation asked for (all workers
        reloaded, or one failed). A failure switches ``current`` back and reloads again."""
        with self._lock:
            pending, self._pending = self._pending, []
        if ok or not pending:
            return
        for kind, version, previous in pending:
            with self._exclusive():
                st = self.state(kind)
                if previous and (self._kind_dir(kind) / previous).is_dir():
                    self._switch(kind, previous)
                    st["current"], st["previous"] = previous, None
                else:
                    with contextlib.suppress(FileNotFoundError):
                        (self._kind_dir(kind) / "current").unlink()
                    st["current"] = None
                st["refused"][version] = {"sha256": (st["versions"].get(version) or {}).get("sha256"),
                                          "reason": "load_failed", "at": _utc()}
                self._save_state(kind, st)
            self._alarm(kind, UpdateError("load_failed", f"the agent's engines failed to load it: {error}"),
                        version=version, live=previous)
        if self.reload is not None:
            with contextlib.suppress(Exception):
                self.reload()

    def check(self, kind: str) -> Result:
        """check_and_stage then activate: one call for the loop and the CLI."""
        staged = self.check_and_stage(kind)
        if isinstance(staged, Result):
            return staged
        return self.activate(staged)

    def check_all(self, kinds: list[str] | None = None) -> list[Result]:
        return [self.check(k) for k in (kinds or list(self.s.kinds))]

    # -- rollback ------------------------------------------------------------------------------
    def rollback(self, kind: str) -> Result:
        """Go back to the previous version kept on disk; the version left is not re-installed
        until a newer one is published."""
        with self._exclusive():
            st = self.state(kind)
            live = self.current(kind)
            prev = st.get("previous")
            if not prev or not (self._kind_dir(kind) / prev).is_dir():
                return Result(kind, "rejected", live=live, reason="no_previous",
                              detail="no previous version is kept for this kind")
            self._switch(kind, prev)
            st["current"], st["previous"] = prev, None
            if live:
                st["refused"][live] = {"sha256": (st["versions"].get(live) or {}).get("sha256"),
                                       "reason": "rolled_back", "at": _utc()}
            self._save_state(kind, st)
        ok = self._trigger_reload(kind, prev, live)
        self._info(kind, "rolled_back", "rolled_back", version=prev, live=live, previous=live)
        return self._result(Result(kind, "rolled_back", prev, live,
                                   detail="" if ok is not False else "the engines failed to reload"))

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"repository": self.url, "enabled": self.s.enabled, "kinds": {}}
        for kind in KINDS:
            st = self.state(kind)
            cur = self.current(kind)
            if not cur and not st["versions"] and kind not in self.last_results:
                continue
            out["kinds"][kind] = {"live": cur, "previous": st.get("previous"),
                                  "on_disk": sorted((v for v in st["versions"] if (self._kind_dir(kind) / v).is_dir()),
                                                    key=version_key),
                                  "rules_loaded": (st["versions"].get(cur) or {}).get("rules_loaded") if cur else None,
                                  "refused": st["refused"], "last_check": self.last_results.get(kind)}
        if self.last_clock is not None:
            out["clock"] = self.last_clock
        return out


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def unpack_bundle(bundle: Path, dest: Path, *, kind: str, version: str) -> dict[str, Any]:
    """Unpack a verified bundle into ``dest`` (regular files and folders only, inside ``dest``,
    bounded in size) and check its manifest: kind, version, and every file's size and sha256,
    with nothing missing and nothing extra. Raises UpdateError("manifest")."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    try:
        with tarfile.open(bundle, "r:gz") as tar:
            members = tar.getmembers()
            total, names = 0, set()
            for m in members:
                if not (m.isreg() or m.isdir()):
                    raise UpdateError("manifest", f"{m.name}: only files and folders are allowed in a bundle")
                name = os.path.normpath(m.name)
                if name.startswith(("/", "..")) or name in names:
                    raise UpdateError("manifest", f"{m.name}: bad or duplicate path")
                names.add(name)
                total += m.size
            if total > MAX_UNPACKED:
                raise UpdateError("manifest", f"bundle unpacks to {total} bytes (limit {MAX_UNPACKED})")
            free = shutil.disk_usage(dest).free
            if free - total < DISK_MARGIN:
                raise UpdateError("disk", f"{free >> 20} MiB free, the bundle needs {total >> 20} MiB")
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise UpdateError("disk", str(exc)) from None
        raise UpdateError("manifest", f"not a valid bundle: {exc}") from None
    try:
        manifest = json.loads((dest / MANIFEST).read_text())
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: nesting too deep for json
        raise UpdateError("manifest", f"{MANIFEST}: {exc}") from None
    if not isinstance(manifest, dict):
        raise UpdateError("manifest", f"{MANIFEST}: expected a JSON object, not {type(manifest).__name__}")
    if manifest.get("kind") != kind or str(manifest.get("version")) != version:
        raise UpdateError("manifest", f"the manifest says {manifest.get('kind')!r} {manifest.get('version')!r}, "
                          f"the signed target {kind} {version}")
    files = manifest.get("files")
    if not isinstance(files, list) or not isinstance(manifest.get("rule_count", 0), int):
        raise UpdateError("manifest", "manifest needs files (a list) and rule_count (an integer)")
    listed: dict[str, dict[str, Any]] = {}
    for f in files:
        if not isinstance(f, dict) or not isinstance(f.get("path"), str):
            raise UpdateError("manifest", "bad files entry")
        listed[os.path.normpath(f["path"])] = f
    present = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()} - {MANIFEST}
    if present != set(listed):
        extra, missing = sorted(present - set(listed)), sorted(set(listed) - present)
        raise UpdateError("manifest", f"files differ from the manifest (extra {extra[:5]}, missing {missing[:5]})")
    for rel, f in listed.items():
        data = (dest / rel).read_bytes()
        if len(data) != f.get("size") or hashlib.sha256(data).hexdigest() != f.get("sha256"):
            raise UpdateError("manifest", f"{rel}: size/sha256 differ from the manifest")
    return manifest


# -- the daemon's loop ----------------------------------------------------------------------------
class UpdateService:
    """The periodic check in the daemon: a thread that runs ``check_all`` every
    ``updates.check_interval`` seconds (with jitter), plus ``check_now`` for a task from the center.

    The daemon wires: ``emit`` = its EVE log's write, ``request_reload`` = set its reload event
    (returns None: the outcome arrives through ``on_reload_result``, called when all workers
    reported ``reloaded`` or one reported ``reload_failed``)."""

    def __init__(self, cfg: "AgentConfig", *, emit: Callable[[dict[str, Any]], None],
                 request_reload: Callable[[], bool | None], first_delay: float = 30.0) -> None:
        self.updater = BundleUpdater(cfg, emit=emit, reload=request_reload)
        self.interval = cfg.updates.check_interval  # type: ignore[attr-defined]
        self.first_delay = first_delay
        self._stop = threading.Event()
        self._now = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="updates", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._now.set()

    def check_now(self) -> None:
        self._now.set()

    def on_reload_result(self, ok: bool, error: str = "") -> None:
        self.updater.on_reload_result(ok, error)

    def live_versions(self) -> dict[str, str]:
        return self.updater.live_versions()

    def status(self) -> dict[str, Any]:
        return self.updater.status()

    def _run(self) -> None:
        wait = self.first_delay
        while not self._stop.is_set():
            self._now.wait(wait)
            self._now.clear()
            if self._stop.is_set():
                return
            try:
                for res in self.updater.check_all():
                    log.info("update check %s: %s %s", res.kind, res.status, res.version or "")
            except Exception:  # noqa: BLE001 - the loop must survive anything
                log.exception("update check failed")
            wait = self.interval * (0.5 + random.random())  # jitter: boxes do not all come at once
