"""`sigstream run`: flags override the environment's settings, and both are validated."""

from __future__ import annotations

import pytest

from engine.errors import InvalidInput
from engine.events import Interval
from sigstream.commands.run import run_settings
from sigstream.settings import load_settings


def test_environment_settings_are_used_when_no_flag_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGSTREAM_BYBIT__SYMBOLS", "BTCUSDT,ETHUSDT")
    monkeypatch.setenv("SIGSTREAM_BYBIT__INTERVAL", "5m")
    monkeypatch.setenv("SIGSTREAM_RSS__FEEDS", "http://a.example/rss")
    monkeypatch.setenv("SIGSTREAM_CCXT__LIMIT", "500")
    settings = run_settings(load_settings(), ["bybit", "rss"])
    assert settings.bybit.symbols == settings.ccxt.symbols == ("BTCUSDT", "ETHUSDT")
    assert settings.bybit.interval == settings.engine.interval == settings.ccxt.interval == Interval.M5
    assert settings.rss.feeds == ("http://a.example/rss",)
    assert settings.ccxt.limit == 500


def test_flags_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGSTREAM_BYBIT__SYMBOLS", "BTCUSDT,ETHUSDT")
    settings = run_settings(
        load_settings(), ["bybit", "rss"], symbols="solusdt", interval=Interval.H1, feeds=["http://b/atom"], backfill=50
    )
    assert settings.bybit.symbols == ("SOLUSDT",)
    assert settings.engine.interval == Interval.H1
    assert settings.rss.feeds == ("http://b/atom",)
    assert settings.ccxt.limit == 50


@pytest.mark.parametrize(
    ("kwargs", "env", "message"),
    [
        ({"symbols": ","}, {}, "--symbols: no symbol given"),
        ({}, {"SIGSTREAM_RSS__FEEDS": ""}, "needs a feed"),
        ({"backfill": 5000}, {}, "--limit"),
    ],
)
def test_unusable_combinations_are_clear_errors(
    monkeypatch: pytest.MonkeyPatch, kwargs: dict, env: dict, message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(InvalidInput, match=message):
        run_settings(load_settings(), ["bybit", "rss"], **kwargs)
