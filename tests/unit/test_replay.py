"""Replay: deterministic bytes, dead letters with reasons and line numbers, CSV == converted recording."""

from __future__ import annotations

import asyncio
import csv
import gzip
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from adapters.bybit.frames import kline_frame
from adapters.files.sink import RecordingWriter
from adapters.files.source import KlineCsvSource, RecordingSource, detect_source
from engine.config import EngineSettings
from engine.errors import InvalidInput
from engine.events import Bar, Interval, NewsItem
from sigstream.demo import write_demo_recording
from sigstream.modes.replay import ReplayOutputs, run_replay
from tests.support.data import REPO_ROOT, shared_data_dir
from tests.support.lexicon_model import LexiconSentimentModel


def _replay(paths, tmp: Path, tag: str, interval=Interval.M1, symbol=None):
    outputs = ReplayOutputs(tmp / f"{tag}-features.jsonl", tmp / f"{tag}-signals.jsonl", tmp / f"{tag}-dead.jsonl")
    sources = [detect_source(p, interval=interval) for p in paths]
    report, dead = asyncio.run(run_replay(sources, LexiconSentimentModel(), EngineSettings(interval=interval),
                                          outputs, symbol=symbol, progress=False))
    return report, dead, outputs


def test_replay_twice_gives_identical_bytes(tmp_path: Path) -> None:
    recording = tmp_path / "demo.jsonl.gz"
    write_demo_recording(recording, minutes=600)
    _, _, first = _replay([recording], tmp_path, "a")
    _, _, second = _replay([recording], tmp_path, "b")
    assert first.features.read_bytes() == second.features.read_bytes()
    assert first.signals.read_bytes() == second.signals.read_bytes()
    signals = [orjson.loads(line) for line in first.signals.read_bytes().splitlines()]
    assert len(signals) > 1200
    assert {s["signal"] for s in signals} >= {"BUY", "SELL", "HOLD"}
    assert list(signals[0]) == ["v", "id", "symbol", "ts_event", "ts_init", "cause", "signal", "confidence",
                                "scores", "num_sources", "actionable", "market_data", "features"]


def test_corrupted_lines_go_to_dead_letters_with_reason_and_line_number(tmp_path: Path) -> None:
    recording = tmp_path / "bad.jsonl"
    bar = Bar("BTCUSDT", Interval.M1, 0, 1.0, 2.0, 0.5, 1.5, 10.0, 60_000, 60_000)
    good = kline_frame(bar, "BTCUSDT", Interval.M1)
    non_numeric = orjson.loads(orjson.dumps(good))
    non_numeric["data"][0]["close"] = "abc"
    unknown_topic = {"topic": "liquidation.BTCUSDT", "ts": 1, "data": {}}
    with RecordingWriter(recording) as writer:
        writer.write_frame(good, 60_000)                       # line 1
        writer.write_raw_line(b'{"ts_init": 1, "source": "by')  # line 2: truncated JSON
        writer.write_frame(unknown_topic, 61_000)              # line 3
        writer.write_frame(non_numeric, 62_000)                # line 4
        writer.write_raw_line(b'{"ts_init": 5, "source": "fax", "data": {}}')  # line 5
        writer.write_news(NewsItem("n1", "t", "Bitcoin surges", "", (), (), "", 1, 63_000))  # line 6
    report, dead, outputs = _replay([recording], tmp_path, "bad")
    assert report.dead_letters == 4 and dead.count == 4
    letters = [orjson.loads(line) for line in outputs.dead_letters.read_bytes().splitlines()]
    by_line = {d["line"]: d["reason"] for d in letters}
    assert by_line[2].startswith("malformed JSON")
    assert "unknown topic 'liquidation.BTCUSDT'" in by_line[3]
    assert "non-numeric close 'abc'" in by_line[4]
    assert "unknown recording source 'fax'" in by_line[5]
    # Stamped with the line's own receive time where it has one, else the previous line's.
    assert {d["line"]: d["ts_init"] for d in letters} == {2: 60_000, 3: 61_000, 4: 62_000, 5: 5}
    # the run continued past the bad lines
    assert report.engine.bars == 1 and report.engine.sentiment_scores == 1


