"""SCDG output -> data-layer records, with a reason for every rejected sample.

Pure functions, no model and no Ray. One completion holds zero or more samples, either as free text
in the schema of `tkre.generate.prompts.SCDG_EXAMPLE_TEMPLATE` (the paper's path: each sample is cut
out with regular expressions at its field labels) or as JSON in the schema of tkre/generate/schema.py
(constrained decoding: `parse_json_samples`; there the head and the tail are marked inside the context,
<head>...</head> and <tail>...</tail>, and their positions come with the sample). Every sample is then
validated the same way (step 1 here, steps 2-5 in tkre/generate/validate.py):

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

from tkre.data.records import RelationExample

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
DECORATION = " \t\r\n.\"'`*_[]"


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
    return value.strip(DECORATION).strip()


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
