"""One TCP conversation built as scapy packets, for the IPS's tests that replay a pcap
(``vcr-agent pcap``): the client 192.168.10.5 talks to the server 198.51.100.7."""
from __future__ import annotations

from typing import Any

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

CLIENT, SERVER = "192.168.10.5", "198.51.100.7"


class TcpConversation:
    """``add`` appends a segment and keeps both sequence numbers; ``open`` and ``close`` add the
    handshake and the FINs; ``packets`` holds them in order."""

    def __init__(self, dport: int, sport: int = 40000) -> None:
        self.dport, self.sport = dport, sport
        self.c, self.s = 1000, 5000
        self.packets: list[Any] = []

    def add(self, from_client: bool, flags: str, data: bytes = b"") -> None:
        step = len(data) + (1 if "S" in flags or "F" in flags else 0)
        if from_client:
            pkt = Ether() / IP(src=CLIENT, dst=SERVER) / TCP(sport=self.sport, dport=self.dport, flags=flags,
                                                             seq=self.c, ack=self.s)
            self.c += step
        else:
            pkt = Ether() / IP(src=SERVER, dst=CLIENT) / TCP(sport=self.dport, dport=self.sport, flags=flags,
                                                             seq=self.s, ack=self.c)
            self.s += step
        self.packets.append(pkt / data if data else pkt)

    def open(self) -> None:
        self.add(True, "S")
        self.packets[-1][TCP].ack = 0
        self.add(False, "SA")
        self.add(True, "A")

    def close(self) -> None:
        self.add(True, "FA")
        self.add(False, "FA")
        self.add(True, "A")


def timed(pkts: list[Any]) -> list[Any]:
    """``pkts`` with capture times a millisecond apart."""
    for i, p in enumerate(pkts):
        p.time = 1_700_000_000 + i * 0.001
    return pkts
