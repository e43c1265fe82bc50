"""Batch invariance: under the serving defaults a text's probabilities are the same bits whether it is scored
alone, among 63 other texts of every length, in any order, or with other batch mates (adapters/model/classifier.py).
Replay and live batch the same news differently, so anything looser lets them disagree."""

from __future__ import annotations

import random

import pytest

from adapters.model.classifier import TransformersSentimentModel, load_sentiment_model
from adapters.model.config import DEFAULT_PADDING_BUCKETS, ModelSettings

# Distinct headlines and news summaries, from two words to past max_length (truncated), in 12 of the padding buckets.
HEADLINES: tuple[str, ...] = (
    "Nokia shares jump",
    "Profit warning",
    "Kone cut to sell",
    "Tesla deliveries beat",
    "Oil slides 3%",
    "Fed holds rates steady",
    "Apple recalls chargers",
    "Bitcoin tops $70,000 again",
    "Stora Enso to close Oulu mill",
    "Nordea lifts dividend by 10%",
    "Volvo Cars Q3 operating profit doubles",
    "Shares in Finnair fell 4.2% in early trading",
    "Elisa wins a five-year network contract in Estonia",
    "The company's net sales for the third quarter rose to EUR 152.3 million from EUR 139.8 million, and operating "
    "profit excluding one-off items rose to EUR 14.1 million, which was slightly above the consensus of analysts",
    "Shares of the Finnish elevator maker fell sharply on Thursday after it said that new orders in China had dropped "
    "by about a fifth in the quarter, that prices remained under pressure, and that it no longer expected margins to "
    "improve this year as it had promised investors in the spring",
    "Tesla said on Wednesday that it had delivered fewer cars than expected in the second quarter because of "
    "production shutdowns at its factories in Texas and Berlin, as it retooled lines for a cheaper model, and warned "
    "that price cuts and higher incentives would weigh on automotive gross margins for the rest of the year, "
    "sending the shares down 6 percent in extended trading in New York",
    "Outotec said that it had signed a contract with a Chinese copper producer to deliver flash smelting technology "
    "for a new smelter in Jiangxi province; deliveries are due to start next year, and the total value of the "
    "contract is around EUR 60 million, of which most will be booked as an order in the fourth quarter",
    "The insurer reported that its investment return was 4.1 percent in the first half, and that storm damage in "
    "the Nordic countries in July and August had raised claims costs, although the combined ratio was still better "
    "than the group's long-term target of below 95 percent, while premiums written rose by 6 percent",
    "Because of the strong euro and lower prices for its main products, the pulp maker said that its operating "
    "profit would be clearly lower than last year, and that it had started negotiations with employee "
    "representatives on temporary layoffs at three mills in Finland, which could affect up to 2,500 people for as "
    "long as ninety days, and that a decision on the new investment in Kemi would be postponed to next spring",
    "Bank of Finland: GDP is forecast to grow 1.1 percent next year, as lower interest rates support household "
    "consumption and housing investment, but exports are expected to remain weak because of the slowdown in Germany",
    "The supervisory board approved the plan under which the group will spin off its chemicals business into a "
    "separately listed company next year, retain a minority stake of about 20 percent, and use the proceeds from a "
    "planned sale of non-core assets in South America to reduce net debt, which stood at EUR 4.2 billion at the end "
    "of June, roughly three times its annual earnings before interest, taxes, depreciation and amortisation, "
    "while the chairman said that the board also intends to propose a special dividend once the separation is done "
    "and the new company's shares have started trading on the Helsinki and Stockholm exchanges, adding that the "
    "timetable depends on approvals from competition authorities in the European Union, the United States and China",
    "Nokia Oyj said its mobile networks unit lost a contract with a large US carrier to Ericsson, and that the "
    "loss, together with weaker spending by operators in India, would cut its net sales by EUR 1 billion this year",
    "Copper hits a two-year high on Chinese stimulus hopes",
    "Rovio's new game fails to lift quarterly sales as expected",
    "The board proposes no dividend for the financial year 2025",
    "Outokumpu swings to a net loss as stainless steel prices drop",
    "Microsoft beats estimates on cloud growth; shares rise after hours",
    "Wartsila receives an order worth about EUR 40 million from a Chilean utility",
    "Sampo's combined ratio improved to 84.1 percent from 86.3 percent a year earlier",
    "Ericsson to cut 1,200 jobs in Sweden as 5G spending slows among large operators",
    "Moody's downgrades the outlook on the company's senior unsecured debt to negative",
    "Net sales decreased to EUR 21.7 mn from EUR 28.2 mn in the corresponding period in 2024",
    "Operating profit totalled EUR 9.4 mn, down from EUR 11.7 mn in the corresponding period",
    "The company said it expects full-year revenue to grow between 4% and 6% at constant currency",
    "UPM and the union reached an agreement, ending a strike that halted production for eleven weeks",
    "Amazon shares slipped in premarket trading after the retailer gave a weaker holiday-quarter forecast",
    "Kesko's grocery trade sales rose 3.5 percent in October, while building and technical trade fell 8 percent",
    "The transaction is expected to close in the first quarter, subject to regulatory approvals in the EU and US",
    "Nvidia's market value briefly passed $4 trillion as investors piled into chipmakers on AI demand",
    "Fortum sells its 50% stake in a Swedish district heating business for about SEK 9 billion in cash",
    "Metso Outotec narrows its order intake guidance, citing delays in mining customers' investment decisions",
    "Citigroup agreed to pay $135 million in civil penalties over its failure to fix data management problems",
    "In the reporting period, the company's operating cash flow turned positive at EUR 3.1 million",
    "Shares of the lender plunged 18% after it disclosed a surprise charge on commercial real estate loans",
    "The European Central Bank cut its deposit rate by a quarter point and signalled further easing ahead",
    "Neste's comparable sales margin for renewable products was USD 361 per ton, below analysts' estimates",
    "According to the CEO, demand in the North American market remained strong throughout the third quarter",
    "Stockmann said its department store sales fell, but the Lindex fashion chain posted its best quarter ever",
    "Brent crude rose above $85 a barrel as OPEC+ extended output cuts and US inventories fell more than expected",
    "Tieto will merge its Finnish and Swedish operations into a single unit and expects annual savings of EUR 15m",
    "Rautaruukki announced that it will temporarily lay off up to 1,000 employees at its Raahe steel works",
    "The Helsinki stock exchange's benchmark index closed 0.4% higher, led by gains in forestry and technology",
    "Cargotec's MacGregor unit won marine cargo handling orders worth EUR 30 million for bulk carriers in Asia",
    "S&P Global Ratings affirmed the group's BBB+ rating with a stable outlook, pointing to solid free cash flow",
    "The Finnish paper maker said it would invest EUR 120 million to convert a newsprint line to packaging board",
    "Alma Media's revenue from digital services grew 12 percent and now accounts for over half of group sales",
    "Huhtamaki expects comparable EBIT to improve in 2026 as raw material costs ease and volumes recover",
    "Shares of the budget airline tumbled after it warned that higher fuel and staff costs would erase its profit",
    "The merger creates the largest listed forest products company in Europe, with annual sales of EUR 13 billion",
    "Orion's net sales were up 9 percent, driven by the pain medicine Easyhaler and milestone payments from Bayer",
    "YIT lowers its outlook for 2026 because housing starts in Finland and Russia have fallen sharply this year",
    "Analysts at Nordea raised their target price for the stock to EUR 14.50 from EUR 12.00 and kept a buy rating",
    "Weak demand for consumer electronics dragged down the chip designer's guidance for the coming quarter",
    "The company reported a pre-tax loss of EUR 2.3 mn compared with a profit of EUR 1.1 mn in the year-ago period",
    "Konecranes signed an agreement to acquire a port equipment maker, strengthening its position in Asia Pacific",
    "Finnish investment group Aspo said that earnings per share would be lower than last year due to weak shipping",
    "The lender set aside more money for bad loans as rising interest rates squeezed small and mid-sized borrowers",
    "Shares in the mining company rallied after it reported a high-grade gold discovery close to its existing mine",
    "Raisio's sales of plant-based foods fell short of targets, and the company will review the future of the unit",
    "Dividend proposal: the board proposes a dividend of EUR 0.62 per share, to be paid in two instalments",
    "The group's order backlog stood at EUR 1.6 billion at the end of September, 14 percent higher than a year before",
    "Uponor will shut down its plant in Nastola and move production to Germany, affecting about 100 employees",
    "Sanoma expects its learning business to grow, although the media segment still suffers from weak advertising",
    "The retailer said comparable store sales dropped 5.1 percent in the quarter, its worst showing since the pandemic",
    "Valmet won an order to supply a tissue production line to a mill in Brazil; the value was not disclosed, but "
    "orders of this type are usually worth about EUR 20-30 million",
    "The Finnish government will sell a 10 percent stake in the telecoms operator through an accelerated bookbuild, "
    "which the finance ministry expects to raise roughly EUR 400 million",
    "Following the completion of the restructuring programme, the company estimates that its annual fixed costs will "
    "be some EUR 25 million lower than in 2025, with the full effect visible from the second half of next year",
    "Lassila & Tikanoja said its facility services division lost a large cleaning contract in the Helsinki region, "
    "which will cut the division's net sales by about EUR 15 million a year starting in the spring",
    "The central bank's governor warned that inflation remains too high, that wage growth is still well above the "
    "level consistent with the target, and that markets should not expect rate cuts before the summer at the earliest",
    "Citing a slowdown in European construction, persistent overcapacity in the Chinese market, higher energy "
    "prices in Germany and the loss of a major customer in the automotive sector, the steel maker cut its "
    "full-year guidance for the second time in three months and said it would idle two blast furnaces, "
    "temporarily lay off 2,000 workers, postpone its planned investment in a new electric arc furnace, and review "
    "its dividend policy at the next meeting",
    "Eurozone factory activity shrank for a fifth straight month in November, a survey showed",
)


