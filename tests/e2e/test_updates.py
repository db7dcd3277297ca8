"""End to end: a signed IPS bundle published at the center's TUF repository changes the rules the
box enforces on the lab bridge, with no restart and no lost connection; a tampered bundle is
rejected with an alarm and the live rules stay.

The repository (opscenter/tufrepo.py) is served from the lab's internet host ``ops`` by a plain
HTTP static server (the reference center mounts the same folder at /tuf/); the box runs
``vcr-agent bundles check``, which verifies, stages, loads, switches and signals the running agent.
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from lab.netns import Lab
from lab.agentrun import LabAgent, serve_tuf_repo, updates_overrides
from tests import shared_data as shared

pytestmark = pytest.mark.lab

OPS = "198.51.100.80"
PORT = 8090


def canary(sid: int, path: str) -> str:
    return (f'drop http $HOME_NET any -> any any (msg:"VCR BUNDLE canary {sid}"; flow:established,to_server; '
            f'http.uri; content:"{path}"; classtype:policy-violation; sid:{sid}; rev:1;)\n')


def bundle(tmp: Path, name: str, rules: str) -> Path:
    d = tmp / "src" / name
    d.mkdir(parents=True)
    et_scan = shared.require("peer", "et-open", "rules", "emerging-scan.rules")  # real ET Open rules beside the canary
    et = "\n".join([ln for ln in et_scan.read_text().splitlines() if ln.startswith(("alert ", "drop "))][:60]) + "\n"
    (d / "bundle.rules").write_text(et + rules)
    return d


def http_code(lab: Lab, path: str) -> tuple[int, str]:
    res = lab.exec("pc1", ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3",
                           f"http://{lab.hosts['web'].ipv4}{path}"])
    return res.returncode, res.stdout.strip()


def check(agent: LabAgent) -> dict:
    res = agent.cli("bundles", "check", "ips", timeout=240)
    assert res.stdout, res.stderr
    return json.loads(res.stdout)[0] | {"rc": res.returncode}


def test_published_bundle_changes_live_rules_without_restart(office: Lab, tmp_path: Path) -> None:
    repo, server = serve_tuf_repo(office, tmp_path / "center" / "repo", PORT)
    box = tmp_path / "box"
    a = LabAgent(office, tmp_path / "agent", overrides={
        "updates": {"enabled": True, **updates_overrides(repo, f"http://{OPS}:{PORT}/", box)}})
    a.bridge_up()
    iperf = office.popen("web", ["iperf3", "-s"], name="iperf3-s")
    try:
        assert office.wait_tcp("utm", OPS, PORT, 10), "the box cannot reach the repository"
        a.start()
        pid = a.status()["pid"]
        workers = len(a.status()["workers"])
        assert http_code(office, "/bundle-canary-v1") == (0, "404")  # no such rule yet

        repo.publish("ips", "2026.11.25.1", bundle(tmp_path, "v1", canary(9300001, "/bundle-canary-v1")))
        res = check(a)
        assert res["status"] == "activated" and res["rc"] == 0, res
        assert a.status()["reloads"]["workers_reloaded"] >= workers
        assert http_code(office, "/bundle-canary-v1")[0] != 0  # dropped by the bundle's rule
        assert a.wait_alarm(lambda r: r.get("alert", {}).get("signature_id") == 9300001) is not None

        # v2 arrives while a bulk transfer runs: the transfer survives the swap
        assert office.wait_tcp("pc1", office.hosts["web"].ipv4, 5201, 5)
        client = subprocess.Popen(
            ["ip", "netns", "exec", office.netns("pc1"), "iperf3", "-c", office.hosts["web"].ipv4, "-t", "10", "-P", "2"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1.5)
        repo.publish("ips", "2026.11.26.1", bundle(tmp_path, "v2", canary(9300002, "/bundle-canary-v2")))
        res = check(a)
        assert res["status"] == "activated" and res["version"] == "2026.11.26.1", res
        out, _ = client.communicate(timeout=60)
        assert client.returncode == 0 and "receiver" in out, out  # no connection lost
        assert http_code(office, "/bundle-canary-v2")[0] != 0
        assert a.wait_alarm(lambda r: r.get("alert", {}).get("signature_id") == 9300002) is not None
        assert http_code(office, "/bundle-canary-v1") == (0, "404"), "v1's rule is gone with v1"

        # a tampered v3 is rejected; v2's rules stay live
        repo.publish("ips", "2026.11.27.1", bundle(tmp_path, "v3", canary(9300003, "/bundle-canary-v3")))
        target = next((repo.targets_dir / "ips").glob("*.ips-2026.11.27.1.tar.gz"))
        target.write_bytes(target.read_bytes()[:-10] + b"0123456789")
        res = check(a)
        assert res["status"] == "rejected" and res["reason"] == "tampered" and res["rc"] == 1, res
        assert a.wait_alarm(lambda r: r.get("event_type") == "update"
                            and r["update"]["reason"] == "tampered") is not None
        assert http_code(office, "/bundle-canary-v3") == (0, "404")
        assert http_code(office, "/bundle-canary-v2")[0] != 0
        assert a.status()["pid"] == pid, "no restart"
        status = json.loads(a.cli("bundles", "status").stdout)
        assert status["live"] == {"ips": "2026.11.26.1"} and status["kinds"]["ips"]["previous"] == "2026.11.25.1"
    finally:
        iperf.kill()
        server.kill()
        a.kill()
        a.bridge_down()
