"""Files seen in traffic (filters.app.files): HTTP bodies handed to engines' ``on_file`` through the pipeline."""
from __future__ import annotations

import hashlib
import os

import pytest

from filters.app.events import FileEvent
from filters.app.files import boundary_of, content_range, disposition_filename, multipart_parts, uri_filename
from filters.app.layer import AppLayer, AppSettings
from filters.engine import Engine, Hook
from filters.flow import FlowTable
from filters.packet import ACK, FIN, PSH, SYN
from filters.pipeline import Pipeline
from tests.filters.factories import CLIENT, tpacket

CISN, SISN = 1000, 5000


class FileTaker(Engine):
    """Overrides only ``on_file`` (and asks to see whole flows)."""

    name = "files"

    def __init__(self) -> None:
        super().__init__()
        self.files: list[FileEvent] = []

    def on_file(self, flow, file):
        self.files.append(file)
        return None

    def needs_more(self, flow) -> bool:
        return True


class Silent(Engine):
    """Overrides no hook at all."""

    name = "silent"

    def needs_more(self, flow) -> bool:
        return True


class Conversation:
    """One TCP connection through a pipeline: handshake, data both ways, FIN."""

    def __init__(self, pipe: Pipeline, port: int = 80) -> None:
        self.pipe, self.port, self.ts = pipe, port, 1.0
        self.cseq, self.sseq = CISN + 1, SISN + 1
        self._send(False, SYN, CISN, 0)
        self._send(True, SYN | ACK, SISN, CISN + 1)
        self._send(False, ACK, self.cseq, self.sseq)

    def _send(self, reply: bool, flags: int, seq: int, ack: int, payload: bytes = b"") -> None:
        self.ts += 0.001
        port = {"sport": self.port} if reply else {"dport": self.port}
        pkt = tpacket(reply=reply, tcp_flags=flags, seq=seq, ack=ack, payload=payload, ts=self.ts, **port)
        self.pipe.process(pkt, object(), self.ts)

    def client(self, data: bytes, mss: int = 1400) -> None:
        for i in range(0, len(data), mss):
            part = data[i:i + mss]
            self._send(False, ACK | PSH, self.cseq, self.sseq, part)
            self.cseq += len(part)

    def server(self, data: bytes, mss: int = 1400) -> None:
        for i in range(0, len(data), mss):
            part = data[i:i + mss]
            self._send(True, ACK | PSH, self.sseq, self.cseq, part)
            self.sseq += len(part)

    def close(self) -> None:
        self._send(True, FIN | ACK, self.sseq, self.cseq)
        self._send(False, FIN | ACK, self.cseq, self.sseq + 1)
        self.pipe.tick(self.ts + 10_000)  # the flow expires: its app-layer state is flushed


def pipeline(*engines: Engine, app: AppLayer | None = None) -> Pipeline:
    return Pipeline(list(engines), FlowTable(), app=app)


def download(body: bytes, *, headers: bytes = b"") -> tuple[bytes, bytes]:
    request = b"GET /files/report.pdf?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n"
    response = (b"HTTP/1.1 200 OK\r\nContent-Type: application/pdf; charset=binary\r\nContent-Length: %d\r\n" % len(body)
                + headers + b"\r\n" + body)
    return request, response


def test_a_download_is_one_file_with_its_hash_and_size():
    body = b"%PDF-1.4\n" + os.urandom(4991)
    taker = FileTaker()
    conv = Conversation(pipeline(taker))
    request, response = download(body)
    conv.client(request)
    conv.server(response)
    conv.close()
    (f,) = taker.files
    assert f.size == len(body) == len(f.data) and f.data == body
    assert f.sha256 == hashlib.sha256(body).hexdigest()
    assert not f.to_server and not f.truncated and f.proto == "http" and f.tx_id == 0 and f.tx.response_done
    assert f.name == b"report.pdf" and f.content_type == b"application/pdf" and f.magic == "PDF document"
    assert f.lan_ip == CLIENT


