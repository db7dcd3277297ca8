"""Every box: health, version, signature freshness; offline and not-confirmed boxes first."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from opscenter.db import utcnow
from opscenter.panel import store
from opscenter.panel.web import Auth, NavItem, auth, kit_of

router = APIRouter()
NAV = [NavItem("/", "nav.fleet", 10)]


@router.get("/")
def fleet(request: Request, a: Auth = Depends(auth)) -> Response:
    kit = kit_of(request)
    boxes = store.fleet(kit.db, kit.settings.offline_after_missed, utcnow())
    return kit.render(request, "console/fleet.html", boxes=boxes,
                      open_changes=len(store.changes(kit.db, None, status="open")),
                      open_replacements=len(store.replacements(kit.db, None, status="open")),
                      offline=sum(1 for b in boxes if b["status"] == "offline"),
                      unconfirmed=sum(1 for b in boxes if not b["confirmed"]))
