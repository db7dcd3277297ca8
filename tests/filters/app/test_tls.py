"""Tests for filters.app.tls: record/handshake reassembly, hellos, JA3, X.509 fields, limits, fuzzing."""
from __future__ import annotations

import contextlib
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from filters.app import tls
from filters.app.events import TlsHello
from filters.app.tls import TlsError, TlsParser, looks_like_tls, parse_certificate
from tests.shared_data import SharedData

FUZZ = settings(max_examples=1000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


# --- builders ------------------------------------------------------------------------------------


def u16(v: int) -> bytes:
    return struct.pack("!H", v)


def vec8(b: bytes) -> bytes:
    return bytes([len(b)]) + b


def vec16(b: bytes) -> bytes:
    return u16(len(b)) + b


def vec24(b: bytes) -> bytes:
    return struct.pack("!I", len(b))[1:] + b


def ext(ext_type: int, body: bytes) -> bytes:
    return u16(ext_type) + vec16(body)


def handshake(msg_type: int, body: bytes) -> bytes:
    return bytes([msg_type]) + vec24(body)


def record(ctype: int, payload: bytes, version: int = 0x0301) -> bytes:
    return bytes([ctype]) + u16(version) + vec16(payload)


def records(ctype: int, payload: bytes, size: int) -> bytes:
    """``payload`` cut into records of ``size`` bytes."""
    return b"".join(record(ctype, payload[i : i + size]) for i in range(0, len(payload), size))


GREASE_CIPHER, GREASE_EXT, GREASE_GROUP = 0x0A0A, 0x3A3A, 0x5A5A


def client_hello_body(
    sni: bytes = b"www.example.com",
    ciphers: tuple[int, ...] = (GREASE_CIPHER, 0x1301, 0x1302, 0xC02F),
    alpn: tuple[bytes, ...] = (b"h2", b"http/1.1"),
    groups: tuple[int, ...] = (GREASE_GROUP, 29, 23),
    versions: tuple[int, ...] = (0x0304, 0x0303),
    extra: bytes = b"",
    version: int = 0x0303,
) -> bytes:
    exts = ext(GREASE_EXT, b"")
    exts += ext(0, vec16(b"\x00" + vec16(sni)))
    exts += ext(10, vec16(b"".join(u16(g) for g in groups)))
    exts += ext(11, vec8(b"\x00"))
    exts += ext(16, vec16(b"".join(vec8(p) for p in alpn)))
    exts += ext(43, vec8(b"".join(u16(v) for v in versions)))
    exts += extra
    return (
        u16(version)
        + bytes(range(32))
        + vec8(b"\x11" * 32)
        + vec16(b"".join(u16(c) for c in ciphers))
        + vec8(b"\x00")
        + vec16(exts)
    )


def server_hello_body(cipher: int = 0xC02F, tls13: bool = False, alpn: bytes = b"h2", random: bytes = b"\x22" * 32) -> bytes:
    exts = ext(16, vec16(vec8(alpn))) if alpn else b""
    if tls13:
        exts += ext(43, u16(0x0304))
    return u16(0x0303) + random + vec8(b"") + u16(cipher) + b"\x00" + vec16(exts)


CLIENT_HELLO = record(22, handshake(1, client_hello_body()))


# DER -----------------------------------------------------------------------------------------------


def der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + content


def oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return der(0x06, bytes(out))


def seq(*parts: bytes) -> bytes:
    return der(0x30, b"".join(parts))


def name(*rdns: list[tuple[str, int, bytes]]) -> bytes:
    return seq(*(der(0x31, b"".join(seq(oid(o), der(tag, v)) for o, tag, v in rdn)) for rdn in rdns))


OID_CN, OID_C, OID_O, OID_OU = "2.5.4.3", "2.5.4.6", "2.5.4.10", "2.5.4.11"
PRINTABLE, UTF8, BMP = 0x13, 0x0C, 0x1E


def certificate(
    serial: bytes = b"\x00\x9c\xfc\xda\x1d",
    issuer: bytes = b"",
    subject: bytes = b"",
    sans: tuple[bytes, ...] = (b"example.com", b"*.example.com"),
    critical: bool = False,
) -> bytes:
    issuer = issuer or name(
        [(OID_C, PRINTABLE, b"US")], [(OID_O, PRINTABLE, b"Example CA")], [(OID_CN, PRINTABLE, b"Example CA R1")]
    )
    subject = subject or name([(OID_C, PRINTABLE, b"US")], [(OID_O, UTF8, b"Example Inc")], [(OID_CN, UTF8, b"*.example.com")])
    alg = seq(oid("1.2.840.113549.1.1.11"), der(0x05, b""))
    general_names = seq(*(der(0x82, s) for s in sans), der(0x87, b"\x7f\x00\x00\x01"))
    san_ext = seq(oid("2.5.29.17"), *( [der(0x01, b"\xff")] if critical else []), der(0x04, general_names))
    other_ext = seq(oid("2.5.29.19"), der(0x04, seq()))
    tbs = seq(
        der(0xA0, der(0x02, b"\x02")),
        der(0x02, serial),
        alg,
        issuer,
        seq(der(0x17, b"200101000000Z"), der(0x17, b"300101000000Z")),
        subject,
        seq(seq(oid("1.2.840.113549.1.1.1"), der(0x05, b"")), der(0x03, b"\x00\x01\x02")),
        der(0xA3, seq(other_ext, san_ext)),
    )
    return seq(tbs, alg, der(0x03, b"\x00" + b"\x55" * 16))


def certificate_msg(*certs: bytes) -> bytes:
    return handshake(11, vec24(b"".join(vec24(c) for c in certs)))


def feed_all(parser: TlsParser, to_server: bool, data: bytes, size: int) -> list[TlsHello]:
    out: list[TlsHello] = []
    for i in range(0, len(data), size):
        out += parser.feed(to_server, data[i : i + size])
    return out


# --- ClientHello -----------------------------------------------------------------------------------


def test_client_hello_fields_and_ja3() -> None:
    p = TlsParser()
    [hello] = p.feed(True, CLIENT_HELLO)
    assert hello.to_server and hello.version == 0x0303
    assert hello.sni == b"www.example.com"
    assert hello.alpn == (b"h2", b"http/1.1")
    assert hello.ciphers == (GREASE_CIPHER, 0x1301, 0x1302, 0xC02F)  # as on the wire
    assert hello.extensions == (GREASE_EXT, 0, 10, 11, 16, 43)
    assert hello.supported_versions == (0x0304, 0x0303)
    # JA3 drops GREASE from ciphers, extensions and groups
    assert hello.ja3 == "771,4865-4866-49199,0-10-11-16-43,29-23,0"
    assert not p.failed and not p.encrypted and p.anomalies == []


def test_ja3_of_hello_without_extensions() -> None:
    body = u16(0x0301) + bytes(32) + vec8(b"") + vec16(u16(0x002F) + u16(0x0035)) + vec8(b"\x00")
    [hello] = TlsParser().feed(True, record(22, handshake(1, body)))
    assert hello.ja3 == "769,47-53,,,"
    assert hello.sni == b"" and hello.extensions == ()


def test_ja4_of_foxio_reference_hello() -> None:
    """The ClientHello of FoxIO's JA4 example: 15 ciphers, 16 extensions (SNI and ALPN h2 among
    them), TLS 1.3 in supported_versions; GREASE values are ignored, the order on the wire too."""
    ciphers = (GREASE_CIPHER, 0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC013, 0xC014,
               0x009C, 0x009D, 0x002F, 0x0035)
    sigs = (0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601)
    extra = ext(13, vec16(b"".join(u16(a) for a in sigs)))
    for e in (0x0005, 0x0012, 0x0015, 0x0017, 0x001B, 0x0023, 0x002D, 0x0033, 0x4469, 0xFF01):
        extra += ext(e, b"")
    body = client_hello_body(ciphers=ciphers, alpn=(b"h2", b"http/1.1"), versions=(0x0A0A, 0x0304, 0x0303), extra=extra)
    [hello] = TlsParser().feed(True, record(22, handshake(1, body)))
    assert hello.ja4 == "t13d1516h2_8daaf6152771_e5627efa2ab1"


def test_ja4_without_sni_alpn_or_extensions() -> None:
    body = u16(0x0303) + bytes(32) + vec8(b"") + vec16(u16(0x002F) + u16(0x0035)) + vec8(b"\x00")
    [hello] = TlsParser().feed(True, record(22, handshake(1, body)))
    # TLS 1.2 from the legacy version, no SNI ("i"), no ALPN ("00"), no extensions to hash
    assert hello.ja4 == "t12i020000_" + __import__("hashlib").sha256(b"002f,0035").hexdigest()[:12] + "_000000000000"


def test_ja3s_of_server_hello() -> None:
    p = TlsParser()
    p.feed(True, CLIENT_HELLO)
    [server] = p.feed(False, record(22, handshake(2, server_hello_body(tls13=True)), 0x0303))
    assert server.ja3s == "771,49199,16-43" and server.ja3 == "" and server.ja4 == ""


def test_is_grease() -> None:
    assert all(tls.is_grease(v) for v in (0x0A0A, 0x1A1A, 0xAAAA, 0xFAFA))
    assert not any(tls.is_grease(v) for v in (0x0A1A, 0x1301, 0x0000, 0x0B0B))


def test_split_at_every_byte_boundary() -> None:
    [reference] = TlsParser().feed(True, CLIENT_HELLO)
    for cut in range(1, len(CLIENT_HELLO)):
        p = TlsParser()
        first = p.feed(True, CLIENT_HELLO[:cut])
        second = p.feed(True, CLIENT_HELLO[cut:])
        assert first == [] and second == [reference], cut


def test_byte_by_byte() -> None:
    p = TlsParser()
    events = feed_all(p, True, CLIENT_HELLO, 1)
    assert [e.sni for e in events] == [b"www.example.com"]


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 17, 100, 255])
def test_handshake_message_split_across_records(size: int) -> None:
    stream = records(22, handshake(1, client_hello_body()), size)
    [hello] = TlsParser().feed(True, stream)
    assert hello.sni == b"www.example.com"
    for cut in range(1, len(stream), 7):  # and the stream itself cut anywhere
        p = TlsParser()
        assert [e.sni for e in p.feed(True, stream[:cut]) + p.feed(True, stream[cut:])] == [b"www.example.com"]


