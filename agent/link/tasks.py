"""Tasks from the operations center (issue 6): run them one at a time, report every status durably.

The center hands out tasks in the check-in reply (``{"task_id", "kind", "params"}``, see
docs/opscenter-api.md); ``CenterLink.checkin_once`` passes them to :meth:`TaskRunner.submit`.

* Handlers are registered per kind (``register("config", fn)``). A handler gets the task's params
  and a ``progress(status, detail)`` callback; returning normally is success (the runner reports the
  status the handler last set, ``"done"`` if none), raising is failure (``"failed"`` + the message).
* Tasks run one at a time in a background thread, in the order the center sent them.
* Dedupe by ``task_id``: a task that is queued, running or finished is never started again. The
  finished ids are persisted, so a restart never re-runs a finished task.
* A task that was running when the agent stopped (crash, power cut, an upgrade that restarts the
  agent) is started again after the restart with ``params["_resumed"] = True``; handlers must be
  idempotent (config: re-applying the same revision is a no-op; upgrade: continue where it was).
* The handler's params also carry ``"_task_id"`` (so it can :meth:`post` a later status).
* Every status goes into a durable outbox (``tasks.json`` under ``state_dir``, written atomically
  and fsynced) *before* it is sent, and leaves it only when ``report`` returns normally. A sender
  thread retries with backoff; :meth:`kick` (called after every successful check-in) retries now.
  ``report`` raising means "try again later"; a status the center can never take must be dropped by
  the ``report`` function itself (returning normally).
* :meth:`post` lets code outside a handler report a later status for a finished task (the
  commit-confirmed rollback of a config revision reports ``rolled_back`` minutes later).
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from agent.fsutil import atomic_write

log = logging.getLogger(__name__)

Report = Callable[[int, str, str], None]
Progress = Callable[[str, str], None]
Handler = Callable[[dict[str, Any], Progress], None]

STATE_FILE = "tasks.json"
FINISHED_KEPT = 5000  # task ids remembered (the newest); far more than a box ever gets
RETRY_BASE = 2.0
RETRY_CAP = 60.0


class TaskRunner:
    def __init__(self, state_dir: Path | str, report: Report, *, retry_base: float = RETRY_BASE,
                 retry_cap: float = RETRY_CAP) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = self.state_dir / STATE_FILE
        self.report = report
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.handlers: dict[str, Handler] = {}
        self.lock = threading.RLock()
        self.work = threading.Condition(self.lock)
        self.send_wake = threading.Event()
        self.stopping = threading.Event()
        self.idle = threading.Event()
        self.idle.set()
        self.threads: list[threading.Thread] = []
        self.current: dict[str, Any] | None = None
        self.queue: list[dict[str, Any]] = []
        self.finished: list[int] = []
        self.outbox: list[dict[str, Any]] = []
        self.seq = 0
        self.reported = 0
        self.last_error = ""
        self._load()

    # -- persistence ---------------------------------------------------------------------------
    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            # a damaged file must not stop the agent; keep it for a post-mortem
            bad = self.path.with_name(self.path.name + f".damaged.{int(time.time())}")
            log.error("task state %s is damaged (%s); moved to %s", self.path, exc, bad)
            try:
                os.replace(self.path, bad)
            except OSError:
                pass
            return
        self.finished = [int(i) for i in data.get("finished", [])]
        self.outbox = list(data.get("outbox", []))
        self.queue = list(data.get("queue", []))
        self.seq = int(data.get("seq", 0))
        cur = data.get("current")
        if cur:  # interrupted by a stop: start it again first, flagged as resumed
            cur = dict(cur)
            cur["params"] = {**(cur.get("params") or {}), "_resumed": True}
            self.queue.insert(0, cur)
            log.warning("task %s (%s) was interrupted by a restart; it runs again", cur.get("task_id"), cur.get("kind"))
        if self.queue:
            self.idle.clear()

    def _save(self) -> None:
        data = {"finished": self.finished[-FINISHED_KEPT:], "outbox": self.outbox, "queue": self.queue,
                "current": self.current, "seq": self.seq}
        atomic_write(self.path, json.dumps(data, ensure_ascii=False), 0o600)

    # -- public interface ----------------------------------------------------------------------
    def register(self, kind: str, handler: Handler) -> None:
        with self.lock:
            self.handlers[kind] = handler

    def known(self, task_id: int) -> bool:
        with self.lock:
            return (task_id in self.finished or any(t["task_id"] == task_id for t in self.queue)
                    or (self.current is not None and self.current["task_id"] == task_id))

    def submit(self, tasks: list[dict[str, Any]]) -> list[int]:
        """Queue the tasks not seen before; returns their ids. Never blocks on a handler."""
        added: list[int] = []
        with self.lock:
            for t in tasks or []:
                try:
                    tid = int(t["task_id"])
                except (KeyError, TypeError, ValueError):
                    log.warning("ignoring a task without a task_id: %r", t)
                    continue
                if self.known(tid):
                    continue
                params = t.get("params")
                self.queue.append({"task_id": tid, "kind": str(t.get("kind") or ""),
                                   "params": params if isinstance(params, dict) else {}})
                added.append(tid)
            if added:
                self._save()
                self.idle.clear()
                log.info("tasks received from the operations center: %s", added)
            self._ensure_threads()
            self.work.notify_all()
        self.send_wake.set()  # a check-in just worked: a good moment to deliver statuses
        return added

    def post(self, task_id: int, status: str, detail: str = "") -> None:
        """Queue a status for the center (durably) and wake the sender."""
        with self.lock:
            self.seq += 1
            self.outbox.append({"seq": self.seq, "task_id": int(task_id), "status": status, "detail": detail[:4000],
                                "at": time.time()})
            self._save()
            self._ensure_threads()
        log.info("task %s: %s%s", task_id, status, f" ({detail})" if detail else "")
        self.send_wake.set()

    def kick(self) -> None:
        """Retry the outbox now (the link is back)."""
        with self.lock:
            self._ensure_threads()
        self.send_wake.set()

    def start(self) -> None:
        with self.lock:
            self._ensure_threads()

    def stop(self, timeout: float = 3.0) -> None:
        self.stopping.set()
        self.send_wake.set()
        with self.lock:
            self.work.notify_all()
        for t in self.threads:
            t.join(timeout)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """True once no task is queued or running (tests)."""
        return self.idle.wait(timeout)

    def pending_statuses(self) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(o) for o in self.outbox]

    def status(self) -> dict[str, Any]:
        with self.lock:
            return {"queued": [t["task_id"] for t in self.queue],
                    "running": None if self.current is None else {"task_id": self.current["task_id"],
                                                                  "kind": self.current["kind"]},
                    "finished": len(self.finished), "unsent_statuses": len(self.outbox),
                    "reported": self.reported, "last_error": self.last_error,
                    "kinds": sorted(self.handlers)}

    # -- threads -------------------------------------------------------------------------------
    def _ensure_threads(self) -> None:
        if self.threads or self.stopping.is_set():
            return
        for name, fn in (("tasks-run", self._run_loop), ("tasks-report", self._send_loop)):
            th = threading.Thread(target=fn, name=name, daemon=True)
            th.start()
            self.threads.append(th)

    def _run_loop(self) -> None:
        while not self.stopping.is_set():
            with self.lock:
                while not self.queue and not self.stopping.is_set():
                    self.idle.set()
                    self.work.wait(1.0)
                if self.stopping.is_set():
                    return
                task = self.queue.pop(0)
                self.current = task
                self._save()
            try:
                self._run_one(task)
            finally:
                with self.lock:
                    if self.current is task:
                        self.current = None
                    self.finished.append(task["task_id"])
                    if len(self.finished) > FINISHED_KEPT:
                        self.finished = self.finished[-FINISHED_KEPT:]
                    self._save()
                    if not self.queue:
                        self.idle.set()

    def _run_one(self, task: dict[str, Any]) -> None:
        tid, kind = task["task_id"], task["kind"]
        handler = self.handlers.get(kind)
        if handler is None:
            self.post(tid, "failed", f"不明なタスク種別です / unknown task kind: {kind!r}")
            return
        last: dict[str, str] = {}

        def progress(status: str, detail: str = "") -> None:
            last["status"], last["detail"] = status, detail
            self.post(tid, status, detail)

        log.info("task %s (%s) starts", tid, kind)
        try:
            handler({**(task.get("params") or {}), "_task_id": tid}, progress)
        except Exception as exc:  # noqa: BLE001 - a failing handler fails its task, not the runner
            log.exception("task %s (%s) failed", tid, kind)
            msg = str(exc) or type(exc).__name__
            if last.get("status") != "failed" or last.get("detail") != msg:
                self.post(tid, "failed", msg)
            return
        if "status" not in last:
            self.post(tid, "done", "")
        # else: the status the handler last set is the final one and is already queued

    def _send_loop(self) -> None:
        attempt = 0
        while not self.stopping.is_set():
            with self.lock:
                item = dict(self.outbox[0]) if self.outbox else None
            if item is None:
                self.send_wake.wait(5.0)
                self.send_wake.clear()
                continue
            try:
                self.report(item["task_id"], item["status"], item["detail"])
            except Exception as exc:  # noqa: BLE001 - any failure: keep it, try again later
                self.last_error = f"{type(exc).__name__}: {exc}"
                delay = min(self.retry_cap, self.retry_base * (2 ** min(attempt, 20)))
                attempt += 1
                log.info("task status %s/%s not delivered (%s); retry in %.0f s", item["task_id"], item["status"],
                         exc, delay)
                self.send_wake.wait(delay)
                self.send_wake.clear()
                continue
            attempt = 0
            with self.lock:
                self.outbox = [o for o in self.outbox if o["seq"] != item["seq"]]
                self.reported += 1
                self._save()
