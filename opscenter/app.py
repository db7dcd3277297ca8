"""The FastAPI application: the device API of docs/opscenter-api.md, the offline sweep and the operator page."""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import Depends, FastAPI, Request, Security
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from opscenter import alarms as alarm_store
from opscenter import enroll, fleet, views
from opscenter.bodylimit import BodyLimit
from opscenter.db import Database, iso, utcnow
from opscenter.errors import CenterError, install_handlers
from opscenter.ratelimit import TokenBuckets, retry_after
from opscenter.schemas import (
    ActivateReply,
    ActivateRequest,
    AlarmBatch,
    AlarmReply,
    BackupReply,
    BackupRequest,
    CheckinReply,
    CheckinRequest,
    ErrorBody,
    TaskStatusRequest,
    TimeReply,
)
from opscenter.settings import Settings

log = logging.getLogger("vcr-opscenter")

API_VERSION = "1"
# The hot endpoints (check-in, alarms) build their replies to the schema and return them as JSONResponse,
# which skips FastAPI's re-validation; response_model still documents them in the OpenAPI schema.
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 413, 429, 503)
}


class Sweeper(threading.Thread):
    """Marks boxes offline after missed check-ins and prunes old alarms, in the background."""

    def __init__(self, db: Database, settings: Settings) -> None:
        super().__init__(name="opscenter-sweep", daemon=True)
        self.db = db
        self.settings = settings
        self.stopping = threading.Event()
        self.sweeps = 0

    def run(self) -> None:
        last_prune = 0.0
        import time

        while not self.stopping.wait(self.settings.effective_sweep_interval):
            try:
                for device_id in fleet.sweep_offline(self.db, self.settings.offline_after_missed):
                    log.warning("device %s is offline (missed %d check-ins)", device_id,
                                self.settings.offline_after_missed)
                if time.monotonic() - last_prune > 3600:
                    last_prune = time.monotonic()
                    n = fleet.prune_alarms(self.db, self.settings.alarm_retention_days)
                    if n:
                        log.info("pruned %d alarms older than %d days", n, self.settings.alarm_retention_days)
            except Exception as exc:  # the sweep must outlive a database hiccup
                log.error("offline sweep failed: %s", exc)
            self.sweeps += 1

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)