def test_every_prefix_is_silent() -> None:
    for cut in range(len(CLIENT_HELLO)):
        p = TlsParser()
        assert p.feed(True, CLIENT_HELLO[:cut]) == []
        assert not p.failed


def test_duplicate_and_bad_extensions_are_noted() -> None:
    extra = ext(0, vec16(b"\x00" + vec16(b"evil.example"))) + ext(16, b"\x00\x09\x05")  # dup SNI, bad ALPN
    p = TlsParser()
    [hello] = p.feed(True, record(22, handshake(1, client_hello_body(extra=extra))))
    assert hello.sni == b"www.example.com"  # the first SNI wins
    assert "tls.duplicate_extension" in p.anomalies
    p = TlsParser()
    bad_sni = client_hello_body().replace(b"\x00\x00\x00\x14\x00\x12\x00\x00\x0f", b"\x00\x00\x00\x14\x00\x40\x00\x00\x0f")
    [hello] = p.feed(True, record(22, handshake(1, bad_sni)))
    assert hello.sni == b"" and hello.alpn == (b"h2", b"http/1.1")
    assert "tls.bad_extension" in p.anomalies


def test_truncated_client_hello_keeps_what_was_decoded() -> None:
    body = client_hello_body()
    cut = body[: body.index(b"\x00\x10")]  # ends before ALPN, inside the extensions block
    p = TlsParser()
    [hello] = p.feed(True, record(22, handshake(1, cut)))
    assert hello.ciphers and "tls.bad_client_hello" in p.anomalies
    assert not p.failed