def test_bad_csv_rows_are_dead_lettered_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "XUSDT_1m.csv"
    rows = [["timestamp", "open", "high", "low", "close", "volume"],
            ["2025-01-01T00:00:00Z", "1", "2", "0.5", "1.5", "3"],
            ["2025-01-01T00:01:00Z", "1", "2", "0.5", "oops", "3"],
            ["2025-01-01T00:01:00Z", "1", "2", "0.5", "1.6", "3"],
            ["2025-01-01T00:01:00Z", "1", "2", "0.5", "1.7", "3"],
            ["2025-01-01T00:00:30Z", "1", "2", "0.5", "1.7", "3"]]
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    items = list(KlineCsvSource(path, interval=Interval.M1).items())
    bars = [i for i in items if isinstance(i, Bar)]
    dead = [i for i in items if not isinstance(i, Bar)]
    assert [b.close for b in bars] == [1.5, 1.6]
    assert [(d.line, d.reason.split(" ")[0]) for d in dead] == [(3, "non-numeric"), (5, "duplicate"),
                                                                  (6, "out-of-order")]
    minute = 1_735_689_600_000 + 60_000  # 2025-01-01T00:01Z: dead rows are stamped at their own bar's close
    assert [d.ts_init for d in dead] == [minute + 60_000, minute + 60_000, minute + 30_000]


def test_kline_csv_and_its_converted_recording_give_the_same_features(tmp_path: Path) -> None:
    source_csv = shared_data_dir() / "bybit" / "BTCUSDT_5m.csv"
    small = tmp_path / "BTCUSDT_5m.csv"
    with source_csv.open() as src, small.open("w") as dst:
        for _, line in zip(range(400), src, strict=False):
            dst.write(line)
    recording = tmp_path / "btc.jsonl.gz"
    csv_source = KlineCsvSource(small)
    with RecordingWriter(recording) as writer:
        for bar in csv_source.bars():
            writer.write_frame(kline_frame(bar, "BTCUSDT", Interval.M5), bar.ts_event)
    assert isinstance(detect_source(recording), RecordingSource)
    with gzip.open(recording) as handle:
        assert orjson.loads(handle.readline())["data"]["topic"] == "kline.5.BTCUSDT"
    _, _, from_csv = _replay([small], tmp_path, "csv", Interval.M5)
    _, _, from_rec = _replay([recording], tmp_path, "rec", Interval.M5)
    assert from_csv.features.read_bytes() == from_rec.features.read_bytes()
    assert len(from_csv.features.read_bytes().splitlines()) == 399


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sigstream.cli", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=300, check=False)


