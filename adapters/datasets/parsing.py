"""Raw dataset rows -> labelled examples. The only place label vocabularies are mapped."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.errors import InvalidInput
from engine.events import SENTIMENT_LABEL_INDEX

# Every vocabulary we accept (the engine's), mapped onto its (bearish, neutral, bullish) order.
LABEL_NAMES = SENTIMENT_LABEL_INDEX
# The financial-tweets set numbers its classes differently from the engine.
TFNS_CODES: dict[str, int] = {"0": 0, "1": 2, "2": 1}


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled text; ``label`` indexes :data:`engine.events.SENTIMENT_LABELS`."""

    text: str
    label: int
    ts: int | None = None  # epoch ms when the source has timestamps, for time-based splits


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row that could not be used, with its reason and 1-based line number."""

    source: str
    line: int
    reason: str
    raw: str


@dataclass(slots=True)
class LabelledSet:
    """Examples plus every rejected row (nothing is dropped silently)."""

    name: str
    examples: list[Example] = field(default_factory=list)
    bad_rows: list[BadRow] = field(default_factory=list)

    @property
    def texts(self) -> list[str]:
        return [e.text for e in self.examples]

    @property
    def labels(self) -> list[int]:
        return [e.label for e in self.examples]


def parse_label(raw: str) -> int:
    """Map a label word (bearish/neutral/bullish or negative/neutral/positive) to its index."""
    key = raw.strip().lower()
    try:
        return LABEL_NAMES[key]
    except KeyError:
        raise InvalidInput(f"unknown label {raw.strip()!r}") from None


def parse_tfns_label(raw: str) -> int:
    """Map the tweets set's numeric code (0=bearish, 1=bullish, 2=neutral) to the engine's index."""
    try:
        return TFNS_CODES[raw.strip()]
    except KeyError:
        raise InvalidInput(f"unknown tfns label code {raw.strip()!r} (expected 0, 1 or 2)") from None


def parse_text(raw: str) -> str:
    text = raw.strip()
    if not text:
        raise InvalidInput("empty text")
    return text


def parse_fpb_line(line: str) -> Example:
    """Parse one Financial PhraseBank line, ``sentence@label``; the label follows the last '@'."""
    sentence, sep, label = line.rstrip("\r\n").rpartition("@")
    if not sep:
        raise InvalidInput("no '@label' suffix")
    return Example(parse_text(sentence), parse_label(label))
