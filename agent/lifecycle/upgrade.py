"""Software upgrades (issue 6, item 4): signed releases installed beside the running version (A/B),
in the maintenance window, kept only if the new version proves itself healthy.

A release is a TUF target of kind ``release`` (``vcr-opscenter publish release VERSION FOLDER``): the
agent's package tree (``agent/``, ``filters/``) and a ``vcr_agent-VERSION.dist-info`` naming the version
(``build_release`` makes one from a source tree), with the bundle manifest listing every file's sha256.

The center sends a task ``{"kind": "upgrade", "params": {"version"?, "force"?, "forced_by"?, "reason"?,
"downgrade"?}}``. The handler only schedules it (tasks run one at a time, and a config change must not
wait a month behind an upgrade); this module's own thread then does, reporting each step as the task's
status (``TaskRunner.post``) and as an EVE record ``event_type: "upgrade"`` (which reaches the spool):

1. **window**: wait for the maintenance window (agent/lifecycle/maintenance.py, second Wednesday 23:00-28:00
   JST): status ``running``, detail "waiting for maintenance window ...". ``force: true`` from the
   center overrides; the override is logged with who (``forced_by``) and why (``reason``).
2. **checks**: free space in the releases folder (``upgrade.min_free_mb``), then the release through
   the TUF updater (agent/lifecycle/updates.py: signed metadata, length and sha256 of the download, the manifest
   file by file). Only a verified target is installed.
3. **install beside**: ``<releases_dir>/<version>/``; its code is imported in a subprocess first
   (``precheck``) and must report the version it claims.
4. **switch**: the marker ``upgrade.json`` (state ``pending``) is written *before* ``previous`` and
   ``current`` are swapped (atomic symlink renames); then the agent restarts (``restart_command``, or
   exit code 75 for the launcher).
5. **prove healthy**: the launcher (agent/launcher.py, version-independent) starts the new version on
   probation; the new process reports ``verifying`` and, after its first successful check-in with the
   center, writes ``done`` and reports the task ``done``. No check-in within ``health_timeout``, or more
   than ``max_starts`` starts (crash, import error): the launcher switches ``current`` back to
   ``previous`` and starts the old version, which reports ``rolled_back`` (task status and detail
   ``rolled_back: <reason>``; an EVE alarm of severity 1).

Releases beyond ``keep_releases`` (at least the live and the previous one) are pruned.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from agent import launcher as L
from agent.fsutil import atomic_write
from agent.lifecycle import maintenance
if TYPE_CHECKING:  # pragma: no cover
    from agent.config import AgentConfig

log = logging.getLogger(__name__)

KIND = "release"
RESTART_CODE = L.RESTART_CODE
STATE = "state.json"
PACKAGES = ("agent", "filters")
DIST = "vcr_agent"
REPO = Path(__file__).resolve().parents[2]

# action/reason -> (severity, Japanese, English); a table of texts (its rows are alike by design)
MESSAGES: dict[str, tuple[int, str, str]] = {
    "accepted": (4, "ソフトウェア更新を受け付けました", "software upgrade accepted"),
    "waiting": (4, "メンテナンス時間を待っています", "waiting for maintenance window"),
    "forced": (3, "運用センターの指示によりメンテナンス時間外に更新します", "upgrade forced outside the maintenance window by the center"),
    "checking": (4, "ディスク容量と署名を確認しています", "checking disk space and the package signature"),
    "installed": (4, "新しいバージョンを現在のバージョンの横にインストールしました", "installed beside the running version"),
    "switching": (4, "新しいバージョンに切り替えて再起動します", "switching to the new version and restarting"),
    "verifying": (4, "新しいバージョンが運用センターに接続できるか確認しています", "verifying: waiting for the new version's first check-in"),
    "done": (4, "ソフトウェアを更新しました", "software upgraded"),
    "rolled_back": (1, "新しいバージョンが正常に動作しなかったため、前のバージョンに戻しました",
                    "the new version did not prove healthy: rolled back to the previous version"),
    "aborted": (2, "ソフトウェア更新を中止しました", "software upgrade aborted"),
    "disk": (2, "ディスクの空き容量が不足しているため更新できません", "upgrade refused: not enough free disk space"),
    "precheck": (2, "新しいバージョンのプログラムを読み込めないため更新しません", "upgrade refused: the new version's code does not load"),
    "downgrade": (2, "古いバージョンへの更新は指示がない限り行いません", "upgrade refused: older than the running version (downgrade not requested)"),
    "refused": (3, "以前に戻したバージョンのため更新しません", "upgrade refused: this release was rolled back before (retry: true to try again)"),
    "no_release": (3, "指定のバージョンは公開されていません", "upgrade refused: no such signed release"),
    "unreachable": (3, "更新サーバーに接続できません", "upgrade failed: the repository is unreachable"),
    "no_launcher": (2, "起動ランチャー経由で動作していないため切り替えできません",
                    "upgrade refused: the agent does not run under the launcher (systemd/vcr-agent.service)"),
    "busy": (3, "別の更新を確認中です", "upgrade refused: another upgrade is being verified"),
    "restart_failed": (2, "再起動できなかったため元のバージョンのまま運用します", "upgrade aborted: the agent could not be restarted"),
    "failed": (2, "ソフトウェア更新に失敗しました", "software upgrade failed"),
}


class UpgradeError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _utc(ts: float | None = None) -> str:
    from filters.eve import timestamp

    return timestamp(time.time() if ts is None else ts)


def message(key: str) -> str:
    _, ja, en = MESSAGES.get(key, MESSAGES["failed"])
    return f"{ja} / {en}"


def upgrade_record(action: str, *, reason: str | None = None, detail: str = "", **extra: Any) -> dict[str, Any]:
    """The EVE record of an upgrade step (``severity`` 1 for a rollback, security refusals as the update alarms)."""
    from agent.lifecycle.updates import REASONS as UPDATE_REASONS

    key = reason or action
    if key in MESSAGES:
        severity, ja, en = MESSAGES[key]
    elif key in UPDATE_REASONS:
        severity, ja, en = UPDATE_REASONS[key]
    else:
        severity, ja, en = MESSAGES["failed"]
    up: dict[str, Any] = {"action": action, "severity": severity, "message": f"{ja} / {en}"}
    if reason:
        up["reason"] = reason
    if detail:
        up["detail"] = detail
    up.update({k: v for k, v in extra.items() if v is not None})
    return {"timestamp": _utc(), "event_type": "upgrade", "upgrade": up}


# -- releases ---------------------------------------------------------------------------------------
def dist_info(version: str) -> str:
    return f"{DIST}-{version}.dist-info"


def build_release(version: str, dest: str | os.PathLike[str], *, source: str | os.PathLike[str] = REPO,
                  patch: dict[str, str] | None = None) -> Path:
    """A release folder from a source tree, ready for ``vcr-opscenter publish release VERSION DEST``:
    the packages without caches, and a dist-info so ``importlib.metadata`` (the heartbeat's
    ``agent_version``) names ``version`` when the folder is first on ``sys.path``. ``patch`` replaces
    files ({relative path: text}); the tests use it to build broken releases."""
    from agent.lifecycle.updates import VERSION_RE

    if not VERSION_RE.match(version):
        raise ValueError(f"bad version {version!r}")
    dest, source = Path(dest), Path(source)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for pkg in PACKAGES:
        shutil.copytree(source / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"))
    info = dest / dist_info(version)
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vcr-agent\nVersion: {version}\n", encoding="utf-8")
    (info / "top_level.txt").write_text("\n".join(PACKAGES) + "\n", encoding="utf-8")
    for rel, text in (patch or {}).items():
        p = dest / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    return dest


def release_version(folder: Path) -> str | None:
    """The version a release folder's dist-info states."""
    for info in sorted(folder.glob(f"{DIST}-*.dist-info")):
        try:
            for line in (info / "METADATA").read_text(encoding="utf-8").splitlines():
                if line.startswith("Version:"):
                    return line.split(":", 1)[1].strip()
        except OSError:
            continue
    return None


