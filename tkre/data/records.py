"""The one record type for a relation example, its Arrow schema and the generic JSONL format.

Span convention: token offsets, **end exclusive** (`tokens[subj_start:subj_end]` is the subject),
everywhere in tkre. Loaders of formats with inclusive ends (TACRED) convert on reading.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Iterable

import pyarrow as pa

from tkre.data.fields import want_id, want_int, want_str, want_str_list
from tkre.errors import DataError

#: Names the no-relation class goes by; all map to one class in metrics and sampling.
NO_RELATION_NAMES = ("no_relation", "NA", "Other")


def canonical_relation(label: str) -> str:
    """`NA` and `no_relation` are the same class (SemEval's `Other` keeps its name)."""
    return "no_relation" if label == "NA" else label


def is_no_relation(label: str) -> bool:
    return label in NO_RELATION_NAMES


@dataclass(frozen=True)
class RelationExample:
    """One labelled relation example. Spans are token offsets, end exclusive."""

    id: str
    tokens: tuple[str, ...]
    subj_start: int
    subj_end: int
    obj_start: int
    obj_end: int
    relation: str
    subj_type: str | None = None
    obj_type: str | None = None
    source: str = "golden"  # "golden" or "synthetic:<generator>"

    @property
    def subject(self) -> str:
        return " ".join(self.tokens[self.subj_start:self.subj_end])

    @property
    def object(self) -> str:
        return " ".join(self.tokens[self.obj_start:self.obj_end])

    @property
    def text(self) -> str:
        return " ".join(self.tokens)

    def problems(self) -> list[tuple[str, str]]:
        """(field, message) for every inconsistency; empty when the record is valid."""
        out: list[tuple[str, str]] = []
        n = len(self.tokens)
        if not self.id:
            out.append(("id", "empty id"))
        if n == 0:
            out.append(("tokens", "no tokens"))
        elif not all(isinstance(t, str) and t for t in self.tokens):
            out.append(("tokens", "tokens must be non-empty strings"))
        for name, start, end in (("subj", self.subj_start, self.subj_end), ("obj", self.obj_start, self.obj_end)):
            if not (0 <= start < end <= n):
                out.append((f"{name}_start/{name}_end",
                            f"span [{start}, {end}) is empty or outside the {n} tokens"))
        if not self.relation:
            out.append(("relation", "empty relation label"))
        return out

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["tokens"] = list(self.tokens)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RelationExample":
        d = dict(d)
        d["tokens"] = tuple(d["tokens"])
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


def checked(ex: RelationExample, *, file: str, record: str | int) -> RelationExample:
    """Return `ex` or raise DataError naming the file, record and first bad field."""
    problems = ex.problems()
    if problems:
        field_name, message = problems[0]
        raise DataError(message, file=file, record=record, field=field_name)
    return ex


# ---------------------------------------------------------------- Arrow

ARROW_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("tokens", pa.list_(pa.string()), nullable=False),
    pa.field("subj_start", pa.int32(), nullable=False),
    pa.field("subj_end", pa.int32(), nullable=False),
    pa.field("obj_start", pa.int32(), nullable=False),
    pa.field("obj_end", pa.int32(), nullable=False),
    pa.field("relation", pa.string(), nullable=False),
    pa.field("subj_type", pa.string()),
    pa.field("obj_type", pa.string()),
    pa.field("source", pa.string(), nullable=False),
])


def to_arrow(examples: Iterable[RelationExample]) -> pa.Table:
    """Examples -> Arrow table with the fixed schema `ARROW_SCHEMA`."""
    cols: dict[str, list] = {f.name: [] for f in ARROW_SCHEMA}
    for ex in examples:
        for name in cols:
            value = getattr(ex, name)
            cols[name].append(list(value) if name == "tokens" else value)
    return pa.table(cols, schema=ARROW_SCHEMA)


def from_arrow(table: pa.Table) -> list[RelationExample]:
    return [RelationExample.from_dict(row) for row in table.to_pylist()]


# ---------------------------------------------------------------- generic JSONL (character offsets)

_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def tokenize_with_offsets(text: str, start: int = 0, end: int | None = None) -> list[tuple[str, int, int]]:
    """Split text[start:end] into word and punctuation tokens with their character spans."""
    end = len(text) if end is None else end
    return [(m.group(), start + m.start(), start + m.end()) for m in _TOKEN.finditer(text[start:end])]


