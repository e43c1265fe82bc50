"""``sigstream worker --metrics-port``: /metrics scraped while the worker processes records on a real broker."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.kafka.client import ensure_topics
from tests.integration.streaming import WorkerProcess, read_topic, settings_for, signal_records
from tests.integration.test_kafka_worker import produce_raw, publish, recording, replay_signals

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:  # not listening yet
        return 0, str(exc)


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_worker_metrics_are_scraped_while_it_processes_records(kafka_bootstrap, unique, tmp_path) -> None:
    settings = settings_for(kafka_bootstrap, unique)
    await ensure_topics(settings)
    port = free_port()
    items = recording(24)
    expected = await replay_signals(items)
    worker = WorkerProcess(
        settings, tmp_path / "worker", args=("--metrics-port", str(port)),
        extra_env={"SIGSTREAM_METRICS__LOG_INTERVAL_S": "1", "SIGSTREAM_METRICS__LAG_INTERVAL_S": "0.5"},
    )
    worker.start()
    base = f"http://127.0.0.1:{port}"
    scrapes: list[dict] = []
    stop = asyncio.Event()

    async def scrape_until_stopped() -> None:
        while not stop.is_set():
            status, body = await asyncio.to_thread(get, base + "/metrics")
            if status == 200:
                scrapes.append(parse(body))
            await asyncio.sleep(0.2)

    scraper = asyncio.create_task(scrape_until_stopped())
    try:
        for _ in range(300):  # the worker is ready once it has joined its consumer group
            if (await asyncio.to_thread(get, base + "/readyz"))[0] == 200:
                break
            worker.assert_alive()
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"/readyz never turned 200:\n{worker.log()}")
        assert (await asyncio.to_thread(get, base + "/healthz"))[0] == 200
        await produce_raw(settings, settings.topics.market_raw, [(b"BTCUSDT", b"{not json")])
        await publish(settings, items)
        got = signal_records(await read_topic(settings, settings.topics.signals, count=len(expected)))
        assert len(got) == len(expected), worker.log()
        # Wait for a scrape that has seen every signal and a lag reading after the last record.
        final: dict = {}
        for _ in range(100):
            final = parse((await asyncio.to_thread(get, base + "/metrics"))[1])
            lags = [v for (name, _), v in final.items() if name == "sigstream_consumer_lag"]
            if final.get(("sigstream_signals_out_total", ())) == len(expected) and lags and not any(lags):
                break
            await asyncio.sleep(0.2)
        worker.assert_alive()
    finally:
        stop.set()
        await scraper
        worker.stop()

    topics = settings.topics
    assert final[("sigstream_signals_out_total", ())] == len(expected)
    market_records = final[("sigstream_records_in_total", (("topic", topics.market_raw),))]
    assert market_records >= 1 + sum(1 for i in items if not hasattr(i, "headline"))  # + the bad one, + watermarks
    assert final[("sigstream_records_in_total", (("topic", topics.news_raw),))] >= 1
    assert final[("sigstream_dead_letters_total", (("reason", "malformed JSON"),))] == 1
    assert final[("sigstream_model_latency_seconds_count", ())] >= 1
    assert final[("sigstream_model_batch_size_sum", ())] >= final[("sigstream_model_batch_size_count", ())] >= 1
    lag_partitions = {dict(labels)["partition"] for (name, labels) in final if name == "sigstream_consumer_lag"}
    assert lag_partitions == {"0", "1", "2"}  # one worker owns all three partitions of each topic
    assert final[("sigstream_ordering_held", ())] == 0  # everything fed once both topics caught up
    # Scraped while records flowed: counters only grow from one scrape to the next.
    series = [s.get(("sigstream_signals_out_total", ()), 0.0) for s in scrapes]
    assert series == sorted(series) and len(set(series)) > 1
    assert "throughput over" in worker.log() and "records/s in" in worker.log()
