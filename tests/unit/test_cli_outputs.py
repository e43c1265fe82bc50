"""Replay's outputs are complete or marked partial, and a replay without news never loads the sentiment model."""

from __future__ import annotations

import asyncio
import csv
import time
from pathlib import Path

import pytest

from adapters.files.sink import JsonlFeatureSink, RecordingWriter
from adapters.files.source import detect_source
from engine.config import EngineSettings
from engine.errors import InvalidInput
from engine.events import Interval, NewsItem
from engine.runtime import RuntimeStats
from sigstream.modes.replay import ReplayOutputs, run_replay
from sigstream.modes.sentiment import LazySentimentModel, is_factory_spec

LEXICON = "tests.support.lexicon_model:LexiconSentimentModel"
T0 = 1_735_689_600_000


def _klines(path: Path, rows: int = 30) -> Path:
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["timestamp", "open", "high", "low", "close", "volume"])
        for i in range(rows):
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0 // 1000 + i * 60))
            out.writerow([stamp, 100 + i, 101 + i, 99 + i, 100.5 + i, 10])
    return path


def _replay(paths: list[Path], model: LazySentimentModel, outputs: ReplayOutputs, check=None) -> RuntimeStats:
    sources = [detect_source(p) for p in paths]
    report, _ = asyncio.run(run_replay(sources, model, EngineSettings(interval=Interval.M1), outputs, progress=False,
                                       check=check))
    return report


def test_a_replay_of_klines_alone_never_loads_the_model(tmp_path: Path) -> None:
    model = LazySentimentModel("no_such_module:never_called")  # loading it would fail loudly
    outputs = ReplayOutputs(features=tmp_path / "f.jsonl", signals=tmp_path / "s.jsonl")
    report = _replay([_klines(tmp_path / "BTCUSDT_1m.csv")], model, outputs)
    assert report.features == 30 and not model.loaded
    assert len((tmp_path / "f.jsonl").read_bytes().splitlines()) == 30
    assert not list(tmp_path.glob("*.partial")) and outputs.left_partial == []


def test_the_model_loads_at_the_first_news_item(tmp_path: Path) -> None:
    news = tmp_path / "news.jsonl"
    with RecordingWriter(news) as writer:
        writer.write_news(NewsItem("n1", "t", "Bitcoin surges", "", ("BTCUSDT",), (), "", T0 + 90_000, T0 + 90_000))
    model = LazySentimentModel(LEXICON)
    report = _replay([_klines(tmp_path / "BTCUSDT_1m.csv"), news], model, ReplayOutputs())
    assert model.loaded and report.engine.sentiment_scores == 1


def test_a_failed_check_leaves_the_outputs_partial_and_lists_them(tmp_path: Path) -> None:
    def refuse(report: RuntimeStats) -> None:
        raise InvalidInput("refused")

    outputs = ReplayOutputs(features=tmp_path / "f.jsonl", signals=tmp_path / "s.jsonl",
                            dead_letters=tmp_path / "d.jsonl")
    with pytest.raises(InvalidInput, match="refused"):
        _replay([_klines(tmp_path / "BTCUSDT_1m.csv")], LazySentimentModel(LEXICON), outputs, check=refuse)
    assert outputs.left_partial == [tmp_path / "f.jsonl.partial", tmp_path / "s.jsonl.partial"]  # no dead letter
    assert not (tmp_path / "f.jsonl").exists() and not (tmp_path / "d.jsonl.partial").exists()


@pytest.mark.parametrize("name", ["f.jsonl", "f.jsonl.gz"])
def test_a_staged_output_has_the_same_bytes_as_a_direct_one(tmp_path: Path, name: str) -> None:
    records = [{"symbol": "BTCUSDT", "i": i} for i in range(100)]
    direct, staged = tmp_path / "a" / name, tmp_path / "b" / name
    for path, stage in ((direct, False), (staged, True)):
        sink = JsonlFeatureSink(path, staged=stage)
        for record in records:
            sink.write(record)
        assert sink.written_to.exists() and (not stage or not path.exists())
        sink.commit()
    assert direct.read_bytes() == staged.read_bytes()
    assert not list(staged.parent.glob("*.partial"))


def test_model_specs_tell_a_factory_from_a_path() -> None:
    assert is_factory_spec(LEXICON)
    assert is_factory_spec("adapters.model.classifier:load_sentiment_model")
    for path in ("runs/lora", "./adapter", "/abs/model", "ProsusAI/finbert", "C:model/x", "a:b/c"):
        assert not is_factory_spec(path), path


def test_the_cli_starts_without_the_heavy_libraries() -> None:
    import subprocess
    import sys

    from tests.support.data import REPO_ROOT

    heavy = ("torch", "transformers", "peft", "numpy", "pandas", "faust", "aiokafka", "redis", "ccxt", "aiohttp",
             "matplotlib", "websockets")  # fmt: skip
    probe = f"import sys, sigstream.cli; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == "", f"imported at start-up: {result.stdout.strip()}"
