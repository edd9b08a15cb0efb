"""SCDG output -> data-layer records, with a reason for every rejected sample.

Pure functions, no model and no Ray. One completion holds zero or more samples, either as free text
in the schema of `tkre.generate.prompts.SCDG_EXAMPLE_TEMPLATE` (the paper's path: each sample is cut
out with regular expressions at its field labels) or as JSON in the schema of tkre/generate/schema.py
(constrained decoding: `parse_json_samples`; there the head and the tail are marked inside the context,
<head>...</head> and <tail>...</tail>, and their positions come with the sample). Every sample is then
validated the same way:

1. it parses (every field label present; `truncated` when the completion stops mid-sample). The
   `Head Type` / `Tail Type` lines are optional: datasets without entity types (SemEval) have none;
   for typed datasets a missing type is rejected in step 4 as `missing_type`;
2. the relation is the one asked for;
3. context, head and tail are non-empty and both entities occur in the context as whole tokens
   (tokenised like the data layer's generic format, matched case-insensitively); when an entity
   occurs more than once, the (head, tail) occurrence pair that does not overlap and lies closest
   together is taken, ties broken by the earliest head, then the earliest tail (deterministic). A
   marked entity is taken where it is marked; the marks must fall on whole tokens;
4. the (head type, tail type) pair is in the relation's schema -- skipped when the dataset has no
   entity types (SemEval). Type names are compared normalised, as the reference code
   (UESTC-GQJ/TKRE) does: case, spaces, hyphens and underscores do not matter (`STATE OR PROVINCE`
   = `STATE_OR_PROVINCE`), and aliases map to the dataset's name (MISCELLANEOUS -> MISC);
5. the context is not a copy of a golden context or of an earlier accepted synthetic one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Iterable

from tkre.data.records import RelationExample, tokenize_with_offsets
from tkre.io import stable_hash

# Reasons a sample is rejected (the rejects table and the manifest use these names).
EMPTY_OUTPUT = "empty_output"
UNPARSEABLE = "unparseable"
TRUNCATED = "truncated"
MISSING_FIELD = "missing_field"
EMPTY_FIELD = "empty_field"
WRONG_RELATION = "wrong_relation"
SUBJECT_NOT_IN_CONTEXT = "subject_not_in_context"
OBJECT_NOT_IN_CONTEXT = "object_not_in_context"
ENTITIES_OVERLAP = "entities_overlap"
MISSING_TYPE = "missing_type"
UNKNOWN_TYPE = "unknown_type"
TYPE_PAIR_NOT_IN_SCHEMA = "type_pair_not_in_schema"
DUPLICATE_GOLDEN = "duplicate_golden"
DUPLICATE_SYNTHETIC = "duplicate_synthetic"
GENERATION_ERROR = "generation_error"
SURPLUS = "surplus"  # valid, but the relation already has the samples asked for

_LABEL = {
    "relation": r"relation",
    "context": r"context",
    "head": r"head\s+entity",
    "head_type": r"head\s+type",
    "tail": r"tail\s+entity",
    "tail_type": r"tail\s+type",
}
_FIELD_ORDER = ("context", "head", "head_type", "tail", "tail_type")
_OPTIONAL_FIELDS = {"head_type", "tail_type"}
#: Type names an LLM writes for a dataset's (normalised) type name (reference code: MISCELLANEOUS -> MISC).
TYPE_ALIASES = {"MISCELLANEOUS": "MISC", "ORGANISATION": "ORGANIZATION"}
_SAMPLE_START = re.compile(r"(?im)(?:^|(?<=\s)|(?<=[*#]))relation\s*:")
_DECORATION = " \t\r\n.\"'`*_[]"


@dataclass(frozen=True)
class ParsedSample:
    """Fields of one sample as written by the LLM (stripped), or the reason it could not be read."""

    raw: str
    relation: str = ""
    context: str = ""
    head: str = ""
    head_type: str = ""
    tail: str = ""
    tail_type: str = ""
    reason: str | None = None  # set when parsing failed
    detail: str = ""
    head_span: tuple[int, int] | None = None  # character span in `context` where the head was marked
    tail_span: tuple[int, int] | None = None


@dataclass(frozen=True)
class Outcome:
    """The verdict on one sample: an accepted record, or a reject reason."""

    relation: str
    raw: str
    example: RelationExample | None
    reason: str | None = None
    detail: str = ""


def _clean_value(value: str, *, single_line: bool) -> str:
    value = value.strip()
    if single_line:
        value = value.split("\n", 1)[0]
    value = re.sub(r"\s+", " ", value)
    return value.strip(_DECORATION).strip()


def _clean_context(value: str) -> str:
    value = re.sub(r"\s+", " ", value).strip()
    return value.strip(" \"'`*_").strip()


def parse_samples(text: str | None) -> list[ParsedSample]:
    """Cut one completion into samples. A completion with no sample gives one failed sample."""
    if text is None or not text.strip():
        return [ParsedSample(raw=text or "", reason=EMPTY_OUTPUT)]
    starts = [m.start() for m in _SAMPLE_START.finditer(text)]
    if not starts:
        return [ParsedSample(raw=text.strip(), reason=UNPARSEABLE, detail="no 'Relation:' field")]
    out = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(text)
        out.append(_parse_one(text[start:end], last=i + 1 == len(starts)))
    return out


_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```\s*$")
_JSON_FIELDS = ("relation", "context", "head", "head_type", "tail", "tail_type")


def parse_json_samples(text: str | None) -> list[ParsedSample]:
    """Cut one completion in the JSON schema of tkre/generate/schema.py into samples.

    Accepts {"samples": [...]}, a bare list or one sample object. A completion cut off part-way keeps
    its complete samples; the rest is one `truncated` sample. Text that is not JSON at all (a server
    that ignored the schema) goes to the free-text parser."""
    if text is None or not text.strip():
        return [ParsedSample(raw=text or "", reason=EMPTY_OUTPUT)]
    body = _FENCE.sub("", text.strip())
    if not body.startswith(("{", "[")):
        return parse_samples(text)
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return _salvage(body)
    if isinstance(data, dict) and isinstance(data.get("samples"), list):
        items = data["samples"]
    elif isinstance(data, list):
        items = data
    elif isinstance(data, dict) and "relation" in data:
        items = [data]
    else:
        return [ParsedSample(raw=body[:2000], reason=UNPARSEABLE, detail="no 'samples' list")]
    return [_json_sample(item) for item in items] or [ParsedSample(raw=body, reason=EMPTY_OUTPUT,
                                                                    detail="no samples")]


def _salvage(body: str) -> list[ParsedSample]:
    """The complete sample objects of a JSON text that does not parse whole (cut off or malformed)."""
    decoder = json.JSONDecoder()
    start = body.find("[")
    pos = start + 1 if start >= 0 else 0
    out: list[ParsedSample] = []
    while True:
        brace = body.find("{", pos)
        if brace < 0:
            break
        try:
            item, end = decoder.raw_decode(body, brace)
        except json.JSONDecodeError as e:
            tail = body[brace:]
            closed = tail.rstrip().endswith(("}", "]"))
            out.append(ParsedSample(raw=tail[:2000], reason=UNPARSEABLE if closed else TRUNCATED,
                                    detail=f"JSON: {e.msg}"))
            break
        if isinstance(item, dict) and "samples" in item:  # the root object itself parsed: not a salvage case
            return [_json_sample(x) for x in item["samples"]] if isinstance(item["samples"], list) else []
        out.append(_json_sample(item))
        pos = end
    return out or [ParsedSample(raw=body[:2000], reason=TRUNCATED, detail="JSON cut off before a sample")]


_MARK = re.compile(r"<(/?)(head|tail)>")


def unmark_context(marked: str) -> tuple[str, dict[str, tuple[int, int]]] | str:
    """A context with <head>...</head> and <tail>...</tail> -> (plain context with single spaces, the
    character span of each marked entity, surrounding spaces left out), or why it cannot be read."""
    plain, spans, opened, pos = [], {}, {}, 0
    for m in _MARK.finditer(marked):
        plain.append(marked[pos:m.start()])
        pos, at, name = m.end(), len("".join(plain)), m.group(2)
        if not m.group(1):
            if name in opened or name in spans:
                return f"<{name}> marked twice"
            opened[name] = at
        elif name not in opened:
            return f"</{name}> without <{name}>"
        else:
            spans[name] = (opened.pop(name), at)
    plain.append(marked[pos:])
    if opened or set(spans) != {"head", "tail"}:
        return "the head and the tail must both be marked once"
    text = "".join(plain)
    # single spaces, as the data layer joins tokens; the spans move with the characters they cover
    keep = [i for i, ch in enumerate(text) if not (ch.isspace() and (i == 0 or text[i - 1].isspace()))]
    index = {old: new for new, old in enumerate(keep)}
    out = "".join(" " if text[i].isspace() else text[i] for i in keep)
    result = {}
    for name, (a, b) in spans.items():
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if a == b:
            return f"<{name}> marks no text"
        result[name] = (index[a], index[b - 1] + 1)
    return out.rstrip(), result  # `keep` drops a leading space: the spans need no shift


def _json_sample(item) -> ParsedSample:
    raw = json.dumps(item, ensure_ascii=False) if not isinstance(item, str) else item
    if not isinstance(item, dict):
        return ParsedSample(raw=raw, reason=UNPARSEABLE, detail="a sample is not a JSON object")
    if "head" not in item and "tail" not in item and isinstance(item.get("context"), str) \
            and isinstance(item.get("relation"), str):  # the constrained schema: entities marked in context
        unmarked = unmark_context(item["context"])
        if isinstance(unmarked, str):
            return ParsedSample(raw=raw, reason=UNPARSEABLE, detail=unmarked)
        context, spans = unmarked
        types = {k: re.sub(r"\s+", " ", v).strip() if isinstance(v, str) else ""
                 for k in ("head_type", "tail_type") for v in [item.get(k) or ""]}
        return ParsedSample(raw=raw, relation=item["relation"].strip(), context=context,
                            head=context[slice(*spans["head"])], tail=context[slice(*spans["tail"])],
                            head_span=spans["head"], tail_span=spans["tail"], **types)
    for name in ("relation", "context", "head", "tail"):
        if name not in item:
            return ParsedSample(raw=raw, reason=MISSING_FIELD, detail=f"no '{name}' field")
    values = {}
    for name in _JSON_FIELDS:
        value = item.get(name, "")
        if value is None:
            value = ""
        if not isinstance(value, str):
            return ParsedSample(raw=raw, reason=UNPARSEABLE, detail=f"'{name}' is not a string")
        values[name] = re.sub(r"\s+", " ", value).strip()
    return ParsedSample(raw=raw, **values)


def _parse_one(chunk: str, *, last: bool) -> ParsedSample:
    raw = chunk.strip()
    rel_m = re.match(r"(?is)relation\s*:", chunk)
    pos = rel_m.end() if rel_m else 0
    found: list[tuple[str, int, int]] = []  # (field, label start, value start)
    cursor = pos
    for name in _FIELD_ORDER:
        m = re.compile(rf"(?i)\b{_LABEL[name]}\s*:").search(chunk, cursor)
        if m is None and name in _OPTIONAL_FIELDS:
            continue  # no type line (datasets without entity types)
        if m is None:
            # a completion that stops part-way through its last sample is truncated
            reason = TRUNCATED if last and not any(
                re.search(rf"(?i)\b{_LABEL[n]}\s*:", chunk[cursor:]) for n in _FIELD_ORDER) else MISSING_FIELD
            return ParsedSample(raw=raw, reason=reason, detail=f"no '{name.replace('_', ' ')}' field")
        found.append((name, m.start(), m.end()))
        cursor = m.end()
    values = {"relation": chunk[pos:found[0][1]]}
    for j, (name, _, vstart) in enumerate(found):
        vend = found[j + 1][1] if j + 1 < len(found) else len(chunk)
        values[name] = chunk[vstart:vend]
    return ParsedSample(
        raw=raw,
        relation=_clean_value(values["relation"], single_line=True),
        context=_clean_context(values["context"]),
        head=_clean_value(values["head"], single_line=True),
        head_type=_clean_value(values.get("head_type", ""), single_line=True),
        tail=_clean_value(values["tail"], single_line=True),
        tail_type=_clean_value(values.get("tail_type", ""), single_line=True),
    )


def normalise_type(name: str) -> str:
    """An entity type's comparison form: upper case, words joined by `_`, aliases resolved."""
    norm = re.sub(r"[\s_\-]+", "_", name.strip(_DECORATION)).strip("_").upper()
    return TYPE_ALIASES.get(norm, norm)


def normalise_relation(name: str) -> str:
    return re.sub(r"\s+", "", name).strip(_DECORATION).lower()


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
