"""Load labelled sets from spec strings.

Specs:
    ``fpb[:50|66|75|all][:train|test]``  Financial PhraseBank at an agreement level; ``test`` is the fixed,
        seeded, stratified 20% held out of the default adapter's training, ``train`` the rest.
    ``tfns[:train|test|PATH]``  financial tweets, ``text,label`` with 0=bearish, 1=bullish, 2=neutral; ``test`` is
        a fixed, seeded, stratified 20% of ``sent_train.csv`` (like FPB's), ``train`` the rest.
    ``hub:DATASET_ID[:CONFIG]``  from the Hugging Face hub, needs the ``datasets`` package and a network.
    ``PATH.csv``  any CSV with ``text,label`` columns (bearish/neutral/bullish or negative/neutral/positive).
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import random
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path

from adapters.datasets.config import DatasetSettings
from adapters.datasets.parsing import (
    BadRow,
    Example,
    LabelledSet,
    parse_fpb_line,
    parse_label,
    parse_text,
    parse_tfns_label,
)
from engine.errors import InvalidInput, MissingDependency

log = logging.getLogger(__name__)

FPB_FILES: dict[str, str] = {
    "50": "Sentences_50Agree.txt",
    "66": "Sentences_66Agree.txt",
    "75": "Sentences_75Agree.txt",
    "all": "Sentences_AllAgree.txt",
}
FPB_SPLITS = ("train", "test")
TFNS_FILE = "twitter_financial_news/sent_train.csv"
CRYPTONEWS_FILE = "news/cryptonews.csv"
TIMESTAMP_COLUMNS = ("timestamp", "ts", "date", "published")


def read_text_file(path: Path) -> str:
    """Read UTF-8, falling back to latin-1: FPB ships latin-1 files, and some copies were re-encoded."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")  # -sig: a byte-order mark (Excel's CSVs) is not part of the header
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _stable_key(text: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{text}".encode()).hexdigest()


def stratified_split(
    examples: Sequence[Example], test_fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Split per class, seeded; duplicates of one text always land on the same side (no leakage).

    Returns:
        ``(train, test)`` in the input order.
    """
    first_label: dict[str, int] = {}
    for e in examples:
        first_label.setdefault(e.text, e.label)
    by_class: dict[int, list[str]] = {}
    for text, label in first_label.items():
        by_class.setdefault(label, []).append(text)
    test_texts: set[str] = set()
    rng = random.Random(seed)
    for label in sorted(by_class):
        texts = sorted(by_class[label], key=lambda t: _stable_key(t, seed))
        rng.shuffle(texts)
        test_texts.update(texts[: round(len(texts) * test_fraction)])
    train = [e for e in examples if e.text not in test_texts]
    test = [e for e in examples if e.text in test_texts]
    return train, test


def time_split(examples: Sequence[Example], test_fraction: float) -> tuple[list[Example], list[Example]]:
    """Oldest ``1 - test_fraction`` for training, newest for testing; every example needs ``ts``."""
    ordered = sorted(examples, key=lambda e: e.ts if e.ts is not None else 0)
    cut = len(ordered) - round(len(ordered) * test_fraction)
    test = ordered[cut:]
    # A text repeated before and after the cut would be trained on and then scored: keep it held out.
    held_out = {e.text for e in test}
    return [e for e in ordered[:cut] if e.text not in held_out], test


def split_examples(examples: Sequence[Example], test_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Time-based split when every example has a timestamp, else stratified."""
    if examples and all(e.ts is not None for e in examples):
        return time_split(examples, test_fraction)
    return stratified_split(examples, test_fraction, seed)


def _parse_lines(name: str, lines: Iterable[str], parse: Callable[[str], Example]) -> LabelledSet:
    out = LabelledSet(name)
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            out.bad_rows.append(BadRow(name, lineno, "empty line", line))
            continue
        try:
            out.examples.append(parse(line))
        except InvalidInput as exc:
            out.bad_rows.append(BadRow(name, lineno, exc.reason, line.rstrip("\r\n")))
    return out


def load_fpb(level: str, split: str | None, settings: DatasetSettings) -> LabelledSet:
    """Financial PhraseBank at ``level``; ``split`` selects the fixed held-out test part or the rest."""
    if level not in FPB_FILES:
        raise InvalidInput(f"unknown FPB agreement level {level!r}; use one of {', '.join(FPB_FILES)}")
    if split is not None and split not in FPB_SPLITS:
        raise InvalidInput(f"unknown FPB split {split!r}; use train or test")
    path = settings.data_dir / "financial_phrasebank" / FPB_FILES[level]
    data = _parse_lines(f"fpb:{level}", _read_lines(path), parse_fpb_line)
    if split is None:
        return data
    # The split is drawn once on 50Agree (the superset of every level), so a test sentence is held out
    # at every agreement level and fpb:all:test never overlaps fpb:50:train.
    superset = data if level == "50" else load_fpb("50", None, settings)
    _, test = stratified_split(superset.examples, settings.test_fraction, settings.split_seed)
    test_keys = {_cross_level_key(e.text) for e in test}
    keep_test = split == "test"
    data.name = f"fpb:{level}:{split}"
    data.examples = [e for e in data.examples if (_cross_level_key(e.text) in test_keys) == keep_test]
    return data


_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _cross_level_key(text: str) -> str:
    """A sentence's identity across FPB files: the shared 50Agree copy is UTF-8 with U+FFFD where the
    latin-1 files of the other levels have the letter ("+\ufffdland" vs "+\xe0land"), so non-ASCII
    characters compare equal."""
    return _NON_ASCII.sub("?", text)


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise InvalidInput(f"dataset file not found: {path} (set SIGSTREAM_DATA to the shared data dir)")
    return read_text_file(path).splitlines()


def _parse_ts(raw: str) -> int:
    raw = raw.strip()
    if raw.lstrip("-").isdigit():
        return int(raw)
    dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise InvalidInput(f"timestamp {raw!r} has no timezone")
    return int(dt.timestamp() * 1000)


def load_csv(path: Path, name: str, label_parser: Callable[[str], int] | None = None) -> LabelledSet:
    """A ``text,label`` CSV (header required); an optional timestamp column enables time-based splits.

    With no ``label_parser``, labels are words; a file whose labels are all the digits 0/1/2 is read with
    the financial-tweets coding (0=bearish, 1=bullish, 2=neutral), the only numeric coding the project's
    sources use, and that choice is logged.
    """
    if not path.is_file():
        raise InvalidInput(f"dataset file not found: {path}")
    reader = csv.reader(io.StringIO(read_text_file(path), newline=""))
    header = next(reader, None)
    if header is None:
        raise InvalidInput(f"{path}: empty file")
    columns = {c.strip().lower(): i for i, c in enumerate(header)}
    if "text" not in columns or "label" not in columns:
        raise InvalidInput(f"{path}: needs a header with 'text' and 'label' columns, got {header}")
    ti, li = columns["text"], columns["label"]
    tsi = next((columns[c] for c in TIMESTAMP_COLUMNS if c in columns), None)
    rows = list(reader)
    if label_parser is None:
        label_parser = label_parser_for({r[li].strip() for r in rows if len(r) > li}, str(path))
    out = LabelledSet(name)
    after_text = len(header) - ti - 1
    for lineno, row in enumerate(rows, start=2):
        raw = ",".join(row)
        if len(row) > len(header) and not any(field.strip() for field in row[len(header) :]):
            row = row[: len(header)]  # trailing empty fields (a trailing comma, as spreadsheets write)
        if len(row) > len(header):
            # An unquoted comma inside the text: every other column is a single field, so the columns
            # after the text are counted from the end and the text gets the fields in between.
            row = [*row[:ti], ",".join(row[ti : len(row) - after_text]), *row[len(row) - after_text :]]
        if len(row) <= max(ti, li, tsi or 0):
            out.bad_rows.append(BadRow(name, lineno, f"expected {len(header)} fields, got {len(row)}", raw))
            continue
        try:
            ts = _parse_ts(row[tsi]) if tsi is not None else None
            out.examples.append(Example(parse_text(row[ti]), label_parser(row[li]), ts))
        except (InvalidInput, ValueError) as exc:
            reason = exc.reason if isinstance(exc, InvalidInput) else f"bad timestamp: {exc}"
            out.bad_rows.append(BadRow(name, lineno, reason, raw))
    return out


def label_parser_for(labels: set[str], source: str) -> Callable[[str], int]:
    """Words, or, when the labels are digits 0/1/2 and no words, the financial-tweets coding (logged).

    Empty or unknown labels do not decide the coding: they are bad rows either way, and one of them
    must not turn every 0/1/2 row of a tweets file into a bad row.
    """
    given = {label.strip().lower() for label in labels if label.strip()}
    words = {label for label in given if label not in {"0", "1", "2"} and _is_label_word(label)}
    if given & {"0", "1", "2"} and not words:
        log.warning("%s: numeric labels read as the tweets coding 0=bearish 1=bullish 2=neutral", source)
        return parse_tfns_label
    return parse_label


def _is_label_word(label: str) -> bool:
    try:
        parse_label(label)
    except InvalidInput:
        return False
    return True


def load_hub(dataset_id: str, config: str | None) -> LabelledSet:
    """A labelled set from the Hugging Face hub (needs ``datasets`` and a network)."""
    try:
        import datasets
    except ModuleNotFoundError:
        # datasets 5 wants huggingface-hub 2, which would break transformers 5.17: name the working range.
        raise MissingDependency("datasets", f"loading {dataset_id} from the hub", install="'datasets>=4,<5'") from None
    ds = datasets.load_dataset(dataset_id, config, split="train")
    names = ds.features["label"].names if hasattr(ds.features["label"], "names") else None
    text_col = "text" if "text" in ds.column_names else "sentence"
    # Named classes (e.g. takala/financial_phrasebank) are words; bare 0/1/2 codes (the tweets set on the hub,
    # zeroshot/twitter-financial-news-sentiment) use the tweets coding, as in a local CSV.
    parse = parse_label if names else label_parser_for({str(v) for v in ds.unique("label")}, f"hub:{dataset_id}")
    out = LabelledSet(f"hub:{dataset_id}")
    for i, row in enumerate(ds, start=1):
        raw_label = names[row["label"]] if names else str(row["label"])
        try:
            out.examples.append(Example(parse_text(row[text_col]), parse(raw_label)))
        except InvalidInput as exc:
            out.bad_rows.append(BadRow(out.name, i, exc.reason, str(row)))
    return out


def load_spec(spec: str, settings: DatasetSettings | None = None) -> LabelledSet:
    """Load one labelled set from a spec string (see the module docstring).

    Raises:
        InvalidInput: unknown spec or missing file.
    """
    settings = settings or DatasetSettings()
    head, _, rest = spec.partition(":")
    match head.lower():
        case "fpb":
            parts = rest.split(":") if rest else []
            level = parts[0].lower() if parts else "50"
            split = parts[1].lower() if len(parts) > 1 else None
            if len(parts) > 2:
                raise InvalidInput(f"bad FPB spec {spec!r}; use fpb[:50|66|75|all][:train|test]")
            return load_fpb(level, split, settings)
        case "tfns":
            split = rest.lower() if rest.lower() in FPB_SPLITS else None
            path = Path(rest) if rest and split is None else settings.data_dir / TFNS_FILE
            data = load_csv(path, "tfns", label_parser=parse_tfns_label)
            if split is not None:
                train, test = stratified_split(data.examples, settings.test_fraction, settings.split_seed)
                data.name, data.examples = f"tfns:{split}", test if split == "test" else train
            return data
        case "hub":
            dataset_id, _, config = rest.partition(":")
            return load_hub(dataset_id, config or None)
        case _:
            path = Path(spec)
            if path.suffix.lower() != ".csv" and not path.is_file():
                raise InvalidInput(f"unknown data spec {spec!r}; use fpb[:level][:split], tfns, hub:ID or a CSV")
            return load_csv(path, path.name)


# The unlabelled crypto news specs and the column each reads: the headlines, or the one- or two-sentence summaries
# (the `text` column), which are written like FPB's sentences from financial news.
CRYPTONEWS_COLUMNS = {"cryptonews": "title", "cryptonews-text": "text"}


def load_unlabelled(spec: str, settings: DatasetSettings | None = None) -> list[str]:
    """In-domain texts without labels, for distillation: ``cryptonews[:PATH]`` (the shared crypto headlines,
    ``;``-separated, column ``title``), ``cryptonews-text[:PATH]`` (the same file's summaries, column ``text``), or
    any labelled spec with its labels dropped.

    Raises:
        InvalidInput: unknown spec, missing file or missing column.
    """
    settings = settings or DatasetSettings()
    head, _, rest = spec.partition(":")
    column = CRYPTONEWS_COLUMNS.get(head.lower())
    if column is None:
        return load_spec(spec, settings).texts
    path = Path(rest) if rest else settings.data_dir / CRYPTONEWS_FILE
    if not path.is_file():
        raise InvalidInput(f"dataset file not found: {path}")
    reader = csv.DictReader(io.StringIO(read_text_file(path), newline=""), delimiter=";")
    if reader.fieldnames is None or column not in reader.fieldnames:
        raise InvalidInput(f"{path}: needs a ';'-separated header with a {column!r} column")
    texts: list[str] = []
    empty = 0
    for row in reader:
        try:
            texts.append(parse_text(row.get(column) or ""))
        except InvalidInput:
            empty += 1  # an empty headline or summary has nothing to teach; counted and logged below
    if empty:
        log.warning("%s: %d rows without a usable %s skipped", path, empty, column)
    return texts


def load_specs(specs: Sequence[str], settings: DatasetSettings | None = None) -> LabelledSet:
    """Load and concatenate several specs, keeping every set's bad rows."""
    merged = LabelledSet("+".join(specs))
    for spec in specs:
        part = load_spec(spec, settings)
        merged.examples.extend(part.examples)
        merged.bad_rows.extend(part.bad_rows)
    return merged