def test_cli_rejects_bad_input_with_exit_code_2_and_one_line(tmp_path: Path) -> None:
    result = _cli("replay", str(tmp_path / "missing.csv"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: no such file")
    bad_interval = _cli("replay", "x.csv", "--interval", "2m")
    assert bad_interval.returncode == 2


@pytest.mark.slow
def test_cli_replay_with_the_real_model_is_byte_identical_across_runs(tmp_path: Path) -> None:
    recording = tmp_path / "demo.jsonl.gz"
    write_demo_recording(recording, minutes=120)
    outs = []
    for tag in ("one", "two"):
        signals = tmp_path / f"{tag}.jsonl"
        result = _cli("replay", str(recording), "--interval", "1m", "--signals-out", str(signals),
                      "--features-out", str(tmp_path / f"{tag}-f.jsonl"), "--no-progress")
        assert result.returncode == 0, result.stderr
        outs.append(signals.read_bytes())
    assert outs[0] == outs[1] and len(outs[0].splitlines()) > 200


def test_several_inputs_merge_in_time_order_with_ties_broken_by_input_order(tmp_path: Path) -> None:
    from adapters.files.source import merge_in_time_order

    for name in ("AAAUSDT", "BBBUSDT"):
        with (tmp_path / f"{name}_1m.csv").open("w") as handle:
            handle.write("timestamp,open,high,low,close,volume\n")
            for minute in range(3):
                handle.write(f"2025-01-01T00:0{minute}:00Z,1,2,0.5,1.5,3\n")
    sources = [KlineCsvSource(tmp_path / f"{n}_1m.csv") for n in ("AAAUSDT", "BBBUSDT")]
    merged = [(b.ts_init, b.symbol) for b in merge_in_time_order(sources)]
    assert merged == sorted(merged)
    assert [s for _, s in merged[:2]] == ["AAAUSDT", "BBBUSDT"]


def _kline_csv(path: Path, close0: float, rows: int = 30, step_ms: int = 60_000) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["start", "open", "high", "low", "close", "volume"])
        for i in range(rows):
            price = close0 + i
            writer.writerow([1_704_067_200_000 + i * step_ms, price, price + 1, price - 1, price, 10])
    return path


def test_replay_symbol_filters_files_instead_of_relabelling_them(tmp_path: Path) -> None:
    from adapters.files.config import FilesSettings
    from sigstream.modes.replay import open_sources

    btc = _kline_csv(tmp_path / "BTCUSDT_1m.csv", 100.0)
    eth = _kline_csv(tmp_path / "ETHUSDT_1m.csv", 2_000.0)
    sources = open_sources([btc, eth], [], symbol="BTCUSDT", interval=None, files=FilesSettings())
    assert [s.symbol for s in sources] == ["BTCUSDT", "ETHUSDT"]  # type: ignore[attr-defined]
    _, _, outputs = _replay_sources(sources, tmp_path, symbol="BTCUSDT")
    features = [orjson.loads(line) for line in outputs.features.read_bytes().splitlines()]
    assert {f["symbol"] for f in features} == {"BTCUSDT"}
    assert [f["close"] for f in features] == [100.0 + i for i in range(30)]  # no ETH price in BTC's stream
    # A file whose name states no pair is named by --symbol.
    plain = _kline_csv(tmp_path / "prices.csv", 5.0)
    (named,) = open_sources([plain], [], symbol="SOLUSDT", interval=None, files=FilesSettings())
    assert named.symbol == "SOLUSDT"  # type: ignore[attr-defined]


def _replay_sources(sources, tmp: Path, symbol=None):
    outputs = ReplayOutputs(tmp / "s-features.jsonl", tmp / "s-signals.jsonl", tmp / "s-dead.jsonl")
    report, dead = asyncio.run(run_replay(sources, LexiconSentimentModel(), EngineSettings(interval=Interval.M1),
                                          outputs, symbol=symbol, progress=False))
    return report, dead, outputs


def test_an_interval_that_contradicts_the_csv_is_refused(tmp_path: Path) -> None:
    one_minute = _kline_csv(tmp_path / "BTCUSDT_1m.csv", 100.0)
    with pytest.raises(InvalidInput, match="holds 1m bars but --interval is 5m; pass --interval 1m"):
        KlineCsvSource(one_minute, interval=Interval.M5)
    assert KlineCsvSource(one_minute, interval=Interval.M1).interval == Interval.M1


def test_a_recordings_interval_is_read_from_its_kline_topics(tmp_path: Path) -> None:
    from sigstream.modes.replay import resolve_interval

    recording = tmp_path / "btc5m.jsonl"
    with RecordingWriter(recording) as writer:
        for i in range(3):
            bar = Bar("BTCUSDT", Interval.M5, i * 300_000, 1.0, 2.0, 0.5, 1.5, 10.0, (i + 1) * 300_000, 0)
            writer.write_frame(kline_frame(bar, "BTCUSDT", Interval.M5), bar.ts_event)
    source = RecordingSource(recording)
    assert source.interval == Interval.M5
    assert resolve_interval([source], None, Interval.M1) == Interval.M5  # not the 1m default, which uses no bar
    report, _, _ = _replay([recording], tmp_path, "m5", interval=Interval.M5)
    assert report.engine.bars == 3 and report.engine.bars_other_interval == 0


def test_a_resent_kline_is_skipped_and_a_bar_with_bad_prices_is_dead_lettered(tmp_path: Path) -> None:
    recording = tmp_path / "resent.jsonl"
    bars = [Bar("BTCUSDT", Interval.M1, i * 60_000, 10.0, 11.0, 9.0, 10.5, 5.0, (i + 1) * 60_000, 0) for i in range(4)]
    zero = Bar("BTCUSDT", Interval.M1, 4 * 60_000, 0.0, 0.0, 0.0, 0.0, 5.0, 5 * 60_000, 0)
    with RecordingWriter(recording) as writer:
        for bar in [*bars[:3], bars[1], bars[3], zero]:  # bars[1] resent by the venue; then a zero-price bar
            writer.write_frame(kline_frame(bar, "BTCUSDT", Interval.M1), bar.ts_event + 1)
    report, _, outputs = _replay([recording], tmp_path, "resent")
    assert report.engine.bars == 4 and report.engine.bars_stale == 1
    letters = [orjson.loads(line) for line in outputs.dead_letters.read_bytes().splitlines()]
    assert len(letters) == 1 and "inconsistent bar" in letters[0]["reason"]


def test_a_bad_news_row_keeps_the_news_stream_in_time_order(tmp_path: Path) -> None:
    from adapters.files.source import NewsCsvSource

    path = tmp_path / "news.csv"
    path.write_text(
        "date;sentiment;source;subject;text;title;url\n"
        "1-1-2024 00:09;{};x;bitcoin;late row without a title;;http://a\n"
        "1-1-2024 00:02;{};x;bitcoin;body;Bitcoin rallies;http://b\n"
    )
    items = list(NewsCsvSource(path).items())
    assert [type(i).__name__ for i in items] == ["NewsItem", "DeadLetter"]
    assert [i.ts_init for i in items] == sorted(i.ts_init for i in items)