def test_multiple_sni_entries_take_host_name() -> None:
    sni_list = vec16(b"\x05" + vec16(b"other") + b"\x00" + vec16(b"real.example"))
    body = client_hello_body(extra=b"").replace(ext(0, vec16(b"\x00" + vec16(b"www.example.com"))), ext(0, sni_list))
    [hello] = TlsParser().feed(True, record(22, handshake(1, body)))
    assert hello.sni == b"real.example"


# --- server side -----------------------------------------------------------------------------------


def test_tls12_server_hello_with_certificate_in_one_record() -> None:
    leaf, ca = certificate(), certificate(serial=b"\x01", sans=())
    flight = handshake(2, server_hello_body()) + certificate_msg(leaf, ca) + handshake(14, b"")
    p = TlsParser()
    assert p.feed(True, CLIENT_HELLO)
    [server] = p.feed(False, record(22, flight, 0x0303))
    assert not server.to_server and server.version == 0x0303
    assert server.ciphers == (0xC02F,) and server.alpn == (b"h2",)
    assert server.cert_subject == b"C=US, O=Example Inc, CN=*.example.com"
    assert server.cert_issuer == b"C=US, O=Example CA, CN=Example CA R1"
    assert server.cert_serial == b"00:9C:FC:DA:1D"
    assert server.cert_sans == (b"example.com", b"*.example.com")
    assert server.certs == (leaf, ca) and server.ja3 == ""


