"""Tests for filters.webfilter.policy: config parsing with keyed errors, decision order, the shipped default."""
from __future__ import annotations

from typing import Any

import pytest

from filters.engine import ConfigError
from filters.webfilter.categories import CategoryDB, EntryError, ListKind
from filters.webfilter.policy import (
    DEFAULT_BLOCKED,
    MAX_POLICY_ENTRIES,
    Decision,
    WebPolicy,
    WebVerdict,
    decide,
    parse_policy,
)
from tests.filters.webfilter.test_categories import real_db, samples, ut1_categories

DB = CategoryDB.from_entries({
    "malware": ["evil.example", "shared.example/bad/", "192.0.2.66"],
    "phishing": ["evil.example", "bank-login.example"],
    "games": ["fun.example"],
})


# -- parse_policy ----------------------------------------------------------------------------------


def test_empty_section_is_the_shipped_default() -> None:
    for section in ({}, None):
        policy = parse_policy(section)
        assert policy == WebPolicy()
        assert policy.blocked == DEFAULT_BLOCKED
        assert policy.allow == () and policy.deny == ()


def test_shipped_default_blocks_only_security_categories() -> None:
    assert DEFAULT_BLOCKED == {"malware", "phishing", "cryptojacking", "ddos"}


def test_parse_policy_normalizes_entries_and_drops_duplicates() -> None:
    policy = parse_policy({
        "blocked": ["games", " malware "],
        "allow": ["Partner.Example.", "https://shared.example/Docs/", "partner.example", "例え.jp"],
        "deny": ["[2001:DB8::1]", "203.0.113.5"],
    })
    assert policy.blocked == {"games", "malware"}
    assert policy.allow == ("partner.example", "shared.example/docs/", "xn--r8jz45g.jp")
    assert policy.deny == ("[2001:db8::1]", "203.0.113.5")


def test_empty_blocked_list_blocks_no_category() -> None:
    assert parse_policy({"blocked": []}).blocked == frozenset()
    assert parse_policy({"blocked": None}).blocked == frozenset()


