"""The backtest study: folds, bootstrap intervals and p-values, and the report folder it writes."""

from __future__ import annotations

import asyncio
import csv
import itertools
import math
import random
import statistics
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from adapters.files.config import FilesSettings
from engine.backtest import BacktestSettings
from engine.backtest.stats import block_bootstrap_indices, sharpe_test
from engine.backtest.study import study_report, walk_forward_folds
from engine.config import AggregatorSettings, EngineSettings
from engine.errors import InvalidInput
from engine.events import Interval
from sigstream.modes.backtest import (
    open_study_sources,
    parse_policies,
    run_study_files,
    study_period,
    write_study_report,
)
from tests.support.backtest import MECHANICS_PRIOR
from tests.support.data import REPO_ROOT
from tests.support.lexicon_model import LexiconSentimentModel

DAY = 86_400_000


def test_walk_forward_folds_cover_the_period_at_bar_boundaries_without_overlap() -> None:
    folds = walk_forward_folds(0, 10 * DAY, 3, DAY)
    assert [(f.start_ms, f.end_ms) for f in folds] == [(0, 3 * DAY), (3 * DAY, 6 * DAY), (6 * DAY, 10 * DAY)]
    with pytest.raises(InvalidInput, match="too few"):
        walk_forward_folds(0, 3 * DAY, 2, DAY)


def test_bootstrap_sharpe_interval_brackets_the_sample_sharpe_and_matches_its_spread() -> None:
    rng = random.Random(3)
    returns = [rng.gauss(0.001, 0.02) for _ in range(400)]
    indices = block_bootstrap_indices(len(returns), 1000, 1.0, seed=1)
    test = sharpe_test(returns, 365.0, indices)
    sample = statistics.mean(returns) / statistics.stdev(returns) * math.sqrt(365)
    assert test.sharpe == pytest.approx(sample)
    assert test.ci_low < sample < test.ci_high
    # For iid returns the Sharpe's standard error is about sqrt((1 + SR^2 / 2) / n) per period (Lo, 2002).
    per_period = sample / math.sqrt(365)
    se = math.sqrt((1 + per_period**2 / 2) / len(returns)) * math.sqrt(365)
    assert (test.ci_high - test.ci_low) == pytest.approx(2 * 1.96 * se, rel=0.2)


def test_p_value_is_small_for_a_clearly_better_strategy_and_large_for_the_benchmark_itself() -> None:
    rng = random.Random(5)
    benchmark = [rng.gauss(0.0, 0.03) for _ in range(300)]
    better = [b * 0.1 + 0.004 + rng.gauss(0, 0.002) for b in benchmark]
    indices = block_bootstrap_indices(len(benchmark), 500, 5.0, seed=2)
    assert sharpe_test(better, 365.0, indices, benchmark=benchmark).p_value < 0.01
    same = sharpe_test(benchmark, 365.0, indices, benchmark=benchmark).p_value
    assert same is not None and same > 0.4
    flat = sharpe_test([0.0] * 300, 365.0, indices, benchmark=benchmark)
    assert flat.sharpe is None and flat.ci_low is None and flat.p_value is None  # never traded: undefined


def test_block_bootstrap_keeps_runs_of_consecutive_bars() -> None:
    (chunk,) = block_bootstrap_indices(1000, 1, 10.0, seed=4).chunks()
    idx = chunk[0].tolist()
    steps = sum(b == (a + 1) % 1000 for a, b in itertools.pairwise(idx))
    assert 0.85 < steps / 999 < 0.95  # a new block starts with probability 1/10


def test_policies_are_parsed_and_checked() -> None:
    assert parse_policies("buy_and_hold, Sentiment,sentiment") == ["buy_and_hold", "sentiment"]
    with pytest.raises(InvalidInput, match="unknown magic"):
        parse_policies("sentiment,magic")


def _prices(path: Path, start: int, n: int, drift: float, seed: int) -> Path:
    rng = random.Random(seed)
    price = 100.0
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "open", "high", "low", "close", "volume"])
        for i in range(n):
            close = price * (1 + drift + rng.gauss(0, 0.02))
            writer.writerow([start + i * DAY, price, max(price, close) * 1.01, min(price, close) * 0.99, close, 10])
            price = close
    return path


