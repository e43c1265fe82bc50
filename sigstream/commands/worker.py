"""``sigstream worker``: the faust worker on real Kafka, with the Redis feature cache.

Flags win over the environment (``SIGSTREAM_KAFKA__BOOTSTRAP``, ``SIGSTREAM_REDIS__URL``, any
``SIGSTREAM_KAFKA__...`` / ``SIGSTREAM_REDIS__...`` / ``SIGSTREAM_ENGINE__...`` field): they are laid over the
one settings root (:func:`sigstream.settings.with_overrides`) and validated with it. Redis is used when a URL is
given (``--redis`` or ``SIGSTREAM_REDIS__URL``), never because of another ``SIGSTREAM_REDIS__*`` variable.
"""

from __future__ import annotations

import typer

from engine.events import Interval
from sigstream.modes.sentiment import with_model_flag
from sigstream.settings import Settings, check_bootstrap, check_url, flag, load_settings, with_overrides


def worker_settings(
    settings: Settings, *, kafka: str | None = None, redis: str | None = None, app_id: str | None = None,
    guarantee: str | None = None, partitions: int | None = None, interval: Interval | None = None,
    metrics_port: int | None = None,
) -> Settings:
    """``settings`` (from the environment) with ``worker``'s flags applied; flags win, None keeps the setting."""
    return with_overrides(
        settings,
        flag("--kafka", kafka.removeprefix("kafka://") if kafka else None, "kafka.bootstrap"),
        flag("--redis", redis, "redis.url"),
        flag("--app-id", app_id, "kafka.app_id"),
        flag("--processing-guarantee", guarantee, "kafka.processing_guarantee"),
        flag("--partitions", partitions, "kafka.partitions"),
        flag("--interval", interval, "engine.interval"),
        flag("--metrics-port", metrics_port, "metrics.port"),
    )


def register(app: typer.Typer) -> None:
    @app.command()
    def worker(
        kafka: str | None = typer.Option(
            None, "--kafka", help="Kafka bootstrap host:port (SIGSTREAM_KAFKA__BOOTSTRAP)."
        ),
        redis: str | None = typer.Option(
            None, "--redis", help="Redis URL for the feature cache (SIGSTREAM_REDIS__URL)."
        ),
        model: str | None = typer.Option(
            None, "--model", help="Sentiment model: an adapter folder or full model (path or hub id), or "
            "module:callable [default: the configured model and adapter]."
        ),
        app_id: str | None = typer.Option(None, "--app-id", help="faust app id = consumer group."),
        guarantee: str | None = typer.Option(
            None, "--processing-guarantee", help="at_least_once or exactly_once (Kafka transactions)."
        ),
        partitions: int | None = typer.Option(None, "--partitions", help="Partitions of topics created."),
        interval: Interval | None = typer.Option(
            None, "--interval", help="Bar interval features and decisions use [default: SIGSTREAM_ENGINE__INTERVAL, "
            "else 1m]; bars of any other interval are counted and not used."
        ),
        create_topics: bool = typer.Option(True, help="Create missing topics before starting."),
        loglevel: str = typer.Option("info", "--loglevel", help="faust log level: crit|error|warn|info|debug."),
        metrics_port: int | None = typer.Option(
            None, "--metrics-port", help="Serve Prometheus /metrics and the probes /healthz, /readyz on this port "
            "[default: SIGSTREAM_METRICS__PORT]."
        ),
    ) -> None:
        """Run the faust worker: market.raw + news.raw -> signals.composite (and market.bars, sentiment.scores)."""
        settings = worker_settings(
            load_settings(), kafka=kafka, redis=redis, app_id=app_id, guarantee=guarantee, partitions=partitions,
            interval=interval, metrics_port=metrics_port,
        )
        # Checked before the model and faust load: a typo fails in a second, with its name.
        check_bootstrap("--kafka" if kafka else "SIGSTREAM_KAFKA__BOOTSTRAP", settings.kafka.bootstrap)
        if settings.redis.url is not None:
            check_url("--redis" if redis else "SIGSTREAM_REDIS__URL", settings.redis.url, ("redis", "rediss", "unix"))
        settings, spec = with_model_flag(settings, model)
        from sigstream.modes.worker import serve

        serve(settings, spec, create_topics=create_topics, loglevel=loglevel)
