"""Bugs the fuzzers found, one explicit test each (the input is also in corpus/<target>/crash-*)."""
from __future__ import annotations

import io
import json
import struct
import tarfile
from pathlib import Path

import pytest

from filters.app.dns import RCODE_FORMERR, RCODE_NXDOMAIN, build_response, nxdomain, parse_dns
from filters.app.http import HttpParser


# -- DNS: a sinkhole answer must carry the query's questions, or none ---------------------------------


def _query(question: bytes, trailer: bytes = b"") -> bytes:
    return struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + question + trailer


def test_answer_to_a_question_pointing_past_its_section_is_formerr():
    # The name is a compression pointer to bytes after the question section (offset 18): copied
    # behind the answer's header, the section would point into nothing. Found by the dns target.
    name = b"\x04evil\x07example\x00"
    query = _query(b"\xc0\x12" + struct.pack("!HH", 1, 1), name)
    assert parse_dns(query).questions[0].name == b"evil.example"
    for answer in (nxdomain(query), build_response(query, answers=[(1, b"\xc0\x00\x02\x02")])):
        reply = parse_dns(answer)
        assert reply is not None and not reply.truncated and reply.txid == 0x1234
        assert reply.rcode == RCODE_FORMERR and reply.questions == () and reply.answers == ()


def test_answer_to_a_question_pointing_into_the_header_is_formerr():
    query = _query(b"\x03abc\xc0\x00" + struct.pack("!HH", 1, 1))  # the name continues in the header
    reply = parse_dns(nxdomain(query))
    assert reply is not None and not reply.truncated and reply.rcode == RCODE_FORMERR and reply.questions == ()


def test_answer_keeps_questions_that_point_inside_their_section():
    second = b"\x03www" + b"\xc0\x0c"  # www.<first question's name>
    query = struct.pack("!HHHHHH", 7, 0x0100, 2, 0, 0, 0) + b"\x04evil\x07example\x00" + struct.pack("!HH", 1, 1) \
        + second + struct.pack("!HH", 28, 1)
    reply = parse_dns(build_response(query, answers=[(1, b"\xc0\x00\x02\x02")]))
    assert reply is not None and not reply.truncated and reply.rcode == 0
    assert [q.name for q in reply.questions] == [b"evil.example", b"www.evil.example"]
    assert reply.answers[0].name == b"evil.example"
    assert parse_dns(nxdomain(query)).rcode == RCODE_NXDOMAIN


# -- HTTP: the decoded body does not depend on the segmentation --------------------------------------

DEFLATE_JUNK = b"K\nContent-Encoding:deflate\nContent-Length:20\n\n\xb3\xb9H\xdbTT"  # minimized from the http target


def _request_body(data: bytes, size: int) -> tuple[bytes, list[str]]:
    parser = HttpParser()
    for i in range(0, len(data), size):
        parser.feed(True, data[i : i + size])
    parser.close()
    (tx,) = parser.transactions
    return tx.request_body, tx.anomalies


def test_headerless_deflate_that_fails_gives_the_same_body_however_it_is_cut():
    # "\xb3\xb9" decodes to two bytes as raw deflate, then the stream fails. In one piece the
    # error comes before any output and the body falls back to the raw bytes; cut into pieces
    # the two bytes used to come out first and the layer then died with them.
    whole = _request_body(DEFLATE_JUNK, len(DEFLATE_JUNK))
    assert whole[0] == b"\xb3\xb9H\xdbTT"
    for size in (1, 2, 3, 5, 8):
        assert _request_body(DEFLATE_JUNK, size) == whole, size


def test_valid_deflate_still_streams_and_decodes_the_same_cut():
    import zlib

    text = b"hello world " * 200
    comp = zlib.compress(text)[2:-4]
    msg = b"POST / HTTP/1.1\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n" % len(comp) + comp
    for size in (1, 7, len(msg)):
        body, anomalies = _request_body(msg, size)
        assert body == text[:len(body)] and len(body) == min(len(text), 100 * 1024), (size, anomalies)


# -- bundle manifests: only UpdateError -------------------------------------------------------------


def _bundle(tmp_path: Path, manifest: bytes) -> Path:
    path = tmp_path / "ips-1.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
    return path


@pytest.mark.parametrize("manifest", [b"1", b"[]", b'"ips"', b"null", b"[" * 100_000 + b"]" * 100_000],
                         ids=["int", "list", "string", "null", "deep"])
def test_a_manifest_that_is_not_an_object_is_refused(tmp_path: Path, manifest: bytes):
    from agent.lifecycle.updates import UpdateError, unpack_bundle

    with pytest.raises(UpdateError) as err:
        unpack_bundle(_bundle(tmp_path, manifest), tmp_path / "staging", kind="ips", version="1")
    assert err.value.reason == "manifest"
    json.dumps(err.value.detail)


# -- the pipeline: the offline mode's final tick releases every packet ---------------------------------


def test_a_hold_started_while_a_timed_out_one_resumes_times_out_in_the_same_tick():
    # Found by the pipeline target (a DNS flow whose packets each asked the web filter for a
    # look-up): at the offline mode's final tick(inf) the first hold timed out, its queued packets
    # were inspected, one of them started a new hold (deadline inf + timeout) and that one stayed:
    # its packets were never released.
    from typing import ClassVar

    from filters.engine import Action, Engine, Hold, IORequest
    from filters.flow import FlowTable
    from filters.packet import parse_ip
    from filters.pipeline import Pipeline
    from scapy.layers.inet import IP, UDP

    class HoldsEveryPacket(Engine):
        name: ClassVar[str] = "holder"

        def on_packet(self, pkt, flow):
            return [Hold(self.name, IORequest("lookup", {"n": pkt.payload.decode()}), timeout=0.5,
                         on_timeout=Action.PASS)]

        def on_io_late(self, request, result, error):
            return None

        def needs_more(self, flow):
            return True  # keep inspecting: every packet asks again

    pipeline = Pipeline([HoldsEveryPacket()], FlowTable())
    packets = [parse_ip(bytes(IP(src="192.0.2.10", dst="198.51.100.7") / UDP(sport=1000, dport=53) / f"q{i}".encode()),
                        10.0 + i) for i in range(4)]
    released = []
    for token, pkt in enumerate(packets):
        released += pipeline.process(pkt, token, pkt.ts)
    assert released == [] and len(pipeline.take_io()) == 1  # the first holds the flow, the rest queue
    released += pipeline.tick(float("inf"))
    assert sorted(r.token for r in released) == [0, 1, 2, 3]
    assert pipeline.held_packets == 0 and pipeline.next_deadline() is None
    assert pipeline.counters["hold.timeouts"] == 4
