"""Center link pieces that need no center: backoff and jitter math, Retry-After, time parsing, the
credential file, client safety checks and the center config section."""
from __future__ import annotations

import os
import random
import statistics
import time

import pytest

from agent.link import center
from agent.link.center import (
    Backoff, CenterClient, LinkConfigError, Reply, full_jitter, jittered_interval, load_state, parse_http_date,
    parse_time, save_state,
)
from agent.config import parse_config
from filters.engine import ConfigError


def test_full_jitter_bounds_and_growth():
    rng = random.Random(1)
    for attempt in range(12):
        ceiling = min(300.0, 2.0 * 2 ** attempt)
        samples = [full_jitter(attempt, 2.0, 300.0, rng) for _ in range(2000)]
        assert 0 <= min(samples) and max(samples) <= ceiling
        # uniform over [0, ceiling]: mean about half the ceiling, and it really spreads
        assert statistics.mean(samples) == pytest.approx(ceiling / 2, rel=0.08)
        assert min(samples) < ceiling * 0.05 and max(samples) > ceiling * 0.95
    assert full_jitter(10_000, 2.0, 300.0, rng) <= 300.0  # no overflow for long outages


def test_backoff_resets_and_honours_retry_after():
    b = Backoff(1.0, 60.0, random.Random(2))
    ceilings = []
    for _ in range(10):
        d = b.next_delay()
        ceilings.append(d)
    assert b.attempt == 10 and max(ceilings) <= 60.0
    b.reset()
    assert b.attempt == 0 and b.next_delay() <= 1.0
    for _ in range(200):
        d = b.next_delay(retry_after=30.0)
        assert 30.0 <= d <= 30.0 + 60.0  # never earlier than the center asked


def test_checkin_interval_full_jitter_keeps_the_mean():
    rng = random.Random(3)
    samples = [jittered_interval(60.0, 1.0, rng) for _ in range(5000)]
    assert 0 <= min(samples) and max(samples) <= 120.0
    assert statistics.mean(samples) == pytest.approx(60.0, rel=0.03)
    assert {jittered_interval(60.0, 0.0, rng) for _ in range(10)} == {60.0}
    assert all(45.0 <= jittered_interval(60.0, 0.25, rng) <= 75.0 for _ in range(500))


def test_retry_after_forms():
    now = time.time()
    assert center._retry_after("7", now) == 7.0
    assert center._retry_after(None, now) == 1.0 and center._retry_after("soon", now) == 1.0
    http_date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now + 120))
    assert center._retry_after(http_date, now) == pytest.approx(120, abs=1.5)


def test_time_parsing_and_clock_offset():
    assert parse_time("2026-11-25T22:00:00Z") == parse_time("2026-11-26T07:00:00+09:00") == 1795644000.0
    assert parse_time("2026-11-25T22:00:00.500000Z") == 1795644000.5
    assert parse_time("yesterday") is None and parse_time(None) is None
    assert parse_http_date("Wed, 25 Nov 2026 22:00:00 GMT") == 1795644000.0
    # server_time wins over the Date header (sub-second); the Date header is the fallback
    r = Reply(200, {"server_time": "2026-11-25T22:00:00Z"}, {"Date": "Wed, 25 Nov 2026 21:00:00 GMT"}, 1795643399.0, 1795643401.0)
    assert r.clock_offset() == pytest.approx(600.0)
    r = Reply(401, {}, {"Date": "Wed, 25 Nov 2026 22:00:00 GMT"}, 1795644000.0, 1795644000.0)
    assert r.clock_offset() == 0.0
    assert Reply(200, {}, {}, 0, 0).clock_offset() is None


def test_state_file_is_0600_atomic_and_checked(tmp_path):
    path = tmp_path / "lib" / "center.json"
    save_state(path, {"device_id": "d1", "token": "secret", "license": {"term_end": "2028-11-30"}})
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    assert load_state(path)["token"] == "secret"
    assert [p.name for p in path.parent.iterdir()] == ["center.json"]  # no temp file left behind
    assert load_state(tmp_path / "none.json") is None
    path.write_text("{not json")
    with pytest.raises(LinkConfigError, match="damaged"):
        load_state(path)
    path.write_text('{"device_id": "d1"}')
    with pytest.raises(LinkConfigError, match="damaged"):
        load_state(path)


