"""Issue 5's equivalence contract, through the CLI as users run it: `sigstream replay --to-kafka` plus
`sigstream worker` put the same signals on signals.composite, per symbol and in order, as
`sigstream replay --signals-out` writes in-process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from adapters.kafka.client import ensure_topics
from sigstream.demo import write_demo_recording
from tests.integration.streaming import LEXICON, REPO, WorkerProcess, env_for, read_topic, settings_for, signal_records
from tests.support.data import shared_data_dir
from tests.support.schema import validate_signal

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _cli(args: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sigstream.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def _per_symbol(records: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for record in records:
        out.setdefault(record["symbol"], []).append(record)
    return out


async def test_kafka_run_gives_the_signals_of_in_process_replay(kafka_bootstrap: str, unique: str,
                                                                tmp_path: Path) -> None:
    recording = tmp_path / "demo.jsonl.gz"
    write_demo_recording(recording, minutes=240)
    settings = settings_for(kafka_bootstrap, unique)
    await ensure_topics(settings)
    env = env_for(settings, tmp_path / "faust")

    in_process = tmp_path / "signals.jsonl"
    result = _cli(["replay", str(recording), "--interval", "1m", "--model", LEXICON, "--signals-out",
                   str(in_process), "--no-progress"], env)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = [orjson.loads(line) for line in in_process.read_bytes().splitlines()]

    worker = WorkerProcess(settings, tmp_path / "worker")
    worker.start()
    try:
        published = _cli(["replay", str(recording), "--to-kafka", kafka_bootstrap, "--speed", "max"], env)
        assert published.returncode == 0, published.stderr[-3000:]
        records = await read_topic(settings, settings.topics.signals, count=len(expected), timeout_s=180)
        worker.assert_alive()
    finally:
        worker.stop()
    got = signal_records(records)
    assert len(got) == len(expected), worker.log()
    got_by, expected_by = _per_symbol(got), _per_symbol(expected)
    for symbol, want in expected_by.items():
        have = got_by.get(symbol, [])
        first = next((i for i, (a, b) in enumerate(zip(have, want, strict=False)) if a != b), None)
        assert first is None, f"{symbol} #{first}:\nkafka  {have[first]}\nreplay {want[first]}"
    assert got_by == expected_by
    assert any(s["num_sources"] > 0 for s in expected)


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_worker_on_default_serving_gives_replays_signals_on_the_shared_daily_data(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    # The promise as a user meets it: the shipped model on its default serving path (bf16 on a CPU with
    # native bf16), `sigstream worker --interval 1d` with no overrides, fed by `replay --to-kafka`.
    data = shared_data_dir()
    prices, news = data / "bybit" / "BTCUSDT_1d.csv", data / "news" / "cryptonews.csv"
    settings = settings_for(kafka_bootstrap, unique)
    await ensure_topics(settings)
    env = env_for(settings, tmp_path / "faust")

    in_process = tmp_path / "signals.jsonl"
    result = _cli(["replay", str(prices), "--news", str(news), "--interval", "1d", "--signals-out", str(in_process),
                   "--no-progress"], env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = [orjson.loads(line) for line in in_process.read_bytes().splitlines()]
    assert sum(1 for s in expected if s["cause"].startswith("news:")) > 1_000  # the model really ran

    worker = WorkerProcess(settings, tmp_path / "worker", model=None, args=("--interval", "1d"))
    worker.start()
    try:
        published = _cli(["replay", str(prices), "--news", str(news), "--to-kafka", kafka_bootstrap, "--speed", "max"],
                         env, timeout=600)
        assert published.returncode == 0, published.stderr[-3000:]
        records = await read_topic(settings, settings.topics.signals, count=len(expected), timeout_s=600)
        worker.assert_alive()
    finally:
        worker.stop()
    got = signal_records(records)
    for record in got[:50]:
        validate_signal(record)
    assert len(got) == len(expected), worker.log()
    got_by, expected_by = _per_symbol(got), _per_symbol(expected)
    assert got_by.keys() == expected_by.keys()
    for symbol, want in expected_by.items():
        have = got_by[symbol]
        assert [s["id"] for s in have] == [s["id"] for s in want], symbol
        assert [s["signal"] for s in have] == [s["signal"] for s in want], symbol
        worst = max(abs(a["confidence"] - b["confidence"]) for a, b in zip(have, want, strict=True))
        assert worst <= 1e-6, f"{symbol}: confidences differ by up to {worst}"
        assert [(s["num_sources"], s["actionable"], s["features"]) for s in have] == [
            (s["num_sources"], s["actionable"], s["features"]) for s in want
        ], symbol
