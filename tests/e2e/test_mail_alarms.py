"""End to end: mail alarms and the uninspected-mail count reach the operations center (the lab
center over HTTPS): a PC sends a virus through the box (refused), connects to a TLS mail port; the
center gets the alarm with its email/smtp/fileinfo objects and the heartbeat's mail counters."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from lab.agentrun import LabAgent
from lab.netns import Lab
from tests.e2e.mailhost import MAIL_IP, client, mailhost  # noqa: F401 (fixture)
from tests.e2e.test_center import Box, center, health_body  # noqa: F401 (fixture)
from tests.filters.mail.samples import nested_virus_mail
from tests.waiting import wait

pytestmark = pytest.mark.lab


def test_mail_alarm_and_uninspected_count_reach_the_center(office: Lab, center: Any, mailhost: Any, clamd: Any,
                                                           tmp_path: Path):
    box = Box(office, center, tmp_path / "box")
    box.overrides.update({
        "engines.av": {"enabled": False, "clamd_socket": clamd.socket, "database": str(clamd.database)},
        "engines.mail": {"enabled": True, "box_name": "vcr-lab-box"},
    })
    box.agent = LabAgent(office, tmp_path / "box", overrides=box.overrides)
    try:
        box.start()
        device_id = box.activate("C-MAIL-1")
        wait(lambda: ((box.agent.status() or {}).get("mail_proxy") or {}).get("redirect"), 15, "the mail REDIRECT")
        virus = tmp_path / "virus.eml"
        virus.write_bytes(nested_virus_mail())
        (code, reply), = client(office, "smtp", MAIL_IP, "taro@office.example", "hanako@office.example", str(virus))["results"]
        assert code == 554 and "Eicar" in reply
        res = office.exec("pc1", ["python3", "-c", f"import socket; socket.create_connection(('{MAIL_IP}', 995), 5).close()"])
        assert res.returncode == 0, res.stderr
        got = wait(lambda: [a for a in center.alarms(device_id) if (a["signature"] or "").startswith("VCR Mail AV: virus")],
                   60, "the mail virus alarm at the center")
        ev = got[0]["event"]
        assert ev["app_proto"] == "smtp" and ev["src_ip"] == office.hosts["pc1"].ipv4 and ev["dest_port"] == 25
        assert ev["email"]["subject"] == "Fwd: invoice" and ev["fileinfo"]["filename"] == "invoice.com"
        assert ev["smtp"]["rcpt_to"] == ["<hanako@office.example>"] and ev["av"]["virus"].startswith("Eicar")
        assert wait(lambda: [a for a in center.alarms(device_id) if "infected_host" in a["event"]], 60,
                    "the infected-PC alarm at the center")
        body = wait(lambda: (b := health_body(center, device_id))
                    and (b.get("engines", {}).get("mail", {}).get("counters", {}).get("mail.uninspected", 0) >= 1) and b,
                    60, "mail.uninspected in the heartbeat")
        counters = body["engines"]["mail"]["counters"]
        assert counters["mail.infected"] >= 1 and counters["mail.messages"] >= 1
    finally:
        box.stop()
        time.sleep(0.2)
