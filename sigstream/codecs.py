"""Registers every venue's frame codec for the shared transports (see :mod:`engine.codecs`)."""

import adapters.bybit.codec  # noqa: F401 - importing it registers Bybit's codec
