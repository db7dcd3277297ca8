"""The control panel's explanations of the mail engine's alarms, as the engine writes them."""
from __future__ import annotations

from filters.mail.engine import MailSecurity, Session
from opscenter.panel.explain import explain
from tests.filters.mail.samples import nested_virus_mail

SENT = Session(proto="smtp", sent=True, client=("192.0.2.11", 50001), server=("198.51.100.25", 25),
               mail_from="taro@office.example", rcpt_to=("x@customer.example",))
POP3 = Session(proto="pop3", sent=False, client=("192.0.2.12", 50000), server=("198.51.100.25", 110))


def _alarms(session: Session) -> list[dict]:
    e = MailSecurity()
    e.configure({"enabled": True, "box_name": "box"})
    return e.inspect(nested_virus_mail(), session, scan=lambda f: {"status": "FOUND" if f.name else "OK",
                                                                   "virus": "Eicar-Test-Signature"}).alarms


def test_a_pc_sending_a_virus_is_explained_as_a_possibly_infected_pc():
    virus, pc = (explain(a) for a in _alarms(SENT))
    assert virus.engine == "mail" and virus.pc == "192.0.2.11" and "送ろうとした" in virus.what[0]
    assert "送信を拒否しました" in virus.what[0] and "Eicar-Test-Signature" in virus.what[1]
    assert pc.level == "high" and pc.pc == "192.0.2.11" and "感染" in pc.todo[0] and "infected" in pc.todo[1]


def test_a_received_virus_is_explained_as_removed():
    (virus,) = (explain(a) for a in _alarms(POP3))
    assert virus.pc == "192.0.2.12" and "受け取った" in virus.what[0] and "添付ファイルを削除しました" in virus.what[0]
    assert "Fwd: invoice" in virus.what[0] and "removed the attachment" in virus.what[1]
