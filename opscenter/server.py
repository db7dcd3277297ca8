"""``vcr-opscenter serve``: uvicorn over HTTPS, one or more worker processes on one listening socket.

The socket is bound and listening before any worker starts, so the ready file (JSON: listen, url,
pid) can be written at once: connections made after it exists wait in the backlog until a worker
accepts them. Tables are created once, here, before the workers start.
"""
from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

import uvicorn

from opscenter.db import Database
from opscenter.settings import Settings, join_listen, split_listen

log = logging.getLogger("vcr-opscenter")

SETTINGS_ENV = "VCR_OPSCENTER_SETTINGS_JSON"


def app_from_env():  # type: ignore[no-untyped-def]
    """uvicorn factory for worker processes: the settings come from the parent through the environment."""
    from opscenter.app import create_app

    return create_app(Settings.model_validate_json(os.environ[SETTINGS_ENV]), create_tables=False)


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
    settings = settings.model_copy(update={"listen": actual})
    os.environ[SETTINGS_ENV] = settings.model_dump_json()
    # Graceful stop waits at most 3 s: an idle TLS keep-alive connection whose client never answers the
    # close_notify would otherwise hold the shutdown (asyncio waits for the peer's TLS shutdown).
    common = dict(ssl_certfile=settings.cert, ssl_keyfile=settings.key, log_level=settings.log_level,
                  access_log=settings.access_log, timeout_graceful_shutdown=3, timeout_keep_alive=30,
                  server_header=False, proxy_headers=False, lifespan="on")
    log.info("operations center on https://%s (%d worker%s, database %s)", actual, settings.workers,
             "s" if settings.workers > 1 else "", _safe_url(settings.db))
    ready = Path(settings.ready_file) if settings.ready_file else None
    if ready:
        ready.parent.mkdir(parents=True, exist_ok=True)
        tmp = ready.with_suffix(".tmp")
        tmp.write_text(json.dumps({"listen": actual, "url": f"https://{actual}", "pid": os.getpid()}))
        tmp.replace(ready)
    try:
        if settings.workers > 1:
            from uvicorn.supervisors import Multiprocess

            config = uvicorn.Config("opscenter.server:app_from_env", factory=True, workers=settings.workers,
                                    **common)  # type: ignore[arg-type]
            Multiprocess(config, sockets=[sock]).run()
        else:
            from opscenter.app import create_app

            config = uvicorn.Config(create_app(settings, create_tables=False), **common)  # type: ignore[arg-type]
            uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
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
