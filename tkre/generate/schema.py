"""The SCDG sample schema, written once as a JSON schema and enforced at decode time by every backend.

This is the decode-time form of the paper's schema constraint (method section 2: "Relation, Context,
Head Entity, Head Type, Tail Entity, Tail Type"): instead of letting the LLM write free text and
throwing away what a regular expression cannot read, the decoder may only emit JSON of this shape:

    {"samples": [{"relation": <the relation asked, fixed>,
                  "context": <one sentence>,
                  "head": <entity>, "head_type": <type>,    # type fields only where the dataset has types,
                  "tail": <entity>, "tail_type": <type>},   # restricted to the relation's type pairs
                 ... exactly n samples ...]}

- `hf`: llguidance compiles the schema into a token mask applied to every decoding step
  (tkre/generate/backends/hf_decoding.py);
- `vllm`: the schema goes into the per-row sampling parameters' `structured_outputs={"json": ...}`;
- `openai`: `response_format={"type": "json_schema", ...}`.

String lengths are bounded with `pattern` (not minLength/maxLength, which OpenAI's strict mode
rejects), so a sample cannot run on until `max_new_tokens` cuts it; a root object (not a bare array)
is what OpenAI's structured outputs require. What the schema cannot say -- both entities occur in the
context, the context is new -- the validator in tkre/generate/parse.py still checks on every sample.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from tkre.io import stable_hash

#: max characters of a generated context / entity (SemEval and TACRED sentences are far shorter)
MAX_CONTEXT_CHARS = 300
MAX_ENTITY_CHARS = 60
# one line of printable text without quote or backslash (no JSON escapes for a model to get wrong); the
# character class is llguidance's "slice" class, which keeps the mask computation ~10x cheaper than
# any other class (measured: 0.08 vs 1 ms per token on the SmolLM2 vocabulary)
_TEXT = r'^[^"\\\x00-\x1F\x7F]{1,%d}$'


def _text(max_chars: int) -> dict[str, Any]:
    return {"type": "string", "pattern": _TEXT % max_chars}


def sample_item_schema(relation: str, type_pairs: Sequence[Sequence[str]] | None = None) -> dict[str, Any]:
    """The schema of one sample of `relation`; with type pairs, one `anyOf` branch per allowed pair."""
    def item(head_type: str | None, tail_type: str | None) -> dict[str, Any]:
        props: dict[str, Any] = {"relation": {"type": "string", "enum": [relation]},
                                 "context": _text(MAX_CONTEXT_CHARS), "head": _text(MAX_ENTITY_CHARS)}
        if head_type is not None:
            props["head_type"] = {"type": "string", "enum": [head_type]}
        props["tail"] = _text(MAX_ENTITY_CHARS)
        if tail_type is not None:
            props["tail_type"] = {"type": "string", "enum": [tail_type]}
        return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}

    pairs = sorted({(str(h), str(t)) for h, t in (type_pairs or [])})
    if not pairs:
        return item(None, None)
    if len(pairs) == 1:
        return item(*pairs[0])
    return {"anyOf": [item(h, t) for h, t in pairs]}


def scdg_schema(relation: str, n: int, type_pairs: Sequence[Sequence[str]] | None = None) -> dict[str, Any]:
    """The JSON schema of one SCDG completion: an object holding exactly `n` samples of `relation`."""
    if n < 1:
        raise ValueError(f"an SCDG completion holds at least one sample (asked for {n})")
    return {"type": "object",
            "properties": {"samples": {"type": "array", "items": sample_item_schema(relation, type_pairs),
                                       "minItems": n, "maxItems": n}},
            "required": ["samples"], "additionalProperties": False}


def schema_json(schema: dict[str, Any]) -> str:
    """The text of a schema: what travels with a generation row and what its cache key hashes. Keys keep
    their order: decoders emit properties in the order the schema lists them."""
    return json.dumps(schema, separators=(",", ":"))


def schema_id(schema_text: str | None) -> str:
    """Short identity of a schema for cache keys ('' = free text)."""
    return stable_hash(schema_text, 16) if schema_text else ""


def example_json(relation: str, context: str, head: str, tail: str, head_type: str | None = None,
                 tail_type: str | None = None) -> str:
    """One sample in the schema's JSON (what the constrained prompt shows for each golden example)."""
    sample: dict[str, str] = {"relation": relation, "context": context, "head": head}
    if head_type is not None:
        sample["head_type"] = head_type
    sample["tail"] = tail
    if tail_type is not None:
        sample["tail_type"] = tail_type
    return json.dumps(sample, ensure_ascii=False)
