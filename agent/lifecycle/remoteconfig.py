"""Remote configuration by the operations center (issue 6, items 2 and 3): task kind ``config``.

A task ``{"kind": "config", "params": {"revision": N, "config": "<YAML of the whole agent config>"}}``
is applied as a transaction:

1. **Validate** with the real loader (``agent.engines.load_effective_config``, engines included) from a
   candidate file beside the live one (relative paths mean the same). A bad revision fails the task
   with the loader's message (file, key, problem); nothing is applied.
2. **Only what a change request can ask for** (security issue, item 1): an allow list
   (agent/lifecycle/remotekeys.py) of engine policies, zones, allow/deny lists, categories and
   tuning. Everything else is local-only: commands, file and folder paths, trust settings (update
   repository, trusted TUF root, center link, look-up URLs and CA files) and the management channel.
   A revision that *omits* a local-only key keeps the box's value; one that *changes* it is refused
   with every such key and why: task ``failed`` "protected setting <key> cannot be changed remotely
   (<reason>)", plus an alarm, and nothing is applied.
3. **Write** atomically (temp file, fsync, rename; the old file's mode), record the revision in the
   local history (``<state_dir>/config-history/``, at least 20 kept, metadata: revision, applied_at,
   status, task), **reload** through the daemon's SIGHUP path and wait until every worker confirms.
   A reload that fails restores the previous file at once (``failed``).
4. **Commit confirmed** (like Junos ``commit confirmed``): the revision is ``confirming`` until a
   check-in *that started after the reload* succeeds within ``remote_config.confirm_window``
   (pooled connections are dropped at the switch, so the check-in proves DNS, TCP and TLS work with
   the new settings). Then it is ``applied`` and an encrypted backup goes to the center
   (agent/lifecycle/backup.py). Otherwise the previous revision is written back and reloaded and the task
   reports ``rolled_back`` with the reason once the link is back (the task runner's durable outbox).
   The pending state is on disk: after a restart a revision whose window has passed is rolled back.

Statuses per revision (task status at the center): applying, confirming, applied, failed, rolled_back.

Local commands: ``vcr-agent config history`` and ``vcr-agent config rollback REVISION``.

Replacement box: ``vcr-agent activate --replace`` decrypts the ``restore`` of the activation reply
and applies it like a revision (:func:`restore_backup`) under the same allow list, widened by the
settings sheet and the bridge port names (port names that do not exist on this hardware are remapped
to the local ones); every other local-only key keeps the replacement box's own value.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from agent.fsutil import atomic_write
from agent.config import AgentConfig, load_yaml
from agent.engines import load_effective_config
from agent.lifecycle.remotekeys import REMOTE_ALLOWED, RESTORE_ALLOWED, Refusal, split_revision
from filters.engine import ConfigError

log = logging.getLogger(__name__)

HISTORY_DIR = "config-history"
STATE_FILE = "remoteconfig.json"
ALARM_SID = 9100010
ALARM_CATEGORY = "Agent health"


class ConfigTaskError(Exception):
    """A revision that is refused or failed; the message is for people (Japanese / English)."""


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def validate_text(text: str, config_path: Path, label: str) -> tuple[AgentConfig, dict[str, Any]]:
    """Load ``text`` with the real loader from a candidate file beside ``config_path``.

    Returns (config, raw YAML data). ConfigError names the revision, the key and the problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"not valid YAML{where}: {getattr(exc, 'problem', None) or exc}", path=label) from None
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping at the top level", path=label)
    fd, tmp = tempfile.mkstemp(prefix=".candidate.", suffix=".yaml", dir=Path(config_path).parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        try:
            cfg = load_effective_config(tmp)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace(tmp, label)) from None
    finally:
        os.unlink(tmp)
    return cfg, data


