"""TLS handshake parsing: ClientHello/ServerHello/Certificate into TlsHello events, JA3/JA3S/JA4, and a capped X.509 reader."""
from __future__ import annotations

import hashlib
import logging
import struct
from dataclasses import dataclass, field

from filters.app.events import TlsHello

log = logging.getLogger(__name__)

MAX_RECORD = 16384 + 2048  # largest TLSCiphertext length (RFC 8446 5.2); longer is not TLS
MAX_HANDSHAKE = 64 * 1024  # largest handshake message buffered; a longer one is skipped and counted
MAX_EXTENSIONS = 1024  # extensions read per hello
MAX_LIST = 4096  # entries read per list (ciphers, groups, ALPN, versions)
MAX_CLIENT_HELLOS = 4  # ClientHellos reported per flow (a HelloRetryRequest brings a second one)
MAX_CERTS = 16  # certificates kept per chain
MAX_SANS = 1024  # dNSName entries kept from the leaf
MAX_RDNS = 64  # relative distinguished names formatted per Name
MAX_RDN_ATTRS = 16  # attributes per RDN
MAX_CERT_EXTENSIONS = 256
MAX_OID = 64  # encoded OID bytes decoded
MAX_ANOMALIES = 32
HELLO_HELD = 4096  # what a parsed ServerHello waiting for its certificates costs, roughly

CT_CHANGE_CIPHER_SPEC, CT_ALERT, CT_HANDSHAKE, CT_APPLICATION_DATA, CT_HEARTBEAT = 20, 21, 22, 23, 24
HS_CLIENT_HELLO, HS_SERVER_HELLO, HS_CERTIFICATE = 1, 2, 11
EXT_SERVER_NAME, EXT_SUPPORTED_GROUPS, EXT_EC_POINT_FORMATS, EXT_ALPN, EXT_SUPPORTED_VERSIONS = 0, 10, 11, 16, 43
EXT_SIGNATURE_ALGORITHMS = 13
TLS13 = 0x0304

_HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
_RECORD = struct.Struct("!BHH")  # type, version, length
_HANDSHAKE = struct.Struct("!BBH")  # type, length (24 bits: high byte + low 16)
_U16 = struct.Struct("!H")
_U24 = struct.Struct("!BH")


def is_grease(value: int) -> bool:
    """RFC 8701 GREASE values (0x0a0a, 0x1a1a, ... 0xfafa)."""
    return (value & 0x0F0F) == 0x0A0A and (value >> 8) == (value & 0xFF)


class TlsError(ValueError):
    """A handshake structure could not be decoded."""


class _Reader:
    """Bounds-checked big-endian cursor over one handshake message body."""

    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf: bytes, pos: int = 0, end: int | None = None) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else end

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def _need(self, n: int) -> None:
        if self.pos + n > self.end:
            raise TlsError("truncated")

    def u8(self) -> int:
        self._need(1)
        self.pos += 1
        return self.buf[self.pos - 1]

    def u16(self) -> int:
        self._need(2)
        self.pos += 2
        return _U16.unpack_from(self.buf, self.pos - 2)[0]

    def u24(self) -> int:
        self._need(3)
        hi, lo = _U24.unpack_from(self.buf, self.pos)
        self.pos += 3
        return hi << 16 | lo

    def take(self, n: int) -> bytes:
        self._need(n)
        self.pos += n
        return self.buf[self.pos - n : self.pos]

    def vec8(self) -> bytes:
        return self.take(self.u8())

    def vec16(self) -> bytes:
        return self.take(self.u16())

    def vec24(self) -> bytes:
        return self.take(self.u24())


