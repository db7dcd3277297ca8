"""docs/configuration.md is generated from the schema (agent/configdoc.py) and must be current."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from agent import configdoc
from filters.engine import Engine

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_configuration_md_is_current() -> None:
    current = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    assert current == configdoc.render(), (
        f"docs/configuration.md is stale: regenerate it with `{configdoc.COMMAND}` and commit it")


def test_every_key_of_agent_config_is_documented() -> None:
    text = configdoc.render()
    for key in ("dataplane.flows.stream_depth", "center.spool.max_events", "remote_config.confirm_window",
                "home_net", "settings_sheet.management_ip"):
        assert f"| `{key}` |" in text
    assert "## `engines`" in text and "### `engines.firewall`" in text


class _Rule(BaseModel):
    name: str = Field(description="rule name")
    action: Literal["allow", "deny"] = "allow"


class _Section(BaseModel):
    enabled: bool = Field(True, description="on or off")
    depth: int = Field(4096, ge=0, le=65536, description="bytes")
    mode: Literal["sinkhole", "nxdomain"] = "sinkhole"
    groups: dict[str, list[str]] = Field(default_factory=dict)
    rules: list[_Rule] = Field(default_factory=list, description="first match wins")
    lookup: _Rule | None = None


class _WithSchema(Engine):
    """An engine with a schema."""

    name = "withschema"
    Config = _Section


class _WithoutSchema(Engine):
    name = "noschema"


def test_engine_sections_walk_the_config_model_or_say_there_is_none() -> None:
    text = "\n".join(configdoc.engine_section(_WithSchema, False))
    assert "Off unless `enabled: true`." in text
    assert "| `engines.withschema.depth` | int (≥ 0, ≤ 65536) | `4096` | bytes |" in text
    assert '| `engines.withschema.mode` | "sinkhole" or "nxdomain" | `sinkhole` |' in text
    assert "| `engines.withschema.groups` | map of str to list of str | `{}` |" in text
    assert "| `engines.withschema.rules` | list of section | `[]` | first match wins |" in text
    assert "| `engines.withschema.rules[].name` | str | required | rule name |" in text
    assert '| `engines.withschema.rules[].action` | "allow" or "deny" | `allow` |' in text
    assert "| `engines.withschema.lookup.name` |" in text
    assert "(no schema yet" in "\n".join(configdoc.engine_section(_WithoutSchema, None))


def test_defaults_that_are_not_json_are_shown_as_text() -> None:
    import ipaddress

    class _Odd(BaseModel):
        nets: list[ipaddress.IPv4Network] = Field(default_factory=lambda: [ipaddress.ip_network("192.0.2.0/24")])

    (row,) = configdoc.model_rows(_Odd)
    assert row[2] == '`["192.0.2.0/24"]`'
