"""Bybit v5 public websocket: settings, frame parsing, local order book, client, tick source, test server."""
