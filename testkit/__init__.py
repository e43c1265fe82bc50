"""Test kit: real local servers that speak the external protocols sigstream talks to.

Nothing here is production code. These are the servers the tests, demos and fault drills run
against in place of the real venues:

* :mod:`testkit.bybit_ws`   - Bybit v5 public websocket (subscribe/ping like Bybit, replay of a
  recording or kline CSV, faults on command: drop, stall, malformed, sequence gaps);
* :mod:`testkit.rss_http`   - an RSS 2.0 / Atom feed over HTTP with ETag and Last-Modified;
* :mod:`testkit.bybit_rest` - the Bybit v5 REST market endpoints ccxt's backfill calls, plus
  :func:`testkit.bybit_rest.synthetic_bars`.

From the command line: ``sigstream testserver bybit ...`` and ``sigstream testserver rss ...``
(``sigstream testserver --help``).

Layering: the test kit may import ``engine`` and ``adapters`` (to build frames the way the adapters
parse them); ``engine`` and ``adapters`` never import the test kit.
"""