def _u16_list(data: bytes) -> list[int]:
    count = min(len(data) // 2, MAX_LIST)
    return [_U16.unpack_from(data, 2 * i)[0] for i in range(count)]


@dataclass(slots=True)
class _Hello:
    """Mutable fields of a hello while it is decoded (kept when decoding stops half-way)."""

    to_server: bool
    version: int = 0
    sni: bytes = b""
    alpn: list[bytes] = field(default_factory=list)
    ciphers: list[int] = field(default_factory=list)
    extensions: list[int] = field(default_factory=list)
    supported_versions: list[int] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    point_formats: list[int] = field(default_factory=list)
    sig_algs: list[int] = field(default_factory=list)  # signature_algorithms, in the hello's order
    hrr: bool = False

    def ja3s(self) -> str:
        """JA3S of a ServerHello: version, the chosen cipher, the extensions (GREASE left out)."""
        return ",".join([str(self.version), "-".join(str(c) for c in self.ciphers[:1]),
                         "-".join(str(e) for e in self.extensions if not is_grease(e))])

    def ja4(self) -> str:
        """JA4 of a ClientHello over TCP (FoxIO's JA4 TLS client fingerprint, as Suricata's
        ja4.hash): ``t`` + version + SNI (d/i) + cipher and extension counts + ALPN, then the
        truncated SHA-256 of the sorted ciphers and of the sorted extensions (less SNI and ALPN)
        with the signature algorithms in their order. GREASE values are left out."""
        versions = [v for v in self.supported_versions if not is_grease(v)]
        version = _JA4_VERSIONS.get(max(versions) if versions else self.version, "00")
        ciphers = [c for c in self.ciphers if not is_grease(c)]
        exts = [e for e in self.extensions if not is_grease(e)]
        alpn = self.alpn[0] if self.alpn else b""
        if not alpn:
            alpn_code = "00"
        elif chr(alpn[0]).isalnum() and chr(alpn[-1]).isalnum() and alpn[0] < 128 and alpn[-1] < 128:
            alpn_code = chr(alpn[0]) + chr(alpn[-1])
        else:  # a non-alphanumeric first or last byte: the first and last hex digit of the value
            alpn_code = alpn.hex()[0] + alpn.hex()[-1]
        a = f"t{version}{'d' if EXT_SERVER_NAME in exts else 'i'}{min(len(ciphers), 99):02d}{min(len(exts), 99):02d}{alpn_code}"
        b = _ja4_hash(",".join(f"{c:04x}" for c in sorted(ciphers))) if ciphers else "000000000000"
        rest = [e for e in exts if e not in (EXT_SERVER_NAME, EXT_ALPN)]
        text = ",".join(f"{e:04x}" for e in sorted(rest))
        sigs = [g for g in self.sig_algs if not is_grease(g)]
        if sigs:
            text += "_" + ",".join(f"{g:04x}" for g in sigs)
        c = _ja4_hash(text) if rest else "000000000000"
        return f"{a}_{b}_{c}"

    def ja3(self) -> str:
        parts = [
            [self.version],
            [c for c in self.ciphers if not is_grease(c)],
            [e for e in self.extensions if not is_grease(e)],
            [g for g in self.groups if not is_grease(g)],
            self.point_formats,
        ]
        return ",".join("-".join(str(v) for v in part) for part in parts)

    def freeze(self, cert: CertInfo | None = None, certs: tuple[bytes, ...] = ()) -> TlsHello:
        cert = cert or CertInfo()
        return TlsHello(
            to_server=self.to_server,
            version=self.version,
            sni=self.sni,
            alpn=tuple(self.alpn),
            ciphers=tuple(self.ciphers),
            extensions=tuple(self.extensions),
            supported_versions=tuple(self.supported_versions),
            cert_subject=cert.subject,
            cert_issuer=cert.issuer,
            cert_serial=cert.serial,
            cert_sans=cert.sans,
            certs=certs,
            ja3=self.ja3() if self.to_server else "",
            ja3s=self.ja3s() if not self.to_server else "",
            ja4=self.ja4() if self.to_server else "",
        )


_JA4_VERSIONS = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3", 0x0002: "s2",
                 0xFEFF: "d1", 0xFEFD: "d2", 0xFEFC: "d3"}


def _ja4_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _ext_server_name(data: bytes, hello: _Hello) -> None:
    r = _Reader(data)
    entries = _Reader(r.vec16())
    for _ in range(MAX_LIST):
        if not entries.remaining:
            return
        name_type = entries.u8()
        name = entries.vec16()
        if name_type == 0 and not hello.sni:
            hello.sni = name


