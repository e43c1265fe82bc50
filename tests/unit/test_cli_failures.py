"""Every error a user can cause: exit status 2, one line on stderr that names the file or setting, and no output
that looks complete when it is not (outputs are written as NAME.partial and renamed only on success)."""

from __future__ import annotations

import csv
import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapters.bybit.frames import kline_frame
from adapters.files.sink import RecordingWriter
from engine.bars import closed_bar
from engine.events import Interval, NewsItem
from tests.support.data import REPO_ROOT

LEXICON = "tests.support.lexicon_model:LexiconSentimentModel"
PACED = "tests.support.lexicon_model:PacedLexiconSentimentModel"
T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sigstream.cli", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )  # fmt: skip


def one_line_exit_2(proc: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines[0]
    for text in expected:
        assert text in lines[0]
    assert "Traceback" not in proc.stderr and "╭" not in proc.stderr
    return lines[0]


def write_recording(path: Path, bars: int = 60, news_every: int = 10) -> Path:
    with RecordingWriter(path) as writer:
        for i in range(bars):
            price = 100.0 + i
            bar = closed_bar("BTCUSDT", Interval.M1, T0 + i * 60_000, (price, price + 1, price - 1, price + 0.5, 10.0))
            writer.write_frame(kline_frame(bar, "BTCUSDT", Interval.M1), bar.ts_event)
            if i % news_every == 0:
                ts = bar.ts_event + 1
                writer.write_news(NewsItem(f"n{i}", "t", f"Bitcoin surges {i}", "", ("BTCUSDT",), (), "", ts, ts))
    return path


def write_klines(path: Path, rows: int = 40, columns: tuple[str, ...] = ("open", "high", "low", "close", "volume"),
                 ) -> Path:
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["timestamp", *columns])
        for i in range(rows):
            minute = T0 // 1000 + i * 60
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(minute))
            price = 100.0 + i
            values = {"open": price, "high": price + 1, "low": price - 1, "close": price + 0.5, "volume": 10.0}
            out.writerow([stamp, *[values[c] for c in columns]])
    return path


def test_a_truncated_gzip_recording_is_exit_2_and_its_outputs_stay_partial(tmp_path: Path) -> None:
    whole = write_recording(tmp_path / "whole.jsonl.gz", bars=400)
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    signals = tmp_path / "signals.jsonl"
    line = one_line_exit_2(
        cli("replay", str(cut), "--model", LEXICON, "--signals-out", str(signals), "--no-progress"),
        str(cut), "ends mid-stream", "--allow-truncated", "signals.jsonl.partial",
    )
    assert not signals.exists()
    assert (tmp_path / "signals.jsonl.partial").stat().st_size > 0, line
    # A killed `run --record` is replayed up to the cut when asked; then the output gets its name.
    accepted = cli("replay", str(cut), "--model", LEXICON, "--signals-out", str(signals), "--no-progress",
                   "--allow-truncated")
    assert accepted.returncode == 0, accepted.stderr
    assert signals.stat().st_size > 0 and not (tmp_path / "signals.jsonl.partial").exists()


def test_a_gz_file_that_is_not_gzip_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    fake = tmp_path / "fake.jsonl.gz"
    fake.write_text('{"ts_init": 1, "source": "bybit", "data": {}}\n')
    signals = tmp_path / "s.jsonl"
    one_line_exit_2(cli("replay", str(fake), "--model", LEXICON, "--signals-out", str(signals), "--no-progress"),
                    str(fake), "not a readable gzip file")
    assert list(tmp_path.iterdir()) == [fake]  # no output file, no empty .partial


def test_a_cut_gzip_kline_csv_is_exit_2_naming_it(tmp_path: Path) -> None:
    plain = write_klines(tmp_path / "BTCUSDT_1m.csv", rows=3000)
    packed = tmp_path / "BTCUSDT_1m.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes(), mtime=0)[:20_000])
    features = tmp_path / "f.jsonl"
    one_line_exit_2(cli("replay", str(packed), "--features-out", str(features), "--no-progress"),
                    str(packed), "ends mid-stream", "f.jsonl.partial")
    assert not features.exists()


def test_an_unknown_sigstream_variable_is_named_with_the_closest_setting(tmp_path: Path) -> None:
    klines = write_klines(tmp_path / "BTCUSDT_1m.csv")
    one_line_exit_2(
        cli("replay", str(klines), "--no-progress", env={"SIGSTREAM_ENGINE__AGGREGATOR__THRESHOLDX": "0.8"}),
        "SIGSTREAM_ENGINE__AGGREGATOR__THRESHOLDX names no setting",
        "did you mean SIGSTREAM_ENGINE__AGGREGATOR__THRESHOLD?",
    )


