"""Snapshot and restore of the engine state (engine/state.py): stopping anywhere and continuing from a snapshot
gives exactly the signals and features of an uninterrupted run."""

from __future__ import annotations

import math
import random
import struct
import time
import zlib

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.batcher import MicroBatcher
from engine.clock import ReplayClock
from engine.config import EngineSettings
from engine.errors import InvalidInput
from engine.events import Bar, Interval, NewsItem, Side, Trade
from engine.pipeline import SignalEngine
from engine.runtime import Runtime, RuntimeSinks
from engine.serialization import features_record, signal_record
from engine.state import (
    STATE_VERSION,
    ZLIB_LEVEL,
    decode_engine_state,
    decode_float,
    encode_float,
    engine_state,
    restore_engine_state,
)
from tests.support.lexicon_model import LexiconSentimentModel

BTC, ETH = "BTCUSDT", "ETHUSDT"
MIN = 60_000
DAY = 86_400_000
T0 = (1_700_000_000_000 // DAY + 1) * DAY - 60 * MIN  # an hour before midnight: the VWAP session resets mid-stream
HEADLINES = (
    "Bitcoin surges to record",  # BTC, bullish
    "Ethereum plunges after hack",  # ETH, bearish
    "Bitcoin and ether rally",  # both, bullish
    "Markets wait for the Fed",  # neither: unmapped
    "Bitcoin slumps as ether climbs",  # both, split
    "Solana soars",  # another symbol (traded: the engine has no symbol list)
    "Bitcoin ban fears, ether flat",  # both, bearish
)


class ListSink:
    def __init__(self) -> None:
        self.items: list = []

    async def publish(self, item) -> None:
        self.items.append(item)

    async def flush(self) -> None:
        return None


class Outputs:
    def __init__(self) -> None:
        self.signals, self.features, self.dead = ListSink(), ListSink(), ListSink()


def _news(rng: random.Random, n: int, ts: int, *, late: bool = False) -> NewsItem:
    published = ts - (45 * MIN if late else rng.randrange(0, 20_000))
    return NewsItem(f"n{n}", "test", HEADLINES[n % len(HEADLINES)], "", (), (), "", published, ts)


def bar_stream(seed: int = 7, n_bars: int = 120) -> list:
    """Bars of two symbols with varied prices, interleaved with news about one, both or neither, a late item,
    a duplicate id, a resent (stale) bar, an unusable bar and an empty headline (both dead-lettered)."""
    rng = random.Random(seed)
    price = {BTC: 43_000.0, ETH: 2_300.0}
    items: list = []
    n = 0
    for i in range(n_bars):
        start = T0 + i * MIN
        for symbol in (BTC, ETH):
            open_ = price[symbol]
            close = open_ * (1.0 + rng.gauss(0.0, 0.004))
            high = max(open_, close) * (1.0 + rng.random() * 0.002)
            low = min(open_, close) * (1.0 - rng.random() * 0.002)
            volume = 0.0 if rng.random() < 0.03 else rng.uniform(0.5, 40.0)
            items.append(Bar(symbol, Interval.M1, start, open_, high, low, close, volume, start + MIN, start + MIN + 7))
            price[symbol] = close
        ts = start + MIN + 8
        for _ in range(rng.choice((0, 0, 1, 1, 2))):
            items.append(_news(rng, n, ts, late=n % 11 == 5))
            n += 1
            ts += 1
        if i == n_bars // 2 + 3:
            items.append(NewsItem("n2", "test", HEADLINES[2], "", (), (), "", ts, ts))  # duplicate id
        if i == n_bars // 2 + 5:
            items.append(items[-3])  # a resent bar: stale
        if i == 30:
            items.append(Bar(ETH, Interval.M1, start + MIN, 10.0, 9.0, 11.0, 10.0, 1.0, start + 2 * MIN, ts))  # bad
            items.append(NewsItem("empty", "test", "   ", "", (), (), "", ts, ts))  # dead-lettered, not seen
    return items


def trade_stream(seed: int = 11, minutes: int = 120) -> list:
    """Trades of two symbols (0-6 a minute, some minutes none) with news between them and a few venue klines
    (not used when bars come from trades); a snapshot usually falls mid-bar."""
    rng = random.Random(seed)
    price = {BTC: 43_000.0, ETH: 2_300.0}
    events: list[tuple[int, int, object]] = []
    tid = 0
    for m in range(minutes):
        start = T0 + m * MIN
        for symbol in (BTC, ETH):
            for ts in sorted(rng.randrange(start, start + MIN) for _ in range(rng.choice((0, 1, 2, 3, 6)))):
                price[symbol] *= 1.0 + rng.gauss(0.0, 0.001)
                side = Side.BUY if rng.random() < 0.5 else Side.SELL
                events.append(
                    (ts, tid, Trade(symbol, price[symbol], rng.uniform(0.01, 3.0), side, f"t{tid}", ts, ts + 3))
                )
                tid += 1
        if m % 17 == 3:
            p = price[BTC]
            events.append((start + MIN, tid, Bar(BTC, Interval.M1, start, p, p, p, p, 1.0, start + MIN, start + MIN)))
            tid += 1
    n = 0
    for m in range(minutes):
        if rng.random() < 0.45:
            ts = T0 + m * MIN + rng.randrange(0, MIN)
            events.append((ts, -1, _news(rng, n, ts + 3, late=n % 9 == 4)))
            n += 1
    dup_at = T0 + (minutes // 2) * MIN + 123
    events.append((dup_at, -1, NewsItem("n1", "test", HEADLINES[1], "", (), (), "", dup_at, dup_at)))
    events.sort(key=lambda e: (e[0], e[1]))
    return [e[2] for e in events]


def _engine(bars_from: str = "klines", interval: Interval = Interval.M1) -> SignalEngine:
    return SignalEngine(EngineSettings(interval=interval, bars_from=bars_from))


async def _inline(fn, texts):  # the lexicon model is instant: skip the thread hop (keeps the cut sweep fast)
    return fn(texts)


async def _run(engine: SignalEngine, items: list, out: Outputs, *, clock_ms: int = 0, finish: bool) -> int:
    """Feed ``items``; then either finish (end of input) or score pending news, as a worker does before a
    snapshot. Returns the runtime clock."""
    batcher = MicroBatcher(LexiconSentimentModel(), run_blocking=_inline)
    sinks = RuntimeSinks(out.dead, signals=[out.signals], features=[out.features])
    runtime = Runtime(engine, batcher, sinks, clock=ReplayClock(clock_ms))
    for item in items:
        await runtime.feed(item)
    if finish:
        await runtime.finish()
    else:
        await runtime.score_pending()
    return runtime.clock.now_ms()


async def _uninterrupted(items: list, bars_from: str) -> tuple[Outputs, bytes]:
    engine, out = _engine(bars_from), Outputs()
    await _run(engine, items, out, finish=True)
    return out, engine_state(engine)


async def _interrupted(items: list, k: int, bars_from: str) -> tuple[Outputs, bytes, bytes]:
    """items[:k] on engine A, snapshot, restore into a fresh engine B, items[k:] on B. Outputs are A's then B's;
    returns them, B's final state and the snapshot."""
    out = Outputs()
    a = _engine(bars_from)
    clock_ms = await _run(a, items[:k], out, finish=False)
    blob = engine_state(a)
    b = _engine(bars_from)
    restore_engine_state(b, blob)
    assert engine_state(b) == blob  # deterministic, and nothing lost in the round trip
    # The runtime clock is the runtime's, not the engine's: the caller carries it (it stamps bars closed by finish).
    await _run(b, items[k:], out, clock_ms=clock_ms, finish=True)
    return out, engine_state(b), blob


def _assert_same(got: Outputs, want: Outputs, k: int) -> None:
    assert [signal_record(s) for s in got.signals.items] == [signal_record(s) for s in want.signals.items], k
    assert [features_record(f) for f in got.features.items] == [features_record(f) for f in want.features.items], k
    # Stronger still: whole structs (every timestamp, the features inside each signal), and the dead letters.
    assert got.signals.items == want.signals.items, k
    assert got.features.items == want.features.items, k
    assert got.dead.items == want.dead.items, k


BARS = bar_stream()
TRADES = trade_stream()


def _cuts(items: list) -> dict[str, int]:
    news = [i + 1 for i, item in enumerate(items) if isinstance(item, NewsItem)]
    dup = next(
        i
        for i, item in enumerate(items)
        if isinstance(item, NewsItem) and item.id in ("n1", "n2") and i > len(items) // 3
    )
    return {
        "start": 0,
        "one": 1,
        "middle": len(items) // 2,
        "end": len(items),
        "after-news": news[3],
        "after-two-news": next(k for k in news if k - 1 in news),
        "before-duplicate": dup,
        "last-news": news[-1],
    }


@pytest.mark.parametrize(("name", "k"), list(_cuts(BARS).items()))
async def test_bars_snapshot_restore_equals_uninterrupted(name: str, k: int) -> None:
    want, want_state = await _uninterrupted(BARS, "klines")
    got, got_state, _ = await _interrupted(BARS, k, "klines")
    _assert_same(got, want, k)
    assert got_state == want_state
    assert len(want.signals.items) > 240 and len(want.features.items) == 240  # one bad, one stale bar dropped


@pytest.mark.parametrize(("name", "k"), list(_cuts(TRADES).items()))
async def test_trades_snapshot_restore_mid_bar_equals_uninterrupted(name: str, k: int) -> None:
    want, want_state = await _uninterrupted(TRADES, "trades")
    got, got_state, _ = await _interrupted(TRADES, k, "trades")
    _assert_same(got, want, k)
    assert got_state == want_state


@pytest.mark.parametrize(("bars_from", "items"), [("klines", BARS), ("trades", trade_stream(11, 60))])
async def test_every_cut_point(bars_from: str, items: list) -> None:
    want, want_state = await _uninterrupted(items, bars_from)
    mid_bar = 0
    for k in range(len(items) + 1):
        got, got_state, blob = await _interrupted(items, k, bars_from)
        _assert_same(got, want, k)
        assert got_state == want_state, k
        mid_bar += any(b[0] >= 0 for b in decode_engine_state(blob)["builders"].values())  # a bar is open
    assert bars_from == "klines" or mid_bar > len(items) // 2  # most cuts fall inside an open bar


async def test_duplicate_news_id_is_dropped_after_the_cut() -> None:
    dup = next(i for i, item in enumerate(BARS) if isinstance(item, NewsItem) and item.id == "n2" and i > 100)
    got, _, _ = await _interrupted(BARS, dup, "klines")
    causes = [s.cause for s in got.signals.items]
    assert causes.count("news:n2") == 2  # BTC and ETH, once: the re-sent copy after the restore is not applied
    engine = _engine()
    restore_engine_state(engine, engine_state(await _engine_after(BARS[:dup])))
    assert engine.stats.news_duplicate == 0
    assert engine.accept_news(BARS[dup]) is None and engine.stats.news_duplicate == 1


async def _engine_after(items: list, bars_from: str = "klines") -> SignalEngine:
    engine = _engine(bars_from)
    await _run(engine, items, Outputs(), finish=False)
    return engine


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.floats(0.0, 1.0), trades=st.booleans())
async def test_random_streams_and_cuts(seed: int, cut: float, trades: bool) -> None:
    items = trade_stream(seed, 40) if trades else bar_stream(seed, 40)
    bars_from = "trades" if trades else "klines"
    k = round(cut * len(items))
    want, want_state = await _uninterrupted(items, bars_from)
    got, got_state, _ = await _interrupted(items, k, bars_from)
    _assert_same(got, want, k)
    assert got_state == want_state


async def test_two_snapshots_in_a_row() -> None:
    """Stop twice (A -> B -> C): state carries through more than one restore."""
    want, want_state = await _uninterrupted(BARS, "klines")
    out, clock_ms, engine = Outputs(), 0, _engine()
    for lo, hi in ((0, 90), (90, 200), (200, len(BARS))):
        clock_ms = await _run(engine, BARS[lo:hi], out, clock_ms=clock_ms, finish=hi == len(BARS))
        blob = engine_state(engine)
        engine = _engine()
        restore_engine_state(engine, blob)
    _assert_same(out, want, -1)
    assert engine_state(engine) == want_state


# -- floats ---------------------------------------------------------------------------------------------------
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_floats_round_trip_bit_exactly(x: float) -> None:
    back = decode_float(orjson.loads(orjson.dumps([encode_float(x)]))[0], "x")
    if math.isnan(x):
        assert math.isnan(back)
    else:
        assert struct.pack("<d", back) == struct.pack("<d", x)  # -0.0 and subnormals included


def _repr_all(items: list) -> list[str]:
    return [repr(msgspec.structs.astuple(i)) for i in items]  # NaN-safe comparison


async def test_non_finite_state_round_trips_and_continues_identically() -> None:
    """Extreme but accepted prices overflow the VWAP sums and a return to inf, then nan (inf * 0 volume)."""
    big, tiny = 1e308, 1e-300
    day = T0 // DAY * DAY
    specs = [
        (tiny, tiny, tiny, tiny, 1.0),
        (big, big, big, big, 10.0),
        (big, big, big, big, 0.0),
        (5.0, 6.0, 4.0, 5.5, 2.0),
        (5.5, 7.0, 5.0, 6.0, 1.0),
        (6.0, 6.5, 5.5, 6.0, 3.0),
    ]
    bars = [
        Bar(BTC, Interval.M1, day + i * MIN, o, h, lo, c, v, day + (i + 1) * MIN, day + (i + 1) * MIN)
        for i, (o, h, lo, c, v) in enumerate(specs)
    ]
    want = Outputs()
    await _run(_engine(), bars, want, finish=True)
    assert any(f.vwap_distance is not None and math.isnan(f.vwap_distance) for f in want.features.items)
    assert any(f.return_1 == math.inf for f in want.features.items)
    for k in range(len(bars) + 1):
        got, a = Outputs(), _engine()
        await _run(a, bars[:k], got, finish=False)
        doc = decode_engine_state(engine_state(a))
        if k >= 3:
            assert doc["calculators"][BTC][12] == "nan"  # cum_pv, written as a string JSON can hold
        b = _engine()
        restore_engine_state(b, engine_state(a))
        assert engine_state(b) == engine_state(a)
        await _run(b, bars[k:], got, finish=True)
        assert _repr_all(got.features.items) == _repr_all(want.features.items), k
        assert _repr_all(got.signals.items) == _repr_all(want.signals.items), k


# -- refusals -------------------------------------------------------------------------------------------------
async def _blob() -> bytes:
    return engine_state(await _engine_after(BARS[:150]))


def _reframe(blob: bytes, edit) -> bytes:
    doc = decode_engine_state(blob)
    edit(doc)
    return blob[:6] + zlib.compress(orjson.dumps(doc))


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda b: b"", "not a sigstream engine state"),
        (lambda b: b"hello world", "not a sigstream engine state"),
        (lambda b: b[:-7], "corrupt engine state: zlib"),
        (lambda b: b[:40] + bytes([b[40] ^ 0xFF]) + b[41:], "corrupt engine state: zlib"),
        (lambda b: b[:6] + zlib.compress(b"{not json"), "corrupt engine state: malformed JSON"),
        (lambda b: b[:6] + zlib.compress(b"[1, 2]"), "corrupt engine state: the document is a list"),
        (lambda b: _reframe(b, lambda d: d.pop("seen_news")), "corrupt engine state: engine: missing seen_news"),
        (lambda b: _reframe(b, lambda d: d["calculators"][BTC].pop()), "features of BTCUSDT: expected 14 items"),
        (lambda b: _reframe(b, lambda d: d["calculators"][BTC][2].extend([1.0] * 30)), "at most 21 fit"),
        (lambda b: _reframe(b, lambda d: d["latest"][ETH].__setitem__(1, "1.5")), "latest features of ETHUSDT"),
        (lambda b: _reframe(b, lambda d: d["stats"].pop("bars")), "engine stats: missing bars"),
        (lambda b: _reframe(b, lambda d: d["aggregator"]["scores"][0].__setitem__(5, "meh")), "unknown label"),
        (lambda b: _reframe(b, lambda d: d["aggregator"]["windows"][BTC].reverse()), "out of order"),
        (lambda b: _reframe(b, lambda d: d["aggregator"]["windows"][BTC][0].__setitem__(2, 10**6)), "score index"),
    ],
)
async def test_corrupt_blob_is_refused_and_the_engine_left_untouched(mangle, reason: str) -> None:
    blob = await _blob()
    engine = _engine()
    fresh = engine_state(engine)
    with pytest.raises(InvalidInput, match=reason):
        restore_engine_state(engine, mangle(blob))
    assert engine_state(engine) == fresh