@pytest.fixture(scope="module", params=["default", "fp32"])
def served(request: pytest.FixtureRequest) -> TransformersSentimentModel:
    if request.param == "default":
        model = load_sentiment_model(ModelSettings())
        if "int8-dynamic" in model.description:
            pytest.skip("no native bf16 here: the CPU default is INT8, which is batch-dependent by design")
        assert "[cpu, none, bfloat16]" in model.description or "[cuda," in model.description
    else:
        model = load_sentiment_model(ModelSettings(quantize="none", dtype="float32"))
        assert ", none, float32]" in model.description
    return model


def _two_per_bucket(served: TransformersSentimentModel) -> list[str]:
    ids = served._loaded.tokenizer(list(HEADLINES), truncation=True, max_length=served.max_length)["input_ids"]
    chosen: list[str] = []
    for chunk, _ in served._batches([len(x) for x in ids]):
        chosen += [HEADLINES[i] for i in chunk[:2]]
    return chosen


def test_the_headlines_are_distinct_and_span_the_buckets(served: TransformersSentimentModel) -> None:
    assert len(set(HEADLINES)) == len(HEADLINES) >= 70
    ids = served._loaded.tokenizer(list(HEADLINES[:64]), truncation=True, max_length=served.max_length)["input_ids"]
    lengths = [len(x) for x in ids]
    used = {length for _, length in served._batches(lengths)}
    assert len(used) >= 11 and {served.padding_buckets[0], served.max_length} <= used
    assert max(lengths) == served.max_length  # one is truncated into the last bucket


