"""``sigstream bench --kafka``'s measurement code, run small against the real broker.

Figures are printed, never asserted; this checks that the bench measures what it says it does:
every published frame's bars come back, and every news item's signal is matched to its send.
"""

from __future__ import annotations

import math

from testkit.kafka_bench import LEXICON_MODEL, run_kafka_bench


async def test_kafka_bench_reports_rates_and_latencies_for_every_item(kafka_bootstrap: str) -> None:
    result = await run_kafka_bench(
        kafka_bootstrap, frames=5_000, frames_per_bar=250, news_rate=20.0, news_seconds=2.0, model=LEXICON_MODEL
    )
    assert result["bars"] == 5_000 // 250 - 1  # the last bar stays open
    assert result["frames_per_s"] > 0 and math.isfinite(result["frames_per_s"])
    assert result["news_sent"] == 40
    assert result["news_signals"] == result["news_sent"]
    assert 0 < result["latency_p50_ms"] <= result["latency_p99_ms"] <= result["latency_max_ms"]
