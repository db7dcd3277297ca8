"""A simulated month at the center for the monthly report: a contract, its box, a month of check-ins and
alarms, written through the center's own functions (enroll.activate, fleet.checkin, alarms.ingest)
with the center's clock set to the simulated time.

Used by the report tests, ``python -m lab report-bench`` and ``python -m lab screenshots-report``.
"""
from __future__ import annotations

import datetime as dt
import random
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from opscenter import alarms as alarm_store
from opscenter import enroll, fleet
from opscenter.db import Database
from opscenter.report.period import Month

# The modules whose ``utcnow`` the simulation sets (each imported it from opscenter.db).
CLOCKED = (enroll, fleet, alarm_store)

Interval = tuple[dt.datetime, dt.datetime]

SITES = {
    "games": ["play.example-games.jp", "arcade.example.com"],
    "social_networks": ["sns.example.com", "photos.example.net"],
    "gambling": ["casino.example.org"],
    "phishing": ["login-bank.example.xyz", "secure-mail.example.top"],
    "malware": ["dl.example-warez.ru"],
    "adult": ["adult.example.com"],
}
THREATS = ["emotet", "qakbot", "cobaltstrike"]
IPS_SIGS = [("ET SCAN Suspicious inbound to mySQL port 3306", 2), ("ET EXPLOIT Apache log4j RCE Attempt", 1),
            ("ET SCAN Potential SSH Scan", 3), ("ET POLICY RDP connection request", 2)]


@contextmanager
def center_clock(now: dt.datetime) -> Iterator[None]:
    """The center's functions see ``now`` (naive UTC) as the current time."""
    saved = [m.utcnow for m in CLOCKED]  # type: ignore[attr-defined]
    for m in CLOCKED:
        m.utcnow = lambda: now  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for m, f in zip(CLOCKED, saved):
            m.utcnow = f  # type: ignore[attr-defined]


@dataclass
class Plan:
    """What to simulate for one contract and month."""

    contract_id: str
    serial: str
    month: Month
    interval: float = 600.0  # heartbeat interval (seconds) the center tells the box
    activated: dt.datetime | None = None  # default: 20 days before the month
    outages: list[Interval] = field(default_factory=list)  # no check-ins
    unprotected: list[Interval] = field(default_factory=list)  # check-ins saying no worker is ready
    portcheck_failed: list[Interval] = field(default_factory=list)
    alarms_per_day: int = 40
    lan_hosts: int = 12
    mail_uninspected: bool = True  # the box reports the mail.uninspected counter
    restart_at: dt.datetime | None = None  # the agent restarts (its counters start from 0 again)
    seed: int = 1


@dataclass
class Result:
    device_id: str
    token: str
    checkins: int
    alarms: int
    mail_uninspected: int  # the increase of the counter over the month (what the report should show)


def _in(t: dt.datetime, spans: list[Interval]) -> bool:
    return any(a <= t < b for a, b in spans)


