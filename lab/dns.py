"""The lab's DNS server: fixed A/AAAA records for the simulated internet, NXDOMAIN for the rest."""
import socket
import sys

from filters.app.dns import build_response, nxdomain, parse_dns

RECORDS: dict[str, tuple[str, str]] = {}  # name -> (ipv4, ipv6)


def answer(query: bytes) -> bytes | None:
    msg = parse_dns(query, True)
    if msg is None or not msg.questions:
        return None
    q = msg.questions[0]
    name = q.name.decode("ascii", "replace").lower().rstrip(".")
    if name not in RECORDS:
        return nxdomain(query)
    v4, v6 = RECORDS[name]
    if q.rrtype == 1:
        return build_response(query, answers=[(1, socket.inet_pton(socket.AF_INET, v4))])
    if q.rrtype == 28:
        return build_response(query, answers=[(28, socket.inet_pton(socket.AF_INET6, v6))])
    return build_response(query)


def main() -> None:
    port = int(sys.argv[1])
    for item in sys.argv[2:]:  # name=ipv4,ipv6
        name, _, addrs = item.partition("=")
        v4, _, v6 = addrs.partition(",")
        RECORDS[name.lower()] = (v4, v6)
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", port))
    while True:
        data, peer = sock.recvfrom(4096)
        reply = answer(data)
        if reply:
            sock.sendto(reply, peer)


if __name__ == "__main__":
    main()