@pytest.mark.parametrize("size", [1, 3, 64, 1000])
def test_server_flight_split_anywhere(size: int) -> None:
    flight = handshake(2, server_hello_body()) + certificate_msg(certificate()) + handshake(14, b"")
    stream = records(22, flight, 200)
    p = TlsParser()
    events = feed_all(p, False, stream, size)
    assert [e.cert_subject for e in events] == [b"C=US, O=Example Inc, CN=*.example.com"]


def test_tls12_handshake_becomes_encrypted() -> None:
    p = TlsParser()
    p.feed(True, CLIENT_HELLO)
    p.feed(False, record(22, handshake(2, server_hello_body()) + certificate_msg(certificate()) + handshake(14, b"")))
    p.feed(True, record(22, handshake(16, b"\x00" * 33)) + record(20, b"\x01") + record(22, b"\x99" * 40))
    assert not p.encrypted
    p.feed(False, record(20, b"\x01") + record(22, b"\x77" * 40))
    assert p.encrypted and not p.failed
    assert p.feed(True, record(23, b"secret")) == []
    assert p.feed(True, b"anything at all") == [] and not p.failed


def test_resumption_without_certificate_reports_server_hello_at_ccs() -> None:
    p = TlsParser()
    p.feed(True, CLIENT_HELLO)
    [server] = p.feed(False, record(22, handshake(2, server_hello_body())) + record(20, b"\x01"))
    assert server.certs == () and server.cert_subject == b"" and server.ciphers == (0xC02F,)


def test_server_key_exchange_without_certificate() -> None:
    p = TlsParser()
    events = p.feed(False, record(22, handshake(2, server_hello_body()) + handshake(12, b"\x01" * 10)))
    assert len(events) == 1 and events[0].certs == ()


