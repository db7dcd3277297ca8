"""The control panel and console in a real browser (headless Chromium + Selenium) against a real center
(lab.center.start_center, HTTPS): a customer logs in, sees that the box operates normally and an alarm
explained, files a change request and sees its due date; an operator logs in and triages the alarm."""
from __future__ import annotations

import datetime as dt
from typing import Any, Iterator

import pytest

from lab.panel_demo import CUSTOMER_PASSWORD, browser, browser_missing, login, seed

from tests.shared_data import in_ci


@pytest.fixture(scope="module", autouse=True)
def _browser_present() -> None:
    """No browser: a loud skip on a developer's machine, a failure in CI (scripts/setup.sh installs it)."""
    reason = browser_missing()
    if reason is not None:
        (pytest.fail if in_ci() else pytest.skip)(f"BROWSER TEST {'FAILED' if in_ci() else 'SKIPPED'}: {reason}")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, Any]]]:
    from lab.center import start_center

    center = start_center(tmp_path_factory.mktemp("panelcenter"),
                          settings={"checkin_rate": 0, "alarm_rate": 0, "activate_rate": 0,
                                    "operator_login_burst": 1000})
    try:
        yield center, seed(center)
    finally:
        center.close()


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    with browser() as d:
        yield d


def _wait(driver: Any, cond: Any, timeout: float = 20) -> None:
    """Until the browser has navigated (a click returns before the next page is there)."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(cond)


def test_customer_sees_status_and_alarm_and_files_a_change_request(demo, driver):
    from selenium.webdriver.common.by import By

    from opscenter.panel import bizdays

    center, data = demo
    base = center.url + "/panel"
    driver.delete_all_cookies()
    login(driver, base, data["customers"]["C-1001"], CUSTOMER_PASSWORD)
    state = driver.find_element(By.ID, "state")
    assert state.get_attribute("data-state") == "ok"
    assert "UTM は正常に稼働しています" in state.text
    assert "%" in driver.find_element(By.ID, "month-share").text

    driver.get(base + "/alarms")
    driver.find_element(By.CSS_SELECTOR, f"#a{data['atp_alarm']} a.title").click()
    _wait(driver, lambda d: d.current_url.endswith(f"/alarms/{data['atp_alarm']}"))
    assert "ウイルス感染の疑い" in driver.find_element(By.ID, "alarm-title").text
    assert driver.find_element(By.ID, "alarm-pc").text == "192.168.10.23"
    assert "QakBot" in driver.find_element(By.ID, "alarm-what").text
    assert "ネットワークから外し" in driver.find_element(By.ID, "alarm-todo").text

    driver.get(base + "/changes")
    used = int(driver.find_element(By.ID, "quota-used").text)
    driver.find_element(By.ID, "summary").send_keys("www.example.co.jp を許可してほしい")
    driver.find_element(By.ID, "detail").send_keys("取引先のサイトです")
    driver.find_element(By.ID, "change-submit").click()
    _wait(driver, lambda d: "done=filed" in d.current_url)
    due = driver.find_element(By.ID, "change-due")
    expected = bizdays.due_date(dt.datetime.utcnow(), 5)
    assert due.get_attribute("data-date") == expected.isoformat()
    assert f"{expected.year}年{expected.month}月{expected.day}日" in due.text
    assert "受け付けました" in driver.find_element(By.CSS_SELECTOR, ".flash").text
    driver.get(base + "/changes")
    assert int(driver.find_element(By.ID, "quota-used").text) == used + 1


def test_operator_triages_an_alarm(demo, driver):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from opscenter.panel import store

    center, data = demo
    base = center.operator_url + "/console"
    driver.delete_all_cookies()
    login(driver, base, *data["operator"])
    assert "C-1002" in driver.find_element(By.ID, "fleet").text  # the offline box, listed first
    driver.get(f"{base}/alarms")
    driver.find_element(By.CSS_SELECTOR, f"#a{data['atp_alarm']} a").click()
    _wait(driver, lambda d: d.current_url.endswith(f"/alarms/{data['atp_alarm']}"))
    Select(driver.find_element(By.ID, "triage-select")).select_by_value("ack")
    driver.find_element(By.ID, "triage-note").send_keys("お客様に電話で連絡、PC をネットワークから外してもらった")
    driver.find_element(By.ID, "triage-save").click()
    _wait(driver, lambda d: "done=triaged" in d.current_url)
    assert "確認中" in driver.find_element(By.ID, "triage-status").text
    assert "お客様に電話で連絡" in driver.find_element(By.ID, "notes").text
    row = store.alarm(center.db, data["atp_alarm"], None)
    assert row["status"] == "ack" and row["triaged_by"] == data["operator"][0]


def test_admin_sees_the_sandbox_queue_and_overrides_a_verdict(demo, driver):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from opscenter.sandbox import queue

    center, data = demo
    base = center.operator_url + "/console"
    h = data["sandbox_file"]
    driver.delete_all_cookies()
    login(driver, base, *data["admin"])
    driver.get(f"{base}/sandbox")
    row = driver.find_element(By.ID, f"f{h[:12]}")
    assert "請求書_2026年11月.exe" in row.text and "危険" in row.text and "VCR_Sandbox_Test_Marker" in row.text
    table = driver.find_element(By.ID, "sandbox").text
    assert "安全" in table and "疑わしい" in table  # the clean executable and the PDF with JavaScript
    row.find_element(By.TAG_NAME, "a").click()
    _wait(driver, lambda d: d.current_url.endswith(f"/sandbox/{h}"))
    assert "192.168.10.23" in driver.find_element(By.ID, "submissions").text
    Select(driver.find_element(By.ID, "override-verdict")).select_by_value("clean")
    driver.find_element(By.ID, "override-note").send_keys("取引先の社内ツールと確認 (誤検知)")
    driver.find_element(By.ID, "override-save").click()
    _wait(driver, lambda d: "done=saved" in d.current_url)
    assert "安全" in driver.find_element(By.ID, "verdict").text
    assert "取引先の社内ツールと確認" in driver.find_element(By.ID, "overrides").text
    assert queue.verdicts(center.db, [h])[h]["verdict"] == "clean"
    # an operator (not admin) sees the verdict but gets no override form
    driver.delete_all_cookies()
    login(driver, base, "tanaka", __import__("lab.panel_demo", fromlist=["x"]).OPERATOR_PASSWORD)
    driver.get(f"{base}/sandbox/{h}")
    assert driver.find_elements(By.ID, "override-form") == [] and driver.find_element(By.ID, "admin-only")