def _ext_alpn(data: bytes, hello: _Hello) -> None:
    entries = _Reader(_Reader(data).vec16())
    for _ in range(MAX_LIST):
        if not entries.remaining:
            return
        hello.alpn.append(entries.vec8())


def _parse_extension(ext_type: int, data: bytes, hello: _Hello) -> None:
    if ext_type == EXT_SERVER_NAME and hello.to_server:
        _ext_server_name(data, hello)
    elif ext_type == EXT_ALPN:
        _ext_alpn(data, hello)
    elif ext_type == EXT_SIGNATURE_ALGORITHMS and hello.to_server:
        hello.sig_algs = _u16_list(_Reader(data).vec16())
    elif ext_type == EXT_SUPPORTED_GROUPS:
        hello.groups = _u16_list(_Reader(data).vec16())
    elif ext_type == EXT_EC_POINT_FORMATS:
        hello.point_formats = list(_Reader(data).vec8()[:MAX_LIST])
    elif ext_type == EXT_SUPPORTED_VERSIONS:
        if hello.to_server:
            hello.supported_versions = _u16_list(_Reader(data).vec8())
        else:
            hello.supported_versions = [_Reader(data).u16()]


def _parse_extensions(r: _Reader, hello: _Hello, problems: list[str]) -> None:
    """The extensions block at ``r`` (absent is fine). A bad extension body is noted and skipped."""
    if not r.remaining:
        return
    block = _Reader(r.vec16())
    if r.remaining:
        problems.append("tls.trailing_data")
    seen: set[int] = set()
    for _ in range(MAX_EXTENSIONS):
        if not block.remaining:
            return
        ext_type = block.u16()
        data = block.vec16()
        hello.extensions.append(ext_type)
        if ext_type in seen:
            problems.append("tls.duplicate_extension")
            continue
        seen.add(ext_type)
        try:
            _parse_extension(ext_type, data, hello)
        except TlsError:
            problems.append("tls.bad_extension")
    problems.append("tls.too_many_extensions")


def parse_client_hello(body: bytes) -> tuple[TlsHello, list[str]]:
    """Decode a ClientHello body: the event (with whatever was decoded) and the anomalies found."""
    hello = _Hello(to_server=True)
    problems: list[str] = []
    try:
        r = _Reader(body)
        hello.version = r.u16()
        r.take(32)  # random
        r.vec8()  # legacy_session_id
        suites = r.vec16()
        if len(suites) % 2:
            problems.append("tls.bad_cipher_list")
        hello.ciphers = _u16_list(suites)
        r.vec8()  # compression methods
        _parse_extensions(r, hello, problems)
    except TlsError:
        problems.append("tls.bad_client_hello")
    return hello.freeze(), problems


def _parse_server_hello(body: bytes) -> tuple[_Hello, list[str]]:
    hello = _Hello(to_server=False)
    problems: list[str] = []
    try:
        r = _Reader(body)
        hello.version = r.u16()
        hello.hrr = r.take(32) == _HRR_RANDOM
        r.vec8()  # legacy_session_id_echo
        hello.ciphers = [r.u16()]
        r.u8()  # compression
        _parse_extensions(r, hello, problems)
    except TlsError:
        problems.append("tls.bad_server_hello")
    return hello, problems


def parse_certificate_list(body: bytes) -> tuple[tuple[bytes, ...], bool]:
    """DER certificates of a (TLS 1.0-1.2) Certificate message, up to ``MAX_CERTS``; and whether it decoded cleanly."""
    certs: list[bytes] = []
    try:
        r = _Reader(body)
        chain = _Reader(r.vec24())
        while chain.remaining and len(certs) < MAX_CERTS:
            certs.append(chain.vec24())
    except TlsError:
        return tuple(certs), False
    return tuple(certs), True


# --- X.509 ---------------------------------------------------------------------------------------