def test_tls13_server_hello_has_no_certificate() -> None:
    p = TlsParser()
    p.feed(True, CLIENT_HELLO)
    [server] = p.feed(False, record(22, handshake(2, server_hello_body(cipher=0x1301, tls13=True)), 0x0303))
    assert server.supported_versions == (0x0304,) and server.certs == ()
    assert p.feed(False, record(20, b"\x01") + record(23, b"\xaa" * 300)) == []  # encrypted EE/Cert/CV/Fin
    assert not p.encrypted
    p.feed(True, record(20, b"\x01") + record(23, b"\xbb" * 50))
    assert p.encrypted


def test_hello_retry_request_then_second_client_hello() -> None:
    hrr_random = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
    p = TlsParser()
    assert len(p.feed(True, CLIENT_HELLO)) == 1
    assert p.feed(False, record(22, handshake(2, server_hello_body(tls13=True, random=hrr_random)))) == []
    p.feed(False, record(20, b"\x01"))  # middlebox-compatibility CCS: not the end of the handshake
    second = record(20, b"\x01") + record(22, handshake(1, client_hello_body(sni=b"second.example")))
    assert [e.sni for e in p.feed(True, second)] == [b"second.example"]
    [server] = p.feed(False, record(22, handshake(2, server_hello_body(tls13=True))))
    assert server.supported_versions == (0x0304,)
    assert not p.encrypted
    p.feed(False, record(23, b"\xaa" * 100))
    p.feed(True, record(23, b"\xbb" * 40))
    assert p.encrypted


def test_early_data_then_hello_retry_request() -> None:
    hrr_random = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
    p = TlsParser()
    assert len(p.feed(True, CLIENT_HELLO + record(20, b"\x01") + record(23, b"\x01" * 50))) == 1  # 0-RTT
    p.feed(False, record(22, handshake(2, server_hello_body(tls13=True, random=hrr_random))))
    second = record(22, handshake(1, client_hello_body(sni=b"retry.example")))
    assert [e.sni for e in p.feed(True, second)] == [b"retry.example"]
    assert not p.encrypted


def test_client_hello_count_is_capped() -> None:
    p = TlsParser()
    events = p.feed(True, CLIENT_HELLO * (tls.MAX_CLIENT_HELLOS + 3))
    assert len(events) == tls.MAX_CLIENT_HELLOS
    assert "tls.too_many_client_hellos" in p.anomalies


# --- limits and garbage ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "anomaly"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "tls.bad_record_type"),
        (b"\x16\x02\x00\x00\x10" + b"\x00" * 16, "tls.bad_record_version"),
        (b"\x16\x03\x01\xff\xff" + b"\x00" * 100, "tls.record_too_long"),
        (b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10", "tls.sslv2_hello"),
    ],
)
def test_garbage_fails(data: bytes, anomaly: str) -> None:
    p = TlsParser()
    assert p.feed(True, data) == []
    assert p.failed and anomaly in p.anomalies
    assert p.feed(True, CLIENT_HELLO) == []  # stays failed


def test_garbage_after_a_valid_record_fails() -> None:
    p = TlsParser()
    assert len(p.feed(True, CLIENT_HELLO + b"\x00garbage")) == 1
    assert p.failed


def test_largest_record_is_accepted() -> None:
    body = client_hello_body(extra=ext(21, b"\x00" * (tls.MAX_RECORD - 200)))  # padding extension
    stream = record(22, handshake(1, body)[: tls.MAX_RECORD]) + record(22, handshake(1, body)[tls.MAX_RECORD :])
    p = TlsParser()
    [hello] = p.feed(True, stream)
    assert hello.sni == b"www.example.com" and not p.failed


def test_oversized_handshake_message_is_skipped() -> None:
    huge = handshake(11, b"\x00" * (tls.MAX_HANDSHAKE + 100))
    p = TlsParser()
    events = p.feed(True, records(22, huge, 16384) + CLIENT_HELLO)
    assert [e.sni for e in events] == [b"www.example.com"]
    assert "tls.handshake_too_long" in p.anomalies and not p.failed
    assert len(p._sides[True].handshake) == 0


