"""Tests for filters.webfilter.categories: real UT1 samples per category, name/IP/URL-prefix semantics, loading, caps."""
from __future__ import annotations

import functools
import logging
import random
import re
from pathlib import Path

import pytest

from filters.webfilter.categories import (
    MAX_NAME,
    CategoryDB,
    EntryError,
    ListKind,
    ipv4_literal,
    normalize_path,
    parse_entry,
)
from tests import shared_data as shared

SAMPLES = 5  # entries per list file, picked at test time
_PLAIN = re.compile(r"[a-z0-9_.-]+")
ABSENT = "<UT1 data absent>"  # the one parameter when the data is absent: it fails under CI, else skips


def ut1() -> Path:
    """The real UT1 folder (shared test data: fails under CI, skips loudly elsewhere, when absent)."""
    return shared.require("data", "ut1")


def ut1_categories(kind: ListKind | None = None) -> list[str]:
    """At collection: the category folders of the real data (with a ``kind`` file when given)."""
    root = shared.find("data", "ut1")
    if root is None:
        return [ABSENT]
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and (kind is None or (p / kind.value).is_file()))


@functools.cache
def real_db() -> CategoryDB:
    """The whole real UT1 folder, loaded once per test session."""
    return CategoryDB.load(ut1())


@functools.cache
def usable_lines(category: str, kind: ListKind) -> tuple[str, ...]:
    """The lines of ``<category>/<kind>`` that parse as entries of that kind."""
    path = ut1() / category / kind.value
    if not path.is_file():
        return ()
    out = []
    for line in path.read_text("utf-8", "replace").splitlines():
        try:
            parse_entry(line, kind)
        except EntryError:
            continue
        # a hosts-file line that lost its space names what follows the address
        out.append(re.sub(r"^(?:0\.0\.0\.0|127\.0\.0\.1)(?=[^.])", "", line.strip()))
    return tuple(out)


def samples(category: str, kind: ListKind, n: int = SAMPLES) -> list[str]:
    """Up to ``n`` real entries, picked deterministically per category; one IPv4 entry included when present."""
    lines = usable_lines(category, kind)
    rng = random.Random(f"{category}/{kind.value}")
    picked = rng.sample(lines, min(n, len(lines)))
    if kind is ListKind.DOMAINS:
        ips = [line for line in lines if ipv4_literal(line) is not None]
        if ips and not any(ipv4_literal(p) for p in picked):
            picked[-1] = rng.choice(ips)
    return picked


@functools.cache
def domain_oracle(category: str) -> frozenset[str]:
    """An independent reference: the category's plain names, as written in the file."""
    return frozenset(line.lower() for line in usable_lines(category, ListKind.DOMAINS)
                     if _PLAIN.fullmatch(line.lower()) and ipv4_literal(line) is None)


def oracle_lists(category: str, name: str) -> bool:
    """True when ``name`` or one of its parent domains is a listed name (the reference semantics)."""
    labels = name.split(".")
    return any(".".join(labels[i:]) in domain_oracle(category) for i in range(len(labels)))


def entries_of(db: CategoryDB, host: str, path: str = "") -> set[str]:
    return {m.entry for m in db.matches(host, path)}


# -- real data, per category ------------------------------------------------------------------------


def test_real_folder_loads_whole() -> None:
    db = real_db()
    stats = db.stats()
    assert db.categories == frozenset(ut1_categories())
    # every entry line of every list file is an entry, a duplicate or skipped with a counted reason
    lines = 0
    for category in db.categories:
        for kind in ListKind:
            path = ut1() / category / kind.value
            if path.is_file():
                lines += sum(1 for raw in path.read_bytes().splitlines() if raw.strip() and not raw.strip().startswith(b"#"))
    entries = sum(n for per_kind in stats["entries"].values() for n in per_kind.values())
    assert entries > 0 and entries + stats["duplicates"] + sum(stats["skipped"].values()) == lines
    assert all(reason and count > 0 for reason, count in stats["skipped"].items())
    assert re.fullmatch(r"[0-9a-f]{16}", db.version)
    print(f"UT1: {entries} entries, {stats['duplicates']} duplicates, skipped {stats['skipped']}, version {db.version}")


def test_hosts_file_lines_without_their_space_are_recovered() -> None:
    """A hosts-file line that lost its space ("0.0.0.0name", thousands in cryptojacking) lists ``name``."""
    db = real_db()
    glued = re.compile(r"(?:0\.0\.0\.0|127\.0\.0\.1)(?=[^.\s])")
    for category in sorted(db.categories):
        path = ut1() / category / ListKind.DOMAINS.value
        lines = [ln.strip() for ln in path.read_text("utf-8", "replace").splitlines() if glued.match(ln.strip())] \
            if path.is_file() else []
        for line in random.Random(category).sample(lines, min(SAMPLES, len(lines))):
            assert category in db.lookup(glued.sub("", line, count=1)), (category, line)


