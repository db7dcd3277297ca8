"""Config loading: good files load; bad ones name the file, the key path and the problem."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agent.config import load_config
from filters.engine import ConfigError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "vcr-agent.yaml"


def write(tmp_path: Path, data: object, name: str = "agent.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data, allow_unicode=True) if not isinstance(data, str) else data)
    return p


def example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def test_shipped_example_loads():
    cfg = load_config(EXAMPLE)
    assert cfg.bridge.lan_port == "lan0"
    assert cfg.settings_sheet is not None and cfg.settings_sheet.gateway == "192.0.2.1"
    assert cfg.dataplane.fail_mode == "open"


@pytest.mark.parametrize(
    "mutate, key, words",
    [
        (lambda d: d["settings_sheet"].update(management_ip="192.0.2.300/24"), "settings_sheet.management_ip", "does not appear"),
        (lambda d: d["settings_sheet"].update(management_ip="192.0.2.2"), "settings_sheet.management_ip", "prefix length"),
        (lambda d: d["dataplane"].update(fail_mode="sometimes"), "dataplane.fail_mode", "open"),
        (lambda d: d["dataplane"].update(colour="blue"), "dataplane.colour", "unknown key"),
        (lambda d: d["dataplane"].update(busy_poll_us=-1), "dataplane.busy_poll_us", "greater than or equal to 0"),
        (lambda d: d["dataplane"].update(busy_poll_us=5000), "dataplane.busy_poll_us", "less than or equal to 1000"),
        (lambda d: d["dataplane"].update(busy_poll_us="fast"), "dataplane.busy_poll_us", "valid integer"),
        (lambda d: d["bridge"].update(lan_port="a very long interface"), "bridge.lan_port", "interface name"),
        (lambda d: d["dataplane"]["flows"].update(max_flows=10), "dataplane.flows.max_flows", "greater than or equal"),
        (lambda d: d["engines"].update(antigravity={}), "engines.antigravity", "unknown engine"),
        (lambda d: d["engines"]["firewall"]["rules"][1].update(action="maybe"), "engines.firewall.rules[1].action", "allow, deny, reject, log"),
        (lambda d: d["engines"]["firewall"]["rules"][0].update(service="tcp/99999"), "engines.firewall.rules[0].service", "out of"),
        (lambda d: d["engines"]["firewall"]["rules"][0].update(src="not-a-group"), "engines.firewall.rules[0].src", "neither an address group"),
        (lambda d: d["engines"]["firewall"]["services"].update(x=["gre/1"]), "engines.firewall.services.x[0]", "unknown protocol"),
        (lambda d: d["engines"]["firewall"]["default"].update(wan_to_lan="maybe"), "engines.firewall.default.wan_to_lan", "allow, deny or reject"),
    ],
)
def test_bad_config_names_file_key_and_problem(tmp_path, mutate, key, words):
    data = example()
    mutate(data)
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    err = ei.value
    assert err.path == str(path)
    assert err.key == key
    assert words in err.problem
    assert str(path) in str(err) and key in str(err)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")
    p = write(tmp_path, "settings_sheet: [unclosed\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+"):
        load_config(p)


def test_top_level_must_be_mapping(tmp_path):
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_cli_reports_bad_config_and_applies_nothing(tmp_path, capsys):
    from agent.cli import main

    data = example()
    data["dataplane"]["fail_mode"] = "sometimes"
    path = write(tmp_path, data)
    # bridge up with a bad file must stop before touching anything (no root needed to see it).
    assert main(["bridge", "up", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "dataplane.fail_mode" in err and str(path) in err
    assert "nothing was applied" in err
