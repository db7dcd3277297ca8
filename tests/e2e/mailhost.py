"""The lab's mail server as a module fixture for the mail e2e tests (lab/mailserver.py), the agent
with its mail proxy, and the PC's client (lab/mailclient.py)."""
from __future__ import annotations

import os
import time
from typing import Any, Iterator

import pytest

from lab import dovecot as lab_dovecot
from lab import mailserver
from lab.agentrun import LabAgent
from lab.mailserver import MAIL_IP  # noqa: F401 (re-exported for the tests)
from lab.netns import Lab


@pytest.fixture(scope="module")
def mailhost(office: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, lab_dovecot.Dovecot]]:
    reason = mailserver.unavailable_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"MAIL E2E CANNOT RUN IN CI: {reason}")
        pytest.skip(f"MAIL E2E SKIPPED: {reason}")
    server = mailserver.start_mail_server(office, tmp_path_factory.mktemp("mailhost"))
    try:
        office.start_tcp_listener("mail", 995)  # a TLS port: the box cannot read it
        yield server.postfix, server.dovecot
    finally:
        server.stop()


@pytest.fixture(scope="module")
def mail_overrides() -> dict[str, Any]:
    """More LabAgent overrides for ``mail_agent`` (a module overrides this fixture, e.g. to add the anti-spam)."""
    return {}


@pytest.fixture(scope="module")
def mail_agent(office: Lab, clamd: Any, mailhost: Any, mail_overrides: dict[str, Any],
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabAgent]:
    """The agent with the mail proxy (clamd known, the web antivirus off), once its REDIRECTs are in."""
    overrides = {
        "engines.av": {"enabled": False, "clamd_socket": clamd.socket, "database": str(clamd.database)},
        "engines.mail": {"enabled": True, "box_name": "vcr-lab-box"},
        **mail_overrides,
    }
    a = LabAgent(office, tmp_path_factory.mktemp("agent"), overrides=overrides)
    with a.running():
        deadline = time.monotonic() + 10
        while not ((a.status() or {}).get("mail_proxy") or {}).get("redirect") and time.monotonic() < deadline:
            time.sleep(0.2)
        yield a


def client(office: Lab, *args: str, host: str = "pc1") -> dict[str, Any]:
    return mailserver.client(office, *args, host=host)


def empty_mailbox(dc: lab_dovecot.Dovecot) -> None:
    for sub in ("new", "cur"):
        d = dc.maildir / sub
        if d.is_dir():
            for p in d.iterdir():
                p.unlink()
