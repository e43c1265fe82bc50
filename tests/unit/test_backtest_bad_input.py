"""Bad input to a backtest is either a clear error or counted in the report, never silently wrong."""

from __future__ import annotations

import asyncio
import csv
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from adapters.bybit.frames import kline_frame
from adapters.files.config import FilesSettings
from adapters.files.sink import RecordingWriter
from engine.backtest import BacktestResult, BacktestSettings
from engine.config import AggregatorSettings, EngineSettings
from engine.errors import InvalidInput
from engine.events import Interval, Signal
from sigstream.modes.backtest import engine_settings_for, open_backtest_sources, run_backtest_files
from sigstream.settings import validated
from tests.support.backtest import DAY, MECHANICS_PRIOR, SYMBOL, T0, backtest, bar, daily_bars, headline, in_time_order
from tests.support.data import REPO_ROOT
from tests.support.lexicon_model import LexiconSentimentModel

NEWS_HEADER = ["date", "sentiment", "source", "subject", "text", "title", "url"]


def _day(i: int) -> str:
    return f"2022-01-{i + 1:02d}T00:00:00Z"


def _write_prices(path: Path, days: list[int], closes: dict[int, float] | None = None) -> Path:
    closes = closes or {}
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "open", "high", "low", "close", "volume"])
        for i in days:
            close = closes.get(i, 100.0 + i)
            writer.writerow([_day(i), 100.0 + i, close + 5, min(close, 100.0 + i) - 5, close, 1.0])
    return path