def _version_key(v: str | None) -> tuple[Any, ...]:
    from agent.lifecycle.updates import version_key

    return version_key(v or "0")


def _human(seconds: float) -> str:
    seconds = max(0, int(seconds))
    d, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m = rest // 60
    return f"{d} d {h} h" if d else f"{h} h {m} min" if h else f"{m} min"


# -- the upgrader -----------------------------------------------------------------------------------
class Upgrader:
    """The box's upgrade path. The daemon wires ``emit`` (its EVE log), ``post`` (``TaskRunner.post``),
    ``task_id_of`` (the running task's id), ``request_exit`` (stop with an exit code) and calls
    ``checked_in`` after every successful check-in."""

    def __init__(self, cfg: "AgentConfig", *, emit: Callable[[dict[str, Any]], None] | None = None,
                 post: Callable[[int, str, str], None] | None = None,
                 task_id_of: Callable[[], int | None] | None = None,
                 request_exit: Callable[[int], None] | None = None, updater: Any = None,
                 now: Callable[[], dt.datetime] | None = None, policy: maintenance.Policy = maintenance.DEFAULT,
                 launcher_root: str | None = None, running_release: str | None = None,
                 running_version: str | None = None, python: str = sys.executable) -> None:
        self.cfg = cfg
        self.s = cfg.upgrade  # type: ignore[attr-defined]
        self.root = Path(self.s.releases_dir)
        self.emit_fn = emit
        self.post_fn = post
        self.task_id_of = task_id_of
        self.request_exit = request_exit
        self._updater = updater
        self.now = now or (lambda: dt.datetime.now(dt.timezone.utc))
        self.policy = policy
        self.launcher_root = launcher_root if launcher_root is not None else os.environ.get("VCR_AGENT_RELEASES", "")
        self.running_release = running_release if running_release is not None else (os.environ.get("VCR_AGENT_RELEASE") or None)
        if running_version is None:
            from agent.link.health import agent_version

            running_version = agent_version()
        self.running_version = running_version
        self.python = python
        self.lock = threading.RLock()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.verifying: dict[str, Any] | None = None
        self.last: dict[str, Any] = {}

    @property
    def updater(self) -> Any:
        if self._updater is None:
            from agent.lifecycle.updates import BundleUpdater

            self._updater = BundleUpdater(self.cfg, emit=self.emit_fn)  # releases never reload the engines
        return self._updater

    # -- reporting -------------------------------------------------------------------------------
    def emit(self, rec: dict[str, Any]) -> None:
        if self.emit_fn is not None:
            try:
                self.emit_fn(rec)
            except Exception:  # noqa: BLE001 - reporting must not break the upgrade path
                log.exception("cannot write the upgrade record")

    def post(self, task_id: int | None, status: str, detail: str) -> None:
        self.last = {"task_id": task_id, "status": status, "detail": detail, "at": _utc()}
        log.info("upgrade task %s: %s: %s", task_id, status, detail)
        if task_id is None or self.post_fn is None:
            return
        try:
            self.post_fn(int(task_id), status, detail)
        except Exception:  # noqa: BLE001
            log.exception("cannot queue the status of task %s", task_id)

    def step(self, task_id: int | None, action: str, status: str, detail: str, *, reason: str | None = None,
             **extra: Any) -> None:
        """One step: the task status (detail leads with the step) and the EVE record."""
        self.post(task_id, status, detail)
        self.emit(upgrade_record(action, reason=reason, detail=detail, task_id=task_id,
                                 running_version=self.running_version, **extra))

    # -- persistent state --------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        try:
            st = json.loads((self.root / STATE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            st = {}
        st.setdefault("scheduled", None)
        st.setdefault("refused", {})
        return st

    def _save(self, st: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write(self.root / STATE, json.dumps(st, indent=1, sort_keys=True), 0o644)

    def marker(self) -> dict[str, Any] | None:
        return L.read_marker(str(self.root))

    # -- the task ----------------------------------------------------------------------------------
    def handle_task(self, params: dict[str, Any], progress: Callable[[str, str], None]) -> None:
        """TaskRunner handler for kind ``upgrade``: validate, schedule, say whether it waits; return."""
        from agent.lifecycle.updates import VERSION_RE

        task_id = params.get("_task_id")
        if task_id is None and self.task_id_of is not None:
            task_id = self.task_id_of()
        version = params.get("version")
        if version is not None and (not isinstance(version, str) or not VERSION_RE.match(version)):
            raise UpgradeError("failed", f"不正なバージョン指定です / bad version: {version!r}")
        force = params.get("force") is True
        forced_by = str(params.get("forced_by") or params.get("by") or "")[:200]
        why = str(params.get("reason") or "")[:500]
        m = self.marker()
        if m and m.get("state") in L.PROBATION:
            if m.get("task_id") == task_id:  # re-delivered while its own verification runs
                progress("running", f"verifying: {m.get('to')} / {message('verifying')}")
                return
            raise UpgradeError("busy", f"{message('busy')}: {m.get('to')} (task {m.get('task_id')})")
        sched = {"task_id": task_id, "version": version, "force": force, "forced_by": forced_by, "reason": why,
                 "downgrade": params.get("downgrade") is True, "retry": params.get("retry") is True,
                 "received_at": _utc()}
        with self.lock:
            st = self.state()
            old = st.get("scheduled")
            if old and old.get("task_id") == task_id and params.get("_resumed"):
                sched = old  # the runner re-ran it after a restart: it is already scheduled
            elif old and old.get("task_id") is not None and old.get("task_id") != task_id:
                self.step(old["task_id"], "aborted", "failed", f"superseded by task {task_id} / "
                          f"新しいタスク {task_id} に置き換えられました", reason="aborted")
            st["scheduled"] = sched
            self._save(st)
        g = maintenance.gate(self.now(), policy=self.policy)
        target = version or "the newest release"
        if g.allowed or force:
            how = "in the maintenance window" if g.allowed else f"forced by {forced_by or 'the center'}"
            progress("running", f"accepted: upgrade to {target} starts now ({how}) / {message('accepted')}")
        else:
            detail = self._waiting_detail(g, target)
            progress("running", detail)
            self.emit(upgrade_record("waiting", detail=detail, task_id=task_id, version=version,
                                     window=g.window.as_dict()))
        self.wake.set()

    @staticmethod
    def _waiting_detail(g: maintenance.Gate, target: str) -> str:
        start = g.window.start.strftime("%Y-%m-%d %H:%M JST")
        return (f"waiting for maintenance window: upgrade to {target} starts at {start} (in {_human(g.wait_seconds)}) / "
                f"メンテナンス時間 ({start} から) を待っています")

    # -- the worker ----------------------------------------------------------------------------------
    def start(self) -> None:
        """At agent start: report what the launcher did (verifying / rolled back), then run scheduled upgrades."""
        if self.thread is not None:
            return
        try:
            self.on_start()
        except Exception:  # noqa: BLE001 - a bad marker must not stop the agent
            log.exception("upgrade start-up check failed")
        self.thread = threading.Thread(target=self._loop, name="upgrade", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                wait = self.run_pending()
            except Exception:  # noqa: BLE001 - the thread must survive anything
                log.exception("upgrade step failed")
                wait = 60.0
            if wait is None:
                wait = 3600.0
            if wait > 0:
                self.wake.wait(min(wait, 60.0))
                self.wake.clear()

    def run_pending(self) -> float | None:
        """One pass: None (nothing scheduled), seconds to wait (outside the window), or 0 (done one)."""
        with self.lock:
            sched = self.state().get("scheduled")
        if not sched or self.stopping.is_set():
            return None
        m = self.marker()
        if m and m.get("state") in L.PROBATION:
            return 60.0  # a switch is being verified: this one waits for its outcome
        g = maintenance.gate(self.now(), force=bool(sched.get("force")), forced_by=self._forced_by(sched),
                             emit=None, policy=self.policy)
        if not g.allowed:
            return g.wait_seconds
        tid = sched.get("task_id")
        try:
            self._perform(sched, g)
        except UpgradeError as err:
            self._unschedule(sched)
            self.step(tid, "rejected" if err.reason not in ("restart_failed", "failed") else "failed", "failed",
                      f"{err.reason}: {err.detail} / {MESSAGES.get(err.reason, MESSAGES['failed'])[1]}",
                      reason=err.reason, version=sched.get("version"))
        except Exception as exc:  # noqa: BLE001
            log.exception("upgrade failed")
            self._unschedule(sched)
            self.step(tid, "failed", "failed", f"failed: {type(exc).__name__}: {exc} / {MESSAGES['failed'][1]}",
                      reason="failed", version=sched.get("version"))
        return 0.0

    @staticmethod
    def _forced_by(sched: dict[str, Any]) -> str:
        who = sched.get("forced_by") or "center"
        return f"task {sched.get('task_id')} ({who}{': ' + sched['reason'] if sched.get('reason') else ''})"

    def _unschedule(self, sched: dict[str, Any]) -> None:
        with self.lock:
            st = self.state()
            if st.get("scheduled") and st["scheduled"].get("task_id") == sched.get("task_id"):
                st["scheduled"] = None
                self._save(st)

    # -- the steps -------------------------------------------------------------------------------
    def _perform(self, sched: dict[str, Any], g: maintenance.Gate) -> None:
        tid = sched.get("task_id")
        want = sched.get("version")
        if g.reason == "forced":
            who = self._forced_by(sched)
            log.warning("upgrade forced outside the maintenance window by %s (next window %s)", who,
                        g.window.start.isoformat())
            self.step(tid, "forced", "running", f"forced: outside the maintenance window by {who} / "
                      f"{MESSAGES['forced'][1]}", forced_by=sched.get("forced_by") or "center",
                      why=sched.get("reason") or None, next_window=g.window.as_dict())
        if want and want == self.running_version:
            self._unschedule(sched)
            self.step(tid, "done", "done", f"done: version {want} is already running / すでに {want} で動作しています",
                      version=want)
            return
        self._check_launcher()
        self.step(tid, "checking", "running", f"checking disk space and the package signature / {MESSAGES['checking'][1]}",
                  version=want)
        self._check_disk()
        staged = self.updater.check_and_stage(KIND, want)
        from agent.lifecycle.updates import Result

        if isinstance(staged, Result):
            reason = {"no_bundle": "no_release", "unreachable": "unreachable"}.get(staged.status, staged.reason or "failed")
            raise UpgradeError(reason, staged.detail or staged.status)
        try:
            version = staged.version
            if version == self.running_version:
                self._unschedule(sched)
                self.step(tid, "done", "done", f"done: version {version} is already running / すでに {version} で動作しています",
                          version=version)
                return
            if _version_key(version) < _version_key(self.running_version) and not sched.get("downgrade"):
                raise UpgradeError("downgrade", f"{version} is older than the running {self.running_version} "
                                   "(send downgrade: true to go back)")
            refused = self.state()["refused"].get(version)
            if refused and refused.get("sha256") == staged.sha256 and not sched.get("retry"):
                raise UpgradeError("refused", f"{version} was rolled back on {refused.get('at')}: {refused.get('reason')}")
            self._check_disk()
            self._check_tree(staged.path, version)
            dest = self._install(staged.path, version)
        finally:
            shutil.rmtree(staged.path, ignore_errors=True)
        self.step(tid, "installed", "running", f"installed: {version} beside the running {self.running_version} "
                  f"({dest}); signature and sha256 verified / {MESSAGES['installed'][1]}", version=version,
                  sha256=staged.sha256)
        if self.s.precheck:
            self._precheck(dest, version)
        self._switch(tid, version, sched, staged.sha256)
        self._unschedule(sched)
        self.step(tid, "switching", "running", f"switching: {self.running_version} -> {version}; restarting; the new "
                  f"version must check in within {self.s.health_timeout:g} s / {MESSAGES['switching'][1]}",
                  version=version)
        self._restart()
        if self.stopping.wait(self.s.restart_grace):
            return  # being restarted: the new version takes over from here
        self._abort_switch(version)
        raise UpgradeError("restart_failed", f"still running {self.running_version} {self.s.restart_grace:g} s after "
                           "the restart request; switched back")

    def _check_launcher(self) -> None:
        root = self.launcher_root
        if not root or os.path.realpath(root) != os.path.realpath(self.root):
            raise UpgradeError("no_launcher", f"the agent was not started by agent/launcher.py for {self.root} "
                               f"(VCR_AGENT_RELEASES={root or 'unset'}); see systemd/vcr-agent.service")

    def _check_disk(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.root).free
        need = int(self.s.min_free_mb) << 20
        if free < need:
            raise UpgradeError("disk", f"{free >> 20} MiB free in {self.root}, at least {self.s.min_free_mb} MiB "
                               "must stay free (upgrade.min_free_mb)")

    @staticmethod
    def _check_tree(folder: Path, version: str) -> None:
        if not (folder / "agent" / "__init__.py").is_file() or not (folder / "agent" / "cli.py").is_file():
            raise UpgradeError("manifest", "the release has no agent package (agent/__init__.py, agent/cli.py)")
        stated = release_version(folder)
        if stated is None:  # a bare package tree: name the version the signed target has
            info = folder / dist_info(version)
            info.mkdir()
            (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vcr-agent\nVersion: {version}\n", encoding="utf-8")
        elif stated != version:
            raise UpgradeError("manifest", f"the release's dist-info says {stated}, the signed target {version}")

    def _install(self, staged: Path, version: str) -> Path:
        """Move the verified tree to ``<releases_dir>/<version>/`` (never over the live release)."""
        dest = self.root / version
        live = L.link_target(str(self.root), "current")
        if live == version:
            raise UpgradeError("failed", f"{version} is the live release folder already")
        tmp = self.root / f".install-{version}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            os.rename(staged, tmp)
        except OSError:  # another file system
            shutil.copytree(staged, tmp)
        if dest.exists():
            trash = self.root / f".trash-{version}-{os.getpid()}"
            os.rename(dest, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.rename(tmp, dest)
        L._fsync_dir(str(self.root))
        return dest

    def _precheck(self, dest: Path, version: str) -> None:
        """Import the new code in a subprocess, as the launcher will run it; it must name ``version``."""
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        env["PYTHONPATH"] = str(dest)
        code = ("import agent.cli, agent.dataplane.daemon, agent.link.center, agent.lifecycle.upgrade\n"
                "from agent.link.health import agent_version\nprint(agent_version())")
        try:
            res = subprocess.run([self.python, "-c", code], env=env, cwd="/", capture_output=True, text=True, timeout=180)
        except (OSError, subprocess.TimeoutExpired) as exc:
            shutil.rmtree(dest, ignore_errors=True)
            raise UpgradeError("precheck", f"cannot run the new version's code: {exc}") from None
        said = res.stdout.strip().splitlines()[-1:] if res.stdout else []
        if res.returncode != 0 or said != [version]:
            shutil.rmtree(dest, ignore_errors=True)
            tail = (res.stderr.strip().splitlines() or ["?"])[-1]
            raise UpgradeError("precheck", f"the new version's code does not load ({tail})" if res.returncode
                               else f"the new code reports version {said[0] if said else '?'}, not {version}")

    def _switch(self, task_id: int | None, version: str, sched: dict[str, Any], sha256: str) -> None:
        """The marker first, then ``previous`` and ``current`` (atomic renames): a power cut at any point
        leaves the launcher either the old version or the new one on probation."""
        root = str(self.root)
        frm = L.link_target(root, "current")
        L.write_marker(root, {
            "state": "pending", "task_id": task_id, "from": frm, "to": version,
            "from_version": self.running_version, "sha256": sha256,
            "health_timeout": float(self.s.health_timeout), "max_starts": int(self.s.max_starts),
            "starts": 0, "deadline": None, "switched_at": time.time(),
            "forced_by": self._forced_by(sched) if sched.get("force") else None,
        })
        L.set_link(root, "previous", frm)
        L.set_link(root, "current", version)
        log.warning("upgrade: current -> %s (previous: %s); restarting", version, frm or "the base install")

    def _abort_switch(self, version: str) -> None:
        root = str(self.root)
        m = self.marker() or {}
        L.set_link(root, "current", m.get("from"))
        L.write_marker(root, dict(m, state="aborted", reason="restart failed", reported=True))

    def _restart(self) -> None:
        cmd = list(self.s.restart_command)
        if cmd:
            log.warning("upgrade: restarting the agent: %s", " ".join(cmd))
            try:
                subprocess.run(cmd, check=True, timeout=60, stdin=subprocess.DEVNULL, capture_output=True)
            except (OSError, subprocess.SubprocessError) as exc:
                self._abort_switch("")
                raise UpgradeError("restart_failed", f"{' '.join(cmd)}: {exc}") from None
        elif self.request_exit is not None:
            log.warning("upgrade: exiting with code %d so the launcher starts the new version", RESTART_CODE)
            self.request_exit(RESTART_CODE)
        else:
            self._abort_switch("")
            raise UpgradeError("restart_failed", "no restart command and no way to exit")

    # -- after a restart ------------------------------------------------------------------------
    def on_start(self) -> None:
        """Report what happened across the restart: the new version on probation says ``verifying``;
        the old one after a rollback says ``rolled_back`` (once)."""
        m = self.marker()
        if not m:
            return
        tid = m.get("task_id")
        state = m.get("state")
        if state in L.PROBATION:
            if self.running_release != m.get("to"):
                log.warning("upgrade marker names %s on probation, but this process runs %s", m.get("to"),
                            self.running_release or "the base install")
                return
            m = dict(m, state="verifying", verifying_pid=os.getpid())
            L.write_marker(str(self.root), m)
            with self.lock:
                self.verifying = m
            deadline = _utc(float(m.get("deadline") or time.time()))
            self.step(tid, "verifying", "running", f"verifying: {m.get('to')} started (start {m.get('starts')} of "
                      f"{m.get('max_starts')}); waiting for its first check-in with the center (deadline {deadline}) / "
                      f"{MESSAGES['verifying'][1]}", version=m.get("to"), previous=m.get("from_version"))
        elif state in ("rolled_back", "aborted") and not m.get("reported"):
            back = m.get("rolled_back_to") or "the base install"
            reason = m.get("reason") or "?"
            self.step(tid, "rolled_back", "rolled_back", f"rolled_back: {m.get('to')} -> {self.running_version} ({back}): "
                      f"{reason} / 新しいバージョン {m.get('to')} が正常に動作しなかったため、前のバージョンに戻しました",
                      reason="rolled_back", version=m.get("to"), rolled_back_to=self.running_version, why=reason)
            with self.lock:
                st = self.state()
                st["refused"][str(m.get("to"))] = {"sha256": m.get("sha256"), "reason": reason, "at": _utc()}
                self._save(st)
            L.write_marker(str(self.root), dict(m, reported=True))
            self.prune()

    def checked_in(self, started_at: float | None = None) -> None:
        """After every successful check-in (CenterLink.on_checkin): the first one proves the new version."""
        with self.lock:
            m, self.verifying = self.verifying, None
        if m is None:
            return
        cur = self.marker() or {}
        if cur.get("state") not in L.PROBATION or cur.get("to") != m.get("to"):
            return
        took = time.time() - float(cur.get("switched_at") or time.time())
        L.write_marker(str(self.root), dict(cur, state="done", done_at=time.time()))
        self.step(cur.get("task_id"), "done", "done", f"done: upgraded {cur.get('from_version')} -> {cur.get('to')}; "
                  f"the new version checked in {took:.0f} s after the switch / {MESSAGES['done'][1]}",
                  version=cur.get("to"), previous=cur.get("from_version"))
        self.prune()

    # -- housekeeping ----------------------------------------------------------------------------
    def releases(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted((p.name for p in self.root.iterdir()
                       if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")),
                      key=_version_key)

    def prune(self) -> list[str]:
        """Keep ``keep_releases`` (the live and the previous one always); remove the oldest others."""
        root = str(self.root)
        keep = {L.link_target(root, "current"), L.link_target(root, "previous")}
        m = self.marker() or {}
        if m.get("state") in L.PROBATION:
            keep.add(m.get("to"))
        others = [v for v in self.releases() if v not in keep]
        removed = []
        while others and len(others) + len(keep - {None}) > self.s.keep_releases:
            v = others.pop(0)
            shutil.rmtree(self.root / v, ignore_errors=True)
            removed.append(v)
        for p in self.root.glob(".install-*") if self.root.is_dir() else []:
            shutil.rmtree(p, ignore_errors=True)
        if removed:
            log.info("upgrade: pruned releases %s", removed)
        return removed

    def status(self) -> dict[str, Any]:
        root = str(self.root)
        with contextlib.suppress(OSError):
            st = self.state()
            return {"enabled": True, "releases_dir": root, "running_version": self.running_version,
                    "running_release": self.running_release, "current": L.link_target(root, "current"),
                    "previous": L.link_target(root, "previous"), "on_disk": self.releases(),
                    "marker": self.marker(), "scheduled": st.get("scheduled"), "last": self.last or None}
        return {"enabled": True, "releases_dir": root}