def test_client_refuses_plain_http_and_missing_ca(tmp_path):
    with pytest.raises(LinkConfigError, match="https"):
        CenterClient("http://ops.vcr.example", str(tmp_path / "ca.pem"))
    with pytest.raises(LinkConfigError, match="CA"):
        CenterClient("https://ops.vcr.example", str(tmp_path / "ca.pem"))
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    c = CenterClient("https://ops.vcr.example/", str(ca))
    assert c.session.verify == str(ca) and c.session.trust_env is False and c.url == "https://ops.vcr.example"
    c.close()


def test_unreachable_center_is_reported_not_raised_as_a_crash(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    c = CenterClient("https://127.0.0.1:9", str(ca), timeout=2)  # discard port: nothing listens
    with pytest.raises(center.Unreachable):
        c.server_time()
    c.close()


def test_activate_needs_url_and_serial(tmp_path):
    cfg = parse_config({"center": {"state_file": str(tmp_path / "c.json")}})
    with pytest.raises(center.ActivationError, match="center.url"):
        center.activate(cfg, code="ABCD-1234", serial="S1")
    cfg = parse_config({"center": {"url": "https://ops.vcr.example", "state_file": str(tmp_path / "c.json")}})
    if not center.default_serial(cfg):
        with pytest.raises(center.ActivationError, match="--serial"):
            center.activate(cfg, code="ABCD-1234")
    save_state(tmp_path / "c.json", {"device_id": "d1", "token": "t", "contract_id": "C1"})
    with pytest.raises(center.ActivationError, match="--replace"):
        center.activate(cfg, code="ABCD-1234", serial="S1")  # never silently re-enrolls


@pytest.mark.parametrize("section, key, problem", [
    ({"enabled": True}, "center.url", "required when center.enabled"),
    ({"url": "http://ops.vcr.example"}, "center.url", "https://"),
    ({"url": "https://user@ops.vcr.example"}, "center.url", "without user"),
    ({"jitter": 1.5}, "center.jitter", "less than or equal to 1"),
    ({"heartbeat_interval": 0}, "center.heartbeat_interval", "greater than or equal to 1"),
    ({"spool": {"max_events": 5}}, "center.spool.max_events", "greater than or equal to 100"),
    ({"drain": {"rate": -1}}, "center.drain.rate", "greater than 0"),
    ({"portcheck": {"endpoints": {70000: "ops.vcr.example"}}}, "center.portcheck.endpoints", "1-65535"),
    ({"ntp_servers": ["ntp nict"]}, "center.ntp_servers", "host name"),
    ({"serial": "a b"}, "center.serial", "letters, digits"),
    ({"colour": "red"}, "center.colour", "unknown key"),
])
def test_center_config_errors_name_the_key(section, key, problem):
    with pytest.raises(ConfigError) as err:
        parse_config({"center": section}, path="/etc/vcr-agent/vcr-agent.yaml")
    assert err.value.path == "/etc/vcr-agent/vcr-agent.yaml" and err.value.key == key and problem in err.value.problem


def test_center_config_defaults_and_shipped_example():
    from agent.config import load_config
    from lab.agentrun import EXAMPLE_CONFIG

    c = parse_config({}).center
    assert not c.enabled and c.heartbeat_interval == 60 and c.jitter == 1.0 and c.state_file == "/var/lib/vcr-agent/center.json"
    assert c.clock_tolerance == 300 and c.clock_skew_s == 0
    shipped = load_config(EXAMPLE_CONFIG).center
    assert shipped.enabled is False  # off until the box is given a center and a CA
    assert os.path.isabs(parse_config({"center": {"ca_file": "/x/ca.pem"}}).center.ca_file)
