"""Web antivirus: every file of an HTTP download or upload is scanned by ClamAV (clamd) before it
completes at the PC.

Sans-IO. A file is complete when the packet that ends its HTTP message arrives (``on_file``); the
engine holds that packet (``Hold`` with an ``IORequest("clamd_scan")``) while the agent's performer
streams the file to clamd (INSTREAM over its unix socket). Downloads from ``STREAM_MIN`` on are
streamed to clamd while they arrive (``Submit`` of ``clamd_stream`` fed through a ``ScanFeed``),
and the held packet then waits only for the verdict (``clamd_wait``). Other flows never wait, and
the download does not complete at the PC before the verdict:

- clean: the held packet goes on, the file completes byte-identical;
- infected: the held packet is dropped and the connection cut (TCP resets, the rest of the flow
  dropped in the kernel); when the held packet is also the start of the response (nothing of it
  reached the PC yet) the PC gets the antivirus block page instead; an infected upload gets the
  block page as the answer to its request;
- not scanned (too large, scan timeout, clamd down or overloaded): passed (fail-open) with an
  alarm; encrypted and corrupt archives: an alarm, optionally blocked;
- a part of a file (a ``206`` range, or a transfer cut short): what arrived is scanned, and the
  alarm and the fileinfo (state ``TRUNCATED``) say which bytes were not;
- a body that ends when the server closes ends on the server's FIN packet, which is held; a file
  completed only as its flow ends (idle timeout) has no packet left to hold: it is still scanned
  and raises the alarm, saying it reached the PC (``IORequest.detached``);
- the files of a multipart form upload are scanned one by one under one hold.

Every alarm is an EVE ``alert`` with a ``fileinfo`` object as Suricata writes it (filename, magic,
size, sha256, state) and an ``av`` object (virus name, what happened); with ``fileinfo: true`` each
scanned file is also written as a ``fileinfo`` record.
"""
from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable, Literal, Mapping

from pydantic import Field

from filters.app.events import FileEvent, HttpEvent
from filters.app.files import disposition_filename, uri_filename
from filters.app.layer import flow_app_proto
from filters.engine import (Action, BundleError, BundleLoad, Decision, Engine, EngineConfig, EngineContext, Hold,
                            Inject, InjectKind, IORequest, Scope, Submit, Verdict)
from filters.packet import PROTO_TCP
from filters.webfilter.blocking import BoxName
from filters.webfilter.page import render_antivirus

SID_VIRUS = 9_500_001
SID_TOO_LARGE = 9_500_002
SID_TIMEOUT = 9_500_003
SID_UNAVAILABLE = 9_500_004
SID_ENCRYPTED = 9_500_005
SID_CORRUPT = 9_500_006
SID_INCOMPLETE = 9_500_007
CATEGORY = "A Network Trojan was detected"
POLICY_CATEGORY = "Potentially Bad Traffic"

# clamd database files a bundle may hold (ClamAV's database formats).
DB_SUFFIXES = (".cvd", ".cld", ".cud", ".hdb", ".hsb", ".hdu", ".hsu", ".mdb", ".msb", ".mdu", ".msu", ".ndb",
               ".ndu", ".ldb", ".ldu", ".db", ".cdb", ".fp", ".sfp", ".ign", ".ign2", ".ftm", ".idb", ".cfg",
               ".crb", ".pdb", ".gdb", ".wdb", ".yar", ".yara", ".cbc", ".info", ".imp")
TEXT_DBS = (".hdb", ".hsb", ".hdu", ".hsu", ".mdb", ".msb", ".ndb", ".ndu", ".ldb", ".ldu", ".fp", ".sfp")


