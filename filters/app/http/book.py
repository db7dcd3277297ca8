"""Bookkeeping shared by the HTTP/1 and HTTP/2 parsers: limits, transactions, bodies and events."""
from __future__ import annotations

from typing import Callable

from filters.app.events import HttpEvent, HttpTransaction
from filters.app.http.body import Body

DEFAULT_BODY_MEMCAP = 1 << 20  # decoded body bytes one flow holds at once, all messages (0 = no cap)
# (by default the larger of this and 4 x (request + response body limit); no cap when a body limit is 0)
TX_OVERHEAD = 1024  # bytes a transaction costs beyond its lines and headers (objects, lists, events)


def body_memcap_for(request_body_limit: int, response_body_limit: int, body_memcap: int | None) -> int:
    """``body_memcap`` as given, or by default room for several whole bodies; none when a body limit is lifted (0)."""
    if body_memcap is None:
        limits = (request_body_limit, response_body_limit)
        body_memcap = 0 if 0 in limits else max(DEFAULT_BODY_MEMCAP, 4 * sum(limits))
    return body_memcap


def check_limits(non_negative: tuple[tuple[str, int], ...], positive: tuple[tuple[str, int], ...]) -> None:
    """Raise ``ValueError`` for the first limit out of range (``name``, ``value`` pairs)."""
    for name, value in non_negative:
        if value < 0:
            raise ValueError(f"{name} must be >= 0")
    for name, value in positive:
        if value < 1:
            raise ValueError(f"{name} must be >= 1")


class TransactionBook:
    """Transactions, held bytes, bodies and events of one flow's HTTP parser (HTTP/1 or HTTP/2).

    The parser calls ``_init_book`` from its ``__init__`` and has a ``_prune`` and a ``_failed``."""

    transactions: list[HttpTransaction]
    counters: dict[str, int]
    max_transactions: int
    meta_held: int
    _tx_held: dict[int, int]
    _live: dict[int, Body]
    _dirty: dict[int, Body]
    _events: list[HttpEvent]
    _next_id: int
    request_body_limit: int
    response_body_limit: int
    decompress_layers: int
    max_decompressed: int
    decompress_ratio: int
    body_memcap: int
    body_held: int
    file_depth: int
    _tails: dict[int, Body]

    def _init_book(self, *, request_body_limit: int, response_body_limit: int, decompress_layers: int,
                   max_decompressed: int, decompress_ratio: int, body_memcap: int, max_transactions: int,
                   first_tx_id: int) -> None:
        """The limits the Body class (filters.app.http.body) reads from its parser, and empty books."""
        self.request_body_limit = request_body_limit
        self.response_body_limit = response_body_limit
        self.decompress_layers = decompress_layers
        self.max_decompressed = max_decompressed
        self.decompress_ratio = decompress_ratio
        self.body_memcap = body_memcap
        self.file_depth = 0  # the file engines' depth: a body goes on past its limit to here (FileTail), set by the app layer
        self._tails = {}  # bodies with FileTail chunks handed out by the last flush
        self.max_transactions = max_transactions
        self.body_held = 0  # decoded bytes in the bodies of ``_live``
        self.meta_held = 0  # lines and headers of the transactions in ``transactions``
        self._live = {}  # bodies holding decoded bytes
        self._dirty = {}  # bodies that got bytes since the last flush
        self._tx_held = {}  # tx_id -> its part of meta_held
        self.transactions = []
        self.counters = {}
        self._events = []
        self._next_id = first_tx_id

    def release(self) -> None:
        """The events handed out so far were inspected: drop the decoded bodies of complete messages.

        The caller (``filters.app.layer.AppLayer``) calls this before each ``feed``: a body stays
        for the events of the flush that completed it (the engines and file events see it whole),
        then goes. Only the parsers' own tests look at bodies afterwards. The file bytes past the
        body limit (``FileTail`` chunks) go the same way."""
        if self._tails:
            for body in self._tails.values():
                if body.file is not None:
                    body.file.release()
            self._tails.clear()
        if not self._live:
            return
        for key, body in list(self._live.items()):
            if body.complete:
                body.release()
                del self._live[key]

    def _guarded(self, fn: Callable[..., None], *args: object) -> None:
        try:
            fn(*args)
        except Exception:  # never out of the packet path: stop parsing this flow
            self._failed()

    def _failed(self) -> None:
        """Called in the handler of an internal error: log it, count it, stop parsing the flow."""
        raise NotImplementedError

    def _charge(self, tx: HttpTransaction, n: int) -> None:
        """``tx`` holds ``n`` more bytes (a line, a header) for as long as it is in ``transactions``."""
        if tx.tx_id in self._tx_held:
            self._tx_held[tx.tx_id] += n
            self.meta_held += n

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def _anomaly(self, tx: HttpTransaction | None, name: str) -> None:
        self._count(name)
        if tx is not None and name not in tx.anomalies:
            tx.anomalies.append(name)

    def _emit(self, tx: HttpTransaction, stage: str, to_server: bool) -> None:
        events = self._events
        if events and events[-1].tx is tx and events[-1].stage == stage:
            return
        events.append(HttpEvent(tx, stage, to_server))

    def _body_added(self, body: Body) -> None:
        self._dirty[id(body)] = body
        self._emit(body.tx, "response_body" if body.response else "request_body", not body.response)

    def _tail_added(self, body: Body) -> None:
        self._tails[id(body)] = body
        self._emit(body.tx, "response_body" if body.response else "request_body", not body.response)

    def _flush(self) -> list[HttpEvent]:
        for body in self._dirty.values():
            body.publish()
        self._dirty.clear()
        if len(self.transactions) > self.max_transactions:
            self._prune()
        events, self._events = self._events, []
        return events

    def _prune(self) -> None:
        raise NotImplementedError

    def _drop_transactions(self, gone: list[HttpTransaction], counter: str) -> None:
        """Forget the transactions ``gone`` (and what they held); count them in ``counter``."""
        txs = self.transactions
        ids = {id(tx) for tx in gone}
        self.transactions = [tx for tx in txs if id(tx) not in ids]
        for tx in gone:
            self.meta_held -= self._tx_held.pop(tx.tx_id, 0)
        self.counters[counter] = self.counters.get(counter, 0) + len(gone)

    def _new_tx(self, **fields: object) -> HttpTransaction:
        tx = HttpTransaction(tx_id=self._next_id, **fields)  # type: ignore[arg-type]
        self._next_id += 1
        self.transactions.append(tx)
        self._tx_held[tx.tx_id] = TX_OVERHEAD
        self.meta_held += TX_OVERHEAD
        return tx