def test_a_text_scores_the_same_alone_and_in_a_batch_of_64(served: TransformersSentimentModel) -> None:
    batch = list(HEADLINES[:64])
    together = served.predict_proba(batch)
    alone = [served.predict_proba([text])[0] for text in batch]
    assert together == alone  # exact: the same bits, not approximately


def test_batch_order_and_batch_mates_do_not_change_a_text_probabilities(served: TransformersSentimentModel) -> None:
    rng = random.Random(7)
    targets = _two_per_bucket(served)  # 24 texts from 12 buckets
    others = [h for h in HEADLINES if h not in targets]
    reference = served.predict_proba(targets)
    # Small and odd mate counts on purpose: 1-11 rows is where MKL's fp32 GEMM changes kernels.
    for count in (0, 1, 2, 5, 23, 60):
        mates = rng.sample(others, count)
        batch = targets + mates
        rng.shuffle(batch)
        scored = dict(zip(batch, served.predict_proba(batch), strict=True))
        assert [scored[t] for t in targets] == reference, f"{count} batch mates changed a text's probabilities"
    reversed_batch = list(reversed(HEADLINES))
    scored = dict(zip(reversed_batch, served.predict_proba(reversed_batch), strict=True))
    assert [scored[t] for t in targets] == reference


def test_a_smaller_batch_size_changes_nothing(served: TransformersSentimentModel) -> None:
    batch = list(HEADLINES)
    expected = served.predict_proba(batch)
    small = TransformersSentimentModel(
        served._loaded, batch_size=3, max_length=served.max_length, padding_buckets=served.padding_buckets
    )
    assert small.predict_proba(batch) == expected


def test_max_length_closes_the_buckets(served: TransformersSentimentModel) -> None:
    short = TransformersSentimentModel(served._loaded, max_length=40, padding_buckets=(64, 16, 32, 128))
    assert short.padding_buckets == (16, 32, 40)
    assert TransformersSentimentModel(served._loaded, padding_buckets=()).padding_buckets == ()


def test_padding_buckets_are_a_typed_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from sigstream.settings import load_settings

    assert ModelSettings().padding_buckets == DEFAULT_PADDING_BUCKETS
    assert ModelSettings(padding_buckets=(64, 16, 16)).padding_buckets == (16, 64)
    with pytest.raises(ValueError, match="positive"):
        ModelSettings(padding_buckets=(0, 16))
    monkeypatch.setenv("SIGSTREAM_MODEL__PADDING_BUCKETS", "[16, 32]")
    assert load_settings().model.padding_buckets == (16, 32)
    monkeypatch.setenv("SIGSTREAM_MODEL__PADDING_BUCKETS", "[]")
    assert load_settings().model.padding_buckets == ()
