"""The box's transparent mail proxy: SMTP, POP3 and IMAP on their plaintext ports.

Bridged connections to the mail ports are REDIRECTed (nat PREROUTING, with br_netfilter) to
``engines.mail.listen_port`` on the box; ``SO_ORIGINAL_DST`` gives the real server, which the
proxy connects to from the box's own address. One thread per connection (a second one for the
client-to-server half of IMAP and for a spliced TLS session). The message-level decisions are
the mail engine's (filters/mail/engine.py); here the protocols are spoken:

- SMTP: PIPELINING, CHUNKING and BINARYMIME are taken out of the EHLO reply, so messages come with
  DATA and commands one at a time. The proxy answers DATA with 354 itself, reads the message, has
  it inspected, and only then sends DATA and the message to the server: a refused message gets a
  554 naming the reason and the server gets RSET (nothing was queued); otherwise the server's own
  final reply goes back to the client.
- POP3: the +OK reply to RETR/TOP is read up to its final ``.``, inspected, and sent on (rewritten
  when an attachment was removed or spam tagged: octet count fixed, dot-stuffed again).
- IMAP: server responses are read as units with their literals; a literal holding a whole message
  (BODY[], RFC822, BINARY[]) is inspected and replaced with its new size; a part fetched alone
  (BODY[2]) is scanned as it is and, base64-decoded, as the file; a partial fetch of a whole
  message (``BODY.PEEK[]<0.65536>``, Thunderbird's chunks) is rewritten into a whole fetch and
  answered with the asked range of the inspected message (``mail.partial_fetch``).
- STARTTLS / STLS / COMPRESS: once the server agrees, both sides are spliced unread and the session
  counts in ``mail.uninspected``.

A connection cut in the middle is cut on the other side too, and a message is never sent on half
read: the client never gets a partial message, the server never gets one to deliver (no final
``.``), a POP3 session without QUIT deletes nothing.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import itertools
import logging
import socket
import struct
import threading
import time
from typing import Any, Callable, Mapping

from filters.app import imap, pop3
from filters.app.events import FileEvent
from filters.mail.engine import MailSecurity, Outcome, Session
from filters.mail.message import notice_text

log = logging.getLogger(__name__)

SO_ORIGINAL_DST = 80
MAX_LINE = 16384
EHLO_DROP = (b"PIPELINING", b"CHUNKING", b"BINARYMIME")
MAX_SESSIONS = 256  # sessions at once (a thread each); beyond, a connection is closed at once (counted)
_FLOW_IDS = itertools.count(int(time.time() * 1000) & 0xFFFFFFFFFF)


class Cut(Exception):
    """One side closed or timed out: the session ends."""


def original_dst(sock: socket.socket) -> tuple[str, int]:
    """The address the client connected to before the REDIRECT (``SO_ORIGINAL_DST``, or
    ``IP6T_SO_ORIGINAL_DST`` (the same number) for IPv6)."""
    if sock.family == socket.AF_INET6:
        raw = sock.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)  # sockaddr_in6
        port, addr = struct.unpack_from("!2xH4x16s", raw)
        return socket.inet_ntop(socket.AF_INET6, addr), port
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, addr = struct.unpack_from("!2xH4s", raw)
    return socket.inet_ntoa(addr), port


class Conn:
    """A socket with a read buffer: lines and exact byte counts."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self.sock = sock
        self.buf = bytearray()
        sock.settimeout(timeout)

    def _fill(self) -> None:
        try:
            got = self.sock.recv(65536)
        except OSError as exc:
            raise Cut(str(exc)) from None
        if not got:
            raise Cut("closed")
        self.buf += got

    def readline(self, limit: int = MAX_LINE) -> bytes:
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                line = bytes(self.buf[:nl + 1])
                del self.buf[:nl + 1]
                return line
            if len(self.buf) > limit:  # an overlong line is passed on in pieces
                line = bytes(self.buf)
                self.buf.clear()
                return line
            self._fill()

    def read_dot_block(self, limit: int, *, at_start: bool = True) -> tuple[bytes, bool]:
        """Dot-stuffed lines up to the line ``.`` (SMTP DATA, a POP3 multi-line reply): (the lines
        without it, True), or (what was read, False) once more than ``limit`` bytes came without it
        (the last 5 bytes stay buffered: call again with ``at_start=False`` for the rest).
        Only CRLF.CRLF ends the block (a bare LF before the dot does not: no SMTP smuggling)."""
        start = 0
        while True:
            if at_start and self.buf[:3] == b".\r\n":
                del self.buf[:3]
                return b"", True
            idx = self.buf.find(b"\r\n.\r\n", start)
            if idx >= 0:
                block = bytes(self.buf[:idx + 2])
                del self.buf[:idx + 5]
                return block, True
            if len(self.buf) > limit:
                block = bytes(self.buf[:-5])
                del self.buf[:-5]
                return block, False
            start = max(0, len(self.buf) - 4)
            self._fill()

    def read_some(self) -> bytes:
        if not self.buf:
            self._fill()
        data = bytes(self.buf)
        self.buf.clear()
        return data

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise Cut(str(exc)) from None

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def splice(a: Conn, b: Conn) -> None:
    """Copy both ways unread until either side closes (a TLS session after STARTTLS)."""

    def pump(src: Conn, dst: Conn) -> None:
        try:
            if src.buf:
                dst.send(src.read_some())
            while True:
                dst.send(src.read_some())
        except Cut:
            pass
        for c in (dst, src):
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    t = threading.Thread(target=pump, args=(b, a), daemon=True, name="mail-splice")
    t.start()
    pump(a, b)
    t.join()


