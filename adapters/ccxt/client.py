"""The ccxt async exchange client, pointed at configurable URLs, with ccxt errors mapped to ours."""

from __future__ import annotations

from typing import Any

from adapters.ccxt.config import CcxtSettings
from engine.errors import FatalError, InvalidInput, MissingDependency, TransientError

# The API URL keys ccxt's bybit client builds requests from.
_URL_KEYS = ("spot", "futures", "v2", "public", "private")


class CcxtClient:
    """Thin wrapper: ``load_markets`` and ``fetch_ohlcv``, named as ccxt names them."""

    def __init__(self, settings: CcxtSettings) -> None:
        self.settings = settings
        self._exchange: Any = None

    def _get_exchange(self) -> Any:
        if self._exchange is None:
            try:
                import ccxt.async_support as ccxt_async  # heavy: imported only when a backfill runs
            except ImportError as exc:
                raise MissingDependency("ccxt", "OHLCV backfill") from exc
            factory = getattr(ccxt_async, self.settings.exchange, None)
            if factory is None:
                raise FatalError(f"ccxt has no exchange {self.settings.exchange!r}")
            exchange = factory(
                {
                    "timeout": self.settings.timeout_ms,
                    "enableRateLimit": True,
                    # Only the category we backfill: load_markets then costs one endpoint, not four.
                    "options": {"fetchMarkets": {"types": [self.settings.category]}},
                }
            )
            if self.settings.rest_url:
                exchange.urls["api"] = dict.fromkeys(_URL_KEYS, self.settings.rest_url.rstrip("/"))
            self._exchange = exchange
        return self._exchange

    async def load_markets(self) -> dict[str, Any]:
        return await self._call("load_markets")

    def unified_symbol(self, symbol_id: str) -> str:
        """``BTCUSDT`` -> ccxt's ``BTC/USDT:USDT`` (markets must be loaded)."""
        exchange = self._get_exchange()
        try:
            return str(exchange.market(symbol_id)["symbol"])
        except Exception as exc:  # ccxt.BadSymbol; ccxt is imported lazily so name it by its base
            raise InvalidInput(f"{self.settings.exchange}: unknown symbol {symbol_id!r}: {exc}") from exc

    async def fetch_ohlcv(self, symbol: str, timeframe: str, limit: int) -> list[list[Any]]:
        return await self._call("fetch_ohlcv", symbol, timeframe, None, limit)

    async def close(self) -> None:
        if self._exchange is not None:
            await self._exchange.close()
            self._exchange = None

    async def _call(self, method: str, *args: Any) -> Any:
        import ccxt  # its error classes, imported lazily like the client

        exchange = self._get_exchange()
        try:
            return await getattr(exchange, method)(*args)
        except ccxt.NetworkError as exc:  # timeouts, DDoS protection, 5xx, connection refused
            raise TransientError(f"{self.settings.exchange} {method}: {type(exc).__name__}: {exc}") from exc
        except (ccxt.BadSymbol, ccxt.BadRequest) as exc:
            raise InvalidInput(f"{self.settings.exchange} {method}: {exc}") from exc
        except ccxt.ExchangeError as exc:
            raise FatalError(f"{self.settings.exchange} {method}: {type(exc).__name__}: {exc}") from exc
