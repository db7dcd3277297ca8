from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from filters.app import imap, pop3


def test_pop3_multiline_and_dot_stuffing_round_trip():
    assert pop3.multiline(*pop3.command(b"RETR 1\r\n")) and pop3.multiline(*pop3.command(b"list\r\n"))
    assert not pop3.multiline(*pop3.command(b"LIST 1\r\n")) and not pop3.multiline(*pop3.command(b"DELE 1\r\n"))
    message = b"Subject: x\r\n\r\n.hidden\r\n..two\r\nend\r\n"
    stuffed = pop3.stuff(message)
    assert stuffed == b"Subject: x\r\n\r\n..hidden\r\n...two\r\nend\r\n"
    assert pop3.unstuff(stuffed) == message
    assert pop3.ok_line(b"+OK 120 octets\r\n", 99) == b"+OK 99 octets\r\n"
    assert pop3.ok_line(b"+OK message follows\r\n", 99) == b"+OK message follows\r\n"


def test_imap_reader_cuts_units_with_literals_at_any_split():
    wire = (b"* 1 FETCH (UID 7 BODY[] {11}\r\nhello\r\nworl FLAGS (\\Seen))\r\n"
            b"* 2 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {5}\r\nSub\r\n)\r\na1 OK done\r\n")
    for step in (1, 3, 7, len(wire)):
        reader, units = imap.ResponseReader(1 << 20), []
        for i in range(0, len(wire), step):
            units += [u for kind, u in reader.feed(wire[i:i + step]) if kind == "unit"]
        a, b = wire.index(b"* 2"), wire.index(b"a1 OK")
        assert [u.encode() for u in units] == [wire[:a], wire[a:b], wire[b:]], step
    first = units[0]
    assert first.segments[0][1] == b"hello\r\nworl"
    assert imap.literal_kind(first.segments[0][0]) == "message"
    assert imap.literal_kind(units[1].segments[0][0]) == "header"
    assert imap.literal_kind(b"* 1 FETCH (BODY[2] {5}\r\n") == "section"
    assert imap.literal_kind(b"* 1 FETCH (BODY[]<0> {5}\r\n") == "partial"
    assert imap.literal_kind(b"* 1 FETCH (RFC822 {5}\r\n") == "message"
    assert imap.with_literal(b"* 1 FETCH (BODY[] {11}\r\n", b"abc") == b"* 1 FETCH (BODY[] {3}\r\n"


def test_imap_oversize_literal_passes_raw():
    reader = imap.ResponseReader(4)
    out = reader.feed(b"* 1 FETCH (BODY[] {6}\r\nabcdef)\r\n")
    assert [k for k, _ in out] == ["raw", "oversize", "raw", "unit"]
    assert b"".join(v for k, v in out if k == "raw") + out[-1][1].encode() == b"* 1 FETCH (BODY[] {6}\r\nabcdef)\r\n"


def test_imap_command_scanner_skips_append_literals():
    sc = imap.CommandScanner()
    sc.feed(b"a1 APPEND INBOX {20+}\r\nb2 STARTTLS\r\nxxxxxxx\r\n")
    assert sc.starttls_tag is None
    sc.feed(b"a3 STARTTLS\r\n")
    assert sc.starttls_tag == b"a3"


@given(st.lists(st.binary(max_size=40), max_size=30), st.integers(1, 64))
def test_imap_reader_passes_every_byte_on_once_whatever_the_input(pieces: list[bytes], step: int):
    wire = b"".join(pieces)
    reader, out = imap.ResponseReader(32), bytearray()
    for i in range(0, len(wire), step):
        for kind, item in reader.feed(wire[i:i + step]):
            if kind == "raw":
                out += item
            elif kind == "unit":
                out += item.encode()
    pending = reader._unit.encode() + (reader._text if reader._need >= 0 else b"") + bytes(reader._buf)
    assert bytes(out) + pending == wire


@given(st.binary(max_size=300))
def test_pop3_stuffing_round_trips_and_never_ends_early(body: bytes):
    message = body.replace(b"\r", b"").replace(b"\n", b"\r\n")
    stuffed = pop3.stuff(message)
    assert b"\r\n.\r\n" not in b"\r\n" + stuffed and pop3.unstuff(stuffed) == (message if message.endswith(b"\n") or not message else message + b"\r\n")


def test_imap_partial_fetch_of_a_whole_message_is_rewritten_and_remembered_by_tag():
    rw = imap.CommandRewriter()
    out = rw.rewrite(b"a1 UID FETCH 7 (UID RFC822.SIZE BODY.PEEK[]<65536.65536>)\r\na2 FETCH 1 (BODY[1]<0.10>)\r\n")
    assert out == b"a1 UID FETCH 7 (UID RFC822.SIZE BODY.PEEK[])\r\na2 FETCH 1 (BODY[1]<0.10>)\r\n"
    assert rw.partial == {b"a1": (65536, 65536)} and rw.current() == (65536, 65536)
    assert rw.rewrite(b"a3 APPEND INBOX {40+}\r\n") == b"a3 APPEND INBOX {40+}\r\n"
    body = b"a9 FETCH 1 (BODY.PEEK[]<0.1>)\r\n"
    body += b"x" * (40 - len(body))  # the 40 bytes of literal data are never rewritten
    assert rw.rewrite(body) == body and b"a9" not in rw.partial
    assert rw.rewrite(b"a4 FETCH 2 (BODY[]<0.") == b"" and rw.rewrite(b"5>)\r\n") == b"a4 FETCH 2 (BODY[])\r\n"
    rw.done(b"a1")
    assert rw.current() == (0, 5)
    assert imap.as_partial(b"* 2 FETCH (BODY[] {99}\r\n", 0) == b"* 2 FETCH (BODY[]<0> {99}\r\n"