@pytest.mark.parametrize(("section", "key", "problem"), [
    ({"blok": ["malware"]}, "blok", "unknown key"),
    ({"blocked": "malware"}, "blocked", "expected a list of category names"),
    ({"blocked": ["malware", 3]}, "blocked[1]", "expected a category name"),
    ({"blocked": ["malware", " "]}, "blocked[1]", "expected a category name"),
    ({"allow": "example.com"}, "allow", "expected a list"),
    ({"allow": ["ok.example", "bad..example"]}, "allow[1]", "empty label"),
    ({"allow": ["*.example.com"]}, "allow[0]", "wildcard"),
    ({"allow": [{"domain": "x"}]}, "allow[0]", "expected a domain"),
    ({"deny": ["ok.example", "exa mple.com"]}, "deny[1]", "whitespace"),
    ({"deny": {"a": 1}}, "deny", "expected a list"),
    ({"deny": ["x.example"] * (MAX_POLICY_ENTRIES + 1)}, "deny", "too many entries"),
])
def test_bad_sections_name_the_key(section: dict[str, Any], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_policy(section)
    assert err.value.key == key
    assert problem in err.value.problem


def test_section_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse_policy(["malware"])  # type: ignore[arg-type]


def test_unknown_categories_are_errors_only_against_a_known_set() -> None:
    assert parse_policy({"blocked": ["malwar"]}).blocked == {"malwar"}
    with pytest.raises(ConfigError) as err:
        parse_policy({"blocked": ["games", "malwar"]}, known_categories=DB.categories)
    assert err.value.key == "blocked[1]"
    assert "malwar" in err.value.problem and "malware" in err.value.problem
    assert parse_policy({"blocked": ["games"]}, known_categories=DB.categories).blocked == {"games"}


def test_config_error_places_under_the_engine_section() -> None:
    with pytest.raises(ConfigError) as err:
        parse_policy({"allow": ["a..b"]})
    placed = err.value.within(path="/etc/vcr-agent.yaml", prefix="engines.webfilter")
    assert str(placed).startswith("/etc/vcr-agent.yaml: engines.webfilter.allow[0]: ")


def test_direct_construction_validates_entries() -> None:
    with pytest.raises(EntryError):
        WebPolicy(allow=("bad..example",))


# -- decide ----------------------------------------------------------------------------------------


def test_unlisted_site_is_allowed() -> None:
    d = decide(DB, WebPolicy(), "www.example.org", "/")
    assert d == Decision(WebVerdict.ALLOW, frozenset(), "not blocked", "")
    assert d.verdict == "allow" and not d.blocks


def test_blocked_category_names_the_category_and_the_entry() -> None:
    d = decide(DB, WebPolicy(), "cdn.EVIL.example.")
    assert d.verdict == "block" and d.blocks
    assert d.categories == {"malware", "phishing"}
    assert d.reason == "category malware"
    assert d.matched == "evil.example"


def test_url_category_blocks_only_that_path() -> None:
    assert decide(DB, WebPolicy(), "shared.example", "/bad/x.exe").reason == "category malware"
    assert decide(DB, WebPolicy(), "shared.example", "/bad/x.exe").matched == "shared.example/bad/"
    assert not decide(DB, WebPolicy(), "shared.example", "/good/").blocks
    assert not decide(DB, WebPolicy(), "shared.example").blocks  # HTTPS: no path, no URL entry


def test_category_not_in_policy_is_allowed_but_reported() -> None:
    d = decide(DB, WebPolicy(), "fun.example")
    assert d.verdict == "allow" and d.categories == {"games"}
    assert decide(DB, WebPolicy(blocked=frozenset({"games"})), "fun.example").reason == "category games"


def test_allow_list_beats_categories() -> None:
    policy = WebPolicy(allow=("evil.example",))
    d = decide(DB, policy, "a.evil.example")
    assert d == Decision(WebVerdict.ALLOW, frozenset({"malware", "phishing"}), "allow list", "evil.example")
    assert decide(DB, policy, "notevil.example").reason == "not blocked"


def test_allow_list_beats_deny_list() -> None:
    policy = WebPolicy(allow=("partner.example",), deny=("example", "partner.example"))
    assert decide(DB, policy, "www.partner.example").reason == "allow list"
    d = decide(DB, policy, "other.example")
    assert d.verdict == "block" and d.reason == "deny list" and d.matched == "example"


def test_deny_list_beats_categories_and_default_allow() -> None:
    policy = WebPolicy(deny=("fun.example", "192.0.2.66"))
    assert decide(DB, policy, "x.fun.example") == Decision(WebVerdict.BLOCK, frozenset({"games"}), "deny list", "fun.example")
    assert decide(DB, policy, "192.0.2.66").reason == "deny list"
    assert decide(DB, policy, "x.192.0.2.66").reason == "not blocked"


def test_allow_url_prefix_applies_only_to_that_path() -> None:
    policy = WebPolicy(allow=("shared.example/bad/known-good.zip",))
    assert decide(DB, policy, "shared.example", "/bad/known-good.zip").reason == "allow list"
    assert decide(DB, policy, "www.shared.example", "/bad/known-good.zip?v=2").reason == "allow list"
    assert decide(DB, policy, "shared.example", "/bad/other.zip").reason == "category malware"
    assert decide(DB, policy, "shared.example", "/bad/known-good.zip.exe").reason == "category malware"


def test_deny_url_prefix() -> None:
    policy = WebPolicy(deny=("video.example/live",))
    assert decide(DB, policy, "video.example", "/live/tv").reason == "deny list"
    assert decide(DB, policy, "video.example", "/lively").reason == "not blocked"
    assert decide(DB, policy, "video.example").reason == "not blocked"


def test_idn_in_policy_lists() -> None:
    policy = parse_policy({"deny": ["例え.jp"]})
    assert decide(DB, policy, "xn--r8jz45g.jp").reason == "deny list"
    assert decide(DB, policy, "WWW.例え.jp").matched == "xn--r8jz45g.jp"


# -- the shipped default on the real lists ---------------------------------------------------------


def test_default_categories_exist_in_the_real_lists() -> None:
    assert DEFAULT_BLOCKED <= real_db().categories  # the real UT1 lists: shared test data, required
    parse_policy({"blocked": sorted(DEFAULT_BLOCKED)}, known_categories=real_db().categories)


@pytest.mark.parametrize("category", ut1_categories(ListKind.DOMAINS))
def test_default_policy_on_real_samples(category: str) -> None:
    db = real_db()
    policy = WebPolicy()
    picked = samples(category, ListKind.DOMAINS)
    assert picked, category
    for entry in picked:
        d = decide(db, policy, entry)
        assert category in d.categories
        if category in DEFAULT_BLOCKED:
            assert d.blocks and d.reason.startswith("category ") and d.matched
        elif not d.categories & DEFAULT_BLOCKED:
            assert d.verdict == "allow" and d.reason == "not blocked", (entry, d)
        assert decide(db, WebPolicy(allow=(entry,)), entry).reason == "allow list"
