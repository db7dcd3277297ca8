"""The engine registry and what engines declare to the box: one pydantic model per config section
(every field described), section validation naming the key, bundle kinds, kernel sets, services."""
from __future__ import annotations

import ast
import struct
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from filters.av.engine import Antivirus
from filters import registry
from filters.atp import Atp
from filters.engine import BlockPage, ConfigError, Engine, EngineConfig, EngineContext, KernelSet
from filters.packet import Side, parse_ip
from filters.webfilter.engine import WebFilter

ROOT = Path(__file__).resolve().parents[2]


def _models(model: type[BaseModel]) -> list[type[BaseModel]]:
    """``model`` and every model its fields hold (in lists, mappings, optionals), once each."""
    seen: list[type[BaseModel]] = []

    def walk(tp: Any) -> None:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if tp not in seen:
                seen.append(tp)
                for f in tp.model_fields.values():
                    walk(f.annotation)
            return
        for arg in typing.get_args(tp):
            walk(arg)

    walk(model)
    return seen


@pytest.mark.parametrize("cls", registry.engine_classes(), ids=lambda c: c.name)
def test_every_engine_has_a_described_config_model(cls: type[Engine]) -> None:
    assert cls.Config is not EngineConfig and issubclass(cls.Config, EngineConfig), cls.name
    for model in _models(cls.Config):
        for name, f in model.model_fields.items():
            assert f.description, f"{cls.name}: {model.__name__}.{name} has no description"


@pytest.mark.parametrize("cls, default_on", registry.ENGINES, ids=lambda v: getattr(v, "name", str(v)))
def test_the_models_enabled_default_is_the_registrys(cls: type[Engine], default_on: bool) -> None:
    assert cls.Config.model_fields["enabled"].default is default_on


@pytest.mark.parametrize("engines, key, words", [
    ({"antigravity": {}}, "engines.antigravity", "unknown engine"),
    ({"ips": ["rules"]}, "engines.ips", "expected a mapping"),
    ({"ips": {"enabled": "yes"}}, "engines.ips.enabled", "true or false"),
    ({"ips": {"stream_tail": -1}}, "engines.ips.stream_tail", "at least 0"),
    ({"ips": {"stream_tail": "5"}}, "engines.ips.stream_tail", "whole number"),
    ({"ips": {"vars": {"address_groups": {}}}}, "engines.ips.vars.address_groups", "unknown key"),
    ({"atp": {"feeds": [{"path": "x", "format": "nope"}]}}, "engines.atp.feeds[0].format", "unknown feed format"),
    ({"atp": {"dns_action": "drop"}}, "engines.atp.dns_action", "sinkhole or nxdomain"),
    ({"atp": {"sinkhole_ipv4": "2001:db8::1"}}, "engines.atp.sinkhole_ipv4", "IPv4"),
    ({"webfilter": {"lookup": {"timeout": 30}}}, "engines.webfilter.lookup.timeout", "at most 5"),
    ({"webfilter": {"lookup": {"enabled": True}}}, "engines.webfilter.lookup.url", "https://"),
    ({"webfilter": {"block_quic": 1}}, "engines.webfilter.block_quic", "true or false"),
    ({"probe": {"enabled": True}}, "engines.probe.url", "http://"),
    ({"probe": {"ports": [80, 70000]}}, "engines.probe.ports[1]", "less than 65536"),
    ({"firewall": {"rules": [{"action": "allow"}, {"action": "maybe"}]}}, "engines.firewall.rules[1].action",
     "allow, deny, reject, log"),
    ({"firewall": {"rules": [{"action": "deny", "src": ["office", 5]}]}}, "engines.firewall.rules[0].src[1]",
     "address group name"),
    ({"firewall": {"rules": [{"action": "deny", "dst": "nowhere"}]}}, "engines.firewall.rules[0].dst",
     "neither an address group"),
    ({"firewall": {"services": {"x": "gre/1"}}}, "engines.firewall.services.x[0]", "unknown protocol"),
])
def test_sections_are_checked_naming_file_key_and_problem(engines: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        registry.check_sections(engines, path="/etc/vcr-agent/vcr-agent.yaml")
    assert (err.value.path, err.value.key) == ("/etc/vcr-agent/vcr-agent.yaml", key)
    assert words in err.value.problem


def test_check_sections_reads_no_files_build_does(tmp_path: Path) -> None:
    engines = {"ips": {"enabled": True, "rule_files": [str(tmp_path / "none-*.rules")]}}
    registry.check_sections(engines)  # the shape is right; whether files match is the engine's to say
    with pytest.raises(ConfigError) as err:
        registry.build_engines(engines, EngineContext(), path="cfg.yaml", prepare=False)
    assert err.value.key == "engines.ips.rule_files[0]" and "no rule file matches" in err.value.problem


def test_the_registry_takes_plain_values_and_imports_nothing_of_the_agent() -> None:
    tree = ast.parse((ROOT / "filters" / "registry.py").read_text(encoding="utf-8"))
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert imported and not [m for m in imported if m.split(".")[0] == "agent"]
    engines = registry.build_engines({"firewall": {"enabled": False}, "probe": {"enabled": True, "url": "http://x/"}},
                                     EngineContext(home_net=("192.0.2.0/24",)))
    assert [e.name for e in engines] == ["probe"]


def test_declarations_bundle_kinds_and_kernel_sets() -> None:
    assert registry.engine_for_kind("ips").name == "ips"
    assert registry.engine_for_kind("threatintel") is Atp and registry.engine_for_kind("webcat") is WebFilter
    assert registry.engine_for_kind("av") is Antivirus and registry.engine_for_kind("release") is None
    assert registry.kernel_set_owners() == (Atp,) and registry.kernel_set_owner("ti") is Atp
    assert [s.name for s in registry.kernel_sets()] == ["vcr-ti4", "vcr-tip4", "vcr-ti6", "vcr-tip6"]
    assert all(isinstance(s, KernelSet) and s.counters and s.maxelem == 2_000_000 for s in registry.kernel_sets())


def _ipv4_tcp(src: str, dst: str, sport: int, dport: int) -> bytes:
    import ipaddress

    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, 6, 0, ipaddress.ip_address(src).packed,
                     ipaddress.ip_address(dst).packed)
    return ip + struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x02, 65535, 0, 0)


