"""The live dashboard page in a real headless browser (Debian's chromium, driven by Playwright).

Each test opens the page, publishes a signal after it loaded, and waits for the page to show it: in the
price chart (a marker) and in the list of latest signals. Any console error or uncaught page error fails it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from adapters.web.config import DashboardSettings
from adapters.web.server import DashboardServer
from adapters.web.sink import DashboardSink
from adapters.web.state import DashboardState
from engine.config import EngineSettings
from engine.events import Bar, CompositeSignal, Features, Interval, NewsItem, SentimentScore
from engine.pipeline import SignalEngine
from engine.serialization import encode_event, signal_record

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
REPO = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000_000


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed by the project's script when missing (fails, never skips, without it)."""
    proc = subprocess.run([str(REPO / "scripts" / "install-chromium.sh")], capture_output=True, text=True,
                          timeout=900, check=False)
    if proc.returncode != 0:
        pytest.fail(f"scripts/install-chromium.sh failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return next(line.split("=", 1)[1] for line in proc.stdout.splitlines() if line.startswith("CHROMIUM="))


@contextlib.asynccontextmanager
async def page_at(chromium: str, url: str) -> AsyncIterator[tuple[object, list[str]]]:
    """A page opened at ``url``, and the console errors and page errors it has logged so far."""
    from playwright.async_api import async_playwright

    errors: list[str] = []
    async with async_playwright() as playwright:
        # --no-sandbox: the suite runs as root in CI containers, where chromium's sandbox cannot start.
        browser = await playwright.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = await browser.new_page()
            page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
            await page.goto(url)
            yield page, errors
        finally:
            await browser.close()


def bars(symbol: str, n: int) -> list[Bar]:
    out = []
    for i in range(n):
        start = T0 + i * 60_000
        price = 100.0 + (i % 7) - (i % 3) * 0.5
        out.append(Bar(symbol, Interval.M1, start, price, price + 1, price - 1, price, 5.0, start + 60_000,
                       start + 60_005))
    return out


def engine_outputs(symbol: str, n: int) -> tuple[list[Features], list[CompositeSignal]]:
    """Real features and bar-close signals from the engine for ``n`` bars of ``symbol``."""
    engine = SignalEngine(EngineSettings(interval=Interval.M1))
    features, signals = [], []
    for bar in bars(symbol, n):
        result = engine.on_bar(bar)
        if result is not None:
            features.append(result[0])
            signals.append(result[1])
    return features, signals


async def test_page_shows_a_signal_published_after_it_loaded_with_no_console_errors(chromium: str) -> None:
    state = DashboardState(DashboardSettings())
    server = await DashboardServer(DashboardSettings(port=0), state).start()
    sink = DashboardSink(state)
    features, signals = engine_outputs("BTCUSDT", 30)
    assert features and signals, "the engine gave no features or signals to show"
    for f in features[:-1]:
        await sink.publish(f)
    await sink.publish(signals[0])
    try:
        async with page_at(chromium, server.url) as (page, errors):
            await page.wait_for_selector('#status[data-status="live"]')
            # What was there before the page opened came with the snapshot.
            await page.wait_for_selector(f'svg [data-signal-id="{signals[0].id}"]', state="attached")
            assert await page.title() == "sigstream dashboard"
            # Now, live: a bar, a signal and a scored news item published while the page is open.
            latest = signals[-1]
            await sink.publish(features[-1])
            await sink.publish(latest)
            headline = "Bitcoin surges to a record"
            state.on_news(NewsItem("n-1", "test", headline, "", ("BTCUSDT",), (), "", latest.ts_event, latest.ts_init))
            await sink.publish(SentimentScore("n-1", ("BTCUSDT",), 0.05, 0.15, 0.8, "bullish", 0.8,
                                              latest.ts_event, latest.ts_init))
            await page.wait_for_selector(f'svg [data-signal-id="{latest.id}"]', state="attached")
            row = page.locator(f'#signals li[data-signal-id="{latest.id}"]')
            await row.wait_for()
            assert latest.signal.value in await row.inner_text()
            news = page.locator('#news li[data-news-id="n-1"]')
            await news.wait_for()
            assert headline in await news.inner_text() and "bullish 0.80" in await news.inner_text()
            card = page.locator('article[data-symbol="BTCUSDT"]')
            shown_rsi = await card.locator('td[data-feature="rsi_14"]').inner_text()
            assert shown_rsi == f"{features[-1].rsi_14:.4f}"  # the latest features, as the page formats them
            assert await card.locator("polyline.price-line").count() == 1
            await page.wait_for_timeout(300)  # let any late script error surface
            assert errors == []
    finally:
        await server.close()


async def test_dashboard_command_shows_a_signal_just_published_to_kafka(chromium: str, kafka_bootstrap: str,
                                                                        unique: str, tmp_path: Path) -> None:
    from adapters.kafka.client import ensure_topics, make_producer
    from tests.integration.streaming import env_for, settings_for

    settings = settings_for(kafka_bootstrap, unique)
    await ensure_topics(settings)
    features, signals = engine_outputs("ETHUSDT", 30)
    producer = make_producer(settings)
    await producer.start()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sigstream.cli", "dashboard", "--port", "0", cwd=REPO,
        env=env_for(settings, tmp_path), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stderr is not None
    stderr = asyncio.create_task(proc.stderr.read())  # drained all along, so the pipe never fills

    def log() -> str:
        return stderr.result().decode(errors="replace")[-3000:] if stderr.done() else "(still running)"

    try:
        for f in features:
            await producer.send_and_wait(settings.topics.market_bars, encode_event(f), key=f.symbol.encode())
        assert proc.stdout is not None
        url = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()
        assert url.startswith("http://"), f"first stdout line is not a URL: {url!r}\n{log()}"
        async with page_at(chromium, url) as (page, errors):
            await page.wait_for_selector('#status[data-status="live"]')
            await page.wait_for_selector('article[data-symbol="ETHUSDT"] polyline.price-line', state="attached")
            latest = signals[-1]
            await producer.send_and_wait(settings.topics.signals, orjson.dumps(signal_record(latest)),
                                         key=latest.symbol.encode())
            await page.wait_for_selector(f'svg [data-signal-id="{latest.id}"]', state="attached", timeout=30_000)
            await page.locator(f'#signals li[data-signal-id="{latest.id}"]').wait_for()
            await page.wait_for_timeout(300)
            assert errors == []
    finally:
        await producer.stop()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    await stderr
    assert proc.returncode == 0, log()


async def test_run_page_shows_the_runtimes_signals_and_scored_headlines(chromium: str) -> None:
    # What `sigstream run --dashboard-port` wires: the page's sink on the runtime, the arrivals tapped for headlines.
    from engine.batcher import MicroBatcher
    from engine.runtime import Runtime, RuntimeSinks
    from sigstream.modes.dashboard import page_for_run
    from sigstream.settings import Settings
    from tests.support.lexicon_model import LexiconSentimentModel

    settings = Settings().model_copy(update={"dashboard": DashboardSettings(port=0)})
    page_board = await page_for_run(settings)
    signals = []

    class Collect:
        count = 0

        def __init__(self, into: list) -> None:
            self.into = into

        async def publish(self, item) -> None:
            self.into.append(item)
            self.count += 1

        async def flush(self) -> None:
            return None

        async def close(self) -> None:
            return None

    dead: list = []

    sink = page_board.sink
    runtime = Runtime(SignalEngine(EngineSettings(interval=Interval.M1)), MicroBatcher(LexiconSentimentModel()),
                      RuntimeSinks(Collect(dead), signals=[sink, Collect(signals)], features=[sink], sentiment=[sink]))
    series = bars("SOLUSDT", 12)
    headline = "Solana rallies as volume climbs"

    async def arrivals():
        for bar in series[:6]:
            yield bar
        yield NewsItem("sol-1", "test", headline, "", ("SOLUSDT",), (), "", series[5].ts_init + 1,
                       series[5].ts_init + 1)
        for bar in series[6:]:
            yield bar

    try:
        async with page_at(chromium, page_board.server.url) as (page, errors):
            await page.wait_for_selector('#status[data-status="live"]')
            async for item in page_board.tap(arrivals()):
                await runtime.feed(item)
            await runtime.finish()
            news = page.locator('#news li[data-news-id="sol-1"]')
            await news.wait_for()
            assert headline in await news.inner_text() and "bullish" in await news.inner_text()
            news_signal = next(s for s in signals if s.cause == "news:sol-1")
            await page.wait_for_selector(f'svg [data-signal-id="{news_signal.id}"]', state="attached")
            await page.wait_for_selector(f'svg [data-signal-id="{signals[-1].id}"]', state="attached")
            await page.wait_for_timeout(300)
            assert errors == [] and dead == []
    finally:
        await page_board.close()
