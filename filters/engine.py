"""The one engine interface: events in, verdicts (or holds for I/O) out. Engines do no I/O.

Also what an engine declares to the box, so that the daemon, the updater and the config loader
never name an engine type: the pydantic model of its config section (``Engine.Config``), the
signature-bundle kinds it takes and how a live bundle enters its section, the kernel sets it owns
and their entries, and the local services it needs (the block page).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Mapping, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

if TYPE_CHECKING:  # pragma: no cover
    from filters.app.events import DnsMessage, FileEvent, HttpEvent, SmtpEvent, TlsHello
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


# -- config sections: one pydantic model per engine -----------------------------------------------
# A kernel prefilter (Engine.kernel_filter): per direction (to_server, to_client), the patterns as
# (bytes, nocase, icmp_type): a packet holding none of its direction's patterns (in an ICMP packet
# of that type, when icmp_type is not -1) needs no inspection.
KernelPattern = tuple[bytes, bool, int]
MAX_KERNEL_PATTERN = 128  # bytes: xt_string's longest pattern (XT_STRING_MAX_PATTERN_SIZE); longer ones are cut
KernelFilter = tuple[frozenset[KernelPattern], frozenset[KernelPattern]]


class EngineConfig(BaseModel):
    """Base of the engines' section models (``Engine.Config``): unknown keys are errors and values
    must have their exact type (YAML ``yes`` is not ``true``, ``"5"`` is not 5)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    enabled: bool = Field(False, description="run this engine")


M = TypeVar("M", bound=BaseModel)

_PROBLEMS = {
    "extra_forbidden": "unknown key",
    "missing": "required key is missing",
    "bool_type": "expected true or false",
    "int_type": "expected a whole number",
    "float_type": "expected a number",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
}
_BOUNDS = {"greater_than_equal": ("ge", "at least"), "less_than_equal": ("le", "at most"),
           "greater_than": ("gt", "more than"), "less_than": ("lt", "less than")}