def test_atp_fills_its_kernel_sets_and_describes_their_drops(tmp_path: Path) -> None:
    feed = tmp_path / "feodo.csv"
    feed.write_text("dst_ip,dst_port,c2_status,malware\n203.0.113.99,4443,online,QakBot\n")
    atp = Atp()
    atp.configure({"feeds": [str(feed)], "allow_documentation_addresses": True})
    atp.prepare()
    entries = atp.kernel_set_entries()
    assert set(entries) == {s.name for s in Atp.kernel_sets}
    assert list(entries["vcr-ti4"]) == ["203.0.113.99"] and not list(entries["vcr-ti6"])
    pkt = parse_ip(_ipv4_tcp("192.0.2.10", "203.0.113.99", 40000, 4443), 1.0, Side.LAN)
    v = atp.kernel_drop_verdict(pkt)
    assert v is not None and v.engine == "atp" and v.reason == "kernel" and "QakBot" in v.signature
    assert v.metadata["atp"]["lan_host"] == "192.0.2.10" and v.metadata["atp"]["indicator"].startswith("203.0.113.99")
    # an engine that is off describes the drop unconfigured: the listed address, no indicator
    off = Atp().kernel_drop_verdict(pkt)
    assert off is not None and "listed address" in off.signature and off.metadata["atp"]["seen"] == "203.0.113.99:4443"


def test_the_web_filter_asks_for_the_block_page(tmp_path: Path) -> None:
    db = tmp_path / "db"
    (db / "phishing").mkdir(parents=True)
    (db / "phishing" / "domains").write_text("known-phish.example\n")
    wf = WebFilter()
    wf.configure({"database": str(db), "blocked": ["phishing"], "box_name": "office-utm"})
    wf.prepare()
    (page,) = wf.local_services()
    assert isinstance(page, BlockPage) and page.box == "office-utm"
    assert page.describe("www.known-phish.example") == (["phishing"], "category")
    assert Engine().local_services() == () and not Engine.bundle_kinds and not Engine.kernel_sets