@pytest.mark.parametrize("category", ut1_categories())
def test_every_category_has_samples(category: str) -> None:
    real_db()
    assert samples(category, ListKind.DOMAINS) or samples(category, ListKind.URLS), f"{category}: no usable entry"


@pytest.mark.parametrize("category", ut1_categories(ListKind.DOMAINS))
def test_real_domain_entries_are_found_and_near_misses_are_not(category: str) -> None:
    db = real_db()
    picked = samples(category, ListKind.DOMAINS)
    assert picked, f"{category}: no usable line in its domains file"
    for entry in picked:
        assert category in db.lookup(entry), entry
        if ipv4_literal(entry) is not None:
            assert category not in db.lookup("x." + entry), entry  # an IP entry is no parent domain
            assert entry not in entries_of(db, "x." + entry)
            continue
        for sub in ("www." + entry, "a.b." + entry, entry.upper() + "."):
            assert category in db.lookup(sub), sub
        sibling = "x" + entry  # "xevil.example" is not "evil.example"
        assert entry not in entries_of(db, sibling)
        assert (category in db.lookup(sibling)) == oracle_lists(category, sibling), sibling


@pytest.mark.parametrize("category", ut1_categories(ListKind.DOMAINS))
def test_parent_of_a_real_listed_subdomain_is_not_listed(category: str) -> None:
    db = real_db()
    deep = [e for e in usable_lines(category, ListKind.DOMAINS) if e.count(".") >= 2 and ipv4_literal(e) is None]
    if not deep:
        pytest.skip(f"{category}: no entry with a parent domain")
    for entry in random.Random(category).sample(deep, min(SAMPLES, len(deep))):
        parent = entry.partition(".")[2]
        assert entry not in entries_of(db, parent)
        assert (category in db.lookup(parent)) == oracle_lists(category, parent), (entry, parent)


@pytest.mark.parametrize("category", ut1_categories(ListKind.URLS))
def test_real_url_entries_match_as_prefixes(category: str) -> None:
    db = real_db()
    picked = samples(category, ListKind.URLS)
    assert picked, f"{category}: no usable line in its urls file"
    for line in picked:
        entry = str(parse_entry(line, ListKind.URLS))
        host, _, path = line.partition("/")
        path = "/" + path
        assert category in db.lookup(host, path), line
        assert entry in entries_of(db, host, path)
        assert entry in entries_of(db, host, path.rstrip("/") + "/more?x=1")
        if ipv4_literal(host) is None and not host.startswith("www."):
            assert entry in entries_of(db, "www." + host, path)  # squidGuard strips "www."
            assert entry not in entries_of(db, "x" + host, path)
        assert entry not in entries_of(db, host)  # no path given: urls entries do not apply
        if path[-1] not in "/?&;=":
            assert entry not in entries_of(db, host, path + "x")  # "/ad" does not cover "/adx"


# -- semantics on small hand-made databases ---------------------------------------------------------


DB = CategoryDB.from_entries({
    "malware": ["evil.example", "sub.listed.example", "192.0.2.1", "[2001:db8::1]", "shared.example/ad",
                "shared.example/dir/", "shared.example/x.php?id=1", "www.w.example/p", "198.51.100.7/admin"],
    "phishing": ["evil.example/login", "bücher.example", "xn--r8jz45g.jp"],
})


@pytest.mark.parametrize(("host", "expected"), [
    ("evil.example", {"malware"}),
    ("a.b.evil.example", {"malware"}),
    ("EVIL.Example.", {"malware"}),
    (b"WWW.EVIL.EXAMPLE", {"malware"}),
    ("evil.example:8080", {"malware"}),
    ("evil.example:", {"malware"}),
    ("evil.example:http", set()),
    ("notevil.example", set()),
    ("evil.example.com", set()),
    ("example", set()),
    ("listed.example", set()),  # parent of a listed subdomain
    ("x.sub.listed.example", {"malware"}),
    ("", set()),
    (".", set()),
    ("..evil.example", {"malware"}),
])
def test_domain_semantics(host: str | bytes, expected: set[str]) -> None:
    assert DB.lookup(host) == expected