def test_an_upload_is_one_file():
    body = b"%PDF-1.4 upload " * 300
    taker = FileTaker()
    conv = Conversation(pipeline(taker))
    conv.client(b"POST /upload HTTP/1.1\r\nHost: example.com\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body) + body)
    conv.server(b"HTTP/1.1 204 No Content\r\n\r\n")
    conv.close()
    (f,) = taker.files
    assert f.to_server and f.size == len(body) and f.sha256 == hashlib.sha256(body).hexdigest()
    assert f.name == b"upload" and f.content_type == b"application/octet-stream" and not f.truncated


def test_bodiless_messages_make_no_file():
    taker = FileTaker()
    conv = Conversation(pipeline(taker))
    conv.client(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
    conv.server(b"HTTP/1.1 304 Not Modified\r\n\r\n")
    conv.close()
    assert taker.files == []


def test_an_engine_overriding_nothing_gets_nothing(monkeypatch):
    calls: list[str] = []
    for hook in Hook:  # any call reaching the base class's no-op hooks is recorded
        def record(self, *args, _name=hook.method):
            calls.append(f"{self.name}.{_name}")
        monkeypatch.setattr(Engine, hook.method, record)
    taker, silent = FileTaker(), Silent()
    conv = Conversation(pipeline(taker, silent))
    request, response = download(b"z" * 3000)
    conv.client(request)
    conv.server(response)
    conv.close()
    assert len(taker.files) == 1 and calls == []
    assert silent.counters == {}


def test_truncated_bodies_are_marked():
    limit = AppSettings(http_response_body_limit=100)
    taker = FileTaker()
    conv = Conversation(pipeline(taker, app=AppLayer(limit)))
    request, response = download(b"q" * 3000)
    conv.client(request)
    conv.server(response)
    conv.close()
    (f,) = taker.files
    assert f.truncated and f.size == 100 and f.sha256 == hashlib.sha256(b"q" * 100).hexdigest()


def test_a_body_cut_short_by_the_end_of_the_flow_is_marked():
    taker = FileTaker()
    conv = Conversation(pipeline(taker))
    request, response = download(b"r" * 3000)
    conv.client(request)
    conv.server(response[:-1000])
    conv.close()
    (f,) = taker.files
    assert f.truncated and f.size == 2000


def test_no_files_are_made_when_no_engine_takes_them():
    class HttpOnly(FileTaker):
        name = "http"

        def on_http_response(self, flow, ev):
            self.files.append(ev)

        on_file = Engine.on_file  # back to the base: not a FILE taker

    engine = HttpOnly()
    pipe = pipeline(engine)
    assert pipe.app is not None and not pipe.app.files
    conv = Conversation(pipe)
    request, response = download(b"s" * 500)
    conv.client(request)
    conv.server(response)
    conv.close()
    assert engine.files and not any(isinstance(e, FileEvent) for e in engine.files)
    assert "app.files" not in pipe.app.counters


def test_file_names():
    assert disposition_filename(b'attachment; filename="a b.exe"') == b"a b.exe"
    assert disposition_filename(b"attachment; filename=x.zip; size=3") == b"x.zip"
    assert disposition_filename(b"attachment; filename=\"fallback.txt\"; filename*=UTF-8''na%C3%AFve.txt") == "naïve.txt".encode()
    assert disposition_filename(b"inline") == b"" and disposition_filename(None) == b""
    assert uri_filename(b"/a/b/c.tar.gz?download=1#top") == b"c.tar.gz" and uri_filename(b"/dir/") == b""


def test_content_disposition_names_the_download():
    taker = FileTaker()
    conv = Conversation(pipeline(taker))
    request, response = download(b"t" * 10, headers=b'Content-Disposition: attachment; filename="invoice.xlsm"\r\n')
    conv.client(request)
    conv.server(response)
    conv.close()
    (f,) = taker.files
    assert f.name == b"invoice.xlsm"


def test_file_names_in_every_encoding_browsers_and_servers_use():
    jp = "請求書 ソフト.exe"
    # RFC 5987 / 2231 extended value, in UTF-8 and in Shift_JIS
    assert disposition_filename(b"attachment; filename*=UTF-8''%E8%AB%8B%E6%B1%82%E6%9B%B8%20%E3%82%BD%E3%83%95%E3%83%88.exe") == jp.encode()
    sjis = "".join(f"%{b:02X}" for b in jp.encode("cp932")).encode()
    assert disposition_filename(b"attachment; filename*=shift_jis'ja'" + sjis) == jp.encode()
    # RFC 2231 continuations
    assert disposition_filename(b"attachment; filename*0*=UTF-8''%E8%AB%8B%E6%B1%82; filename*1*=%E6%9B%B8.zip") == "請求書.zip".encode()
    assert disposition_filename(b'attachment; filename*0="long"; filename*1="name.txt"') == b"longname.txt"
    # raw UTF-8 (what browsers send in form uploads) and raw Shift_JIS (older Japanese Windows clients);
    # "ソ" in Shift_JIS is 0x83 0x5C: its second byte is a backslash and must not cut the name
    assert disposition_filename(b'form-data; name="f"; filename="' + jp.encode() + b'"') == jp.encode()
    assert disposition_filename(b'form-data; name="f"; filename="' + jp.encode("cp932") + b'"') == jp.encode()
    # RFC 2047 encoded words (some mailers and old servers)
    assert disposition_filename(b'attachment; filename="=?UTF-8?B?' + __import__("base64").b64encode(jp.encode()) + b'?="') == jp.encode()
    # the PC's full path sent by old browsers: its last segment
    assert disposition_filename(b'form-data; name="f"; filename="C:\\Users\\taro\\report.doc"') == b"report.doc"
    # a quote inside a quoted name (not followed by ';'), semicolons inside quotes
    assert disposition_filename(b'attachment; filename="a;b.txt"; size=3') == b"a;b.txt"
    assert disposition_filename(b'attachment; filename="unterminated.bin') == b"unterminated.bin"
    assert disposition_filename(b"attachment; filename*=bogus''%FF%FE") != b""  # unknown charset: kept, no error


def test_content_range_and_boundary():
    assert content_range(b"bytes 0-99/1000") == (0, 99, 1000)
    assert content_range(b"bytes 500-999/*") == (500, 999, None)
    assert content_range(b"bytes 9-1/10") is None and content_range(None) is None and content_range(b"junk") is None
    assert boundary_of(b'multipart/form-data; boundary="----WebKitFormBoundaryA1b2"') == b"----WebKitFormBoundaryA1b2"
    assert boundary_of(b"multipart/form-data; charset=utf-8; boundary=xyz") == b"xyz"
    assert boundary_of(b"multipart/form-data") == b""


B = b"----WebKitFormBoundary7MA4YWxkTrZu0gW"


def form(*parts: tuple[bytes, bytes], boundary: bytes = B, eol: bytes = b"\r\n", close: bool = True) -> bytes:
    out = b"preamble is ignored" + eol
    for headers, data in parts:
        out += b"--" + boundary + eol + headers.replace(b"\r\n", eol) + eol + eol + data + eol
    return out + (b"--" + boundary + b"--" + eol if close else b"")


def upload(conv: "Conversation", body: bytes, boundary: bytes = B) -> None:
    conv.client(b"POST /upload.cgi HTTP/1.1\r\nHost: example.com\r\nContent-Type: multipart/form-data; boundary=" + boundary
                + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    conv.server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    conv.close()


@pytest.mark.parametrize("eol", [b"\r\n", b"\n"])
def test_a_multipart_form_upload_is_one_file_per_file_part(eol: bytes):
    # The PE ends in a fixed byte: with bare-LF delimiters a part that ends in CR is ambiguous (the CR
    # is read as the CRLF before the boundary, as browsers send it), so random bytes must not end there.
    pe = b"MZ" + b"\0" * 58 + (64).to_bytes(4, "little") + b"PE\0\0" + b"\0" * 18 + b"\x0b\x01" + os.urandom(3000) + b"\0"
    pdf = b"%PDF-1.7\n" + os.urandom(2000) + b"\r\n--not the boundary\r\n"
    body = form(
        (b'Content-Disposition: form-data; name="comment"', b"a plain field is no file"),
        (b'Content-Disposition: form-data; name="f1"; filename="setup.jpg"\r\nContent-Type: image/jpeg', pe),
        (b'Content-Disposition: form-data; name="f2"; filename="' + "見積書.pdf".encode() + b'"', pdf),
        (b'Content-Disposition: form-data; name="f3"; filename=""\r\nContent-Type: application/octet-stream', b""),
        eol=eol)
    taker = FileTaker()
    conv = Conversation(pipeline(taker))
    upload(conv, body)
    files = [f for f in taker.files if f.to_server]
    assert [f.name for f in files] == [b"setup.jpg", "見積書.pdf".encode()]  # no file for the field or the empty input
    a, b = files
    assert a.data == pe and a.sha256 == hashlib.sha256(pe).hexdigest() and a.size == len(pe)
    assert a.magic.startswith("PE32") and a.content_type == b"image/jpeg"  # the type from the bytes, not the header
    assert b.data == pdf and b.magic == "PDF document" and not a.truncated and not b.truncated
    assert (a.part, a.parts, b.part, b.parts) == (0, 2, 1, 2) and a.tx_id == b.tx_id == 0


def test_a_multipart_upload_cut_by_the_body_limit_marks_only_its_last_part():
    big = os.urandom(5000)
    body = form((b'Content-Disposition: form-data; name="a"; filename="small.txt"', b"hello"),
                (b'Content-Disposition: form-data; name="b"; filename="big.bin"', big))
    taker = FileTaker()
    conv = Conversation(pipeline(taker, app=AppLayer(AppSettings(http_request_body_limit=2000))))
    upload(conv, body)
    small, cut = [f for f in taker.files if f.to_server]
    assert small.data == b"hello" and not small.truncated
    assert cut.truncated and cut.name == b"big.bin" and big.startswith(cut.data)


def test_a_body_that_claims_multipart_but_is_not_is_one_file():
    taker = FileTaker()
    conv = Conversation(pipeline(taker))
    upload(conv, b"MZ no boundary in here at all", boundary=b"abc")
    (f,) = [f for f in taker.files if f.to_server]
    assert f.data == b"MZ no boundary in here at all" and f.name == b"upload.cgi"


def test_hostile_multipart_bodies_never_raise():
    for body in (b"--x", b"--x\r\n", b"--x\r\nContent-Disposition: form-data; filename=a\r\n", b"--x--",
                 b"--x\r\n\r\n--x\r\n\r\n" * 1000, b"\n--x" * 5000, os.urandom(3000)):
        parts = multipart_parts(body, b"x")
        assert len(parts) <= 256


def test_a_partial_response_is_a_partial_file_with_its_range():
    chunk = os.urandom(1000)
    taker = FileTaker()
    conv = Conversation(pipeline(taker))
    conv.client(b"GET /big.iso HTTP/1.1\r\nHost: example.com\r\nRange: bytes=4000-4999\r\n\r\n")
    conv.server(b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 4000-4999/100000\r\nContent-Length: 1000\r\n\r\n" + chunk)
    conv.close()
    (f,) = taker.files
    assert f.partial and f.range == (4000, 4999, 100000) and f.data == chunk and not f.truncated
    assert f.magic == ""  # the middle of a file: no type from these bytes


def test_a_byteranges_response_is_one_partial_file_per_range():
    one, two = b"%PDF-1.4 first bytes", b"last bytes"
    body = (b"--RANGE\r\nContent-Type: application/pdf\r\nContent-Range: bytes 0-19/5000\r\n\r\n" + one
            + b"\r\n--RANGE\r\nContent-Type: application/pdf\r\nContent-Range: bytes 4990-4999/5000\r\n\r\n" + two
            + b"\r\n--RANGE--\r\n")
    taker = FileTaker()
    conv = Conversation(pipeline(taker))
    conv.client(b"GET /doc.pdf HTTP/1.1\r\nHost: example.com\r\nRange: bytes=0-19,4990-4999\r\n\r\n")
    conv.server(b"HTTP/1.1 206 Partial Content\r\nContent-Type: multipart/byteranges; boundary=RANGE\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body) + body)
    conv.close()
    a, b = taker.files
    assert (a.data, a.range, a.magic) == (one, (0, 19, 5000), "PDF document") and a.name == b"doc.pdf"
    assert (b.data, b.range, b.magic) == (two, (4990, 4999, 5000), "") and a.partial and b.partial
