"""The settings sheet's checks (shared by the box and the center): the box's section round trip."""
from __future__ import annotations

import pytest

from filters.settingsheet import SheetError, agent_section, check_sheet, from_agent_section

CENTER_SHEET = {
    "install_address": "東京都港区1-2-3", "install_date": "2026-12-01", "management_ip": "192.0.2.2/24",
    "gateway": "192.0.2.1", "dns": "198.51.100.53, 198.51.100.54",
    "contact": {"name": "山田", "mail": "y@example.co.jp", "phone": "+81 3-1234-5678"},
}


def test_the_box_section_round_trips_and_validates_on_the_box():
    sheet = check_sheet(CENTER_SHEET)
    assert sheet["dns"] == ["198.51.100.53", "198.51.100.54"]  # a comma-separated text is accepted
    section = agent_section(sheet)
    assert section["contact"] == "山田 <y@example.co.jp> tel +81 3-1234-5678" and "install_date" not in section
    back = check_sheet(from_agent_section(section), require_center_fields=False)
    assert {k: back[k] for k in ("management_ip", "gateway", "dns")} == \
        {k: sheet[k] for k in ("management_ip", "gateway", "dns")}
    with pytest.raises(SheetError):
        check_sheet(from_agent_section(section))  # the center wants the date and a contact with mail and phone


@pytest.mark.parametrize("value", ["192.0.2.2/31", "192.0.2.2/7", "127.0.0.2/8", "224.0.0.5/24", "169.254.1.1/16",
                                   "2001:db8::2/64", "300.1.1.1/24"])
def test_addresses_a_box_cannot_have(value):
    with pytest.raises(SheetError) as info:
        check_sheet({**CENTER_SHEET, "management_ip": value})
    assert "management_ip" in {p.field for p in info.value.problems}


def test_control_characters_are_refused():
    with pytest.raises(SheetError) as info:
        check_sheet({**CENTER_SHEET, "install_address": "ok\x1b[31m", "contact": {**CENTER_SHEET["contact"],
                                                                                 "name": "a\u202eb"}})
    assert {p.field for p in info.value.problems} == {"install_address", "contact.name"}
