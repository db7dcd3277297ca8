"""First-packet cost with ET Open: the pipeline over short flows, profiled (issue 15, item 3).

``python -m lab.bench.firstpacket [--profile N] [--flows N] [--udp N] [--ping N]`` builds a capture
of what makes an office's first packets: HTTP/1.1 ``Connection: close`` connections (handshake, a
small request and answer, close; like the bench's new-connection scenario), one UDP flow of 64-byte
datagrams (the small-packet scenario) and ping (echo request and reply), their data zeros or, with
``--payload real``, as iperf3 and Linux ping send it. Each kind goes through
the offline pipeline with ET Open loaded (the worker's pipeline, kernel offload on as inline) and
its CPU time per packet is printed; ``--profile N`` adds cProfile's top N entries (by own time)
of the whole run; ``--kernel`` runs the connections twice, every packet (before issue 15's kernel
rules) and only what the kernel queues for the loaded engines (after: the empty ACKs and the
handshake skip's SYN+ACKs kept), with the packets per
connection that reach Python. ``--tls N`` instead measures ``engines.ips.encryption_handling``: N HTTPS-like
flows (a TLS 1.2 handshake, then a request and a 20 KB to 500 KB answer of ciphertext) through
the pipeline once with ``bypass`` and once with ``full``: the packets that still reach Python
(inline, the rest of a bypassed flow stays in the kernel) and the CPU time. ``--groups app`` loads
only ET Open's app-layer rules (none of the packet rules that fit every flow): what a flow no rule
can match costs once the IPS lets go of it (``engines.ips.unmatchable_flows``).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import random
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from lab.bench.capture import TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN, Capture, TcpConversation
from lab.bench.offline import ET_OPEN, et_open_files

CLIENT = socket.inet_aton("192.168.10.20")
SERVER = socket.inet_aton("198.51.100.10")
REQUEST = b"GET /index.html HTTP/1.1\r\nHost: web\r\nUser-Agent: wrk\r\nConnection: close\r\n\r\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nContent-Type: text/html\r\nContent-Length: 613\r\n"
            b"Connection: close\r\n\r\n" + b"<html>" + b"x" * 600 + b"</html>")


def short_flows(n: int) -> list[bytes]:
    rng = random.Random(15)
    cap = Capture()
    for i in range(n):
        conv = TcpConversation(cap, (CLIENT, 20_000 + i), (SERVER, 80), i * 1e-3, 1e-4, rng)
        conv.open()
        conv.send(True, REQUEST)
        conv.send(False, RESPONSE)
        conv.close()
    return _frames(cap)


def udp_small(n: int, payload: str = "zeros") -> list[bytes]:
    """``n`` datagrams of 36 bytes (64-byte frames less the Ethernet header): zeros, or as iperf3
    sends them ("real": seconds, microseconds and a sequence number, then random bytes)."""
    rng = random.Random(15)
    cap = Capture()
    for i in range(n):
        data = struct.pack("!III", 1_700_000_000 + i // 100_000, i % 100_000 * 10, i) + rng.randbytes(24) \
            if payload == "real" else bytes(36)
        cap.udp(i * 1e-5, (CLIENT, 40_000), (SERVER, 5201), data)
    return _frames(cap)


def pings(n: int, payload: str = "zeros") -> list[bytes]:
    """``n`` echo requests and replies with 56 bytes of data: zeros, or as Linux ping sends them
    ("real": a struct timeval, then the bytes 0x10, 0x11...)."""
    cap = Capture()
    for i in range(n):
        data = struct.pack("<QQ", 1_700_000_000 + i, i * 1000 % 1_000_000) + bytes(range(0x10, 0x38)) \
            if payload == "real" else bytes(56)
        echo = struct.pack("!BBHHH", 8, 0, 0, 77, i) + data
        cap.add(i * 1e-3, CLIENT, SERVER, socket.IPPROTO_ICMP, echo, 2)
        reply = struct.pack("!BBHHH", 0, 0, 0, 77, i) + data
        cap.add(i * 1e-3 + 1e-4, SERVER, CLIENT, socket.IPPROTO_ICMP, reply, 2)
    return _frames(cap)


def tls_flows(n: int) -> list[bytes]:
    from lab.bench.capture import _tls_data, _vec, tls_client_hello, tls_handshake, tls_record, tls_server_hello

    rng = random.Random(15)
    cap = Capture()
    for i in range(n):
        conv = TcpConversation(cap, (CLIENT, 30_000 + i), (SERVER, 443), i * 1e-3, 1e-4, rng)
        conv.open()
        conv.send(True, tls_client_hello(rng, "www.example.com"))
        conv.send(False, tls_server_hello(rng))
        finished = tls_record(20, b"\x01") + tls_record(22, rng.randbytes(40))
        conv.send(True, tls_record(22, tls_handshake(16, _vec(1, rng.randbytes(32)))) + finished)
        conv.send(False, finished)
        conv.send(True, _tls_data(rng, rng.randint(300, 900)))
        conv.send(False, _tls_data(rng, int(20_000 * 25 ** rng.random())))  # 20 KB .. 500 KB, log-uniform
        conv.close()
    return _frames(cap)


def encryption_handling(rules_dir: Path, flows: int) -> None:
    frames = tls_flows(flows)
    for handling in ("bypass", "full"):
        cfg, engines = build(rules_dir, [f"app-layer.protocols.tls.encryption-handling={handling}"])
        run(cfg, engines, frames[:50])
        ips = next(e for e in engines if e.name == "ips")
        before = dict(ips.counters)
        secs, stats = run(cfg, engines, frames)
        stats["ips"] = {k: v - before.get(k, 0) for k, v in stats["ips"].items()}
        pl = stats["pipeline"]
        python = pl.get("packets", 0) - pl.get("packets.decided", 0)
        print(f"encryption_handling {handling}: {len(frames)} packets of {flows} TLS flows, {python} inspected in Python"
              f" ({python / len(frames):.0%}; the rest stays in the kernel inline), {secs:.2f} s CPU"
              f" ({secs / flows * 1e3:.2f} ms per flow); alerts by the IPS {stats['ips'].get('matches.alert', 0)},"
              f" bypassed flows {stats['ips'].get('flows.bypassed_encrypted', 0)}")


def memory_per_flow(rules_dir: Path, flows: int) -> None:
    """Python heap per flow (tracemalloc) after ``flows`` one-packet UDP flows from distinct clients."""
    import gc
    import tracemalloc

    from agent.dataplane.worker import pipeline_from_config
    from filters.packet import parse_ethernet

    cfg, engines = build(rules_dir)
    cap = Capture()
    for i in range(flows):
        src = socket.inet_aton(f"10.{1 + i // 60000}.{(i // 250) % 240}.{i % 250 + 1}")
        cap.udp(i * 1e-5, (src, 40_000 + i % 20_000), (SERVER, 9999), bytes(18))
    frames = _frames(cap)
    pipe = pipeline_from_config(cfg, lambda rec: None, engines=engines, kernel_offload=True)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i, frame in enumerate(frames):
        pipe.process(parse_ethernet(frame, 1000 + i * 1e-5), i, 1000 + i * 1e-5)
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - before
    print(f"memory: {len(pipe.flows)} one-packet UDP flows, {grown / len(pipe.flows):,.0f} bytes of Python heap per flow")


def _frames(cap: Capture) -> list[bytes]:
    cap.frames.sort()
    return [f for _, _, f in cap.frames]


def build(rules_dir: Path = ET_OPEN, sets: Sequence[str] = (), groups: str = "") -> tuple[Any, Any]:
    from agent.engines import build_engines
    from agent.offline import replay as offline

    rules, _ = et_open_files(rules_dir)
    if not rules:
        raise SystemExit(f"ET Open not found in {rules_dir}")
    if groups:
        rules = [rule_subset(rules, set(groups.split(",")))]
    cfg = offline.offline_config(None, list(sets), rule_files=[str(f) for f in rules])
    engines = build_engines(cfg)
    import gc

    gc.collect()
    gc.freeze()  # as the daemon does once the rules are loaded (agent/dataplane/daemon.py)
    return cfg, engines


def rule_subset(files: list[Path], groups: set[str]) -> Path:
    """A rule file (in a temporary folder) with only the rules of ``files`` that fall in ``groups``
    of the IPS's detector (iponly, packet, stream, app): a rule set without rules that fit every flow."""
    import tempfile

    from filters.ips.netspec import Variables
    from filters.ips.rule_groups import classify
    from filters.ips.rule_parser import load_files

    loaded = load_files(files, Variables.suricata_defaults())
    keep = [r.text for n, r in enumerate(loaded.rules) if classify(n, r).group in groups]
    out = Path(tempfile.mkdtemp(prefix="firstpacket-")) / "subset.rules"
    out.write_text("\n".join(keep) + "\n")
    print(f"rule set: {len(keep)} of {len(loaded.rules)} ET Open rules (groups {', '.join(sorted(groups))})")
    return out