def example_text_and_spans(tokens: tuple[str, ...] | list[str], subj: tuple[int, int],
                           obj: tuple[int, int]) -> tuple[str, tuple[int, int], tuple[int, int]]:
    """Join word tokens with single spaces; return the text and the subject/object character spans
    (token and character spans both end-exclusive)."""
    starts, pos = [], 0
    for tok in tokens:
        starts.append(pos)
        pos += len(tok) + 1

    def char_span(a: int, b: int) -> tuple[int, int]:
        return starts[a], starts[b - 1] + len(tokens[b - 1])

    return " ".join(tokens), char_span(*subj), char_span(*obj)


def example_to_generic(ex: RelationExample) -> dict[str, Any]:
    """Record -> generic JSONL dict. Text is the tokens joined by single spaces; offsets are chars,
    end exclusive. `tokens` is kept so that reading the line back gives the same record."""
    text, (ss, se), (os_, oe) = example_text_and_spans(ex.tokens, (ex.subj_start, ex.subj_end),
                                                       (ex.obj_start, ex.obj_end))
    return {
        "id": ex.id, "text": text,
        "subj": text[ss:se], "subj_start": ss, "subj_end": se, "subj_type": ex.subj_type,
        "obj": text[os_:oe], "obj_start": os_, "obj_end": oe, "obj_type": ex.obj_type,
        "relation": ex.relation, "source": ex.source, "tokens": list(ex.tokens),
    }


GENERIC_REQUIRED = ("text", "subj", "subj_start", "subj_end", "obj", "obj_start", "obj_end", "relation")


def example_from_generic(d: dict[str, Any], *, file: str, record: str | int) -> RelationExample:
    """Generic JSONL dict -> record. Character spans must match the entity strings exactly."""
    if not isinstance(d, dict):
        raise DataError("expected a JSON object", file=file, record=record)
    for key in GENERIC_REQUIRED:
        if key not in d or d[key] is None:
            raise DataError("missing field", file=file, record=record, field=key)
    text = want_str(d["text"], file=file, record=record, field="text")
    spans = {}
    for role in ("subj", "obj"):
        want_str(d[role], file=file, record=record, field=role)
        s = want_int(d[f"{role}_start"], file=file, record=record, field=f"{role}_start")
        e = want_int(d[f"{role}_end"], file=file, record=record, field=f"{role}_end")
        if not 0 <= s < e <= len(text):
            raise DataError(f"character span [{s}, {e}) outside the text of length {len(text)}",
                            file=file, record=record, field=f"{role}_start")
        if text[s:e] != d[role]:
            raise DataError(f"text[{s}:{e}] is {text[s:e]!r}, not {d[role]!r}", file=file, record=record,
                            field=role)
        spans[role] = (s, e)
    (ss, se), (os_, oe) = spans["subj"], spans["obj"]
    if ss < oe and os_ < se:
        raise DataError("subject and object spans overlap", file=file, record=record, field="obj_start")

    if "tokens" in d and d["tokens"] is not None:
        tokens = want_str_list(d["tokens"], file=file, record=record, field="tokens")
        if " ".join(tokens) != text:
            raise DataError("tokens joined by spaces must equal text", file=file, record=record, field="tokens")
        pieces, pos = [], 0
        for t in tokens:
            pieces.append((t, pos, pos + len(t)))
            pos += len(t) + 1
    else:
        # tokenise each segment between entity boundaries separately, so spans align exactly
        cuts = sorted({0, ss, se, os_, oe, len(text)})
        pieces = []
        for a, b in zip(cuts, cuts[1:]):
            pieces.extend(tokenize_with_offsets(text, a, b))

    def token_span(s: int, e: int, role: str) -> tuple[int, int]:
        idx = [i for i, (_, a, b) in enumerate(pieces) if a >= s and b <= e]
        if not idx or pieces[idx[0]][1] != s or pieces[idx[-1]][2] != e:
            raise DataError(f"span [{s}, {e}) does not fall on token boundaries", file=file, record=record,
                            field=f"{role}_start")
        return idx[0], idx[-1] + 1

    subj = token_span(ss, se, "subj")
    obj = token_span(os_, oe, "obj")
    optional = {k: want_str(d.get(k), file=file, record=record, field=k, optional=True, empty=True) or None
                for k in ("subj_type", "obj_type", "source")}
    ex = RelationExample(
        id=want_id(d["id"], file=file, record=record) if d.get("id") not in (None, "") else str(record),
        tokens=tuple(t for t, _, _ in pieces),
        subj_start=subj[0], subj_end=subj[1], obj_start=obj[0], obj_end=obj[1],
        relation=canonical_relation(want_str(d["relation"], file=file, record=record, field="relation")),
        subj_type=optional["subj_type"], obj_type=optional["obj_type"], source=optional["source"] or "golden",
    )
    return checked(ex, file=file, record=record)
