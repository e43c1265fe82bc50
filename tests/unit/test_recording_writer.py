"""`run --record`'s writer is crash-safe: a killed process leaves a recording that replays up to its last line."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from adapters.files.source import RecordingSource
from engine.events import Bar, DeadLetter, NewsItem, Received
from tests.support.data import REPO_ROOT

WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from adapters.files.sink import RecordingWriter
    from engine.events import NewsItem, Received

    writer = RecordingWriter(Path(sys.argv[1]))
    for i in range(int(sys.argv[2])):
        start = 1_700_000_000_000 + i * 60_000
        frame = ('{"topic":"kline.1.BTCUSDT","type":"snapshot","ts":%d,"data":[{"start":%d,"end":%d,'
                 '"interval":"1","open":"1","close":"1.5","high":"2","low":"0.5","volume":"3","turnover":"4",'
                 '"confirm":true,"timestamp":%d}]}') % (start + 60_000, start, start + 59_999, start + 60_000)
        writer.record(Received("bybit", frame, (), start + 60_001))
        writer.record(NewsItem(f"n{i}", "t", f"Bitcoin story {i}", "", (), (), "", start + 60_002, start + 60_003))
    print("written", flush=True)
    time.sleep(60)  # killed here, never closing the file
    """
)


@pytest.mark.parametrize("name", ["live.jsonl", "live.jsonl.gz"])
def test_a_killed_recorder_leaves_every_line_it_wrote_readable(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), "25"], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "written"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    time.sleep(0.1)
    items = list(RecordingSource(path).items())
    bars = [i for i in items if isinstance(i, Bar)]
    news = [i for i in items if isinstance(i, NewsItem)]
    dead = [i for i in items if isinstance(i, DeadLetter)]
    assert len(bars) == 25 and len(news) == 25
    assert [b.start for b in bars] == [1_700_000_000_000 + i * 60_000 for i in range(25)]
    if name.endswith(".gz"):
        # gzip's end marker was never written: the replay says where the file was cut, and loses nothing before.
        assert len(dead) == 1 and "ends mid-stream after line 50" in dead[0].reason
    else:
        assert dead == []


def test_a_frame_that_is_not_json_is_recorded_as_text_and_replays_as_a_dead_letter(tmp_path: Path) -> None:
    from adapters.files.sink import RecordingWriter

    path = tmp_path / "bad.jsonl"
    with RecordingWriter(path) as writer:
        writer.record(Received("bybit", '{"topic": "kline.1.BTC', (), 5))
    [dead] = list(RecordingSource(path).items())
    assert isinstance(dead, DeadLetter) and dead.line == 1 and dead.ts_init == 5
