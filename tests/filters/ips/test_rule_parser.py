"""Tests for filters.ips.rule_parser: header forms, every supported keyword, errors and skips, loading, fast-pattern choice, and the suricata-verify / ET Open corpora."""
from __future__ import annotations

import json
import re
import socket

import pytest

from filters.ips.netspec import Variables
from filters.ips.payload_parser import pattern_strength
from filters.ips.rule import (
    BASE64_DATA,
    Action,
    Base64Decode,
    Bsize,
    ByteExtract,
    ByteJump,
    ByteTest,
    ContentMatch,
    Direction,
    Endian,
    FieldCheck,
    FlagMode,
    FlagsCheck,
    FlowbitCmd,
    FragbitsCheck,
    IntMatch,
    IntOp,
    IpOptsCheck,
    IsDataAt,
    PacketField,
    PayloadMode,
    PcreMatch,
    SameIpCheck,
    ThresholdType,
    Track,
    Transform,
    UriLen,
    XbitTrack,
)
from filters.ips.netspec import Variables
from filters.ips.payload_parser import pattern_strength
from filters.ips.rule_parser import LoadResult, RuleError, load_classification, load_text, parse_classification, parse_rule
from tests.shared_data import SharedData

VARS = Variables.suricata_defaults()


def ip(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)


def rule(options: str, header: str = "alert tcp any any -> any any", **kw):
    return parse_rule(f"{header} ({options} sid:1;)", vars=VARS, **kw)


def items(options: str, header: str = "alert tcp any any -> any any", buffer: str = "pkt"):
    r = rule(options, header)
    section = r.section(buffer)
    assert section is not None, [s.buffer for s in r.sections]
    return section.items


def error(options: str, header: str = "alert tcp any any -> any any") -> RuleError:
    with pytest.raises(RuleError) as info:
        rule(options, header)
    return info.value


# -- header ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["alert", "drop", "reject", "rejectsrc", "rejectdst", "rejectboth", "pass"])
def test_actions(action):
    assert rule("", f"{action} ip any any -> any any").action is Action(action)


def test_unknown_action_is_a_syntax_error():
    e = error("", "block ip any any -> any any")
    assert not e.unsupported and "action" in e.reason


@pytest.mark.parametrize(
    "proto,ip_protos,app",
    [
        ("ip", set(), None),
        ("tcp", {6}, None),
        ("udp", {17}, None),
        ("icmp", {1, 58}, None),
        ("icmpv6", {58}, None),
        ("tcp-pkt", {6}, None),
        ("http", {6}, "http"),
        ("http1", {6}, "http1"),
        ("tls", {6}, "tls"),
        ("dns", {6, 17}, "dns"),
        ("smtp", {6}, "smtp"),
        ("ftp", {6}, "ftp"),
        ("ssh", {6}, "ssh"),
        ("smb", {6}, "smb"),
    ],
)
def test_protocols(proto, ip_protos, app):
    r = rule("", f"alert {proto} any any -> any any")
    assert r.proto == proto and r.ip_protos == ip_protos and r.app_proto == app


def test_tcp_pkt_means_packet_payload_only():
    assert rule("", "alert tcp-pkt any any -> any any").payload_mode is PayloadMode.PACKET
    assert rule("flow:only_stream;").payload_mode is PayloadMode.STREAM
    assert rule("flow:no_stream;").payload_mode is PayloadMode.PACKET


def test_unknown_protocol_is_unsupported():
    e = error("", "alert foo any any -> any any")
    assert e.unsupported and e.reason == "unsupported protocol: foo"


def test_keywords_imply_the_app_protocol():
    r = rule('content:"x"; http_uri;')
    assert r.app_proto == "http" and r.ip_protos == {6}
    assert rule('dns.query; content:"x";', "alert udp any any -> any any").app_proto == "dns"
    assert rule('pcre:"/a/U";').app_proto == "http"
    e = error('dns.query; content:"x";', "alert http any any -> any any")
    assert not e.unsupported
    assert not error('tls.sni; content:"a"; http.uri; content:"b";').unsupported
    assert not error('http.uri; content:"x";', "alert udp any any -> any any").unsupported


@pytest.mark.parametrize("direction", ["->", "<>"])
def test_directions(direction):
    assert rule("", f"alert ip any any {direction} any any").direction is Direction(direction)


def test_bad_and_unsupported_directions():
    assert not error("", "alert ip any any <- any any").unsupported
    assert error("", "alert ip any any => any any").unsupported


@pytest.mark.parametrize(
    "spec,inside,outside",
    [
        ("any", ["1.2.3.4", "::1"], []),
        ("1.2.3.4", ["1.2.3.4"], ["1.2.3.5", "::1"]),
        ("10.0.0.0/8", ["10.255.0.1"], ["11.0.0.0"]),
        ("10.1.2.3/8", ["10.9.9.9"], ["11.0.0.0"]),
        ("192.168.0.0/255.255.0.0", ["192.168.7.7"], ["192.169.0.0"]),
        ("2001:db8::/32", ["2001:db8::1"], ["2001:db9::1", "1.2.3.4"]),
        ("1.2.3.4-1.2.3.6", ["1.2.3.5"], ["1.2.3.7"]),
        ("[1.1.1.1,2.2.2.0/24]", ["1.1.1.1", "2.2.2.9"], ["3.3.3.3"]),
        ("!1.1.1.1", ["1.1.1.2", "::1"], ["1.1.1.1"]),
        ("[10.0.0.0/8,!10.1.0.0/16]", ["10.2.0.1"], ["10.1.2.3", "11.0.0.1"]),
        ("![1.1.1.1,[2.2.2.2,3.3.3.3]]", ["4.4.4.4"], ["1.1.1.1", "3.3.3.3"]),
        ("[![1.1.1.0/24,!1.1.1.1]]", ["1.1.1.1", "9.9.9.9"], ["1.1.1.2"]),
        ("$HOME_NET", ["192.168.1.1", "10.0.0.1", "172.16.5.5"], ["8.8.8.8", "::1"]),
        ("$EXTERNAL_NET", ["8.8.8.8", "2001:db8::1"], ["10.0.0.1"]),
        ("[$HOME_NET,!192.168.1.1]", ["192.168.1.2"], ["192.168.1.1"]),
        ("!$HTTP_SERVERS", ["8.8.8.8"], ["10.1.1.1"]),
    ],
)
def test_address_specs(spec, inside, outside):
    a = rule("", f"alert ip {spec} any -> any any").src
    assert all(a.matches(ip(x)) for x in inside)
    assert not any(a.matches(ip(x)) for x in outside)


