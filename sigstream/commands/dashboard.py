"""``sigstream dashboard``: the live page for a person watching the engine, fed from Kafka."""

from __future__ import annotations

import typer

from sigstream.settings import Settings, flag, load_settings, with_overrides


def dashboard_settings(
    settings: Settings, *, port: int | None = None, host: str | None = None, kafka: str | None = None
) -> Settings:
    """``settings`` with ``dashboard``'s flags applied; flags win, None keeps the setting."""
    return with_overrides(
        settings,
        flag("--port", port, "dashboard.port"),
        flag("--host", host, "dashboard.host"),
        flag("--kafka", kafka.removeprefix("kafka://") if kafka else None, "kafka.bootstrap"),
    )


def register(app: typer.Typer) -> None:
    @app.command()
    def dashboard(
        port: int | None = typer.Option(
            None, "--port", help="Port of the page [default: SIGSTREAM_DASHBOARD__PORT, else a free one]."
        ),
        host: str | None = typer.Option(
            None, "--host", help="Interface to bind [default: SIGSTREAM_DASHBOARD__HOST, else 127.0.0.1]."
        ),
        kafka: str | None = typer.Option(
            None, "--kafka", help="Kafka bootstrap host:port [default: SIGSTREAM_KAFKA__BOOTSTRAP]."
        ),
        duration: float | None = typer.Option(None, "--duration", min=0.1, help="Stop after this many seconds."),
    ) -> None:
        """Serve a live page: per symbol, price with signal markers, the latest features and recent news with
        their scores, from signals.composite, market.bars, sentiment.scores and news.raw.

        The first stdout line is the page's URL. The page updates live (server-sent events) and starts from each
        topic's recent records. For the in-process engine use `sigstream run --dashboard-port P` instead.

        Example: sigstream dashboard --kafka 127.0.0.1:9092 --port 8080
        """
        settings = dashboard_settings(load_settings(), port=port, host=host, kafka=kafka)
        from sigstream.modes.dashboard import main

        main(settings, duration)
