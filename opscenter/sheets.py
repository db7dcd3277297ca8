"""Settings sheets (設定シート) at the center: entered by the operator before shipping, fetched by the box.

``vcr-opscenter sheet set --contract C --serial S --file sheet.yaml`` (or the operator route) checks
the sheet (filters/settingsheet.py: every problem named by field, in Japanese and English), stores it
for the box's serial, and issues an activation code bound to that serial. The code goes to the
customer with the quick-start guide; the box's configuration (the ``settings_sheet`` section and the
center link) is produced from the sheet (:func:`box_config`).

Provisioning auth (``POST /api/v1/provision``): the box sends its serial **and the activation code**
the customer types in. The serial alone is printed on the box and its carton, so it authenticates
nothing; the code is a secret (80 bits) that only the customer of that box has, is already bound to
that serial, and is rate-limited per client address like activation. The sheet is returned when a
code bound to that serial for the sheet's contract is unused and unexpired, or was used to activate
a box with that serial that is still active (so ``vcr-agent setup`` can run again). An activated box
may also fetch its own sheet with its bearer token. Every refusal is the same 403 ``invalid_code``:
whether a serial has a sheet is not disclosed, and no sheet of another serial or contract is ever
returned.
"""
from __future__ import annotations

import datetime as dt
import re
from typing import Any

import yaml
from sqlalchemy import delete, select, update

from filters.settingsheet import SheetError, SheetProblem, agent_section, check_sheet
from opscenter.db import Database, activation_codes, devices, iso, settings_sheets, utcnow
from opscenter.enroll import DeviceAuth, issue_code, normalize_code, sha256
from opscenter.errors import CenterError

SERIAL_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
CONTRACT_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def check_ids(contract_id: str, serial: str) -> None:
    problems = []
    if not CONTRACT_RE.match(contract_id or ""):
        problems.append(SheetProblem("contract", "契約番号は英数字と . _ - の 64 文字以内です",
                                     "contract: up to 64 letters, digits, '.', '_' or '-'"))
    if not SERIAL_RE.match(serial or ""):
        problems.append(SheetProblem("serial", "シリアル番号は英数字と . _ - の 64 文字以内です",
                                     "serial: up to 64 letters, digits, '.', '_' or '-'"))
    if problems:
        raise SheetError(problems)


def _row(r: Any) -> dict[str, Any]:
    return {"serial": r["serial"], "contract_id": r["contract_id"], "sheet": r["sheet"],
            "code_issued_at": iso(r["code_issued_at"]), "created_at": iso(r["created_at"]),
            "updated_at": iso(r["updated_at"]), "updated_by": r["updated_by"], "fetched_at": iso(r["fetched_at"]),
            "fetches": r["fetches"]}


def set_sheet(db: Database, contract_id: str, serial: str, data: Any, *, operator: str = "", new_code: bool = False,
              code_valid_days: int | None = 90, default_term_days: int = 730) -> dict[str, Any]:
    """Check and store the sheet of ``serial`` (replacing an earlier one of the same contract) and issue an
    activation code bound to the serial when the box has none usable. Returns the stored sheet plus
    ``activation_code`` (the new code, shown once, or None) and ``code_status``.

    Raises :class:`SheetError` (problems by field) or ``ValueError`` (the serial is another contract's)."""
    check_ids(contract_id, serial)
    sheet = check_sheet(data)
    now = utcnow()
    with db.read() as conn:
        old = conn.execute(select(settings_sheets).where(settings_sheets.c.serial == serial)).mappings().first()
        code = None
        if old is not None and old["code_hash"]:
            code = conn.execute(select(activation_codes).where(
                activation_codes.c.code_hash == old["code_hash"])).mappings().first()
    if old is not None and old["contract_id"] != contract_id:
        raise ValueError(f"シリアル {serial} は契約 {old['contract_id']} の設定シートです (先に sheet delete) / "
                         f"serial {serial} has a sheet of contract {old['contract_id']}; delete it first")
    status = "issued"
    if code is not None and not new_code:
        if code["used_at"] is not None:
            status = "used"
        elif code["expires_at"] is None or code["expires_at"] > now:
            status = "valid"
    issued = None
    if status == "issued":
        issued = issue_code(db, contract_id, serial=serial, valid_days=code_valid_days,
                            default_term_days=default_term_days)
    with db.write() as conn:
        values: dict[str, Any] = {"contract_id": contract_id, "sheet": sheet, "updated_at": now,
                                  "updated_by": operator[:64]}
        if issued is not None:
            values.update(code_hash=sha256(normalize_code(issued.code)), code_issued_at=now)
        if old is None:
            conn.execute(settings_sheets.insert().values(serial=serial, created_at=now, fetches=0, **values))
        else:
            conn.execute(update(settings_sheets).where(settings_sheets.c.serial == serial).values(**values))
        row = conn.execute(select(settings_sheets).where(settings_sheets.c.serial == serial)).mappings().one()
    out = _row(row)
    out["activation_code"] = issued.code if issued else None
    out["code_expires_at"] = iso(issued.expires_at) if issued else None
    out["code_status"] = status  # issued (new, shown once) | valid (the earlier one still works) | used
    return out