def _key(loc: Iterable[Any]) -> str:
    """A pydantic location as a config key: ``("rules", 1, "action")`` -> ``rules[1].action``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f"{'.' if out else ''}{part}"
    return out


def _join(key: str, sub: str) -> str:
    if not key or not sub:
        return key or sub
    return key + sub if sub.startswith("[") else f"{key}.{sub}"


def config_error(exc: ValidationError) -> ConfigError:
    """The first problem of a failed section validation, as a ConfigError whose key is relative to
    the section. Unknown keys are reported first; a validator may raise ConfigError itself, its
    key then being relative to the value it checked."""
    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    err = errors[0]
    key = _key(err["loc"])
    raised = (err.get("ctx") or {}).get("error")
    if isinstance(raised, ConfigError):
        return ConfigError(raised.problem, key=_join(key, raised.key))
    if isinstance(raised, Exception):
        return ConfigError(str(raised), key=key)
    kind = err["type"]
    if kind in _PROBLEMS:
        return ConfigError(_PROBLEMS[kind], key=key)
    if kind in _BOUNDS:
        name, words = _BOUNDS[kind]
        return ConfigError(f"expected a value {words} {err['ctx'][name]}", key=key)
    if kind == "literal_error":
        return ConfigError("expected " + str(err["ctx"]["expected"]).replace("'", ""), key=key)
    return ConfigError(err["msg"], key=key)


def validate_section(model: type[M], section: Any) -> M:
    """``section`` (a mapping from the YAML) checked against ``model``; ConfigError on problems."""
    if not isinstance(section, Mapping):
        raise ConfigError("expected a mapping")
    try:
        return model.model_validate(dict(section))
    except ValidationError as exc:
        raise config_error(exc) from None


# -- what an engine declares to the box -------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class KernelSet:
    """A kernel address set (ipset) an engine owns.

    The ruleset (agent/dataplane/ruleset.py) drops packets to or from its entries in VCR-BLOCK and
    logs them with the NFLOG prefix ``vcr:<tag>:0:drop``; the daemon fills it from the running
    engine's ``kernel_set_entries`` (empty while the engine is off) and has the owner describe each
    logged drop (``kernel_drop_verdict``).
    """

    name: str  # the ipset's name, e.g. "vcr-ti4" (at most 31 characters)
    family: int  # 4 or 6
    tag: str  # NFLOG prefix kind of its drops, e.g. "ti"
    kind: str = "hash:net"  # "hash:net" (addresses, CIDRs) or "hash:ip,port" ("addr,proto:port")
    maxelem: int = 65536
    counters: bool = False


class LocalService:
    """A service an engine needs the box to run for it (the daemon starts it when some running
    engine asks; the engine stays sans-IO)."""


@dataclass(frozen=True)
class BlockPage(LocalService):
    """The block page on the box's management address, where sinkholed names land: ``describe(host)``
    gives the categories to show, the reason ("category", "deny list", "threat"; "" when this engine
    did not block the name) and optionally the threat's name; ``box`` names the box. Several engines
    may offer one (ATP, the web filter): the server asks each in pipeline order."""

    describe: Callable[[str], tuple[Any, ...]]
    box: str = ""


class BundleError(Exception):
    """A staged signature bundle does not load (the updater refuses it: ``load_failed``)."""


@dataclass
class BundleLoad:
    """What an engine built from a staged bundle, before it goes live.

    ``rules_loaded``: the count the updater holds against the live bundle's (``min_rule_ratio``);
    ``counts_manifest_rules``: it counts the same thing as the manifest's ``rule_count``, so it is
    held against that too; ``engine``: what was built (kept for the caller, e.g. tests)."""

    rules_loaded: int
    summary: dict[str, Any] = field(default_factory=dict)
    engine: Any = None
    counts_manifest_rules: bool = False


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
    HTTP_BLOCK_PAGE {"html": str, "replace": bool}: without ``replace`` the judged packet is a
    request and the page answers its sender; with it the judged packet is the start of a response
    and the page takes its place towards its receiver (the sender, the server, is reset); TCP_RESET {"sender": bool, "receiver": bool}, relative to
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
    # Not an alarm but an EVE record of this type (e.g. "fileinfo") made of ``metadata``; its action
    # should be NONE or PASS (the record says what was seen, the verdict decides nothing).
    event: str = ""


@dataclass(frozen=True, slots=True)
class IORequest:
    """I/O an engine needs done before it can decide (category lookup, clamd scan, sandbox...).

    ``kind`` selects the agent-side performer; ``args`` are its inputs. The result is handed back
    through ``Engine.on_io_result``. ``detached``: set by the pipeline on the I/O of a ``Hold``
    asked for when its flow ended (a file completed by the end of the connection): there is no
    packet left to hold, so the result can only raise alarms, nothing is blocked.
    """

    kind: str
    args: Mapping[str, Any] = field(default_factory=dict)
    detached: bool = False


@dataclass(frozen=True, slots=True)
class Hold:
    """Defer the verdict: hold the flow's current and later packets until the I/O completes.

    When ``timeout`` seconds pass first, ``on_timeout`` is applied (and recorded as ``reason``), or
    ``timeout_verdict`` when the engine gave one (e.g. an alarm naming the file not scanned in time).
    """

    engine: str
    request: IORequest
    timeout: float = 2.0
    on_timeout: Action = Action.PASS
    reason: str = ""
    timeout_verdict: Verdict | None = None


@dataclass(frozen=True, slots=True)
class Submit:
    """I/O that holds nothing (e.g. start streaming a file to the scanner while it arrives): the
    pipeline hands ``request`` to the performers as it does a ``Hold``'s; the result comes back to
    ``on_io_result`` with ``request.detached`` set, and can only raise alarms."""

    engine: str
    request: IORequest


Decision = Verdict | Hold | Submit


class Hook(enum.Enum):
    """The events an engine can take; each is delivered to the engine method ``Hook.method`` names."""

    PACKET = "packet"
    PACKET_END = "packet_end"  # after the packet's stream data and app-layer events were handled
    FLOW_START = "flow_start"
    STREAM = "stream"
    FLOW_END = "flow_end"
    # Application-layer events, from the protocol parsers (filters.app).
    DNS = "dns"
    HTTP_REQUEST = "http_request"
    HTTP_RESPONSE = "http_response"
    TLS_HELLO = "tls_hello"
    FILE = "file"
    MAIL = "mail"

    @property
    def method(self) -> str:
        """The ``Engine`` method that receives this hook's events, e.g. ``on_http_request``."""
        return "on_" + self.value


PACKET_HOOKS = frozenset({Hook.PACKET, Hook.PACKET_END})
APP_HOOKS = frozenset({Hook.DNS, Hook.HTTP_REQUEST, Hook.HTTP_RESPONSE, Hook.TLS_HELLO, Hook.FILE, Hook.MAIL})