class MailProxy:
    """``start()`` listens on ``port`` (default: the engine's ``listen_port``); ``upstream(conn)`` gives
    the real server of an accepted connection (default: ``SO_ORIGINAL_DST``) and ``protocol_of``
    overrides the engine's port map (tests run without the REDIRECT)."""

    def __init__(self, engine: MailSecurity, *, clamd: Mapping[str, Any], emit: Callable[[dict[str, Any]], None],
                 antispam: Any = None, host: str = "0.0.0.0", port: int | None = None,
                 upstream: Callable[[socket.socket], tuple[str, int]] | None = None,
                 protocol_of: Callable[[int], str | None] | None = None, home_net: tuple[str, ...] = ()) -> None:
        self.engine = engine
        self.clamd = dict(clamd)
        self.emit = emit
        self.antispam = antispam
        self.host = host
        self.port = port if port is not None else engine.conf.listen_port
        self.upstream = upstream or original_dst
        self.protocol_of = protocol_of or engine.protocol
        self.home_net = tuple(ipaddress.ip_network(n, strict=False) for n in home_net)
        self.listener: socket.socket | None = None
        self.listener6: socket.socket | None = None  # "::" (IPv6 only) beside "0.0.0.0"
        # Called with (FileEvent, Session) for every part scanned: how other file engines (the sandbox)
        # get mail attachments; a listener must not block (queue the file) and its errors are logged.
        self.file_listeners: list[Callable[[FileEvent, Session], None]] = []
        self._scan_limit = int(self.clamd.get("max_concurrent", 4))
        self._scan_slots = threading.BoundedSemaphore(self._scan_limit)
        self.stopping = threading.Event()
        self.sessions = 0
        self.active = 0
        self._lock = threading.Lock()

    @property
    def counters(self) -> dict[str, int]:
        return self.engine.counters

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.engine.count(key, n)

    def start(self) -> "MailProxy":
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(128)
        self.port = s.getsockname()[1]
        self.listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True, name="mail-proxy").start()
        if self.host == "0.0.0.0" and socket.has_ipv6:
            try:
                s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
                s6.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s6.bind(("::", self.port))
                s6.listen(128)
                self.listener6 = s6
                threading.Thread(target=self._accept, args=(s6,), daemon=True, name="mail-proxy6").start()
            except OSError as exc:
                log.warning("mail proxy: no IPv6 listener (%s): IPv6 mail passes uninspected", exc)
        log.info("mail proxy listening on %s:%d%s", self.host, self.port, " and [::]" if self.listener6 else "")
        return self

    def stop(self) -> None:
        self.stopping.set()
        for listener in (self.listener, self.listener6):
            if listener is not None:
                try:
                    listener.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                listener.close()

    def healthy(self) -> bool:
        return self.listener is not None and not self.stopping.is_set()

    def status(self) -> dict[str, Any]:
        return {"port": self.port, "sessions": self.sessions, "active": self.active, "healthy": self.healthy()}

    def _accept(self, listener: socket.socket) -> None:
        while not self.stopping.is_set():
            try:
                conn, peer = listener.accept()
            except OSError:
                if self.stopping.is_set():
                    return
                time.sleep(0.05)
                continue
            if self.active >= MAX_SESSIONS:
                self.count("mail.proxy_busy")
                conn.close()
                continue
            with self._lock:
                self.active += 1
            threading.Thread(target=self._session, args=(conn, tuple(peer[:2])), daemon=True,
                             name="mail-session").start()

    # -- one connection ------------------------------------------------------------------------------
    def _session(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        with self._lock:
            self.sessions += 1
        client = Conn(sock, self.engine.conf.idle_timeout)
        server: Conn | None = None
        try:
            dst = self.upstream(sock)
            proto = self.protocol_of(dst[1])
            local = sock.getsockname()
            if proto is None or (dst[0] == local[0] and dst[1] == local[1]):
                log.warning("mail proxy: %s:%d asked for %s:%d, not a mail server: closed", *peer, *dst)
                return
            try:
                server = Conn(socket.create_connection(dst, timeout=30), self.engine.conf.idle_timeout)
            except OSError as exc:
                log.info("mail proxy: cannot reach %s:%d for %s: %s", *dst, peer[0], exc)
                return
            sess = Session(proto=proto, sent=False, client=peer, server=dst, flow_id=next(_FLOW_IDS))
            {"smtp": self._smtp, "pop3": self._pop3, "imap": self._imap}[proto](client, server, sess)
        except Cut:
            pass
        except Exception:  # hostile input or a bug: this session ends, the proxy goes on
            log.exception("mail proxy session from %s:%d failed", *peer)
            self.count("mail.proxy_errors")
        finally:
            client.close()
            if server is not None:
                server.close()
            with self._lock:
                self.active -= 1

    def _from_lan(self, ip: str) -> bool:
        if not self.home_net:
            return True
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in n for n in self.home_net)

    # -- inspection ----------------------------------------------------------------------------------
    def _scan(self, file: FileEvent) -> Mapping[str, Any]:
        """clamd INSTREAM; at most ``max_concurrent`` at once, the others wait their turn (within
        ``scan_timeout``): a burst of mail is delayed, not passed unscanned."""
        from agent.dataplane.clamd import ClamdBusy, scan

        timeout = self.engine.conf.scan_timeout
        if not self._scan_slots.acquire(timeout=timeout):
            raise ClamdBusy(self._scan_limit)
        try:
            return scan({**self.clamd, "data": file.data, "timeout": timeout, "max_concurrent": self._scan_limit + 1})
        finally:
            self._scan_slots.release()

    def inspect(self, raw: bytes, sess: Session) -> Outcome:
        spam = self.antispam.check_message if self.antispam is not None else None
        t0 = time.monotonic()
        lan = _packed(sess.client[0]) if sess.sent else b""
        def scan(file: FileEvent) -> Mapping[str, Any]:
            for listener in self.file_listeners:
                try:
                    listener(file, sess)
                except Exception:
                    log.exception("mail file listener failed")
            return self._scan(file)

        out = self.engine.inspect(raw, sess, scan=scan, spam=spam, lan_addr=lan)
        log.debug("mail %s: %d bytes %s in %.1f ms", sess.proto, len(raw), out.action, (time.monotonic() - t0) * 1000)
        for rec in out.alarms:
            self.emit(rec)
        return out

    def _uninspected(self, why: str) -> None:
        self.count("mail.uninspected")
        self.count(f"mail.uninspected.{why}")

    # -- SMTP ----------------------------------------------------------------------------------------
    @staticmethod
    def _reply(server: Conn) -> tuple[int, list[bytes]]:
        lines = []
        while True:
            line = server.readline()
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                code = int(line[:3]) if line[:3].isdigit() else 0
                return code, lines

    @staticmethod
    def _ehlo_filtered(lines: list[bytes]) -> bytes:
        kept = [ln for ln in lines if ln[4:].strip().split(b" ", 1)[0].upper() not in EHLO_DROP]
        out = [ln[:3] + b"-" + ln[4:] for ln in kept[:-1]] + [kept[-1][:3] + b" " + kept[-1][4:]] if kept else lines
        return b"".join(out)

    def _smtp(self, client: Conn, server: Conn, sess: Session) -> None:
        sent = self._from_lan(sess.client[0])
        code, lines = self._reply(server)
        client.send(b"".join(lines))
        helo, mail_from, rcpts = "", "", []
        while True:
            line = client.readline()
            verb = line.strip().split(b" ", 1)[0].upper()
            if verb == b"DATA" and mail_from and rcpts:
                facts = Session(proto="smtp", sent=sent, client=sess.client, server=sess.server, flow_id=sess.flow_id,
                                helo=helo, mail_from=mail_from, rcpt_to=tuple(rcpts))
                self._smtp_data(client, server, facts)
                mail_from, rcpts = "", []
                continue
            if verb == b"BDAT":  # CHUNKING is not offered: a client sending BDAT anyway is refused
                client.send(b"502 5.5.1 BDAT not supported here, use DATA\r\n")
                continue
            server.send(line)
            code, lines = self._reply(server)
            if verb == b"EHLO" and code == 250:
                client.send(self._ehlo_filtered(lines))
            else:
                client.send(b"".join(lines))
            arg = line.strip()[len(verb):].strip()
            if verb in (b"EHLO", b"HELO") and code == 250:
                helo, mail_from, rcpts = arg.decode("utf-8", "replace"), "", []
            elif verb == b"MAIL" and code == 250:
                mail_from, rcpts = _address(arg), []
            elif verb == b"RCPT" and 200 <= code < 300:
                rcpts.append(_address(arg))
            elif verb == b"RSET":
                mail_from, rcpts = "", []
            elif verb == b"STARTTLS" and code == 220:
                self._uninspected("starttls")
                splice(client, server)
                return
            elif verb == b"QUIT" or code == 421:
                return

    def _smtp_data(self, client: Conn, server: Conn, sess: Session) -> None:
        client.send(b"354 End data with <CR><LF>.<CR><LF>\r\n")
        block, complete = client.read_dot_block(self.engine.conf.max_message)
        if not complete:
            self._smtp_stream(client, server, sess, block)
            return
        raw = pop3.unstuff(block)
        out = self.inspect(raw, sess)
        if out.action in ("reject", "tempfail"):  # 554 refused, or 451 (anti-spam down, on_error: tempfail)
            client.send(out.reply.encode("ascii"))
            server.send(b"RSET\r\n")
            self._reply(server)
            return
        server.send(b"DATA\r\n")
        code, lines = self._reply(server)
        if code != 354:  # the server refuses DATA now: its reply is the answer to the message
            client.send(b"".join(lines))
            return
        server.send(pop3.stuff(out.data) + b".\r\n")
        code, lines = self._reply(server)
        client.send(b"".join(lines))

    def _smtp_stream(self, client: Conn, server: Conn, sess: Session, head: bytes) -> None:
        """A message over ``max_message``: passed unscanned (with an alarm), streamed to the server."""
        self.count("mail.not_scanned")
        self.emit(self.engine._not_scanned(sess, "too_large", {"max_message": self.engine.conf.max_message}))
        server.send(b"DATA\r\n")
        code, lines = self._reply(server)
        if code != 354:
            while not client.read_dot_block(1 << 20, at_start=False)[1]:
                pass
            client.send(b"".join(lines))
            return
        server.send(head)
        while True:  # pass on as it comes until CRLF.CRLF
            block, ended = client.read_dot_block(1 << 20, at_start=False)
            server.send(block + (b".\r\n" if ended else b""))
            if ended:
                break
        code, lines = self._reply(server)
        client.send(b"".join(lines))

    # -- POP3 ----------------------------------------------------------------------------------------
    def _pop3(self, client: Conn, server: Conn, sess: Session) -> None:
        client.send(server.readline())
        while True:
            line = client.readline()
            server.send(line)
            verb, arg = pop3.command(line)
            first = server.readline()
            if first.startswith(b"+OK") and pop3.multiline(verb, arg):
                block, ended = server.read_dot_block(self.engine.conf.max_message)
                body = bytearray(block)
                if not ended:  # too large to scan: passed as it comes, counted
                    self.count("mail.not_scanned")
                    self.emit(self.engine._not_scanned(sess, "too_large", {"max_message": self.engine.conf.max_message}))
                    client.send(first + bytes(body))
                    while True:
                        block, ended = server.read_dot_block(1 << 20, at_start=False)
                        client.send(block + (b".\r\n" if ended else b""))
                        if ended:
                            break
                    continue
                if verb in pop3.MESSAGE_COMMANDS:
                    raw = pop3.unstuff(bytes(body))
                    out = self.inspect(raw, sess)
                    if out.action in ("strip", "tag"):
                        body = bytearray(pop3.stuff(out.data))
                        first = pop3.ok_line(first, len(out.data))
                if verb == b"CAPA":
                    body = bytearray(b"".join(ln + b"\n" for ln in bytes(body).split(b"\n")[:-1]
                                              if ln.strip().upper() != b"PIPELINING"))
                client.send(first + bytes(body) + b".\r\n")
                continue
            client.send(first)
            if verb == b"STLS" and first.startswith(b"+OK"):
                self._uninspected("starttls")
                splice(client, server)
                return
            if verb == b"QUIT":
                return

    # -- IMAP ----------------------------------------------------------------------------------------
    def _imap(self, client: Conn, server: Conn, sess: Session) -> None:
        scanner = imap.CommandRewriter()
        blind = threading.Event()
        done = threading.Event()
        cache: dict[bytes, bytes] = {}  # a message's digest -> what the PC gets (chunked fetches ask again and again)

        def upstream() -> None:
            try:
                while True:
                    data = client.read_some()
                    if blind.is_set():
                        if scanner._pending:
                            data = bytes(scanner._pending) + data
                            scanner._pending.clear()
                        server.send(data)
                        continue
                    out = scanner.rewrite(data)
                    if out:
                        server.send(out)
            except Cut:
                pass
            finally:
                done.set()
                try:
                    server.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        t = threading.Thread(target=upstream, daemon=True, name="mail-imap-up")
        t.start()
        reader = imap.ResponseReader(self.engine.conf.max_message)
        try:
            while True:
                data = server.read_some()
                if blind.is_set():
                    client.send(data)
                    continue
                out = bytearray()
                for kind, item in reader.feed(data):
                    if kind == "raw":
                        out += item  # type: ignore[operator]
                    elif kind == "oversize":
                        self.count("mail.not_scanned")
                    else:
                        out += self._imap_unit(item, sess, scanner, cache)  # type: ignore[arg-type]
                        tag_line = item.segments[-1][0]  # type: ignore[union-attr]
                        words = tag_line.split(None, 2)
                        if words and words[0] in scanner.partial:
                            scanner.done(words[0])
                        for tag, why in ((scanner.starttls_tag, "starttls"), (scanner.compress_tag, "compress")):
                            if tag and len(words) >= 2 and words[0] == tag and words[1].upper() == b"OK":
                                self._uninspected(why)
                                blind.set()
                if out:
                    client.send(bytes(out))
                if blind.is_set():
                    rest = reader._buf  # bytes after the OK belong to the TLS / compressed stream
                    if rest:
                        client.send(bytes(rest))
                        rest.clear()
        except Cut:
            pass
        finally:
            try:
                client.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            t.join(5)

    def _imap_unit(self, unit: imap.Unit, sess: Session, rewriter: imap.CommandRewriter | None = None,
                   cache: dict[bytes, bytes] | None = None) -> bytes:
        out = bytearray()
        for text, literal in unit.segments:
            if literal is None:
                out += text
                continue
            kind = imap.literal_kind(text)
            new = literal
            if kind == "message":
                key = hashlib.sha256(literal).digest()
                if cache is not None and key in cache:
                    new = cache[key]
                else:
                    res = self.inspect(literal, sess)
                    if res.action in ("strip", "tag"):
                        new = res.data
                    if cache is not None:
                        while len(cache) >= 2:
                            cache.pop(next(iter(cache)))
                        cache[key] = new
                asked = rewriter.current() if rewriter is not None else None
                if asked is not None:  # the PC asked for a range: the range of what it gets
                    origin, count = asked
                    new = new[origin:origin + count]
                    text = imap.as_partial(text, origin)
                    self.count("mail.partial_fetch")
            elif kind == "section" and len(literal) >= 64:
                new = self._imap_section(literal, sess)
            elif kind == "partial":
                self.count("mail.partial_fetch")
            out += imap.with_literal(text, new) if new is not literal or asked_range(kind, rewriter) else text
            out += new
        return bytes(out)

    def _imap_section(self, literal: bytes, sess: Session) -> bytes:
        """A part fetched alone (as the client got it from BODYSTRUCTURE: still transfer-encoded)."""
        data, encoded = literal, False
        try:
            decoded = base64.b64decode(b"".join(literal.split()), validate=True)
            data, encoded = decoded, True
        except (binascii.Error, ValueError):
            pass
        file = FileEvent(name=b"", data=data, size=len(data), sha256=hashlib.sha256(data).hexdigest(), to_server=False,
                         proto="imap")
        try:
            res = self._scan(file)
        except Exception as exc:
            self.count("mail.not_scanned")
            log.info("mail proxy: part not scanned: %s", exc)
            return literal
        if res.get("status") != "FOUND" or self.engine.conf.monitor_only:
            return literal
        virus = str(res.get("virus") or "")
        self.count("mail.infected")
        self.emit(self.engine._virus(sess, _no_facts(), file, virus))
        text = notice_text("", virus, self.engine.box).encode("utf-8")
        return base64.encodebytes(text).replace(b"\n", b"\r\n") if encoded else text