@pytest.mark.parametrize(
    "spec",
    ["1.2.3", "[1.1.1.1", "1.1.1.1]", "!any", "[1.1.1.1,!1.1.1.1]", "$NOPE", "[1.1.1.1,,2.2.2.2]", "300.1.1.1"],
)
def test_bad_address_specs(spec):
    assert not error("", f"alert ip {spec} any -> any any").unsupported


def test_address_variable_recursion_is_caught():
    v = VARS.with_overrides(address_groups={"A": "$B", "B": "[1.1.1.1,$A]"})
    with pytest.raises(RuleError, match="refers to itself"):
        parse_rule("alert ip $A any -> any any (sid:1;)", vars=v)


def test_variables_overrides_and_defaults():
    assert VARS.port_groups["HTTP_PORTS"] == "80"
    assert VARS.address_groups["EXTERNAL_NET"] == "!$HOME_NET"
    v = VARS.with_overrides(address_groups={"$HOME_NET": "[203.0.113.0/24]"}, port_groups={"HTTP_PORTS": "[80,8080]"})
    r = parse_rule("alert tcp $HOME_NET any -> $EXTERNAL_NET $HTTP_PORTS (sid:1;)", vars=v)
    assert r.src.matches(ip("203.0.113.9")) and not r.src.matches(ip("10.0.0.1"))
    assert r.dst.matches(ip("10.0.0.1"))
    assert r.dport.matches(8080) and not r.dport.matches(443)


def test_default_variables_are_suricatas(shared_data: SharedData):
    manifest = json.loads(shared_data.path("peer", "suricata-verify", "manifest.json").read_text())
    assert dict(VARS.address_groups) == manifest["default_vars"]["address-groups"]
    assert dict(VARS.port_groups) == manifest["default_vars"]["port-groups"]


@pytest.mark.parametrize(
    "spec,inside,outside",
    [
        ("any", [0, 80, 65535], []),
        ("80", [80], [81]),
        ("1024:", [1024, 65535], [1023]),
        (":1023", [0, 1023], [1024]),
        ("100:200", [100, 150, 200], [99, 201]),
        ("[80,443,8000:8080]", [80, 443, 8050], [81, 8081]),
        ("!80", [81, 0], [80]),
        ("[1:100,!50]", [1, 49, 51, 100], [50, 101]),
        ("![80,443]", [8080], [80, 443]),
        ("$HTTP_PORTS", [80], [443]),
        ("$SHELLCODE_PORTS", [443], [80]),
        ("$FILE_DATA_PORTS", [80, 110, 143], [25]),
        ("$SIP_PORTS", [5060, 5061], [5062]),
        ("[$HTTP_PORTS,8080]", [80, 8080], [81]),
    ],
)
def test_port_specs(spec, inside, outside):
    p = rule("", f"alert tcp any {spec} -> any any").sport
    assert all(p.matches(x) for x in inside)
    assert not any(p.matches(x) for x in outside)


@pytest.mark.parametrize("spec", ["65536", "200:100", "[80", "http", "!any", "[80,!80]"])
def test_bad_port_specs(spec):
    assert not error("", f"alert tcp any {spec} -> any any").unsupported


def test_header_needs_seven_fields_and_options():
    with pytest.raises(RuleError, match="7 fields"):
        parse_rule("alert tcp any any -> any (sid:1;)", vars=VARS)
    with pytest.raises(RuleError, match=r"\("):
        parse_rule("alert tcp any any -> any any", vars=VARS)
    with pytest.raises(RuleError, match=r"\)"):
        parse_rule("alert tcp any any -> any any (sid:1;", vars=VARS)


# -- option lexing ----------------------------------------------------------------------------------


def test_options_split_on_unescaped_semicolons():
    r = parse_rule(
        r'alert ip any any -> any any (msg:"a\;b \"q\" c\\d\:e"; '
        r"reference:url,support.example.com/kb\;EN-US\;q1; sid:5;)",
        vars=VARS,
    )
    assert r.msg == 'a;b "q" c\\d:e'
    assert r.references[0].kind == "url" and r.references[0].value == r"support.example.com/kb\;EN-US\;q1"
    r = parse_rule('alert ip any any -> any any ( msg: "spaced" ; sid : 7 ; rev: 2 ; )', vars=VARS)
    assert (r.msg, r.sid, r.rev) == ("spaced", 7, 2)


def test_unterminated_option_is_an_error():
    with pytest.raises(RuleError, match="not terminated"):
        parse_rule('alert ip any any -> any any (msg:"x"; sid:1)', vars=VARS)


def test_content_hex_and_escapes():
    (c,) = items(r'content:"a|41 42|b\"\;\:\\|0d0A|";')
    assert c.pattern == b'aABb";:\\\r\n'
    (c,) = items('content:"uid=0|28|root|29|";')
    assert c.pattern == b"uid=0(root)"
    (c,) = items('content:!"x";')
    assert c.negated


@pytest.mark.parametrize(
    "value", ['"a|4|"', '"a|4G|"', '"a|41"', r'"a\x"', '"a"b"', "abc", '""']
)
def test_bad_content_strings(value):
    assert not error(f"content:{value};").unsupported


def test_utf8_content_is_kept_as_bytes():
    (c,) = items('content:"caf\u00e9";')
    assert c.pattern == "caf\u00e9".encode()


# -- identity -------------------------------------------------------------------------------------------

CLASSES = parse_classification(
    "# comment\nconfig classification: trojan-activity,A Network Trojan was detected, 1\n"
    "config classification: misc-activity,Misc activity,3\n"
)


