"""Data-quality and cost metrics of generated data: pure functions, no model, no Ray, no config.

    distinct_n(texts, 2)              distinct-2 of the synthetic contexts (Li et al., 2016): distinct
                                      word bigrams / all word bigrams, over the whole set
    golden_overlaps(samples, golden)  per sample, the highest word-3-gram overlap with any ONE golden
                                      example: |3-grams(sample) & 3-grams(golden)| / |3-grams(sample)|
                                      (1.0 = every 3-gram of the sample is in one golden example;
                                      lower = more novel)
    cost_usd(in, out, p_in, p_out)    USD from token counts and prices per million tokens
    prices_for(...)                   the prices to use: the configured ones, 0 for a local model,
                                      None (unknown) for a paid endpoint without prices
    scdg_quality / explanation_quality  the summary blocks the generation stages write

Words are lower-cased `\\w+` runs and single punctuation marks. Hand-written: each metric is a few
lines over Python sets; the libraries that have them (nltk, torchmetrics, evaluate) would add a large
dependency for four functions, and their tokenisers differ from each other.
"""

from __future__ import annotations

import ipaddress
import re
from collections import defaultdict
from statistics import fmean
from typing import Iterable, Sequence
from urllib.parse import urlparse

_WORD = re.compile(r"\w+|[^\w\s]")

#: Reject reasons that mean a sample could not be read at all (it was not "parsed").
PARSE_FAILURES = frozenset({"empty_output", "unparseable", "truncated", "missing_field", "generation_error"})

DISTINCT_N = 2
OVERLAP_N = 3


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Iterable[str], n: int = DISTINCT_N) -> float | None:
    """Distinct n-grams / all n-grams over every text (None when the texts have no n-gram)."""
    grams = [g for t in texts for g in ngrams(words(t), n)]
    return len(set(grams)) / len(grams) if grams else None


def max_ngram_overlap(sample: str, references: Iterable[str], n: int = OVERLAP_N) -> float:
    """The highest share of the sample's distinct n-grams found in one reference (0.0 without n-grams)."""
    mine = set(ngrams(words(sample), n))
    if not mine:
        return 0.0
    return max((len(mine & set(ngrams(words(r), n))) / len(mine) for r in references), default=0.0)


def golden_overlaps(samples: Sequence[str], golden: Sequence[str], n: int = OVERLAP_N) -> list[float]:
    """`max_ngram_overlap(s, golden, n)` for every sample, through an n-gram -> golden index (fast)."""
    index: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, text in enumerate(golden):
        for g in set(ngrams(words(text), n)):
            index[g].append(i)
    out = []
    for s in samples:
        mine = set(ngrams(words(s), n))
        counts: dict[int, int] = defaultdict(int)
        for g in mine:
            for i in index.get(g, ()):
                counts[i] += 1
        out.append(max(counts.values()) / len(mine) if mine and counts else 0.0)
    return out


def scdg_quality(contexts: Sequence[str], golden_contexts: Sequence[str]) -> dict[str, float | int | None]:
    """Diversity and novelty of the kept synthetic contexts (the SCDG summary's `quality` block)."""
    overlaps = golden_overlaps(contexts, golden_contexts)
    return {"distinct_2": _round(distinct_n(contexts, DISTINCT_N)),
            "golden_overlap_mean": _round(fmean(overlaps)) if overlaps else None,
            "golden_overlap_max": _round(max(overlaps)) if overlaps else None,
            "samples": len(contexts)}


def explanation_quality(explanations: Sequence[str]) -> dict[str, float | int | None]:
    """Length and diversity of the explanation corpus (the EDKG summary's `quality` block)."""
    lengths = [len(t.split()) for t in explanations]
    return {"explanation_words_mean": _round(fmean(lengths)) if lengths else None,
            "distinct_2": _round(distinct_n(explanations, DISTINCT_N)), "explanations": len(explanations)}


def parsed_samples(samples: int, reasons: dict[str, int]) -> int:
    """Samples that were read (every field present), from the sample count and the reject reasons."""
    return samples - sum(v for k, v in reasons.items() if k in PARSE_FAILURES)


# ------------------------------------------------------------------------------------------ cost
def is_local_url(url: str) -> bool:
    """A server on this machine or a private network (localhost, loopback, RFC 1918, link-local)."""
    host = (urlparse(url).hostname or "").lower()
    if host in ("localhost", "") or host.endswith(".localhost") or host.endswith(".local"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_link_local


def is_paid(backend: str, base_url: str | None) -> bool:
    """Does this generator bill per token? Only the openai backend against a non-local server."""
    return backend == "openai" and not is_local_url(base_url or "")


def prices_for(backend: str, base_url: str | None, price_in: float | None,
               price_out: float | None) -> tuple[float, float] | None:
    """USD per million (input, output) tokens: configured prices win; an unset price is 0 for a local
    model and unknown (None) for a paid endpoint."""
    if price_in is not None and price_out is not None:
        return float(price_in), float(price_out)
    if is_paid(backend, base_url):
        return None
    return float(price_in or 0.0), float(price_out or 0.0)


def cost_usd(input_tokens: int, output_tokens: int, prices: tuple[float, float] | None) -> float | None:
    """Cost in USD of the tokens at (input, output) prices per million tokens; None when unknown."""
    if prices is None:
        return None
    return round(input_tokens * prices[0] / 1e6 + output_tokens * prices[1] / 1e6, 6)


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)
