"""NFLOG reader: parser on synthetic netlink bytes, and real iptables NFLOG rules in a fresh netns."""

from __future__ import annotations

import ctypes
import os
import select
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.dataplane import nflog
from agent.dataplane.nflog import NflogError, NflogReader, NflogRecord, parse_datagram

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
NF_INET_LOCAL_OUT = 3
DST4 = "198.51.100.7"
DST6 = "2001:db8::7"


# ---------------------------------------------------------------- synthetic messages (no root needed)
def nla(atype: int, data: bytes) -> bytes:
    length = 4 + len(data)
    return struct.pack("=HH", length, atype) + data + b"\0" * ((-length) % 4)


def packet_msg(attrs: bytes, *, group: int = 5, seq: int = 0) -> bytes:
    body = struct.pack("!BBH", socket.AF_INET, 0, group) + attrs
    return struct.pack("=IHHII", 16 + len(body), nflog.MSG_PACKET_TYPE, 0, seq, 0) + body


def sample_attrs(prefix: bytes = b"vcr:fw:r1:drop\0", payload: bytes = b"E\0\0\x14") -> bytes:
    return b"".join([
        nla(nflog.NFULA_PACKET_HDR, struct.pack("!HBx", 0x0800, 1)),
        nla(nflog.NFULA_MARK, struct.pack("!I", 0x42)),
        nla(nflog.NFULA_TIMESTAMP, struct.pack("!QQ", 1700000000, 250000)),
        nla(nflog.NFULA_IFINDEX_INDEV, struct.pack("!I", 4)),
        nla(nflog.NFULA_IFINDEX_PHYSINDEV, struct.pack("!I", 2)),
        nla(nflog.NFULA_IFINDEX_PHYSOUTDEV, struct.pack("!I", 3)),
        nla(nflog.NFULA_PAYLOAD, payload),
        nla(nflog.NFULA_PREFIX, prefix),
    ])


def test_parse_packet_message() -> None:
    data = packet_msg(sample_attrs()) + packet_msg(sample_attrs(payload=b"`" + b"\0" * 39), group=6)
    result = parse_datagram(data)
    assert result.malformed == 0
    first, second = result.records
    assert first == NflogRecord(
        prefix="vcr:fw:r1:drop", payload=b"E\0\0\x14", hw_protocol=0x0800, indev=4, outdev=0,
        physindev=2, physoutdev=3, mark=0x42, ts=1700000000.25, hook=1, group=5,
    )
    assert second.group == 6 and second.payload[0] >> 4 == 6


def test_parse_ack_and_error() -> None:
    ack = struct.pack("=IHHII", 36, nflog.NLMSG_ERROR, 0, 9, 0) + struct.pack("=i", 0) + b"\0" * 16
    err = struct.pack("=IHHII", 36, nflog.NLMSG_ERROR, 0, 10, 0) + struct.pack("=i", -1) + b"\0" * 16
    result = parse_datagram(ack + err)
    assert result.acks == {9: 0, 10: 1}
    assert result.records == [] and result.malformed == 0


@pytest.mark.parametrize("mangle", [
    lambda m: m[:-3],                                              # datagram cut inside the message
    lambda m: struct.pack("=I", 8) + m[4:],                        # nlmsg_len below header size
    lambda m: m[:20] + struct.pack("=HH", 2, 1) + m[24:],          # attribute length below 4
    lambda m: m[:20] + struct.pack("=HH", 4000, 1) + m[24:],       # attribute runs past the message
])
def test_malformed_is_counted_not_raised(mangle: Callable[[bytes], bytes]) -> None:
    result = parse_datagram(mangle(packet_msg(sample_attrs())))
    assert result.malformed >= 1
    assert result.records == []


def test_missing_packet_header_is_malformed() -> None:
    result = parse_datagram(packet_msg(nla(nflog.NFULA_PREFIX, b"x\0")))
    assert result.malformed == 1 and result.records == []


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_parser_never_raises_on_garbage(data: bytes) -> None:
    parse_datagram(data)
    parse_datagram(packet_msg(data))


