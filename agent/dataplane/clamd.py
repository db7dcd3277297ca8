"""The agent's side of the antivirus: talking to the box's private clamd over its unix socket
(the protocol itself: filters/av/clamd.py, shared with the center's sandbox analyzer).

``scan`` streams a file with INSTREAM (``zINSTREAM``, 4-byte big-endian chunk lengths, a zero
chunk to end) and reads clamd's answer (``stream: OK``, ``stream: NAME FOUND``, ``... ERROR``).
``reload`` sends RELOAD: clamd loads the new database in the background and keeps scanning with
the old one until the new one is loaded (ConcurrentDatabaseReload, on by default since ClamAV
0.103), so there is no moment with no database. The scan performer sends it first when the
engine's database folder changed (a new av bundle went live); clamd's own SelfCheck would also
notice within its interval.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any, Mapping

from filters.av.clamd import (  # noqa: F401 (ping, version: this module's API too)
    ClamdError, end_stream, instream, parse_reply, ping, read_reply, reload, send_chunks, version)

log = logging.getLogger(__name__)


class ClamdBusy(ClamdError):
    """More scans in flight than allowed: clamd counts as overloaded."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"clamd busy: {limit} scans in flight")


_LOCK = threading.Lock()
_SLOT_FREE = threading.Condition(_LOCK)  # a stream ended: one waiting for a slot may start
_IN_FLIGHT: dict[str, int] = {}
_STREAMS: dict[str, int] = {}  # downloads being streamed (clamd_stream), at most max_streams
_WAITING: dict[str, int] = {}  # downloads whose stream waits for a slot
STREAM_WAITERS = 4  # streams that may wait for a slot, per slot; beyond, a download is not streamed
_DATABASE: dict[str, str] = {}  # socket -> the database folder clamd was last told to load


def _reload_if_new(path: str, database: str) -> None:
    if not database:
        return
    with _LOCK:
        known = _DATABASE.get(path)
        _DATABASE[path] = database
    if known is not None and known != database:
        try:
            log.info("antivirus database now %s: clamd RELOAD (%s)", database, reload(path))
        except ClamdError as exc:
            log.warning("clamd RELOAD failed: %s", exc)


def _scan_one(path: str, payload: Any, timeout: float) -> dict[str, Any]:
    t0 = time.monotonic()
    data = payload.take() if hasattr(payload, "take") else bytes(payload)
    out = instream(path, data, timeout)
    out["elapsed"] = time.monotonic() - t0
    return out


def scan(args: Mapping[str, Any]) -> dict[str, Any]:
    """The ``clamd_scan`` performer: ``args`` socket, data, timeout, max_concurrent, database.
    Returns {"status": "OK"|"FOUND", "virus": name, "elapsed": seconds}; raises ClamdError.

    With ``parts`` (the files of one message, e.g. a multipart upload) each is scanned in turn
    and the answer is {"results": [one answer per file]}, a file clamd failed on answering
    {"status": "ERROR", "error": ...}; the files share ``timeout``."""
    path = str(args["socket"])
    limit = int(args.get("max_concurrent", 4))
    with _LOCK:
        if _IN_FLIGHT.get(path, 0) >= limit:
            raise ClamdBusy(limit)
        _IN_FLIGHT[path] = _IN_FLIGHT.get(path, 0) + 1
    try:
        _reload_if_new(path, str(args.get("database") or ""))
        timeout = float(args.get("timeout", 5.0))
        parts = args.get("parts")
        if not parts:
            return _scan_one(path, args["data"], timeout)  # bytes, or the engine's FileData (handed over once)
        deadline = time.monotonic() + timeout
        results: list[dict[str, Any]] = []
        for payload in parts:
            try:
                results.append(_scan_one(path, payload, max(0.05, deadline - time.monotonic())))
            except ClamdError as exc:
                results.append({"status": "ERROR", "error": str(exc)})
        return {"status": "OK", "results": results}
    finally:
        with _LOCK:
            _IN_FLIGHT[path] -= 1


