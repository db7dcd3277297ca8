"""``vcr-opscenter serve``: uvicorn over HTTPS, one or more worker processes on two listening sockets.

Two listeners, two applications: the device listener (``listen``, 0.0.0.0:443 by default) serves only
the device API (opscenter/app.py); the operator listener (``operator_listen``, 127.0.0.1:8443 by
default) serves only the operator page, operator JSON, /docs and /openapi.json behind operator
accounts (opscenter/operator_app.py). Every worker accepts on both sockets and :class:`Listeners`
hands each connection to the application of the socket it arrived on (the local port of the
connection: ``scope["server"]``, which the client cannot choose).

The sockets are bound and listening before any worker starts, so the ready file (JSON: listen, url,
operator_listen, operator_url, pid) can be written at once: connections made after it exists wait in
the backlog until a worker accepts them. Tables are created once, here, before the workers start.

The customer control panel is ``/panel/`` of the device listener and the operators' console is
``/console/`` of the operator listener (opscenter/panel/); each is its own application too.

Rate limits are shared by the workers: their buckets are rows of the database (opscenter/ratelimit.py).
"""
from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

import uvicorn

from opscenter.db import Database
from opscenter.settings import Settings, join_listen, split_listen

log = logging.getLogger("vcr-opscenter")

SETTINGS_ENV = "VCR_OPSCENTER_SETTINGS_JSON"


class Listeners:
    """ASGI: the operator application for connections to the operator listener's port, the device
    application for everything else. Lifespan events go to the device application (which owns the
    database and the sweep)."""

    def __init__(self, device: Any, operator: Any, operator_port: int | None, *, panel: Any = None,
                 console: Any = None) -> None:
        self.device = device
        self.operator = operator
        self.operator_port = operator_port
        self.panel = panel  # /panel on the device listener (opscenter/panel/customer)
        self.console = console  # /console on the operator listener (opscenter/panel/console)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan" and self.operator_port is not None:
            server = scope.get("server") or (None, None)
            if server[1] == self.operator_port:
                if self.console is not None and _under(scope.get("path", ""), "/console"):
                    await self.console(scope, receive, send)
                    return
                await self.operator(scope, receive, send)
                return
        if scope["type"] != "lifespan" and self.panel is not None and _under(scope.get("path", ""), "/panel"):
            await self.panel(scope, receive, send)
            return
        await self.device(scope, receive, send)


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def create_root(settings: Settings, *, create_tables: bool = False) -> Listeners:
    """Both applications on one database, routed by listener (``settings.operator_listen`` must carry the
    real port, not 0)."""
    from opscenter.app import create_app
    from opscenter.operator_app import create_operator_app

    from opscenter.panel.console import create_console_app
    from opscenter.panel.customer import create_customer_app

    device = create_app(settings, create_tables=create_tables)
    db = device.state.db
    panel = create_customer_app(settings, db) if settings.panel else None
    if not settings.operator_listen:
        return Listeners(device, None, None, panel=panel)
    operator = create_operator_app(settings, db, device.openapi)
    return Listeners(device, operator, split_listen(settings.operator_listen)[1], panel=panel,
                     console=create_console_app(settings, db))


def app_from_env():  # type: ignore[no-untyped-def]
    """uvicorn factory for worker processes: the settings come from the parent through the environment."""
    return create_root(Settings.model_validate_json(os.environ[SETTINGS_ENV]))


def bind(listen: str, backlog: int = 2048) -> socket.socket:
    host, port = split_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it every reply (headers and body are separate TLS records) waits 40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if host == "::" else 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings) -> int:
    if not settings.cert or not settings.key:
        raise SystemExit("serve: --cert and --key are required (the center speaks HTTPS only; see init-ca)")
    for f in (settings.cert, settings.key):
        if not Path(f).is_file():
            raise SystemExit(f"serve: no such file: {f}")
    db = Database.from_settings(settings)
    db.create_tables()
    db.dispose()
    sock = bind(settings.listen)
    host = split_listen(settings.listen)[0]
    actual = join_listen(host, sock.getsockname()[1])
    sockets = [sock]
    op_actual = None
    if settings.operator_listen:
        try:
            op_sock = bind(settings.operator_listen)
        except OSError as exc:
            sock.close()
            raise SystemExit(f"serve: cannot listen on operator_listen {settings.operator_listen}: {exc}") from None
        sockets.append(op_sock)
        op_actual = join_listen(split_listen(settings.operator_listen)[0], op_sock.getsockname()[1])
        if op_sock.getsockname()[1] == sock.getsockname()[1]:
            for s_ in sockets:
                s_.close()
            raise SystemExit("serve: operator_listen needs a port of its own")
    settings = settings.model_copy(update={"listen": actual, "operator_listen": op_actual})
    os.environ[SETTINGS_ENV] = settings.model_dump_json()
    # Graceful stop waits at most 3 s: an idle TLS keep-alive connection whose client never answers the
    # close_notify would otherwise hold the shutdown (asyncio waits for the peer's TLS shutdown).
    common = dict(ssl_certfile=settings.cert, ssl_keyfile=settings.key, log_level=settings.log_level,
                  access_log=settings.access_log, timeout_graceful_shutdown=3, timeout_keep_alive=30,
                  server_header=False, proxy_headers=False, lifespan="on")
    log.info("operations center on https://%s (%d worker%s, database %s)", actual, settings.workers,
             "s" if settings.workers > 1 else "", _safe_url(settings.db))
    if op_actual:
        log.info("operator listener on https://%s (operator accounts: vcr-opscenter operator add NAME)", op_actual)
    else:
        log.info("no operator listener (operator_listen is empty)")
    ready = Path(settings.ready_file) if settings.ready_file else None
    if ready:
        ready.parent.mkdir(parents=True, exist_ok=True)
        tmp = ready.with_suffix(".tmp")
        tmp.write_text(json.dumps({"listen": actual, "url": f"https://{actual}", "operator_listen": op_actual,
                                   "operator_url": f"https://{op_actual}" if op_actual else None,
                                   "pid": os.getpid()}))
        tmp.replace(ready)
    from opscenter.report.schedule import ReportScheduler

    reports = ReportScheduler.start(settings)  # the monthly reports, in a process of their own
    try:
        if settings.workers > 1:
            from uvicorn.supervisors import Multiprocess

            config = uvicorn.Config("opscenter.server:app_from_env", factory=True, workers=settings.workers,
                                    **common)  # type: ignore[arg-type]
            Multiprocess(config, sockets=sockets).run()
        else:
            config = uvicorn.Config(create_root(settings), **common)  # type: ignore[arg-type]
            uvicorn.Server(config).run(sockets=sockets)
    finally:
        if reports is not None:
            reports.stop()
        for s_ in sockets:
            s_.close()
        if ready:
            ready.unlink(missing_ok=True)
    return 0


def _safe_url(url: str) -> str:
    """The database URL without a password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "?"