# ---------------------------------------------------------------- real kernel, fresh namespace
def in_netns(netns: str, factory: Callable[[], T]) -> T:
    """Call factory on a helper thread switched into netns, so sockets it opens live there."""
    libc = ctypes.CDLL(None, use_errno=True)
    box: dict[str, object] = {}

    def run() -> None:
        target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        try:
            if libc.setns(target, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns({netns})")
            box["value"] = factory()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc
        finally:
            os.close(target)

    worker = threading.Thread(target=run, name=f"setns-{netns}")
    worker.start()
    worker.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def nsrun(netns: str, *argv: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, input=stdin,
                          check=check, timeout=60)


@pytest.fixture
def fw_netns(lab_prefix: str) -> Iterator[str]:
    name = f"{lab_prefix}nf-fw"
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        nsrun(name, "ip", "link", "set", "lo", "up")
        # This kernel has no dummy driver (CONFIG_DUMMY unset): the test addresses live on lo.
        nsrun(name, "ip", "addr", "add", f"{DST4}/32", "dev", "lo")
        nsrun(name, "ip", "-6", "addr", "add", f"{DST6}/128", "dev", "lo", "nodad")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def read_until(reader: NflogReader, count: int, timeout: float = 5.0) -> list[NflogRecord]:
    records: list[NflogRecord] = []
    deadline = time.monotonic() + timeout
    while len(records) < count and time.monotonic() < deadline:
        select.select([reader], [], [], max(0.0, deadline - time.monotonic()))
        records += reader.read()
    return records


@pytest.mark.lab
def test_iptables_nflog_ipv4(fw_netns: str) -> None:
    reader = in_netns(fw_netns, lambda: NflogReader(7))
    try:
        assert reader.read() == []
        for target in (["NFLOG", "--nflog-group", "7", "--nflog-prefix", "vcr:fw:icmp-test:drop"], ["DROP"]):
            nsrun(fw_netns, "iptables", "-A", "OUTPUT", "-p", "icmp", "--icmp-type", "echo-request",
                  "-d", DST4, "-j", *target)
        before = time.time()
        ping = nsrun(fw_netns, "ping", "-c", "3", "-i", "0.2", "-W", "1", DST4, check=False)
        assert ping.returncode != 0, "the DROP rule should have eaten the pings"
        records = read_until(reader, 3)
    finally:
        reader.close()
    assert len(records) == 3
    for rec in records:
        assert rec.prefix == "vcr:fw:icmp-test:drop"
        assert rec.hw_protocol == 0x0800 and rec.hook == NF_INET_LOCAL_OUT and rec.group == 7
        assert rec.payload[0] >> 4 == 4 and rec.payload[9] == socket.IPPROTO_ICMP
        assert socket.inet_ntoa(rec.payload[16:20]) == DST4
        assert rec.payload[20] == 8, "ICMP echo request"
        assert rec.outdev == 1 and rec.indev == 0, "a local destination leaves through lo"
        assert before - 5 <= rec.ts <= time.time() + 5
    assert reader.stats.malformed == 0 and reader.stats.overruns == 0


@pytest.mark.lab
def test_ip6tables_nflog_and_copy_range(fw_netns: str) -> None:
    reader = in_netns(fw_netns, lambda: NflogReader(9, copy_range=48))
    try:
        nsrun(fw_netns, "ip6tables", "-A", "OUTPUT", "-p", "ipv6-icmp", "--icmpv6-type", "echo-request",
              "-d", DST6, "-j", "NFLOG", "--nflog-group", "9", "--nflog-prefix", "vcr:fw:v6:reject")
        nsrun(fw_netns, "ping", "-6", "-c", "2", "-i", "0.2", "-s", "500", DST6)
        records = read_until(reader, 2)
    finally:
        reader.close()
    assert len(records) == 2
    rec = records[0]
    assert rec.prefix == "vcr:fw:v6:reject" and rec.hw_protocol == 0x86DD
    assert len(rec.payload) == 48, "copy_range caps the copied payload"
    assert rec.payload[0] >> 4 == 6 and rec.payload[6] == socket.IPPROTO_ICMPV6
    assert socket.inet_ntop(socket.AF_INET6, rec.payload[24:40]) == DST6


@pytest.mark.lab
def test_overrun_is_counted(fw_netns: str) -> None:
    reader = in_netns(fw_netns, lambda: NflogReader(11, rcvbuf=1))
    try:
        nsrun(fw_netns, "iptables", "-A", "OUTPUT", "-p", "icmp", "-d", DST4,
              "-j", "NFLOG", "--nflog-group", "11", "--nflog-prefix", "vcr:fw:flood:drop")
        nsrun(fw_netns, "ping", "-q", "-c", "200", "-i", "0.002", DST4)
        records = reader.read(max_msgs=10_000)
        records += reader.read(max_msgs=10_000)
    finally:
        reader.close()
    assert reader.stats.overruns >= 1
    assert 0 < len(records) < 400


@pytest.mark.lab
def test_group_already_bound(fw_netns: str) -> None:
    first = in_netns(fw_netns, lambda: NflogReader(13))
    try:
        with pytest.raises(NflogError, match="group 13"):
            in_netns(fw_netns, lambda: NflogReader(13))
    finally:
        first.close()
    in_netns(fw_netns, lambda: NflogReader(13)).close()