def test_identity_keywords():
    r = parse_rule(
        'alert ip any any -> any any (msg:"m"; sid:2001; rev:3; gid:7; classtype:trojan-activity; '
        "metadata:created_at 2010_01_01, deployment Perimeter, deployment Internal, tag; "
        "metadata:signature_severity Major; reference:cve,2014-0160; reference:url,example.com/a,b; "
        "target:dest_ip;)",
        vars=VARS,
        classification=CLASSES,
        file="x.rules",
        line=4,
    )
    assert (r.sid, r.rev, r.gid, r.msg) == (2001, 3, 7, "m")
    assert (r.classtype, r.category, r.severity) == ("trojan-activity", "A Network Trojan was detected", 1)
    assert r.metadata == {
        "created_at": ("2010_01_01",),
        "deployment": ("Perimeter", "Internal"),
        "tag": ("",),
        "signature_severity": ("Major",),
    }
    assert [(x.kind, x.value) for x in r.references] == [("cve", "2014-0160"), ("url", "example.com/a,b")]
    assert r.target == "dest_ip" and r.file == "x.rules" and r.line == 4


def test_priority_overrides_classtype_severity():
    r = rule("classtype:misc-activity; priority:1;", classification=CLASSES)
    assert r.severity == 1 and r.category == "Misc activity"
    assert rule("").severity == 3


def test_unknown_classtype_with_classification_is_an_error():
    with pytest.raises(RuleError, match="unknown classtype"):
        rule("classtype:nope;", classification=CLASSES)
    assert rule("classtype:nope;").classtype == "nope"


def test_classification_config_file(shared_data: SharedData):
    classes = load_classification(shared_data.path("peer", "et-open", "rules", "classification.config"))
    assert classes["trojan-activity"] == ("A Network Trojan was detected", 1)
    assert classes["bad-unknown"] == ("Potentially Bad Traffic", 2)


@pytest.mark.parametrize("options", ["", "sid:0;", "sid:x;", "priority:0;", "target:any;", "sid:1; sid:2;"])
def test_bad_identity(options):
    with pytest.raises(RuleError):
        parse_rule(f"alert ip any any -> any any ({options})", vars=VARS)


def test_sid_with_leading_zeros():
    assert parse_rule("alert ip any any -> any any (sid:001;)", vars=VARS).sid == 1


# -- content and modifiers ------------------------------------------------------------------------------


def test_content_modifiers():
    (a, b, c) = items(
        'content:"GET"; nocase; depth:3; offset:0; content:"x"; distance:-2; within:10; '
        'content:"end"; endswith; fast_pattern; rawbytes;'
    )
    assert a.nocase and a.depth == 3 and a.offset == 0 and a.folded == b"get"
    assert b.distance == -2 and b.within == 10 and b.relative
    assert c.endswith and c.fast_pattern


def test_startswith_is_depth_of_the_pattern():
    (c,) = items('content:"abc"; startswith;')
    assert c.startswith and c.offset == 0 and c.depth == 3


@pytest.mark.parametrize(
    "options",
    [
        'content:"abc"; depth:2;',
        'content:"abc"; within:2;',
        'content:"a"; depth:2; distance:0;',
        'content:"a"; distance:0; offset:1;',
        'content:"a"; startswith; offset:1;',
        'content:"a"; distance:0; startswith;',
        'content:"a"; nocase; nocase;',
        'content:"a"; depth:1; depth:1;',
        "nocase;",
        "depth:3;",
        'content:"a"; depth:x;',
        'content:"a"; offset:-1;',
    ],
)
def test_bad_content_modifiers(options):
    assert not error(options).unsupported


def test_fast_pattern_forms():
    (c,) = items('content:"abcdef"; fast_pattern:only;')
    assert c.fast_pattern_only
    (c,) = items('content:"abcdefgh"; fast_pattern:2,3;')
    assert c.fast_pattern_chop == (2, 3)
    r = rule('content:"abcdefgh"; fast_pattern:2,3;')
    assert r.fast_pattern.pattern == b"cde" and r.fast_pattern.explicit


@pytest.mark.parametrize(
    "options",
    [
        'content:"a"; fast_pattern:3,3;',
        'content:!"a"; fast_pattern:only;',
        'content:"a"; depth:1; fast_pattern:only;',
        'content:"a"; fast_pattern; content:"b"; fast_pattern;',
        'content:"a"; content:!"b"; fast_pattern; distance:0;',
        'content:"a"; fast_pattern:only; content:"b"; within:5; distance:0;',
        'content:"a"; fast_pattern:x;',
    ],
)
def test_bad_fast_patterns(options):
    assert not error(options).unsupported


# -- buffers --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "keyword,buffer",
    [
        ("http.uri", "http.uri"),
        ("http.uri.raw", "http.uri.raw"),
        ("http.host", "http.host"),
        ("http.host.raw", "http.host.raw"),
        ("http.method", "http.method"),
        ("http.user_agent", "http.user_agent"),
        ("http.header", "http.header"),
        ("http.header.raw", "http.header.raw"),
        ("http.header_names", "http.header_names"),
        ("http.cookie", "http.cookie"),
        ("http.content_type", "http.content_type"),
        ("http.content_len", "http.content_len"),
        ("http.request_body", "http.request_body"),
        ("http.response_body", "file.data"),
        ("http.stat_code", "http.stat_code"),
        ("http.stat_msg", "http.stat_msg"),
        ("http.protocol", "http.protocol"),
        ("http.request_line", "http.request_line"),
        ("http.response_line", "http.response_line"),
        ("http.start", "http.start"),
        ("http.server", "http.server"),
        ("http.location", "http.location"),
        ("http.referer", "http.referer"),
        ("http.accept", "http.accept"),
        ("http.accept_enc", "http.accept_enc"),
        ("http.accept_lang", "http.accept_lang"),
        ("http.connection", "http.connection"),
        ("http_content_type", "http.content_type"),
        ("http_header_names", "http.header_names"),
        ("file.data", "file.data"),
        ("file_data", "file.data"),
        ("tls.sni", "tls.sni"),
        ("tls_sni", "tls.sni"),
        ("tls.cert_subject", "tls.cert_subject"),
        ("tls.cert_issuer", "tls.cert_issuer"),
        ("tls_cert_issuer", "tls.cert_issuer"),
        ("tls.certs", "tls.certs"),
        ("tls.cert_serial", "tls.cert_serial"),
        ("dns.query", "dns.query"),
        ("dns_query", "dns.query"),
        ("ssh_proto", "ssh.proto"),
        ("ja3.hash", "ja3.hash"),
        ("ja3_hash", "ja3.hash"),
        ("ja3s.hash", "ja3s.hash"),
    ],
)
def test_sticky_buffers(keyword, buffer):
    r = rule(f'{keyword}; content:"x";')
    assert [s.buffer for s in r.sections] == [buffer]


