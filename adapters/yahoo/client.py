"""The raw protocol: yfinance's ``Ticker.history`` (Yahoo's v8 chart API), optionally routed to another host."""

from __future__ import annotations

import importlib
from datetime import date
from typing import Any
from urllib.parse import urlsplit

from adapters.yahoo.config import YahooSettings
from engine.errors import FatalError, InvalidInput, TransientError


def _yfinance() -> Any:
    try:
        return importlib.import_module("yfinance")
    except ModuleNotFoundError:
        raise FatalError("Yahoo Finance prices need yfinance: pip install 'yfinance>=1.7'") from None


def routed_session(base_url: str) -> Any:
    """A curl_cffi session (the one yfinance uses) that sends every ``*.yahoo.com`` request to ``base_url``,
    path and query unchanged; yfinance's cookie, crumb and chart requests all go there."""
    from curl_cffi import requests as curl_requests

    target = urlsplit(base_url.rstrip("/"))

    class _RoutedSession(curl_requests.Session):  # type: ignore[misc]  # curl_cffi ships no type stubs here
        def request(self, method: Any, url: str, *args: Any, **kwargs: Any) -> Any:
            parts = urlsplit(url)
            if parts.hostname and parts.hostname.endswith("yahoo.com"):
                url = parts._replace(scheme=target.scheme, netloc=target.netloc).geturl()
            return super().request(method, url, *args, **kwargs)

    return _RoutedSession()


class YahooClient:
    """Daily history of one ticker as yfinance returns it (a pandas DataFrame)."""

    def __init__(self, settings: YahooSettings | None = None) -> None:
        self.settings = settings or YahooSettings()
        self._yf = _yfinance()
        if self.settings.cache_dir:
            self._yf.set_tz_cache_location(self.settings.cache_dir)
        self._session = routed_session(self.settings.base_url) if self.settings.base_url else None

    def history(self, ticker: str, start: date, end: date) -> Any:
        """``Ticker(ticker).history(start, end, interval="1d")``; ``end`` is exclusive, as in yfinance.

        Raises:
            InvalidInput: Yahoo does not know the ticker (HTTP 404/400).
            TransientError: the request failed (network, rate limit); retrying may help.
        """
        yf = self._yf
        yf.config.debug.hide_exceptions = False  # a failed request raises, instead of an empty frame and a log line
        try:
            frame = yf.Ticker(ticker, session=self._session).history(
                start=start.isoformat(), end=end.isoformat(), interval="1d", auto_adjust=self.settings.auto_adjust,
                actions=False, timeout=self.settings.timeout_s,
            )
        except yf.exceptions.YFRateLimitError as exc:
            raise TransientError(f"Yahoo rate limit for {ticker}: {exc}") from exc
        except yf.exceptions.YFException:
            raise  # a bad ticker or range: the caller reports it as bad input
        except OSError as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status in (400, 404):  # Yahoo's answer for a ticker or range it does not know
                raise InvalidInput(f"Yahoo has no {ticker}: {exc}") from None
            raise TransientError(f"Yahoo request for {ticker} failed: {exc}") from exc
        except ValueError as exc:  # a body that is not the JSON Yahoo sends (an outage page, a cut connection)
            raise TransientError(f"Yahoo's answer for {ticker} could not be read: {exc}") from exc
        return frame
