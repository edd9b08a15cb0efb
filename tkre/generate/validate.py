"""Validation of parsed SCDG samples (steps 2-5 of tkre/generate/parse.py's list): the relation asked
for, both entities in the context as whole tokens (the closest non-overlapping pair), the type pair in
the relation's schema, no copy of a golden or earlier synthetic context. Pure functions, no model."""

from __future__ import annotations

import re
from typing import Iterable

from tkre.data.records import RelationExample, tokenize_with_offsets
from tkre.generate.parse import (DECORATION, DUPLICATE_GOLDEN, DUPLICATE_SYNTHETIC, EMPTY_FIELD, ENTITIES_OVERLAP,
                                 MISSING_TYPE, OBJECT_NOT_IN_CONTEXT, SUBJECT_NOT_IN_CONTEXT, TYPE_ALIASES,
                                 TYPE_PAIR_NOT_IN_SCHEMA, UNKNOWN_TYPE, UNPARSEABLE, WRONG_RELATION, Outcome,
                                 ParsedSample, parse_json_samples, parse_samples)
from tkre.io import stable_hash


def normalise_type(name: str) -> str:
    """An entity type's comparison form: upper case, words joined by `_`, aliases resolved."""
    norm = re.sub(r"[\s_\-]+", "_", name.strip(DECORATION)).strip("_").upper()
    return TYPE_ALIASES.get(norm, norm)


def normalise_relation(name: str) -> str:
    return re.sub(r"\s+", "", name).strip(DECORATION).lower()


def context_key(tokens: Iterable[str]) -> str:
    """Duplicate detection: the context's tokens, lower-cased."""
    return " ".join(t.lower() for t in tokens)


def find_mentions(tokens: list[str], mention: list[str]) -> list[tuple[int, int]]:
    """Every [start, end) where `mention` occurs in `tokens` (case-insensitive, whole tokens)."""
    n, m = len(tokens), len(mention)
    if m == 0:
        return []
    low, want = [t.lower() for t in tokens], [t.lower() for t in mention]
    return [(i, i + m) for i in range(n - m + 1) if low[i:i + m] == want]


def token_span(pieces: list[tuple[str, int, int]], chars: tuple[int, int]) -> tuple[int, int] | None:
    """The [start, end) token span covering exactly the character span `chars`; None when the span cuts
    through a token (a mark in the middle of a word) or covers none."""
    inside = [i for i, (_, a, b) in enumerate(pieces) if a >= chars[0] and b <= chars[1]]
    if not inside or pieces[inside[0]][1] != chars[0] or pieces[inside[-1]][2] != chars[1]:
        return None
    return inside[0], inside[-1] + 1