_OID_ABBREV = {  # as x509-parser (Suricata) prints them
    "2.5.4.3": "CN",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "0.9.2342.19200300.100.1.25": "DC",
    "1.2.840.113549.1.9.1": "Email",
    "2.5.4.4": "surname",
    "2.5.4.5": "serialNumber",
    "2.5.4.9": "streetAddress",
    "2.5.4.12": "title",
    "2.5.4.15": "businessCategory",
    "2.5.4.17": "postalCode",
    "2.5.4.41": "name",
    "2.5.4.42": "givenName",
    "2.5.4.43": "initials",
    "2.5.4.46": "dnQualifier",
    "2.5.4.65": "pseudonym",
}
_STRING_TAGS = frozenset((0x07, 0x0C, 0x12, 0x13, 0x14, 0x15, 0x16, 0x19, 0x1A, 0x1B))
_TAG_BMP_STRING, _TAG_UNIVERSAL_STRING = 0x1E, 0x1C
_TAG_SEQUENCE, _TAG_SET, _TAG_INTEGER, _TAG_OID, _TAG_OCTET_STRING = 0x30, 0x31, 0x02, 0x06, 0x04
_TAG_DNS_NAME = 0x82  # GeneralName [2] IMPLICIT IA5String
_OID_SUBJECT_ALT_NAME = b"\x55\x1d\x11"  # 2.5.29.17


@dataclass(frozen=True, slots=True)
class CertInfo:
    """The leaf-certificate fields Suricata exposes, formatted as its sticky buffers."""

    subject: bytes = b""
    issuer: bytes = b""
    serial: bytes = b""
    sans: tuple[bytes, ...] = ()


