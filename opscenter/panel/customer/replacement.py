"""Replacement requests: the box failed; the center sends a replacement ahead (send-back). Recorded and
shown to the operators, who issue the replacement code and ship the box."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from opscenter.panel import store
from opscenter.panel.pages import form_fields
from opscenter.panel.web import Auth, NavItem, auth, kit_of

router = APIRouter()
NAV = [NavItem("/replacement", "nav.replacement", 40)]


def _page(request: Request, a: Auth, status: int = 200, error: str | None = None,
          form: dict | None = None) -> Response:
    kit = kit_of(request)
    rows = store.replacements(kit.db, a.contract_id)
    return kit.render(request, "customer/replacement.html", status, requests=rows, error=error, form=form or {},
                      open=any(r["status"] in store.REPLACEMENT_OPEN for r in rows),
                      box=store.contract_box(kit.db, a.contract_id, kit.settings.offline_after_missed))


@router.get("/replacement")
def replacement_page(request: Request, a: Auth = Depends(auth)) -> Response:
    return _page(request, a)


# Same shape as changes.file_change: kept apart, the fields, the store call, the conflict key and the
# page it goes back to differ (a helper would take them all as arguments).
@router.post("/replacement")
async def file_replacement(request: Request, a: Auth = Depends(auth)) -> Response:
    kit = kit_of(request)
    data = await form_fields(request, ("symptom", "contact"))
    try:
        store.create_replacement(kit.db, a.contract_id, by=a.name, **data)
    except store.Refused as exc:
        return _page(request, a, 409 if exc.key == "replacement_open" else 400, error=f"repl.err.{exc.key}",
                     form=data)
    return kit.redirect("/replacement", done="filed")