def stream(args: Mapping[str, Any]) -> dict[str, Any]:
    """The ``clamd_stream`` performer: start INSTREAM of a download while it arrives. A thread of
    its own (not the I/O pool's: a download may last minutes) sends what the engine's ``feed``
    (filters.av.engine.ScanFeed) is given; when the feed is closed it ends the stream and leaves
    clamd's answer in the feed. At most ``max_streams`` streams at once: a stream is one of clamd's
    connections (``MaxQueue`` in clamd.conf), not one of its scanning threads (clamd's receive
    thread writes it to a temporary file as it comes and hands it to a scanning thread at its end).
    A download beyond them waits for a free stream, its bytes queued in the feed (the engine's
    backpressure holds the flow from ``FEED_HIGH`` on): a file past the body limit is kept only by
    its stream, so a stream refused at a burst of downloads was a file passed unscanned. Only when
    ``STREAM_WAITERS`` per stream already wait is a download not streamed (then scanned whole at
    its end if it can be, else passed with the "scanner unavailable" alarm)."""
    path = str(args["socket"])
    feed = args["feed"]
    limit = max(1, int(args.get("max_streams") or int(args.get("max_concurrent", 4)) // 2))
    with _LOCK:
        if _WAITING.get(path, 0) >= limit * STREAM_WAITERS:
            feed.finish(error=f"{limit} streams in flight and {_WAITING[path]} waiting")
            return {"status": "NOT_STARTED"}
        _WAITING[path] = _WAITING.get(path, 0) + 1
    threading.Thread(target=_stream_thread, args=(path, feed, float(args.get("timeout", 30.0)),
                                                  str(args.get("database") or ""), limit),
                     name="clamd-stream", daemon=True).start()
    return {"status": "STREAMING"}


def _stream_slot(path: str, feed: Any, limit: int, idle: float) -> bool:
    """Wait (at most ``idle`` seconds, and not for a feed that ended) for one of the ``limit``
    streams; True when taken."""
    deadline = time.monotonic() + idle
    with _SLOT_FREE:
        try:
            while _STREAMS.get(path, 0) >= limit:
                left = deadline - time.monotonic()
                if left <= 0 or feed.aborted or feed.done.is_set():
                    return False
                _SLOT_FREE.wait(min(left, 0.05))
            _STREAMS[path] = _STREAMS.get(path, 0) + 1
            return True
        finally:
            _WAITING[path] -= 1


def _stream_thread(path: str, feed: Any, idle: float, database: str, limit: int = 2) -> None:
    if not _stream_slot(path, feed, limit, idle):
        feed.finish(error="aborted" if feed.aborted else f"no free stream to clamd in {idle:g} s")
        return
    t0 = time.monotonic()
    try:
        _reload_if_new(path, database)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(idle)
            s.connect(path)
            s.sendall(b"zINSTREAM\0")
            while True:
                data = feed.take(idle)
                if data is None:  # aborted: the file is not scanned this way
                    feed.finish(error="aborted")
                    return
                if not data:
                    break
                send_chunks(s, data)
            t1 = time.monotonic()
            end_stream(s)
            reply = read_reply(s)
        out = parse_reply(reply or "no answer")
        out["elapsed"], out["tail"] = time.monotonic() - t0, time.monotonic() - t1
        feed.finish(result=out)
    except (OSError, TimeoutError, ClamdError) as exc:
        feed.finish(error=f"clamd {path}: {exc}")
    except Exception as exc:  # noqa: BLE001 - a bug here must leave an answer, never a waiting hold
        log.exception("clamd stream failed")
        feed.finish(error=f"clamd stream: {exc}")
    finally:
        with _SLOT_FREE:
            _STREAMS[path] -= 1
            _SLOT_FREE.notify()


def wait(args: Mapping[str, Any]) -> dict[str, Any]:
    """The ``clamd_wait`` performer: the verdict of a streamed download (its feed is closed). When
    the stream failed (clamd restarted, idle too long...), the file is scanned the usual way."""
    feed = args["feed"]
    timeout = float(args.get("timeout", 5.0))
    if not feed.done.wait(timeout):
        raise ClamdError(f"clamd: no verdict in {timeout:g} s")
    if feed.error is None and feed.result is not None:
        return dict(feed.result)
    if args.get("streamed"):  # past the body limit the file went only to the stream: nothing to rescan
        raise ClamdError(f"streamed scan failed: {feed.error}")
    log.info("streamed scan failed (%s): scanning the file whole", feed.error)
    return scan(args)


def drain(args: Mapping[str, Any]) -> dict[str, Any]:
    """The ``clamd_drain`` performer: a download's packet held until its stream to clamd caught up
    (at most ``low`` bytes queued), so a download faster than clamd never piles up in the box."""
    feed = args["feed"]
    timeout = float(args.get("timeout", 5.0))
    if not feed.wait_below(int(args.get("low", 0)), timeout):
        raise ClamdError(f"clamd: stream did not catch up in {timeout:g} s")
    return {"status": "DRAINED"}
