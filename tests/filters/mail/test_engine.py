"""The mail engine's decisions with the real clamd (and a clamd that is not there)."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from agent.dataplane.clamd import scan as clamd_scan
from filters.engine import ConfigError
from filters.mail.engine import MailSecurity, Session
from tests.filters.mail.samples import EICAR, japanese_mail, nested_virus_mail

POP3 = Session(proto="pop3", sent=False, client=("192.0.2.11", 50000), server=("198.51.100.25", 110))
SMTP_OUT = Session(proto="smtp", sent=True, client=("192.0.2.11", 50001), server=("198.51.100.25", 25),
                   mail_from="taro@office.example", rcpt_to=("x@customer.example",))


def engine(**section: Any) -> MailSecurity:
    e = MailSecurity()
    e.configure({"enabled": True, "box_name": "box", **section})
    return e


def scanner(clamd: Any):
    return lambda f: clamd_scan({"socket": clamd.socket, "data": f.data, "timeout": 10})


def test_tls_mail_ports_count_as_uninspected():
    e = engine()
    for port in (993, 995, 465, 443, 110):
        e.on_flow_start(SimpleNamespace(proto=6, server_port=port), None)
    e.on_flow_start(SimpleNamespace(proto=17, server_port=993), None)
    assert e.counters == {"mail.uninspected": 3, "mail.uninspected.tls_port": 3}


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError) as err:
        engine(smtp_ports="25")
    assert err.value.key == "smtp_ports"
    with pytest.raises(ConfigError) as err:
        engine(max_mesage=1)
    assert err.value.key == "max_mesage" and "unknown key" in str(err.value)


def test_virus_outcomes_by_protocol_and_monitor_only(clamd: Any):
    raw = nested_virus_mail()
    out = engine().inspect(raw, SMTP_OUT, scan=scanner(clamd))
    assert out.action == "reject" and out.reply.startswith("554 5.7.1 ") and "Eicar-Test-Signature" in out.reply
    assert {a["alert"]["signature_id"] for a in out.alarms} == {9_510_001, 9_510_002}
    out = engine().inspect(raw, POP3, scan=scanner(clamd))
    assert out.action == "strip" and EICAR not in out.data
    watch = engine(monitor_only=True)
    out = watch.inspect(raw, POP3, scan=scanner(clamd))
    assert out.action == "pass" and out.data == raw and out.alarms[0]["alert"]["action"] == "allowed"
    assert engine().inspect(japanese_mail(), POP3, scan=scanner(clamd)).action == "pass"


def test_scanner_down_or_message_too_large_passes_with_an_alarm(tmp_path):
    down = lambda f: clamd_scan({"socket": str(tmp_path / "no-clamd.sock"), "data": f.data, "timeout": 1})  # noqa: E731
    raw = nested_virus_mail()
    out = engine().inspect(raw, POP3, scan=down)
    assert out.action == "pass" and out.data == raw
    assert out.alarms and all(a["av"]["reason"] == "scanner_unavailable" for a in out.alarms)
    out = engine(max_message=1024).inspect(raw + b"x" * 2048, POP3, scan=down)
    assert out.action == "pass" and out.alarms[0]["av"]["reason"] == "too_large"