@pytest.mark.parametrize("host", [
    "bücher.example", "BÜCHER.example.", "xn--bcher-kva.example", "XN--BCHER-KVA.EXAMPLE", "www.bücher.example",
    "bücher.example".encode(), "例え.jp", "www.例え.JP", "xn--r8jz45g.jp", "例え。jp",
])
def test_idn_is_compared_as_punycode(host: str | bytes) -> None:
    assert DB.lookup(host) == {"phishing"}


def test_idn_entry_given_in_unicode_or_punycode_is_the_same() -> None:
    a = CategoryDB.from_entries({"c": ["Bücher.Example."]})
    b = CategoryDB.from_entries({"c": ["xn--bcher-kva.example"]})
    assert a.version == b.version
    assert a.matches("bücher.example")[0].entry == "xn--bcher-kva.example"
    assert a.lookup("bucher.example") == set()


@pytest.mark.parametrize(("host", "expected"), [
    ("192.0.2.1", {"malware"}),
    ("192.0.2.1.", {"malware"}),
    ("192.0.2.1:443", {"malware"}),
    ("0xc0000201", {"malware"}),  # browsers read these forms as 192.0.2.1 too
    ("3221225985", {"malware"}),
    ("192.0.0x2.01", {"malware"}),
    ("x.192.0.2.1", set()),  # an IP matches only itself
    ("192.0.2.10", set()),
    ("0.192.0.2.1", set()),
    ("[::ffff:192.0.2.1]", {"malware"}),
    ("[2001:db8::1]", {"malware"}),
    ("[2001:DB8:0:0::1]:443", {"malware"}),
    ("[2001:db8::1]:", {"malware"}),
    ("[2001:db8::1]x", set()),
    ("2001:db8::1", {"malware"}),
    ("[2001:db8::2]", set()),
    ("[2001:db8::1", set()),
    ("[zz::1]", set()),
])
def test_ip_literal_hosts_match_only_themselves(host: str, expected: set[str]) -> None:
    assert DB.lookup(host) == expected


def test_ip_entries_do_not_act_as_parent_domains() -> None:
    db = CategoryDB.from_entries({"c": ["1.2.3.4"]})
    assert db.lookup("1.2.3.4") == {"c"}
    assert db.lookup("a.1.2.3.4") == set()
    assert db.lookup("1.2.3.4.example") == set()


@pytest.mark.parametrize(("host", "path", "expected"), [
    ("shared.example", "/ad", {"malware"}),
    ("shared.example", "/ad/x.html", {"malware"}),
    ("shared.example", "/ad?x=1", {"malware"}),
    ("shared.example", "/admin", set()),  # a prefix ends at a boundary: "/ad" is not "/admin"
    ("shared.example", "/AD", {"malware"}),  # case-insensitive, as squidGuard
    ("shared.example", "/%61d/", {"malware"}),  # percent-decoded
    ("shared.example", "//ad", {"malware"}),  # repeated slashes collapsed
    ("shared.example", "/x/../ad", {"malware"}),  # dot segments removed
    ("shared.example", "/ad#frag", {"malware"}),
    ("shared.example", "/", set()),
    ("shared.example", "", set()),  # no path (HTTPS): urls entries do not apply
    ("www.shared.example", "/ad", {"malware"}),  # leading www. stripped, as squidGuard
    ("www2.shared.example", "/ad", {"malware"}),
    ("sub.shared.example", "/ad", set()),  # urls entries are for exactly that host
    ("shared.example", "/dir/", {"malware"}),
    ("shared.example", "/dir/file", {"malware"}),
    ("shared.example", "/dir", set()),  # entry ends with "/": the directory, not the name
    ("shared.example", "/directory/", set()),
    ("shared.example", "/x.php?id=1", {"malware"}),
    ("shared.example", "/x.php?id=1&page=2", {"malware"}),
    ("shared.example", "/x.php?id=12", set()),
    ("www.w.example", "/p", {"malware"}),
    ("w.example", "/p", set()),  # entries are not stripped: "www.w.example/p" is that host only
    ("evil.example", "/login/x", {"malware", "phishing"}),  # domain and URL categories combine
    ("198.51.100.7", "/admin/", {"malware"}),
    ("198.51.100.7", "/", set()),
    ("www.198.51.100.7", "/admin", set()),  # "www." is not stripped down to an IP address
])
def test_url_prefix_semantics(host: str, path: str, expected: set[str]) -> None:
    assert DB.lookup(host, path) == expected


def test_bytes_path_and_host() -> None:
    assert DB.lookup(b"shared.example", b"/ad/\xff") == {"malware"}


