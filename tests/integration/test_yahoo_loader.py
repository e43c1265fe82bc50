"""The Yahoo Finance loader against a local HTTP server that answers like Yahoo: yfinance's own cookie, crumb and
v8 chart requests, and its own parser, on a recorded-shape chart response (tests/fixtures/yahoo)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from adapters.yahoo.config import YahooSettings
from adapters.yahoo.source import YahooFinanceLoader
from engine.errors import InvalidInput
from engine.events import Interval

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "yahoo" / "chart_SPY_1d.json"
NOT_FOUND = (b'{"chart":{"result":null,"error":{"code":"Not Found",'
             b'"description":"No data found, symbol may be delisted"}}}')


QUOTE_NOT_FOUND = (b'{"quoteSummary":{"result":null,"error":{"code":"Not Found",'
                   b'"description":"Quote not found for symbol: NOPE"}}}')


class _Yahoo(BaseHTTPRequestHandler):
    requests: list[tuple[str, dict[str, list[str]]]]

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        self.requests.append((parts.path, parse_qs(parts.query)))
        if parts.path == "/":  # fc.yahoo.com: sets the session cookie
            self._reply(404, b"", "text/html", cookie="A3=d=test-cookie; Path=/; Domain=127.0.0.1")
        elif parts.path == "/v1/test/getcrumb":
            self._reply(200, b"test-crumb", "text/plain")
        elif parts.path == "/v8/finance/chart/SPY":
            self._reply(200, FIXTURE.read_bytes(), "application/json")
        elif parts.path.startswith("/v8/finance/chart/"):
            self._reply(404, NOT_FOUND, "application/json")
        elif parts.path.startswith("/v10/finance/quoteSummary/"):  # yfinance's fallback for the time zone
            self._reply(404, QUOTE_NOT_FOUND, "application/json")
        else:
            self._reply(404, b'{"finance":{"result":null,"error":{"code":"Not Found","description":"Not Found"}}}',
                        "application/json")

    def _reply(self, status: int, body: bytes, kind: str, cookie: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        if cookie:
            self.send_header("Set-Cookie", cookie)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def yahoo_server() -> Iterator[tuple[str, list[tuple[str, dict[str, list[str]]]]]]:
    seen: list[tuple[str, dict[str, list[str]]]] = []
    handler = type("Handler", (_Yahoo,), {"requests": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def _loader(url: str, tmp_path: Path) -> YahooFinanceLoader:
    return YahooFinanceLoader(YahooSettings(base_url=url, cache_dir=str(tmp_path / "yf-cache"), timeout_s=5))


def test_daily_spy_bars_come_through_yfinance_from_the_chart_response(yahoo_server, tmp_path: Path) -> None:
    url, seen = yahoo_server
    loader = _loader(url, tmp_path)
    bars = loader.daily_bars("SPY", date(2024, 1, 2), date(2024, 1, 10))

    # Six sessions: the weekend is a gap, and the 9th, all null in the response, is dropped by yfinance itself.
    days = [datetime.fromtimestamp(b.start / 1000, tz=UTC).date().day for b in bars]
    assert days == [2, 3, 4, 5, 8, 10]
    assert all(b.symbol == "SPY" and b.interval is Interval.D1 and b.ts_event == b.start + 86_400_000 for b in bars)
    first = bars[0]
    # auto_adjust: yfinance scales OHLC by adjclose / close (0.98231 in the fixture); volume is untouched.
    assert first.close == pytest.approx(472.65 * 0.98231, rel=1e-4)
    assert first.open == pytest.approx(472.16 * 0.98231, rel=1e-4)
    assert first.volume == 123_623_700
    assert loader.dead_letters == []

    chart = [params for path, params in seen if path == "/v8/finance/chart/SPY"]
    assert chart and chart[-1]["interval"] == ["1d"]
    # yfinance asked for [start, end + 1 day) as epoch seconds at the exchange's midnight.
    assert int(chart[-1]["period1"][0]) == int(datetime(2024, 1, 2, 5, tzinfo=UTC).timestamp())
    assert int(chart[-1]["period2"][0]) == int(datetime(2024, 1, 11, 5, tzinfo=UTC).timestamp())
    assert any(path == "/v1/test/getcrumb" for path, _ in seen)  # the real client's crumb flow ran


def test_unadjusted_prices_are_the_raw_quotes(yahoo_server, tmp_path: Path) -> None:
    url, _ = yahoo_server
    settings = YahooSettings(base_url=url, cache_dir=str(tmp_path / "yf"), timeout_s=5, auto_adjust=False)
    bars = YahooFinanceLoader(settings).daily_bars("SPY", date(2024, 1, 2), date(2024, 1, 10))
    assert [b.close for b in bars] == [472.65, 468.79, 467.28, 467.92, 474.60, 476.36]
    assert (bars[-1].open, bars[-1].high, bars[-1].low) == (474.16, 477.45, 473.87)


def test_an_unknown_ticker_is_bad_input_with_yahoos_reason(yahoo_server, tmp_path: Path) -> None:
    url, _ = yahoo_server
    with pytest.raises(InvalidInput, match="NOPE"):
        _loader(url, tmp_path).daily_bars("NOPE", date(2024, 1, 2), date(2024, 1, 10))


def test_a_row_without_a_usable_price_is_rejected_with_its_reason() -> None:
    import pandas as pd

    from adapters.yahoo.parsing import bars_from_history

    index = pd.DatetimeIndex(["2024-01-02", "2024-01-03"]).tz_localize("America/New_York")
    frame = pd.DataFrame({"Open": [1.0, 0.0], "High": [2.0, 2.0], "Low": [0.5, 0.5], "Close": [1.5, float("nan")],
                          "Volume": [10, 10]}, index=index)
    bars, rejected = bars_from_history(frame, "SPY")
    assert [b.close for b in bars] == [1.5]
    assert bars[0].start == int(datetime(2024, 1, 2, tzinfo=UTC).timestamp() * 1000)  # the session's date, UTC
    (row,) = rejected
    assert "2024-01-03" in row.reason and "non-positive" in row.reason
