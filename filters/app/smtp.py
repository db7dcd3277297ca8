"""SMTP parsing for one flow: commands and replies, envelope, DATA/BDAT message reassembly, STARTTLS."""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from enum import Enum

from filters.app.events import SmtpEvent

log = logging.getLogger(__name__)

MAX_COMMAND_LINE = 512  # aiosmtpd's command_size_limit: longer command lines are counted (overlong_lines)
MAX_REPLY_LINE = 512  # RFC 5321 4.5.3.1.5
MAX_LINE_BUFFER = 16384  # a line is cut here, the rest up to LF dropped (servers accept 2-16 KiB commands)
MAX_MESSAGE = 10 * 1024 * 1024  # message bytes kept; the rest is counted in overflow_bytes
MAX_RCPT = 1000  # recipients kept per transaction (Postfix smtpd_recipient_limit)
MAX_PENDING = 256  # pipelined commands awaiting their replies
MAX_HELD = 64 * 1024  # client bytes held while DATA/STARTTLS waits for its reply
MAX_VERB = 16
MAX_ANOMALIES = 32

_LF, _DOT, _CR = 0x0A, 0x2E, 0x0D


@dataclass(frozen=True, slots=True)
class SmtpMessageEvent(SmtpEvent):
    """A complete message (``message_done``): whether it was cut at the size cap and its full size."""

    message_truncated: bool = False
    message_size: int = 0  # message bytes (after dot-unstuffing), kept or not


class _Mode(Enum):
    COMMAND = "command"
    DATA = "data"  # dot-stuffed message text until CRLF.CRLF
    BDAT = "bdat"  # a counted chunk (RFC 3030)


def looks_like_smtp(first_bytes: bytes, to_server: bool | None = None) -> bool:
    """Protocol detection: a server greeting (``220 ``/``220-``, not an FTP banner) or a client EHLO/HELO.

    ``to_server`` restricts the check to one side; None accepts either.
    """
    head = first_bytes[:64]
    if to_server is not True and head[:4] in (b"220 ", b"220-"):
        return b"FTP" not in head.upper()
    return to_server is not False and head[:5].upper() in (b"EHLO ", b"HELO ")


def _path(argument: bytes, keyword: bytes) -> bytes:
    """The address of ``FROM:<a@b> SIZE=1`` / ``TO:<a@b>`` (brackets optional, leniently)."""
    rest = argument
    if rest[: len(keyword)].upper() == keyword:
        rest = rest[len(keyword) :]
    rest = rest.lstrip(b" \t")
    if rest.startswith(b"<"):
        end = rest.find(b">")
        return rest[1:end] if end >= 0 else rest[1:].split(b" ", 1)[0]
    return rest.split(b" ", 1)[0]


