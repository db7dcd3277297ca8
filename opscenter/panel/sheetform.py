"""The settings sheet form, shared by the customer panel (their contract's sheets) and the operator console
(any contract): form fields <-> sheet, problems by form field (the center's own checker,
filters/settingsheet.py), and the lock once the box is activated (only the contact may change then:
the box has applied the network settings already; a change goes through a change request)."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from filters.settingsheet import SheetError
from opscenter import sheets
from opscenter.db import Database, devices

NETWORK_FIELDS = ("install_address", "install_date", "management_ip", "gateway", "dns", "management_ipv6",
                  "gateway_ipv6")
CONTACT_FIELDS = ("contact_name", "contact_mail", "contact_phone")
FORM_FIELDS = NETWORK_FIELDS + CONTACT_FIELDS
MAX_LEN = 400


def activated(db: Database, contract_id: str, serial: str) -> bool:
    """An active (not revoked) box of the contract with this serial: its network settings are applied."""
    with db.read() as conn:
        return conn.execute(select(devices.c.device_id).where(
            devices.c.serial == serial, devices.c.contract_id == contract_id,
            devices.c.revoked_at.is_(None))).first() is not None


def form_of(sheet: dict[str, Any] | None) -> dict[str, str]:
    """The form's values from a stored sheet."""
    s = sheet or {}
    contact = s.get("contact") if isinstance(s.get("contact"), dict) else {}
    out = {k: str(s.get(k) or "") for k in NETWORK_FIELDS if k != "dns"}
    out["dns"] = ", ".join(s.get("dns") or [])
    out.update({f"contact_{k}": str(contact.get(k) or "") for k in ("name", "mail", "phone")})
    return out


def read_form(form: Any) -> dict[str, str]:
    return {k: str(form.get(k) or "").strip()[:MAX_LEN] for k in FORM_FIELDS}


def sheet_of(values: dict[str, str], stored: dict[str, Any] | None, locked: bool) -> dict[str, Any]:
    """The sheet to check: the form's fields, or (locked) the stored network fields with the form's contact."""
    contact = {k: values[f"contact_{k}"] for k in ("name", "mail", "phone")}
    if locked:
        data = {k: v for k, v in (stored or {}).items() if k != "contact"}
    else:
        data = {k: values[k] for k in ("install_address", "install_date", "management_ip", "gateway", "dns")}
        if values["management_ipv6"] or values["gateway_ipv6"]:
            data["management_ipv6"] = values["management_ipv6"]
            data["gateway_ipv6"] = values["gateway_ipv6"]
    data["contact"] = contact
    return data


def form_field(problem_field: str) -> str:
    """The form field a problem belongs to (``dns.1`` -> dns, ``contact.mail`` -> contact_mail)."""
    if problem_field.startswith("dns"):
        return "dns"
    if problem_field.startswith("contact."):
        name = "contact_" + problem_field.split(".", 1)[1]
        return name if name in CONTACT_FIELDS else "_"
    return problem_field if problem_field in FORM_FIELDS else "_"


def errors_of(exc: SheetError) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for p in exc.problems:
        out.setdefault(form_field(p.field), []).append((p.ja, p.en))
    return out


def save(db: Database, contract_id: str, serial: str, values: dict[str, str], *, by: str,
         code_valid_days: int | None, default_term_days: int) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Check and store; returns (the stored row with ``activation_code`` or None, errors by field)."""
    old = sheets.get_sheet(db, serial)
    if old is not None and old["contract_id"] != contract_id:
        return None, {"_": [("このシリアルは別の契約の設定シートです", "this serial has a sheet of another contract")]}
    locked = old is not None and activated(db, contract_id, serial)
    data = sheet_of(values, old["sheet"] if old else None, locked)
    try:
        row = sheets.set_sheet(db, contract_id, serial, data, operator=by, code_valid_days=code_valid_days,
                               default_term_days=default_term_days)
    except SheetError as exc:
        return None, errors_of(exc)
    except ValueError as exc:
        return None, {"_": [(str(exc), "")]}
    return row, {}