async def test_other_format_version_is_refused() -> None:
    blob = await _blob()
    other = blob[:4] + (STATE_VERSION + 1).to_bytes(2, "big") + blob[6:]
    with pytest.raises(InvalidInput, match=f"format version {STATE_VERSION + 1} is not supported") as info:
        restore_engine_state(_engine(), other)
    assert f"reads version {STATE_VERSION}" in info.value.reason


async def test_other_interval_or_bar_source_is_refused() -> None:
    blob = await _blob()
    with pytest.raises(InvalidInput, match="made with interval '1m', this engine runs '5m'"):
        restore_engine_state(_engine(interval=Interval.M5), blob)
    with pytest.raises(InvalidInput, match="made with bars_from='klines', this engine has 'trades'"):
        restore_engine_state(_engine("trades"), blob)


async def test_restore_keeps_the_runtime_view_of_stats() -> None:
    """A Runtime built before the restore still reports the engine's (restored) counters."""
    blob = await _blob()
    engine = _engine()
    runtime = Runtime(engine, MicroBatcher(LexiconSentimentModel()), RuntimeSinks(ListSink()))
    restore_engine_state(engine, blob)
    assert runtime.stats.engine.bars == engine.stats.bars > 0


def test_seen_news_is_bounded_like_the_engine() -> None:
    engine = _engine()
    engine._seen_news_limit = 5
    for i in range(12):
        engine.accept_news(NewsItem(f"id{i}", "t", "Bitcoin surges", "", (), (), "", i, i))
    assert list(engine._seen_news) == [f"id{i}" for i in range(7, 12)]
    big = _engine()
    for i in range(12):
        big.accept_news(NewsItem(f"id{i}", "t", "Bitcoin surges", "", (), (), "", i, i))
    restore_engine_state(engine, engine_state(big))  # more ids than this engine keeps: the newest survive
    assert list(engine._seen_news) == [f"id{i}" for i in range(7, 12)]


