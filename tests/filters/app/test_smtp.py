"""Tests for filters.app.smtp: envelope, pipelining, DATA/BDAT reassembly, STARTTLS, limits, fuzzing."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from filters.app import smtp
from filters.app.events import SmtpEvent
from filters.app.smtp import SmtpMessageEvent, SmtpParser, looks_like_smtp

FUZZ = settings(max_examples=1000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

C, S = True, False
BODY = b"From: a@x.org\r\nSubject: hi\r\n\r\n..starts with a dot\r\n.\r\nline\r\n"
DATA_BYTES = b"From: a@x.org\r\nSubject: hi\r\n\r\n...starts with a dot\r\n..\r\nline\r\n.\r\n"
SESSION: list[tuple[bool, bytes]] = [
    (S, b"220 mx.example ESMTP ready\r\n"),
    (C, b"EHLO client.example\r\n"),
    (S, b"250-mx.example\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 SIZE 1000000\r\n"),
    (C, b"MAIL FROM:<a@x.org> SIZE=100\r\nRCPT TO:<b@y.org>\r\nRCPT TO: <c@y.org> NOTIFY=NEVER\r\nDATA\r\n"),
    (S, b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.1.5 ok\r\n354 go ahead\r\n"),
    (C, DATA_BYTES),
    (S, b"250 2.0.0 queued\r\n"),
    (C, b"QUIT\r\n"),
    (S, b"221 bye\r\n"),
]


def run(steps: list[tuple[bool, bytes]], parser: SmtpParser | None = None, size: int = 0) -> tuple[SmtpParser, list[SmtpEvent]]:
    p = parser or SmtpParser()
    out: list[SmtpEvent] = []
    for to_server, data in steps:
        step = size or len(data) or 1
        for i in range(0, len(data), step):
            out += p.feed(to_server, data[i : i + step])
    return p, out


def summary(events: list[SmtpEvent]) -> list[tuple]:
    return [(e.command, e.argument, e.mail_from, e.rcpt_to, e.message, e.message_done) for e in events]


def messages(events: list[SmtpEvent]) -> list[SmtpMessageEvent]:
    return [e for e in events if e.message_done]


# --- session ---------------------------------------------------------------------------------------


def test_full_session() -> None:
    p, events = run(SESSION)
    assert [e.command for e in events] == [b"EHLO", b"MAIL", b"RCPT", b"RCPT", b"DATA", b"DATA", b"QUIT"]
    ehlo, mail, rcpt1, rcpt2, data, done, quit_ = events
    assert ehlo.helo == b"client.example" and ehlo.argument == b"client.example"
    assert mail.mail_from == b"a@x.org" and mail.argument == b"FROM:<a@x.org> SIZE=100"
    assert rcpt1.rcpt_to == (b"b@y.org",) and rcpt2.rcpt_to == (b"b@y.org", b"c@y.org")
    assert not data.message_done
    assert isinstance(done, SmtpMessageEvent) and done.message_done and not done.message_truncated
    assert done.message == BODY and done.message_size == len(BODY)
    assert done.helo == b"client.example" and done.mail_from == b"a@x.org" and done.rcpt_to == (b"b@y.org", b"c@y.org")
    assert quit_.mail_from == b"" and quit_.rcpt_to == ()  # the transaction ended with the message
    assert all(e.to_server for e in events)
    assert not p.encrypted and p.anomalies == [] and not p._pending


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64])
def test_session_in_small_pieces(size: int) -> None:
    _, reference = run(SESSION)
    _, events = run(SESSION, size=size)
    assert summary(events) == summary(reference)


def test_data_split_at_every_byte() -> None:
    head, tail = SESSION[:5], SESSION[6:]
    _, reference = run(SESSION)
    for cut in range(len(DATA_BYTES) + 1):
        p, events = run(head)
        events += p.feed(C, DATA_BYTES[:cut]) + p.feed(C, DATA_BYTES[cut:])
        _, rest = run(tail, p)
        assert summary(events + rest) == summary(reference), cut


def test_commands_are_case_insensitive_and_paths_lenient() -> None:
    _, events = run([(S, b"220 x\r\n"), (C, b"helo relay\r\nmail from:bob@x.org\r\nrcpt to:<carol@y.org\r\n")])
    assert [e.command for e in events] == [b"HELO", b"MAIL", b"RCPT"]
    assert events[1].mail_from == b"bob@x.org" and events[2].rcpt_to == (b"carol@y.org",)


def test_bare_lf_lines() -> None:
    steps = [(S, b"220 x\n"), (C, b"EHLO a\nMAIL FROM:<a@b>\nRCPT TO:<c@d>\nDATA\n"), (S, b"250 a\n250 b\n250 c\n354 d\n")]
    _, events = run(steps)
    assert [e.command for e in events] == [b"EHLO", b"MAIL", b"RCPT", b"DATA"]


def test_rset_clears_envelope() -> None:
    _, events = run([(S, b"220 x\r\n"), (C, b"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRSET\r\nNOOP\r\n")])
    assert events[-1].command == b"NOOP" and events[-1].mail_from == b"" and events[-1].rcpt_to == ()
    assert events[-1].helo == b"a"


def test_two_messages_on_one_connection() -> None:
    msg = [
        (C, b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"),
        (S, b"250 a\r\n250 b\r\n354 c\r\n"),
        (C, b"one\r\n.\r\n"),
        (S, b"250 ok\r\n"),
    ]
    _, events = run(SESSION[:3] + msg + [(C, msg[0][1].replace(b"c@d", b"e@f"))] + msg[1:])
    done = messages(events)
    assert [m.message for m in done] == [b"one\r\n", b"one\r\n"]
    assert [m.rcpt_to for m in done] == [(b"c@d",), (b"e@f",)]


def test_empty_message() -> None:
    _, events = run(SESSION[:5] + [(C, b".\r\n")])
    [done] = messages(events)
    assert done.message == b"" and done.message_size == 0


# --- DATA edge cases -------------------------------------------------------------------------------


def test_terminator_needs_crlf_on_both_sides() -> None:
    body = b"a\n.\nb\r\n.\nc\n.\r\nd\r\n.\r\n"
    p, events = run(SESSION[:5] + [(C, body)])
    [done] = messages(events)
    assert done.message == b"a\n\nb\r\n\nc\n\r\nd\r\n"  # every bare-LF "dot line" is content
    assert "smtp.bare_lf_dot" in p.anomalies  # SMTP smuggling attempt


def test_smuggled_commands_stay_in_the_message() -> None:
    smuggled = b"Subject: x\r\n\r\nhello\n.\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nspoof\r\n.\r\n"
    p, events = run(SESSION[:5] + [(C, smuggled)])
    [done] = messages(events)
    assert b"MAIL FROM:<evil@x>" in done.message and done.mail_from == b"a@x.org"
    assert "smtp.bare_lf_dot" in p.anomalies


def test_data_rejected_keeps_command_mode() -> None:
    steps = SESSION[:3] + [
        (C, b"MAIL FROM:<a@b>\r\nDATA\r\n"),
        (S, b"250 ok\r\n554 no valid recipients\r\n"),
        (C, b"RSET\r\nQUIT\r\n"),
    ]
    _, events = run(steps)
    assert [e.command for e in events][-2:] == [b"RSET", b"QUIT"] and not messages(events)


def test_client_not_waiting_for_354() -> None:
    early = b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: early\r\n\r\nbody\r\n.\r\nQUIT\r\n"
    p, events = run(SESSION[:3] + [(C, early)])
    assert [e.command for e in events][-1] == b"DATA" and not messages(events)  # held until the reply
    later = p.feed(S, b"250 a\r\n250 b\r\n354 c\r\n")
    assert [e.command for e in later] == [b"DATA", b"QUIT"]
    assert later[0].message == b"Subject: early\r\n\r\nbody\r\n"


def test_client_not_waiting_and_data_rejected_replays_commands() -> None:
    p, events = run(SESSION[:3] + [(C, b"MAIL FROM:<a@b>\r\nDATA\r\nNOOP\r\n")])
    later = p.feed(S, b"250 a\r\n503 need RCPT\r\n")
    assert [e.command for e in later] == [b"NOOP"] and p._mode is smtp._Mode.COMMAND


def test_held_bytes_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smtp, "MAX_HELD", 100)
    p, events = run(SESSION[:3] + [(C, b"MAIL FROM:<a@b>\r\nDATA\r\n" + b"x" * 150 + b"\r\n.\r\n")])
    [done] = messages(events)
    assert done.message == b"x" * 150 + b"\r\n" and "smtp.no_reply_to_data" in p.anomalies


def test_message_size_cap() -> None:
    p = SmtpParser(max_message=100)
    body = b"".join(b"line %03d of a long message\r\n" % i for i in range(50))
    _, events = run(SESSION[:5] + [(C, body + b".\r\n")], p)
    [done] = messages(events)
    assert done.message == body[:100] and done.message_truncated and done.message_size == len(body)
    assert p.overflow_bytes == len(body) - 100 and "smtp.message_too_large" in p.anomalies


def test_large_message_is_fast() -> None:
    body = (b"x" * 998 + b"\r\n") * 2000 + (b".dot\r\n" * 1000)
    _, events = run(SESSION[:5] + [(C, body + b".\r\n")], size=1400)
    [done] = messages(events)
    assert len(done.message) == len(body) - 1000


# --- BDAT ------------------------------------------------------------------------------------------


def test_bdat_chunks() -> None:
    chunk1, chunk2 = b"Subject: c\r\n\r\n.no unstuffing\r\n", b"end\r\n.\r\n"
    steps = SESSION[:3] + [
        (C, b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"),
        (C, b"BDAT %d\r\n" % len(chunk1) + chunk1 + b"BDAT %d LAST\r\n" % len(chunk2) + chunk2),
        (S, b"250 a\r\n250 b\r\n250 c\r\n250 d\r\n"),
        (C, b"QUIT\r\n"),
    ]
    for size in (0, 1, 3, 11):
        p, events = run(steps, size=size)
        [done] = messages(events)
        assert done.command == b"BDAT" and done.message == chunk1 + chunk2 and done.rcpt_to == (b"c@d",)
        assert events[-1].command == b"QUIT" and list(p._pending) == [b"QUIT"]


def test_bdat_zero_last_and_bad_size() -> None:
    p, events = run(SESSION[:3] + [(C, b"MAIL FROM:<a@b>\r\nBDAT 3\r\nabcBDAT 0 LAST\r\nBDAT x\r\nNOOP\r\n")])
    [done] = messages(events)
    assert done.message == b"abc" and "smtp.bad_bdat" in p.anomalies
    assert events[-1].command == b"NOOP"


# --- STARTTLS --------------------------------------------------------------------------------------


def test_starttls_accepted_stops_parsing() -> None:
    p, events = run(SESSION[:3] + [(C, b"STARTTLS\r\n"), (S, b"220 2.0.0 go\r\n")])
    assert events[-1].command == b"STARTTLS" and p.encrypted
    assert p.feed(C, b"\x16\x03\x01\x00\x05hello") == [] and p.feed(S, b"garbage\r\n") == []
    assert p.anomalies == []


def test_starttls_refused_continues() -> None:
    p, events = run(SESSION[:3] + [(C, b"STARTTLS\r\n"), (S, b"454 TLS not available\r\n"), (C, b"MAIL FROM:<a@b>\r\n")])
    assert not p.encrypted and events[-1].command == b"MAIL"


def test_starttls_command_injection_is_noted() -> None:
    p, events = run(SESSION[:3] + [(C, b"STARTTLS\r\nMAIL FROM:<evil@x>\r\n"), (S, b"220 go\r\n")])
    assert p.encrypted and "smtp.starttls_injection" in p.anomalies
    assert all(e.command != b"MAIL" for e in events)


# --- AUTH, limits ----------------------------------------------------------------------------------


def test_auth_exchange_is_not_parsed_as_commands() -> None:
    steps = SESSION[:3] + [
        (C, b"AUTH LOGIN\r\n"),
        (S, b"334 VXNlcm5hbWU6\r\n"),
        (C, b"dXNlcg==\r\n"),
        (S, b"334 UGFzc3dvcmQ6\r\n"),
        (C, b"cGFzcw==\r\n"),
        (S, b"235 ok\r\n"),
        (C, b"AUTH PLAIN AGEAYg==\r\n"),
        (S, b"235 ok\r\n"),
        (C, b"MAIL FROM:<a@b>\r\n"),
    ]
    p, events = run(steps)
    assert [(e.command, e.argument) for e in events][1:] == [(b"AUTH", b"LOGIN"), (b"AUTH", b"PLAIN"), (b"MAIL", b"FROM:<a@b>")]
    assert not p._pending or list(p._pending) == [b"MAIL"]


def test_overlong_command_lines_are_counted() -> None:
    long_rcpt = b"RCPT TO:<" + b"a" * 600 + b"@x>\r\n"
    p, events = run(SESSION[:3] + [(C, b"MAIL FROM:<a@b>\r\n" + long_rcpt)])
    assert p.overlong_lines == 1 and "smtp.line_too_long" in p.anomalies
    assert events[-1].rcpt_to == (b"a" * 600 + b"@x",)  # still parsed: servers accept longer lines
    huge = b"NOOP " + b"z" * (smtp.MAX_LINE_BUFFER * 2) + b"\r\nQUIT\r\n"
    _, more = run([(C, huge)], p, size=1000)
    assert [e.command for e in more] == [b"NOOP", b"QUIT"] and len(more[0].argument) < smtp.MAX_LINE_BUFFER
    assert len(p._client_line) == 0 and p.overlong_lines == 2


def test_overlong_reply_lines_are_counted() -> None:
    p, _ = run([(S, b"220 " + b"x" * 600 + b"\r\n")])
    assert p.overlong_lines == 1 and "smtp.reply_too_long" in p.anomalies


def test_recipient_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smtp, "MAX_RCPT", 3)
    rcpts = b"".join(b"RCPT TO:<u%d@x>\r\n" % i for i in range(5))
    p, events = run(SESSION[:3] + [(C, b"MAIL FROM:<a@b>\r\n" + rcpts)])
    assert events[-1].rcpt_to == (b"u0@x", b"u1@x", b"u2@x") and p.rcpt_overflow == 2
    assert "smtp.too_many_recipients" in p.anomalies


def test_pending_replies_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smtp, "MAX_PENDING", 4)
    p, _ = run([(S, b"220 x\r\n"), (C, b"NOOP\r\n" * 10)])
    assert len(p._pending) == 4 and "smtp.too_many_pipelined" in p.anomalies


def test_bad_and_unexpected_replies() -> None:
    p, _ = run([(S, b"220 x\r\n"), (S, b"hello\r\n250 unsolicited\r\n")])
    assert "smtp.bad_reply" in p.anomalies and "smtp.unexpected_reply" in p.anomalies


def test_looks_like_smtp() -> None:
    assert looks_like_smtp(b"220 mx.example ESMTP Postfix\r\n")
    assert looks_like_smtp(b"220-mx.example\r\n", to_server=False)
    assert not looks_like_smtp(b"220 ProFTPD Server ready\r\n")
    assert looks_like_smtp(b"EHLO client\r\n") and looks_like_smtp(b"helo client\r\n", to_server=True)
    assert not looks_like_smtp(b"EHLO client\r\n", to_server=False)
    assert not looks_like_smtp(b"220 mx\r\n", to_server=True)
    assert not looks_like_smtp(b"GET / HTTP/1.1\r\n") and not looks_like_smtp(b"")


# --- fuzzing ---------------------------------------------------------------------------------------

TOKENS = [b"EHLO a\r\n", b"MAIL FROM:<a@b>\r\n", b"RCPT TO:<c@d>\r\n", b"DATA\r\n", b"BDAT 4\r\n", b"BDAT 2 LAST\r\n",
          b"STARTTLS\r\n", b"AUTH LOGIN\r\n", b".\r\n", b"..x\r\n", b"\r\n", b"\n", b".", b"abc", b"354 go\r\n",
          b"250 ok\r\n", b"250-x\r\n", b"220 hi\r\n", b"334 x\r\n", b"554 no\r\n"]


@FUZZ
@given(steps=st.lists(st.tuples(st.booleans(), st.one_of(st.sampled_from(TOKENS), st.binary(max_size=40))), max_size=30))
def test_fuzz_sessions(steps: list[tuple[bool, bytes]]) -> None:
    p = SmtpParser(max_message=200)
    for to_server, data in steps:
        for event in p.feed(to_server, data):
            assert isinstance(event, SmtpEvent)
            assert len(event.message) <= 200
    assert len(p._held) <= smtp.MAX_HELD and len(p._client_line) <= smtp.MAX_LINE_BUFFER


@FUZZ
@given(data=st.binary(max_size=500), cut=st.integers(0, 500))
def test_fuzz_random_bytes(data: bytes, cut: int) -> None:
    p = SmtpParser()
    p.feed(S, b"220 x\r\n")
    p.feed(C, b"DATA\r\n")
    p.feed(S, b"354 go\r\n")
    for piece in (data[:cut], data[cut:]):
        assert isinstance(p.feed(C, piece), list)
        assert isinstance(p.feed(S, piece), list)