def _write_news(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    """rows: (date as d-m-Y H:M, subject, title)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter=";")
        writer.writerow(NEWS_HEADER)
        for number, (date, subject, title) in enumerate(rows):
            writer.writerow([date, "{}", "Test", subject, "", title, f"https://news.test/{number}"])
    return path


def _run_files(prices: Path, news: Path, interval: Interval = Interval.D1, **kw: object) -> BacktestResult:
    sources = open_backtest_sources(prices, news, symbol=SYMBOL, interval=interval, files=FilesSettings())
    base = EngineSettings(aggregator=AggregatorSettings(prior_strength=MECHANICS_PRIOR))
    settings = engine_settings_for(base, interval, 0.7)
    return asyncio.run(
        run_backtest_files(
            sources, LexiconSentimentModel(), settings, BacktestSettings(), symbol=SYMBOL, progress=False, **kw
        )
    )


@pytest.fixture
def news_csv(tmp_path: Path) -> Path:
    return _write_news(tmp_path / "news.csv", [("2-1-2022 12:00", "bitcoin", "Bitcoin surges to a record")])


def test_out_of_order_price_row_is_dead_lettered_and_leaves_a_counted_gap(tmp_path: Path, news_csv: Path) -> None:
    prices = _write_prices(tmp_path / "BTCUSDT_1d.csv", [0, 1, 2, 4, 3, 5, 6])
    dead = tmp_path / "dead.jsonl"
    result = _run_files(prices, news_csv, dead_letters=dead)
    data = result.to_dict()["data"]
    assert data["dead_letters_by_source"] == {str(prices): 1}
    assert data["dead_letter_reasons"] == {"out-of-order bar start # after #": 1}
    (letter,) = [orjson.loads(line) for line in dead.read_bytes().splitlines()]
    assert letter["line"] == 6 and letter["reason"] == f"out-of-order bar start {T0 + 3 * DAY} after {T0 + 4 * DAY}"
    assert (data["bars_missing"], data["gaps"]) == (1, 1)
    assert [p.ts for p in result.points] == [T0 + (i + 1) * DAY for i in (0, 1, 2, 4, 5, 6)]


def test_duplicate_timestamp_keeps_the_first_row_and_counts_the_second(tmp_path: Path, news_csv: Path) -> None:
    prices = tmp_path / "BTCUSDT_1d.csv"
    _write_prices(prices, [0, 1, 2, 3])
    with prices.open("a", newline="") as handle:  # day 3 again, with a different close
        csv.writer(handle).writerow([_day(3), 103.0, 999.0, 90.0, 999.0, 1.0])
    result = _run_files(prices, news_csv)
    assert result.quality.dead_letter_reasons == {"duplicate bar start # after #": 1}
    assert [p.close for p in result.points] == [100.0, 101.0, 102.0, 103.0]


def test_missing_bars_are_counted_and_the_fill_waits_for_the_next_real_open(tmp_path: Path) -> None:
    prices = _write_prices(tmp_path / "BTCUSDT_1d.csv", [0, 1, 2, 6, 7])  # days 3-5 missing
    news = _write_news(tmp_path / "news.csv", [("3-1-2022 12:00", "bitcoin", "Bitcoin surges to a record")])
    result = _run_files(prices, news)
    data = result.to_dict()["data"]
    assert (data["bars_missing"], data["gaps"]) == (3, 1)
    (fill,) = result.fills
    assert fill.decided_at == T0 + 3 * DAY  # close of day 2
    assert fill.ts == T0 + 6 * DAY and fill.reference_price == 106.0  # open of day 6, the next bar there is


def test_news_without_a_symbol_is_counted_and_never_trades(tmp_path: Path) -> None:
    prices = _write_prices(tmp_path / "BTCUSDT_1d.csv", list(range(5)))
    news = _write_news(
        tmp_path / "news.csv",
        [
            ("2-1-2022 12:00", "nft", "Markets surge to a record as stocks rally"),  # names no coin
            ("2-1-2022 13:00", "ethereum", "Ether surges to a record"),  # another symbol
            ("3-1-2022 13:00", "bitcoin", ""),  # no title at all
        ],
    )
    result = _run_files(prices, news)
    data = result.to_dict()["data"]
    assert (data["news"], data["news_without_symbol"], data["news_scored"]) == (2, 2, 0)
    assert data["dead_letter_reasons"] == {"news row has no title": 1}
    assert {d.signal for d in result.decisions} == {Signal.HOLD} and result.fills == []


def test_duplicate_and_out_of_order_bars_in_a_recording_are_dead_lettered_by_the_backtest(tmp_path: Path) -> None:
    recording = tmp_path / "prices.jsonl"
    bars = daily_bars([100, 101, 102, 103], [101, 102, 103, 104])
    with RecordingWriter(recording) as writer:
        for b in [bars[0], bars[1], bars[1], bars[3], bars[2]]:
            writer.write_frame(kline_frame(b, SYMBOL, Interval.D1), b.ts_init)
    news = _write_news(tmp_path / "news.csv", [("2-1-2022 12:00", "bitcoin", "Bitcoin surges")])
    result = _run_files(recording, news)
    assert result.quality.dead_letters_by_source == {f"backtest:{SYMBOL}": 2}
    assert result.quality.dead_letter_reasons == {
        "duplicate bar start # after #": 1,
        "out-of-order bar start # after #": 1,
    }
    assert len(result.points) == 3 and result.quality.missing_bars == 1


def test_bars_of_the_wrong_interval_are_an_error_not_a_wrong_backtest(tmp_path: Path, news_csv: Path) -> None:
    hourly = tmp_path / "BTCUSDT_1h.csv"
    with hourly.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "open", "high", "low", "close", "volume"])
        for hour in range(30):
            writer.writerow([T0 + hour * 3_600_000, 100, 101, 99, 100, 1])
    with pytest.raises(InvalidInput, match="holds 1h bars but --interval is 1d; pass --interval 1h"):
        _run_files(hourly, news_csv)
    # And in memory, where no file can be inspected, overlapping bars stop the run.
    overlapping = [bar(T0, 100, 100), bar(T0 + 3_600_000, 100, 100)]
    with pytest.raises(InvalidInput, match="overlaps the previous bar"):
        backtest(in_time_order(overlapping, []))


def test_reversed_prices_leave_too_few_bars_and_say_why(tmp_path: Path, news_csv: Path) -> None:
    prices = _write_prices(tmp_path / "BTCUSDT_1d.csv", [5, 4, 3, 2, 1])
    with pytest.raises(InvalidInput, match=r"at least 2 bars.*4 record\(s\) were rejected"):
        _run_files(prices, news_csv)


def test_inputs_that_are_not_what_their_option_says_are_rejected(tmp_path: Path, news_csv: Path) -> None:
    prices = _write_prices(tmp_path / "ETHUSDT_1d.csv", list(range(5)))
    with pytest.raises(InvalidInput, match="looks like ETHUSDT but --symbol is BTCUSDT"):
        _run_files(prices, news_csv)
    with pytest.raises(InvalidInput, match="is a news CSV, not prices"):
        _run_files(news_csv, news_csv)
    with pytest.raises(InvalidInput, match="no such file"):
        _run_files(tmp_path / "missing.csv", news_csv)
    with pytest.raises(InvalidInput, match="--position-size"):
        validated(BacktestSettings, position_size=1.5)
    with pytest.raises(InvalidInput, match="--confidence-threshold"):
        engine_settings_for(EngineSettings(), Interval.D1, 1.2)


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--prices", "missing.csv"], "error: --prices missing.csv: no such file"),
        (["--prices", "{news}", "--position-size", "0"], "error: --position-size: Input should be greater than 0"),
        (["--prices", "{news}", "--start", "yesterday"], "error: --start: not an epoch-ms or ISO-8601 timestamp"),
    ],
)
def test_cli_exits_2_with_a_one_line_reason(tmp_path: Path, news_csv: Path, args: list[str], reason: str) -> None:
    args = [a.replace("{news}", str(news_csv)) for a in args]
    done = subprocess.run(
        [sys.executable, "-m", "sigstream.cli", "backtest", *args, "--news", str(news_csv), "--symbol", SYMBOL],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(REPO_ROOT)},
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith(reason) and len(done.stderr.strip().splitlines()) == 1


def test_news_before_the_window_is_skipped_unscored_and_counted() -> None:
    bars = daily_bars([100] * 10, [100] * 10)
    news = [headline(T0 + DAY, "Bitcoin surges"), headline(T0 + 7 * DAY + 1, "Bitcoin surges")]
    result = backtest(in_time_order(bars, news), start_ms=T0 + 8 * DAY)
    assert result.quality.news_before_window == 1 and result.quality.warmup_bars == 8
    assert result.replay.engine.sentiment_scores == 1
    assert [d.ts for d in result.decisions] == [T0 + 9 * DAY, T0 + 10 * DAY]
