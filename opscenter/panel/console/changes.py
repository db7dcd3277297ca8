"""Change requests with their due dates; applying one runs the box's check on the new revision
(opscenter/configcheck.py) and, if it passes, queues the ``config`` task."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from opscenter.db import utcnow
from opscenter.fleet import add_task
from opscenter import configcheck
from opscenter.panel import bizdays, store
from opscenter.panel.pages import found, save_status
from opscenter.panel.web import Auth, NavItem, kit_of, role

router = APIRouter()
NAV = [NavItem("/changes", "nav.changes", 30)]


@router.get("/changes")
def change_list(request: Request, a: Auth = Depends(role("operator")), status: str = Query("open")) -> Response:
    kit = kit_of(request)
    status = status if status in ("open", "all", *store.CHANGE_STATUSES) else "open"
    rows = store.changes(kit.db, None, status=None if status == "all" else status)
    today = bizdays.japan_date(utcnow())
    for r in rows:
        r["days_left"] = bizdays.business_days_between(today, r["due_date"]) if r["shown_status"] in store.CHANGE_OPEN \
            else None
    return kit.render(request, "console/changes.html", changes=rows, status=status)


def _detail(request: Request, request_id: int, status: int = 200, **ctx: object) -> Response:
    kit = kit_of(request)
    row = found(store.change, kit.db, request_id, None)
    box = store.contract_box(kit.db, row["contract_id"], kit.settings.offline_after_missed)
    rev = store.next_revision(kit.db, box["device_id"]) if box else None
    ctx.setdefault("config_text", "")
    return kit.render(request, "console/change.html", status, c=row, box=box, next_revision=rev,
                      check=ctx.pop("check", None), **ctx)


@router.get("/changes/{request_id}")
def change_detail(request: Request, request_id: int = Path(ge=1, le=2**62), a: Auth = Depends(role("operator"))
                  ) -> Response:
    return _detail(request, request_id)


@router.post("/changes/{request_id}/status")
async def change_status(request: Request, request_id: int = Path(ge=1, le=2**62),
                        a: Auth = Depends(role("operator"))) -> Response:
    return await save_status(request, store.set_change_status, request_id, a.name, f"/changes/{request_id}")


@router.post("/changes/{request_id}/apply")
async def apply_change(request: Request, request_id: int = Path(ge=1, le=2**62),
                       a: Auth = Depends(role("operator"))) -> Response:
    """Check the revision with the box's own check, then queue it as a ``config`` task."""
    kit = kit_of(request)
    form = await request.form()
    text = str(form.get("config") or "")
    row = found(store.change, kit.db, request_id, None)
    box = store.contract_box(kit.db, row["contract_id"], kit.settings.offline_after_missed)
    try:
        revision = int(str(form.get("revision") or ""))
    except ValueError:
        revision = -1
    if box is None or box["status"] == "revoked":
        return _detail(request, request_id, 409, error="cchange.err.no_box", config_text=text)
    if row["status"] not in ("received", "in_progress"):
        return _detail(request, request_id, 409, error="cchange.err.state", config_text=text)
    if not text.strip() or len(text) > 1_000_000:
        return _detail(request, request_id, 400, error="cchange.err.no_config", config_text=text)
    if not 0 <= revision <= 2**31 - 1:
        return _detail(request, request_id, 400, error="cchange.err.revision", config_text=text)
    check = configcheck.check_remote(text)
    if not check.ok:
        return _detail(request, request_id, 422, error=f"cchange.err.check_{check.outcome}", check=check,
                       config_text=text)
    task_id = add_task(kit.db, box["device_id"], "config", {"revision": revision, "config": text,
                                                            "change_request": request_id, "by": a.name})
    store.mark_applying(kit.db, request_id, task_id, revision, a.name)
    return kit.redirect(f"/changes/{request_id}", done="applied")