def choose_pair(heads: list[tuple[int, int]], tails: list[tuple[int, int]]) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The non-overlapping (head, tail) occurrence pair closest together; ties: earliest head, then tail."""
    best = None
    for h in heads:
        for t in tails:
            if h[0] < t[1] and t[0] < h[1]:
                continue  # overlapping mentions
            gap = t[0] - h[1] if h[1] <= t[0] else h[0] - t[1]
            key = (gap, h[0], t[0])
            if best is None or key < best[0]:
                best = (key, h, t)
    return None if best is None else (best[1], best[2])


class SampleValidator:
    """Validates parsed samples of several relations; remembers accepted contexts (duplicates)."""

    def __init__(self, golden: Iterable[RelationExample], type_pairs: dict[str, list[list[str]]],
                 *, source: str):
        self.source = source
        self.golden_contexts = {context_key(ex.tokens) for ex in golden}
        self.type_pairs = {rel: {tuple(p) for p in pairs} for rel, pairs in (type_pairs or {}).items()}
        self.known_types = {t for pairs in self.type_pairs.values() for p in pairs for t in p}
        #: normalised type name -> the dataset's spelling
        self.canonical_types = {normalise_type(t): t for t in sorted(self.known_types)}
        self.synthetic_contexts: set[str] = set()

    @property
    def uses_types(self) -> bool:
        return bool(self.known_types)

    def check(self, sample: ParsedSample, relation: str) -> Outcome:
        """Outcome for one parsed sample of the relation that was asked for (no state change)."""
        def reject(reason: str, detail: str = "") -> Outcome:
            return Outcome(relation, sample.raw, None, reason, detail)

        if sample.reason:
            return reject(sample.reason, sample.detail)
        if normalise_relation(sample.relation) != normalise_relation(relation):
            return reject(WRONG_RELATION, f"got {sample.relation!r}")
        for name in ("context", "head", "tail"):
            if not getattr(sample, name):
                return reject(EMPTY_FIELD, name)
        pieces = tokenize_with_offsets(sample.context)
        tokens = [t for t, _, _ in pieces]
        if sample.head_span is not None and sample.tail_span is not None:  # marked: where it is marked
            heads = [s] if (s := token_span(pieces, sample.head_span)) else []
            tails = [s] if (s := token_span(pieces, sample.tail_span)) else []
        else:
            heads = find_mentions(tokens, [t for t, _, _ in tokenize_with_offsets(sample.head)])
            tails = find_mentions(tokens, [t for t, _, _ in tokenize_with_offsets(sample.tail)])
        marked = " (marked inside a word)" if sample.head_span is not None else ""
        if not heads:
            return reject(SUBJECT_NOT_IN_CONTEXT, sample.head + marked)
        if not tails:
            return reject(OBJECT_NOT_IN_CONTEXT, sample.tail + marked)
        pair = choose_pair(heads, tails)
        if pair is None:
            return reject(ENTITIES_OVERLAP, f"{sample.head!r} / {sample.tail!r}")
        subj_type = obj_type = None
        allowed = self.type_pairs.get(relation)
        if self.uses_types and allowed:
            if not sample.head_type or not sample.tail_type:
                return reject(MISSING_TYPE, f"{sample.head_type!r} / {sample.tail_type!r}")
            for value in (sample.head_type, sample.tail_type):
                if normalise_type(value) not in self.canonical_types:
                    return reject(UNKNOWN_TYPE, value)
            subj_type = self.canonical_types[normalise_type(sample.head_type)]
            obj_type = self.canonical_types[normalise_type(sample.tail_type)]
            if (subj_type, obj_type) not in allowed:
                return reject(TYPE_PAIR_NOT_IN_SCHEMA, f"({subj_type}, {obj_type})")
        key = context_key(tokens)
        if key in self.golden_contexts:
            return reject(DUPLICATE_GOLDEN)
        if key in self.synthetic_contexts:
            return reject(DUPLICATE_SYNTHETIC)
        (hs, he), (ts, te) = pair
        ex = RelationExample(
            id="synthetic-" + stable_hash([relation, tokens, hs, he, ts, te], 16), tokens=tuple(tokens),
            subj_start=hs, subj_end=he, obj_start=ts, obj_end=te, relation=relation,
            subj_type=subj_type, obj_type=obj_type, source=self.source)
        problems = ex.problems()
        if problems:  # cannot happen for the spans above; kept so no bad record can ever pass
            return reject(UNPARSEABLE, f"{problems[0][0]}: {problems[0][1]}")
        return Outcome(relation, sample.raw, ex)

    def accept(self, outcome: Outcome) -> None:
        """Record an accepted sample so later copies of its context count as duplicates."""
        if outcome.example is not None:
            self.synthetic_contexts.add(context_key(outcome.example.tokens))

    def validate_completion(self, text: str | None, relation: str, *, json_format: bool = False) -> list[Outcome]:
        """All samples of one completion, in order; accepted ones are remembered.

        json_format: the completion follows the JSON schema (constrained decoding)."""
        outcomes = []
        for sample in (parse_json_samples(text) if json_format else parse_samples(text)):
            outcome = self.check(sample, relation)
            self.accept(outcome)
            outcomes.append(outcome)
        return outcomes
