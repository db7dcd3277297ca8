"""Notification preferences (通知設定) of the customer's contract: which mails (severe alarms grouped,
box offline, back online), the grouping window, when a box counts as offline, and the recipients
(validated mail addresses; none: the contact mail of the settings sheets). opscenter/notify.py."""
from __future__ import annotations

import re

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from filters.settingsheet import MAIL_RE
from opscenter import notify
from opscenter.panel.web import Auth, NavItem, auth, kit_of

router = APIRouter()
NAV = [NavItem("/notifications", "nav.notifications", 47)]
WINDOW_MIN = (1, 1440)  # notify.set_prefs: 10 s .. 1 day
OFFLINE_MIN = (1, 7 * 1440)  # 1 minute .. 7 days
MAX_RECIPIENTS = 20


def _page(request: Request, a: Auth, status: int = 200, form: dict | None = None,
          errors: dict | None = None) -> Response:
    kit = kit_of(request)
    prefs = notify.get_prefs(kit.db, a.contract_id or "", kit.settings)
    if form is None:
        form = {"enabled": prefs["enabled"], "kinds": prefs["kinds"], "window": str(max(1, prefs["window_s"] // 60)),
                "offline": str(max(1, prefs["offline_after_s"] // 60)), "recipients": "\n".join(prefs["recipients"])}
    return kit.render(request, "customer/notifications.html", status, prefs=prefs, form=form, errors=errors or {},
                      kinds=notify.KINDS, effective=notify.recipients_of(kit.db, a.contract_id or "", prefs))


@router.get("/notifications")
def notifications_page(request: Request, a: Auth = Depends(auth)) -> Response:
    return _page(request, a)


def _minutes(text: str, lo: int, hi: int) -> int | None:
    if not re.fullmatch(r"\d{1,6}", text):
        return None
    n = int(text)
    return n if lo <= n <= hi else None


@router.post("/notifications")
async def save_notifications(request: Request, a: Auth = Depends(auth)) -> Response:
    kit = kit_of(request)
    f = await request.form()
    kinds = [k for k in f.getlist("kinds") if isinstance(k, str)]
    form = {"enabled": f.get("enabled") == "on", "kinds": kinds, "window": str(f.get("window") or "").strip()[:10],
            "offline": str(f.get("offline") or "").strip()[:10], "recipients": str(f.get("recipients") or "")[:6000]}
    errors: dict[str, list[tuple[str, str]]] = {}
    if any(k not in notify.KINDS for k in kinds):
        errors["kinds"] = [("不明な種類です", "unknown kind")]
    window = _minutes(form["window"], *WINDOW_MIN)
    if window is None:
        errors["window"] = [(f"{WINDOW_MIN[0]} から {WINDOW_MIN[1]} までの分数で入力してください",
                             f"minutes from {WINDOW_MIN[0]} to {WINDOW_MIN[1]}")]
    offline = _minutes(form["offline"], *OFFLINE_MIN)
    if offline is None:
        errors["offline"] = [(f"{OFFLINE_MIN[0]} から {OFFLINE_MIN[1]} までの分数で入力してください",
                              f"minutes from {OFFLINE_MIN[0]} to {OFFLINE_MIN[1]}")]
    recipients = [r for r in re.split(r"[\s,;]+", form["recipients"]) if r]
    bad = [r for r in recipients if len(r) > 254 or not MAIL_RE.match(r)]
    if bad:
        errors["recipients"] = [(f"メールアドレスとして正しくありません: {r[:80]}", f"not a valid mail address: {r[:80]}")
                                for r in bad[:5]]
    elif len(set(recipients)) > MAX_RECIPIENTS:
        errors["recipients"] = [(f"宛先は {MAX_RECIPIENTS} 件までです", f"at most {MAX_RECIPIENTS} recipients")]
    if errors:
        return _page(request, a, 400, form=form, errors=errors)
    assert window is not None and offline is not None
    try:
        notify.set_prefs(kit.db, a.contract_id or "", kit.settings, enabled=form["enabled"], kinds=kinds,
                         window_s=window * 60, offline_after_s=offline * 60, recipients=recipients)
    except ValueError as exc:  # the center's own check (should not differ from the one above)
        return _page(request, a, 400, form=form, errors={"_": [(str(exc), "")]})
    return kit.redirect("/notifications", done="saved")
