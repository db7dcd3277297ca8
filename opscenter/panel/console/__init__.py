"""The operators' console: ``/console/`` on the operator listener (127.0.0.1:8443 by default), with a
login page and sessions for the operator accounts (``vcr-opscenter operator add``) and their roles
(``admin``, ``operator``: opscenter/panel/accounts.py ROLES, checked on the server for every request).

Adding a page: as for the customer panel (opscenter/panel/customer/__init__.py), in ``PAGES``.
"""
from __future__ import annotations

from fastapi import FastAPI

from opscenter.db import Database
from opscenter.panel.site import create_site
from opscenter.settings import Settings

# Same declarations as the customer panel's (customer/__init__.py): each application names its own.
PREFIX = "/console"
COOKIE = "__Host-vcr-console"
PAGES = ["fleet", "alarms", "sandbox", "changes", "replacements", "sheets", "confirmations", "customers"]


def create_console_app(settings: Settings, db: Database) -> FastAPI:
    return create_site(settings, db, title="vcr-opscenter console", kind="operator", prefix=PREFIX, cookie=COOKIE,
                       title_key="app.console", package=__name__, pages=PAGES)
