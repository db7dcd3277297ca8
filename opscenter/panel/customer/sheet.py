"""Settings sheet (設定シート): the customer views and enters the sheet of their contract's boxes before
shipping (the serial is the operator's choice: a sheet exists once the operator assigned the box).
Checked by the center's checker; once the box is activated only the contact may change."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response

from opscenter import sheets
from opscenter.panel import sheetform
from opscenter.panel.web import Auth, NavItem, auth, kit_of, not_found

router = APIRouter()
NAV = [NavItem("/sheet", "nav.sheet", 45)]
SERIAL = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")


def _own(request: Request, a: Auth, serial: str) -> dict:
    row = sheets.get_sheet(kit_of(request).db, serial)
    if row is None or row["contract_id"] != a.contract_id:
        raise not_found()  # another contract's serial looks the same as no sheet
    return row


def _page(request: Request, a: Auth, row: dict, status: int = 200, values: dict | None = None,
          errors: dict | None = None, code: str | None = None) -> Response:
    kit = kit_of(request)
    return kit.render(request, "customer/sheet.html", status, row=row, form=values or sheetform.form_of(row["sheet"]),
                      errors=errors or {}, code=code, action=kit.url(f"/sheet/{row['serial']}"),
                      locked=sheetform.activated(kit.db, a.contract_id or "", row["serial"]),
                      others=sheets.list_sheets(kit.db, a.contract_id))


@router.get("/sheet")
def sheet_index(request: Request, a: Auth = Depends(auth)) -> Response:
    kit = kit_of(request)
    rows = sheets.list_sheets(kit.db, a.contract_id)
    if len(rows) == 1:
        return _page(request, a, rows[0])
    return kit.render(request, "customer/sheets.html", rows=rows)


@router.get("/sheet/{serial}")
def sheet_page(request: Request, serial: str = SERIAL, a: Auth = Depends(auth)) -> Response:
    return _page(request, a, _own(request, a, serial))


@router.post("/sheet/{serial}")
async def save_sheet(request: Request, serial: str = SERIAL, a: Auth = Depends(auth)) -> Response:
    kit = kit_of(request)
    row = _own(request, a, serial)
    values = sheetform.read_form(await request.form())
    saved, errors = sheetform.save(kit.db, a.contract_id or "", serial, values, by=f"customer:{a.name}"[:64],
                                   code_valid_days=kit.settings.code_valid_days,
                                   default_term_days=kit.settings.default_term_days)
    if saved is None:
        return _page(request, a, row, 400, values=values, errors=errors)
    if saved.get("activation_code"):  # a new code (the earlier one had expired): shown once
        return _page(request, a, saved, code=saved["activation_code"])
    return kit.redirect(f"/sheet/{serial}", done="saved")