class Engine:
    """Base class of every inspection engine.

    Subclasses set ``name``, validate their own config in ``configure`` (raise ``ConfigError``
    with a key relative to their section) and override the hook methods (``on_*``, one per
    ``Hook``) for the events they want: the pipeline calls only the methods an engine overrides
    (``implemented_hooks``), so an engine declares its hooks by implementing them. Hook methods
    return decisions (or None); they must not block or do I/O: ask for I/O with ``Hold``.

    The class also declares what the box does for it, so no agent code names an engine type:
    ``Config`` (its section's model), ``bundle_kinds`` with ``apply_bundle`` / ``load_bundle``
    (signed bundles), ``kernel_sets`` with ``kernel_set_entries`` / ``kernel_drop_verdict`` (address
    sets in the kernel) and ``local_services`` (e.g. the block page). Being listed in
    filters/registry.py is all an engine needs to be built, updated and served.
    """

    name: ClassVar[str] = "engine"
    # True: of the HTTP events one chunk of a stream raises for a message (headers, body, end),
    # the engine gets only the last (see Pipeline.dispatch_event). For engines that inspect a
    # message's buffers as a whole and decide nothing before the packet ends (the IPS).
    coalesce_http: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # The pre-typed-hook interface would be silently ignored: refuse it outright.
        for stale in ("hooks", "on_event"):
            if stale in cls.__dict__:
                raise TypeError(f"{cls.__name__}.{stale}: engines declare hooks by overriding the on_* methods of Hook")

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    # -- configuration -------------------------------------------------------------------
    # The pydantic model of this engine's section (``engines.<name>``), every field described: the
    # config loader validates the section through it, the configuration docs are made from it.
    Config: ClassVar[type[BaseModel]] = EngineConfig

    @classmethod
    def check_section(cls, section: Any) -> Any:
        """``section`` validated through ``Config`` (keys, types, ranges; nothing read from disk), as
        a ``Config`` instance. Raises ConfigError with a key relative to the section."""
        return validate_section(cls.Config, section)

    def configure(self, section: Mapping[str, Any], ctx: EngineContext = EngineContext()) -> None:
        """Validate and take this engine's config section (``check_section``, then what needs the
        context or the disk). Raise ConfigError on problems."""
        self.check_section(section)

    def prepare(self) -> None:
        """Heavy loading after ``configure`` (e.g. compiling rules); called once before traffic."""

    def summary(self) -> dict[str, Any]:
        """Loaded-state summary for status and heartbeat (rules loaded, skipped, versions).

        Its ``signatures`` entry, {label: version} (e.g. {"webcat": "2026.11.20"}), is what the
        heartbeat reports as this engine's signature versions."""
        return {}

    # -- integration with the box: what the daemon and the updater ask of an engine ---------
    # Signature-bundle kinds this engine takes (ips, threatintel, webcat, av, antispam).
    bundle_kinds: ClassVar[tuple[str, ...]] = ()
    # Kernel address sets this engine owns (whether it runs or not: they are empty while it is off).
    kernel_sets: ClassVar[tuple[KernelSet, ...]] = ()

    @classmethod
    def apply_bundle(cls, section: Mapping[str, Any], kind: str, folder: Path) -> dict[str, Any]:
        """This engine's config section with the live bundle of ``kind`` (the real path of its
        version folder) in it; a new mapping, ``section`` is left as it is."""
        return dict(section)

    @classmethod
    def load_bundle(cls, kind: str, folder: Path, manifest: Mapping[str, Any], section: Mapping[str, Any],
                    ctx: EngineContext) -> BundleLoad:
        """Build what the staged bundle ``folder`` of ``kind`` holds, beside the running engine
        (configured from its running ``section``), so that a bundle that does not load never goes
        live. Raises BundleError. By default (kinds no engine checks yet) the manifest's count."""
        return BundleLoad(int(manifest.get("rule_count") or 0), {"files": len(manifest.get("files") or [])})

    def kernel_set_entries(self) -> Mapping[str, Iterable[str]]:
        """Set name -> the entries of each of ``kernel_sets``, from what this engine loaded (the
        daemon's status shows them beside the ``version`` of the engine's summary)."""
        return {}

    def kernel_drop_verdict(self, pkt: "Packet") -> Verdict | None:
        """The alarm for a packet the kernel dropped through one of this engine's sets (also asked
        of a fresh, unconfigured instance when the engine is off)."""
        return None

    def local_services(self) -> tuple[LocalService, ...]:
        """The services this engine needs the box to run for it (e.g. ``BlockPage``)."""
        return ()

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

    # Application-layer events (filters.app.events), once the flow's protocol is known.
    # (hook declarations: alike in shape by design, each a no-op an engine overrides)
    def on_dns(self, flow: "Flow", msg: "DnsMessage") -> Iterable[Decision] | None:
        """A DNS query (``msg.to_server``) or response."""
        return None

    def on_http_request(self, flow: "Flow", ev: "HttpEvent") -> Iterable[Decision] | None:
        """An HTTP request reached a new stage (``ev.stage``: headers, body bytes, done)."""
        return None

    def on_http_response(self, flow: "Flow", ev: "HttpEvent") -> Iterable[Decision] | None:
        """An HTTP response reached a new stage (``ev.stage``: headers, body bytes, done)."""
        return None

    def on_tls_hello(self, flow: "Flow", hello: "TlsHello") -> Iterable[Decision] | None:
        """A TLS ClientHello (``hello.to_server``) or ServerHello with its certificates."""
        return None

    def on_file(self, flow: "Flow", file: "FileEvent") -> Iterable[Decision] | None:
        """A file seen in traffic (an HTTP upload or download body, once its message is complete)."""
        return None

    def on_mail(self, flow: "Flow", mail: "SmtpEvent") -> Iterable[Decision] | None:
        """SMTP envelope commands, and the message once DATA ends."""
        return None

    def on_io_result(self, flow: "Flow", request: IORequest, result: Any, error: str | None) -> Iterable[Decision] | None:
        """The I/O asked for with ``Hold`` finished (``error`` set when it failed)."""
        return None

    def on_io_late(self, request: IORequest, result: Any, error: str | None) -> Iterable[Decision] | None:
        """An I/O result that came after its hold timed out (the flow went on without it): an
        engine may still learn from it, e.g. fill a cache. Nothing is decided here, but verdicts
        returned are recorded as alarms about the flow (e.g. the sandbox's retro alarm: a file
        found malicious after it was passed)."""

    def needs_more(self, flow: "Flow") -> bool:
        """True while this engine still wants to see the flow's packets (no kernel offload yet)."""
        return False

    def kernel_filter(self, flow: "Flow") -> "KernelFilter | None":
        """While ``needs_more`` says yes: the payload patterns without which no later packet of
        the (non-TCP) flow could make this engine decide, report or count anything, per direction
        (to_server, to_client), or None when there is no such set. The kernel then keeps the
        flow's packets that hold none of them (agent/dataplane/prefilter.py). Default: None."""
        return None

    # -- what the kernel may keep from the workers (agent/dataplane/ruleset.py), asked once the
    # engine is loaded; the answers of all enabled engines are combined (any True wins) --------
    def needs_packets(self) -> bool:
        """Does this engine need to see any packet of a connection the kernel policy allowed? With
        no enabled engine needing them, the kernel passes allowed connections itself and no packet
        goes to a worker. By default: yes, if the engine takes any hook."""
        return bool(implemented_hooks(self))

    def needs_handshake(self, flow: "Flow") -> bool:
        """Inline, asked on a TCP connection's SYN (while some engine still needs the flow): could
        this engine decide, report or count anything on the connection's SYN+ACK (without
        payload)? While no engine says yes, the kernel keeps it from the workers (the handshake
        skip, agent/dataplane/ruleset.py ``MARK_HS``): one trip through a worker less in every
        connection's first round trip. The handshake's last ACK still comes. By default: yes,
        if the engine takes packets (the packet hooks)."""
        return bool(implemented_hooks(self) & PACKET_HOOKS)

    def needs_empty_acks(self) -> bool:
        """Could this engine decide, report or count anything on an empty ACK: a TCP packet without
        payload with ACK and none of SYN, FIN and RST, of a connection whose SYN, SYN+ACK and first
        such ACK it saw? While an enabled engine says yes, the kernel hands every such packet to the
        workers. By default: yes, if the engine takes packets (the packet hooks); an engine that only
        takes a flow's start, its stream bytes, app-layer events or its end sees nothing of them."""
        return bool(implemented_hooks(self) & PACKET_HOOKS)

    def file_depth(self) -> int:
        """Bytes of a file (an HTTP body) this engine needs to judge it whole: its own file size
        limit. 0: the app layer's body limit will do. The app layer lets bodies go on past their
        (IPS) limit up to the largest of these (``FileTail``: hashed and handed out as they pass,
        not kept), and the flows that carry files (HTTP) are reassembled that deep; the IPS's
        buffers stay at the body limit."""
        return 0


def implemented_hooks(engine: Engine) -> frozenset[Hook]:
    """The hooks ``engine`` takes: those whose method its class (or the instance itself) overrides.

    The pipeline asks this once per engine set, not per packet (as mitmproxy introspects its addons).
    """
    cls, own = type(engine), getattr(engine, "__dict__", {})
    return frozenset(h for h in Hook if h.method in own or getattr(cls, h.method) is not getattr(Engine, h.method))