@pytest.mark.parametrize(
    "modifier,buffer",
    [
        ("http_uri", "http.uri"),
        ("http_raw_uri", "http.uri.raw"),
        ("http_host", "http.host"),
        ("http_raw_host", "http.host.raw"),
        ("http_method", "http.method"),
        ("http_user_agent", "http.user_agent"),
        ("http_header", "http.header"),
        ("http_raw_header", "http.header.raw"),
        ("http_cookie", "http.cookie"),
        ("http_client_body", "http.request_body"),
        ("http_server_body", "file.data"),
        ("http_stat_code", "http.stat_code"),
        ("http_stat_msg", "http.stat_msg"),
    ],
)
def test_legacy_content_modifiers(modifier, buffer):
    r = rule(f'content:"a"; content:"x"; {modifier}; nocase;')
    assert [s.buffer for s in r.sections] == ["pkt", buffer]
    assert r.section(buffer).items[0].nocase and r.app_proto == "http"


def test_uricontent_is_content_plus_http_uri():
    (c,) = items('uricontent:"/x";', buffer="http.uri")
    assert c.pattern == b"/x"


def test_legacy_modifier_after_sticky_buffer_is_an_error():
    assert not error('http.uri; content:"a"; content:"b"; http_header;').unsupported
    r = rule('http.uri; content:"a"; pkt_data; content:"b"; http_header;')
    assert [s.buffer for s in r.sections] == ["http.uri", "http.header"]


def test_pkt_data_returns_to_the_payload():
    r = rule('file_data; content:"a"; pkt_data; content:"b";')
    assert [s.buffer for s in r.sections] == ["file.data", "pkt"]


def test_repeated_sticky_buffer_continues_the_same_section():
    r = rule('http.uri; content:"a"; http.header; content:"h"; http.uri; content:"b"; distance:0;')
    assert [s.buffer for s in r.sections] == ["http.uri", "http.header"]
    assert [i.pattern for i in r.section("http.uri").items] == [b"a", b"b"]


def test_modifier_moves_content_to_the_end_of_the_target_list():
    r = rule('content:"x"; pcre:"/y/U"; http_uri;')
    assert [type(i) for i in r.section("http.uri").items] == [PcreMatch, ContentMatch]


def test_unsupported_keyword_is_skipped_with_reason():
    e = error('tls.sni; content:"x"; tls.version:1.2;')
    assert e.unsupported and e.reason == "unsupported keyword: tls.version"
    assert error("app-layer-event:http.x;").reason == "unsupported keyword: app-layer-event"


# -- transforms -------------------------------------------------------------------------------------------


def test_dotprefix_transform():
    r = rule('dns.query; dotprefix; content:".example.com"; endswith;', "alert dns any any -> any any")
    (s,) = r.sections
    assert s.buffer == "dns.query" and s.transforms == (Transform.DOTPREFIX,)
    assert r.fast_pattern.transforms == (Transform.DOTPREFIX,)


def test_transform_after_content_opens_a_new_section():
    r = rule('dns.query; content:"rs-"; startswith; dotprefix; content:".rustdesk.com"; endswith;',
             "alert dns any any -> any any")
    assert [(s.buffer, s.transforms) for s in r.sections] == [
        ("dns.query", ()), ("dns.query", (Transform.DOTPREFIX,))
    ]


def test_transforms_need_a_sticky_buffer():
    assert not error('dotprefix; content:"x";').unsupported
    assert [s.transforms for s in rule('http.uri; to_lowercase; strip_whitespace; content:"x";').sections] == [
        (Transform.TO_LOWERCASE, Transform.STRIP_WHITESPACE)
    ]


# -- pcre ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flag,buffer",
    [("U", "http.uri"), ("I", "http.uri.raw"), ("P", "http.request_body"), ("Q", "file.data"),
     ("H", "http.header"), ("D", "http.header.raw"), ("M", "http.method"), ("C", "http.cookie"),
     ("S", "http.stat_code"), ("Y", "http.stat_msg"), ("V", "http.user_agent"), ("W", "http.host"),
     ("Z", "http.host.raw")],
)
def test_pcre_buffer_flags(flag, buffer):
    (p,) = items(f'pcre:"/a/{flag}";', buffer=buffer)
    assert isinstance(p, PcreMatch) and p.flags == flag


def test_pcre_match_flags():
    (p,) = items('pcre:"/a.b/ismxAEGOB";')
    assert p.anchored and not p.relative and not p.negated
    r = rule('content:"x"; pcre:!"/^a$/smiR";')
    p = r.sections[0].items[1]
    assert p.negated and p.relative and not p.anchored
    (p,) = items("pcre:/(oneself)+/U;", buffer="http.uri")
    assert p.regex.search(b"oneselfoneself")


@pytest.mark.parametrize(
    "value",
    ['"/a/7"', '"/a/UH"', '"abc"', '"/a"', '"/a/UB"', '"/(/"'],
)
def test_bad_pcre(value):
    assert not error(f"pcre:{value};").unsupported


def test_pcre_runs_on_pcre2():
    # PCRE2 itself rejects what Suricata's PCRE2 rejects: a bad rule, not an unsupported one
    e = error('pcre:"/(?<=a+)b/";')
    assert not e.unsupported and e.reason.startswith("pcre: ")
    assert not error(r'pcre:"/\u0041/";').unsupported
    # and runs what Python's re could not express
    (p,) = items(r'pcre:"/a\p{L}/";')
    assert p.regex.search(b"ab") and not p.regex.search(b"a1")
    (p,) = items('pcre:"/(?|(a)|(b))\\1/";')
    assert p.regex.search(b"bb") and not p.regex.search(b"ab")
    (p,) = items('pcre:"/a++b/";')
    assert p.regex.search(b"aab")