def get_sheet(db: Database, serial: str) -> dict[str, Any] | None:
    with db.read() as conn:
        r = conn.execute(select(settings_sheets).where(settings_sheets.c.serial == serial)).mappings().first()
    return _row(r) if r else None


def list_sheets(db: Database, contract_id: str | None = None) -> list[dict[str, Any]]:
    q = select(settings_sheets).order_by(settings_sheets.c.contract_id, settings_sheets.c.serial)
    if contract_id:
        q = q.where(settings_sheets.c.contract_id == contract_id)
    with db.read() as conn:
        return [_row(r) for r in conn.execute(q).mappings().all()]


def delete_sheet(db: Database, serial: str) -> bool:
    with db.write() as conn:
        return bool(conn.execute(delete(settings_sheets).where(settings_sheets.c.serial == serial)).rowcount)


def contacts_of(db: Database, contract_id: str, conn: Any = None) -> list[str]:
    """The contact mail addresses of the contract's settings sheets (the default notification recipients)."""
    with db.read(conn) as conn:
        rows = conn.execute(select(settings_sheets.c.sheet).where(
            settings_sheets.c.contract_id == contract_id).order_by(settings_sheets.c.serial)).scalars().all()
    out: list[str] = []
    for sheet in rows:
        mail = ((sheet or {}).get("contact") or {}).get("mail") if isinstance(sheet, dict) else None
        if isinstance(mail, str) and mail and mail not in out:
            out.append(mail)
    return out


def box_config(sheet: dict[str, Any], *, serial: str, contract_id: str, center_url: str | None) -> dict[str, Any]:
    """What the box needs to come up on its own: its ``settings_sheet`` section and the center link.
    The box merges it into its shipped configuration (which carries the center's CA)."""
    center: dict[str, Any] = {"enabled": True, "serial": serial}
    if center_url:
        center["url"] = center_url.rstrip("/")
    return {"settings_sheet": agent_section(sheet), "center": center}


def box_config_yaml(sheet: dict[str, Any], *, serial: str, contract_id: str, center_url: str | None) -> str:
    cfg = box_config(sheet, serial=serial, contract_id=contract_id, center_url=center_url)
    head = (f"# vcr-agent の設定 (設定シートから生成) / vcr-agent configuration from the settings sheet\n"
            f"# 契約 / contract: {contract_id}  シリアル / serial: {serial}  "
            f"設置日 / install date: {sheet.get('install_date') or '-'}\n"
            f"# 出荷時の設定にマージされます / merged into the box's shipped configuration "
            f"(vcr-agent setup)\n")
    return head + yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False)


