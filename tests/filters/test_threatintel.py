"""Tests for filters.threatintel: annotated samples, the real abuse.ch/URLhaus feeds, look-ups, fuzz."""
from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from filters.engine import ConfigError
from filters.threatintel import (
    FORMATS,
    FeedLimits,
    Indicator,
    IndicatorKind,
    ParseResult,
    Skip,
    ThreatIntel,
    UrlMatch,
    detect_format,
    load_feed,
    parse_abp,
    parse_feodo_csv,
    parse_maltrail,
    parse_plain,
    parse_threatfox_csv,
    parse_urlhaus_csv,
)

SAMPLES = Path(__file__).parent / "threatintel_samples"
DATA = Path("/work/shared/data")
FEODO = DATA / "abusech" / "feodotracker-ipblocklist.csv"
URLHAUS_CSV = DATA / "abusech" / "urlhaus-csv-online.csv"
URLHAUS_ABP = DATA / "urlhaus" / "urlhaus-filter-online.txt"
PARSERS = {
    "plain": parse_plain, "maltrail": parse_maltrail, "feodo_csv": parse_feodo_csv,
    "urlhaus_csv": parse_urlhaus_csv, "threatfox_csv": parse_threatfox_csv, "abp": parse_abp,
}
ANNOTATION = re.compile(r"^\s*[#!]\s*(expect|skip):\s*(\S+)(?:\s+(\S+))?\s*$")
FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def sample_files() -> list[Path]:
    return sorted(p for p in SAMPLES.glob("*/*") if p.is_file())


def annotations(path: Path) -> tuple[set[tuple[str, str]], Counter[str]]:
    expected: set[tuple[str, str]] = set()
    skips: Counter[str] = Counter()
    for line in path.read_text(encoding="utf-8").splitlines():
        m = ANNOTATION.match(line)
        if m and m.group(1) == "expect":
            expected.add((m.group(2), m.group(3)))
        elif m:
            skips[m.group(2)] += 1
    return expected, skips


def real(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"REAL-DATA TEST SKIPPED: {path} is absent (needs /work/shared/data)")
    return path


def kinds(result: ParseResult) -> Counter[str]:
    return Counter(ind.kind.value for ind in result.indicators)


@pytest.fixture(scope="module")
def sample_intel() -> ThreatIntel:
    return ThreatIntel.build(load_feed(p) for p in sample_files())


@pytest.fixture(scope="module")
def real_intel() -> ThreatIntel:
    return ThreatIntel.build([load_feed(real(FEODO)), load_feed(real(URLHAUS_CSV)), load_feed(real(URLHAUS_ABP))])


# --- annotated samples ----------------------------------------------------------------------------

def test_every_format_has_an_annotated_sample() -> None:
    for fmt in FORMATS:
        files = list((SAMPLES / fmt).glob("*"))
        assert files, f"format {fmt} has no sample in {SAMPLES / fmt}"
        assert any(annotations(f)[0] for f in files), f"format {fmt}: no 'expect:' annotation"
    assert set(PARSERS) == set(FORMATS)


