"""The operator listener's application: the read-only page, the operator JSON, ``/docs`` and ``/openapi.json``,
every path behind an operator account (HTTP Basic over TLS; accounts from ``vcr-opscenter operator add``).

It runs on its own listener (``operator_listen``, 127.0.0.1:8443 by default), never on the device
listener: opscenter/server.py routes each connection by the local port it arrived on. Failed logins
are rate-limited per client address and per account name (429 with ``Retry-After``); a client that is
over the limit gets no password check at all.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from opscenter import alarms as alarm_store
from opscenter import views
from opscenter.bodylimit import BodyLimit
from opscenter.db import Database, iso, utcnow
from opscenter.errors import CenterError, install_handlers
from opscenter.operators import Verifier
from opscenter.ratelimit import SharedBuckets, address_key, retry_after
from opscenter.settings import Settings
from opscenter.textsafe import json_text

log = logging.getLogger("vcr-opscenter")

REALM = "vcr-opscenter operator"
CHALLENGE = {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'}


class SafeJSONResponse(JSONResponse):
    """JSON whose strings carry no raw control or format characters (they come from boxes)."""

    def render(self, content: Any) -> bytes:
        return json_text(content, separators=(",", ":")).encode("utf-8")


def create_operator_app(settings: Settings, db: Database, device_schema: Callable[[], dict[str, Any]]) -> FastAPI:
    """The operator application on ``db``; ``device_schema()`` is the device API's OpenAPI schema."""
    app = FastAPI(title="vcr-agent operations center (operator)", openapi_url=None, docs_url=None, redoc_url=None,
                  default_response_class=SafeJSONResponse)
    app.state.db = db
    app.state.settings = settings
    install_handlers(app)
    app.add_middleware(BodyLimit, limit_for=lambda _path: settings.max_body_bytes)
    verifier = Verifier(db)
    app.state.verifier = verifier
    by_ip = SharedBuckets(db, "login-ip", settings.operator_login_rate, settings.operator_login_burst)
    by_name = SharedBuckets(db, "login-user", settings.operator_login_rate, settings.operator_login_burst)
    basic = HTTPBasic(auto_error=False, realm=REALM, description="an operator account (vcr-opscenter operator add)")

    def operator(request: Request, cred: HTTPBasicCredentials | None = Security(basic)) -> str:
        if cred is None:
            raise CenterError(401, "unauthorized", "ログインが必要です / operator login required (HTTP Basic)",
                              headers=CHALLENGE)
        ip = address_key(request.client.host if request.client else None)
        name = cred.username
        wait = max(by_ip.peek(ip), by_name.peek(name))
        if wait > 0:
            ra = retry_after(wait)
            raise CenterError(429, "rate_limited", f"ログイン失敗が多すぎます / too many failed logins; retry after "
                                                   f"{ra} s", headers={"Retry-After": ra},
                              extra={"retry_after": int(ra)})
        if not verifier.verify(name, cred.password):
            by_ip.take(ip)
            by_name.take(name)
            log.warning("operator login failed for %r from %s", name[:64], ip)
            raise CenterError(401, "unauthorized", "名前またはパスワードが違います / wrong operator name or password",
                              headers=CHALLENGE)
        return name

    authed = [Depends(operator)]

    @app.get("/", response_class=HTMLResponse, dependencies=authed, include_in_schema=False)
    def index() -> str:
        if not settings.html_page:
            raise CenterError(404, "not_found", "the operator page is turned off (html_page: false)")
        from opscenter.web import page

        return page(views.list_devices(db, settings.offline_after_missed), alarm_store.recent(db, limit=100),
                    iso(utcnow()) or "")

    @app.get("/api/operator/v1/devices", dependencies=authed, tags=["operator"])
    def devices(all: bool = False) -> Any:
        """Devices as `vcr-opscenter devices --json`, with today's alarm usage (`alarms_today`)."""
        return {"devices": views.list_devices(db, settings.offline_after_missed, include_revoked=all),
                "server_time": iso(utcnow())}

    @app.get("/api/operator/v1/alarms", dependencies=authed, tags=["operator"])
    def alarms(device: str | None = Query(None, max_length=40), limit: int = Query(100, ge=1, le=1000)) -> Any:
        return {"alarms": alarm_store.recent(db, device_id=device, limit=limit), "server_time": iso(utcnow())}

    @app.get("/api/operator/v1/events", dependencies=authed, tags=["operator"])
    def events(device: str | None = Query(None, max_length=40), kind: str | None = Query(None, max_length=32),
               limit: int = Query(100, ge=1, le=10000)) -> Any:
        return {"events": views.list_events(db, device_id=device, kind=kind, limit=limit),
                "server_time": iso(utcnow())}

    from opscenter import customer_api  # settings sheets, installation confirmations, notifications

    customer_api.install(app, db, settings, operator)

    @app.get("/openapi.json", dependencies=authed, include_in_schema=False)
    def openapi() -> Any:
        """The device API's schema (the contract with the boxes), plus the operator endpoints."""
        schema = dict(device_schema())
        own = app.openapi()
        schema["paths"] = {**schema.get("paths", {}), **own.get("paths", {})}
        comps = {**schema.get("components", {}).get("schemas", {}), **own.get("components", {}).get("schemas", {})}
        schema["components"] = {**schema.get("components", {}), "schemas": comps}
        return JSONResponse(schema)

    @app.get("/docs", dependencies=authed, include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="vcr-agent operations center API")

    @app.api_route("/{path:path}", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"], dependencies=authed,
                   include_in_schema=False)
    def not_found(path: str) -> Any:  # an unauthenticated client learns nothing about which paths exist
        raise CenterError(404, "not_found", f"no such path: /{path[:200]}")

    return app