class SmtpParser:
    """SMTP for one flow: feed in-order stream bytes per direction, get SmtpEvents.

    Every client command gives an event with the envelope so far; a finished message (DATA ended
    by CRLF.CRLF, or BDAT ... LAST) gives a ``SmtpMessageEvent`` with ``message_done=True``.
    Replies are matched to pipelined commands in order: DATA enters data mode on 354, a 220 reply
    to STARTTLS makes the flow ``encrypted`` (parsing stops). Client bytes sent after DATA or
    STARTTLS before the reply are held until it arrives, so events for them may come out of the
    server-direction ``feed``.
    """

    def __init__(self, *, max_message: int = MAX_MESSAGE) -> None:
        self._max_message = max_message
        self._mode = _Mode.COMMAND
        self._client_line = bytearray()
        self._client_cut = False
        self._server_line = bytearray()
        self._server_cut = False
        self._greeted = False
        self._pending: deque[bytes] = deque()
        self._hold: bytes | None = None  # the command whose reply releases self._held
        self._held = bytearray()
        self._auth_reply = False  # the next client line answers a 334 challenge
        self._encrypted = False
        # data mode
        self._bol = True  # at the beginning of a line
        self._prev_crlf = True  # the line before ended with CRLF
        self._last_cr = False  # the last byte consumed was CR
        self._carry = b""  # undecided bytes at a line start (".", ".\r")
        self._chunk_left = 0
        self._chunk_last = False
        # transaction
        self.helo = b""
        self.mail_from = b""
        self.rcpt_to: list[bytes] = []
        self._message = bytearray()
        self._message_size = 0
        # counters
        self.overlong_lines = 0  # command/reply lines over MAX_COMMAND_LINE/MAX_REPLY_LINE
        self.overflow_bytes = 0  # message bytes beyond max_message
        self.rcpt_overflow = 0  # recipients beyond MAX_RCPT
        self.anomalies: list[str] = []

    @property
    def encrypted(self) -> bool:
        return self._encrypted

    def held_bytes(self) -> int:
        """Bytes held now: partial command/reply lines, client bytes held for a reply, the message
        being received (at most ``max_message``), pipelined commands and recipients."""
        return (len(self._client_line) + len(self._server_line) + len(self._held) + len(self._message)
                + len(self._carry) + 64 * (len(self._pending) + len(self.rcpt_to))
                + sum(map(len, self.rcpt_to)))

    def feed(self, to_server: bool, data: bytes) -> list[SmtpEvent]:
        """Add in-order stream bytes of one direction; return the events they complete. Never raises."""
        out: list[SmtpEvent] = []
        if self._encrypted or not data:
            return out
        try:
            if to_server:
                self._client_bytes(data, out)
            else:
                self._server_bytes(data, out)
        except (ValueError, IndexError) as exc:  # a bug must not kill the flow
            log.warning("smtp parser error: %s", exc)
            self._note("smtp.parser_error")
        return out

    def _note(self, anomaly: str) -> None:
        if anomaly not in self.anomalies and len(self.anomalies) < MAX_ANOMALIES:
            self.anomalies.append(anomaly)

    def _event(self, command: bytes, argument: bytes = b"") -> SmtpEvent:
        return SmtpEvent(
            to_server=True,
            command=command,
            argument=argument,
            helo=self.helo,
            mail_from=self.mail_from,
            rcpt_to=tuple(self.rcpt_to),
        )

    def _reset_transaction(self) -> None:
        self.mail_from = b""
        self.rcpt_to = []
        self._message = bytearray()
        self._message_size = 0

    # --- client side ------------------------------------------------------------------------------

    def _client_bytes(self, data: bytes, out: list[SmtpEvent]) -> None:
        pos, size = 0, len(data)
        while pos < size and not self._encrypted:
            if self._hold is not None:
                pos = self._hold_bytes(data, pos, out)
            elif self._mode is _Mode.DATA:
                pos = self._data_bytes(data, pos, out)
            elif self._mode is _Mode.BDAT:
                pos = self._chunk_bytes(data, pos, out)
            else:
                pos = self._command_bytes(data, pos, out)

    def _hold_bytes(self, data: bytes, pos: int, out: list[SmtpEvent]) -> int:
        """Keep client bytes until the reply to DATA/STARTTLS; past MAX_HELD assume the server went along."""
        take = min(MAX_HELD - len(self._held), len(data) - pos)
        self._held += data[pos : pos + take]
        pos += take
        if pos < len(data):
            command = self._hold or b""
            self._note("smtp.no_reply_to_" + command.decode("ascii").lower())
            self._release(command, 354 if command == b"DATA" else 220, bytes(self._held), out)
        return pos

    def _command_bytes(self, data: bytes, pos: int, out: list[SmtpEvent]) -> int:
        """Take bytes up to and including the next LF into the command line; handle it when complete."""
        newline = data.find(b"\n", pos)
        end = len(data) if newline < 0 else newline
        room = MAX_LINE_BUFFER - len(self._client_line)
        if end - pos > room:
            self._client_cut = True
        self._client_line += data[pos : pos + max(room, 0) if end - pos > room else end]
        if newline < 0:
            return len(data)
        line = bytes(self._client_line)
        self._client_line.clear()
        if self._client_cut or len(line) + 1 > MAX_COMMAND_LINE:
            self.overlong_lines += 1
            self._note("smtp.line_too_long")
        self._client_cut = False
        self._command_line(line.removesuffix(b"\r"), out)
        return newline + 1

    def _expect_reply(self, command: bytes) -> None:
        if len(self._pending) < MAX_PENDING:
            self._pending.append(command)
        else:
            self._note("smtp.too_many_pipelined")

    def _command_line(self, line: bytes, out: list[SmtpEvent]) -> None:
        if self._auth_reply:  # a SASL response (base64): not a command, never logged
            self._auth_reply = False
            self._expect_reply(b"AUTH")
            return
        verb, _, argument = line.lstrip(b" ").partition(b" ")
        verb = verb[:MAX_VERB].upper()
        argument = argument.strip(b" \t")
        self._expect_reply(verb)
        if not verb:
            self._note("smtp.empty_command")
            return
        if verb in (b"EHLO", b"HELO"):
            self.helo = argument.split(b" ", 1)[0]
            self._reset_transaction()
        elif verb == b"MAIL":
            self._reset_transaction()
            self.mail_from = _path(argument, b"FROM:")
        elif verb == b"RCPT":
            self._add_rcpt(_path(argument, b"TO:"))
        elif verb == b"RSET":
            self._reset_transaction()
        elif verb == b"AUTH":
            argument = argument.split(b" ", 1)[0]  # the mechanism only: keep credentials out of events
        elif verb == b"BDAT":
            out.append(self._event(verb, argument))
            self._start_chunk(argument, out)
            return
        out.append(self._event(verb, argument))
        if verb in (b"DATA", b"STARTTLS"):
            self._hold = verb

    def _add_rcpt(self, address: bytes) -> None:
        if len(self.rcpt_to) < MAX_RCPT:
            self.rcpt_to.append(address)
        else:
            self.rcpt_overflow += 1
            self._note("smtp.too_many_recipients")

    def _start_chunk(self, argument: bytes, out: list[SmtpEvent]) -> None:
        size_text, _, rest = argument.partition(b" ")
        if not size_text.isdigit() or len(size_text) > 12:
            self._note("smtp.bad_bdat")  # the server cannot frame it either: stay in command mode
            return
        self._chunk_left = int(size_text)
        self._chunk_last = rest.strip().upper() == b"LAST"
        if self._chunk_left:
            self._mode = _Mode.BDAT
        elif self._chunk_last:
            self._finish_message(b"BDAT", out)

    def _chunk_bytes(self, data: bytes, pos: int, out: list[SmtpEvent]) -> int:
        take = min(self._chunk_left, len(data) - pos)
        self._append(data[pos : pos + take])
        self._chunk_left -= take
        if not self._chunk_left:
            self._mode = _Mode.COMMAND
            if self._chunk_last:
                self._finish_message(b"BDAT", out)
        return pos + take

    def _append(self, piece: bytes) -> None:
        self._message_size += len(piece)
        room = self._max_message - len(self._message)
        if len(piece) > room:
            self.overflow_bytes += len(piece) - max(room, 0)
            self._note("smtp.message_too_large")
            piece = piece[: max(room, 0)]
        self._message += piece

    def _finish_message(self, command: bytes, out: list[SmtpEvent]) -> None:
        out.append(
            SmtpMessageEvent(
                to_server=True,
                command=command,
                helo=self.helo,
                mail_from=self.mail_from,
                rcpt_to=tuple(self.rcpt_to),
                message=bytes(self._message),
                message_done=True,
                message_truncated=self._message_size > len(self._message),
                message_size=self._message_size,
            )
        )
        self._reset_transaction()

    def _data_bytes(self, data: bytes, pos: int, out: list[SmtpEvent]) -> int:
        """Dot-unstuff message text from ``data[pos:]``; on CRLF.CRLF finish the message. Returns the new position."""
        carried = len(self._carry)
        work = self._carry + data[pos:]
        self._carry = b""
        i, size = 0, len(work)
        while i < size:
            if self._bol and work[i] == _DOT:
                if size - i < 2 or (work[i + 1] == _CR and size - i < 3):
                    self._carry = work[i:]  # not enough bytes to tell ".\r\n" from ".x"
                    return len(data)
                if work[i + 1 : i + 3] == b"\r\n":
                    if self._prev_crlf:
                        self._end_of_data(out)
                        return pos + i + 3 - carried
                    self._note("smtp.bare_lf_dot")  # <LF>.<CRLF>: SMTP smuggling attempt
                elif work[i + 1] == _LF:
                    self._note("smtp.bare_lf_dot")
                i += 1  # dot-unstuffing
            hit = work.find(b"\n.", i)
            if hit < 0:
                self._append(work[i:])
                self._track_line_end(work, i, size)
                return len(data)
            self._append(work[i : hit + 1])
            self._prev_crlf = work[hit - 1] == _CR if hit > 0 else self._last_cr
            self._bol = True
            self._last_cr = False
            i = hit + 1
        self._track_line_end(work, i, size)
        return len(data)

    def _track_line_end(self, work: bytes, start: int, size: int) -> None:
        """Line state after consuming ``work[start:size]`` without meeting a dot line."""
        if size <= start:
            return
        last = work[size - 1]
        if last == _LF:
            self._prev_crlf = work[size - 2] == _CR if size >= 2 else self._last_cr
            self._bol = True
        else:
            self._bol = False
        self._last_cr = last == _CR

    def _end_of_data(self, out: list[SmtpEvent]) -> None:
        self._mode = _Mode.COMMAND
        self._bol, self._prev_crlf, self._last_cr = True, True, False
        self._expect_reply(b".")  # the 250 that accepts the message
        self._finish_message(b"DATA", out)

    # --- server side ------------------------------------------------------------------------------

    def _server_bytes(self, data: bytes, out: list[SmtpEvent]) -> None:
        pos, size = 0, len(data)
        while pos < size and not self._encrypted:
            newline = data.find(b"\n", pos)
            end = size if newline < 0 else newline
            room = MAX_LINE_BUFFER - len(self._server_line)
            if end - pos > room:
                self._server_cut = True
            self._server_line += data[pos : pos + room if end - pos > room else end]
            if newline < 0:
                return
            line = bytes(self._server_line).removesuffix(b"\r")
            self._server_line.clear()
            if self._server_cut or len(line) + 2 > MAX_REPLY_LINE:
                self.overlong_lines += 1
                self._note("smtp.reply_too_long")
            self._server_cut = False
            pos = newline + 1
            self._reply_line(line, out)

    def _reply_line(self, line: bytes, out: list[SmtpEvent]) -> None:
        code_text, sep = line[:3], line[3:4]
        if not code_text.isdigit() or sep not in (b"", b" ", b"-"):
            self._note("smtp.bad_reply")
            return
        if sep == b"-":
            return  # continuation of a multi-line reply
        code = int(code_text)
        if not self._greeted:
            self._greeted = True
            return
        if not self._pending:
            self._note("smtp.unexpected_reply")
            return
        command = self._pending.popleft()
        if command == b"AUTH" and code == 334:
            self._auth_reply = True
        elif command == self._hold:
            held = bytes(self._held)
            self._held.clear()
            self._release(command, code, held, out)

    def _release(self, command: bytes | None, code: int, held: bytes, out: list[SmtpEvent]) -> None:
        """The reply to DATA/STARTTLS arrived (or is assumed): switch mode, then parse the held bytes."""
        self._hold = None
        self._held.clear()
        if command == b"STARTTLS" and code == 220:
            if held:
                self._note("smtp.starttls_injection")  # plaintext pipelined after STARTTLS (CVE-2011-0411 class)
            self._encrypted = True
            return
        if command == b"DATA" and code == 354:
            self._mode = _Mode.DATA
            self._bol, self._prev_crlf, self._last_cr, self._carry = True, True, False, b""
        if held:
            self._client_bytes(held, out)
