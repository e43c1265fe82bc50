"""Local order book: snapshot then deltas, deletes, gaps and Bybit restarts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.bybit.decoder import FrameDecoder
from adapters.bybit.orderbook import LocalOrderBook, OrderBookOutOfSync
from adapters.bybit.parsing import OrderBookUpdate, parse_frame
from engine.errors import InvalidInput

TOPIC = "orderbook.50.BTCUSDT"


def _update(u: int, bids=(), asks=(), *, snapshot: bool = False, ts: int = 1_000) -> OrderBookUpdate:
    return OrderBookUpdate(TOPIC, "BTCUSDT", snapshot, tuple(bids), tuple(asks), u, None, ts + u, ts + u + 1)


def test_snapshot_sets_top_of_book() -> None:
    book = LocalOrderBook(TOPIC, "BTCUSDT")
    top = book.apply(_update(10, [(100.0, 1.0), (99.5, 2.0)], [(100.5, 3.0), (101.0, 4.0)], snapshot=True))
    assert (top.best_bid, top.bid_size, top.best_ask, top.ask_size, top.update_id) == (
        100.0,
        1.0,
        100.5,
        3.0,
        10,
    )
    assert (top.ts_event, top.ts_init) == (1010, 1011)


def test_delta_updates_inserts_and_size_zero_deletes_a_level() -> None:
    book = LocalOrderBook(TOPIC, "BTCUSDT")
    book.apply(_update(10, [(100.0, 1.0), (99.5, 2.0)], [(100.5, 3.0), (101.0, 4.0)], snapshot=True))
    top = book.apply(_update(11, bids=[(100.0, 0.0), (99.8, 5.0)], asks=[(100.5, 0.5)]))
    assert (top.best_bid, top.bid_size, top.best_ask, top.ask_size) == (99.8, 5.0, 100.5, 0.5)
    top = book.apply(_update(12, asks=[(100.5, 0.0), (100.7, 1.5)]))
    assert (top.best_ask, top.ask_size) == (100.7, 1.5)
    assert book.bids() == [(99.8, 5.0), (99.5, 2.0)]
    assert book.asks() == [(100.7, 1.5), (101.0, 4.0)]


def test_emptied_side_reports_none() -> None:
    book = LocalOrderBook(TOPIC, "BTCUSDT")
    book.apply(_update(1, [(100.0, 1.0)], [(101.0, 1.0)], snapshot=True))
    top = book.apply(_update(2, bids=[(100.0, 0.0)]))
    assert (top.best_bid, top.bid_size, top.best_ask) == (None, None, 101.0)


def test_orderbook_gap_triggers_resync_once_until_next_snapshot() -> None:
    book = LocalOrderBook(TOPIC, "BTCUSDT")
    book.apply(_update(10, [(100.0, 1.0)], [(101.0, 1.0)], snapshot=True))
    book.apply(_update(11, bids=[(100.0, 2.0)]))
    with pytest.raises(OrderBookOutOfSync, match="expected u=12 got u=13") as gap:
        book.apply(_update(13, bids=[(100.0, 3.0)]))
    assert gap.value.resync
    assert gap.value.topic == TOPIC
    assert isinstance(gap.value, InvalidInput)  # so callers dead-letter the unapplied frame
    # Further deltas are refused without asking for another resync.
    with pytest.raises(OrderBookOutOfSync) as waiting:
        book.apply(_update(14, bids=[(100.0, 4.0)]))
    assert not waiting.value.resync
    assert book.resyncs == 1
    # The fresh snapshot heals the book, and deltas flow again from its u.
    book.apply(_update(20, [(99.0, 1.0)], [(99.5, 1.0)], snapshot=True))
    top = book.apply(_update(21, asks=[(99.2, 7.0)]))
    assert (top.best_bid, top.best_ask, top.ask_size, top.update_id) == (99.0, 99.2, 7.0, 21)


def test_stale_or_repeated_delta_is_a_gap_too() -> None:
    book = LocalOrderBook(TOPIC, "BTCUSDT")
    book.apply(_update(10, [(100.0, 1.0)], [(101.0, 1.0)], snapshot=True))
    with pytest.raises(OrderBookOutOfSync, match="expected u=11 got u=10"):
        book.apply(_update(10, bids=[(100.0, 9.0)]))


def test_delta_before_any_snapshot_asks_for_resync() -> None:
    book = LocalOrderBook(TOPIC, "BTCUSDT")
    with pytest.raises(OrderBookOutOfSync, match="waiting for a snapshot") as info:
        book.apply(_update(5, bids=[(100.0, 1.0)]))
    assert info.value.resync


def test_snapshot_with_u_1_after_bybit_restart_overwrites_the_book() -> None:
    book = LocalOrderBook(TOPIC, "BTCUSDT")
    book.apply(_update(500, [(100.0, 1.0)], [(101.0, 1.0)], snapshot=True))
    top = book.apply(_update(1, [(90.0, 2.0)], [(91.0, 2.0)], snapshot=True))
    assert (top.best_bid, top.best_ask, top.update_id) == (90.0, 91.0, 1)
    assert book.restarts == 1
    assert book.apply(_update(2, bids=[(90.5, 1.0)])).best_bid == 90.5


def test_decoder_turns_real_frames_into_book_tops() -> None:
    decoder = FrameDecoder()
    snapshot = {
        "topic": TOPIC,
        "type": "snapshot",
        "ts": 1672304484978,
        "data": {
            "s": "BTCUSDT",
            "b": [["16493.50", "0.006"]],
            "a": [["16611.00", "0.029"]],
            "u": 7,
            "seq": 1,
        },
        "cts": 1672304484976,
    }
    delta = {
        "topic": TOPIC,
        "type": "delta",
        "ts": 1672304484990,
        "data": {"s": "BTCUSDT", "b": [["16494.00", "1.5"]], "a": [["16611.00", "0"]], "u": 8, "seq": 2},
        "cts": 1672304484988,
    }
    [first] = decoder.decode(snapshot, 1)
    [second] = decoder.decode(delta, 2)
    assert (first.best_bid, first.best_ask) == (16493.5, 16611.0)
    assert (second.best_bid, second.bid_size, second.best_ask, second.ts_event) == (
        16494.0,
        1.5,
        None,
        1672304484988,
    )


levels = st.dictionaries(
    st.integers(min_value=1, max_value=200).map(lambda tick: tick * 0.5),
    st.sampled_from([0.0, 0.1, 1.0, 2.5, 10.0]),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(snapshot_bids=levels, snapshot_asks=levels, deltas=st.lists(st.tuples(levels, levels), max_size=20))
def test_incremental_book_equals_book_rebuilt_from_all_updates(snapshot_bids, snapshot_asks, deltas) -> None:
    """Reference: replay every level change into a plain dict, dropping zero sizes at the end."""
    book = LocalOrderBook(TOPIC, "BTCUSDT")
    book.apply(_update(1, snapshot_bids.items(), snapshot_asks.items(), snapshot=True))
    ref_bids = {p: s for p, s in snapshot_bids.items() if s > 0}
    ref_asks = {p: s for p, s in snapshot_asks.items() if s > 0}
    for u, (bids, asks) in enumerate(deltas, start=2):
        top = book.apply(_update(u, bids.items(), asks.items()))
        for ref, changes in ((ref_bids, bids), (ref_asks, asks)):
            for price, size in changes.items():
                if size == 0:
                    ref.pop(price, None)
                else:
                    ref[price] = size
        assert top.best_bid == (max(ref_bids) if ref_bids else None)
        assert top.best_ask == (min(ref_asks) if ref_asks else None)
    assert book.bids() == sorted(ref_bids.items(), reverse=True)
    assert book.asks() == sorted(ref_asks.items())


def test_parsed_delta_with_zero_size_string_deletes() -> None:
    [snap] = parse_frame(
        {
            "topic": TOPIC,
            "type": "snapshot",
            "ts": 1,
            "data": {"s": "BTCUSDT", "b": [["1.0", "2"]], "a": [], "u": 3},
        },
        5,
    )
    [delta] = parse_frame(
        {
            "topic": TOPIC,
            "type": "delta",
            "ts": 2,
            "data": {"s": "BTCUSDT", "b": [["1.0", "0"]], "a": [], "u": 4},
        },
        6,
    )
    book = LocalOrderBook(TOPIC, "BTCUSDT")
    book.apply(snap)
    assert book.apply(delta).best_bid is None
