"""Fuzz targets for what comes in files (captures, rule files, feeds, category lists, bundles)."""
from __future__ import annotations

# Imports as in targets_wire.py: shared ones at the top, one target's on its first use (and in its
# ``modules``).
import gzip
import io
import json
import tarfile
import tempfile
from pathlib import Path
from random import Random
from typing import Any

from agent.offline.pcapfile import PcapError, PcapReader
from filters.flow import FlowTable
from filters.packet import parse_ip, parse_linktype
from tests.fuzz.harness import ErrorWatch, rng_for, split2, target
from tests.fuzz.targets_wire import _conversation, check_packet

_tmp: dict[str, Path] = {}


def scratch(name: str) -> Path:
    """A folder of this process for one target's files (rewritten by every input)."""
    if name not in _tmp:
        _tmp[name] = Path(tempfile.mkdtemp(prefix=f"vcr-fuzz-{name}-"))
    return _tmp[name]


def text_of(data: bytes) -> str:
    """Bytes read as the loaders read files (UTF-8, undecodable bytes kept as surrogates)."""
    return data.decode("utf-8", "surrogateescape")


# -- capture files ---------------------------------------------------------------------------------


@target("pcap", "agent.offline.pcapfile.PcapReader (pcap and pcapng), records through parse_linktype",
        max_len=8192, ci_runs=12000)
def fuzz_pcap(data: bytes) -> None:
    """Documented error: ``PcapError`` (bad file or block header); a cut file sets ``truncated``."""
    try:
        with PcapReader(io.BytesIO(data)) as reader:
            for n, rec in enumerate(reader):
                assert n <= len(data) // 12, "more records than the file can hold"
                assert isinstance(rec.data, bytes) and len(rec.data) <= len(data)
                assert isinstance(rec.ts, float) and isinstance(rec.linktype, int)
                check_packet(parse_linktype(rec.data, rec.linktype, rec.ts))
    except PcapError:
        pass


# -- IPS rules -------------------------------------------------------------------------------------

_ips: dict[str, Any] = {}


def _ips_traffic() -> list[bytes]:
    """A few flows every rule set is run over: HTTP both ways, TLS, DNS, SMTP, ICMP, a fragment."""
    flows = [
        (0, b"POST /admin/login?x=1 HTTP/1.1\r\nHost: evil.example\r\nUser-Agent: curl/8\r\nCookie: a=b\r\n"
            b"Content-Length: 13\r\n\r\nuser=EVIL&p=1",
         b"HTTP/1.1 500 Oops\r\nServer: x\r\nContent-Type: text/html\r\nContent-Length: 4\r\n\r\nMZ\x90\x00"),
        (1, bytes.fromhex("16030100") + b"\x50\x01\x00\x00\x4c\x03\x03" + bytes(32) + b"\x00\x00\x02\x13\x01\x01\x00"
            + b"\x00\x21\x00\x00\x00\x1d\x00\x1b\x00\x00\x18evil.example.fuzz.invalid", b""),
        (4, bytes.fromhex("1234010000010000000000000465766976076578616d706c650000010001"), b""),
        (2, b"EHLO x\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<a@b>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n",
         b"220 mx ESMTP\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n"),
        (14, b"\x08\x00\x00\x00\x00\x01\x00\x01ping", b"\x00\x00\x00\x00\x00\x01\x00\x01ping"),
        (5, b"USER a\r\nPASS secret\r\nLOGIN x\r\nOK\r\n\xde\xad\xbe\xef\x20data=ZXZpbA==\r\n", b"230 OK\r\n"),
    ]
    out: list[bytes] = []
    for sel, client, server in flows:
        out += [p for p, _ in _conversation(sel, client, server, Random(sel))]
    return out


@target("rules", "filters.ips.rule_parser.parse_rule / load_text / parse_classification, then the IPS "
        "engine built from the rules (Detector) run over a few flows", max_len=2048, ci_runs=600,
        modules=("filters.ips.engine", "filters.ips.rule_parser", "filters.pipeline"))
def fuzz_rules(data: bytes) -> None:
    """Documented error: ``RuleError`` from ``parse_rule``; ``load_text`` never raises. A rule that
    loads must also compile and run: rule files arrive in bundles."""
    from filters.ips.engine import Ips
    from filters.ips.netspec import Variables
    from filters.ips.rule_parser import RuleError, load_text, parse_classification, parse_rule
    from filters.pipeline import Pipeline

    text = text_of(data)
    variables = Variables.suricata_defaults()
    with ErrorWatch():
        parse_classification(text)
        first = text.split("\n", 1)[0]
        try:
            parse_rule(first, vars=variables)
        except RuleError:
            pass
        result = load_text(text, variables)
        assert result.loaded + len(result.unsupported) + len(result.errors) == result.active
        if not result.rules:
            return
        if "packets" not in _ips:
            _ips["packets"] = _ips_traffic()
        path = scratch("rules") / "fuzz.rules"
        path.write_bytes(data)
        engine = Ips()
        engine.configure({"rule_files": [str(path)]})
        engine.prepare()  # parses again and compiles (hyperscan, pcre)
        pipeline = Pipeline([engine], FlowTable(max_flows=16))
        for token, raw in enumerate(_ips["packets"]):
            pipeline.process(parse_ip(raw, 1_700_000_000.0 + token * 0.01), token)
        pipeline.tick(float("inf"))
        errors = {k: v for k, v in pipeline.counters.items() if k.startswith("errors.")}
        assert not errors, errors