def test_huge_announced_lengths_do_not_buffer() -> None:
    p = TlsParser()
    p.feed(True, record(22, b"\x01\xff\xff\xff" + b"\x00" * 1000))
    assert "tls.handshake_too_long" in p.anomalies
    assert len(p._sides[True].handshake) <= 4


def test_looks_like_tls() -> None:
    assert looks_like_tls(CLIENT_HELLO)
    assert looks_like_tls(CLIENT_HELLO[:3]) and looks_like_tls(CLIENT_HELLO[:5])
    assert looks_like_tls(record(22, handshake(2, server_hello_body())))
    assert not looks_like_tls(b"\x16\x03")
    assert not looks_like_tls(b"GET / HTTP/1.1\r\n")
    assert not looks_like_tls(b"\x16\x03\x01\x00\x00\x01")  # empty record
    assert not looks_like_tls(b"\x16\x03\x01\x50\x00\x01")  # longer than a record can be
    assert not looks_like_tls(b"\x16\x03\x01\x00\x10\x0b")  # handshake starts with a Certificate
    assert not looks_like_tls(b"\x17\x03\x03\x00\x10")


# --- X.509 -----------------------------------------------------------------------------------------


def test_certificate_name_formatting() -> None:
    subject = name(
        [(OID_C, PRINTABLE, b"DE")],
        [(OID_OU, PRINTABLE, b"Ops"), (OID_O, PRINTABLE, b"Multi")],  # multi-valued RDN
        [("2.5.4.97", UTF8, b"VATDE-1")],  # organizationIdentifier: not abbreviated
        [(OID_CN, BMP, "B\u00fccher".encode("utf-16-be"))],
        [("1.2.840.113549.1.9.1", 0x16, b"a@b.example")],
        [("2.5.4.5", 0x04, b"\x01\xab")],  # not a string: hex
    )
    info = parse_certificate(certificate(subject=subject, critical=True))
    assert info.subject == (
        "C=DE, OU=Ops + O=Multi, 2.5.4.97=VATDE-1, CN=B\u00fccher, Email=a@b.example, serialNumber=01AB".encode()
    )
    assert info.sans == (b"example.com", b"*.example.com")  # critical flag skipped


def test_certificate_without_version_or_extensions() -> None:
    alg = seq(oid("1.2.840.113549.1.1.5"), der(0x05, b""))
    tbs = seq(der(0x02, b"\x05"), alg, name([(OID_CN, PRINTABLE, b"v1 CA")]), seq(), name([(OID_CN, PRINTABLE, b"v1")]), seq())
    info = parse_certificate(seq(tbs, alg, der(0x03, b"\x00")))
    assert (info.subject, info.issuer, info.serial, info.sans) == (b"CN=v1", b"CN=v1 CA", b"05", ())


def test_bad_certificate_is_noted_not_fatal() -> None:
    p = TlsParser()
    [server] = p.feed(False, record(22, handshake(2, server_hello_body()) + certificate_msg(b"\x30\x03\x02\x01")))
    assert server.certs == (b"\x30\x03\x02\x01",) and server.cert_subject == b""
    assert "tls.bad_certificate" in p.anomalies and not p.failed


def test_damaged_extensions_lose_only_sans() -> None:
    cert = bytearray(certificate())
    idx = cert.index(oid("2.5.29.17"))
    cert[idx + 6] = 0x7F  # break the OCTET STRING tag of the SAN value
    info = parse_certificate(bytes(cert))
    assert info.subject.endswith(b"CN=*.example.com") and info.sans == ()


@pytest.mark.parametrize(
    "der_bytes", [b"", b"\x30", b"\x30\x84\xff\xff\xff\xff", b"\x30\x80\x00\x00", b"\x1f\x01\x00", b"\x04\x00"]
)
def test_certificate_garbage_raises_tls_error(der_bytes: bytes) -> None:
    with pytest.raises(TlsError):
        parse_certificate(der_bytes)


