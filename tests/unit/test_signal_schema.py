"""One signal shape on every sink: JSONL, stdout and Kafka all carry the v1 record that
``schemas/signal.v1.schema.json`` describes, and the schema is strict enough to fail."""

from __future__ import annotations

import io
import json
import math
from typing import Any

import msgspec
import orjson
import pytest
from jsonschema import ValidationError

from adapters.files.sink import JsonlSignalSink, StdoutSignalSink
from adapters.kafka.sink import KafkaEventSink, KafkaSignalSink
from engine.aggregator import score_from_probs
from engine.errors import InvalidInput
from engine.events import FEATURE_NAMES, Bar, CompositeSignal, Features, Interval, SentimentScore
from engine.pipeline import SignalEngine
from engine.serialization import (
    SIGNAL_SCHEMA_VERSION,
    decode_event,
    decode_signal,
    dumps_line,
    encode_event,
    signal_record,
)
from tests.support.schema import SIGNAL_SCHEMA_PATH, validate_signal

T0 = 1_700_000_000_000
MINUTE = 60_000
KEYS = ["v", "id", "symbol", "ts_event", "ts_init", "cause", "signal", "confidence", "scores", "num_sources",
        "actionable", "market_data", "features"]


def _bar(symbol: str, i: int) -> Bar:
    start = T0 + i * MINUTE
    price = 100.0 + (i % 11) - (i % 4) * 0.7
    return Bar(symbol, Interval.M1, start, price, price + 1, price - 1, price, 5.0 + i % 3, start + MINUTE,
               start + MINUTE + 5)


def _run_engine() -> tuple[list[CompositeSignal], list[Features], list[SentimentScore]]:
    """Signals from the real engine: news before any bar (no features), bar decisions, news decisions."""
    engine = SignalEngine()
    signals: list[CompositeSignal] = []
    features: list[Features] = []
    scores = [
        score_from_probs("n-eth", ("ETHUSDT",), (0.8, 0.15, 0.05), T0, T0 + 7),  # ETH has no bars yet
        score_from_probs("n-btc-1", ("BTCUSDT",), (0.05, 0.15, 0.8), T0 + 3 * MINUTE, T0 + 3 * MINUTE + 9),
        # A second agreeing item: one alone is never actionable (the evidence-aware confidence stays below 0.667).
        score_from_probs("n-btc-2", ("BTCUSDT",), (0.05, 0.1, 0.85), T0 + 3 * MINUTE + 1, T0 + 3 * MINUTE + 10),
        score_from_probs("n-both", ("BTCUSDT", "ETHUSDT"), (0.1, 0.7, 0.2), T0 + 30 * MINUTE, T0 + 30 * MINUTE),
    ]
    signals += engine.on_sentiment(scores[0])
    for i in range(25):
        if i == 3:
            signals += engine.on_sentiment(scores[1])
            signals += engine.on_sentiment(scores[2])
        decided = engine.on_bar(_bar("BTCUSDT", i))
        assert decided is not None
        features.append(decided[0])
        signals.append(decided[1])
    signals += engine.on_sentiment(scores[3])
    return signals, features, scores


@pytest.fixture(scope="module")
def engine_output() -> tuple[list[CompositeSignal], list[Features], list[SentimentScore]]:
    return _run_engine()


@pytest.fixture(scope="module")
def signals(engine_output) -> list[CompositeSignal]:
    return engine_output[0]


def test_the_engine_run_covers_every_kind_of_signal(signals: list[CompositeSignal]) -> None:
    causes = {s.cause.split(":")[0] for s in signals}
    assert causes == {"bar", "news"}
    assert any(s.features is None for s in signals) and any(s.features is not None for s in signals)
    assert {s.signal.value for s in signals} >= {"BUY", "HOLD"}
    assert any(s.actionable for s in signals) and any(s.num_sources == 0 for s in signals)


def test_signal_record_is_the_v1_shape_in_key_order(signals: list[CompositeSignal]) -> None:
    for s in signals:
        record = signal_record(s)
        assert list(record) == KEYS
        assert record["v"] == SIGNAL_SCHEMA_VERSION == 1
        assert record["id"] == f"{s.symbol}:{s.ts_event}:{s.cause}"
        assert list(record["scores"]) == ["SELL", "HOLD", "BUY"]
        if record["features"] is not None:
            assert list(record["features"]) == list(FEATURE_NAMES)
        validate_signal(record)


def test_ids_are_deterministic_and_distinct_per_decision(signals: list[CompositeSignal]) -> None:
    ids = [s.id for s in signals]
    assert len(set(ids)) == len(ids)
    assert [s.id for s in _run_engine()[0]] == ids  # the same decisions made again carry the same ids
    news_ids = {s.id for s in signals if s.cause == "news:n-both"}
    assert news_ids == {f"BTCUSDT:{T0 + 30 * MINUTE}:news:n-both", f"ETHUSDT:{T0 + 30 * MINUTE}:news:n-both"}


