"""deploy/grafana/sigstream.json queries only what the worker exports: every PromQL expression is parsed and each
metric name and label it uses is looked up in the worker's own registry, filled by a real StreamProcessor."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from adapters.kafka.app import RawRecord, StreamProcessor
from adapters.kafka.config import KafkaSettings
from engine.batcher import MicroBatcher
from engine.config import EngineSettings
from sigstream.modes.worker import worker_metrics
from tests.support.lexicon_model import LexiconSentimentModel
from tests.unit.test_kafka_ordering import committed_at_start, noop_ack, recording, stamp

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "sigstream.json"
# Labels Prometheus itself attaches to every scraped series (target labels), and histogram buckets' ``le``.
TARGET_LABELS = {"instance", "job", "namespace", "pod", "container", "le"}
# Grafana's variables, replaced by what Grafana would put there before the query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h", "$instance": ".*"}


async def exported() -> dict[str, set[str]]:
    """Sample name -> label names, as the worker's /metrics shows them after it processed a little of everything
    (records held for their turn, news scored, a dead letter, a lag reading)."""
    settings = KafkaSettings(partitions=2)
    market, news = stamp(recording(6), settings)

    async def send(topic: str, key: bytes | None, value: bytes) -> None:
        return None

    registry, metrics = worker_metrics(settings, lambda: processor, lambda: batcher)
    batcher = MicroBatcher(metrics.timed(LexiconSentimentModel()))
    processor = StreamProcessor(EngineSettings(), batcher, send, settings, start_offset=committed_at_start)
    processor.observe(metrics)
    for record in [*market[1], *news[1], RawRecord(settings.topics.market_raw, 0, 0, b"X", b"{bad")]:
        await processor.on_record(record, noop_ack)
    await processor.tick()
    metrics.set_lags({(settings.topics.market_raw, 1): 0})
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target (rows included) and every query variable."""

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} target {target['refId']}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
            assert match, f"variable {variable['name']}: unexpected query {query!r}"
            yield f"variable {variable['name']!r}", match.group(1)


def selectors(node: Any) -> Iterator[tuple[str, set[str]]]:
    """(metric name, label names used) of every vector selector in a parsed expression, with the labels of
    ``by``/``without`` clauses and of vector matching attributed to every selector below them."""
    if isinstance(node, promql_parser.VectorSelector):
        labels = {m.name for m in node.matchers.matchers}
        names = [node.name] if node.name else [m.value for m in node.matchers.matchers if m.name == "__name__"]
        for name in names:
            yield name, labels - {"__name__"}
        return
    extra: set[str] = set()
    modifier = getattr(node, "modifier", None)
    if isinstance(node, promql_parser.AggregateExpr) and modifier is not None:
        extra = set(modifier.labels)
    for child in (getattr(node, attr, None) for attr in ("expr", "lhs", "rhs", "vector_selector", "param")):
        if child is not None and not isinstance(child, str | int | float):
            for name, labels in selectors(child):
                yield name, labels | extra
    for arg in getattr(node, "args", None) or []:
        for name, labels in selectors(arg):
            yield name, labels | extra


def prepared(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
    return expr


def test_dashboard_is_a_grafana_dashboard_with_queries() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    assert len(list(expressions(dashboard))) >= 20


async def test_every_metric_and_label_the_dashboard_queries_is_exported_by_the_worker() -> None:
    names = await exported()
    dashboard = json.loads(DASHBOARD.read_text())
    used: set[str] = set()
    for where, expr in expressions(dashboard):
        tree = promql_parser.parse(prepared(expr))
        found = list(selectors(tree))
        assert found, f"{where}: no metric in {expr!r}"
        for name, labels in found:
            used.add(name)
            assert name in names, f"{where}: {name} is not exported by the worker (it exports {sorted(names)})"
            unknown = labels - names[name] - TARGET_LABELS
            assert not unknown, f"{where}: {name} has no label(s) {sorted(unknown)}"
    # The list: records in, signals out, dead letters by reason, lag per partition, batch sizes,
    # model latency, ordering waits; each is on the dashboard.
    for name in ("sigstream_records_in_total", "sigstream_signals_out_total", "sigstream_dead_letters_total",
                 "sigstream_consumer_lag", "sigstream_model_batch_size_bucket",
                 "sigstream_model_latency_seconds_bucket", "sigstream_ordering_wait_seconds_bucket"):
        assert name in used, f"the dashboard does not show {name}"


def test_a_misspelled_metric_is_caught() -> None:
    # The walk above must see a name inside functions, aggregations and binary operators.
    tree = promql_parser.parse(
        "histogram_quantile(0.9, sum by (le) (rate(sigstream_model_latency_secs_bucket[1m]))) / on() sigstream_x"
    )
    assert {name for name, _ in selectors(tree)} == {"sigstream_model_latency_secs_bucket", "sigstream_x"}


@pytest.mark.parametrize("expr", ["sum(rate(x[1m])) by (nope)", 'y{reason="a"}'])
def test_labels_in_selectors_and_by_clauses_are_collected(expr: str) -> None:
    labels = set().union(*(labels for _, labels in selectors(promql_parser.parse(expr))))
    assert labels & {"nope", "reason"}
