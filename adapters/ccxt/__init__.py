"""ccxt REST backfill of recent OHLCV (Bybit by default), plus a local Bybit REST server for tests."""
