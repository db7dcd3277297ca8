"""The one engine interface: events in, verdicts (or holds for I/O) out. Engines do no I/O."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Mapping

if TYPE_CHECKING:  # pragma: no cover
    from filters.flow import Flow
    from filters.packet import Packet


class Action(enum.IntEnum):
    """Verdict actions, ordered by strictness: the pipeline keeps the largest."""

    NONE = 0  # no opinion
    PASS = 1  # this engine is done with the flow; allow
    ALERT = 2  # allow, but record an alarm
    DROP = 3  # drop the packet and the rest of the flow
    REJECT = 4  # drop, and tell the sender (TCP RST / ICMP unreachable)

    @property
    def blocks(self) -> bool:
        return self >= Action.DROP


class Scope(enum.Enum):
    FLOW = "flow"  # the verdict holds for the rest of the flow (kernel offload)
    PACKET = "packet"  # only this packet


class ConfigError(ValueError):
    """A configuration problem: names the file, the key path and what was expected."""

    def __init__(self, problem: str, *, path: str = "", key: str = "") -> None:
        self.problem = problem
        self.path = path
        self.key = key
        where = ": ".join(p for p in (path, key) if p)
        super().__init__(f"{where}: {problem}" if where else problem)

    def within(self, *, path: str = "", prefix: str = "") -> "ConfigError":
        """The same error, placed under a file and a key prefix."""
        key = ".".join(k for k in (prefix, self.key) if k)
        return ConfigError(self.problem, path=path or self.path, key=key)


@dataclass(frozen=True, slots=True)
class EngineContext:
    """Settings from outside an engine's own section that engines may use."""

    home_net: tuple[str, ...] = ()
    management_ipv4: str = ""  # the box's own address (settings sheet), e.g. the DNS sinkhole
    management_ipv6: str = ""


class InjectKind(enum.Enum):
    DNS_ANSWER = "dns_answer"  # answer the client's DNS query ourselves (sinkhole / NXDOMAIN)
    HTTP_BLOCK_PAGE = "http_block_page"  # answer the client's HTTP request with the block page
    TCP_RESET = "tcp_reset"  # reset the TCP connection (to either side or both)


@dataclass(frozen=True, slots=True)
class Inject:
    """A packet the agent sends on an engine's behalf, built from the packet being judged.

    ``args`` by kind: DNS_ANSWER {"rcode": int, "answers": [(rrtype, rdata_bytes)], "ttl": int};
    HTTP_BLOCK_PAGE {"html": str}; TCP_RESET {"sender": bool, "receiver": bool}, relative to
    the judged packet (its sender gets a reset it accepts, its receiver one too).
    """

    kind: InjectKind
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one engine decided about a packet or flow, and why."""

    action: Action
    engine: str
    rule_id: int = 0
    signature: str = ""
    category: str = ""
    severity: int = 3
    gid: int = 1
    rev: int = 0
    reason: str = ""
    scope: Scope = Scope.FLOW
    metadata: Mapping[str, Any] = field(default_factory=dict)  # extra EVE fields (e.g. "http": {...})
    inject: tuple[Inject, ...] = ()  # packets to send back (block page, DNS answer, resets)


@dataclass(frozen=True, slots=True)
class IORequest:
    """I/O an engine needs done before it can decide (category lookup, clamd scan, sandbox...).

    ``kind`` selects the agent-side performer; ``args`` are its inputs. The result is handed back
    through ``Engine.on_io_result``.
    """

    kind: str
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Hold:
    """Defer the verdict: hold the flow's current and later packets until the I/O completes.

    When ``timeout`` seconds pass first, ``on_timeout`` is applied (and recorded as ``reason``).
    """

    engine: str
    request: IORequest
    timeout: float = 2.0
    on_timeout: Action = Action.PASS
    reason: str = ""


Decision = Verdict | Hold


class Hook(enum.Enum):
    PACKET = "packet"
    PACKET_END = "packet_end"  # after the packet's stream data and app-layer events were handled
    FLOW_START = "flow_start"
    STREAM = "stream"
    FLOW_END = "flow_end"
    # Application-layer events (filled in by the protocol parsers of later engines).
    DNS = "dns"
    HTTP_REQUEST = "http_request"
    HTTP_RESPONSE = "http_response"
    TLS_HELLO = "tls_hello"
    FILE = "file"
    MAIL = "mail"


class Engine:
    """Base class of every inspection engine.

    Subclasses set ``name`` and ``hooks`` (the events they want), validate their own config in
    ``configure`` (raise ``ConfigError`` with a key relative to their section) and return
    decisions from the hook methods. They must not block or do I/O; ask for I/O with ``Hold``.
    """

    name: ClassVar[str] = "engine"
    hooks: ClassVar[frozenset[Hook]] = frozenset()

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    # -- configuration -------------------------------------------------------------------
    def configure(self, section: Mapping[str, Any], ctx: EngineContext = EngineContext()) -> None:
        """Validate and take this engine's config section. Raise ConfigError on problems."""

    def prepare(self) -> None:
        """Heavy loading after ``configure`` (e.g. compiling rules); called once before traffic."""

    def summary(self) -> dict[str, Any]:
        """Loaded-state summary for status and heartbeat (rules loaded, skipped, versions)."""
        return {}

    # -- events --------------------------------------------------------------------------
    def on_packet(self, pkt: "Packet", flow: "Flow | None") -> Iterable[Decision] | None:
        return None

    def on_packet_end(self, pkt: "Packet", flow: "Flow") -> Iterable[Decision] | None:
        """Called once per packet after its stream chunks and app-layer events were dispatched."""
        return None

    def on_flow_start(self, flow: "Flow", pkt: "Packet") -> Iterable[Decision] | None:
        return None

    def on_stream(self, flow: "Flow", to_server: bool, data: bytes, offset: int) -> Iterable[Decision] | None:
        """New in-order bytes of one direction; ``offset`` is their position in that stream."""
        return None

    def on_flow_end(self, flow: "Flow") -> Iterable[Decision] | None:
        return None

    def on_event(self, hook: Hook, flow: "Flow", event: Any) -> Iterable[Decision] | None:
        """Application-layer events (DNS, HTTP, TLS, file, mail)."""
        return None

    def on_io_result(self, flow: "Flow", request: IORequest, result: Any, error: str | None) -> Iterable[Decision] | None:
        """The I/O asked for with ``Hold`` finished (``error`` set when it failed)."""
        return None

    def on_io_late(self, request: IORequest, result: Any, error: str | None) -> None:
        """An I/O result that came after its hold timed out (the flow went on without it): an
        engine may still learn from it, e.g. fill a cache. Nothing is decided here."""

    def needs_more(self, flow: "Flow") -> bool:
        """True while this engine still wants to see the flow's packets (no kernel offload yet)."""
        return False
