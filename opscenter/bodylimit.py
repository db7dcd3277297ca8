"""Request body size limit (pure ASGI): a body over the limit gets 413 before any parsing.

The body is read (and discarded) when it was announced with a Content-Length the server can afford
to drain, so the client reliably sees the 413 instead of a reset connection.
"""
from __future__ import annotations

from typing import Any, Awaitable, Callable

from opscenter.errors import error_response

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DRAIN_MAX = 64 << 20


class BodyLimit:
    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], limit_for: Callable[[str], int],
                 max_events: int | None = None) -> None:
        self.app = app
        self.limit_for = limit_for
        self.max_events = max_events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        length = None
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    length = int(v)
                except ValueError:
                    length = None
        if length is not None and length > limit:
            if length <= DRAIN_MAX:
                await self._drain(receive)
            await self._too_large(scope, send, length, limit)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body = msg.get("body", b"")
            size += len(body)
            if size > limit:
                if msg.get("more_body"):
                    await self._drain(receive, size)
                await self._too_large(scope, send, None, limit)
                return
            chunks.append(body)
            if not msg.get("more_body", False):
                break
        data = b"".join(chunks)
        scope["vcr.body_bytes"] = len(data)  # what the request weighed (the alarm quota counts it)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": data, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _drain(receive: Receive, already: int = 0) -> None:
        size = already
        while size <= DRAIN_MAX:
            msg = await receive()
            if msg["type"] != "http.request":
                return
            size += len(msg.get("body", b""))
            if not msg.get("more_body", False):
                return

    async def _too_large(self, scope: Scope, send: Send, length: int | None, limit: int) -> None:
        what = f"{length} bytes" if length is not None else "the body"
        extra: dict[str, Any] = {"max_bytes": limit}
        hint = f"send at most {limit} bytes per request"
        if scope["path"] == "/api/v1/alarms" and self.max_events:
            extra["max_events"] = self.max_events
            hint = f"split the batch: at most {self.max_events} events and {limit} bytes per request"
        resp = error_response(413, "too_large", f"request body too large: {what} > limit {limit} bytes; {hint}",
                              **extra)
        resp.headers["Connection"] = "close"

        async def _nothing() -> Message:
            return {"type": "http.disconnect"}

        await resp(scope, _nothing, send)