def test_a_bad_flag_value_is_one_line_not_a_box(tmp_path: Path) -> None:
    klines = write_klines(tmp_path / "BTCUSDT_1m.csv")
    one_line_exit_2(cli("replay", str(klines), "--interval", "2m"), "--interval", "'2m'", "sigstream replay --help")
    one_line_exit_2(cli("replay", str(klines), "--no-such-flag"), "--no-such-flag")
    one_line_exit_2(cli("record", "convert"), "Missing argument", "sigstream record convert --help")


def test_an_unknown_symbol_is_an_error_naming_it(tmp_path: Path) -> None:
    klines = write_klines(tmp_path / "BTCUSDT_1m.csv")
    one_line_exit_2(cli("replay", str(klines), "--symbol", "FOOUSDT"), "--symbol FOOUSDT", "BTCUSDT")
    # A recording's symbols are known only once it is read: the replay runs, finds nothing, and keeps no output.
    recording = write_recording(tmp_path / "rec.jsonl")
    signals = tmp_path / "s.jsonl"
    one_line_exit_2(cli("replay", str(recording), "--symbol", "FOOUSDT", "--model", LEXICON, "--no-progress",
                        "--signals-out", str(signals)), "--symbol FOOUSDT", "no bar or signal of FOOUSDT")
    assert not signals.exists() and not (tmp_path / "s.jsonl.partial").exists()


def test_record_convert_that_fails_leaves_no_file(tmp_path: Path) -> None:
    no_volume = write_klines(tmp_path / "BTCUSDT_1m.csv", columns=("open", "high", "low", "close"))
    out = tmp_path / "out.jsonl.gz"
    one_line_exit_2(cli("record", "convert", str(no_volume), str(out)), "missing column(s) volume",
                    f"{out} was not written")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["BTCUSDT_1m.csv"]
    good = cli("record", "convert", str(write_klines(tmp_path / "ETHUSDT_1m.csv")), str(out))
    assert good.returncode == 0, good.stderr
    assert out.stat().st_size > 0 and not (tmp_path / "out.jsonl.gz.partial").exists()


def test_a_malformed_websocket_url_fails_before_anything_loads() -> None:
    one_line_exit_2(cli("run", "--bybit-url", "ws//127.0.0.1:9"), "--bybit-url", "ws:// or wss://")
    one_line_exit_2(cli("run", "--bybit-url", "ws://127.0.0.1:99999"), "--bybit-url", "not a valid URL")
    one_line_exit_2(cli("run", "--sources", "rss", "--feed", "ftp://x/rss"), "--feed", "http:// or https://")
    one_line_exit_2(cli("worker", "--kafka", "localhost"), "--kafka 'localhost'", "host:port")
    one_line_exit_2(cli("worker", "--kafka", "127.0.0.1:9092", "--redis", "http://127.0.0.1:6379"), "--redis",
                    "redis://")


def test_a_bad_model_spec_fails_before_the_replay(tmp_path: Path) -> None:
    klines = write_klines(tmp_path / "BTCUSDT_1m.csv")
    one_line_exit_2(cli("replay", str(klines), "--model", "no_such_module:make"), "--model", "no_such_module")
    one_line_exit_2(cli("replay", str(klines), "--model", "./no/such/adapter"), "./no/such/adapter does not exist")


@pytest.mark.parametrize("busy", ["klines", "paced news"])
def test_ctrl_c_during_replay_says_the_outputs_are_partial(tmp_path: Path, busy: str) -> None:
    # Klines alone never wait on anything (Ctrl-C must still stop them at once); paced scoring (2 ms a text) of
    # 4,000 news items waits on the model's thread. Either keeps the replay busy for seconds: Ctrl-C lands mid-run.
    if busy == "klines":
        inputs, model = [write_klines(tmp_path / "BTCUSDT_1m.csv", rows=150_000)], []
    else:
        inputs, model = [write_recording(tmp_path / "rec.jsonl", bars=4000, news_every=1)], ["--model", PACED]
    signals = tmp_path / "s.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sigstream.cli", "replay", *map(str, inputs), *model, "--no-progress",
         "--signals-out", str(signals)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "SIGSTREAM_ENGINE__BATCHER__MAX_BATCH": "8"},
    )  # fmt: skip
    partial = tmp_path / "s.jsonl.partial"
    deadline = time.monotonic() + 60
    while not (partial.exists() and partial.stat().st_size) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == f"interrupted: outputs are partial, left as {partial}", err
    assert "Traceback" not in err
    assert partial.stat().st_size > 0 and not signals.exists()


@pytest.mark.parametrize("bad", ["missing", "not toml", "unknown key"])
def test_a_bad_config_file_is_one_line(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "sigstream.toml"
    if bad == "not toml":
        path.write_text("[engine\nthreshold = 1\n")
    elif bad == "unknown key":
        path.write_text("[engine.aggregator]\nthresholdx = 0.8\n")
    expected = {"missing": "no such file", "not toml": "not a readable TOML file",
                "unknown key": "'engine.aggregator.thresholdx' names no setting"}[bad]
    one_line_exit_2(cli("config", "show", "--config", str(path)), str(path), expected)
