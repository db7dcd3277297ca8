"""The FastAPI application of the device listener: the device API of docs/opscenter-api.md and the background
sweep. It serves nothing else: no operator page, no /docs, no /openapi.json (those are on the operator
listener, behind operator accounts: opscenter/operator.py)."""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import Depends, FastAPI, Path as PathParam, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from filters.antispam.rspamd import RspamdClient
from opscenter import alarms as alarm_store
from opscenter import confirm, enroll, fleet, notify, sheets
from opscenter.bodylimit import BodyLimit
from opscenter.db import Database, iso, utcnow
from opscenter.errors import CenterError, StrictJSONRoute, install_handlers
from opscenter.ratelimit import SharedBuckets, address_key, prune_buckets, retry_after
from opscenter.sandbox.api import FILES_PATH as SANDBOX_FILES, start_workers as start_sandbox_workers
from opscenter.schemas import (
    ActivateReply,
    ActivateRequest,
    ProvisionRequest,
    AlarmBatch,
    AlarmReply,
    BackupReply,
    BackupRequest,
    CheckinReply,
    CheckinRequest,
    MAX_ID,
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
    code: {"model": ErrorBody} for code in (400, 401, 413, 422, 429, 503)
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
                    prune_buckets(self.db)
                    alarm_store.prune_usage(self.db)
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
    # Shared by every worker process (the buckets are rows of the database): N workers allow the rate, not N x.
    alarm_limit = SharedBuckets(db, "alarm", settings.alarm_rate, settings.alarm_burst)
    alarm_global = SharedBuckets(db, "alarm-all", settings.alarm_global_rate, settings.alarm_global_burst)
    checkin_limit = SharedBuckets(db, "checkin", settings.effective_checkin_rate, settings.checkin_burst)
    activate_limit = SharedBuckets(db, "activate", settings.activate_rate, settings.activate_burst)

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
        notifier = None
        if sweep and settings.smtp_host:  # mails to the customers' contacts (opscenter/notify.py)
            from opscenter.notify import Notifier

            notifier = Notifier(db, settings)
            notifier.start()
        app.state.notifier = notifier
        app.state.sandbox_workers = sandbox_workers = start_sandbox_workers(db, settings) if sweep else []
        try:
            yield
        finally:
            for w in sandbox_workers:
                w.stopping.set()
            for w in sandbox_workers:
                w.stop()
            if notifier:
                notifier.stop()
            if sweeper:
                sweeper.stop()
            db.dispose()

    app = FastAPI(
        title="vcr-agent operations center",
        version=API_VERSION,
        description="Device API between the VCR116w box (vcr-agent) and its operations center. "
                    "See docs/opscenter-api.md.",
        lifespan=lifespan,
        openapi_url=None,  # the schema and /docs are on the operator listener only (opscenter/operator.py)
        docs_url=None,
        redoc_url=None,
    )
    app.router.route_class = StrictJSONRoute  # NaN / Infinity in a body: 400, not a 500 at insert
    app.state.db = db
    app.state.settings = settings
    # The box bisects an alarm batch on 400 (agent/link/center.py): keep 400 for alarm bodies that do not validate.
    app.state.validation_status = {"/api/v1/alarms": 400}
    install_handlers(app)

    def body_limit(path: str) -> int:
        if path == "/api/v1/alarms":
            return settings.max_alarm_bytes
        if path == SANDBOX_FILES:
            return settings.sandbox_max_bytes
        if path == "/api/v1/antispam/report":
            return settings.antispam_report_max_bytes
        if path == "/api/v1/backups":
            return (settings.max_backup_bytes * 4) // 3 + 4096
        return settings.max_body_bytes

    app.add_middleware(BodyLimit, limit_for=body_limit, max_events=settings.max_alarm_events)

    bearer = HTTPBearer(auto_error=False, description="the device token from activation")
    confirmed: set[str] = set()  # devices whose installation is confirmed (no more evaluation)
    evaluated: dict[str, float] = {}  # device -> monotonic time of its last evaluation

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

    def limited(buckets: SharedBuckets, key: str, what: str, conn: Any = None) -> None:
        wait = buckets.take(key, conn)
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
        # its own transaction: a refused code (403) rolls the activation back, the attempt still counts
        limited(activate_limit, address_key(ip), "activation attempts from this address")
        reply = enroll.activate(db, code=req.activation_code, serial=req.serial, hostname=req.hostname,
                                agent_version=req.agent_version, client_ip=ip,
                                heartbeat_interval=settings.heartbeat_interval)
        log.info("activated %s (contract %s, serial %s) from %s", reply["device_id"], reply["contract_id"],
                 req.serial, ip)
        if settings.tuf_repo:  # the box's trust anchor for signed updates, over this authenticated channel
            root = Path(settings.tuf_repo) / "metadata" / "root.json"
            reply["tuf_root"] = root.read_text(encoding="utf-8") if root.is_file() else None
        return reply

    @app.post("/api/v1/provision", tags=["device"],
              responses={**_ERRORS, 403: {"model": ErrorBody}})
    def provision(req: ProvisionRequest, request: Request,
                  cred: HTTPAuthorizationCredentials | None = Security(bearer)) -> dict[str, Any]:
        """The box's settings sheet and configuration by serial, for `vcr-agent setup`. Auth: the activation
        code bound to that serial (the customer types it), or the box's own bearer token once activated."""
        ip = _client_ip(request)
        limited(activate_limit, address_key(ip), "activation and provisioning attempts from this address")
        auth = device(cred.credentials) if cred is not None and cred.credentials else None
        if auth is None and not req.activation_code:
            raise CenterError(403, "invalid_code", "activation_code is required")
        url = settings.public_url or f"https://{request.headers.get('host') or request.url.netloc}"
        reply = sheets.provision(db, req.serial, code=req.activation_code, auth=auth, center_url=url)
        log.info("settings sheet of serial %s (contract %s) fetched from %s", req.serial, reply["contract_id"], ip)
        return reply

    @app.post("/api/v1/checkin", response_model=CheckinReply, tags=["device"])
    def checkin(req: CheckinRequest, request: Request, tok: str = Depends(token)) -> Any:
        with db.write() as conn:  # token lookup and check-in in one transaction
            auth = device(tok, conn)
            limited(checkin_limit, auth.device_id, "check-ins from this device", conn)
            body = req.model_dump(mode="json", exclude_unset=True)
            reply = fleet.checkin(db, auth, body, client_ip=_client_ip(request),
                                  interval=settings.heartbeat_interval, history=settings.checkin_history, conn=conn,
                                  misses=settings.offline_after_missed)
            # installation confirmation, until confirmed (opscenter/confirm.py), at most every confirm_interval
            if settings.sandbox:  # verdicts changed lately: the box updates its verdict cache (docs/sandbox.md)
                from datetime import timedelta

                from opscenter.sandbox.queue import changed_since

                window = max(3 * settings.heartbeat_interval, 600.0)
                reply["sandbox"] = {"verdicts": changed_since(db, utcnow() - timedelta(seconds=window), conn=conn),
                                    "window_s": window}
            # spam digests other boxes reported lately (opscenter/antispam.py): added to the box's list
            from datetime import timedelta

            from opscenter.antispam import listed_since

            window = max(3 * settings.heartbeat_interval, 600.0)
            reply["antispam"] = {"known_digests": listed_since(db, utcnow() - timedelta(seconds=window), conn=conn),
                                 "window_s": window}
            if auth.device_id not in confirmed and \
                    time.monotonic() - evaluated.get(auth.device_id, -1e18) >= settings.confirm_interval:
                evaluated[auth.device_id] = time.monotonic()
                if confirm.on_checkin(db, conn, auth.device_id, auth.contract_id, auth.serial, body) is None:
                    confirmed.add(auth.device_id)
                    evaluated.pop(auth.device_id, None)
        return JSONResponse(reply)

    @app.post("/api/v1/alarms", response_model=AlarmReply, tags=["device"],
              responses={**_ERRORS, 429: {"model": ErrorBody, "description": "rate_limited, or quota_exceeded: "
                                          "the device's alarm storage quota for today is used up"}})
    def post_alarms(batch: AlarmBatch, request: Request, tok: str = Depends(token)) -> Any:
        now = utcnow()
        day = alarm_store.day_of(now)
        events = [e.model_dump() for e in batch.events]
        with db.write() as conn:  # token lookup, limits, quota and insert in one transaction
            auth = device(tok, conn)
            if len(batch.events) > settings.max_alarm_events:
                raise CenterError(413, "too_large",
                                  f"{len(batch.events)} events in one batch; send at most {settings.max_alarm_events} "
                                  f"events and {settings.max_alarm_bytes} bytes per request",
                                  extra={"max_events": settings.max_alarm_events,
                                         "max_bytes": settings.max_alarm_bytes})
            limited(alarm_limit, auth.device_id, "alarm batches from this device", conn)
            # SQLite has one writer anyway: the fleet-wide bucket rides in this transaction. On PostgreSQL
            # it takes its own short one, so the hot row is not locked for the whole insert.
            limited(alarm_global, "*", "alarm batches (the center is busy)",
                    conn if db.dialect == "sqlite" else None)
            over = alarm_store.over_quota(conn, auth.device_id, day, settings.alarm_quota_events,
                                          settings.alarm_quota_bytes)
            if over:  # counted (committed with this transaction), then refused below
                alarm_store.record_refusal(db, conn, auth.device_id, day, len(events), over, now)
            else:
                stored: list[dict[str, Any]] = []
                counts = alarm_store.ingest(db, auth.device_id, events, conn, stored=stored)
                notify.note_alarms(db, conn, auth.contract_id, auth.device_id, stored, settings)
                size = int(request.scope.get("vcr.body_bytes") or 0)
                charged = -(-size * counts["accepted"] // len(events)) if events else 0
                alarm_store.record_usage(db, conn, auth.device_id, day, counts["accepted"], charged)
        if over:
            wait = alarm_store.seconds_to_next_day(now)
            ra = retry_after(wait)
            raise CenterError(429, "quota_exceeded",
                              f"alarm storage quota of this device is used up: {over}; retry after {ra} s "
                              "(the next UTC day)", headers={"Retry-After": ra}, extra={"retry_after": int(ra)})
        return JSONResponse({**counts, "server_time": iso(utcnow())})

    @app.post("/api/v1/tasks/{task_id}/status", tags=["device"], responses=_ERRORS)
    def post_task_status(req: TaskStatusRequest, task_id: int = PathParam(ge=1, le=MAX_ID),
                         tok: str = Depends(token)) -> dict[str, Any]:
        return fleet.task_status(db, device(tok), task_id, req.status, req.detail)

    @app.post("/api/v1/backups", response_model=BackupReply, status_code=201, tags=["device"], responses=_ERRORS)
    def post_backup(req: BackupRequest, tok: str = Depends(token)) -> dict[str, Any]:
        auth = device(tok)
        blob = enroll.decode_blob(req.blob, settings.max_backup_bytes)
        return enroll.store_backup(db, auth, req.revision, blob, settings.backups_kept)

    from opscenter import categories

    categories.install(app, settings.categories, settings.category_ttl, device, token)

    if settings.sandbox:  # verdicts by hash and file submissions (opscenter/sandbox/api.py)
        from opscenter.sandbox import api as sandbox_api

        sandbox_api.install(app, settings, db, device, token, limited,
                            SharedBuckets(db, "sandbox", settings.sandbox_submit_rate, settings.sandbox_submit_burst))

    from opscenter import antispam

    learner = None
    if settings.antispam_controller:  # boxes' spam and ham reports, learnt by the center's rspamd
        antispam.install(app, settings.antispam_controller, settings.antispam_password, device, token)
        learner = RspamdClient(settings.antispam_controller, timeout=30.0, password=settings.antispam_password)
    antispam.install_reports(app, db, device, token, limited,
                             SharedBuckets(db, "spamreport", settings.antispam_report_rate, settings.antispam_report_burst),
                             min_devices=settings.antispam_digest_min_devices, learner=learner)

    if settings.tuf_repo:  # signed bundles for the boxes (vcr-opscenter tuf-init / publish)
        from opscenter.tufrepo import mount

        mount(app, settings.tuf_repo)

    return app