def _client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def create_app(settings: Settings, db: Database | None = None, *, create_tables: bool = True,
               sweep: bool = True) -> FastAPI:
    """The center's ASGI app. ``db`` defaults to ``settings.db``; tables are created at start-up."""
    db = db or Database.from_settings(settings)
    alarm_limit = TokenBuckets(settings.alarm_rate, settings.alarm_burst)
    alarm_global = TokenBuckets(settings.alarm_global_rate, settings.alarm_global_burst)
    checkin_limit = TokenBuckets(settings.effective_checkin_rate, settings.checkin_burst)
    activate_limit = TokenBuckets(settings.activate_rate, settings.activate_burst)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import anyio.to_thread

        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.threadpool
        if create_tables:
            db.create_tables()
        sweeper = Sweeper(db, settings) if sweep else None
        if sweeper:
            sweeper.start()
        app.state.sweeper = sweeper
        try:
            yield
        finally:
            if sweeper:
                sweeper.stop()
            db.dispose()

    app = FastAPI(
        title="vcr-agent operations center",
        version=API_VERSION,
        description="Device API between the VCR116w box (vcr-agent) and its operations center. "
                    "See docs/opscenter-api.md.",
        lifespan=lifespan,
    )
    app.state.db = db
    app.state.settings = settings
    install_handlers(app)

    def body_limit(path: str) -> int:
        if path == "/api/v1/alarms":
            return settings.max_alarm_bytes
        if path == "/api/v1/backups":
            return (settings.max_backup_bytes * 4) // 3 + 4096
        return settings.max_body_bytes

    app.add_middleware(BodyLimit, limit_for=body_limit, max_events=settings.max_alarm_events)

    bearer = HTTPBearer(auto_error=False, description="the device token from activation")

    async def token(cred: HTTPAuthorizationCredentials | None = Security(bearer)) -> str:  # no thread hop
        if cred is None or not cred.credentials:
            raise CenterError(401, "unauthorized", "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        return cred.credentials

    def device(tok: str, conn: Any = None) -> enroll.DeviceAuth:
        auth = enroll.authenticate(db, tok, conn)
        if auth is None:
            raise CenterError(401, "unauthorized",
                              "unknown or revoked device token; compare your clock with server_time, do not "
                              "re-enroll, and contact the operations center",
                              headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return auth

    def limited(buckets: TokenBuckets, key: str, what: str) -> None:
        wait = buckets.take(key)
        if wait > 0:
            ra = retry_after(wait)
            raise CenterError(429, "rate_limited", f"too many {what}; retry after {ra} s",
                              headers={"Retry-After": ra}, extra={"retry_after": int(ra)})

    @app.get("/api/v1/time", response_model=TimeReply, tags=["device"])
    def get_time() -> dict[str, Any]:
        return {"server_time": iso(utcnow())}

    @app.post("/api/v1/activate", response_model=ActivateReply, status_code=201, tags=["device"],
              responses={**_ERRORS, 403: {"model": ErrorBody}, 409: {"model": ErrorBody}})
    def activate(req: ActivateRequest, request: Request) -> dict[str, Any]:
        ip = _client_ip(request)
        limited(activate_limit, ip or "-", "activation attempts from this address")
        reply = enroll.activate(db, code=req.activation_code, serial=req.serial, hostname=req.hostname,
                                agent_version=req.agent_version, client_ip=ip,
                                heartbeat_interval=settings.heartbeat_interval)
        log.info("activated %s (contract %s, serial %s) from %s", reply["device_id"], reply["contract_id"],
                 req.serial, ip)
        if settings.tuf_repo:  # the box's trust anchor for signed updates, over this authenticated channel
            root = Path(settings.tuf_repo) / "metadata" / "root.json"
            reply["tuf_root"] = root.read_text(encoding="utf-8") if root.is_file() else None
        return reply

    @app.post("/api/v1/checkin", response_model=CheckinReply, tags=["device"])
    def checkin(req: CheckinRequest, request: Request, tok: str = Depends(token)) -> Any:
        with db.write() as conn:  # token lookup and check-in in one transaction
            auth = device(tok, conn)
            limited(checkin_limit, auth.device_id, "check-ins from this device")
            reply = fleet.checkin(db, auth, req.model_dump(mode="json"), client_ip=_client_ip(request),
                                  interval=settings.heartbeat_interval, history=settings.checkin_history, conn=conn)
        return JSONResponse(reply)

    @app.post("/api/v1/alarms", response_model=AlarmReply, tags=["device"])
    def post_alarms(batch: AlarmBatch, tok: str = Depends(token)) -> Any:
        with db.write() as conn:  # token lookup and insert in one transaction
            auth = device(tok, conn)
            if len(batch.events) > settings.max_alarm_events:
                raise CenterError(413, "too_large",
                                  f"{len(batch.events)} events in one batch; send at most {settings.max_alarm_events} "
                                  f"events and {settings.max_alarm_bytes} bytes per request",
                                  extra={"max_events": settings.max_alarm_events,
                                         "max_bytes": settings.max_alarm_bytes})
            limited(alarm_limit, auth.device_id, "alarm batches from this device")
            limited(alarm_global, "*", "alarm batches (the center is busy)")
            counts = alarm_store.ingest(db, auth.device_id, [e.model_dump() for e in batch.events], conn)
        return JSONResponse({**counts, "server_time": iso(utcnow())})

    @app.post("/api/v1/tasks/{task_id}/status", tags=["device"], responses=_ERRORS)
    def post_task_status(task_id: int, req: TaskStatusRequest, tok: str = Depends(token)) -> dict[str, Any]:
        return fleet.task_status(db, device(tok), task_id, req.status, req.detail)

    @app.post("/api/v1/backups", response_model=BackupReply, status_code=201, tags=["device"], responses=_ERRORS)
    def post_backup(req: BackupRequest, tok: str = Depends(token)) -> dict[str, Any]:
        auth = device(tok)
        blob = enroll.decode_blob(req.blob, settings.max_backup_bytes)
        return enroll.store_backup(db, auth, req.revision, blob, settings.backups_kept)

    from opscenter import categories

    categories.install(app, settings.categories, settings.category_ttl, device, token)

    if settings.tuf_repo:  # signed bundles for the boxes (vcr-opscenter tuf-init / publish)
        from opscenter.tufrepo import mount

        mount(app, settings.tuf_repo)

    if settings.html_page:
        @app.get("/", response_class=HTMLResponse, include_in_schema=False)
        def index() -> str:
            from opscenter.web import page

            return page(views.list_devices(db, settings.offline_after_missed),
                        alarm_store.recent(db, limit=100), iso(utcnow()) or "")

    return app
