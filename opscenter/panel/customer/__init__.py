"""The customer control panel: ``/panel/`` on the device listener (customers are on the internet; the
boxes' port 443 is the one an office network always lets out). Accounts of customer administrators,
each bound to one contract (opscenter/panel/accounts.py).

Adding a page: a module with ``router`` (an ``APIRouter`` whose handlers take ``Depends(auth)``) and
``NAV`` (menu entries), listed in ``PAGES``; its templates extend ``base.html`` and its texts are
registered with ``i18n.register``. Every POST is CSRF-checked by the application (web.py).
"""
from __future__ import annotations

from fastapi import FastAPI

from opscenter.db import Database
from opscenter.panel.site import create_site
from opscenter.settings import Settings

PREFIX = "/panel"
COOKIE = "__Host-vcr-panel"
PAGES = ["status", "alarms", "changes", "replacement", "sheet", "notifications", "reports"]


def create_customer_app(settings: Settings, db: Database) -> FastAPI:
    return create_site(settings, db, title="vcr-opscenter control panel", kind="customer", prefix=PREFIX, cookie=COOKIE,
                       title_key="app.panel", package=__name__, pages=PAGES)