def _eve_ts(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f+0000")


def make_alarm(rng: random.Random, t: dt.datetime, hosts: list[str]) -> dict[str, Any]:
    """One EVE record of the mix a small office sees (threats, policy blocks, the box's own records)."""
    host = rng.choice(hosts)
    base: dict[str, Any] = {"timestamp": _eve_ts(t), "flow_id": rng.randrange(1, 2**40)}
    r = rng.random()
    if r < 0.35:  # IPS: attacks from outside on the office
        sig, sev = rng.choice(IPS_SIGS)
        return {**base, "event_type": "alert", "src_ip": f"203.0.113.{rng.randrange(1, 255)}", "src_port": rng.randrange(1024, 65535),
                "dest_ip": host, "dest_port": rng.choice([22, 3306, 3389, 80]), "proto": "TCP", "in_iface": "wan",
                "alert": {"action": rng.choice(["blocked", "blocked", "allowed"]), "gid": 1,
                          "signature_id": 2000000 + rng.randrange(1000), "rev": 1, "signature": sig,
                          "category": "Attempted Information Leak", "severity": sev, "engine": "ips"}}
    if r < 0.62:  # web filter: blocked sites
        cat = rng.choice(list(SITES))
        site = rng.choice(SITES[cat])
        return {**base, "event_type": "alert", "src_ip": host, "src_port": rng.randrange(1024, 65535),
                "dest_ip": "192.168.1.1", "dest_port": 53, "proto": "UDP", "in_iface": "lan",
                "alert": {"action": "blocked", "gid": 1, "signature_id": 9300001, "rev": 1,
                          "signature": "VCR webfilter: blocked category", "category": "Web filter", "severity": 2,
                          "engine": "webfilter"},
                "webfilter": {"host": site, "categories": [cat], "reason": "category", "matched": site, "where": "dns"}}
    if r < 0.68:  # ATP: a PC calls a C&C server
        threat = rng.choice(THREATS)
        name = f"c2-{threat}.example.net"
        return {**base, "event_type": "alert", "src_ip": host, "src_port": rng.randrange(1024, 65535),
                "dest_ip": "198.51.100.66", "dest_port": 443, "proto": "TCP", "in_iface": "lan",
                "alert": {"action": "blocked", "gid": 1, "signature_id": 9400004, "rev": 1,
                          "signature": f"VCR ATP: TLS connection to a listed C&C domain ({threat})",
                          "category": "A Network Trojan was detected", "severity": 1, "engine": "atp"},
                "atp": {"lan_host": host, "indicator": name, "indicator_type": "domain", "threat": threat,
                        "source": "lab", "where": "tls_sni", "seen": name}}
    if r < 0.71:  # antivirus: a download carrying a virus
        return {**base, "event_type": "alert", "src_ip": "198.51.100.80", "src_port": 80, "dest_ip": host,
                "dest_port": rng.randrange(1024, 65535), "proto": "TCP", "in_iface": "wan",
                "alert": {"action": "blocked", "gid": 1, "signature_id": 9500001, "rev": 1,
                          "signature": "VCR antivirus: Win.Test.EICAR_HDB-1", "category": "Antivirus", "severity": 1,
                          "engine": "av"},
                "av": {"lan_host": host, "virus": "Win.Test.EICAR_HDB-1", "url": "http://files.example.com/setup.exe",
                       "action": "blocked", "reason": "infected", "direction": "download"},
                "http": {"hostname": "files.example.com", "url": "/setup.exe"}}
    if r < 0.72:  # antivirus: a file it could not judge (passed, not a threat)
        return {**base, "event_type": "alert", "src_ip": "198.51.100.81", "src_port": 80, "dest_ip": host,
                "dest_port": rng.randrange(1024, 65535), "proto": "TCP", "in_iface": "wan",
                "alert": {"action": "allowed", "gid": 1, "signature_id": 9500004, "rev": 1,
                          "signature": "VCR AV: file not scanned (too large)", "category": "Potentially Bad Traffic",
                          "severity": 3, "engine": "av"},
                "av": {"action": "passed", "reason": "too_large"}}
    if r < 0.86:  # firewall: inbound connection attempts refused
        return {**base, "event_type": "alert", "src_ip": f"198.51.100.{rng.randrange(1, 255)}", "src_port": rng.randrange(1024, 65535),
                "dest_ip": host, "dest_port": rng.choice([23, 445, 8080]), "proto": "TCP", "in_iface": "wan",
                "alert": {"action": "blocked", "gid": 1, "signature_id": 9200000, "rev": 1,
                          "signature": "VCR firewall: default deny wan_to_lan", "category": "Firewall policy",
                          "severity": 3, "engine": "firewall"}}
    if r < 0.93:  # web filter protocol policy (not a threat)
        return {**base, "event_type": "alert", "src_ip": host, "dest_ip": "142.250.0.1", "proto": "UDP", "in_iface": "lan",
                "alert": {"action": "blocked", "gid": 1, "signature_id": 9300011, "rev": 1,
                          "signature": "VCR webfilter: QUIC blocked (browsers fall back to TLS over TCP)",
                          "category": "Web filter", "severity": 3, "engine": "webfilter"},
                "webfilter": {"where": "quic"}}
    if r < 0.97:  # decoder anomaly (not a threat)
        return {**base, "event_type": "anomaly", "src_ip": host, "dest_ip": "203.0.113.9", "proto": "TCP",
                "anomaly": {"type": "decode", "event": "ipv4.opt_pad_required"}}
    if r < 0.985:  # the box's own alarm (not a threat)
        return {**base, "event_type": "alert", "alert": {"action": "allowed", "gid": 1, "signature_id": 9900001, "rev": 1,
                                                          "signature": "VCR agent: clock offset", "category": "Agent health",
                                                          "severity": 2, "engine": "agent"}, "agent": {}}
    return {**base, "event_type": "update", "update": {"kind": rng.choice(["ips", "webcat", "threatintel"]),
                                                       "action": "activated", "reason": "ok", "severity": 4,
                                                       "version": t.strftime("%Y.%m.%d"), "message": "ok"}}


def _body(plan: Plan, t: dt.datetime, mail: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "sent_at": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "agent_version": "0.1.0",
        "config_revision": 1,
        "signatures": {"ips": "2026.05.01", "webcat": "2026.04.28"},
        "health": {"cpu_percent": 5.0, "memory_percent": 40.0, "disk_percent": 10.0, "uptime_s": 1000,
                   "agent": {"ready": 0 if _in(t, plan.unprotected) else 2}},
        "engines": {"ips": {}, "atp": {}, "webfilter": {}, "firewall": {}},
        "spool": {"pending": 0, "dropped": 0},
        "portcheck": {"checked_at": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "ok": not _in(t, plan.portcheck_failed),
                      "results": [{"feature": "ips", "proto": "tcp", "port": 443, "ok": not _in(t, plan.portcheck_failed)}]},
    }
    if mail is not None:
        body["engines"]["av"] = {"counters": {"mail.uninspected": mail, "mail.scanned": mail * 10}}
    return body


def simulate(db: Database, plan: Plan, *, history: int = 50, misses: int = 3) -> Result:
    """Activate the contract's box and play the month (plus a day before it) through the center."""
    rng = random.Random(plan.seed)
    m = plan.month
    activated = plan.activated or m.start - dt.timedelta(days=20)
    with center_clock(activated):
        code = enroll.issue_code(db, plan.contract_id, serial=plan.serial).code
        reply = enroll.activate(db, code=code, serial=plan.serial, hostname=plan.serial, agent_version="0.1.0",
                                client_ip="192.0.2.10", heartbeat_interval=plan.interval)
        auth = enroll.authenticate(db, reply["token"])
    assert auth is not None
    device_id = reply["device_id"]
    t = max(activated, m.start - dt.timedelta(days=1))
    mail_counter, mail_in_month, n = 0, 0, 0
    restarted = False
    while t < m.end + dt.timedelta(minutes=30):
        if not _in(t, plan.outages):
            if plan.restart_at and not restarted and t >= plan.restart_at:
                mail_counter, restarted = 0, True  # the agent restarted: counters begin again
            step = rng.choice([0, 0, 0, 1, 2]) if plan.mail_uninspected else 0
            mail_counter += step
            # the check-in whose increase lands in the month: the month of the center's clock (JST)
            if m.start <= t < m.end and n:
                mail_in_month += step
            with center_clock(t):
                a = enroll.authenticate(db, reply["token"])
                fleet.checkin(db, a, _body(plan, t, mail_counter if plan.mail_uninspected else None),
                              client_ip="192.0.2.10", interval=plan.interval, history=history, misses=misses)
            n += 1
        t += dt.timedelta(seconds=plan.interval * rng.uniform(0.8, 1.2))
    hosts = [f"192.168.1.{10 + i}" for i in range(plan.lan_hosts)]
    count = 0
    for day in range(m.days):
        start = m.day_start(day)
        batch = []
        for _ in range(plan.alarms_per_day):
            at = start + dt.timedelta(seconds=rng.randrange(86400))
            batch.append((at, make_alarm(rng, at, hosts)))
        batch.sort(key=lambda x: x[0])
        # delivered in the hour after the day (the box batches; some a day late, as after an outage)
        with center_clock(start + dt.timedelta(days=1, minutes=rng.randrange(60))):
            alarm_store.ingest(db, device_id, [{"event_id": str(uuid.UUID(int=rng.getrandbits(128))),
                                                "severity": ev.get("alert", {}).get("severity"), "event": ev}
                                               for _, ev in batch])
        count += len(batch)
    return Result(device_id=device_id, token=reply["token"], checkins=n, alarms=count,
                  mail_uninspected=mail_in_month)
