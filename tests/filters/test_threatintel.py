"""Tests for filters.threatintel: annotated samples, the real abuse.ch/URLhaus feeds, look-ups, fuzz."""
from __future__ import annotations

import csv
import ipaddress
import re
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

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
from tests.shared_data import SharedData

SAMPLES = Path(__file__).parent / "threatintel_samples"
FEODO = ("data", "abusech", "feodotracker-ipblocklist.csv")  # under the shared test data
URLHAUS_CSV = ("data", "abusech", "urlhaus-csv-online.csv")
URLHAUS_ABP = ("data", "urlhaus", "urlhaus-filter-online.txt")
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


def kinds(result: ParseResult) -> Counter[str]:
    return Counter(ind.kind.value for ind in result.indicators)


@pytest.fixture(scope="module")
def sample_intel() -> ThreatIntel:
    return ThreatIntel.build(load_feed(p) for p in sample_files())


@pytest.fixture(scope="module")
def feodo(shared_data: SharedData) -> Path:
    return shared_data.path(*FEODO)


@pytest.fixture(scope="module")
def urlhaus_csv(shared_data: SharedData) -> Path:
    return shared_data.path(*URLHAUS_CSV)


@pytest.fixture(scope="module")
def urlhaus_abp(shared_data: SharedData) -> Path:
    return shared_data.path(*URLHAUS_ABP)


@pytest.fixture(scope="module")
def real_intel(feodo: Path, urlhaus_csv: Path, urlhaus_abp: Path) -> ThreatIntel:
    return ThreatIntel.build([load_feed(feodo), load_feed(urlhaus_csv), load_feed(urlhaus_abp)])


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def csv_rows(path: Path) -> list[dict[str, str]]:
    """The data rows of an abuse.ch CSV, read here with the csv module (banner and END lines aside)."""
    return list(csv.DictReader(ln for ln in lines_of(path) if ln.strip() and not ln.startswith("#")))


def abp_rules(path: Path) -> dict[str, list[str]]:
    """The rule lines of the URLhaus ABP list by what they name, classified here: "url" (host/path),
    "ip" (an address) or "domain" (a host name, bare or ``||host^``)."""
    out: dict[str, list[str]] = {"url": [], "ip": [], "domain": []}
    for line in lines_of(path):
        if not line.strip() or line.startswith("!"):
            continue
        value = line[2:].split("^")[0] if line.startswith("||") else line.strip()
        if "/" in value:
            out["url"].append(value)
        else:
            try:
                ipaddress.ip_address(value)
                out["ip"].append(value)
            except ValueError:
                out["domain"].append(value)
    return out


def url_key(url: str) -> tuple[str, str]:
    """(host, path and query) of a feed URL, as a request would present them."""
    u = urlsplit(url)
    return u.hostname or "", (u.path or "/") + (f"?{u.query}" if u.query else "")


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

# Each real feed is one snapshot of a changing list: the tests derive what to expect from the files
# (read here independently of the parsers), not from the numbers of one snapshot.


def test_real_feodo_blocklist(feodo: Path) -> None:
    rows = csv_rows(feodo)
    online = [r for r in rows if r["c2_status"] == "online"]
    result = load_feed(feodo)
    assert rows and online and result.total_lines == len(lines_of(feodo))
    assert not result.skipped
    # every row as ip:port, the online ones also as the whole IP
    assert kinds(result) == Counter({"ip_port": len(rows), "ip": len(online)})
    assert Counter(i.threat for i in result.indicators if i.kind is IndicatorKind.IP_PORT) == Counter(
        r["malware"] for r in rows)
    only_online = load_feed(feodo, include_offline=False)
    assert kinds(only_online) == Counter({"ip_port": len(online), "ip": len(online)})
    assert only_online.skipped == Counter({"offline": len(rows) - len(online)})
    intel = ThreatIntel.build([result])
    assert intel.stats().by_kind["ip"] == len({r["dst_ip"] for r in online})
    assert intel.stats().by_kind["ip_port"] == len({(r["dst_ip"], r["dst_port"]) for r in rows})
    last = rows[-1]  # the file may end without a newline
    threats = {r["malware"] for r in rows if (r["dst_ip"], r["dst_port"]) == (last["dst_ip"], last["dst_port"])}
    assert intel.match_ip(last["dst_ip"], int(last["dst_port"])).threat in threats
    online_ips = {r["dst_ip"] for r in online}
    for gone in [r for r in rows if r["dst_ip"] not in online_ips][:5]:  # offline: that port only
        assert intel.match_ip(gone["dst_ip"], int(gone["dst_port"])) is not None
        assert intel.match_ip(gone["dst_ip"]) is None