def test_matches_names_the_entries() -> None:
    found = DB.matches("www.evil.example", "/login")
    assert [m.entry for m in found] == ["evil.example", "evil.example/login"]
    assert found[1].categories == {"phishing"}
    assert [m.entry for m in DB.matches("[2001:db8::1]")] == ["[2001:db8::1]"]
    v6 = CategoryDB.from_entries({"c": ["[2001:db8::1]/x/", "2001:db8::2"]})
    assert [m.entry for m in v6.matches("[2001:db8::1]:80", "/x/y")] == ["[2001:db8::1]/x/"]
    assert [m.entry for m in v6.matches("2001:db8:0::2")] == ["[2001:db8::2]"]
    assert DB.matches("nothing.example") == ()


def test_categories_combine_across_levels_and_lists() -> None:
    db = CategoryDB.from_entries({"a": ["example.com"], "b": ["sub.example.com", "example.com"], "c": ["x.sub.example.com/p"]})
    assert db.lookup("x.sub.example.com") == {"a", "b"}
    assert db.lookup("x.sub.example.com", "/p/q") == {"a", "b", "c"}
    assert db.lookup("example.com") == {"a", "b"}
    assert db.categories == {"a", "b", "c"}


# -- untrusted input caps ---------------------------------------------------------------------------


def test_overlong_host_keeps_its_rightmost_labels_and_is_counted() -> None:
    db = CategoryDB.from_entries({"c": ["evil.example"]})
    host = "a." * 5000 + "evil.example"
    assert db.lookup(host) == {"c"}
    assert db.lookup(host.encode()) == {"c"}
    assert db.lookup("b" * 300 + ".evil.example") == {"c"}
    assert db.lookup("x" * 5000) == set()
    assert db.stats()["lookup_overflow"]["host"] >= 3


def test_overlong_path_is_capped_and_counted() -> None:
    db = CategoryDB.from_entries({"c": ["example.com/a"]})
    assert db.lookup("example.com", "/a/" + "x/" * 100_000) == {"c"}
    assert db.lookup("example.com", "/" + "?" * 100_000) == set()
    assert db.stats()["lookup_overflow"]["path"] == 2


def test_normalize_path() -> None:
    assert normalize_path("a//B/./c/../%64?Q=1#f") == "/a/b/d?q=1"
    assert normalize_path(b"/x/..") == "/"
    assert len(normalize_path("/" + "a" * 100_000)) == 4096


# -- entries ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "kind", "expected"), [
    ("Example.COM.", None, "example.com"),
    (".example.com", None, "example.com"),  # squid-style leading dot
    ("a_b.example", None, "a_b.example"),
    ("http://Example.com/Path/", None, "example.com/path/"),
    ("user@example.com:8080/x", ListKind.URLS, "example.com/x"),
    ("example.com", ListKind.URLS, "example.com/"),
    ("10.1.2.3", ListKind.DOMAINS, "10.1.2.3"),
    ("[2001:DB8::1]/x", None, "[2001:db8::1]/x"),
    ("例え.jp/パス", None, "xn--r8jz45g.jp/パス"),
])
def test_parse_entry(text: str, kind: ListKind | None, expected: str) -> None:
    assert str(parse_entry(text, kind)) == expected


@pytest.mark.parametrize(("text", "kind", "reason"), [
    ("", None, "empty"),
    ("exa mple.com", None, "whitespace inside the entry"),
    ("*.example.com", None, "wildcard (a domain entry already covers its subdomains)"),
    ("example.com/x", ListKind.DOMAINS, "path in a domains entry"),
    ("a..example", None, "empty label"),
    ("x" * 64 + ".example", None, "label too long"),
    (("x" * 60 + ".") * 5 + "com", None, "name too long"),
    ("exa$mple.com", None, "bad character in name"),
    ("[2001:db8::1", None, "bad IPv6 literal"),
    ("example.com:http", None, "bad port"),
    ("x" * 5000, None, "line too long"),
])
def test_parse_entry_rejects(text: str, kind: ListKind | None, reason: str) -> None:
    with pytest.raises(EntryError) as err:
        parse_entry(text, kind)
    assert err.value.reason == reason


def test_from_entries_is_strict() -> None:
    with pytest.raises(EntryError):
        CategoryDB.from_entries({"c": ["good.example", "bad..example"]})
    with pytest.raises(TypeError):
        CategoryDB.from_entries({"c": "good.example"})


