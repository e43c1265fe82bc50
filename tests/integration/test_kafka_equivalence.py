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
from engine.serialization import signal_record
from sigstream.demo import write_demo_recording
from tests.integration.streaming import LEXICON, REPO, WorkerProcess, decoded, env_for, read_topic, settings_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sigstream.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=240, check=False)


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
    got = [signal_record(s) for s in decoded(records)]
    assert len(got) == len(expected), worker.log()
    got_by, expected_by = _per_symbol(got), _per_symbol(expected)
    for symbol, want in expected_by.items():
        have = got_by.get(symbol, [])
        first = next((i for i, (a, b) in enumerate(zip(have, want, strict=False)) if a != b), None)
        assert first is None, f"{symbol} #{first}:\nkafka  {have[first]}\nreplay {want[first]}"
    assert got_by == expected_by
    assert any(s["num_sources"] > 0 for s in expected)
