"""What the pages of the panel and the console share around the store: a row or a 404, and the
status-and-note forms of the console."""
from __future__ import annotations

from typing import Any, Callable, TypeVar

from fastapi import Request
from fastapi.responses import Response

from opscenter.db import Database
from opscenter.panel import store
from opscenter.panel.web import Kit, kit_of, not_found

T = TypeVar("T")


def found(fetch: Callable[..., T], *args: Any) -> T:
    """``fetch(*args)``, or a 404 when the row is not there for this caller (store.NotFound)."""
    try:
        return fetch(*args)
    except store.NotFound:
        raise not_found() from None


async def status_form(request: Request, setter: Callable[[Database, int, str, str, str], None], row_id: int,
                      by: str) -> tuple[Kit, Any, Response | None]:
    """A console form setting a row's status with a note (``setter(db, id, status, note, by)``):
    the kit, the form and None when it was saved, else the response (404, or 400 when refused)."""
    kit = kit_of(request)
    form = await request.form()
    try:
        found(setter, kit.db, row_id, str(form.get("status") or ""), str(form.get("note") or ""), by)
    except store.Refused:
        return kit, form, kit.render(request, "error.html", 400, key="err.invalid")
    return kit, form, None


async def save_status(request: Request, setter: Callable[[Database, int, str, str, str], None], row_id: int,
                      by: str, back: str) -> Response:
    """``status_form``, then back to the row's page (``back``) with "saved"."""
    kit, _form, refused = await status_form(request, setter, row_id, by)
    return refused if refused is not None else kit.redirect(back, done="saved")


async def form_fields(request: Request, names: tuple[str, ...]) -> dict[str, str]:
    """The posted form's fields ``names`` as text ("" when absent)."""
    form = await request.form()
    return {k: str(form.get(k) or "") for k in names}