class AvConfig(EngineConfig):
    """``engines.av``: the web antivirus (ClamAV through the box's private clamd)."""

    clamd_socket: str = Field("/run/vcr-clamd/clamd.sock",
                              description="clamd's unix socket (the box's own clamd: systemd/vcr-clamd.service, config/av/clamd.conf)")
    database: str | None = Field(None, description="clamd's database folder (the live av bundle goes here); "
                                                   "a new folder makes the agent send clamd RELOAD")
    max_size: int = Field(10 << 20, ge=1, le=100 << 20,
                          description="bytes: larger files are not scanned (passed, with an alarm). HTTP "
                                      "bodies are followed this far on their own (past app_layer.http.*_body_limit "
                                      "and dataplane.flows.stream_depth, which stay the IPS's): the bytes past the "
                                      "body limit are streamed to clamd, not kept")
    scan_timeout: float = Field(5.0, ge=0.1, le=60,
                                description="seconds the packet completing a file waits for clamd; then the file "
                                            "passes with an alarm")
    max_concurrent: int = Field(4, ge=1, le=64,
                                description="scans in flight per worker; beyond, clamd counts as overloaded (the "
                                            "file passes with an alarm)")
    max_streams: int = Field(16, ge=1, le=256,
                             description="downloads streamed to clamd at once per worker (from 256 KiB, and every "
                                         "one past the HTTP body limit); beyond, a download waits for a free stream")
    max_stream_memory: int = Field(64 << 20, ge=1 << 20, le=1 << 30,
                                   description="bytes: what all downloads of one worker queue for clamd together "
                                               "(streams sending and downloads waiting for one); a download that "
                                               "would go past it stops streaming: scanned whole if it is within the "
                                               "HTTP body limit, else passed with the \"scanner unavailable\" alarm")
    scan_downloads: bool = Field(True, description="scan files the PCs download (HTTP response bodies)")
    scan_uploads: bool = Field(True, description="scan files the PCs upload (HTTP request bodies)")
    encrypted_action: Literal["alert", "block"] = Field(
        "alert", description="an encrypted archive (cannot be scanned): alert (pass with an alarm) or block")
    corrupt_action: Literal["alert", "block"] = Field(
        "alert", description="a corrupt archive or executable: alert (pass with an alarm) or block")
    monitor_only: bool = Field(False, description="raise alarms instead of blocking infected files")
    fileinfo: bool = Field(True, description="write an EVE fileinfo record for every file scanned")
    verdict_cache: int = Field(16384, ge=0, le=1 << 20,
                               description="clean verdicts remembered per worker, by SHA-256 and size, for the "
                                           "database that gave them: the same file again passes without waiting "
                                           "for clamd (0: every file is scanned)")
    verdict_cache_ttl: float = Field(600.0, ge=1, le=86400,
                                     description="seconds a clean verdict is trusted (as clamd's SelfCheck: a "
                                                 "database changed in place is seen by then)")
    box_name: BoxName = Field("", description="the box's name on the block page; default: the host name")


def _text(b: bytes) -> str:
    return b.decode("utf-8", "replace")


def fileinfo(file: FileEvent, state: str | None = None) -> dict[str, Any]:
    """The EVE ``fileinfo`` object, as Suricata writes it; a partial file (a range response) is
    ``TRUNCATED`` with a ``partial`` object saying which bytes were seen and which were not."""
    out: dict[str, Any] = {
        "filename": _text(file.name),
        "magic": file.magic,
        "gaps": False,
        "state": state or ("TRUNCATED" if file.truncated or file.partial else "CLOSED"),
        "sha256": file.sha256,
        "stored": False,
        "size": file.size,
        "tx_id": file.tx_id,
    }
    if file.partial:
        out["partial"] = partial_info(file)
    return out


def partial_info(file: FileEvent) -> dict[str, Any]:
    """What of a partial file was scanned and what was not, for the alarm and the fileinfo."""
    if file.range is None:
        return {"range": None, "not_scanned": "the rest of the file (range unknown)"}
    first, last, total = file.range
    missing = []
    if first > 0:
        missing.append(f"bytes 0-{first - 1}")
    if total is None:
        missing.append(f"bytes {last + 1}- (total size unknown)")
    elif last + 1 < total:
        missing.append(f"bytes {last + 1}-{total - 1}")
    return {"range": f"bytes {first}-{last}/{total if total is not None else '*'}", "first": first, "last": last,
            "total": total, "not_scanned": ", ".join(missing) or "nothing"}


def _http(file: FileEvent) -> dict[str, Any]:
    tx = file.tx
    if tx is None:
        return {}
    out = {"hostname": _text(tx.host), "url": _text(tx.uri), "http_method": _text(tx.method)}
    if tx.status_code:
        out["status"] = int(tx.status_code) if tx.status_code.isdigit() else _text(tx.status_code)
    return out


class FileData:
    """The bytes of a file on their way to the scanner: ``take()`` hands them over once and lets
    them go, so a request kept after its hold timed out (for a late result) holds no file."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data

    def take(self) -> bytes:
        data, self._data = self._data, None
        return data if data is not None else b""

    def __len__(self) -> int:
        return len(self._data or b"")


FEED_BACKLOG = 8 << 20  # bytes a feed queues for clamd at most; beyond, the feed is dropped (file: unavailable alarm)
FEED_HIGH = 2 << 20  # from this backlog on the packet is held until clamd took it down to FEED_LOW (backpressure)
FEED_LOW = 512 << 10


class FeedBudget:
    """Bytes queued for clamd by all the feeds of one worker together (``max_stream_memory``).

    Each feed is bounded (``FEED_BACKLOG``) and so is the number of streams sent at once
    (``max_streams``), but downloads waiting for a free stream keep queueing what arrives: without a
    budget for all of them a burst of large downloads could hold up to ``FEED_BACKLOG`` each. A feed
    whose put would go past the budget is dropped, as one that outgrew its own backlog: the file is
    scanned whole if its bytes were kept (under the body limit), else it passes with the "scanner
    unavailable" alarm. Thread-safe; taken only inside a feed's lock, never the other way round."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.queued = 0
        self.refused = 0
        self._lock = threading.Lock()

    def reserve(self, n: int) -> bool:
        with self._lock:
            if self.queued + n > self.limit:
                self.refused += 1
                return False
            self.queued += n
            return True

    def release(self, n: int) -> None:
        if n:
            with self._lock:
                self.queued -= n


