"""TLS flows in the IPS: the JA3/JA3S/JA4 buffers rules match on, and what becomes of the flow once
its handshake is over (``engines.ips.encryption_handling``: bypass or full, as Suricata's)."""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
from scapy.utils import wrpcap

from agent.offline import replay as offline
from tests.filters.app.test_tls import CLIENT_HELLO, certificate, certificate_msg, handshake, record, server_hello_body
from tests.filters.ips.scapyflow import TcpConversation, timed

SECRET = b"SECRET-IN-THE-CIPHERTEXT"


def tls_flow(after: int = 20) -> list:
    """Handshake, a TLS 1.2 ClientHello / ServerHello+Certificate / key exchange and CCS both ways,
    then ``after`` application-data records each way carrying SECRET (as if it were ciphertext)."""
    t = TcpConversation(443)
    t.open()
    t.add(True, "PA", CLIENT_HELLO)
    t.add(False, "PA", record(22, handshake(2, server_hello_body()) + certificate_msg(certificate()) + handshake(14, b""), 0x0303))
    t.add(True, "PA", record(22, handshake(16, b"\x00" * 33)) + record(20, b"\x01") + record(22, b"\x99" * 40))
    t.add(False, "PA", record(20, b"\x01") + record(22, b"\x77" * 40))
    for _ in range(after):
        t.add(True, "PA", record(23, SECRET + b"\x00" * 100, 0x0303))
        t.add(False, "PA", record(23, b"\x00" * 100 + SECRET, 0x0303))
    t.close()
    return timed(t.packets)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def run(tmp_path: Path, rules: str, handling: str | None = None) -> tuple[list[dict], dict]:
    pcap = tmp_path / "tls.pcap"
    wrpcap(str(pcap), tls_flow())
    (tmp_path / "test.rules").write_text(rules)
    sets = [f"app-layer.protocols.tls.encryption-handling={handling}"] if handling else []  # Suricata's --set
    cfg = offline.offline_config(None, sets, rule_files=[str(tmp_path / "test.rules")])
    out = io.StringIO()
    summary = offline.run_pcap(offline.OfflineOptions(pcap=pcap), cfg, out=out)
    alerts = [r for r in map(json.loads, out.getvalue().splitlines()) if r.get("event_type") == "alert"]
    return alerts, summary["stats"]


def test_ja3_ja3s_and_ja4_buffers_match(tmp_path: Path) -> None:
    from filters.app.tls import TlsParser

    p = TlsParser()
    [client] = p.feed(True, CLIENT_HELLO)
    [server] = p.feed(False, record(22, handshake(2, server_hello_body()) + certificate_msg(certificate()) + handshake(14, b""), 0x0303))
    rules = "\n".join([
        f'alert tls any any -> any any (msg:"ja3"; ja3.hash; content:"{_md5(client.ja3)}"; sid:1;)',
        f'alert tls any any -> any any (msg:"ja3 string"; ja3.string; content:"{client.ja3.split(",")[1]}"; sid:2;)',
        f'alert tls any any -> any any (msg:"ja3s"; ja3s.hash; content:"{_md5(server.ja3s)}"; sid:3;)',
        f'alert tls any any -> any any (msg:"ja4"; ja4.hash; content:"{client.ja4}"; sid:4;)',
        'alert tls any any -> any any (msg:"other ja4"; ja4.hash; content:"t12d"; startswith; sid:5;)',
    ])
    alerts, _ = run(tmp_path, rules)
    assert sorted(a["alert"]["signature_id"] for a in alerts) == [1, 2, 3, 4]
    ja4 = next(a for a in alerts if a["alert"]["signature_id"] == 4)
    assert ja4["tls"]["ja4"] == client.ja4 and ja4["tls"]["ja3"]["hash"] == _md5(client.ja3)
    assert client.ja4.startswith("t13d0305h2_")


RAW = 'alert tcp any any -> any 443 (msg:"raw bytes after the handshake"; flow:established,to_server; content:"SECRET-IN-THE-CIPHERTEXT"; sid:10;)\n'


def test_bypass_is_the_default_and_leaves_the_encrypted_rest_to_the_kernel(tmp_path: Path) -> None:
    alerts, stats = run(tmp_path, RAW)
    assert alerts == []  # the application data is never inspected
    assert stats["ips"].get("flows.bypassed_encrypted") == 1
    assert stats["pipeline"].get("flows.offloaded") == 1
    # after the handshake every packet of the flow is decided without inspection
    assert stats["pipeline"].get("packets.decided", 0) >= 40


@pytest.mark.parametrize("handling", ["full"])
def test_full_keeps_reading_the_encrypted_bytes(tmp_path: Path, handling: str) -> None:
    alerts, stats = run(tmp_path, RAW, handling)
    assert [a["alert"]["signature_id"] for a in alerts] == [10]
    assert "flows.bypassed_encrypted" not in stats["ips"]
    assert stats["pipeline"].get("packets.decided", 0) == 0


def test_a_bad_encryption_handling_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "test.rules").write_text(RAW)
    from agent.engines import build_engines

    cfg = offline.offline_config(None, ["app-layer.protocols.tls.encryption-handling=inspect-everything"],
                                 rule_files=[str(tmp_path / "test.rules")])
    with pytest.raises(ValueError) as err:
        build_engines(cfg)
    assert "engines.ips.encryption_handling" in str(err.value) and "bypass" in str(err.value)