def asked_range(kind: str, rewriter: imap.CommandRewriter | None) -> bool:
    return kind == "message" and rewriter is not None and rewriter.current() is not None


def _packed(ip: str) -> bytes:
    try:
        return ipaddress.ip_address(ip).packed
    except ValueError:
        return b""


def _no_facts() -> Any:
    from filters.mail.message import MailFacts

    return MailFacts()


def _address(arg: bytes) -> str:
    """``FROM:<a@b> SIZE=1`` -> ``a@b``."""
    rest = arg.split(b":", 1)[1] if b":" in arg else arg
    rest = rest.strip()
    if rest.startswith(b"<"):
        rest = rest[1:rest.find(b">")] if b">" in rest else rest[1:]
    else:
        rest = rest.split(b" ", 1)[0]
    return rest.decode("utf-8", "replace")


# -- the REDIRECT, only while the proxy answers -------------------------------------------------------
NAT_CHAIN = "VCR-MAIL"
HEALTH_INTERVAL = 5.0


def _iptables(*args: str, check: bool = True, tool: str = "iptables") -> bool:
    from agent.dataplane.bridge import run

    return run([tool, "-w", "-t", "nat", *args], check=check).returncode == 0


class Redirect:
    """nat PREROUTING ``-i <bridge> -j VCR-MAIL``; VCR-MAIL REDIRECTs the mail ports to the proxy.
    ``remove`` flushes it (the jump to an empty chain changes nothing): mail then passes uninspected.
    The unit's ExecStopPost flushes it too, so a crashed agent never leaves mail redirected to nothing."""

    def __init__(self, bridge: str, ports: list[int], listen_port: int) -> None:
        self.bridge = bridge
        self.ports = sorted(set(ports))
        self.listen_port = listen_port
        self.installed = False

    def install(self) -> None:
        for tool in ("iptables", "ip6tables"):
            _iptables("-N", NAT_CHAIN, check=False, tool=tool)
            _iptables("-F", NAT_CHAIN, tool=tool)
            if self.ports:
                _iptables("-A", NAT_CHAIN, "-p", "tcp", "-m", "multiport", "--dports", ",".join(map(str, self.ports)),
                          "-j", "REDIRECT", "--to-ports", str(self.listen_port), tool=tool)
            if not _iptables("-C", "PREROUTING", "-i", self.bridge, "-j", NAT_CHAIN, check=False, tool=tool):
                _iptables("-I", "PREROUTING", "-i", self.bridge, "-j", NAT_CHAIN, tool=tool)
        self.installed = True
        log.info("mail proxy: ports %s of the bridge redirected to :%d", self.ports, self.listen_port)

    def flush(self) -> None:
        for tool in ("iptables", "ip6tables"):
            _iptables("-F", NAT_CHAIN, check=False, tool=tool)
        self.installed = False

    def remove(self) -> None:
        self.flush()
        for tool in ("iptables", "ip6tables"):
            while _iptables("-D", "PREROUTING", "-i", self.bridge, "-j", NAT_CHAIN, check=False, tool=tool):
                pass
            _iptables("-X", NAT_CHAIN, check=False, tool=tool)