# --- real capture ----------------------------------------------------------------------------------


def _frag_pcap_streams(pcap: Path) -> tuple[list[bytes], list[bytes]]:
    from agent.offline.pcapfile import open_packets

    packets = [p for p in open_packets(pcap) if p.payload]
    client = sorted((p for p in packets if p.dport == 443), key=lambda p: p.seq)
    server = sorted((p for p in packets if p.sport == 443), key=lambda p: p.seq)
    return [p.payload for p in client], [p.payload for p in server]


def test_suricata_verify_tls_client_hello_frag(shared_data: SharedData) -> None:
    client, server = _frag_pcap_streams(shared_data.path("peer", "suricata-verify", "tls-client-hello-frag-01", "dump_mtu300.pcap"))
    p = TlsParser()
    events: list[TlsHello] = []
    for segment in client[:3]:  # the ClientHello spans three segments
        events += p.feed(True, segment)
    for segment in server:
        events += p.feed(False, segment)
    for segment in client[3:]:
        events += p.feed(True, segment)
    # rule: alert tls any any -> any any (tls.sni; content:"google"; sid:1;) must match once
    assert sum(1 for e in events if e.to_server and b"google" in e.sni) == 1
    hello = next(e for e in events if e.to_server)
    assert hello.sni == b"www.google.com" and hello.alpn == (b"h2", b"http/1.1")
    assert hello.ja3.startswith("771,49200-49196-") and hello.ja3.endswith(",0-11-10-13-15-13172-16-21,23-25-24-22,0-1-2")
    server_hello = next(e for e in events if not e.to_server)
    assert server_hello.cert_subject == b"CN=www.google.com"
    assert server_hello.cert_issuer == b"C=US, O=Google Trust Services LLC, CN=GTS CA 1C3"
    assert server_hello.cert_serial == b"00:BB:2A:80:CC:14:FC:DD:BC:12:02:B2:A0:86:BD:1D:17"
    assert server_hello.cert_sans == (b"www.google.com",) and len(server_hello.certs) == 3
    assert p.encrypted and not p.failed and p.anomalies == []


# --- fuzzing ---------------------------------------------------------------------------------------

SEEDS = [
    CLIENT_HELLO,
    record(22, handshake(2, server_hello_body()) + certificate_msg(certificate()) + handshake(14, b"")),
    records(22, handshake(1, client_hello_body()), 40),
]


@FUZZ
@given(data=st.binary(max_size=600), to_server=st.booleans(), cut=st.integers(0, 600))
def test_fuzz_random_bytes(data: bytes, to_server: bool, cut: int) -> None:
    p = TlsParser()
    for piece in (data[:cut], data[cut:], b"\x16\x03\x01\x00\x05" + data[:20]):
        assert isinstance(p.feed(to_server, piece), list)


@FUZZ
@given(
    seed=st.sampled_from(SEEDS),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
    cuts=st.lists(st.integers(1, 50), max_size=5),
    to_server=st.booleans(),
)
def test_fuzz_mutated_handshakes(seed: bytes, flips: list[tuple[int, int]], cuts: list[int], to_server: bool) -> None:
    data = bytearray(seed)
    for where, value in flips:
        data[where % len(data)] = value
    p = TlsParser()
    pos = 0
    for size in cuts + [len(data)]:
        for event in p.feed(to_server, bytes(data[pos : pos + size])):
            assert isinstance(event, TlsHello)
        pos += size


@FUZZ
@given(data=st.binary(max_size=400), flips=st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=4))
def test_fuzz_certificate(data: bytes, flips: list[tuple[int, int]]) -> None:
    cert = bytearray(certificate())
    for where, value in flips:
        cert[where % len(cert)] = value
    for blob in (data, bytes(cert)):
        with contextlib.suppress(TlsError):
            parse_certificate(blob)