def test_pcre_relative_needs_a_previous_match_in_the_same_list():
    assert not error('pcre:"/a/R";').unsupported
    assert not error('content:"x"; http_uri; pcre:"/a/R";').unsupported
    assert rule('content:"x"; http_uri; pcre:"/a/UR";').section("http.uri") is not None
    assert rule('file_data; pcre:"/a/R";').section("file.data") is not None
    assert not error('http.uri; pcre:"/a/H";').unsupported
    assert rule('http.uri; pcre:"/a/U";').section("http.uri") is not None


def test_pcre_translations():
    cases = {
        r"(?<name>a)\k<name>": (b"aa", b"ab"),
        r"\x{41}\x4": (b"A\x04", b"A4"),
        r"a\z": (b"a", b"a\n"),
        r"a\Z": (b"a\n", b"a\nb"),
        r"a\hb": (b"a\tb", b"a\nb"),
        r"[[:digit:]]+x": (b"12x", b"ax"),
        r"a(?i)b": (b"aB", b"AB"),
        r"(a(?i)b|c)": (b"C", b"xyz"),
        r"\Qa.b\E": (b"a.b", b"axb"),
        r"(?P<v>x)(?P=v)": (b"xx", b"xy"),
    }
    for regex, (yes, no) in cases.items():
        (p,) = items(f'pcre:"/{regex}/";')
        assert p.regex.search(yes), regex
        assert not p.regex.search(no), regex


def test_pcre_ungreedy_and_dollar_endonly():
    (p,) = items('pcre:"/a.*b/G";')
    assert p.regex.search(b"aXbXb").group(0) == b"aXb"
    (p,) = items('pcre:"/a.*?b/G";')
    assert p.regex.search(b"aXbXb").group(0) == b"aXbXb"
    (p,) = items('pcre:"/a$/E";')
    assert not p.regex.search(b"a\n") and p.regex.search(b"a")


# -- byte_* / isdataat / bsize / urilen / dsize / base64 ---------------------------------------------------


def test_byte_test_forms():
    (t,) = items("byte_test:2,!=,0x10,4,relative,little,bitmask 0x0ff0;")
    assert t == ByteTest(2, "=", 16, 4, True, True, Endian.LITTLE, None, 0x0FF0)
    (t,) = items("byte_test:4,>=,010,-3,string,oct,relative;")
    assert (t.op, t.value, t.offset, t.base) == (">=", 8, -3, 8)
    (t,) = items("byte_test:1,!&,128,6,relative;")
    assert t.negated and t.op == "&"
    (t,) = items("byte_test:3,<,1000,0,string;")
    assert t.base == 10
    (t,) = items("byte_test:0,=,0,0,string,dec;")
    assert t.nbytes == 0


@pytest.mark.parametrize(
    "value",
    ["1,=,1", "9,=,1,0", "24,=,1,0,string", "1,~,1,0", "1,=,1,0,dec", "1,=,1,0,bogus", "1,=,v,0", "0,=,0,0"],
)
def test_bad_byte_test(value):
    assert not error(f"byte_test:{value};").unsupported


def test_byte_jump_forms():
    (j,) = items("byte_jump:4,-7,little,relative,from_beginning,multiplier 2,align,post_offset -16,bitmask 0xff;")
    assert j == ByteJump(4, -7, True, 2, Endian.LITTLE, None, True, True, False, -16, 0xFF)
    (j,) = items("byte_jump:2,0,string,hex,from_end;")
    assert j.base == 16 and j.from_end


@pytest.mark.parametrize("value", ["4", "4,0,from_beginning,from_end", "9,0", "4,0,dec", "4,0,multiplier 0"])
def test_bad_byte_jump(value):
    assert not error(f"byte_jump:{value};").unsupported


def test_byte_extract_and_variable_use():
    r = rule(
        'content:"|18 03|"; byte_extract:2,1,rec_len,relative,multiplier 2,align 4; '
        'byte_test:2,>,rec_len,0,relative; isdataat:rec_len,relative; content:"x"; within:rec_len; '
        "byte_jump:2,rec_len;"
    )
    c, e, t, d, x, j = r.sections[0].items
    assert e == ByteExtract(2, 1, "rec_len", True, 2, Endian.BIG, None, 4)
    assert t.value == "rec_len" and d.value == "rec_len" and x.within == "rec_len" and j.offset == "rec_len"
    assert not error("byte_test:2,>,nope,0;").unsupported
    assert not error('content:"a"; within:nope;').unsupported


def test_isdataat_forms():
    (d,) = items("isdataat:10;")
    assert d == IsDataAt(10, False, False)
    (c, d) = items('content:"a"; isdataat:!4,relative,rawbytes;')
    assert d == IsDataAt(4, True, True)
    assert not error("isdataat:x;").unsupported


def test_isdataat_not_1_relative_becomes_endswith():
    (c,) = items('content:"a"; isdataat:!1,relative;')
    assert c.endswith


@pytest.mark.parametrize(
    "value,test",
    [
        ("10", IntMatch(IntOp.EQ, 10)),
        ("<10", IntMatch(IntOp.LT, 10)),
        (">10", IntMatch(IntOp.GT, 10)),
        ("<=10", IntMatch(IntOp.LE, 10)),
        (">=10", IntMatch(IntOp.GE, 10)),
        ("!10", IntMatch(IntOp.NE, 10)),
        ("!=10", IntMatch(IntOp.NE, 10)),
        ("5<>10", IntMatch(IntOp.RANGE, 5, 10)),
        ("5-10", IntMatch(IntOp.RANGE, 5, 10)),
        ("!5-10", IntMatch(IntOp.NOT_RANGE, 5, 10)),
        ("0x10", IntMatch(IntOp.EQ, 16)),
        ("1kb", IntMatch(IntOp.EQ, 1024)),
        ("&0xc0=0x80", IntMatch(IntOp.MASK_EQ, 0xC0, 0x80)),
        ("&0xc0!=0", IntMatch(IntOp.MASK_NE, 0xC0, 0)),
    ],
)
def test_bsize_forms(value, test):
    (b,) = items(f'http.uri; bsize:{value};', buffer="http.uri")
    assert b == Bsize(test)