def _news(path: Path, start: int, n: int) -> Path:
    from datetime import UTC, datetime

    rng = random.Random(9)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter=";")
        writer.writerow(["date", "sentiment", "source", "subject", "text", "title", "url"])
        for i in range(n):
            for coin in ("Bitcoin", "Ethereum"):
                when = datetime.fromtimestamp((start + i * DAY + 3_600_000) / 1000, tz=UTC)
                title = f"{coin} {'surges to a record' if rng.random() < 0.6 else 'plunges after a hack'}"
                for k in range(2):
                    writer.writerow([f"{when.day}-{when.month}-{when.year} {when.hour:02d}:{k:02d}", "{}", "T",
                                     coin.lower(), "", f"{title} {k}", f"https://n/{i}/{coin}/{k}"])
    return path


def test_a_study_writes_every_symbol_and_policy_with_intervals_a_trade_log_and_a_png_per_symbol(
    tmp_path: Path,
) -> None:
    t0 = 1_640_995_200_000
    btc = _prices(tmp_path / "BTCUSDT_1d.csv", t0, 80, 0.004, 1)
    eth = _prices(tmp_path / "ETHUSDT_1d.csv", t0, 80, -0.003, 2)
    news = _news(tmp_path / "news.csv", t0 + 20 * DAY, 55)
    settings = EngineSettings(interval=Interval.D1, aggregator=AggregatorSettings(prior_strength=MECHANICS_PRIOR))
    sources = open_study_sources([btc, eth], news, symbols=["BTCUSDT", "ETHUSDT"], interval=Interval.D1,
                                 files=FilesSettings())
    start, end = study_period(sources, Interval.D1, None, None)
    assert start == t0 + 21 * DAY  # the first close after the first news
    folds = walk_forward_folds(start, end, 3, DAY)
    policies = ["buy_and_hold", "sentiment", "features", "composite"]
    runs = asyncio.run(run_study_files(sources, LexiconSentimentModel(), settings, BacktestSettings(),
                                       policies=policies, folds=folds, start_ms=start, end_ms=end, progress=False))
    report = study_report(runs, folds, resamples=200)
    assert report["symbols"] == ["BTCUSDT", "ETHUSDT"] and report["policies"] == policies
    for symbol in report["symbols"]:
        assert list(report["results"][symbol]) == policies
        for policy, r in report["results"][symbol].items():
            s = r["strategy"]
            assert r["policy"] == policy and len(r["folds"]) == 3
            if s["sharpe"] is not None:
                low, high = s["sharpe_ci"]
                assert low <= s["sharpe"] <= high and 0 < s["p_value_vs_buy_and_hold"] <= 1
    bh = report["results"]["BTCUSDT"]["buy_and_hold"]
    assert bh["strategy"]["exposure"] > 0.95 and bh["strategy"]["open_trades"] == 1
    # Buy and hold as a policy (10% of equity, entered at the second bar's open) tracks the benchmark's Sharpe.
    assert bh["strategy"]["sharpe"] == pytest.approx(bh["benchmark"]["sharpe"], rel=0.15)
    folder = tmp_path / "report"
    written = write_study_report(report, runs, folder)
    assert {p.name for p in written} == {"report.json", "summary.md", "trades.csv", "BTCUSDT.png", "ETHUSDT.png"}
    assert orjson.loads((folder / "report.json").read_bytes())["results"]["ETHUSDT"]["features"]["folds"]
    with (folder / "trades.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {r["policy"] for r in rows} >= {"buy_and_hold"} and {r["symbol"] for r in rows} == {"BTCUSDT", "ETHUSDT"}
    summary = (folder / "summary.md").read_text()
    assert "## BTCUSDT" in summary and "## ETHUSDT" in summary and "| composite |" in summary
    assert (folder / "BTCUSDT.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sigstream.cli", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, check=False)


def test_study_and_direction_bad_input_exits_2_with_one_line(tmp_path: Path) -> None:
    t0 = 1_640_995_200_000
    btc = _prices(tmp_path / "BTCUSDT_1d.csv", t0, 30, 0.0, 1)
    news = _news(tmp_path / "news.csv", t0, 10)
    cases = [
        (("backtest", "--prices", str(btc), "--news", str(news), "--symbols", "BTCUSDT", "--policies", "magic"),
         "error: --policies 'magic': unknown magic"),
        (("backtest", "--prices", str(btc), "--news", str(news), "--symbols", "BTCUSDT,ETHUSDT"),
         "error: --symbols ETHUSDT: no --prices file for it"),
        (("direction", "eval", "--prices", str(tmp_path / "nope.csv"), "--news", str(news)),
         "error: --prices"),
        (("direction", "eval", "--prices", str(btc), "--news", str(news), "--model", str(tmp_path)),
         "is not a direction model folder"),
    ]
    for args, expected in cases:
        done = _cli(*args)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and expected in lines[0], (args, done.stderr[-2000:])