def test_real_urlhaus_csv(urlhaus_csv: Path) -> None:
    rows = csv_rows(urlhaus_csv)
    result = load_feed(urlhaus_csv)
    assert rows and result.total_lines == len(lines_of(urlhaus_csv)) and not result.skipped
    assert kinds(result) == Counter({"url": len(rows)})  # one URL indicator a row
    assert {i.threat for i in result.indicators} == {r["threat"] or "malware_download" for r in rows}
    intel = ThreatIntel.build([result])
    for row in rows[:: max(1, len(rows) // 50)]:
        host, path = url_key(row["url"])
        hit = intel.match_url(host, path)
        assert hit is not None and hit.source == urlhaus_csv.stem, row["url"]
    text = urlhaus_csv.read_text(encoding="utf-8")
    banner = "#" * 64 + "\n# abuse.ch URLhaus Database Dump (CSV - online URLs only)\n" + "#" * 64 + "\n#\n# "
    with_banner = parse_urlhaus_csv(banner + text, "urlhaus")
    assert not with_banner.skipped
    assert with_banner.indicators == [
        Indicator(i.kind, i.value, i.threat, "urlhaus", i.port, i.tags) for i in result.indicators]


def test_real_urlhaus_abp_list(urlhaus_abp: Path) -> None:
    rules = abp_rules(urlhaus_abp)
    result = load_feed(urlhaus_abp)
    assert result.total_lines == len(lines_of(urlhaus_abp)) and not result.skipped  # "!" header lines too
    assert result.url_match is UrlMatch.ABP
    assert kinds(result) == Counter({kind: len(values) for kind, values in rules.items()}) and result.indicators


def test_real_feeds_lookups(real_intel: ThreatIntel, feodo: Path, urlhaus_csv: Path, urlhaus_abp: Path) -> None:
    online = [r for r in csv_rows(feodo) if r["c2_status"] == "online"]
    rules = abp_rules(urlhaus_abp)
    listed_ips = {r["dst_ip"] for r in online} | set(rules["ip"])
    for ip in [online[0]["dst_ip"], rules["ip"][0]]:
        hit = real_intel.match_ip(ip)
        assert hit is not None and hit.kind is IndicatorKind.IP
        near = str(ipaddress.ip_address(ip) + 1)
        assert near in listed_ips or real_intel.match_ip(near) is None
    assert real_intel.match_ip(online[0]["dst_ip"]).threat in {r["malware"] for r in online if r["dst_ip"] == online[0]["dst_ip"]}
    assert real_intel.match_ip(rules["ip"][0]).source in (feodo.stem, urlhaus_abp.stem)
    domains = set(rules["domain"])
    deep = next(d for d in rules["domain"] if d.count(".") >= 2 and d.partition(".")[2] not in domains)
    assert real_intel.match_domain("www." + deep).value == deep
    assert real_intel.match_domain(deep.partition(".")[2]) is None  # a parent is not listed by its child
    assert real_intel.match_domain("not" + deep) is None or "not" + deep in domains  # label-wise, not a suffix
    host, path = url_key(csv_rows(urlhaus_csv)[0]["url"])
    assert real_intel.match_url(host, path) is not None
    assert real_intel.match_url(host, path + "ell") is None or path.endswith("/")
    # a URL in both lists, in a case the CSV keeps and the ABP list lower-cases: the case-exact CSV
    # entry first, the folded ABP one for other cases of it
    abp_urls = set(rules["url"])
    both = [(h, p) for h, p in (url_key(r["url"]) for r in csv_rows(urlhaus_csv))
            if p != p.lower() and f"{h}{p}".lower() in abp_urls and "?" not in p]
    for h, p in both[:5]:
        assert real_intel.match_url(h, p).source == urlhaus_csv.stem
        assert real_intel.match_url(h, p.swapcase()).source == urlhaus_abp.stem
    v4, v6 = real_intel.ipset_entries()
    listed = {i.value for i in load_feed(feodo).indicators + load_feed(urlhaus_abp).indicators
              if i.kind is IndicatorKind.IP}
    assert set(v4) | set(v6) == listed  # the feeds list no networks: every listed IP, nothing else
    assert all(":" in a for a in v6) and not any(":" in a for a in v4)


def test_real_feeds_build_and_look_up_whole(feodo: Path, urlhaus_csv: Path, urlhaus_abp: Path) -> None:
    """All three real feeds merge into one intel that answers for each of them. (Speed is in the
    filter benchmark, `python -m lab bench --suite filter`, not here.)"""
    feeds = [load_feed(p) for p in (feodo, urlhaus_csv, urlhaus_abp)]
    intel = ThreatIntel.build(feeds)
    assert {i.source for i in (intel.match_ip(csv_rows(feodo)[0]["dst_ip"], int(csv_rows(feodo)[0]["dst_port"])),
                                intel.match_url(*url_key(csv_rows(urlhaus_csv)[0]["url"])),
                                intel.match_domain(abp_rules(urlhaus_abp)["domain"][0]))} == \
        {feodo.stem, urlhaus_csv.stem, urlhaus_abp.stem}
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