# -- size and speed, to choose the snapshot cadence --------------------------------------------------------------
def _measure(engine: SignalEngine, label: str) -> int:
    blob = engine_state(engine)
    raw = orjson.dumps(engine.state())
    encode = min(_timed(lambda: engine_state(engine)) for _ in range(5))
    decode = min(_timed(lambda: restore_engine_state(SignalEngine(engine.settings), blob)) for _ in range(5))
    print(
        f"\n[engine state] {label}: blob {len(blob):,} B (zlib level {ZLIB_LEVEL}; JSON {len(raw):,} B), "
        f"encode {encode * 1e3:.1f} ms, decode+restore {decode * 1e3:.1f} ms"
    )
    return len(blob)


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def test_blob_size_and_timing_report() -> None:
    """2 symbols after 1,826 daily bars (five years) and 7,500 news items; then with the id memory full."""
    rng = random.Random(3)
    settings_ = EngineSettings(interval=Interval.D1)
    engine = SignalEngine(settings_)
    model = LexiconSentimentModel()
    day0 = 1_546_300_800_000  # 2019-01-01
    price = {BTC: 3_800.0, ETH: 140.0}
    news_per_day = [7_500 // 1_826 + (d < 7_500 % 1_826) for d in range(1_826)]
    n = 0
    for d in range(1_826):
        start = day0 + d * DAY
        for _ in range(news_per_day[d]):
            ts = start + rng.randrange(DAY)
            item = engine.accept_news(
                NewsItem(
                    f"https://news.example.com/{ts}/{n:06d}-crypto-markets",
                    "rss",
                    HEADLINES[n % len(HEADLINES)],
                    "",
                    (),
                    (),
                    "",
                    ts,
                    ts + 500,
                )
            )
            n += 1
            if item is not None:
                engine.on_sentiment(engine.sentiment(item, model.predict_proba([item.text])[0], item.ts_init))
        for symbol in (BTC, ETH):
            o = price[symbol]
            c = o * (1 + rng.gauss(0, 0.03))
            bar = Bar(
                symbol,
                Interval.D1,
                start,
                o,
                max(o, c) * 1.01,
                min(o, c) * 0.99,
                c,
                rng.uniform(1e3, 1e5),
                start + DAY,
                start + DAY,
            )
            engine.on_bar(bar)
            price[symbol] = c
    assert n == 7_500 and engine.stats.bars == 3_652
    size = _measure(engine, "2 symbols, 1,826 daily bars, 7,500 news (ids ~50 chars)")
    restored = SignalEngine(settings_)
    restore_engine_state(restored, engine_state(engine))
    assert engine_state(restored) == engine_state(engine)
    assert size < 256 * 1024

    for i in range(engine._seen_news_limit):
        engine._seen_news[f"https://news.example.com/{i:012d}/full-memory-item"] = None
    while len(engine._seen_news) > engine._seen_news_limit:
        engine._seen_news.popitem(last=False)
    _measure(engine, "same, id memory full (100,000 sequential ids of ~50 chars)")
    for _ in range(engine._seen_news_limit):
        engine._seen_news[f"{rng.getrandbits(128):032x}"] = None  # random ids (GUIDs) compress far worse
        engine._seen_news.popitem(last=False)
    _measure(engine, "same, id memory full (100,000 random 32-hex-char ids)")
