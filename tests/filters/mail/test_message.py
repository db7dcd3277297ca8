from __future__ import annotations

import email
import email.policy
import hashlib

from filters.mail import message as mime
from tests.filters.mail.samples import EICAR, japanese_mail, nested_virus_mail, sjis_raw_name_mail


def test_japanese_names_decode_from_rfc2231_rfc2047_and_raw_shift_jis():
    for raw in (japanese_mail(rfc2231=True), japanese_mail(rfc2231=False)):
        msg = mime.parse(raw)
        names = [p.name for p in mime.parts(msg)]
        assert names == ["", "見積書.pdf"]
        assert mime.facts(msg).subject == "お見積りの件"
    msg = mime.parse(sjis_raw_name_mail())
    assert [p.name for p in mime.parts(msg)] == ["", "請求書.com"]


def test_each_part_becomes_a_file_event_inside_attached_messages_decoded():
    files = mime.file_events(mime.parse(nested_virus_mail()), proto="pop3", to_server=False)
    by_name = {f.name.decode(): f for _, f in files}
    assert set(by_name) == {"", "invoice.com"} and len(files) == 3
    eicar = by_name["invoice.com"]
    assert eicar.data == EICAR and eicar.sha256 == hashlib.sha256(EICAR).hexdigest() and eicar.proto == "pop3"
    assert not eicar.to_server


def test_strip_replaces_only_the_infected_part_with_a_bilingual_notice():
    raw = nested_virus_mail()
    msg = mime.parse(raw)
    bad = next(p for p in mime.parts(msg) if p.name == "invoice.com")
    out = mime.strip_infected(raw, {bad.path: ("invoice.com", "Eicar-Test-Signature")}, "vcr-box")
    assert EICAR not in out and b"\r\n" in out and b"\n" not in out.replace(b"\r\n", b"")
    parsed = email.message_from_bytes(out, policy=email.policy.default)
    texts = [p.get_content() for p in parsed.walk() if p.get_content_type() == "text/plain"]
    notice = next(t for t in texts if "Eicar" in t)
    assert "ウイルス" in notice and "was removed" in notice and "invoice.com" in notice and "vcr-box" in notice
    assert "転送します。" in texts and "see attached" in texts  # the rest is kept
    assert parsed["Subject"] == "Fwd: invoice"


def test_strip_of_a_single_part_message_keeps_its_headers():
    raw = b"From: a@b.example\r\nSubject: x\r\nContent-Type: application/octet-stream\r\n\r\n" + EICAR + b"\r\n"
    out = mime.strip_infected(raw, {"": ("", "Eicar-Test-Signature")}, "box")
    parsed = email.message_from_bytes(out, policy=email.policy.default)
    assert parsed["Subject"] == "x" and "ウイルス" in parsed.get_content() and EICAR not in out


def test_spam_tag_changes_only_the_header_block():
    raw = japanese_mail()
    out = mime.tag_spam(raw, "[迷惑メール]", (("X-Spam-Flag", "YES"), ("X-Spam-Score", "12.5")))
    head, body = out.split(b"\r\n\r\n", 1)
    assert raw.split(b"\r\n\r\n", 1)[1] == body
    parsed = email.message_from_bytes(out, policy=email.policy.default)
    assert parsed["Subject"] == "[迷惑メール] お見積りの件" and parsed["X-Spam-Flag"] == "YES"
    plain = mime.tag_spam(b"Subject: hello\r\n\r\nbody\r\n", "[SPAM]", ())
    assert plain == b"Subject: [SPAM] hello\r\n\r\nbody\r\n"
    none = mime.tag_spam(b"From: a@b\n\nbody\n", "[SPAM]", ())
    assert email.message_from_bytes(none)["Subject"] == "[SPAM]" and none.endswith(b"\n\nbody\n")


def test_hostile_input_never_raises():
    for raw in (b"", b"\xff" * 100, b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n" * 50,
                b"Content-Type: multipart/mixed\r\n\r\n", b"Content-Disposition: attachment; filename*0*=bogus''%ff%fe\r\n\r\nx"):
        msg = mime.parse(raw)
        mime.file_events(msg, proto="smtp", to_server=True)
        mime.facts(msg)


def test_the_fallback_notice_message_keeps_the_headers_and_drops_the_content():
    raw = nested_virus_mail()
    out = mime.notice_message(raw, ("invoice.com", "Eicar-Test-Signature"), "box")
    parsed = email.message_from_bytes(out, policy=email.policy.default)
    assert parsed["Subject"] == "Fwd: invoice" and parsed["Message-ID"] == "<fwd-1@customer.example>"
    assert parsed.get_content_type() == "text/plain" and "ウイルス" in parsed.get_content() and EICAR not in out
    assert b"multipart" not in out