def test_bsize_needs_a_sticky_buffer_and_valid_number():
    assert not error("bsize:10;").unsupported
    assert not error("http.uri; bsize:10<>5;").unsupported
    assert not error("http.uri; bsize:x;").unsupported


def test_urilen_forms():
    (u,) = items("urilen:>10;", buffer="http.uri")
    assert u == UriLen(IntMatch(IntOp.GT, 10), False)
    (u,) = items("urilen:5<>10,raw;", buffer="http.uri.raw")
    assert u == UriLen(IntMatch(IntOp.RANGE, 5, 10), True)
    (u,) = items("urilen:5,norm;", buffer="http.uri")
    assert u.test == IntMatch(IntOp.EQ, 5)
    assert not error("urilen:5,bad;").unsupported


def test_base64_decode_and_data():
    r = rule('http.request_body; content:"<m:Data>"; base64_decode:bytes 300, offset 0, relative; '
             'base64_data; content:"<!DOCTYPE"; content:"SYSTEM"; distance:0;')
    (s,) = r.sections
    c, b = s.items
    assert isinstance(b, Base64Decode) and (b.nbytes, b.offset, b.relative) == (300, 0, True)
    assert b.data.buffer == BASE64_DATA and [i.pattern for i in b.data.items] == [b"<!DOCTYPE", b"SYSTEM"]
    assert c.retry  # the relative base64_decode depends on it
    assert not error('base64_data; content:"x";').unsupported
    assert not error("base64_decode:bytes 0;").unsupported


# -- flow / flowbits / flowint / xbits / threshold ---------------------------------------------------------


def test_flow():
    f = rule("flow:established,to_server;").flow
    assert f.established and f.to_server and not f.to_client
    f = rule("flow: from_server, not_established, no_frag;").flow
    assert f.to_client and f.not_established and f.no_frag
    assert rule("flow:stateless,only_frag;").flow.stateless
    for bad in ("flow:to_server,to_client;", "flow:established,not_established;", "flow:sideways;", "flow:;"):
        assert not error(bad).unsupported


def test_flowbits():
    r = rule("flowbits:set,a.b; flowbits:isset,x|y; flowbits:isnotset,p&q; flowbits:unset,a.b; "
             "flowbits:toggle,t; flowbits:noalert;")
    ops = r.flowbits
    assert [(o.cmd, o.names, o.any_of) for o in ops] == [
        (FlowbitCmd.SET, ("a.b",), True),
        (FlowbitCmd.ISSET, ("x", "y"), True),
        (FlowbitCmd.ISNOTSET, ("p", "q"), False),
        (FlowbitCmd.UNSET, ("a.b",), True),
        (FlowbitCmd.TOGGLE, ("t",), True),
    ]
    assert r.noalert
    for bad in ("flowbits:set;", "flowbits:bogus,x;", "flowbits:set,a|b;", "flowbits:isset,a b;"):
        assert not error(bad).unsupported


def test_flowint():
    r = rule("flowint: ET.dl, +, 1; flowint:c,notset; flowint:c,>,other; flowint:c,isnotset;")
    assert [(o.name, o.op, o.value) for o in r.flowints] == [
        ("ET.dl", "+", 1), ("c", "notset", None), ("c", ">", "other"), ("c", "notset", None)
    ]
    assert not r.flowints[0].is_check and r.flowints[2].is_check
    assert not error("flowint:c,+;").unsupported
    assert not error("flowint:c,~,1;").unsupported


def test_xbits():
    r = rule("xbits:set,ET.x,track ip_pair,expire 15; xbits:isset,ET.y, track ip_dst;")
    a, b = r.xbits
    assert (a.cmd, a.name, a.track, a.expire) == (FlowbitCmd.SET, "ET.x", XbitTrack.IP_PAIR, 15)
    assert (b.cmd, b.track, b.expire) == (FlowbitCmd.ISSET, XbitTrack.IP_DST, None)
    assert not error("xbits:set,x;").unsupported


def test_threshold_and_detection_filter():
    t = rule("threshold: type limit, track by_src, seconds 60, count 1;").threshold
    assert (t.type, t.track, t.count, t.seconds) == (ThresholdType.LIMIT, Track.BY_SRC, 1, 60)
    t = rule("threshold:type both,count 5,seconds 30,track by_dst;").threshold
    assert (t.type, t.track) == (ThresholdType.BOTH, Track.BY_DST)
    t = rule("threshold:type threshold, track by_rule, count 10, seconds 30;").threshold
    assert t.type is ThresholdType.THRESHOLD and t.track is Track.BY_RULE
    d = rule("detection_filter:track by_src, count 15, seconds 2;").detection_filter
    assert d.detection_filter and (d.track, d.count, d.seconds) == (Track.BY_SRC, 15, 2)
    for bad in ("threshold:type limit, track by_src, count 1;", "threshold:type x,track by_src,count 1,seconds 1;",
                "detection_filter:track by_src,count 1;", "threshold:type limit,track by_src,count 1,seconds 1,count 2;"):
        assert not error(bad).unsupported
    assert error("threshold:type limit,track by_src,count 1,seconds 1,unique_on src_port;").unsupported


def test_tag_and_noalert_and_app_layer_protocol_and_stream_size():
    r = rule("tag:session,5,packets; noalert; app-layer-protocol:!http; stream_size:server,<,50;")
    assert r.tags[0].kind == "session" and r.tags[0].count == 5 and "tag ignored" in r.notes
    assert r.noalert
    assert r.app_layer_protocol.name == "http" and r.app_layer_protocol.negated
    assert r.stream_size[0].side == "server" and r.stream_size[0].test == IntMatch(IntOp.LT, 50)
    assert not error("stream_size:sideways,<,5;").unsupported