def remap_ports(data: dict[str, Any], local: dict[str, Any],
                exists: Callable[[str], bool]) -> list[str]:
    """Replacement hardware: restored bridge port names that do not exist here become the local ones."""
    notes: list[str] = []
    if not isinstance(data.get("bridge"), dict):
        data["bridge"] = {}
    bridge = data["bridge"]
    lb = local.get("bridge") if isinstance(local.get("bridge"), dict) else {}
    defaults = {"lan_port": "lan0", "wan_port": "wan0"}
    for key in ("lan_port", "wan_port"):
        restored = bridge.get(key, defaults[key])
        mine = lb.get(key, defaults[key])
        if restored != mine and not exists(restored) and exists(mine):
            bridge[key] = mine
            notes.append(f"bridge.{key}: {restored} -> {mine}")
    return notes


def iface_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


class History:
    """The local revision history: ``<n>.yaml`` + ``<n>.json`` (metadata), newest n is the latest entry."""

    def __init__(self, state_dir: Path, keep: int = 30) -> None:
        self.dir = Path(state_dir) / HISTORY_DIR
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.keep = max(20, keep)

    def entries(self) -> list[dict[str, Any]]:
        out = []
        for p in sorted(self.dir.glob("*.json")):
            try:
                meta = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            out.append(meta)
        return sorted(out, key=lambda m: m["n"])

    def get(self, n: int) -> dict[str, Any] | None:
        try:
            return json.loads((self.dir / f"{n:06d}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def text(self, n: int) -> str:
        return (self.dir / f"{n:06d}.yaml").read_text(encoding="utf-8")

    def current(self) -> dict[str, Any] | None:
        cur = [m for m in self.entries() if m.get("current")]
        return cur[-1] if cur else None

    def find_revision(self, revision: int) -> dict[str, Any] | None:
        hits = [m for m in self.entries() if m.get("revision") == revision]
        return hits[-1] if hits else None

    def add(self, text: str, **meta: Any) -> dict[str, Any]:
        entries = self.entries()
        n = (entries[-1]["n"] + 1) if entries else 1
        atomic_write(self.dir / f"{n:06d}.yaml", text, 0o600)
        m = {"n": n, "sha256": _sha(text), "current": False, **meta}
        self.update(m)
        self.prune()
        return m

    def update(self, meta: dict[str, Any]) -> None:
        atomic_write(self.dir / f"{meta['n']:06d}.json", json.dumps(meta, ensure_ascii=False, indent=1), 0o600)

    def set_current(self, n: int) -> None:
        for m in self.entries():
            want = m["n"] == n
            if bool(m.get("current")) != want:
                m["current"] = want
                self.update(m)

    def prune(self, protect: tuple[int, ...] = ()) -> None:
        entries = self.entries()
        extra = len(entries) - self.keep
        for m in entries:
            if extra <= 0:
                break
            if m.get("current") or m["n"] in protect or m.get("status") == "confirming":
                continue
            for suffix in (".yaml", ".json"):
                (self.dir / f"{m['n']:06d}{suffix}").unlink(missing_ok=True)
            extra -= 1


class RemoteConfig:
    """The ``config`` task handler, the confirm-window watchdog and the backup sender."""

    def __init__(self, config_path: str | os.PathLike[str], state_dir: str | os.PathLike[str], *,
                 runner: Any = None,
                 reload: Callable[[float], tuple[bool, str]] | None = None,
                 alarm: Callable[[dict[str, Any]], None] | None = None,
                 backup: Callable[[int, str], None] | None = None,
                 reset_connections: Callable[[], None] | None = None,
                 credential: Callable[[], dict[str, Any] | None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config_path = Path(config_path)
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.state_path = self.state_dir / STATE_FILE
        self.runner = runner
        self.reload = reload or (lambda timeout: (True, "no daemon (reload skipped)"))
        self.alarm = alarm
        self.backup = backup
        self.reset_connections = reset_connections
        self.credential = credential
        self.clock = clock
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        settings = self._settings()
        self.confirm_window = settings.confirm_window
        self.reload_timeout = settings.reload_timeout
        self.history = History(self.state_dir, settings.history)
        self.pending: dict[str, Any] | None = self._load_pending()

    # -- state -----------------------------------------------------------------------------------
    def _settings(self) -> Any:
        from agent.config import RemoteConfigSettings

        try:
            raw = load_yaml(self.config_path)
            return RemoteConfigSettings.model_validate((raw or {}).get("remote_config") or {})
        except Exception:  # noqa: BLE001 - defaults when the file cannot tell
            return RemoteConfigSettings()

    def _load_pending(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.state_path.read_text(encoding="utf-8")).get("pending")
        except (OSError, ValueError):
            return None

    def _save_pending(self) -> None:
        atomic_write(self.state_path, json.dumps({"pending": self.pending}, ensure_ascii=False), 0o600)

    def current_revision(self) -> int:
        cur = self.history.current()
        return int(cur.get("revision") or 0) if cur else 0

    def _snapshot_current(self, text: str) -> dict[str, Any]:
        """The live file as a history entry (the rollback target); reuses the current entry if unchanged."""
        cur = self.history.current()
        if cur is not None and cur.get("sha256") == _sha(text):
            return cur
        rev = int(cur.get("revision") or 0) if cur else 0
        m = self.history.add(text, revision=rev, applied_at=self.clock(), status="applied", source="local",
                             note="the file as found on the box (edited locally or the initial config)")
        self.history.set_current(m["n"])
        m["current"] = True
        return m

    # -- the task --------------------------------------------------------------------------------
    def handle_task(self, params: dict[str, Any], progress: Callable[[str, str], None]) -> None:
        try:
            revision = int(params["revision"])
            text = params["config"]
            if not isinstance(text, str):
                raise TypeError("config must be YAML text")
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigTaskError(f"設定タスクの形式が不正です / bad config task: {exc} "
                                  "(expected params {revision: int, config: YAML text})") from None
        task_id = params.get("_task_id")
        self.apply(revision, text, progress=progress, task_id=task_id, source="center",
                   resumed=bool(params.get("_resumed")))

    def apply(self, revision: int, text: str, *, progress: Callable[[str, str], None] | None = None,
              task_id: Any = None, source: str = "center", resumed: bool = False,
              protect: bool = True, confirm: bool = True, notes: list[str] | None = None) -> dict[str, Any]:
        """Validate, check protected settings, write, reload, start the confirm window. Raises on failure."""
        progress = progress or (lambda s, d: None)
        label = f"revision {revision} ({self.config_path})"
        with self.lock:
            if resumed and self.pending and self.pending.get("revision") == revision:
                progress("confirming", f"revision {revision} is waiting for its confirm window (agent restarted)")
                return self.pending
            entries = self.history.entries()
            if resumed and entries and entries[-1].get("status") == "applying" and entries[-1].get("previous"):
                # interrupted between writing the file and the reload: undo it, then apply again
                last = entries[-1]
                atomic_write(self.config_path, self.history.text(last["previous"]))
                last.update(status="failed", reason="interrupted by an agent restart")
                self.history.update(last)
                self.history.set_current(last["previous"])
            current_text = self.config_path.read_text(encoding="utf-8")
            progress("applying", f"revision {revision}")
            try:
                new_data = yaml.safe_load(text)
            except yaml.YAMLError:
                new_data = None  # validate_text reports where
            merged = text
            if protect and isinstance(new_data, dict):
                merged_data, refused = split_revision(new_data, self._local_data(current_text), allowed=REMOTE_ALLOWED)
                if refused:
                    self._refuse(refused, revision, task_id)
                if merged_data != new_data:
                    merged = yaml.safe_dump(merged_data, allow_unicode=True, sort_keys=False)
            try:
                validate_text(merged, self.config_path, label)
            except ConfigError as exc:
                raise ConfigTaskError(f"設定エラーのため適用しません / configuration error, nothing applied: {exc}") from None
            prev = self._snapshot_current(current_text)
            if prev.get("sha256") == _sha(merged) and prev.get("status") == "applied":
                prev.update(revision=revision, task_id=task_id)
                self.history.update(prev)
                progress("applied", f"revision {revision} is already live (no change)")
                return prev
            entry = self.history.add(merged, revision=revision, applied_at=self.clock(), status="applying",
                                     source=source, task_id=task_id, previous=prev["n"], notes=notes or [])
            atomic_write(self.config_path, merged)
            ok, detail = self.reload(self.reload_timeout)
            if not ok:
                atomic_write(self.config_path, self.history.text(prev["n"]))
                ok2, detail2 = self.reload(self.reload_timeout)
                entry.update(status="failed", reason=f"reload failed: {detail}")
                self.history.update(entry)
                raise ConfigTaskError(
                    f"再読み込みに失敗したため元の設定に戻しました / the reload failed, the previous configuration "
                    f"(revision {prev.get('revision')}) is back: {detail}"
                    + ("" if ok2 else f"; restoring it also failed to reload: {detail2}"))
            self.history.set_current(entry["n"])
            entry["current"] = True
            if not confirm:
                entry.update(status="applied", confirmed_at=self.clock())
                self.history.update(entry)
                return entry
            now = self.clock()
            entry.update(status="confirming", reloaded_at=now, deadline=now + self.confirm_window)
            self.history.update(entry)
            self.pending = {"n": entry["n"], "revision": revision, "task_id": task_id, "previous": prev["n"],
                            "reloaded_at": now, "deadline": now + self.confirm_window}
            self._save_pending()
        if self.reset_connections is not None:
            try:  # the confirming check-in must set up DNS, TCP and TLS with the new settings
                self.reset_connections()
            except Exception:  # noqa: BLE001
                log.exception("cannot reset the center connections")
        log.info("config revision %s applied (%s); waiting %.0f s for a check-in to confirm it", revision, detail,
                 self.confirm_window)
        progress("confirming", f"revision {revision} applied ({detail}); waiting up to {self.confirm_window:.0f} s "
                               "for a check-in to confirm it")
        return entry

    def _local_data(self, current_text: str) -> dict[str, Any]:
        """The box's own config (raw YAML): where the local-only keys of a revision come from."""
        for text in (current_text, None):
            if text is None:
                cur = self.history.current()
                if cur is None:
                    break
                text = self.history.text(cur["n"])
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError:
                continue
            if isinstance(data, dict):
                return data
        raise ConfigTaskError("現在の設定を読めないため保護設定を確認できません / the live configuration cannot be read, "
                              "so protected settings cannot be checked")

    def _refuse(self, refused: list[Refusal], revision: int, task_id: Any) -> None:
        keys = [r.key for r in refused]
        msg = "; ".join(r.message() for r in refused) + f" (revision {revision}, nothing applied)"
        self._alarm(f"VCR agent: remote config revision {revision} refused: protected setting {', '.join(keys)}"[:500],
                    {"problem": "protected_setting", "key": keys[0], "keys": keys, "revision": revision,
                     "task_id": task_id, "classes": sorted({r.kind for r in refused}), "message": msg})
        log.warning("config revision %s refused: local-only settings %s", revision, ", ".join(keys))
        raise ConfigTaskError(msg)

    def _alarm(self, signature: str, details: dict[str, Any]) -> None:
        if self.alarm is None:
            return
        from agent.link.center import problem_alarm

        try:
            rec = problem_alarm(ALARM_SID, signature, details, time.time())
            self.alarm(rec)
        except Exception:  # noqa: BLE001
            log.exception("cannot record the alarm %r", signature)

    def _post(self, task_id: Any, status: str, detail: str) -> None:
        if self.runner is not None and task_id is not None:
            self.runner.post(int(task_id), status, detail)

    # -- commit confirmed ------------------------------------------------------------------------
    def checked_in(self, started_at: float | None = None) -> None:
        """A check-in succeeded (``started_at``: when it was sent). Confirms a pending revision."""
        started = self.clock() if started_at is None else started_at
        with self.lock:
            p = self.pending
            if p is None or started < p["reloaded_at"]:
                pass
            else:
                entry = self.history.get(p["n"]) or {"n": p["n"]}
                entry.update(status="applied", confirmed_at=self.clock(), backup="pending")
                self.history.update(entry)
                self.pending = None
                self._save_pending()
                self._post(p.get("task_id"), "applied",
                           f"revision {p['revision']} confirmed by a check-in and live")
                log.info("config revision %s confirmed", p["revision"])
        self.send_backups()

    def tick(self) -> None:
        """Roll back a pending revision whose confirm window passed (called every second)."""
        with self.lock:
            self.pending = self._load_pending()  # `vcr-agent config rollback` may have cleared it
            p = self.pending
            if p is None or self.clock() < p["deadline"]:
                return
            window = p["deadline"] - p["reloaded_at"]
            reason = (f"確認期間 {window:.0f} 秒以内に運用センターへチェックインできなかったため元に戻しました / "
                      f"no successful check-in within the {window:.0f} s confirm window: revision {p['revision']} "
                      f"rolled back")
            self._rollback_to(p["previous"], p["n"], reason)
            self.pending = None
            self._save_pending()
        self._alarm(f"VCR agent: config revision {p['revision']} rolled back (no check-in within {window:.0f} s)",
                    {"problem": "config_rolled_back", "revision": p["revision"], "task_id": p.get("task_id"),
                     "message": reason})
        self._post(p.get("task_id"), "rolled_back", reason)

    def _rollback_to(self, target_n: int, from_n: int | None, reason: str) -> None:
        text = self.history.text(target_n)
        atomic_write(self.config_path, text)
        ok, detail = self.reload(self.reload_timeout)
        if from_n is not None:
            e = self.history.get(from_n)
            if e is not None:
                e.update(status="rolled_back", rolled_back_at=self.clock(), reason=reason, current=False)
                self.history.update(e)
        self.history.set_current(target_n)
        log.warning("config rolled back to history entry %s: %s (reload: %s)", target_n, reason, detail)
        if not ok:
            log.error("reload after the rollback failed: %s", detail)

    def rollback(self, revision: int) -> dict[str, Any]:
        """``vcr-agent config rollback REVISION``: make a history revision live again (no confirm window)."""
        with self.lock:
            target = self.history.find_revision(revision)
            if target is None:
                raise ConfigTaskError(f"履歴にリビジョン {revision} がありません / revision {revision} is not in the history")
            cur = self.history.current()
            validate_text(self.history.text(target["n"]), self.config_path, f"revision {revision} (history)")
            self._rollback_to(target["n"], cur["n"] if cur and cur["n"] != target["n"] else None,
                              f"local rollback to revision {revision}")
            target = self.history.get(target["n"]) or target
            target.update(status="applied", restored_at=self.clock())
            self.history.update(target)
            if self.pending is not None:
                self.pending = None
                self._save_pending()
            return target

    # -- backups ---------------------------------------------------------------------------------
    def send_backups(self) -> None:
        """Send the encrypted backup of every applied revision not yet at the center."""
        if self.backup is None:
            return
        from agent.lifecycle.backup import BackupError, encrypt_b64

        cred = self.credential() if self.credential is not None else None
        for m in self.history.entries():
            if m.get("backup") != "pending":
                continue
            if not cred or not cred.get("backup_secret"):
                continue
            try:
                blob = encrypt_b64(self.history.text(m["n"]), secret=cred["backup_secret"],
                                   contract_id=str(cred.get("contract_id") or ""), revision=int(m.get("revision") or 0),
                                   meta={k: m.get(k) for k in ("revision", "applied_at", "confirmed_at", "source")})
                self.backup(int(m.get("revision") or 0), blob)
            except BackupError as exc:
                log.warning("config backup of revision %s impossible: %s", m.get("revision"), exc)
                continue
            except Exception as exc:  # noqa: BLE001 - the next check-in retries
                log.warning("config backup of revision %s not sent yet: %s", m.get("revision"), exc)
                return
            m["backup"] = "sent"
            m["backup_sent_at"] = self.clock()
            self.history.update(m)
            log.info("encrypted backup of config revision %s sent to the center", m.get("revision"))

    # -- life cycle --------------------------------------------------------------------------------
    def start(self) -> None:
        if self.pending is not None:
            log.warning("config revision %s is waiting for confirmation (window ends in %.0f s)",
                        self.pending["revision"], self.pending["deadline"] - self.clock())
        self.tick()  # a window that passed while the agent was down: roll back now
        self.thread = threading.Thread(target=self._loop, name="remoteconfig", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stopping.wait(1.0):
            try:
                self.tick()
            except Exception:  # noqa: BLE001
                log.exception("confirm-window check failed")

    def stop(self) -> None:
        self.stopping.set()

    def status(self) -> dict[str, Any]:
        return {"revision": self.current_revision(), "pending": self.pending, "confirm_window": self.confirm_window}


# ------------------------------------------------------------------------------ replacement box
def restore_backup(config_path: str | os.PathLike[str], state: dict[str, Any], restore: dict[str, Any], *,
                   exists: Callable[[str], bool] = iface_exists, clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """Apply the ``restore`` of a replacement activation as this box's config. Returns a report.

    The backup is decrypted with the contract's backup secret, merged (the box keeps its own
    ``center:`` section, which it activated with; port names missing here are remapped), validated
    like any revision and written; a running agent is asked to reload by the caller."""
    from agent.lifecycle.backup import decrypt_b64

    config_path = Path(config_path)
    revision = int(restore.get("revision") or 0)
    data = decrypt_b64(str(restore.get("blob") or ""), secret=str(state.get("backup_secret") or ""),
                       contract_id=str(state.get("contract_id") or ""), revision=revision)
    restored = yaml.safe_load(data["config"])
    local_text = config_path.read_text(encoding="utf-8")
    local = yaml.safe_load(local_text) or {}
    if not isinstance(restored, dict):
        raise ConfigTaskError("バックアップの設定が不正です / the backup's configuration is not a mapping")
    if not isinstance(local, dict):
        raise ConfigTaskError("この機器の設定を読めません / this box's configuration is not a mapping")
    # The center holds the backup key by design: a backup may not carry a command, a path or a
    # trust setting either. Local-only keys keep this box's values (dropped from the backup).
    restored, dropped = split_revision(restored, local, allowed=RESTORE_ALLOWED)
    kept = [r.key for r in dropped]
    if kept:
        log.warning("restore: local-only settings of the backup not taken (this box keeps its own): %s", ", ".join(kept))
    notes = remap_ports(restored, local, exists)
    text = yaml.safe_dump(restored, allow_unicode=True, sort_keys=False)
    validate_text(text, config_path, f"restored revision {revision}")
    state_dir = Path(str(((local.get("center") or {}).get("state_file")) or "/var/lib/vcr-agent/center.json")).parent
    rc = RemoteConfig(config_path, state_dir, clock=clock)
    rc.apply(revision, text, source="restore", protect=False, confirm=False,
             notes=notes + [f"kept local: {k}" for k in kept])
    entry = rc.history.current() or {}
    entry["backup"] = "sent"  # it came from the center
    if entry:
        rc.history.update(entry)
    return {"revision": revision, "remapped": notes, "kept_local": kept, "config": str(config_path),
            "backup_created_at": restore.get("created_at")}