def kernel_view(frames: list[bytes], needs: tuple[bool, bool]) -> list[bytes]:
    """The frames the kernel ruleset hands to the workers for engines with ``needs`` (packets,
    empty ACKs; filters.registry.dataplane_needs), as agent/dataplane/ruleset.py ``_skip_lines``
    decides it: none when no engine needs packets; without empty ACKs, those of a connection whose
    SYN and first empty ACK went to the queue stay in the kernel until a FIN passes. (The connmark
    fast path after a flow's decision is counted by the pipeline: ``packets.decided``.)"""
    from agent.dataplane.ruleset import EmptyAckSkip
    from filters.packet import parse_ethernet

    if not needs[0]:
        return []
    if needs[1]:
        return frames
    skip = EmptyAckSkip()
    return [frame for frame in frames if skip.queued(parse_ethernet(frame, 0.0))]


def run(cfg: Any, engines: Any, frames: list[bytes], kernel: bool = False) -> tuple[float, dict[str, Any]]:
    """CPU seconds of the pipeline over ``frames`` (a fresh pipeline, kernel offload on), and its
    stats. ``kernel``: the SYN+ACK (without payload) of a connection whose SYN passed with the
    handshake skip (``Release.handshake``) stays in the kernel, as agent/dataplane/ruleset.py
    ``MARK_HS`` keeps it (counted in the stats as ``kernel.synack_kept``)."""
    from agent.dataplane.ruleset import HandshakeSkip
    from agent.dataplane.worker import pipeline_from_config
    from filters.packet import parse_ethernet

    pipe = pipeline_from_config(cfg, lambda rec: None, engines=engines, kernel_offload=True)
    skip = HandshakeSkip()
    t0 = time.process_time()
    now = 1000.0
    for i, frame in enumerate(frames):
        now += 1e-5
        pkt = parse_ethernet(frame, now)
        if not skip.queued(pkt):
            continue
        for rel in pipe.process(pkt, i, now):
            if kernel and rel.handshake:
                skip.mark(pkt)
    secs = time.process_time() - t0
    stats = pipe.stats()
    stats["kernel"] = {"synack_kept": skip.kept}
    return secs, stats


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.bench.firstpacket", description=__doc__.splitlines()[0])
    p.add_argument("--rules-dir", type=Path, default=ET_OPEN)
    p.add_argument("--flows", type=int, default=2000, help="HTTP Connection: close connections")
    p.add_argument("--udp", type=int, default=20000, help="64-byte UDP datagrams of one flow")
    p.add_argument("--ping", type=int, default=2000, help="echo request/reply pairs")
    p.add_argument("--payload", choices=("zeros", "real"), default="zeros",
                   help="UDP and ping data: zeros, or like iperf3 (random) and Linux ping (a timestamp and a pattern)")
    p.add_argument("--profile", type=int, default=0, metavar="N", help="print cProfile's top N entries")
    p.add_argument("--sort", default="tottime")
    p.add_argument("--repeat", type=int, default=3, help="passes per kind; the fastest counts (a shared machine)")
    p.add_argument("--tls", type=int, default=0, metavar="N",
                   help="measure encryption_handling bypass and full on N TLS flows instead")
    p.add_argument("--groups", default="", metavar="G,G",
                   help="load only ET Open's rules of these detector groups (iponly, packet, stream, app), e.g. app: "
                        "without the packet rules (`alert ip any any -> any any`...) that fit every flow")
    p.add_argument("--kernel", action="store_true",
                   help="new connections twice: every packet, and only what the kernel rules queue for the loaded engines")
    p.add_argument("--memory", type=int, default=0, metavar="N",
                   help="measure the Python heap per flow over N one-packet UDP flows instead")
    args = p.parse_args(argv)
    if args.memory:
        memory_per_flow(args.rules_dir, args.memory)
        return 0
    if args.tls:
        encryption_handling(args.rules_dir, args.tls)
        return 0
    t0 = time.monotonic()
    cfg, engines = build(args.rules_dir, groups=args.groups)
    print(f"ET Open loaded in {time.monotonic() - t0:.1f} s")
    from filters.registry import dataplane_needs

    needs = dataplane_needs(engines)
    print(f"the engines need packets: {needs[0]}, empty ACKs: {needs[1]} (before issue 15's kernel rules: all)")
    conns = short_flows(args.flows)
    kinds = {"new connections": conns, "udp 64 B": udp_small(args.udp, args.payload),
             "ping": pings(args.ping, args.payload)}
    if args.kernel:
        # the same connections as the kernel's empty-ACK rules and the handshake skip hand them over
        # (issue 15), beside all of them
        kinds = {"new connections, every packet queued": conns,
                 "new connections, as the kernel queues them now": kernel_view(conns, needs), **kinds}
        del kinds["new connections"]
    prof = cProfile.Profile() if args.profile else None
    for name, frames in kinds.items():
        if not frames:
            print(f"{name}: no packet reaches Python")
            continue
        kernel = name.endswith("as the kernel queues them now")
        run(cfg, engines, frames[:50], kernel)  # warm-up
        if prof:
            prof.enable()
        secs, stats = run(cfg, engines, frames, kernel)
        if prof:
            prof.disable()
        else:
            for _ in range(args.repeat - 1):
                secs = min(secs, run(cfg, engines, frames, kernel)[0])
        pl = stats["pipeline"]
        # inline, the rest stays in the kernel (connmark; the handshake skip's SYN+ACKs)
        python = len(frames) - pl.get("packets.decided", 0) - stats["kernel"]["synack_kept"]
        per_conn = (f"; {python / args.flows:.2f} packets per connection reach Python ({secs / args.flows * 1e6:.0f} µs"
                    " CPU per connection)") if name.startswith("new connections") else (
                    f"; {python:,} packets of the flow reach Python")  # one UDP flow, one ping flow
        print(f"{name}: {len(frames)} packets, {secs:.2f} s CPU, {secs / len(frames) * 1e6:.1f} µs/packet"
              f" ({len(frames) / secs:,.0f} pkt/s); offloaded flows {pl.get('flows.offloaded', 0)},"
              f" packets after the decision {pl.get('packets.decided', 0)}{per_conn}")
    if prof:
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats(args.sort).print_stats(args.profile)
        print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