class ScanFeed:
    """A download's bytes streamed to clamd while they arrive (``clamd_stream``): the engine puts
    what the body grew by, the performer's thread takes and sends it; ``close`` ends the file (the
    verdict then needs only the tail scanned: ``clamd_wait``), ``abort`` drops it. Thread-safe."""

    def __init__(self, budget: FeedBudget | None = None) -> None:
        self._cv = threading.Condition()
        self._budget = budget
        self._chunks: deque[bytes] = deque()
        self._queued = 0  # bytes put and not yet taken
        self.fed = 0
        self.closed = False
        self.aborted = False
        self.done = threading.Event()
        self.result: dict[str, Any] | None = None
        self.error: str | None = None

    def put(self, data: bytes) -> None:
        with self._cv:
            if self.closed or self.aborted or self.done.is_set() or not data:
                return  # a feed that ended (clamd failed) takes nothing more: nothing piles up
            if self._queued + len(data) > FEED_BACKLOG or (  # clamd reads slower than the download comes
                    self._budget is not None and not self._budget.reserve(len(data))):  # or the worker's budget is spent
                self._drop()
                return
            self._chunks.append(data)
            self._queued += len(data)
            self.fed += len(data)
            self._cv.notify()

    def close(self) -> None:
        with self._cv:
            self.closed = True
            self._cv.notify()

    def abort(self) -> None:
        with self._cv:
            self._drop()

    def _drop(self) -> None:
        """Abort with the lock held: the queued bytes go, and back to the budget."""
        self.aborted = True
        self._release()
        self._cv.notify()

    def _release(self) -> None:
        self._chunks.clear()
        if self._budget is not None:
            self._budget.release(self._queued)
        self._queued = 0

    def take(self, timeout: float) -> bytes | None:
        """Everything put since the last take; b"" when the file is closed and all of it taken;
        None when aborted; TimeoutError when nothing came for ``timeout`` seconds."""
        with self._cv:
            while not self._chunks and not self.closed and not self.aborted:
                if not self._cv.wait(timeout):
                    raise TimeoutError("no data")
            if self.aborted:
                return None
            data = b"".join(self._chunks)
            self._release()
            self._cv.notify_all()  # a drain waiting for room (wait_below)
            return data

    @property
    def backlog(self) -> int:
        """Bytes put and not yet taken by the sender."""
        return self._queued

    def wait_below(self, n: int, timeout: float) -> bool:
        """Wait until at most ``n`` bytes are queued (or the feed ended); False after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._queued > n and not self.aborted and not self.done.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.05))
            return True

    def finish(self, result: dict[str, Any] | None = None, error: str | None = None) -> None:
        with self._cv:
            self._release()
        self.result, self.error = result, error
        self.done.set()

    @property
    def failed(self) -> bool:
        return self.aborted or (self.done.is_set() and self.error is not None)


STREAM_MIN = 256 * 1024  # downloads from this size on are streamed to clamd while they arrive


class VerdictCache:
    """Files clamd found clean, by (SHA-256, size, database): a page's icons, scripts and style
    sheets, and the same small answers of an API, come again and again (other PCs, other pages,
    reloads). A hit passes the file at once, with its fileinfo record, instead of holding its last
    packet for another scan of the same bytes (as commercial gateways' scan caches do). Only clean
    verdicts of whole files are kept: an infected, encrypted or corrupt file, a part of one, or a
    failed scan goes to clamd every time, so what is blocked and alarmed never depends on the
    cache. An entry is tied to the database folder that gave it (a new av bundle is a new folder:
    every file is scanned again) and trusted for ``ttl`` seconds (a database changed in place).
    Least recently used entries go first. Per worker, not locked (the worker's packet thread only)."""

    def __init__(self, size: int, ttl: float) -> None:
        self.size, self.ttl = size, ttl
        self._entries: OrderedDict[tuple[str, int, str], float] = OrderedDict()  # key -> when it expires

    def hit(self, key: tuple[str, int, str], now: float) -> bool:
        expires = self._entries.get(key)
        if expires is None:
            return False
        if expires <= now:
            del self._entries[key]
            return False
        self._entries.move_to_end(key)
        return True

    def add(self, key: tuple[str, int, str], now: float) -> None:
        if self.size <= 0:
            return
        self._entries[key] = now + self.ttl
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


# Hold time of a scanned file (its last packet's wait: request to verdict), counted per bucket
# (``hold_ms.under_10`` ...) with the total in ``hold_ms.total``: the worker stats show the
# distribution without a record per file.
HOLD_BUCKETS = (10, 100, 1000)


@dataclass(frozen=True, slots=True)
class ScannedFile:
    """What the verdict needs of a file once its bytes went to the scanner."""

    info: dict[str, Any]  # the EVE fileinfo object
    http: dict[str, Any]
    name: str
    site: str
    to_server: bool
    lan_ip: str
    sha256: str
    whole: bool = False  # the whole file went to the scanner (not a range, nothing missing): its verdict may be cached

    @classmethod
    def of(cls, file: FileEvent) -> "ScannedFile":
        tx = file.tx
        site = _text(tx.host) + _text(tx.uri) if tx is not None else ""
        return cls(fileinfo(file), _http(file), _text(file.name), site, file.to_server, file.lan_ip, file.sha256,
                   whole=not file.truncated and not file.partial)


def block_injects(html: str, file: ScannedFile, page: bool) -> tuple[Inject, ...]:
    """How the block of a held file (the antivirus's, the sandbox's) reaches the PC: an upload's held
    packet is the request's last, so the page answers it; a download none of whose response reached
    the PC (``page``) gets the page in its place; else both sides are reset and the PC never gets the
    last bytes."""
    if file.to_server:
        return (Inject(InjectKind.HTTP_BLOCK_PAGE, {"html": html}),)
    if page:
        return (Inject(InjectKind.HTTP_BLOCK_PAGE, {"html": html, "replace": True}),)
    return (Inject(InjectKind.TCP_RESET, {"sender": True, "receiver": True}),)


class Antivirus(Engine):
    Config = AvConfig
    name: ClassVar[str] = "av"
    bundle_kinds: ClassVar[tuple[str, ...]] = ("av",)

    def __init__(self) -> None:
        super().__init__()
        self.conf = AvConfig()
        self.box = ""
        self.database = ""
        self.db_version = ""
        self.cache = VerdictCache(0, 0.0)
        self.feed_budget = FeedBudget(self.conf.max_stream_memory)

    def configure(self, section: Mapping[str, Any], ctx: EngineContext = EngineContext()) -> None:
        self.conf = conf = self.check_section(section)
        self.box = conf.box_name or os.uname().nodename
        self.database = str(Path(conf.database).resolve()) if conf.database else ""
        self.db_version = Path(self.database).name if self.database else ""
        self.cache = VerdictCache(conf.verdict_cache, conf.verdict_cache_ttl)
        self.feed_budget = FeedBudget(conf.max_stream_memory)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"clamd_socket": self.conf.clamd_socket, "max_size": self.conf.max_size,
                               "database": self.database or None}
        if self.db_version:
            out["signatures"] = {"av": self.db_version}
        return out

    # -- bundles ---------------------------------------------------------------------------------
    @classmethod
    def apply_bundle(cls, section: Mapping[str, Any], kind: str, folder: Path) -> dict[str, Any]:
        """The live av bundle (clamd database files) becomes the database folder."""
        return {**section, "database": str(folder)}

    @classmethod
    def load_bundle(cls, kind: str, folder: Path, manifest: Mapping[str, Any], section: Mapping[str, Any],
                    ctx: EngineContext) -> BundleLoad:
        """Check the staged database: only ClamAV database files, each text database's lines well
        formed; the signature count is what ``min_rule_ratio`` holds against the live bundle's."""
        count, files = check_database(folder)
        return BundleLoad(count, {"files": files, "signatures": count}, counts_manifest_rules=False)

    # -- files -----------------------------------------------------------------------------------
    def _state(self, flow: Any) -> dict[str, Any]:
        return flow.engine_data.setdefault(self.name, {"packets": 0, "skip": set(), "starts": {}, "feeds": {},
                                                       "lost": set()})

    def file_depth(self) -> int:
        """Files are scanned whole up to ``max_size``: the app layer lets a body go on past the IPS
        body limit to here (the bytes past it are streamed to clamd, never kept)."""
        return self.conf.max_size

    def _stream(self, flow: Any, ev: HttpEvent) -> list[Decision]:
        refused = self.feed_budget.refused
        out = self._stream_feed(flow, ev)
        if self.feed_budget.refused != refused:
            self.count("stream_over_budget")  # max_stream_memory: this download stopped streaming
        return out

    def _stream_feed(self, flow: Any, ev: HttpEvent) -> list[Decision]:
        """A download's body grew: from ``STREAM_MIN`` on (or once it goes on past the body limit,
        ``tx.response_file``), stream it to clamd as it arrives, so the verdict at its last packet
        waits only for the tail (not for the whole file to be scanned). The bytes past the body
        limit come only this way (``FileTail`` chunks, handed out once): a feed that misses some
        is dropped and the file is not scanned (an alarm at its end)."""
        tx = ev.tx
        st = self._state(flow)
        feeds: dict[int, ScanFeed] = st["feeds"]
        feed = feeds.get(tx.tx_id)
        live = tx.response_live
        tail = tx.response_file
        over = tail is not None and tail.size > len(live or b"")
        if (tx.tx_id, False) in st["skip"] or (tx.response_body_truncated and not over) or live is None \
                or (tail is not None and tail.cut):
            if feed is not None:
                feed.abort()
                feeds.pop(tx.tx_id, None)
            return []
        size = tail.size if over and tail is not None else len(live)
        if feed is None:
            if (size < STREAM_MIN and not over) or (tx.status_code == b"206" and not over) or \
                    tx.response_content_type.startswith(b"multipart/") or size > self.conf.max_size:
                return []
            if over and tail is not None and tail.base > len(live):  # bytes past the limit went by unseen
                st["lost"].add(tx.tx_id)
                return []
            feed = feeds[tx.tx_id] = ScanFeed(self.feed_budget)
            feed.put(bytes(live))
            self.count("streamed")
            out: list[Decision] = [Submit(self.name, IORequest("clamd_stream", {
                "socket": self.conf.clamd_socket, "feed": feed, "max_concurrent": self.conf.max_concurrent,
                "max_streams": self.conf.max_streams,
                "database": self.database, "timeout": max(30.0, self.conf.scan_timeout)}))]
        else:
            out = []
        if size > self.conf.max_size:
            feed.abort()
            feeds.pop(tx.tx_id, None)
            return out
        if feed.fed < len(live):
            feed.put(bytes(live[feed.fed:]))
        if over and tail is not None:
            off = tail.base
            if feed.fed < off:  # a part of the file went by without this feed: it cannot be scanned whole
                feed.abort()
                feeds.pop(tx.tx_id, None)
                st["lost"].add(tx.tx_id)
                return out
            for chunk in tail.chunks:
                end = off + len(chunk)
                if end > feed.fed:
                    feed.put(chunk[feed.fed - off:] if feed.fed > off else chunk)
                off = end
        if feed.backlog > FEED_HIGH and not feed.failed:
            # clamd takes the file slower than it arrives: this packet waits until clamd caught up
            # (the flow's later packets queue behind it, the sender's window fills: backpressure)
            self.count("stream_backpressure")
            out.append(Hold(self.name, IORequest("clamd_drain", {"feed": feed, "low": FEED_LOW,
                                                                "timeout": self.conf.scan_timeout}),
                            timeout=self.conf.scan_timeout, on_timeout=Action.PASS, reason="av stream backpressure"))
        return out

    def on_flow_end(self, flow: Any) -> Iterable[Decision] | None:
        st = flow.engine_data.get(self.name)
        if st:
            for feed in st["feeds"].values():
                feed.abort()
            st["feeds"].clear()
        return None

    def on_packet(self, pkt: Any, flow: Any) -> Iterable[Decision] | None:
        if flow is not None and flow.engine_data.get(self.name) is not None:
            flow.engine_data[self.name]["packets"] += 1
        return None

    def needs_handshake(self, flow: Any) -> bool:
        return False  # it numbers a flow's packets from its first HTTP message on, after the handshake

    def needs_empty_acks(self) -> bool:
        # on_packet only numbers the packets, so that a file completed by the very packet that
        # started its response can be replaced by the block page; an empty ACK never carries
        # either, so whether it is counted cannot change that equality.
        return False

    def _headers(self, flow: Any, ev: HttpEvent) -> list[Decision]:
        st = self._state(flow)
        if not ev.to_server:
            st["starts"][ev.tx.tx_id] = st["packets"]  # the packet that carries this response's start
        if (ev.to_server and not self.conf.scan_uploads) or (not ev.to_server and not self.conf.scan_downloads):
            return []
        length = ev.tx.header(b"content-length", response=not ev.to_server)
        if length and length.strip().isdigit() and int(length) > self.conf.max_size:
            st["skip"].add((ev.tx.tx_id, ev.to_server))
            name = ev.tx.header(b"content-disposition", response=not ev.to_server)
            fname = disposition_filename(name) or uri_filename(ev.tx.uri)
            info = {"filename": _text(fname), "magic": "", "gaps": False, "state": "OPEN", "stored": False,
                    "size": int(length), "tx_id": ev.tx.tx_id}
            return [self._policy(SID_TOO_LARGE, "file too large to scan", info, "too_large", Action.ALERT,
                                 {"max_size": self.conf.max_size})]
        return []

    def on_http_request(self, flow: Any, ev: HttpEvent) -> Iterable[Decision] | None:
        if ev.stage == "request_headers":
            return self._headers(flow, ev)
        return None

    def on_http_response(self, flow: Any, ev: HttpEvent) -> Iterable[Decision] | None:
        if ev.stage == "response_headers":
            return self._headers(flow, ev)
        if ev.stage == "response_body" and self.conf.scan_downloads:
            return self._stream(flow, ev)
        return None

    def on_file(self, flow: Any, file: FileEvent) -> Iterable[Decision] | None:
        """A complete file: held for clamd. The files of one message (the parts of a multipart
        upload) come one after the other on the same packet; they are scanned together under one
        hold, made at the last of them."""
        if file.proto != "http":
            return None
        if (file.to_server and not self.conf.scan_uploads) or (not file.to_server and not self.conf.scan_downloads):
            return None
        st = self._state(flow)
        key = (file.tx_id, file.to_server)
        last = file.part >= file.parts - 1
        if file.part == 0:
            st["start"] = st["starts"].pop(file.tx_id, None) if not file.to_server else None
            st["group"] = []
        if key in st["skip"]:
            if last:
                st["skip"].discard(key)
            return None
        out: list[Decision] = []
        self.count("files")
        tx = file.tx
        limited = tx is not None and (tx.request_body_truncated if file.to_server else tx.response_body_truncated)
        if file.size > self.conf.max_size or (limited and file.truncated):
            self.count("not_scanned.too_large")
            out.append(self._policy(SID_TOO_LARGE, "file too large to scan", fileinfo(file), "too_large",
                                    Action.ALERT, {"max_size": self.conf.max_size}, _http(file)))
        elif file.streamed and not self._whole_in_feed(st, file):
            # past the body limit the bytes went only to the stream to clamd, which did not have them all
            self.count("not_scanned.unavailable")
            feed = st["feeds"].pop(file.tx_id, None)
            if feed is not None:
                feed.abort()
            out.append(self._policy(SID_UNAVAILABLE, "scanner unavailable, file passed", fileinfo(file),
                                    "unavailable", Action.ALERT,
                                    {"error": "past the body limit the file was not streamed whole to the scanner "
                                              "(the stream failed or missed bytes, or a multipart response)"}, _http(file)))
        elif file.truncated and not file.data:
            self.count("not_scanned.incomplete")
            out.append(self._policy(SID_INCOMPLETE, "file incomplete, not scanned", fileinfo(file), "incomplete",
                                    Action.ALERT, {}, _http(file)))
        elif not file.truncated and not file.partial and self.cache.hit(self._cache_key(file.sha256, file.size),
                                                                            time.monotonic()):
            self.count("cache_hits")  # clamd found these very bytes clean with this database: no hold
            self.count("clean")
            feed = st["feeds"].pop(file.tx_id, None) if not file.to_server and file.parts == 1 else None
            if feed is not None:  # the download was streamed to clamd: that scan is not waited for
                feed.abort()
            if self.conf.fileinfo:
                http = _http(file)
                out.append(Verdict(Action.NONE, self.name, event="fileinfo",
                                   metadata={"fileinfo": fileinfo(file), **({"http": http} if http else {})}))
        else:  # whole, a range (partial) or cut short (incomplete): what arrived is scanned
            if file.truncated:
                self.count("incomplete")
            if file.partial:
                self.count("partial")
            st["group"].append((ScannedFile.of(file), FileData(file.data)))
        if not last or not st["group"]:
            return out
        group, st["group"] = st["group"], []
        page_ok = not file.to_server and st.get("start") == st["packets"]
        args: dict[str, Any] = {
            "socket": self.conf.clamd_socket, "timeout": self.conf.scan_timeout,
            "max_concurrent": self.conf.max_concurrent, "database": self.database,
            "file": group[0][0], "data": group[0][1], "page": page_ok, "started": time.monotonic(),
        }
        kind = "clamd_scan"
        feed = st["feeds"].pop(file.tx_id, None) if not file.to_server else None
        if feed is not None:
            if len(group) == 1 and file.parts == 1 and (not file.partial or file.streamed) and not file.truncated \
                    and feed.fed == file.size and not feed.failed:
                feed.close()  # clamd has had the file all along: only the verdict is waited for
                kind, args["feed"] = "clamd_wait", feed
                if file.streamed:  # its bytes past the body limit are gone: no whole-file scan to fall back on
                    args["streamed"], args["data"] = True, FileData(b"")
                self.count("stream_verdicts")
            else:
                feed.abort()
        if len(group) > 1:
            args["files"] = [g[0] for g in group]
            args["parts"] = [g[1] for g in group]
        self.count("scans", len(group))
        first = group[0][0]
        names = ", ".join(g[0].name for g in group)
        timeout_v = self._policy(SID_TIMEOUT, "scan timeout, file passed", first.info, "timeout", Action.ALERT,
                                 {"scan_timeout": self.conf.scan_timeout, **({"files": names} if len(group) > 1 else {})},
                                 first.http)
        out.append(Hold(self.name, IORequest(kind, args), timeout=self.conf.scan_timeout,
                        on_timeout=Action.PASS, reason="av scan timeout", timeout_verdict=timeout_v))
        return out

    @staticmethod
    def _whole_in_feed(st: dict[str, Any], file: FileEvent) -> bool:
        """A streamed file (past the body limit) can be scanned only by its feed, whole and alive."""
        lost = file.tx_id in st["lost"]
        st["lost"].discard(file.tx_id)
        feed = st["feeds"].get(file.tx_id)
        return (not lost and not file.to_server and file.parts == 1 and feed is not None and not feed.failed
                and feed.fed == file.size)

    def on_io_result(self, flow: Any, request: IORequest, result: Any, error: str | None) -> Iterable[Decision] | None:
        if request.kind in ("clamd_stream", "clamd_drain"):  # the stream started / caught up: nothing to judge
            return None
        files: list[ScannedFile] = request.args.get("files") or [request.args["file"]]
        results: list[Any]
        if len(files) > 1 and error is None and isinstance(result, Mapping) and isinstance(result.get("results"), list):
            results = list(result["results"])
        else:
            results = [result] * len(files)
        scan_ms = round((time.monotonic() - float(request.args.get("started", time.monotonic()))) * 1000, 1)
        self._count_hold(scan_ms)
        self._remember(request, files, results, error)
        out: list[Decision] = []
        blocked = False
        for file, res in zip(files, results):
            err = error
            if err is None and isinstance(res, Mapping) and res.get("status") == "ERROR":
                err = str(res.get("error") or "clamd error")
            for v in self._verdicts(flow, file, request, res, err, scan_ms, page=not blocked):
                out.append(v)
                blocked = blocked or (isinstance(v, Verdict) and v.action is Action.DROP)
        return out

    def on_io_late(self, request: IORequest, result: Any, error: str | None) -> Iterable[Decision] | None:
        """A scan that answered after its hold timed out (the file passed with the timeout alarm):
        a clean verdict still spares the next copy of the file its scan."""
        if request.kind in ("clamd_scan", "clamd_wait"):
            files: list[ScannedFile] = request.args.get("files") or [request.args["file"]]
            results = result.get("results") if len(files) > 1 and isinstance(result, Mapping) else [result]
            if isinstance(results, list):
                self._remember(request, files, results, error)
        return None

    def _cache_key(self, sha256: str, size: int) -> tuple[str, int, str]:
        return (sha256, size, self.database)

    def _remember(self, request: IORequest, files: list[ScannedFile], results: list[Any], error: str | None) -> None:
        """Clean verdicts of whole files go into the verdict cache (see ``VerdictCache``)."""
        if error is not None or request.kind not in ("clamd_scan", "clamd_wait"):
            return
        now = time.monotonic()
        for file, res in zip(files, results):
            if file.whole and isinstance(res, Mapping) and res.get("status") == "OK" and not res.get("virus"):
                self.cache.add(self._cache_key(file.sha256, int(file.info.get("size", -1))), now)

    def _count_hold(self, ms: float) -> None:
        for limit in HOLD_BUCKETS:
            if ms < limit:
                self.count(f"hold_ms.under_{limit}")
                break
        else:
            self.count(f"hold_ms.over_{HOLD_BUCKETS[-1]}")
        self.count("hold_ms.total", int(round(ms)))

    def _verdicts(self, flow: Any, file: ScannedFile, request: IORequest, result: Any, error: str | None,
                  scan_ms: float, page: bool) -> list[Decision]:
        info = file.info
        out: list[Decision] = []
        if self.conf.fileinfo:
            out.append(Verdict(Action.NONE, self.name, event="fileinfo",
                               metadata={"fileinfo": info, **({"http": file.http} if file.http else {})}))
        if error is not None or not isinstance(result, Mapping):
            self.count("not_scanned.unavailable")
            why = "overloaded" if error and "busy" in error else "unavailable"
            out.append(self._policy(SID_UNAVAILABLE, f"scanner {why}, file passed", info, why, Action.ALERT,
                                    {"error": error or "no result"}, file.http))
            return out
        virus = str(result.get("virus") or "")
        if result.get("status") != "FOUND" or not virus:
            self.count("clean")
            return out
        extra: dict[str, Any] = {"virus": virus, "scan_ms": scan_ms}
        if "partial" in info:
            extra["not_scanned"] = info["partial"]["not_scanned"]
        elif info.get("state") == "TRUNCATED":
            extra["not_scanned"] = "the rest of the file (the transfer ended early)"
        if request.detached:
            extra["note"] = "completed by the end of its connection: it reached the PC before the scan"
        if virus.startswith("Heuristics.Encrypted"):
            self.count("encrypted")
            block = self.conf.encrypted_action == "block"
            out.append(self._found(flow, file, request, SID_ENCRYPTED, "encrypted archive", "encrypted", block, extra, page))
            return out
        if virus.startswith(("Heuristics.Broken", "Heuristics.Limits")):
            self.count("corrupt")
            block = self.conf.corrupt_action == "block"
            out.append(self._found(flow, file, request, SID_CORRUPT, "corrupt file", "corrupt", block, extra, page))
            return out
        self.count("infected")
        out.append(self._found(flow, file, request, SID_VIRUS, f"virus {virus}", "infected", True, extra, page))
        return out

    # -- verdicts --------------------------------------------------------------------------------
    def _policy(self, sid: int, what: str, info: Mapping[str, Any], reason: str, action: Action,
                extra: Mapping[str, Any], http: Mapping[str, Any] | None = None) -> Verdict:
        """A file passed without a verdict from clamd (fail-open), with an alarm."""
        meta: dict[str, Any] = {"fileinfo": dict(info), "av": {"action": "passed", "reason": reason, **extra}}
        if http:
            meta["http"] = dict(http)
        return Verdict(action, self.name, rule_id=sid, signature=f"VCR AV: {what}", category=POLICY_CATEGORY,
                       severity=3, reason=reason, scope=Scope.PACKET, metadata=meta)

    def _found(self, flow: Any, file: ScannedFile, request: IORequest, sid: int, what: str, reason: str, block: bool,
               extra: Mapping[str, Any], first: bool = True) -> Verdict:
        """A file clamd named: blocked (held packet dropped, block page or resets) or an alarm.
        ``first``: the first blocked file of its hold (another one already carries the page)."""
        block = block and not self.conf.monitor_only and not request.detached
        info = dict(file.info)
        meta: dict[str, Any] = {"fileinfo": info, "av": {"action": "blocked" if block else "passed", "reason": reason,
                                                         "direction": "upload" if file.to_server else "download",
                                                         "lan_host": file.lan_ip, **extra}}
        if file.http:
            meta["http"] = dict(file.http)
        severity = 1 if reason == "infected" else 2
        category = CATEGORY if reason == "infected" else POLICY_CATEGORY
        if not block:
            return Verdict(Action.ALERT, self.name, rule_id=sid, signature=f"VCR AV: {what}", category=category,
                           severity=severity, reason=reason, scope=Scope.PACKET, metadata=meta)
        page = render_antivirus(file.site, file.name, str(extra.get("virus", "")), upload=file.to_server,
                                box=self.box, ref=file.sha256[:12])
        # another file of the same message may already carry the page or the resets
        inject = block_injects(page, file, bool(request.args.get("page"))) if first else ()
        return Verdict(Action.DROP, self.name, rule_id=sid, signature=f"VCR AV: {what}", category=category,
                       severity=severity, reason=reason, scope=Scope.FLOW, metadata=meta, inject=inject)

    def needs_more(self, flow: Any) -> bool:
        """TCP flows that are (or may still be) HTTP stay in Python: their files are scanned."""
        app = flow_app_proto(flow) or "unknown"
        return flow.proto == PROTO_TCP and app in ("http", "unknown") and not flow.encrypted


def check_database(folder: Path) -> tuple[int, int]:
    """(signatures, files) of a clamd database folder; BundleError when it holds something else or
    a text database has a malformed line."""
    count, files = 0, 0
    try:
        entries = sorted(p for p in folder.iterdir() if p.is_file())
    except OSError as exc:
        raise BundleError(f"antivirus database unreadable: {exc}") from None
    for path in entries:
        if path.name in ("manifest.json",) or path.name.startswith("."):
            continue
        suffix = path.suffix.lower()
        if suffix not in DB_SUFFIXES:
            raise BundleError(f"{path.name}: not a ClamAV database file")
        files += 1
        if suffix in TEXT_DBS:
            for n, line in enumerate(path.read_text("utf-8", "replace").splitlines(), 1):
                if not line.strip():
                    continue
                parts = line.split(":")
                if suffix in (".ndb", ".ndu"):
                    ok = len(parts) >= 4 and parts[1].strip().isdigit() and all(c in "0123456789abcdefABCDEF*?{}-()|![]" for c in parts[3])
                elif suffix in (".ldb", ".ldu"):
                    ok = len(line.split(";")) >= 3
                else:
                    ok = len(parts) >= 3 and all(c in "0123456789abcdefABCDEF" for c in parts[0]) and (parts[1].isdigit() or parts[1] == "*")
                if not ok:
                    raise BundleError(f"{path.name}:{n}: malformed signature")
                count += 1
        else:
            count += 1
    if not files:
        raise BundleError("antivirus database has no signature file")
    return count, files
