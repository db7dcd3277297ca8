"""Files past the IPS body limit (``AppSettings.file_depth``, what the file engines declare with
``Engine.file_depth``): the download is followed to the file depth (a per-flow stream depth for
HTTP), hashed whole and handed out chunk by chunk, never kept; the IPS's body stays at its limit."""
from __future__ import annotations

import hashlib
import os

from filters.app.layer import AppLayer, AppSettings, file_stream_depth
from filters.flow import FlowTable
from filters.pipeline import Pipeline
from tests.filters.app.test_files import Conversation, FileTaker, download

KiB, MiB = 1 << 10, 1 << 20


class TailWatcher(FileTaker):
    """Collects the file bytes handed out past the body limit, and what the app layer held."""

    def __init__(self) -> None:
        super().__init__()
        self.tail = bytearray()
        self.offsets: list[int] = []
        self.max_held = 0
        self.app: AppLayer | None = None

    def on_http_response(self, flow, ev):
        t = ev.tx.response_file
        if ev.stage == "response_body" and t is not None and t.chunks:
            self.offsets.append(t.base)
            assert t.base == 100 * KiB + len(self.tail)  # each chunk handed out once, in order
            for c in t.chunks:
                self.tail += c
        if self.app is not None:
            self.max_held = max(self.max_held, self.app.held_total)
        return None


def run(body: bytes, file_depth: int, port: int = 80) -> tuple[TailWatcher, Conversation]:
    app = AppLayer(AppSettings(file_depth=file_depth))
    taker = TailWatcher()
    taker.app = app
    conv = Conversation(Pipeline([taker], FlowTable(stream_depth=1 * MiB), app=app), port=port)
    request, response = download(body)
    conv.client(request)
    conv.server(response)
    conv.close()
    return taker, conv


def test_a_download_past_the_body_limit_is_followed_to_the_file_depth_hashed_whole_and_not_kept():
    body = b"%PDF-1.4\n" + os.urandom(int(2.5 * MiB))  # 25x the body limit, past the 1 MiB stream depth
    taker, _ = run(body, file_depth=10 * MiB)
    (f,) = taker.files
    assert f.streamed and not f.truncated
    assert f.size == len(body) and f.sha256 == hashlib.sha256(body).hexdigest()
    assert f.data == body[:100 * KiB] and f.magic == "PDF document"
    # the IPS's buffer is as without file depth: cut at the body limit, marked, Suricata's anomaly
    assert f.tx.response_body_truncated and "http.body_limit" in f.tx.anomalies
    assert bytes(taker.tail) == body[100 * KiB:]  # every byte past the limit handed out once, in order
    assert len(taker.offsets) > 100  # packet by packet, not at the end
    assert taker.max_held < 512 * KiB, taker.max_held  # never the whole file in the parser


def test_without_a_file_engine_the_body_limit_and_stream_depth_stay_as_before():
    body = os.urandom(int(2.5 * MiB))
    taker, _ = run(body, file_depth=0)
    (f,) = taker.files
    assert not f.streamed and f.truncated and f.size == 100 * KiB
    assert f.sha256 == hashlib.sha256(body[:100 * KiB]).hexdigest()
    assert f.tx.response_file is None and taker.tail == b""


def test_a_download_larger_than_the_file_depth_is_cut_there_and_marked_truncated():
    body = os.urandom(3 * MiB)
    taker, _ = run(body, file_depth=2 * MiB)
    (f,) = taker.files
    assert f.streamed and f.truncated and f.tx.response_file.cut
    assert f.size == 2 * MiB and f.sha256 == hashlib.sha256(body[:2 * MiB]).hexdigest()
    assert len(taker.tail) == 2 * MiB - 100 * KiB


def test_only_http_flows_get_the_deeper_stream():
    app = AppLayer(AppSettings(file_depth=10 * MiB))
    table = FlowTable(stream_depth=1 * MiB)
    pipe = Pipeline([FileTaker()], table, app=app)
    http = Conversation(pipe, port=80)
    http.client(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    other = Conversation(pipe, port=8443)
    other.client(b"\x00\x01 not a protocol the box knows" * 10)
    depths = sorted((f.server_port, f.toclient.depth) for f in table)
    assert depths == [(80, file_stream_depth(10 * MiB)), (8443, 0)]
    assert file_stream_depth(10 * MiB) > 10 * MiB and file_stream_depth(0) == 0


def test_raw_stream_inspection_stops_at_the_configured_stream_depth():
    from filters.engine import Engine

    class Raw(Engine):
        name = "raw"

        def __init__(self) -> None:
            super().__init__()
            self.end = 0

        def on_stream(self, flow, to_server, data, offset):
            if not to_server:
                self.end = max(self.end, offset + len(data))
            return None

        def needs_more(self, flow) -> bool:
            return True

    raw, taker = Raw(), FileTaker()
    app = AppLayer(AppSettings(file_depth=10 * MiB))
    conv = Conversation(Pipeline([raw, taker], FlowTable(stream_depth=1 * MiB), app=app))
    body = os.urandom(3 * MiB)
    request, response = download(body)
    conv.client(request)
    conv.server(response)
    conv.close()
    (f,) = taker.files
    assert f.size == len(body) and not f.truncated  # the file engines got it all
    assert raw.end == 1 * MiB  # the IPS's raw stream: the configured depth, as without file engines


def test_each_download_of_a_kept_alive_connection_gets_its_own_file_depth():
    app = AppLayer(AppSettings(file_depth=4 * MiB))
    taker = FileTaker()
    conv = Conversation(Pipeline([taker], FlowTable(stream_depth=1 * MiB), app=app))
    bodies = [os.urandom(3 * MiB), os.urandom(3 * MiB), os.urandom(3 * MiB)]  # 9 MiB: past one file depth
    for body in bodies:
        request, response = download(body)
        conv.client(request)
        conv.server(response)
    conv.close()
    assert [(f.size, f.sha256, f.truncated) for f in taker.files] == \
        [(len(b), hashlib.sha256(b).hexdigest(), False) for b in bodies]
