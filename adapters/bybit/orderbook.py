"""Local Bybit order book: a snapshot, then deltas; emits the book's top after each update.

Bybit's rules (v5 ``orderbook.{depth}.{symbol}``):

* a snapshot replaces the whole local book (Bybit re-sends one after a service restart, with ``u == 1``);
* a delta carries absolute sizes per price level; size 0 deletes the level;
* ``u`` increases by exactly one per message of a topic, so a delta whose ``u`` is not the previous
  ``u + 1`` means updates were lost: the book is out of sync until a fresh snapshot arrives, and the
  source resubscribes to get one.
"""

from __future__ import annotations

from adapters.bybit.parsing import OrderBookUpdate
from engine.errors import InvalidInput
from engine.events import BookTop


class OrderBookOutOfSync(InvalidInput):
    """A delta could not be applied: updates were lost, or no snapshot has arrived yet.

    It is an :class:`InvalidInput` so the unapplied frame is dead-lettered with the reason.
    ``resync`` is True for the first failure of an episode, when the caller should ask for a
    fresh snapshot (resubscribe); later deltas before that snapshot arrive have ``resync`` False.
    """

    def __init__(self, reason: str, *, topic: str, resync: bool) -> None:
        super().__init__(reason)
        self.topic = topic
        self.resync = resync


class LocalOrderBook:
    """The book of one ``orderbook.{depth}.{symbol}`` topic."""

    __slots__ = (
        "_asks",
        "_bids",
        "_resync_requested",
        "awaiting_snapshot",
        "restarts",
        "resyncs",
        "symbol",
        "topic",
        "update_id",
    )

    def __init__(self, topic: str, symbol: str) -> None:
        self.topic = topic
        self.symbol = symbol
        self._bids: dict[float, float] = {}
        self._asks: dict[float, float] = {}
        self.update_id: int | None = None
        self.awaiting_snapshot = True
        self._resync_requested = False
        self.resyncs = 0  # gaps detected (each asks for a fresh snapshot)
        self.restarts = 0  # snapshots with u == 1: Bybit restarted and the book was overwritten

    def apply(self, update: OrderBookUpdate) -> BookTop:
        """Apply a snapshot or delta and return the new top of book.

        Raises:
            OrderBookOutOfSync: A delta before any snapshot, or a gap in ``u``. The book keeps its
                last good state but refuses deltas until the next snapshot.
        """
        if update.snapshot:
            if update.update_id == 1 and self.update_id is not None:
                self.restarts += 1
            self._bids = {price: size for price, size in update.bids if size > 0}
            self._asks = {price: size for price, size in update.asks if size > 0}
            self.update_id = update.update_id
            self.awaiting_snapshot = False
            self._resync_requested = False
            return self.top(update.ts_event, update.ts_init)
        if self.awaiting_snapshot:
            raise self._out_of_sync(f"delta u={update.update_id} while waiting for a snapshot")
        assert self.update_id is not None  # set by the snapshot that cleared awaiting_snapshot
        expected = self.update_id + 1
        if update.update_id != expected:
            self.awaiting_snapshot = True
            raise self._out_of_sync(f"update id gap, expected u={expected} got u={update.update_id}")
        _apply_levels(self._bids, update.bids)
        _apply_levels(self._asks, update.asks)
        self.update_id = update.update_id
        return self.top(update.ts_event, update.ts_init)

    def _out_of_sync(self, what: str) -> OrderBookOutOfSync:
        # Ask for one resync per episode; the deltas that follow until the snapshot only dead-letter.
        first = not self._resync_requested
        if first:
            self._resync_requested = True
            self.resyncs += 1
        return OrderBookOutOfSync(f"{self.topic}: {what}; resyncing", topic=self.topic, resync=first)

    def top(self, ts_event: int, ts_init: int) -> BookTop:
        best_bid = max(self._bids) if self._bids else None
        best_ask = min(self._asks) if self._asks else None
        return BookTop(
            symbol=self.symbol,
            best_bid=best_bid,
            best_ask=best_ask,
            bid_size=None if best_bid is None else self._bids[best_bid],
            ask_size=None if best_ask is None else self._asks[best_ask],
            update_id=self.update_id if self.update_id is not None else 0,
            ts_event=ts_event,
            ts_init=ts_init,
        )

    def bids(self) -> list[tuple[float, float]]:
        """Bid levels, best (highest) first."""
        return sorted(self._bids.items(), reverse=True)

    def asks(self) -> list[tuple[float, float]]:
        """Ask levels, best (lowest) first."""
        return sorted(self._asks.items())


def _apply_levels(side: dict[float, float], levels: tuple[tuple[float, float], ...]) -> None:
    for price, size in levels:
        if size == 0:
            # Deleting a level Bybit never sent us is harmless: it is already absent.
            side.pop(price, None)
        else:
            side[price] = size