@pytest.mark.parametrize("path", sample_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_sample_parses_exactly_as_annotated(path: Path) -> None:
    fmt = path.parent.name
    assert detect_format(path.name, path.read_text(encoding="utf-8")[:4096]) == fmt
    result = load_feed(path)
    expected, skips = annotations(path)
    assert {(ind.kind.value, ind.value) for ind in result.indicators} == expected
    assert result.skipped == skips
    assert result.total_lines == len(path.read_text(encoding="utf-8").splitlines())
    assert all(ind.source == path.stem for ind in result.indicators)


def test_maltrail_threat_from_file_name_else_aliases() -> None:
    path = SAMPLES / "maltrail" / "dark_gate.txt"
    named = load_feed(path, source="maltrail")
    assert {ind.threat for ind in named.indicators} == {"dark gate"}
    assert named.indicators[0].tags == ("darkgate", "meh loader")
    unnamed = parse_maltrail(path.read_text(encoding="utf-8"), "maltrail")
    assert {ind.threat for ind in unnamed.indicators} == {"darkgate"}
    bare = parse_maltrail("evil-example.com\n", "maltrail-custom")
    assert bare.indicators[0].threat == "maltrail-custom"


def test_feodo_offline_filter_and_ip_port_only() -> None:
    text = (SAMPLES / "feodo_csv" / "ipblocklist.csv").read_text(encoding="utf-8")
    online_only = parse_feodo_csv(text, "feodo", include_offline=False)
    assert {i.value for i in online_only.indicators} == {"51.178.161.32:4643", "51.178.161.32"}
    assert online_only.skipped["offline"] == 1
    narrow = parse_feodo_csv(text, "feodo", block_whole_ip=False)
    assert {i.kind for i in narrow.indicators} == {IndicatorKind.IP_PORT}
    assert {i.threat for i in narrow.indicators} == {"Dridex"}
    assert narrow.indicators[0].port == 4643


def test_urlhaus_csv_header_variants_agree() -> None:
    rows = [
        '"1","2025-04-21 12:35:06","http://117.209.87.242:60905/bin.sh","online","2025-04-21","malware_download",'
        '"32-bit,elf,mips,Mozi","https://urlhaus.abuse.ch/url/1/","geenensp"',
        '"2","2025-04-21 12:35:07","https://Evil-Example.com/A/b.exe?x=1#f","online","2025-04-21","malware_download",'
        '"None","https://urlhaus.abuse.ch/url/2/","x"',
    ]
    header = "id,dateadded,url,url_status,last_online,threat,tags,urlhaus_link,reporter"
    banner = ["#" * 64, "# abuse.ch URLhaus Database Dump (CSV - online URLs only) #", "#" * 64, "#"]
    variants = {
        "bare": "\n".join([header, *rows]),
        "commented": "\n".join([*banner, "# " + header, *rows]) + "\n",
        "banner, no header": "\n".join([*banner, *rows]),
        "crlf": "\r\n".join([header, *rows]) + "\r\n",
    }
    for name, text in variants.items():
        result = parse_urlhaus_csv(text, "urlhaus")
        assert [(i.value, i.port, i.threat) for i in result.indicators] == [
            ("117.209.87.242/bin.sh", 60905, "malware_download"),
            ("evil-example.com/A/b.exe?x=1", None, "malware_download")], name
        assert result.indicators[0].tags == ("32-bit", "elf", "mips", "Mozi")
        assert result.indicators[1].tags == ()
        assert not result.skipped, name


def test_threatfox_hashes_skipped_threat_and_tags() -> None:
    result = load_feed(SAMPLES / "threatfox_csv" / "export.csv")
    by_value = {i.value: i for i in result.indicators}
    cs = by_value["8.134.12.90:7777"]
    assert (cs.kind, cs.threat, cs.port) == (IndicatorKind.IP_PORT, "botnet_cc", 7777)
    assert cs.tags == ("Cobalt Strike", "c2", "CobaltStrike")
    assert by_value["payload.example-bad.net/dl/Invoice.js"].tags == ("js",)  # "Unknown malware" dropped
    assert result.skipped["hash_ioc"] == 2
    confident = load_feed(SAMPLES / "threatfox_csv" / "export.csv", min_confidence=75)
    assert {i.value for i in confident.indicators} == {"8.134.12.90:7777", "login.microsoft-update.example-bad.com"}
    assert confident.skipped["low_confidence"] == 2


def test_hosts_file_and_plain_inline_comments() -> None:
    result = parse_plain("0.0.0.0 a.evil-example.com b.evil-example.com ; comment\n"
                         "evil-example.org ; comment\n", "hosts")
    assert [i.value for i in result.indicators] == ["a.evil-example.com", "b.evil-example.com", "evil-example.org"]


# --- look-ups on the samples ----------------------------------------------------------------------

def test_ip_lookups_and_near_misses(sample_intel: ThreatIntel) -> None:
    hit = sample_intel.match_ip("185.220.101.4")
    assert hit is not None and hit.kind is IndicatorKind.IP
    assert sample_intel.match_ip("185.220.101.3") is None
    assert sample_intel.match_ip("45.9.148.0").value == "45.9.148.0/24"
    assert sample_intel.match_ip("45.9.148.255").value == "45.9.148.0/24"
    assert sample_intel.match_ip("45.9.147.255") is None  # just below the CIDR
    assert sample_intel.match_ip("45.9.149.0") is None  # just above
    assert sample_intel.match_ip("91.92.243.255").value == "91.92.240.0/22"
    assert sample_intel.match_ip("91.92.244.0") is None


def test_ip_port_lookups(sample_intel: ThreatIntel) -> None:
    assert sample_intel.match_ip("94.156.8.205", 8443).kind is IndicatorKind.IP_PORT
    assert sample_intel.match_ip("94.156.8.205", 443) is None  # other port
    assert sample_intel.match_ip("94.156.8.205") is None  # no port given: ip:port cannot match
    offline = sample_intel.match_ip("217.79.184.243", 33443)
    assert offline is not None and offline.threat == "Dridex"
    assert sample_intel.match_ip("217.79.184.243", 443) is None
    online = sample_intel.match_ip("51.178.161.32", 9999)  # online Feodo C2: the whole IP
    assert online is not None and online.kind is IndicatorKind.IP
    assert sample_intel.match_ip("51.178.161.32", 4643).kind is IndicatorKind.IP_PORT  # most specific first


def test_ipv6_lookups(sample_intel: ThreatIntel) -> None:
    assert sample_intel.match_ip("2a01:4f8:c17:1::2").kind is IndicatorKind.IP
    assert sample_intel.match_ip("2a01:4f8:c17:ffff::9").value == "2a01:4f8:c17::/48"
    assert sample_intel.match_ip("2a01:4f8:c18::1") is None
    assert sample_intel.match_ip("[2a01:4f8:c17:1::3]", 443).kind is IndicatorKind.IP_PORT
    packed = bytes.fromhex("2a0104f80c1700010000000000000002")
    assert sample_intel.match_ip(packed).value == "2a01:4f8:c17:1::2"
    assert sample_intel.match_ip(bytes([185, 220, 101, 4])).value == "185.220.101.4"
    assert sample_intel.match_ip("::ffff:185.220.101.4").value == "185.220.101.4"
    assert sample_intel.match_ip("not an address") is None
    assert sample_intel.match_ip(b"\x01\x02") is None


def test_domain_lookups_and_near_misses(sample_intel: ThreatIntel) -> None:
    assert sample_intel.match_domain("c2.evil-example.com").value == "c2.evil-example.com"
    assert sample_intel.match_domain(b"X.Y.C2.EVIL-EXAMPLE.COM.").value == "c2.evil-example.com"
    assert sample_intel.match_domain("evil-example.com") is None  # parent of a listed subdomain
    assert sample_intel.match_domain("notc2.evil-example.com") is None  # sibling label
    assert sample_intel.match_domain("c2.evil-example.com.au") is None
    assert sample_intel.match_domain("img.evil-cdn.net").value == "evil-cdn.net"
    assert sample_intel.match_domain("evil-cdn.net").value == "evil-cdn.net"
    assert sample_intel.match_domain("www.пример.com").value == "xn--e1afmkfd.com"
    assert sample_intel.match_domain("123.ywxww.net").source == "urlhaus_filter"
    assert sample_intel.match_domain("x123.ywxww.net") is None
    assert sample_intel.match_domain("a" * 300 + ".evil-cdn.net").value == "evil-cdn.net"


def test_url_lookups_exact_feeds(sample_intel: ThreatIntel) -> None:
    url = sample_intel.match_url("dl.evil-example.com", "/payload/Stage2.bin")
    assert url is not None and url.kind is IndicatorKind.URL
    assert sample_intel.match_url(b"DL.EVIL-EXAMPLE.COM:80", b"/payload/Stage2.bin?x=1") is url
    assert sample_intel.match_url("dl.evil-example.com", "/payload/stage2.bin") is None  # exact path bytes
    assert sample_intel.match_url("dl.evil-example.com", "/payload/Stage2.bin.bak") is None  # no boundary
    assert sample_intel.match_url("dl.evil-example.com", "/payload/") is None  # shorter than listed
    assert sample_intel.match_url("www.dl.evil-example.com", "/payload/Stage2.bin") is None  # exact host
    assert sample_intel.match_url("117.209.87.242", "/bin.sh").threat == "malware_download"
    assert sample_intel.match_url("117.209.87.242", "/bin.shx") is None
    assert sample_intel.match_url("125.43.33.121:49759", "/i").value == "125.43.33.121/i"
    assert sample_intel.match_url("125.43.33.121", "/index.html") is None  # "/i" is not "/index.html"
    assert sample_intel.match_url("[2a01:4f8:c17:1::4]:8080", "/x.sh") is not None
    assert sample_intel.match_url("185.196.8.22", "/anything/at/all").value == "185.196.8.22/"
    assert sample_intel.match_url("185.196.8.23", "/tools/ports/x").value == "185.196.8.23/tools/ports"
    assert sample_intel.match_url("185.196.8.23", "/tools/portsx") is None


def test_url_lookups_abp_semantics(sample_intel: ThreatIntel) -> None:
    hit = sample_intel.match_url("amyuni.com", "/downloads/usbmmidd_v2.zip")
    assert hit is not None and hit.source == "urlhaus_filter"
    assert sample_intel.match_url("www.amyuni.com", "/downloads/USBMMIDD_v2.zip?dl=1") is hit  # ||: subdomains, case
    assert sample_intel.match_url("notamyuni.com", "/downloads/usbmmidd_v2.zip") is None
    assert sample_intel.match_url("amyuni.com", "/downloads/usbmmidd_v2.zipx") is None
    assert sample_intel.match_url("docs.google.com", "/uc?export=download&id=140vkyfrfhbqkukc2hnw&confirm=t")
    assert sample_intel.match_url("docs.google.com", "/uc?export=download&id=140vkyfrfhbqkukc2hnwX") is None


# --- merging, kernel sets, stats ------------------------------------------------------------------

def test_merge_keeps_every_threat_and_source() -> None:
    a = parse_plain("185.220.101.4\nevil-example.com\n", "feed-a", threat="Emotet")
    b = parse_plain("185.220.101.4\n", "feed-b", threat="TrickBot")
    intel = ThreatIntel.build([a, b])
    merged = intel.match_ip("185.220.101.4")
    assert (merged.threat, merged.source) == ("Emotet, TrickBot", "feed-a,feed-b")
    assert len(intel) == 2
    assert intel.stats().by_source == {"feed-a": 2, "feed-b": 1}
    assert ThreatIntel.build([b, a]).version == intel.version  # order does not matter
    assert ThreatIntel.build([a]).version != intel.version


def test_ipset_entries_drop_covered_addresses() -> None:
    text = "45.9.148.0/24\n45.9.148.7\n45.9.0.0/16\n185.220.101.4\n2a01:4f8:c17::/48\n2a01:4f8:c17::5\n"
    ports = "185.220.101.4:443\n45.9.148.9:8080\n94.156.8.205:8443\n[2a01:4f8:c18::1]:443\n"
    intel = ThreatIntel.build([parse_plain(text, "nets"), parse_plain(ports, "ports")])
    assert intel.ipset_entries() == (["45.9.0.0/16", "185.220.101.4"], ["2a01:4f8:c17::/48"])
    assert intel.ipset_ip_port_entries() == (["94.156.8.205,tcp:8443"], ["2a01:4f8:c18::1,tcp:443"])
    assert intel.ipset_ip_port_entries(("tcp", "udp"))[0] == ["94.156.8.205,tcp:8443", "94.156.8.205,udp:8443"]
    assert intel.match_ip("45.9.148.7").kind is IndicatorKind.IP
    assert intel.match_ip("45.9.148.8").value == "45.9.148.0/24"  # the narrowest CIDR
    assert intel.match_ip("45.9.200.1").value == "45.9.0.0/16"


def test_stats_counts_kinds_sources_and_skips(sample_intel: ThreatIntel) -> None:
    stats = sample_intel.stats()
    assert stats.indicators == len(sample_intel)
    assert sum(stats.by_kind.values()) == stats.indicators
    assert stats.skipped["hash_ioc"] == 2 and stats.skipped["path_only"] == 2
    assert stats.version == sample_intel.version and len(stats.version) == 16
    assert stats.as_dict()["by_source"]["dark_gate"] == 7


# --- limits and errors ----------------------------------------------------------------------------

def test_caps_on_line_length_and_entries() -> None:
    text = "185.220.101.4\n" + "a" * 5000 + ".example.com\n" + "\n".join(f"185.220.102.{i}" for i in range(1, 11))
    result = parse_plain(text, "capped", limits=FeedLimits(max_line=4096, max_entries=5))
    assert len(result.indicators) == 5
    assert result.skipped == Counter({"line_too_long": 1, "over_entry_cap": 6})
    assert result.total_lines == 12


def test_load_feed_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read feed"):
        load_feed(tmp_path / "missing.txt")
    feed = tmp_path / "feed.txt"
    feed.write_bytes(b"evil-example.com\n\xff\xfe.example.com\n")
    assert [i.value for i in load_feed(feed).indicators] == ["evil-example.com"]
    assert load_feed(feed).skipped == Counter({"bad_encoding": 1})
    with pytest.raises(ConfigError, match="unknown feed format") as err:
        load_feed(feed, format="stix")
    assert err.value.key == "format"
    with pytest.raises(ConfigError, match="unknown option"):
        load_feed(feed, include_offline=False)


def test_detect_format_by_name_when_the_head_says_nothing() -> None:
    assert detect_format("feodo.csv", "") == "feodo_csv"
    assert detect_format("threatfox-full.csv", "") == "threatfox_csv"
    assert detect_format("urlhaus.csv", "") == "urlhaus_csv"
    assert detect_format("ipblocklist.txt", "# Feodo Tracker\n1.2.3.4\n") == "plain"
    assert detect_format("trails/static/malware/emotet.txt", "evil.example\n") == "maltrail"
    assert detect_format("list.txt", "||evil.example^\n") == "abp"


# --- the real feeds -------------------------------------------------------------------------------

def test_real_feodo_blocklist() -> None:
    result = load_feed(real(FEODO))
    assert result.total_lines == 760  # 8 banner + header + 750 rows + "# END 750 entries"
    assert not result.skipped
    assert kinds(result) == Counter({"ip_port": 750, "ip": 316})  # every row; online rows also as IP
    assert Counter(i.threat for i in result.indicators if i.kind is IndicatorKind.IP_PORT) == Counter(
        {"BazarLoader": 192, "TrickBot": 185, "QakBot": 169, "Dridex": 148, "Emotet": 56})
    online = load_feed(FEODO, include_offline=False)
    assert kinds(online) == Counter({"ip_port": 316, "ip": 316})
    assert online.skipped == Counter({"offline": 434})
    intel = ThreatIntel.build([result])
    assert intel.stats().by_kind["ip"] == 311 and intel.stats().by_kind["ip_port"] == 750
    assert intel.match_ip("59.6.7.83", 61200).threat == "QakBot"  # last row, no trailing newline
    assert intel.match_ip("87.120.8.91", 443).threat == "BazarLoader"  # offline
    assert intel.match_ip("87.120.8.91") is None


def test_real_urlhaus_csv() -> None:
    result = load_feed(real(URLHAUS_CSV))
    assert result.total_lines == 11126 and not result.skipped
    assert kinds(result) == Counter({"url": 11125})
    assert {i.threat for i in result.indicators} == {"malware_download"}
    first = result.indicators[0]
    assert (first.value, first.port, first.tags) == ("117.209.87.242/bin.sh", 60905, ("32-bit", "elf", "mips", "Mozi"))
    text = URLHAUS_CSV.read_text(encoding="utf-8")
    banner = "#" * 64 + "\n# abuse.ch URLhaus Database Dump (CSV - online URLs only)\n" + "#" * 64 + "\n#\n# "
    with_banner = parse_urlhaus_csv(banner + text, "urlhaus")
    assert not with_banner.skipped
    assert with_banner.indicators == [
        Indicator(i.kind, i.value, i.threat, "urlhaus", i.port, i.tags) for i in result.indicators]


def test_real_urlhaus_abp_list() -> None:
    result = load_feed(real(URLHAUS_ABP))
    assert result.total_lines == 6260 and not result.skipped  # 6 "!" header lines
    assert result.url_match is UrlMatch.ABP
    assert kinds(result) == Counter({"url": 3345, "ip": 2307, "domain": 602})  # 601 bare hosts + 1 ||host^


def test_real_feeds_lookups(real_intel: ThreatIntel) -> None:
    assert real_intel.match_ip("51.178.161.32").threat == "Dridex"
    assert real_intel.match_ip("51.178.161.33") is None
    assert real_intel.match_ip("1.1.104.12").source == "urlhaus-filter-online"
    assert real_intel.match_ip("1.1.104.13") is None
    assert real_intel.match_domain("www.123.ywxww.net").value == "123.ywxww.net"
    assert real_intel.match_domain("ywxww.net") is None
    assert real_intel.match_domain("wegrowcoaching.com") is not None
    assert real_intel.match_domain("notwegrowcoaching.com") is None
    hit = real_intel.match_url("117.209.87.242", "/bin.sh")
    assert hit is not None and "Mozi" in hit.tags
    assert real_intel.match_url("117.209.87.242", "/bin.shell") is None
    exact = real_intel.match_url("windatem.com", "/MainWindow.dll")  # in both: case-exact CSV entry first
    assert exact is not None and exact.source == "urlhaus-csv-online"
    folded = real_intel.match_url("windatem.com", "/MAINWINDOW.DLL")  # the lower-cased ABP entry
    assert folded is not None and folded.source == "urlhaus-filter-online"
    assert real_intel.match_url("windatem.com", "/MainWindow.dllx") is None
    v4, v6 = real_intel.ipset_entries()
    assert len(v4) == 2618 and v6 == []
    assert "1.1.104.12" in v4 and "51.178.161.32" in v4


def test_real_feeds_build_and_look_up_whole() -> None:
    """All three real feeds merge into one intel that answers for each of them. (Speed is in the
    filter benchmark, `vcr-agent bench --suite filter`, not here.)"""
    paths = [real(FEODO), real(URLHAUS_CSV), real(URLHAUS_ABP)]
    start = time.perf_counter()
    intel = ThreatIntel.build(load_feed(p) for p in paths)
    print(f"\nparse + build of the real feeds: {time.perf_counter() - start:.2f} s, {len(intel)} indicators")
    assert intel.match_ip("51.178.161.32") is not None and intel.match_domain("wegrowcoaching.com") is not None
    assert intel.match_ip("203.0.0.1", 443) is None and intel.match_domain("host1.sub.example.com") is None
    assert intel.match_url("github.com", "/user1/repo/releases/download/v1/x.zip") is None


# --- fuzz -----------------------------------------------------------------------------------------

FEEDISH = st.text(alphabet=st.sampled_from(list("0123456789abcdefABCDEF.:/[]#;!|^$*@,\"' \t\n\r%?=&-_xnл\x00\ufeff")),
                  max_size=400)


@FUZZ
@given(text=st.one_of(st.text(max_size=400), FEEDISH), fmt=st.sampled_from(FORMATS))
def test_random_text_never_raises(text: str, fmt: str) -> None:
    result = PARSERS[fmt](text, "fuzz")
    assert Skip.INTERNAL_ERROR.value not in result.skipped
    assert result.total_lines <= text.count("\n") + 1
    detect_format("fuzz.txt", text)
    intel = ThreatIntel.build([result])
    for ind in result.indicators:
        assert ind.value and ind.threat
    intel.ipset_entries()
    intel.ipset_ip_port_entries()
    intel.match_ip(text[:60], 443)
    intel.match_domain(text[:300])
    intel.match_url(text[:40], text[40:120])


@FUZZ
@given(prefix=st.sampled_from(["", "http://", "||", "0.0.0.0 ", "# ", '"1","2","']),
       body=FEEDISH, fmt=st.sampled_from(FORMATS))
def test_feed_shaped_lines_never_raise(prefix: str, body: str, fmt: str) -> None:
    result = PARSERS[fmt]("\n".join(prefix + line for line in body.split("\n")), "fuzz")
    assert Skip.INTERNAL_ERROR.value not in result.skipped
    ThreatIntel.build([result]).match_url(body[:30], body[30:90])