# -- packet keywords ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options,field,test",
    [
        ("dsize:10;", PacketField.DSIZE, IntMatch(IntOp.EQ, 10)),
        ("dsize:9<>18;", PacketField.DSIZE, IntMatch(IntOp.RANGE, 9, 18)),
        ("dsize:>=10;", PacketField.DSIZE, IntMatch(IntOp.GE, 10)),
        ("ttl:0;", PacketField.TTL, IntMatch(IntOp.EQ, 0)),
        ("ttl:<5;", PacketField.TTL, IntMatch(IntOp.LT, 5)),
        ("itype:8;", PacketField.ITYPE, IntMatch(IntOp.EQ, 8)),
        ("itype:7<>20;", PacketField.ITYPE, IntMatch(IntOp.RANGE, 7, 20)),
        ("icode:>0;", PacketField.ICODE, IntMatch(IntOp.GT, 0)),
        ("icmp_id:0;", PacketField.ICMP_ID, IntMatch(IntOp.EQ, 0)),
        ("icmp_seq:5;", PacketField.ICMP_SEQ, IntMatch(IntOp.EQ, 5)),
        ("id:31337;", PacketField.IP_ID, IntMatch(IntOp.EQ, 31337)),
        ("ack:0;", PacketField.TCP_ACK, IntMatch(IntOp.EQ, 0)),
        ("seq:1;", PacketField.TCP_SEQ, IntMatch(IntOp.EQ, 1)),
        ("window:!55808;", PacketField.TCP_WINDOW, IntMatch(IntOp.NE, 55808)),
        ("fragoffset:>0;", PacketField.FRAGOFFSET, IntMatch(IntOp.GT, 0)),
        ("tcp.mss:<536;", PacketField.TCP_MSS, IntMatch(IntOp.LT, 536)),
        ("ip_proto:41;", PacketField.IP_PROTO, IntMatch(IntOp.EQ, 41)),
        ("ip_proto:!tcp;", PacketField.IP_PROTO, IntMatch(IntOp.NE, 6)),
        ("ip_proto:<10;", PacketField.IP_PROTO, IntMatch(IntOp.LT, 10)),
    ],
)
def test_field_checks(options, field, test):
    (check,) = rule(options).packet_checks
    assert check == FieldCheck(field, test)


@pytest.mark.parametrize("options", ["ttl:256;", "itype:x;", "dsize:;", "ip_proto:bogus;", "dsize:70000;"])
def test_bad_field_checks(options):
    assert not error(options).unsupported


def test_flags_fragbits_sameip_ipopts():
    assert rule("flags:SA;").packet_checks == (FlagsCheck(0x12, FlagMode.EXACT, 0),)
    assert rule("flags: S,12;").packet_checks == (FlagsCheck(0x02, FlagMode.EXACT, 0xC0),)
    assert rule("flags:+S;").packet_checks[0].mode is FlagMode.PLUS
    assert rule("flags:A+;").packet_checks[0].mode is FlagMode.PLUS
    assert rule("flags:*SF;").packet_checks == (FlagsCheck(0x03, FlagMode.ANY, 0),)
    assert rule("flags:!R;").packet_checks == (FlagsCheck(0x04, FlagMode.NOT, 0),)
    assert rule("flags:0;").packet_checks == (FlagsCheck(0, FlagMode.EXACT, 0),)
    assert rule("flags:SCE;").packet_checks == (FlagsCheck(0xC2, FlagMode.EXACT, 0),)
    assert not error("flags:SX;").unsupported
    assert rule("fragbits:M+D;").packet_checks == (FragbitsCheck(0x6000, FlagMode.PLUS),)
    assert rule("fragbits:!R;").packet_checks == (FragbitsCheck(0x8000, FlagMode.NOT),)
    assert rule("sameip;").packet_checks == (SameIpCheck(),)
    assert rule("ipopts:lsrr;").packet_checks == (IpOptsCheck(131),)
    assert rule("ipopts:any;").packet_checks == (IpOptsCheck(-1),)
    assert not error("ipopts:bogus;").unsupported


# -- retry flags (Suricata's WITHIN_NEXT / RELATIVE_NEXT) --------------------------------------------------


def test_retry_flags():
    a, b = items('content:"a"; content:"b"; distance:0;')
    assert not a.retry  # distance only: the first occurrence gives the widest window
    a, b = items('content:"a"; content:"b"; within:5;')
    assert a.retry
    a, b = items('content:"a"; content:!"b"; distance:0;')
    assert a.retry
    a, b = items('content:"a"; byte_test:1,=,1,0,relative;')
    assert a.retry
    p, b = items('pcre:"/a/"; content:"b"; distance:0;')
    assert p.retry
    a, b = items('content:"a"; byte_test:1,=,1,0;')
    assert not a.retry
    r = rule('content:"a"; http_uri; content:"b"; distance:0; http_uri;')
    assert r.section("http.uri").items[0].retry  # legacy move of a relative content


# -- fast pattern ------------------------------------------------------------------------------------------


def test_fast_pattern_prefers_buffer_priority_then_length():
    r = rule('content:"a much longer payload pattern"; http.uri; content:"/short";')
    assert (r.fast_pattern.buffer, r.fast_pattern.pattern) == ("http.uri", b"/short")
    r = rule('http.method; content:"POSTING"; http.stat_msg; content:"OK";', "alert http any any -> any any")
    assert r.fast_pattern.buffer == "http.stat_msg"  # priority 3 beats http.method's 4
    r = rule('http.uri; content:"abc"; content:"abcdef"; http.header; content:"xyz";')
    assert r.fast_pattern.pattern == b"abcdef"


def test_fast_pattern_strength_and_order_break_ties():
    assert pattern_strength(b"aaaa") == 6 and pattern_strength(b"a\x02") == 9
    r = rule('content:"aaaa"; content:"ab|00|c";')
    assert r.fast_pattern.pattern == b"ab\x00c"
    r = rule('content:"abcd"; content:"efgh";')
    assert r.fast_pattern.pattern == b"abcd" and r.fast_pattern.item == 0


