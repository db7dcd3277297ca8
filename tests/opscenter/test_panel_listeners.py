"""Where the panel and the console are served by a real center: /panel/ on the device listener (the
customers' side, on the internet), /console/ on the operator listener only."""
from __future__ import annotations

from lab.center import start_center


def test_panel_on_the_device_listener_console_on_the_operator_listener(tmp_path):
    center = start_center(tmp_path / "c", settings={"operator_login_burst": 1000})
    try:
        s = center.session()
        r = s.get(f"{center.url}/panel/login", timeout=10)
        assert r.status_code == 200 and "ログイン" in r.text
        assert r.headers["content-security-policy"].startswith("default-src 'none'")
        assert s.get(f"{center.url}/panel", timeout=10, allow_redirects=False).status_code == 303
        assert s.get(f"{center.url}/panel/static/panel.css", timeout=10).status_code == 200
        # the console is not on the device listener, the panel not on the operator listener
        assert s.get(f"{center.url}/console/login", timeout=10).status_code == 404
        assert s.get(f"{center.operator_url}/panel/login", timeout=10).status_code == 401
        r = s.get(f"{center.operator_url}/console/login", timeout=10)
        assert r.status_code == 200 and "運用センター" in r.text
        # the device API and the operator's Basic views are unchanged
        assert s.get(f"{center.url}/api/v1/time", timeout=10).status_code == 200
        assert s.get(f"{center.url}/", timeout=10).status_code == 404
        assert s.get(f"{center.operator_url}/", auth=center.operator_auth, timeout=10).status_code == 200
    finally:
        center.close()