def test_schema_matches_the_code() -> None:
    schema = json.loads(SIGNAL_SCHEMA_PATH.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    assert schema["required"] == KEYS == list(schema["properties"])
    assert schema["properties"]["v"]["const"] == SIGNAL_SCHEMA_VERSION
    feature_def = schema["$defs"]["features"]
    assert feature_def["required"] == list(FEATURE_NAMES) == list(feature_def["properties"])

    def described(node: dict[str, Any]) -> None:
        for name, prop in node.get("properties", {}).items():
            assert prop.get("description"), name
            described(prop)

    described(schema)
    described(feature_def)


def test_a_signal_without_features_has_null_features(signals: list[CompositeSignal]) -> None:
    first = signals[0]
    assert first.symbol == "ETHUSDT" and first.features is None and first.cause == "news:n-eth"
    record = signal_record(first)
    assert record["features"] is None
    assert b'"features":null' in dumps_line(record)
    validate_signal(record)


def test_non_finite_features_are_written_as_null(signals: list[CompositeSignal]) -> None:
    with_features = next(s for s in signals if s.features is not None)
    assert with_features.features is not None
    bad = msgspec.structs.replace(with_features.features, macd=math.nan, rsi_14=math.inf, atr_ratio=-math.inf)
    record = signal_record(msgspec.structs.replace(with_features, features=bad))
    assert record["features"]["macd"] is None and record["features"]["rsi_14"] is None
    assert record["features"]["atr_ratio"] is None
    validate_signal(orjson.loads(dumps_line(record)))


async def test_jsonl_sink_lines_validate(signals: list[CompositeSignal], tmp_path) -> None:
    path = tmp_path / "signals.jsonl"
    with JsonlSignalSink(path) as sink:
        for s in signals:
            await sink.publish(s)
        await sink.flush()
    assert sink.count == len(signals)
    data = path.read_bytes()
    assert data == b"".join(dumps_line(signal_record(s)) for s in signals)  # byte-stable, keys in order
    lines = data.splitlines()
    assert len(lines) == len(signals)
    for line in lines:
        record = orjson.loads(line)
        validate_signal(record)
        assert decode_signal(line) == record
    assert orjson.loads(lines[0])["features"] is None


class _FlushRecorder(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    def write(self, data: Any) -> int:
        self.events.append("write")
        return super().write(data)

    def flush(self) -> None:
        self.events.append("flush")
        super().flush()


async def test_stdout_sink_lines_validate_and_flush_per_line(signals: list[CompositeSignal]) -> None:
    stream = _FlushRecorder()
    sink = StdoutSignalSink(stream)
    for s in signals:
        await sink.publish(s)
    assert sink.count == len(signals)
    assert stream.events == ["write", "flush"] * len(signals)
    lines = stream.getvalue().splitlines()
    assert stream.getvalue() == b"".join(dumps_line(signal_record(s)) for s in signals)
    for line in lines:
        validate_signal(orjson.loads(line))


async def test_stdout_sink_writes_to_stdout_by_default(signals: list[CompositeSignal], capsysbinary) -> None:
    sink = StdoutSignalSink()
    for s in signals[:3]:
        await sink.publish(s)
    await sink.flush()
    out = capsysbinary.readouterr().out
    assert out == b"".join(dumps_line(signal_record(s)) for s in signals[:3])
    for line in out.splitlines():
        validate_signal(orjson.loads(line))


async def test_kafka_signal_sink_values_validate(signals: list[CompositeSignal]) -> None:
    sent: list[tuple[str, bytes | None, bytes]] = []
    flushed: list[bool] = []

    async def send(topic: str, key: bytes | None, value: bytes) -> None:
        sent.append((topic, key, value))

    async def flush() -> None:
        flushed.append(True)

    sink = KafkaSignalSink(send, "signals.composite", flush)
    for s in signals:
        await sink.publish(s)
    await sink.flush()
    assert sink.count == len(signals) and flushed == [True]
    assert [(t, k) for t, k, _ in sent] == [("signals.composite", s.symbol.encode()) for s in signals]
    for (_, _, value), s in zip(sent, signals, strict=True):
        assert value == orjson.dumps(signal_record(s))  # the same bytes as a JSONL line, less the newline
        record = orjson.loads(value)
        validate_signal(record)
        assert decode_signal(value) == record
    assert orjson.loads(sent[0][2])["features"] is None


async def test_kafka_event_sink_keeps_encode_event_payloads(engine_output) -> None:
    _, features, scores = engine_output
    sent: list[tuple[str, bytes | None, bytes]] = []

    async def send(topic: str, key: bytes | None, value: bytes) -> None:
        sent.append((topic, key, value))

    bars_sink, sentiment_sink = KafkaEventSink(send, "market.bars"), KafkaEventSink(send, "sentiment.scores")
    await bars_sink.publish(features[-1])
    await sentiment_sink.publish(scores[-1])
    await bars_sink.flush()  # no flush callable: a no-op
    assert bars_sink.count == sentiment_sink.count == 1
    assert sent == [
        ("market.bars", b"BTCUSDT", encode_event(features[-1])),
        ("sentiment.scores", b"n-both", encode_event(scores[-1])),
    ]
    assert decode_event(sent[0][2]) == features[-1] and decode_event(sent[1][2]) == scores[-1]


def _mutations() -> list[tuple[str, Any]]:
    def drop(key: str) -> Any:
        return lambda r: {k: v for k, v in r.items() if k != key}

    def put(path: tuple[str, ...], value: Any) -> Any:
        def apply(r: dict[str, Any]) -> dict[str, Any]:
            r = json.loads(json.dumps(r))
            node = r
            for part in path[:-1]:
                node = node[part]
            node[path[-1]] = value
            return r

        return apply

    def drop_feature(r: dict[str, Any]) -> dict[str, Any]:
        r = json.loads(json.dumps(r))
        del r["features"]["vwap_distance"]
        return r

    return [
        ("extra key", put(("type",), "CompositeSignal")),
        ("missing id", drop("id")),
        ("missing cause", drop("cause")),
        ("missing features", drop("features")),
        ("missing v", drop("v")),
        ("bad signal label", put(("signal",), "STRONG_BUY")),
        ("lower-case label", put(("signal",), "buy")),
        ("wrong version", put(("v",), 2)),
        ("bad cause", put(("cause",), "tick")),
        ("empty news id", put(("cause",), "news:")),
        ("confidence above 1", put(("confidence",), 1.5)),
        ("negative sources", put(("num_sources",), -1)),
        ("float time", put(("ts_event",), 1.5)),
        ("actionable as string", put(("actionable",), "yes")),
        ("extra score", put(("scores", "STRONG_BUY"), 0.0)),
        ("unknown feature", put(("features", "momentum"), 1.0)),
        ("missing feature", drop_feature),
        ("features as empty object", put(("features",), {})),
        ("feature as string", put(("features", "macd"), "1.0")),
    ]


@pytest.mark.parametrize(("case", "mutate"), _mutations(), ids=[c for c, _ in _mutations()])
def test_schema_rejects_records_that_are_not_v1(signals: list[CompositeSignal], case: str, mutate: Any) -> None:
    good = signal_record(next(s for s in signals if s.features is not None))
    validate_signal(good)
    with pytest.raises(ValidationError):
        validate_signal(mutate(good))


def test_decode_signal_round_trips_signal_record(signals: list[CompositeSignal]) -> None:
    for s in signals:
        record = signal_record(s)
        assert decode_signal(dumps_line(record)) == record
        assert decode_signal(orjson.dumps(record).decode()) == record


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"v": 2}, "unsupported signal schema version 2"),
        ({"v": True}, "unsupported signal schema version True"),
        ({"v": None}, "unsupported signal schema version None"),
        ({"type": "CompositeSignal"}, "unexpected type"),
        ({"signal": "STRONG_BUY"}, "unknown signal label 'STRONG_BUY'"),
        ({"scores": {"SELL": 0.0, "BUY": 1.0}}, "scores must have exactly"),
        ({"features": []}, "features must be null or an object"),
    ],
)
def test_decode_signal_rejects_what_is_not_a_v1_signal(
    signals: list[CompositeSignal], change: dict[str, Any], reason: str
) -> None:
    record = signal_record(signals[-1]) | change
    with pytest.raises(InvalidInput, match=reason):
        decode_signal(orjson.dumps(record))


def test_decode_signal_rejects_missing_keys_other_payloads_and_garbage(signals: list[CompositeSignal]) -> None:
    record = signal_record(signals[-1])
    del record["cause"], record["id"]
    with pytest.raises(InvalidInput, match="missing cause, id"):
        decode_signal(orjson.dumps(record))
    with pytest.raises(InvalidInput, match="unsupported signal schema version"):
        decode_signal(orjson.dumps({k: v for k, v in signal_record(signals[-1]).items() if k != "v"}))
    # The old Kafka payload (encode_event of a CompositeSignal) is not a v1 signal record.
    with pytest.raises(InvalidInput, match="not a v1 signal"):
        decode_signal(encode_event(signals[-1]))
    with pytest.raises(InvalidInput, match="malformed JSON"):
        decode_signal(b'{"v": 1,')
    with pytest.raises(InvalidInput, match="not a JSON object"):
        decode_signal(b"[1, 2]")