class MailService:
    """The daemon's mail security: the proxy, its REDIRECT while it is healthy, its counters."""

    def __init__(self, engine: MailSecurity, *, bridge: str, clamd: Mapping[str, Any], emit: Callable[[dict[str, Any]], None],
                 antispam: Any = None, home_net: tuple[str, ...] = ()) -> None:
        c = engine.conf
        self.proxy = MailProxy(engine, clamd=clamd, emit=emit, antispam=antispam, home_net=home_net)
        self.redirect = Redirect(bridge, [*c.smtp_ports, *c.pop3_ports, *c.imap_ports], c.listen_port)
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> "MailService":
        self.redirect.remove()  # whatever an earlier run left
        self.proxy.start()
        self.redirect.install()
        self.thread = threading.Thread(target=self._watch, daemon=True, name="mail-health")
        self.thread.start()
        return self

    def _probe(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.proxy.port), timeout=2):
                return True
        except OSError:
            return False

    def _watch(self) -> None:
        while not self.stopping.wait(HEALTH_INTERVAL):
            ok = self.proxy.healthy() and self._probe()
            try:
                if ok and not self.redirect.installed:
                    self.redirect.install()
                elif not ok and self.redirect.installed:
                    log.error("mail proxy not answering: mail passes uninspected until it does")
                    self.redirect.flush()
            except Exception as exc:
                log.warning("mail proxy redirect: %s", exc)

    def stop(self) -> None:
        self.stopping.set()
        try:
            self.redirect.remove()
        finally:
            self.proxy.stop()

    @property
    def counters(self) -> dict[str, int]:
        return dict(self.proxy.counters)

    def status(self) -> dict[str, Any]:
        return {**self.proxy.status(), "redirect": self.redirect.installed}
