"""The office benchmark's programs inside the lab namespaces (``python -m lab.bench.office_load ROLE``),
each printing its result as one JSON line:

* ``web``: the web servers of the simulated internet: HTTPS (real TLS, Python ssl / OpenSSL, full
  handshakes: no session cache, no tickets) and plain HTTP, pre-forked processes with SO_REUSEPORT,
  asyncio. ``GET /obj/N`` answers N bytes of random data (incompressible, like pictures);
  ``GET /video?rate=B`` streams B bytes a second in 25 chunks a second until the client closes.
* ``pop3``: a plain POP3 server (RFC 1939 subset: USER, PASS, STAT, LIST, RETR, DELE, NOOP, RSET, QUIT)
  with one mailbox of fixed messages; every session sees the same mailbox (DELE is not kept).
* ``users``: the page-loading users of one PC: the pages of ``office_model.schedule`` (DNS look-up, then
  the page's connections, at most 6 at a time), started at their scheduled times whatever the earlier
  pages do; load times, failures and how late each page started.
* ``background``: what runs alongside in the office: a video-like stream, a file download every few
  seconds (alternately HTTP and HTTPS) and POP3 mail retrievals.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import signal
import ssl
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from filters.app.dns import build_query
from lab.bench.load import answer_problem
from lab.bench.office_model import BROWSER_PARALLEL, Fetch, Page, schedule

BODY_MAX = 16_000_000  # the largest object the web server sends
PAGE_TIMEOUT = 20.0  # seconds a page may take; then it counts as failed
CONNECT_TIMEOUT = 10.0
DNS_TIMEOUT = 2.0
READ_CHUNK = 256 * 1024
MAIL_MESSAGES = (20_000, 80_000, 300_000)  # bytes of the mailbox's messages
VIDEO_CHUNKS = 25  # a second


def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# ----------------------------------------------------------------------------- web server
async def _read_head(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)


def _target(head: bytes) -> tuple[str, dict[str, str]]:
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    if len(parts) < 2 or parts[0] != "GET":
        raise ValueError(f"bad request line {line[:80]!r}")
    path, _, query = parts[1].partition("?")
    args = dict(kv.partition("=")[::2] for kv in query.split("&") if kv)
    return path, args


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: memoryview) -> None:
    try:
        head = await _read_head(reader)
        path, args = _target(head)
        if path.startswith("/obj/"):
            n = min(int(path[5:]), BODY_MAX)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n" % n)
            off = 0
            while off < n:  # write in slices so that drain keeps the memory small
                end = min(n, off + READ_CHUNK)
                writer.write(body[off:end])
                off = end
                await writer.drain()
        elif path == "/video":
            rate = max(1000, int(args.get("rate", "625000")))
            chunk = rate // VIDEO_CHUNKS
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nConnection: close\r\n\r\n")
            loop, t0, k = asyncio.get_running_loop(), asyncio.get_running_loop().time(), 0
            while True:
                writer.write(body[(k * chunk) % (BODY_MAX - chunk):][:chunk])
                await writer.drain()
                k += 1
                await asyncio.sleep(max(0.0, t0 + k / VIDEO_CHUNKS - loop.time()))
        else:
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
    except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError,
            ssl.SSLError):
        pass
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass


async def _web_loop(http_port: int, https_port: int, cert: Path, key: Path, body: memoryview) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    ctx.options |= ssl.OP_NO_TICKET  # full handshakes: no TLS 1.2 tickets, no TLS 1.3 tickets either
    ctx.num_tickets = 0

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _serve(r, w, body)

    servers = [await asyncio.start_server(handle, "0.0.0.0", http_port, reuse_port=True, backlog=4096),
               await asyncio.start_server(handle, "0.0.0.0", https_port, ssl=ctx, reuse_port=True, backlog=4096,
                                          ssl_handshake_timeout=30)]
    await asyncio.gather(*(s.serve_forever() for s in servers))


def serve_web(http_port: int, https_port: int, cert: Path, key: Path, procs: int) -> int:
    body = memoryview(os.urandom(BODY_MAX))
    children = []
    for _ in range(max(1, procs)):
        pid = os.fork()
        if pid == 0:
            try:
                asyncio.run(_web_loop(http_port, https_port, cert, key, body))
            finally:
                os._exit(0)
        children.append(pid)
    signal.signal(signal.SIGTERM, lambda *_: [os.kill(c, signal.SIGTERM) for c in children])
    for pid in children:
        os.waitpid(pid, 0)
    return 0


# ----------------------------------------------------------------------------- POP3 server
def mailbox(sizes: Sequence[int] = MAIL_MESSAGES) -> list[bytes]:
    """The messages: plain text mails of about ``sizes`` bytes, CRLF lines, dot-stuffed where needed."""
    out = []
    rng = random.Random(110)
    for i, size in enumerate(sizes):
        head = (f"From: soumu@office.example\r\nTo: user@office.example\r\nSubject: report {i + 1}\r\n"
                "Content-Type: text/plain; charset=utf-8\r\n\r\n")
        lines, n = [], len(head)
        while n < size:
            line = " ".join(rng.choice(("meeting", "invoice", "schedule", "report", "estimate", "order", "."))
                            for _ in range(12))
            line = "." + line if line.startswith(".") else line
            lines.append(line)
            n += len(line) + 2
        out.append((head + "\r\n".join(lines) + "\r\n").encode())
    return out


async def _pop3(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, box: list[bytes]) -> None:
    def send(line: str) -> None:
        writer.write(line.encode() + b"\r\n")

    try:
        send("+OK lab POP3 ready")
        while True:
            line = (await asyncio.wait_for(reader.readline(), 60)).decode("latin-1").strip()
            if not line:
                break
            cmd, _, arg = line.partition(" ")
            cmd = cmd.upper()
            if cmd in ("USER", "PASS", "NOOP", "RSET", "DELE"):
                send("+OK")
            elif cmd == "STAT":
                send(f"+OK {len(box)} {sum(map(len, box))}")
            elif cmd == "LIST":
                send(f"+OK {len(box)} messages")
                for i, m in enumerate(box, 1):
                    send(f"{i} {len(m)}")
                send(".")
            elif cmd == "RETR" and arg.isdigit() and 1 <= int(arg) <= len(box):
                m = box[int(arg) - 1]
                send(f"+OK {len(m)} octets")
                writer.write(m + b".\r\n")
            elif cmd == "QUIT":
                send("+OK bye")
                await writer.drain()
                break
            else:
                send("-ERR unknown command")
            await writer.drain()
    except (OSError, asyncio.TimeoutError):
        pass
    finally:
        writer.close()


def serve_pop3(port: int) -> int:
    box = mailbox()

    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: _pop3(r, w, box), "0.0.0.0", port, backlog=1024)
        await server.serve_forever()

    asyncio.run(main())
    return 0


# ----------------------------------------------------------------------------- clients
class Problem(Exception):
    """A fetch went wrong: its kind names it in the results."""


def client_context(cafile: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cafile))
    return ctx


async def dns_lookup(server: str, name: str, expect: str) -> None:
    """One query for ``name`` from a new socket (a new flow, as stub resolvers do); Problem unless the answer
    is ``expect``."""
    loop = asyncio.get_running_loop()
    qid = random.randrange(65536)
    fut: asyncio.Future[bytes] = loop.create_future()

    class Proto(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            if not fut.done():
                fut.set_result(data)

        def error_received(self, exc: Exception) -> None:
            if not fut.done():
                fut.set_exception(exc)

    transport, _ = await loop.create_datagram_endpoint(Proto, remote_addr=(server, 53))
    try:
        transport.sendto(build_query(name, txid=qid))
        try:
            reply = await asyncio.wait_for(fut, DNS_TIMEOUT)
        except asyncio.TimeoutError:
            raise Problem("dns timeout") from None
    finally:
        transport.close()
    problem = answer_problem(reply, qid, expect)
    if problem:
        raise Problem(f"dns {problem}")


async def http_get(ip: str, port: int, host: str, path: str, ctx: ssl.SSLContext | None,
                   expect: int | None = None) -> int:
    """GET ``path`` on a new connection (TLS with SNI ``host`` when ``ctx``), read to the end; the body's size.
    Problem when it is not 200 with ``expect`` bytes."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(ip, port, ssl=ctx, server_hostname=host if ctx else None), CONNECT_TIMEOUT)
    except asyncio.TimeoutError:
        raise Problem("connect timeout") from None
    except ssl.SSLError as exc:
        raise Problem(f"tls {exc.reason or type(exc).__name__}") from None
    except OSError as exc:
        raise Problem(f"connect {exc.strerror or type(exc).__name__}") from None
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: office-bench\r\nAccept: */*\r\n"
                     "Connection: close\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise Problem("status " + head[9:12].decode("latin-1", "replace"))
        got = 0
        while True:
            chunk = await reader.read(READ_CHUNK)
            if not chunk:
                break
            got += len(chunk)
        if expect is not None and got != expect:
            raise Problem("short body")
        return got
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        raise Problem("short header") from None
    except ssl.SSLError as exc:
        raise Problem(f"tls {exc.reason or type(exc).__name__}") from None
    except OSError as exc:
        raise Problem(f"read {exc.strerror or type(exc).__name__}") from None
    finally:
        writer.close()


async def load_page(page: Page, web: str, dns: str, ctx: ssl.SSLContext) -> int:
    """One page: the look-up, then its fetches at most BROWSER_PARALLEL at a time; its bytes."""
    await dns_lookup(dns, page.site, web)
    gate = asyncio.Semaphore(BROWSER_PARALLEL)

    async def one(f: Fetch) -> int:
        async with gate:
            if f.scheme == "https":
                return await http_get(web, 443, page.site, f"/obj/{f.size}", ctx, f.size)
            return await http_get(web, 80, page.site, f"/obj/{f.size}", None, f.size)

    results = await asyncio.gather(*(one(f) for f in page.fetches), return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return sum(results)  # type: ignore[arg-type]


async def run_users(pages: list[Page], web: str, dns: str, cafile: Path, start_at: float) -> dict[str, Any]:
    ctx = client_context(cafile)
    loop = asyncio.get_running_loop()
    # start_at is a wall-clock time shared by every client process of the step
    base = loop.time() + max(0.0, start_at - time.time())
    times, lags, problems = [], [], Counter()
    state = {"bytes": 0, "conns": 0}

    async def one(page: Page) -> None:
        await asyncio.sleep(max(0.0, base + page.at - loop.time()))
        t0 = loop.time()
        lags.append((t0 - (base + page.at)) * 1e3)
        try:
            got = await asyncio.wait_for(load_page(page, web, dns, ctx), PAGE_TIMEOUT)
            state["bytes"] += got  # not `+= await ...`: that would read the total before the wait
            times.append((loop.time() - (base + page.at)) * 1e3)
            state["conns"] += len(page.fetches)
        except asyncio.TimeoutError:
            problems["page timeout"] += 1
        except Problem as exc:
            problems[str(exc)] += 1
        except Exception as exc:  # noqa: BLE001 - count whatever else went wrong
            problems[type(exc).__name__] += 1

    cpu0 = _cpu_seconds()
    await asyncio.gather(*(one(p) for p in pages))
    return {"offered": len(pages), "times_ms": times, "failed": sum(problems.values()), "lags_ms": lags,
            "problems": dict(problems), "cpu_s": _cpu_seconds() - cpu0, "bytes": state["bytes"],
            "connections": state["conns"]}


async def run_background(web: str, dns: str, mail: str, cafile: Path, seconds: float, video_rate: int,
                         download: int, download_every: float, mail_every: float) -> dict[str, Any]:
    """The video stream, the downloads and the mail retrievals for ``seconds``."""
    ctx = client_context(cafile)
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    out: dict[str, Any] = {"video_bytes": 0, "video_gaps_ms": [], "downloads_s": [], "mail_s": [],
                           "problems": Counter()}

    async def video() -> None:
        host = "video.office.example"
        while loop.time() < end:
            try:
                reader, writer = await asyncio.open_connection(web, 443, ssl=ctx, server_hostname=host)
                writer.write(f"GET /video?rate={video_rate} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                             .encode())
                await reader.readuntil(b"\r\n\r\n")
                last = loop.time()
                while loop.time() < end:
                    chunk = await asyncio.wait_for(reader.read(READ_CHUNK), max(0.1, end - loop.time()) + 5)
                    if not chunk:
                        break
                    now = loop.time()
                    out["video_gaps_ms"].append((now - last) * 1e3)
                    last = now
                    out["video_bytes"] += len(chunk)
                writer.close()
            except asyncio.TimeoutError:
                out["problems"]["video stalled"] += 1
            except (OSError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
                out["problems"][f"video {type(exc).__name__}"] += 1
                await asyncio.sleep(0.5)

    async def downloads() -> None:
        k = 0
        while loop.time() + download_every <= end:
            t0 = loop.time()
            https = k % 2 == 1
            try:
                await dns_lookup(dns, "files.office.example", web)
                await asyncio.wait_for(http_get(web, 443 if https else 80, "files.office.example", f"/obj/{download}",
                                                ctx if https else None, download), 60)
                out["downloads_s"].append(loop.time() - t0)
            except (Problem, asyncio.TimeoutError) as exc:
                out["problems"][f"download {exc}"] += 1
            k += 1
            await asyncio.sleep(max(0.0, t0 + download_every - loop.time()))

    async def mails() -> None:
        while loop.time() + mail_every <= end:
            t0 = loop.time()
            try:
                await asyncio.wait_for(pop3_session(mail), 30)
                out["mail_s"].append(loop.time() - t0)
            except (Problem, asyncio.TimeoutError, OSError) as exc:
                out["problems"][f"mail {exc or type(exc).__name__}"] += 1
            await asyncio.sleep(max(0.0, t0 + mail_every - loop.time()))

    cpu0 = _cpu_seconds()
    await asyncio.gather(video(), downloads(), mails())
    out["problems"] = dict(out["problems"])
    out["cpu_s"] = _cpu_seconds() - cpu0
    out["seconds"] = seconds
    return out


async def pop3_session(ip: str, port: int = 110) -> int:
    """Log in, list and retrieve every message, quit; the bytes retrieved. Problem on a protocol error."""
    reader, writer = await asyncio.open_connection(ip, port)
    try:
        async def cmd(line: str | None) -> str:
            if line is not None:
                writer.write(line.encode() + b"\r\n")
            reply = (await reader.readline()).decode("latin-1")
            if not reply.startswith("+OK"):
                raise Problem(f"pop3 {line}: {reply.strip()[:40]}")
            return reply

        await cmd(None)
        await cmd("USER user")
        await cmd("PASS secret")
        count = int((await cmd("STAT")).split()[1])
        got = 0
        for i in range(1, count + 1):
            await cmd(f"RETR {i}")
            while True:
                line = await reader.readline()
                if not line:
                    raise Problem("pop3 message cut")
                if line == b".\r\n":
                    break
                got += len(line)
        await cmd("QUIT")
        return got
    finally:
        writer.close()


# ----------------------------------------------------------------------------- entry point
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab.bench.office_load", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="role", required=True)
    p = sub.add_parser("web", help="HTTPS and HTTP object server (pre-fork asyncio)")
    p.add_argument("--http-port", type=int, default=80)
    p.add_argument("--https-port", type=int, default=443)
    p.add_argument("--cert", type=Path, required=True)
    p.add_argument("--key", type=Path, required=True)
    p.add_argument("--procs", type=int, default=2)
    p = sub.add_parser("pop3", help="plain POP3 server with one fixed mailbox")
    p.add_argument("--port", type=int, default=110)
    p = sub.add_parser("users", help="page-loading users (one PC)")
    p.add_argument("--web", required=True)
    p.add_argument("--dns", required=True)
    p.add_argument("--cafile", type=Path, required=True)
    p.add_argument("--rate", type=float, required=True, help="pages/s of this process")
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--users", required=True, help="comma-separated user numbers of this PC")
    p.add_argument("--start-at", type=float, required=True, help="wall-clock time (epoch s) of the step's start")
    p = sub.add_parser("background", help="video stream, downloads and mail alongside")
    p.add_argument("--web", required=True)
    p.add_argument("--dns", required=True)
    p.add_argument("--mail", required=True)
    p.add_argument("--cafile", type=Path, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--video-rate", type=int, default=625_000)
    p.add_argument("--download", type=int, default=8_000_000)
    p.add_argument("--download-every", type=float, default=8.0)
    p.add_argument("--mail-every", type=float, default=4.0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.role == "web":
        return serve_web(args.http_port, args.https_port, args.cert, args.key, args.procs)
    if args.role == "pop3":
        return serve_pop3(args.port)
    if args.role == "users":
        users = [int(u) for u in args.users.split(",")]
        pages = schedule(args.rate, args.seconds, args.seed, users)
        result = asyncio.run(run_users(pages, args.web, args.dns, args.cafile, args.start_at))
    else:
        result = asyncio.run(run_background(args.web, args.dns, args.mail, args.cafile, args.seconds, args.video_rate,
                                            args.download, args.download_every, args.mail_every))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
