"""``vcr-agent setup`` without a network: a bad sheet changes nothing; prompts; what the health report adds.
(The whole flow, with DHCP, port detection, bridge, port check and activation, is tests/e2e/test_setup.py.)"""
from __future__ import annotations

from pathlib import Path

import yaml

from agent.cli import main
from agent.config import load_config
from agent.setup import Setup, SetupOptions
from filters.settingsheet import check_sheet

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "vcr-agent.yaml"


def shipped(tmp_path: Path) -> Path:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    data.pop("settings_sheet")
    for key in ("rule_files", "classification"):
        data["engines"].get("ips", {}).pop(key, None)
    data["engines"]["ips"] = {"enabled": False}
    data["engines"].pop("webfilter", None)
    data["engines"].pop("atp", None)
    p = tmp_path / "vcr-agent.yaml"
    p.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return p


def test_a_bad_sheet_is_reported_by_field_and_nothing_changes(tmp_path: Path, capsys):
    cfg = shipped(tmp_path)
    before = cfg.read_bytes()
    sheet = tmp_path / "sheet.yaml"
    sheet.write_text(yaml.safe_dump({"management_ip": "192.0.2.2/24", "gateway": "192.0.2.2", "dns": ["x"]}))
    rc = main(["setup", "-c", str(cfg), "--sheet", str(sheet), "--serial", "VCR-1"])
    out, err = capsys.readouterr()
    assert rc == 2
    assert "gateway: デフォルトゲートウェイ: UTM 自身のアドレス (192.0.2.2) と同じです" in out
    assert "default gateway: is the box's own address (192.0.2.2)" in out and "dns.0" in out
    assert "nothing was changed" in err
    assert cfg.read_bytes() == before and not (tmp_path / "vcr-agent.yaml.before-setup").exists()


def test_no_sheet_and_no_center_says_how_to_give_one(tmp_path: Path, capsys):
    rc = main(["setup", "-c", str(shipped(tmp_path)), "--serial", "VCR-1"])
    assert rc == 2 and "--sheet FILE or --interactive" in capsys.readouterr().err


def test_interactive_prompts_keep_what_is_there(tmp_path: Path):
    answers = iter(["大阪府大阪市北区1-1", "192.0.2.9/24", "", "198.51.100.53, 198.51.100.54", "", "", "総務 山田"])
    s = Setup(SetupOptions(config=str(shipped(tmp_path)), interactive=True), out=lambda _t: None,
              ask=lambda _prompt: next(answers))
    typed = s.prompt({"gateway": "192.0.2.1", "management_ip": "192.0.2.2/24"})
    sheet = check_sheet(typed, require_center_fields=False)
    assert sheet["management_ip"] == "192.0.2.9/24" and sheet["gateway"] == "192.0.2.1"
    assert sheet["dns"] == ["198.51.100.53", "198.51.100.54"] and sheet["contact"] == "総務 山田"


def test_the_health_report_names_the_bridge_ports(tmp_path: Path):
    from agent.link.health import host_metrics

    cfg = load_config(shipped(tmp_path))
    assert host_metrics(cfg)["bridge"] == {"name": "br0", "lan_port": "lan0", "wan_port": "wan0"}