def _der(buf: bytes, pos: int, end: int, expect: int | None = None) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at ``pos``, which must end by ``end``."""
    if pos + 2 > end:
        raise TlsError("der: truncated header")
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise TlsError("der: high tag number")
    first = buf[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if not 0 < count <= 4 or pos + count > end:
            raise TlsError("der: bad length")
        length = int.from_bytes(buf[pos : pos + count], "big")
        pos += count
    if pos + length > end:
        raise TlsError("der: element overruns its parent")
    if expect is not None and tag != expect:
        raise TlsError(f"der: tag {tag:#x}, expected {expect:#x}")
    return tag, pos, pos + length


def _oid_text(raw: bytes) -> str:
    if not raw or len(raw) > MAX_OID:
        return "OID()"
    arcs: list[int] = []
    value = 0
    for byte in raw:
        value = value << 7 | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = arcs[0] if arcs else 0
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(a) for a in head + arcs[1:])


def _attr_value(tag: int, raw: bytes) -> bytes:
    if tag in _STRING_TAGS:
        return raw
    if tag == _TAG_BMP_STRING:
        return raw.decode("utf-16-be", "replace").encode("utf-8")
    if tag == _TAG_UNIVERSAL_STRING:
        return raw.decode("utf-32-be", "replace").encode("utf-8")
    return raw.hex().upper().encode("ascii")


def format_name(buf: bytes, start: int, end: int) -> bytes:
    """An X.509 Name (the content of its SEQUENCE) as Suricata prints it: ``C=US, O=Org, CN=host``.

    RDNs are joined with ", " and the attributes of a multi-valued RDN with " + ".
    """
    rdns: list[bytes] = []
    pos = start
    while pos < end and len(rdns) < MAX_RDNS:
        _tag, set_start, set_end = _der(buf, pos, end, _TAG_SET)
        pos = set_end
        attrs: list[bytes] = []
        apos = set_start
        while apos < set_end and len(attrs) < MAX_RDN_ATTRS:
            _tag, seq_start, seq_end = _der(buf, apos, set_end, _TAG_SEQUENCE)
            apos = seq_end
            _tag, oid_start, oid_end = _der(buf, seq_start, seq_end, _TAG_OID)
            value_tag, val_start, val_end = _der(buf, oid_end, seq_end)
            oid = _oid_text(buf[oid_start:oid_end])
            name = _OID_ABBREV.get(oid, oid)
            attrs.append(name.encode("ascii") + b"=" + _attr_value(value_tag, buf[val_start:val_end]))
        rdns.append(b" + ".join(attrs))
    return b", ".join(rdns)


def _subject_alt_names(buf: bytes, start: int, end: int) -> tuple[bytes, ...]:
    _tag, pos, seq_end = _der(buf, start, end, _TAG_SEQUENCE)
    names: list[bytes] = []
    while pos < seq_end and len(names) < MAX_SANS:
        tag, val_start, val_end = _der(buf, pos, seq_end)
        pos = val_end
        if tag == _TAG_DNS_NAME:
            names.append(buf[val_start:val_end])
    return tuple(names)


def _extensions_sans(buf: bytes, start: int, end: int) -> tuple[bytes, ...]:
    """dNSNames from the ``[3] Extensions`` content of a TBSCertificate."""
    _tag, pos, list_end = _der(buf, start, end, _TAG_SEQUENCE)
    for _ in range(MAX_CERT_EXTENSIONS):
        if pos >= list_end:
            break
        _tag, ext_start, ext_end = _der(buf, pos, list_end, _TAG_SEQUENCE)
        pos = ext_end
        _tag, oid_start, oid_end = _der(buf, ext_start, ext_end, _TAG_OID)
        if buf[oid_start:oid_end] != _OID_SUBJECT_ALT_NAME:
            continue
        tag, val_start, val_end = _der(buf, oid_end, ext_end)
        if tag != _TAG_OCTET_STRING:  # the optional `critical` BOOLEAN comes first
            tag, val_start, val_end = _der(buf, val_end, ext_end, _TAG_OCTET_STRING)
        return _subject_alt_names(buf, val_start, val_end)
    return ()


def parse_certificate(der: bytes) -> CertInfo:
    """Subject, issuer, serial ("0A:1B:..", raw INTEGER bytes as Suricata) and dNSName SANs of a DER certificate.

    Raises TlsError when the structure up to the subject cannot be decoded; a bad extensions
    block only loses the SANs.
    """
    _tag, start, end = _der(der, 0, len(der), _TAG_SEQUENCE)
    _tag, pos, tbs_end = _der(der, start, end, _TAG_SEQUENCE)
    tag, val_start, val_end = _der(der, pos, tbs_end)
    if tag == 0xA0:  # [0] EXPLICIT version
        tag, val_start, val_end = _der(der, val_end, tbs_end)
    if tag != _TAG_INTEGER:
        raise TlsError("x509: no serial number")
    serial = ":".join(f"{b:02X}" for b in der[val_start:val_end]).encode("ascii")
    _tag, _s, pos = _der(der, val_end, tbs_end, _TAG_SEQUENCE)  # signature algorithm
    _tag, issuer_start, issuer_end = _der(der, pos, tbs_end, _TAG_SEQUENCE)
    _tag, _s, pos = _der(der, issuer_end, tbs_end, _TAG_SEQUENCE)  # validity
    _tag, subject_start, subject_end = _der(der, pos, tbs_end, _TAG_SEQUENCE)
    issuer = format_name(der, issuer_start, issuer_end)
    subject = format_name(der, subject_start, subject_end)
    sans: tuple[bytes, ...] = ()
    try:
        _tag, _s, pos = _der(der, subject_end, tbs_end, _TAG_SEQUENCE)  # subjectPublicKeyInfo
        while pos < tbs_end:  # [1] issuerUniqueID, [2] subjectUniqueID, [3] extensions
            tag, val_start, val_end = _der(der, pos, tbs_end)
            pos = val_end
            if tag == 0xA3:
                sans = _extensions_sans(der, val_start, val_end)
                break
    except TlsError:
        log.debug("x509: extensions undecodable; SANs lost")
    return CertInfo(subject=subject, issuer=issuer, serial=serial, sans=sans)


# --- record and handshake layers ----------------------------------------------------------------


@dataclass(slots=True)
class _Direction:
    """Record/handshake reassembly state of one direction."""

    header: bytearray = field(default_factory=bytearray)  # partial record header
    rec_type: int = -1  # content type of the record being read; -1 between records
    rec_left: int = 0  # body bytes of that record still to come
    records: int = 0
    handshake: bytearray = field(default_factory=bytearray)  # one handshake message being reassembled
    skip: int = 0  # bytes of an oversized handshake message still to discard
    cipher: bool = False  # past ChangeCipherSpec/application data: records are encrypted


def looks_like_tls(first_bytes: bytes) -> bool:
    """Protocol detection: do the first stream bytes start a TLS handshake record (ClientHello/ServerHello)?

    Needs 3 bytes to say yes; with 5 the record length is checked, with 6 the handshake type.
    """
    if len(first_bytes) < 3:
        return False
    if first_bytes[0] != CT_HANDSHAKE or first_bytes[1] != 3 or first_bytes[2] > 4:
        return False
    if len(first_bytes) >= 5 and not 0 < _U16.unpack_from(first_bytes, 3)[0] <= MAX_RECORD:
        return False
    return len(first_bytes) < 6 or first_bytes[5] in (HS_CLIENT_HELLO, HS_SERVER_HELLO)


class TlsParser:
    """TLS for one flow: feed in-order stream bytes per direction, get the hellos as TlsHello events.

    The ClientHello gives one event (``to_server=True``); the server side gives one when its
    Certificate arrives (TLS <= 1.2), or right after ServerHello for TLS 1.3 (its certificate is
    encrypted) and for handshakes without a certificate. Parsing stops once both directions are
    encrypted (``encrypted``) or the stream turns out not to be TLS (``failed``).
    """

    def __init__(self) -> None:
        self._sides = {True: _Direction(), False: _Direction()}
        self._failed = False
        self._client_hellos = 0
        self._server_pending: _Hello | None = None
        self._server_done = False
        self._tls13 = False  # negotiated by ServerHello/HelloRetryRequest: ChangeCipherSpec is then a dummy
        self.anomalies: list[str] = []

    @property
    def encrypted(self) -> bool:
        return self._sides[True].cipher and self._sides[False].cipher

    @property
    def failed(self) -> bool:
        return self._failed

    def held_bytes(self) -> int:
        """Bytes held now: partial record headers, handshake messages being reassembled (each at
        most MAX_HANDSHAKE), a ServerHello waiting for its certificates."""
        n = sum(len(side.header) + len(side.handshake) for side in self._sides.values())
        return n + (HELLO_HELD if self._server_pending is not None else 0)

    def feed(self, to_server: bool, data: bytes) -> list[TlsHello]:
        """Add in-order stream bytes of one direction; return the hellos completed by them. Never raises."""
        out: list[TlsHello] = []
        if self._failed or self.encrypted or not data:
            return out
        try:
            self._feed(to_server, data, out)
        except (TlsError, ValueError, IndexError, struct.error) as exc:  # a bug must not kill the flow
            log.warning("tls parser error: %s", exc)
            self._fail("tls.parser_error")
        return out

    def _note(self, anomaly: str) -> None:
        if anomaly not in self.anomalies and len(self.anomalies) < MAX_ANOMALIES:
            self.anomalies.append(anomaly)

    def _fail(self, anomaly: str) -> None:
        self._note(anomaly)
        self._failed = True
        for side in self._sides.values():
            side.header.clear()
            side.handshake.clear()

    def _feed(self, to_server: bool, data: bytes, out: list[TlsHello]) -> None:
        side = self._sides[to_server]
        pos, size = 0, len(data)
        while pos < size and not (self._failed or self.encrypted):
            if side.rec_type < 0:
                take = min(5 - len(side.header), size - pos)
                side.header += data[pos : pos + take]
                pos += take
                if len(side.header) == 5:
                    self._record_header(side, to_server, out)
                continue
            take = min(side.rec_left, size - pos)
            if side.rec_type == CT_HANDSHAKE and (not side.cipher or self._tls13):  # TLS 1.3 encrypts into type 23
                self._handshake_bytes(side, to_server, data[pos : pos + take], out)
            pos += take
            side.rec_left -= take
            if side.rec_left == 0:
                side.rec_type = -1

    def _record_header(self, side: _Direction, to_server: bool, out: list[TlsHello]) -> None:
        ctype, version, length = _RECORD.unpack_from(side.header)
        first = bytes(side.header)
        side.header.clear()
        if side.records == 0 and first[0] & 0x80 and first[2] == 1:
            self._fail("tls.sslv2_hello")
            return
        if not CT_CHANGE_CIPHER_SPEC <= ctype <= CT_HEARTBEAT:
            self._fail("tls.bad_record_type")
            return
        if version >> 8 != 3:
            self._fail("tls.bad_record_version")
            return
        if length > MAX_RECORD:
            self._fail("tls.record_too_long")
            return
        side.records += 1
        if ctype == CT_APPLICATION_DATA or (ctype == CT_CHANGE_CIPHER_SPEC and not self._tls13):
            if side.handshake or side.skip:
                self._note("tls.handshake_cut_by_cipher")
                side.handshake.clear()
                side.skip = 0
            side.cipher = True
            if not to_server:
                self._flush_server(out)
        if length:
            side.rec_type, side.rec_left = ctype, length

    def _handshake_bytes(self, side: _Direction, to_server: bool, chunk: bytes, out: list[TlsHello]) -> None:
        """Reassemble handshake messages from a record body piece (messages may span records)."""
        pos, size = 0, len(chunk)
        buf = side.handshake
        while pos < size:
            if side.skip:
                take = min(side.skip, size - pos)
                side.skip -= take
                pos += take
                continue
            if len(buf) < 4:
                take = min(4 - len(buf), size - pos)
                buf += chunk[pos : pos + take]
                pos += take
                if len(buf) < 4:
                    return
            msg_type, hi, lo = _HANDSHAKE.unpack_from(buf)
            length = hi << 16 | lo
            if length > MAX_HANDSHAKE:
                self._note("tls.handshake_too_long")
                buf.clear()
                side.skip = length
                continue
            take = min(4 + length - len(buf), size - pos)
            buf += chunk[pos : pos + take]
            pos += take
            if len(buf) == 4 + length:
                body = bytes(buf[4:])
                buf.clear()
                self._handshake_message(to_server, msg_type, body, out)
                if self._failed:
                    return

    def _handshake_message(self, to_server: bool, msg_type: int, body: bytes, out: list[TlsHello]) -> None:
        if to_server:
            if msg_type == HS_CLIENT_HELLO:
                self._client_hellos += 1
                if self._client_hellos > MAX_CLIENT_HELLOS:
                    self._note("tls.too_many_client_hellos")
                    return
                hello, problems = parse_client_hello(body)
                for problem in problems:
                    self._note(problem)
                out.append(hello)
            elif msg_type == HS_SERVER_HELLO:
                self._note("tls.server_hello_from_client")
            return
        if msg_type == HS_SERVER_HELLO:
            self._server_hello(body, out)
        elif msg_type == HS_CERTIFICATE and self._server_pending is not None:
            self._server_certificate(body, out)
        elif msg_type == HS_CLIENT_HELLO:
            self._note("tls.client_hello_from_server")
        else:
            self._flush_server(out)  # e.g. ServerKeyExchange/ServerHelloDone: no Certificate in this handshake

    def _server_hello(self, body: bytes, out: list[TlsHello]) -> None:
        hello, problems = _parse_server_hello(body)
        for problem in problems:
            self._note(problem)
        if TLS13 in hello.supported_versions:
            self._tls13 = True  # middlebox-compatibility ChangeCipherSpec records change nothing
        if hello.hrr:  # HelloRetryRequest: the real ServerHello follows a second ClientHello
            return
        if self._server_done or self._server_pending is not None:
            self._note("tls.duplicate_server_hello")
            return
        self._server_pending = hello
        if self._tls13:  # the certificate will be encrypted
            self._flush_server(out)

    def _server_certificate(self, body: bytes, out: list[TlsHello]) -> None:
        hello = self._server_pending
        if hello is None:
            return
        self._server_pending = None
        self._server_done = True
        certs, clean = parse_certificate_list(body)
        if not clean:
            self._note("tls.bad_certificate_list")
        info = None
        if certs:
            try:
                info = parse_certificate(certs[0])
            except TlsError as exc:
                log.debug("tls: leaf certificate undecodable: %s", exc)
                self._note("tls.bad_certificate")
        out.append(hello.freeze(info, certs))

    def _flush_server(self, out: list[TlsHello]) -> None:
        if self._server_pending is not None:
            out.append(self._server_pending.freeze())
            self._server_pending = None
            self._server_done = True