# -- threat-intel feeds ----------------------------------------------------------------------------

FEED_FORMATS = ("plain", "maltrail", "feodo_csv", "urlhaus_csv", "threatfox_csv", "abp", None)


@target("threatintel", "filters.threatintel parse_* per format / detect_format / load_feed / ThreatIntel.build "
        "and match_ip / match_domain / match_url", max_len=4096, ci_runs=800, modules=("filters.threatintel",))
def fuzz_threatintel(data: bytes) -> None:
    """A feed file (the first byte picks the format, or detection); then look-ups of the feed's own
    tokens. Documented: bad lines never raise; ConfigError only for unreadable files or bad options."""
    from filters.threatintel import FeedLimits, ThreatIntel, load_feed

    if not data:
        return
    fmt = FEED_FORMATS[data[0] % len(FEED_FORMATS)]
    body = data[1:]
    names = {"maltrail": "trails/static/malware/fuzz.txt", "feodo_csv": "feodo.csv", "urlhaus_csv": "urlhaus.csv",
             "threatfox_csv": "threatfox.csv", "abp": "urlhaus-filter.txt"}
    path = scratch("threatintel") / Path(names.get(fmt or "", "feed.txt")).name
    path.write_bytes(body)
    with ErrorWatch():
        options: dict[str, Any] = {"limits": FeedLimits(allow_documentation=bool(data[0] & 0x80), max_entries=64,
                                                        max_line=512)}
        result = load_feed(path, format=fmt, **options)
        assert len(result.indicators) <= 64 * 2
        intel = ThreatIntel.build([result])
        intel.ipset_entries()
        intel.ipset_ip_port_entries(("tcp", "udp"))
        for token in text_of(body).replace(",", "\n").replace("\t", "\n").split("\n")[:32]:
            token = token.strip().strip('"')
            host, _, rest = token.partition("/")
            for value in (token, host):
                intel.match_ip(value)
                intel.match_ip(value, 443)
                intel.match_domain(value)
                intel.match_domain(value.encode("utf-8", "surrogateescape"))
            intel.match_url(host, "/" + rest)
            intel.match_url(host.encode("utf-8", "surrogateescape"), ("/" + rest).encode("utf-8", "surrogateescape"))


# -- web filter category lists ---------------------------------------------------------------------


@target("webcat", "filters.webfilter.categories CategoryDB.load (domains and urls files) / parse_entry / "
        "lookup / matches", max_len=4096, ci_runs=600, modules=("filters.webfilter.categories",))
def fuzz_webcat(data: bytes) -> None:
    """A UT1 folder with a ``domains`` and a ``urls`` file (``domains SEP urls``); then look-ups of
    the files' own lines. Documented: bad lines are skipped and counted; ``parse_entry`` raises
    ``EntryError``; look-ups never raise."""
    from filters.webfilter.categories import CategoryDB, EntryError, ListKind, parse_entry

    domains, urls = split2(data)
    folder = scratch("webcat")
    cat = folder / "fuzzcat"
    cat.mkdir(exist_ok=True)
    (cat / "domains").write_bytes(domains)
    (cat / "urls").write_bytes(urls)
    rng = rng_for(data)
    with ErrorWatch():
        db = CategoryDB.load(folder)
        db.stats()
        for line in text_of(domains + b"\n" + urls).splitlines()[:32]:
            for kind in (None, ListKind.DOMAINS, ListKind.URLS):
                try:
                    parse_entry(line, kind)
                except EntryError:
                    pass
            host, _, path = line.strip().partition("/")
            if rng.random() < 0.5:
                host = "www." + host
            raw_host = host.encode("utf-8", "surrogateescape")
            for h in (host, raw_host):
                db.lookup(h, "/" + path)
                db.matches(h, "/" + path)
            db.lookup(line)
            db.lookup(raw_host, ("/" + path).encode("utf-8", "surrogateescape"))


# -- bundle manifests ------------------------------------------------------------------------------


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


@target("manifest", "agent.lifecycle.updates.unpack_bundle (tar.gz and manifest.json checks) / load_with_engine",
        max_len=4096, ci_runs=900, modules=("agent.lifecycle.updates",))
def fuzz_manifest(data: bytes) -> None:
    """The first byte picks the shape: a well-formed bundle whose manifest.json is the input, the
    input as the tar.gz itself, or the input gzip-compressed as the tar. Documented error:
    ``UpdateError`` ("manifest" or "disk")."""
    from agent.lifecycle.updates import UpdateError, load_with_engine, unpack_bundle

    if not data:
        return
    mode, body = data[0] % 3, data[1:]
    if mode == 0:
        blob = _tar_gz({"manifest.json": body, "rules/a.rules": b"alert ip any any -> any any (sid:1;)\n"})
    elif mode == 1:
        blob = body
    else:
        blob = gzip.compress(body, compresslevel=1, mtime=0)
    work = scratch("manifest")
    bundle = work / "ips-1.tar.gz"
    bundle.write_bytes(blob)
    with ErrorWatch():
        try:
            manifest = unpack_bundle(bundle, work / "staging", kind="ips", version="1")
        except UpdateError as exc:
            assert exc.reason in ("manifest", "disk"), exc.reason
            return
        assert isinstance(manifest, dict)
        json.dumps(manifest)
        try:  # a kind no engine takes: the manifest's own claims are all that is checked
            load_with_engine("antispam")(work / "staging", manifest, None)
        except UpdateError as exc:
            assert exc.reason == "load_failed", exc.reason