def provision(db: Database, serial: str, *, code: str | None = None, auth: DeviceAuth | None = None,
              center_url: str | None = None) -> dict[str, Any]:
    """The box's sheet and configuration for ``POST /api/v1/provision`` (auth: module docstring)."""
    refused = CenterError(403, "invalid_code", "the activation code and serial do not match a settings sheet; "
                                               "check both, or ask the operations center")
    now = utcnow()
    with db.write() as conn:
        row = conn.execute(select(settings_sheets).where(settings_sheets.c.serial == serial)).mappings().first()
        if auth is not None:
            if row is None or auth.serial != serial or auth.contract_id != row["contract_id"]:
                raise refused
        else:
            c = conn.execute(select(activation_codes).where(
                activation_codes.c.code_hash == sha256(normalize_code(code or "")))).mappings().first()
            if row is None or c is None or c["serial"] != serial or c["contract_id"] != row["contract_id"]:
                raise refused
            if c["used_at"] is None:
                if c["expires_at"] is not None and c["expires_at"] < now:
                    raise refused
            else:
                dev = conn.execute(select(devices.c.serial, devices.c.revoked_at).where(
                    devices.c.device_id == c["used_by"])).first()
                if dev is None or dev[0] != serial or dev[1] is not None:
                    raise refused
        conn.execute(update(settings_sheets).where(settings_sheets.c.serial == serial).values(
            fetched_at=now, fetches=settings_sheets.c.fetches + 1))
    sheet = row["sheet"]
    return {
        "serial": serial,
        "contract_id": row["contract_id"],
        "sheet": sheet,
        "config": box_config(sheet, serial=serial, contract_id=row["contract_id"], center_url=center_url),
        "server_time": iso(now),
    }


def quickstart_text(serial: str, contract_id: str, sheet: dict[str, Any], code: str | None) -> str:
    """The box's quick-start guide (クイックスタートガイド), Japanese with English, with its activation code."""
    ipv6 = f"\n  IPv6: {sheet['management_ipv6']} (ゲートウェイ / gateway {sheet['gateway_ipv6']})" \
        if sheet.get("management_ipv6") else ""
    return f"""VCR116w クイックスタートガイド / quick-start guide

シリアル番号 / serial number:      {serial}
契約番号 / contract:               {contract_id}
アクティベーションコード / activation code: {code or '(発行済み / issued earlier)'}
  (この機器専用・一度だけ使えます / for this box only, single use)

設定シートの内容 / your settings sheet:
  設置場所 / address: {sheet.get('install_address', '')}
  設置日 / install date: {sheet.get('install_date', '')}
  UTM の IP / the box's IP: {sheet.get('management_ip', '')}  ゲートウェイ / gateway: {sheet.get('gateway', '')}
  DNS: {', '.join(sheet.get('dns') or [])}{ipv6}

1. ルーターの LAN ポートと UTM の WAN ポート、UTM の LAN ポートとオフィスのスイッチをつなぎます。
   Connect the router's LAN port to the box's WAN port, and the box's LAN port to the office switch.
   (逆につないでも UTM が自動で判別します / the box also works the other way round: it detects the sides)
2. 電源を入れ、画面の指示に従って上のアクティベーションコードを入力します (vcr-agent setup)。
   Power the box on and type the activation code above when asked (vcr-agent setup).
3. 「設定は完了しました」と表示されたら、PC からインターネットが使えることを確認してください。
   When it says "setup finished", check that the PCs reach the internet.
4. 運用センターが設置を遠隔で確認し、「設置確認完了」をお知らせします。
   The operations center confirms the installation remotely and tells you "installation confirmed".

お困りの際はサポートデスクへ (平日 9:00-17:00、メールは 24 時間) /
Support desk: weekdays 9:00-17:00, mail 24/7.
"""


def problems_json(exc: SheetError) -> list[dict[str, str]]:
    return [p.as_dict() for p in exc.problems]


def parse_sheet_text(text: str) -> Any:
    """A sheet file: YAML (JSON is YAML too). Dates stay text."""
    data = yaml.safe_load(text)
    if isinstance(data, dict) and isinstance(data.get("install_date"), dt.date):
        data["install_date"] = data["install_date"].isoformat()
    return data