def test_fast_pattern_ignores_negated_and_reports_hints():
    r = rule('content:!"veryveryverylong"; content:"abc"; offset:2; depth:5; nocase;')
    fp = r.fast_pattern
    assert (fp.pattern, fp.nocase, fp.offset, fp.depth, fp.explicit) == (b"abc", True, 2, 7, False)
    assert rule('content:!"abc";').fast_pattern is None
    assert rule('content:!"abc"; fast_pattern;').fast_pattern is None
    assert rule("dsize:1;").fast_pattern is None
    r = rule('content:"abcdefgh"; content:"x"; fast_pattern:only;')
    assert r.fast_pattern.pattern == b"x" and r.fast_pattern.only and r.fast_pattern.explicit


def test_fast_pattern_never_picks_base64_data():
    r = rule('content:"x"; base64_decode; base64_data; content:"a long decoded pattern";')
    assert r.fast_pattern.pattern == b"x"


# -- loading -----------------------------------------------------------------------------------------------

RULES_TEXT = """\
# a comment
#alert tcp any any -> any any (msg:"disabled"; sid:100;)
# alert http $HOME_NET any -> any any (msg:"disabled 2"; sid:101;)

alert tcp any any -> any any (msg:"one"; content:"a"; sid:1;)
alert dns any any -> any 53 ( \\
  msg:"two"; \\
  content:"suricata"; \\
  sid:2; rev:1;)
alert tcp any any -> any any (msg:"bad"; content:"a|4|"; sid:3;)
alert tls any any -> any any (msg:"asn1"; asn1:oversize_length 100; sid:4;)
alert tls any any -> any any (msg:"asn1 again"; asn1:oversize_length 200; sid:5;)
alert tcp any any -> any any (msg:"one again, newer"; content:"b"; sid:1; rev:2;)
\t
alert ip any any -> any any (msg:"last"; sid:6;)"""


def test_load_text_counts_and_errors():
    res = load_text(RULES_TEXT, VARS, "t.rules")
    assert res.total == 9 and res.active == 7 and res.loaded == 3
    assert sorted(r.sid for r in res.rules) == [1, 2, 6]
    assert next(r for r in res.rules if r.sid == 1).rev == 2
    two = next(r for r in res.rules if r.sid == 2)
    assert two.line == 6 and two.app_proto == "dns" and two.dport.matches(53)
    assert res.skipped == {"unsupported keyword: asn1": 2}
    assert [(e.file, e.line) for e in res.unsupported] == [("t.rules", 11), ("t.rules", 12)]
    bad = [e for e in res.errors if "hex" in e.reason]
    assert [(e.file, e.line, e.unsupported) for e in bad] == [("t.rules", 10, False)]
    dup = [e for e in res.errors if "duplicate" in e.reason]
    assert len(dup) == 1 and dup[0].line == 5
    assert res.loaded + len(res.unsupported) + len(res.errors) == res.active
    assert str(bad[0]).startswith("t.rules:10: ")


def test_load_files_handles_bom_crlf_and_undecodable_bytes(tmp_path):
    from filters.ips.rule_parser import load_files

    path = tmp_path / "x.rules"
    path.write_bytes(b'\xef\xbb\xbfalert tcp any any -> any any (msg:"a"; content:"\xff\xfe"; sid:1;)\r\n'
                     b'alert tcp any any -> any any (msg:"b"; sid:2;)\r\n')
    res = load_files([path], VARS)
    assert res.loaded == 2 and not res.errors
    one = next(r for r in res.rules if r.sid == 1)
    assert one.sections[0].items[0].pattern == b"\xff\xfe" and one.file == str(path)


def test_two_rules_on_one_line_is_an_error():
    res = load_text('alert ip any any -> any any (sid:1;)alert ip any any -> any any (sid:2;)', VARS)
    assert res.loaded == 0 and len(res.errors) == 1


# -- corpora ---------------------------------------------------------------------------------------------


def test_every_suricata_verify_rule_parses(shared_data: SharedData):
    active = loaded = 0
    problems = []
    for path in shared_data.glob("peer/suricata-verify", "*/*.rules"):
        res = load_text(path.read_text(encoding="utf-8"), VARS, str(path))
        active += res.active
        loaded += res.loaded
        problems += [str(e) for e in res.errors + res.unsupported]
    assert not problems, problems[:20]
    assert loaded == active > 0


ACTIVE_RULE_LINE = re.compile(r"^(?:alert|drop|pass|reject|rejectsrc|rejectdst|rejectboth)\s")


def test_et_open_every_active_rule_is_loaded_or_skipped_with_a_reason(et_open: LoadResult, et_open_files, capsys):
    res = et_open
    with capsys.disabled():
        print(f"\nET Open: loaded {res.loaded}/{res.active} active rules ({res.load_rate:.2%}), "
              f"{res.total - res.active} commented out, {len(res.errors)} errors")
        for reason, count in res.skipped.most_common(10):
            print(f"  skipped {count:5d}  {reason}")
        for e in res.errors[:5]:
            print(f"  error   {e}")
    # counted independently of the loader: ET Open writes one rule a line
    lines = sum(1 for path in et_open_files
                for line in path.read_bytes().decode("utf-8-sig", "surrogateescape").splitlines()
                if ACTIVE_RULE_LINE.match(line))
    assert res.active == lines and res.loaded > 0
    assert res.loaded + len(res.unsupported) + len(res.errors) == res.active
    assert sum(res.skipped.values()) == len(res.unsupported) and all(reason for reason in res.skipped)
    assert all(e.reason and e.file and e.line for e in res.unsupported + res.errors)
    assert res.load_rate >= 0.99  # a coverage floor (99.94% today); the brief's floor is 90%
    # load time is measured by the benchmark (docs/benchmarks.md), not asserted here


def test_et_open_rules_are_well_formed(et_open: LoadResult):
    res = et_open
    sids = [(r.gid, r.sid) for r in res.rules]
    assert len(sids) == len(set(sids))
    with_content = [r for r in res.rules if any(isinstance(i, ContentMatch) and not i.negated
                                                 for s in r.sections for i in s.items)]
    assert all(r.fast_pattern is not None for r in with_content if r.sections)
    assert all(r.msg and r.classtype for r in res.rules)
