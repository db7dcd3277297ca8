"""The error shape of the API: ``{"error": code, "message": text, "server_time": ...}`` on every 4xx/5xx.

A body that is not JSON (also NaN, Infinity and numbers beyond a double: :class:`StrictJSONRoute`) is
400 ``bad_request``; a body that is JSON but does not match the schema is 422 ``invalid`` with the
first offending ``field`` named (``app.state.validation_status`` may keep 400 for a path whose old
clients act on a 400, such as the alarm batches the box bisects).
"""
from __future__ import annotations

import logging
import json
from typing import Any, Callable, Coroutine

from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from opscenter.db import iso, utcnow

log = logging.getLogger("vcr-opscenter")

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


class CenterError(Exception):
    """A refusal with an HTTP status, an error code from the API contract and a message for people."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra or {}


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": code, "message": message, "server_time": iso(utcnow()), **extra}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None,
                   **extra: Any) -> JSONResponse:
    return JSONResponse(error_body(code, message, **extra), status_code=status, headers=headers)


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(x) for x in loc if x != "body"]
    return ".".join(parts) or "body"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def strict_json_loads(body: bytes | str) -> Any:
    """``json.loads`` that refuses NaN, Infinity and numbers a double cannot hold (standard JSON has none
    of them, and PostgreSQL's jsonb refuses them: they would fail at insert, as a 500)."""
    text = body.decode("utf-8") if isinstance(body, (bytes, bytearray)) else body
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except ValueError as exc:
        if isinstance(exc, json.JSONDecodeError):
            raise
        raise json.JSONDecodeError(str(exc), text, 0) from None


class _StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_json_loads(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """Routes whose JSON bodies are parsed by :func:`strict_json_loads` (``app.router.route_class``)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(_StrictJSONRequest(request.scope, request.receive))

        return strict


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(CenterError)
    async def _center(_req: Request, exc: CenterError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(req: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, "bad_request", "the body is not valid JSON (NaN, Infinity and numbers "
                                                      "beyond a double are not JSON either)")
        msgs = [f"{_field(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors[:5]]
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        status = (getattr(req.app.state, "validation_status", None) or {}).get(req.url.path, 422)
        field = _field(errors[0].get("loc", ())) if errors else "body"
        return error_response(status, CODES[status], "; ".join(msgs) + more, field=field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = CODES.get(exc.status_code, "error")
        detail = exc.detail if isinstance(exc.detail, str) else code
        return error_response(exc.status_code, code, detail, dict(exc.headers or {}))

    @app.exception_handler(OperationalError)
    async def _db_down(_req: Request, exc: OperationalError) -> JSONResponse:
        log.error("database unavailable: %s", exc.orig if exc.orig is not None else exc)
        return error_response(503, "unavailable", "the database is unavailable; retry later", {"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _internal(_req: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error: %s", exc)
        return error_response(500, "internal_error", "internal error; retry later")
