"""Map news to trading symbols: cashtags, names in the text, and the item's own tags."""

from __future__ import annotations

import re

from engine.config import SymbolMapSettings

_CASHTAG = re.compile(r"\$([A-Za-z]{2,10})\b")


class SymbolMapper:
    """``symbols_for`` returns the sorted, de-duplicated symbols a text and its tags mention."""

    def __init__(self, settings: SymbolMapSettings) -> None:
        self._names = settings.names
        self._quote = settings.quote.upper()
        self._known = set(self._names.values())
        # Longest names first so "ethereum" wins over "ether" inside the alternation. Short tickers
        # (ETH, DOT, SOL) only count in capitals: "dot" and "sol" are ordinary words.
        words = sorted((n for n in self._names if len(n) > 4), key=len, reverse=True)
        tickers = sorted((n.upper() for n in self._names if len(n) <= 4), key=len, reverse=True)
        self._patterns = [
            re.compile(r"\b(" + "|".join(map(re.escape, group)) + r")\b", flags)
            for group, flags in ((words, re.IGNORECASE), (tickers, 0))
            if group
        ]

    def symbols_for(self, text: str, tags: tuple[str, ...] = ()) -> tuple[str, ...]:
        found: set[str] = set()
        for tag in tags:
            symbol = self._names.get(tag.strip().lower())
            if symbol is None and tag.upper() in self._known:
                symbol = tag.upper()
            if symbol:
                found.add(symbol)
        for cashtag in _CASHTAG.findall(text):
            # Only cashtags of assets we trade: "$AAPL" in a tweet is not AAPLUSDT.
            symbol = self._names.get(cashtag.lower()) or f"{cashtag.upper()}{self._quote}"
            if symbol in self._known:
                found.add(symbol)
        for pattern in self._patterns:
            for name in pattern.findall(text):
                found.add(self._names[name.lower()])
        return tuple(sorted(found))
