"""Data-quality and cost metrics (tkre/generate/quality.py), against values computed by hand."""

import pytest

from tkre.generate import quality as q


def test_words_lowercase_and_punctuation():
    assert q.words("The CAT, sat.") == ["the", "cat", ",", "sat", "."]


def test_distinct_2_by_hand():
    # "a b a b" -> bigrams (a b) (b a) (a b): 2 distinct of 3; "a b" -> (a b): total 4, distinct 2
    assert q.distinct_n(["a b a b", "a b"], 2) == pytest.approx(2 / 4)
    # all distinct
    assert q.distinct_n(["x y z"], 2) == pytest.approx(1.0)
    # distinct-1: tokens a, b, a, b, c -> 3 distinct of 5
    assert q.distinct_n(["a b a b c"], 1) == pytest.approx(3 / 5)
    assert q.distinct_n(["one"], 2) is None  # no bigram at all
    assert q.distinct_n([], 2) is None


def test_max_overlap_by_hand():
    golden = ["the cat sat on the mat", "a dog ran far away"]
    # sample 3-grams: (the cat sat) (cat sat on) (sat on a) (on a rug): 2 of 4 in golden[0]
    assert q.max_ngram_overlap("the cat sat on a rug", golden) == pytest.approx(0.5)
    assert q.max_ngram_overlap("the cat sat on the mat", golden) == pytest.approx(1.0)
    assert q.max_ngram_overlap("nothing here matches at all", golden) == 0.0
    assert q.max_ngram_overlap("too short", golden) == 0.0  # no 3-gram
    # the HIGHEST overlap with ONE example, not the union over examples:
    # sample 3-grams: (the cat sat) (cat sat dog) (sat dog ran) (dog ran far): golden[0] has 1, golden[1] has 1
    assert q.max_ngram_overlap("the cat sat dog ran far", golden) == pytest.approx(0.25)


def test_golden_overlaps_index_matches_the_plain_definition():
    golden = ["the cat sat on the mat", "a dog ran far away", "the cat sat on a rug today"]
    samples = ["the cat sat on a rug", "a dog ran far away now", "unrelated words only here", "hi"]
    fast = q.golden_overlaps(samples, golden)
    assert fast == pytest.approx([q.max_ngram_overlap(s, golden) for s in samples])
    assert fast == pytest.approx([1.0, 3 / 4, 0.0, 0.0])


def test_scdg_quality_block():
    out = q.scdg_quality(["the cat sat on a rug", "x y z w"], ["the cat sat on the mat"])
    # bigrams: 5 + 3 = 8, all distinct; overlaps 0.5 and 0.0
    assert out == {"distinct_2": 1.0, "golden_overlap_mean": 0.25, "golden_overlap_max": 0.5, "samples": 2}
    assert q.scdg_quality([], ["a b c"]) == {"distinct_2": None, "golden_overlap_mean": None,
                                             "golden_overlap_max": None, "samples": 0}


def test_explanation_quality_block():
    out = q.explanation_quality(["one two three", "one two three four five"])
    assert out["explanation_words_mean"] == pytest.approx(4.0)
    assert out["explanations"] == 2
    # bigrams: (one two)(two three) + (one two)(two three)(three four)(four five): 4 distinct of 6
    assert out["distinct_2"] == pytest.approx(round(4 / 6, 4))


def test_parsed_samples_subtracts_only_parse_failures():
    reasons = {"unparseable": 3, "truncated": 2, "generation_error": 1, "subject_not_in_context": 4, "surplus": 1}
    assert q.parsed_samples(20, reasons) == 14


@pytest.mark.parametrize("url,local", [
    ("http://127.0.0.1:8000/v1", True), ("http://localhost:1234/v1", True), ("http://[::1]:80/v1", True),
    ("http://10.0.0.5/v1", True), ("http://192.168.1.2:8000", True), ("https://api.openai.com/v1", False),
    ("https://api.together.xyz/v1", False), ("http://8.8.8.8/v1", False)])
def test_is_local_url(url, local):
    assert q.is_local_url(url) is local


def test_prices_and_cost():
    # local models cost nothing unless prices are set
    assert q.prices_for("hf", None, None, None) == (0.0, 0.0)
    assert q.prices_for("vllm", None, None, None) == (0.0, 0.0)
    assert q.prices_for("openai", "http://127.0.0.1:9/v1", None, None) == (0.0, 0.0)
    # a paid endpoint without (both) prices: unknown
    assert q.prices_for("openai", "https://api.openai.com/v1", None, None) is None
    assert q.prices_for("openai", "https://api.openai.com/v1", 0.5, None) is None
    prices = q.prices_for("openai", "https://api.openai.com/v1", 0.5, 1.5)
    assert prices == (0.5, 1.5)
    # 2,000,000 in at $0.5/M + 300,000 out at $1.5/M = 1.0 + 0.45
    assert q.cost_usd(2_000_000, 300_000, prices) == pytest.approx(1.45)
    assert q.cost_usd(1000, 1000, (0.0, 0.0)) == 0.0
    assert q.cost_usd(1000, 1000, None) is None
