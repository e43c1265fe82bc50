"""A deterministic keyword sentiment model for tests: a real SentimentModel, not a mock, and instant."""

from __future__ import annotations

import re
from collections.abc import Sequence

BULLISH = frozenset({"surge", "surges", "rally", "rallies", "gain", "gains", "record", "up", "soar", "soars",
                     "jump", "jumps", "bull", "bullish", "rise", "rises", "climb", "climbs", "beat", "beats"})
BEARISH = frozenset({"crash", "crashes", "plunge", "plunges", "drop", "drops", "ban", "bans", "hack", "hacked",
                     "fall", "falls", "bear", "bearish", "down", "slump", "slumps", "loss", "losses", "sell-off"})
_WORD = re.compile(r"[a-z\-]+")


class LexiconSentimentModel:
    """Counts bullish and bearish words; neutral-heavy when none match. Counts calls for batching tests."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def predict_proba(self, texts: Sequence[str]) -> list[tuple[float, float, float]]:
        self.calls.append(list(texts))
        out = []
        for text in texts:
            words = _WORD.findall(text.lower())
            bull = sum(w in BULLISH for w in words)
            bear = sum(w in BEARISH for w in words)
            raw = (0.1 + bear, 0.3 + 0.1 * (bull == bear == 0) * 10, 0.1 + bull)
            total = sum(raw)
            out.append((raw[0] / total, raw[1] / total, raw[2] / total))
        return out


class PacedLexiconSentimentModel(LexiconSentimentModel):
    """The lexicon model at a transformer's pace (2 ms a text), so fault tests can stop a worker mid-stream."""

    def predict_proba(self, texts: Sequence[str]) -> list[tuple[float, float, float]]:
        import time

        time.sleep(0.002 * len(texts))
        return super().predict_proba(texts)
