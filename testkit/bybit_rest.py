"""A real local HTTP server answering the Bybit v5 REST market endpoints ccxt's bybit client calls:

* ``GET /v5/market/instruments-info`` - what ``load_markets`` asks for (category, status, limit, cursor);
* ``GET /v5/market/kline``            - what ``fetch_ohlcv`` asks for (category, symbol, interval, start,
  end, limit); rows newest first, numbers as strings, like Bybit;
* ``GET /v5/market/time``             - server time, for clients that sync clocks.

Responses use Bybit's envelope ``{"retCode", "retMsg", "result", "retExtInfo", "time"}``; an unknown
symbol gets ``retCode`` 10001, as on Bybit. :func:`synthetic_bars` makes a deterministic series to serve.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from adapters.bybit.parsing import bybit_interval
from engine.events import Bar, Interval


@dataclass
class RestLog:
    paths: list[str] = field(default_factory=list)
    queries: list[dict[str, str]] = field(default_factory=list)


def _instrument(symbol: str, quote: str = "USDT") -> dict[str, Any]:
    base = symbol.removesuffix(quote)
    return {
        "symbol": symbol,
        "contractType": "LinearPerpetual",
        "status": "Trading",
        "baseCoin": base,
        "quoteCoin": quote,
        "launchTime": "1585526400000",
        "deliveryTime": "0",
        "deliveryFeeRate": "",
        "priceScale": "2",
        "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
        "priceFilter": {"minPrice": "0.10", "maxPrice": "1999999.80", "tickSize": "0.10"},
        "lotSizeFilter": {
            "maxOrderQty": "1190.000",
            "minOrderQty": "0.001",
            "qtyStep": "0.001",
            "postOnlyMaxOrderQty": "1190.000",
            "maxMktOrderQty": "119.000",
            "minNotionalValue": "5",
        },
        "unifiedMarginTrade": True,
        "fundingInterval": 480,
        "settleCoin": quote,
        "copyTrading": "both",
        "upperFundingRate": "0.005",
        "lowerFundingRate": "-0.005",
    }


def _envelope(result: dict[str, Any], code: int = 0, msg: str = "OK") -> dict[str, Any]:
    return {"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": int(time.time() * 1000)}


class BybitRestServer:
    """Serves klines for the symbols given; use as an async context manager; ``url`` is the base."""

    def __init__(
        self, bars: Iterable[Bar] = (), *, host: str = "127.0.0.1", port: int = 0, category: str = "linear"
    ) -> None:
        self.host = host
        self.port = port
        self.category = category
        self.log = RestLog()
        self.fail_next: int = 0  # answer this many requests with HTTP 503 (fault tests)
        self._bars: dict[tuple[str, str], list[Bar]] = {}
        self._runner: web.AppRunner | None = None
        self.add_bars(bars)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def add_bars(self, bars: Iterable[Bar]) -> None:
        for bar in bars:
            self._bars.setdefault((bar.symbol, bybit_interval(bar.interval)), []).append(bar)
        for series in self._bars.values():
            series.sort(key=lambda b: b.start)

    @property
    def symbols(self) -> list[str]:
        return sorted({symbol for symbol, _ in self._bars})

    async def start(self) -> None:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/v5/market/instruments-info", self._instruments)
        app.router.add_get("/v5/market/kline", self._kline)
        app.router.add_get("/v5/market/time", self._time)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> BybitRestServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.log.paths.append(request.path)
        self.log.queries.append(dict(request.query))
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=503, text="service unavailable (fault injected)")
        response: web.StreamResponse = await handler(request)
        return response

    async def _instruments(self, request: web.Request) -> web.Response:
        category = request.query.get("category", "")
        listed = (
            [_instrument(s) for s in self.symbols]
            if category == self.category and request.query.get("status") != "PreLaunch"
            else []
        )
        return web.json_response(_envelope({"category": category, "list": listed, "nextPageCursor": ""}))

    async def _kline(self, request: web.Request) -> web.Response:
        query = request.query
        symbol = query.get("symbol", "")
        interval = query.get("interval", "")
        series = self._bars.get((symbol, interval))
        if series is None:
            return web.json_response(_envelope({}, 10001, "params error: symbol invalid"))
        try:
            limit = min(int(query.get("limit", "200")), 1000)
            start = int(query["start"]) if "start" in query else None
            end = int(query["end"]) if "end" in query else None
        except ValueError:
            return web.json_response(_envelope({}, 10001, "params error"))
        chosen = [b for b in series if (start is None or b.start >= start) and (end is None or b.start <= end)]
        chosen = chosen[:limit] if start is not None else chosen[-limit:]
        rows = [
            [
                str(b.start),
                repr(b.open),
                repr(b.high),
                repr(b.low),
                repr(b.close),
                repr(b.volume),
                repr(b.volume * b.close),
            ]
            for b in reversed(chosen)  # Bybit lists newest first
        ]
        return web.json_response(_envelope({"symbol": symbol, "category": self.category, "list": rows}))

    async def _time(self, request: web.Request) -> web.Response:
        now_ns = time.time_ns()
        return web.json_response(_envelope({"timeSecond": str(now_ns // 1_000_000_000), "timeNano": str(now_ns)}))


def synthetic_bars(symbol: str, interval: Interval, start: int, count: int) -> list[Bar]:
    """A simple deterministic series for tests and demos."""
    bars = []
    for i in range(count):
        close = 100.0 + i * 0.5 + (i % 3) * 0.25
        bars.append(
            Bar(
                symbol,
                interval,
                start + i * interval.ms,
                close - 0.3,
                close + 0.6,
                close - 0.7,
                close,
                10.0 + i,
                start + (i + 1) * interval.ms,
                0,
            )
        )
    return bars