# -- loading ---------------------------------------------------------------------------------------


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_load_skips_odd_lines_and_bad_files_with_counted_reasons(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path / "malware/domains", b"Evil.Example\r\n# comment\n\n0.0.0.0glued.example\nbad..example\n"
          b"\xff\xfe.example\n203.0.113.9\nx.example/path\nb\xc3\xbccher.example\n")
    write(tmp_path / "malware/urls", b"shared.example/ad\nexample.org\n" + b"l" * 5000 + b".example/x\n")
    write(tmp_path / "malware/domains.1", b"part.example\n")
    write(tmp_path / "malware/domains.diff", b"ignored.example\n")
    (tmp_path / "games/domains").mkdir(parents=True)  # a directory where a file should be: unreadable
    write(tmp_path / "games/urls", b"\x00\x01\x02 binary junk\n")
    write(tmp_path / "empty/domains", b"")
    write(tmp_path / ".hidden/domains", b"hidden.example\n")
    with caplog.at_level(logging.WARNING, logger="filters.webfilter.categories"):
        db = CategoryDB.load(tmp_path)
    assert db.categories == {"malware", "games", "empty"}
    assert db.lookup("a.evil.example") == {"malware"}
    assert db.lookup("203.0.113.9") == {"malware"}
    assert db.lookup("bücher.example") == {"malware"}
    assert db.lookup("part.example") == {"malware"}
    assert db.lookup("ignored.example") == set()
    assert db.lookup("hidden.example") == set()
    assert db.lookup("glued.example") == {"malware"}  # "0.0.0.0glued.example": the space was lost
    assert db.lookup("shared.example", "/ad/") == {"malware"}
    assert db.lookup("example.org", "/anything") == {"malware"}
    stats = db.stats()
    assert stats["skipped"] == {
        "empty label": 1, "not UTF-8": 1, "path in a domains entry": 1,
        "line too long": 1, "unreadable file": 1, "whitespace inside the entry": 1,
    }
    assert stats["entries"]["malware"] == {"domains": 5, "urls": 2}
    assert stats["entries"]["empty"] == {"domains": 0, "urls": 0}
    assert "skipped 3 lines" in caplog.text and "bad..example" in caplog.text
    assert "cannot read" in caplog.text


def test_load_selected_categories_and_missing_ones(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path / "malware/domains", b"evil.example\n")
    write(tmp_path / "games/domains", b"fun.example\n")
    with caplog.at_level(logging.WARNING):
        db = CategoryDB.load(tmp_path, categories=["games", "nosuch"])
    assert db.categories == {"games"}
    assert db.lookup("evil.example") == set()
    assert db.stats()["missing_categories"] == ["nosuch"]
    assert "nosuch" in caplog.text


def test_load_of_a_missing_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        CategoryDB.load(tmp_path / "absent")


def test_version_is_a_content_hash(tmp_path: Path) -> None:
    write(tmp_path / "a/malware/domains", b"b.example\na.example\n")
    write(tmp_path / "a/malware/urls", b"c.example/x\n")
    write(tmp_path / "b/malware/domains", b"A.example.\r\n\nb.example\na.example\n")
    write(tmp_path / "b/malware/urls", b"c.example/X\n")
    one, two = CategoryDB.load(tmp_path / "a"), CategoryDB.load(tmp_path / "b")
    assert one.version == two.version
    assert one.version == CategoryDB.from_entries({"malware": ["a.example", "b.example", "c.example/x"]}).version
    assert one.version != CategoryDB.from_entries({"phishing": ["a.example", "b.example", "c.example/x"]}).version
    assert one.version != CategoryDB.from_entries({"malware": ["a.example", "b.example"]}).version


def test_stats_shape() -> None:
    stats = DB.stats()
    assert stats["entries"]["malware"] == {"domains": 4, "urls": 5}
    assert stats["version"] == DB.version
    assert {"load_seconds", "skipped", "duplicates", "lookup_overflow", "categories"} <= set(stats)


def test_real_lookups_of_listed_and_unlisted_names() -> None:
    """Look-ups over the whole real database (their rate is the filter benchmark's, `python -m lab
    bench --suite filter`): listed names and their subdomains hit, near misses and made-up names do
    exactly what the reference semantics say."""
    db = real_db()
    rng = random.Random(7)
    listed = [(c, e) for c in sorted(db.categories) for e in samples(c, ListKind.DOMAINS, 40)
              if ipv4_literal(e) is None]
    assert listed
    for category, entry in rng.sample(listed, min(400, len(listed))):
        assert category in db.lookup(entry) and category in db.lookup("www." + entry), entry
        assert (category in db.lookup("x" + entry)) == oracle_lists(category, "x" + entry), entry
    assert all(not db.lookup(f"img{i}.cdn.vcr-test.invalid") for i in range(100))
    assert len(db.lookup("a" * MAX_NAME)) == 0
