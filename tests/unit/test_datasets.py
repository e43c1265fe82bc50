"""Parsing of the labelled sentiment sets: label vocabularies, bad rows, the fixed FPB split."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.datasets import DatasetSettings, load_spec, load_specs, stratified_split
from adapters.datasets.parsing import Example
from engine.errors import InvalidInput

FPB_LINES = [
    "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn .@positive",
    "The company is based in Helsinki .@neutral",
    "Sales fell by 10 % .@negative",
    "Ålandsbanken reported stable results .@neutral",  # non-ASCII: the file is latin-1
    "no label separator here",
    "Strange label .@sideways",
    "",
    " @neutral",
]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    fpb = tmp_path / "financial_phrasebank"
    fpb.mkdir()
    (fpb / "Sentences_50Agree.txt").write_bytes("\n".join(FPB_LINES).encode("latin-1"))
    # A larger, clean AllAgree file to exercise the split at another agreement level.
    lines = [f"Sentence number {i} about results .@{['negative', 'neutral', 'positive'][i % 3]}" for i in range(60)]
    (fpb / "Sentences_AllAgree.txt").write_bytes("\n".join(lines).encode("latin-1"))
    tfns = tmp_path / "twitter_financial_news"
    tfns.mkdir()
    (tfns / "sent_train.csv").write_text(
        'text,label\n$AAPL cut to sell,0\n"$TSLA, upgraded to buy",1\n$MSFT holds meeting,2\n$X weird,7\n,1\n'
    )
    return tmp_path


def settings(data_dir: Path) -> DatasetSettings:
    return DatasetSettings(data_dir=data_dir)


def test_fpb_latin1_lines_parse_and_every_bad_row_is_reported_with_reason(data_dir: Path) -> None:
    data = load_spec("fpb:50", settings(data_dir))

    assert [e.label for e in data.examples] == [2, 1, 0, 1]
    assert data.examples[3].text.startswith("Ålandsbanken")
    reasons = {b.line: b.reason for b in data.bad_rows}
    assert reasons == {5: "no '@label' suffix", 6: "unknown label 'sideways'", 7: "empty line", 8: "empty text"}
    assert len(data.examples) + len(data.bad_rows) == len(FPB_LINES)


def test_fpb_default_level_is_50agree(data_dir: Path) -> None:
    assert load_spec("fpb", settings(data_dir)).texts == load_spec("fpb:50", settings(data_dir)).texts


def test_tfns_codes_map_0_bearish_1_bullish_2_neutral_and_unknown_codes_are_bad_rows(data_dir: Path) -> None:
    data = load_spec("tfns", settings(data_dir))

    assert [(e.text, e.label) for e in data.examples] == [
        ("$AAPL cut to sell", 0),
        ("$TSLA, upgraded to buy", 2),
        ("$MSFT holds meeting", 1),
    ]
    assert sorted(b.reason for b in data.bad_rows) == ["empty text", "unknown tfns label code '7' (expected 0, 1 or 2)"]


@pytest.mark.parametrize(
    ("words", "expected"),
    [(("bearish", "neutral", "bullish"), [0, 1, 2]), (("Negative", "neutral", "POSITIVE"), [0, 1, 2])],
)
def test_csv_accepts_either_label_vocabulary(tmp_path: Path, words: tuple[str, str, str], expected: list[int]) -> None:
    path = tmp_path / "x.csv"
    path.write_text("text,label\n" + "".join(f"text {w},{w}\n" for w in words))

    assert load_spec(str(path)).labels == expected


def test_csv_bad_rows_counted_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("label,text\npositive,good\nmeh,so so\nneutral,\nnegative\n")

    data = load_spec(str(path))

    assert data.labels == [2]
    assert [(b.line, b.reason) for b in data.bad_rows] == [
        (3, "unknown label 'meh'"),
        (4, "empty text"),
        (5, "expected 2 fields, got 1"),
    ]


def test_csv_with_an_unquoted_comma_in_the_text_keeps_the_whole_text(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("label,text\nbullish,Acme, Inc. shares soar\n")
    assert load_spec(str(path)).texts == ["Acme, Inc. shares soar"]
    path.write_text("text,label\nAcme, Inc. shares soar,bullish\n")
    data = load_spec(str(path))
    assert (data.texts, data.labels, data.bad_rows) == (["Acme, Inc. shares soar"], [2], [])


def test_csv_rows_with_a_trailing_comma_keep_their_label(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("text,label\nRevenue rose sharply,positive,\nShares fell,negative,,\n")
    data = load_spec(str(path))
    assert (data.texts, data.labels, data.bad_rows) == (["Revenue rose sharply", "Shares fell"], [2, 0], [])


def test_csv_with_a_byte_order_mark_reads_its_header(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("text,label\r\nshares fell,bearish\r\n".encode("utf-8-sig"))
    assert load_spec(str(path)).labels == [0]


def test_one_empty_label_does_not_turn_a_tweets_file_into_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "tweets.csv"
    path.write_text("text,label\ndown,0\nup,1\nflat,2\nno label,\nodd,7\n")
    data = load_spec(str(path))
    assert data.labels == [0, 2, 1]
    assert [b.line for b in data.bad_rows] == [5, 6]


def test_csv_without_text_and_label_columns_is_invalid_input(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("sentence,sentiment\na,positive\n")
    with pytest.raises(InvalidInput, match="'text' and 'label'"):
        load_spec(str(path))


def test_all_numeric_csv_labels_use_the_tweets_coding(tmp_path: Path) -> None:
    path = tmp_path / "valid.csv"
    path.write_text("text,label\ndown,0\nup,1\nflat,2\n")
    assert load_spec(str(path)).labels == [0, 2, 1]


def test_csv_timestamps_are_parsed_for_time_based_splits(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text(
        "text,label,timestamp\na,positive,2024-01-01T00:00:00Z\nb,negative,1700000000000\nc,neutral,yesterday\n"
    )
    data = load_spec(str(path))
    assert [e.ts for e in data.examples] == [1_704_067_200_000, 1_700_000_000_000]
    assert data.bad_rows[0].reason.startswith("bad timestamp")


@pytest.mark.parametrize("spec", ["nope", "fpb:33", "fpb:50:dev", "fpb:50:test:x", "missing.csv"])
def test_unknown_or_missing_specs_are_invalid_input(data_dir: Path, spec: str) -> None:
    with pytest.raises(InvalidInput):
        load_spec(spec, settings(data_dir))


def test_fpb_split_is_disjoint_complete_and_consistent_across_agreement_levels(data_dir: Path) -> None:
    s = DatasetSettings(data_dir=data_dir, test_fraction=0.2)
    full = load_spec("fpb:all", s)
    train, test = load_spec("fpb:all:train", s), load_spec("fpb:all:test", s)

    assert not set(train.texts) & set(test.texts)
    assert sorted(train.texts + test.texts) == sorted(full.texts)
    # The split is drawn on 50Agree: sentences only in AllAgree are never test sentences.
    assert test.examples == []


def test_stratified_split_keeps_class_shares_is_seeded_and_keeps_duplicates_together() -> None:
    examples = [Example(f"t{i}", i % 3) for i in range(300)] + [Example("t0", 0)]

    train, test = stratified_split(examples, 0.2, seed=7)
    again, _ = stratified_split(examples, 0.2, seed=7)
    other, _ = stratified_split(examples, 0.2, seed=8)

    assert [sum(e.label == c for e in test) for c in range(3)] in ([20, 20, 20], [21, 20, 20])
    assert train == again
    assert train != other
    assert {e.text for e in train}.isdisjoint({e.text for e in test})


def test_load_specs_concatenates_examples_and_bad_rows(data_dir: Path) -> None:
    merged = load_specs(["fpb:50", "tfns"], settings(data_dir))
    assert len(merged.examples) == 4 + 3
    assert len(merged.bad_rows) == 4 + 2


def test_shared_fpb_split_when_shared_data_is_present() -> None:
    s = DatasetSettings()
    if not (s.data_dir / "financial_phrasebank" / "Sentences_50Agree.txt").is_file():
        pytest.skip("shared data not present")
    test = load_spec("fpb:50:test", s)
    train = load_spec("fpb:50:train", s)
    assert len(test.examples) == 968
    assert set(train.texts).isdisjoint(test.texts)
    from adapters.datasets.loader import _cross_level_key

    held_out = {_cross_level_key(t) for t in test.texts}
    # The other levels are latin-1 files, the shared 50Agree copy UTF-8 with U+FFFD for some letters:
    # their sentences are matched across that difference, so no held-out sentence trains at any level.
    for level in ("66", "75", "all"):
        assert {_cross_level_key(t) for t in load_spec(f"fpb:{level}:test", s).texts} <= held_out
        assert not {_cross_level_key(t) for t in load_spec(f"fpb:{level}:train", s).texts} & held_out


def test_label_vocabulary_is_chosen_from_all_labels_at_once() -> None:
    from adapters.datasets.loader import label_parser_for
    from adapters.datasets.parsing import parse_label, parse_tfns_label

    assert label_parser_for({"0", "1", "2"}, "t") is parse_tfns_label
    assert label_parser_for({"0", "2"}, "t") is parse_tfns_label
    # One word among the digits: words win, so the digits become bad rows rather than silently re-coded.
    assert label_parser_for({"0", "bullish"}, "t") is parse_label
    assert label_parser_for(set(), "t") is parse_label


def test_hub_specs_without_the_datasets_package_say_what_to_install() -> None:
    import importlib.util

    from engine.errors import MissingDependency

    if importlib.util.find_spec("datasets") is not None:
        pytest.skip("datasets is installed here")
    with pytest.raises(MissingDependency, match=r"pip install 'datasets>=4,<5'"):
        load_spec("hub:takala/financial_phrasebank:sentences_50agree")


def test_time_split_never_trains_on_a_text_it_holds_out() -> None:
    from adapters.datasets.loader import time_split

    examples = [Example(t, 1, ts) for ts, t in enumerate(["A up", "B down", "C flat", "D flat", "A up"])]
    train, test = time_split(examples, 0.2)
    assert [e.text for e in test] == ["A up"]
    assert [e.text for e in train] == ["B down", "C flat", "D flat"]


CRYPTONEWS_HEAD = "date;sentiment;source;subject;text;title;url\n"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("cryptonews", ["Bitcoin tops USD 20K", "Ether slides"]),
        ("cryptonews-text", ["Bitcoin climbed above USD 20,000; Ether rose 9%.", "Miners sold; fees fell."]),
    ],
)
def test_cryptonews_specs_read_their_own_column_and_count_empty_rows(
    tmp_path: Path, spec: str, expected: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    from adapters.datasets.loader import load_unlabelled

    news = tmp_path / "news"
    news.mkdir()
    (news / "cryptonews.csv").write_text(
        CRYPTONEWS_HEAD
        + '1-7-2022 10:00;neutral;CT;bitcoin;"Bitcoin climbed above USD 20,000; Ether rose 9%.";'
        + "Bitcoin tops USD 20K;u1\n"
        + '1-7-2022 11:00;neutral;CT;ethereum;"Miners sold; fees fell.";Ether slides;u2\n'
        + "1-7-2022 12:00;neutral;CT;ethereum; ; ;u3\n"
    )
    with caplog.at_level("WARNING"):
        texts = load_unlabelled(spec, DatasetSettings(data_dir=tmp_path))
    assert texts == expected
    assert "1 rows without a usable" in caplog.text


def test_a_cryptonews_file_without_the_specs_column_is_invalid_input(tmp_path: Path) -> None:
    from adapters.datasets.loader import load_unlabelled

    headlines_only = tmp_path / "headlines.csv"
    headlines_only.write_text("date;title\n1-7-2022 10:00;Bitcoin tops USD 20K\n")
    assert load_unlabelled(f"cryptonews:{headlines_only}") == ["Bitcoin tops USD 20K"]
    with pytest.raises(InvalidInput, match="'text' column"):
        load_unlabelled(f"cryptonews-text:{headlines_only}")
