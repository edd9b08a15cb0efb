"""The SCDG sample schema, written once as a JSON schema and enforced at decode time by every backend.

This is the decode-time form of the paper's schema constraint (method section 2: "Relation, Context,
Head Entity, Head Type, Tail Entity, Tail Type"): instead of letting the LLM write free text and
throwing away what a regular expression cannot read, the decoder may only emit JSON of this shape:

    {"samples": [{"relation": <the relation asked, fixed>,
                  "context": <one sentence with the head marked <head>...</head> and the tail
                              marked <tail>...</tail>, each exactly once, in either order>,
                  "head_type": <type>, "tail_type": <type>},   # only where the dataset has types,
                 ... exactly n samples ...]}                    # restricted to the relation's pairs

The head and tail are the marked strings. Marking them inside the context (SemEval's own <e1>/<e2>
layout) instead of writing them again in fields of their own makes "both entities occur in the
context, once each, without overlapping" part of the grammar: a regular expression can require two
marked spans, but no grammar can require one field to repeat a substring of another. With separate
fields, that check rejected 198 of the 393 rejected samples of the first constrained benchmark run
(benchmarks/results.md). What the schema still cannot say -- the marks fall on whole words, the
context is new -- the validator in tkre/generate/parse.py checks on every sample.

- `hf`: llguidance compiles the schema into a token mask applied to every decoding step
  (tkre/generate/backends/hf_decoding.py);
- `vllm`: the schema goes into the per-row sampling parameters' `structured_outputs={"json": ...}`;
- `openai`: in the dialect the server speaks, found once per job (tkre/generate/backends/openai.py):
  `response_format={"type": "json_schema", ...}` (OpenAI), `{"type": "json_object", "schema": ...}`
  (llama.cpp), vLLM's `structured_outputs` / `guided_json` extra body, Ollama's `format`; else free text.

String lengths are bounded in the `pattern` (not minLength/maxLength, which OpenAI's strict mode
rejects), so a sample cannot run on until `max_new_tokens` cuts it; a root object (not a bare array)
is what OpenAI's structured outputs require.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from tkre.io import stable_hash

#: max characters of a generated context / entity (SemEval and TACRED sentences are far shorter)
MAX_CONTEXT_CHARS = 300
MAX_ENTITY_CHARS = 60
#: the marks around the head and the tail inside a context
HEAD_OPEN, HEAD_CLOSE, TAIL_OPEN, TAIL_CLOSE = "<head>", "</head>", "<tail>", "</tail>"
#: one character of a context: printable, no quote or backslash (no JSON escapes for a model to get
#: wrong), no angle bracket (only the marks have them)
TEXT_CHAR = r'[^"\\<>\x00-\x1F\x7F]'


def marked_context_pattern(max_chars: int = MAX_CONTEXT_CHARS, max_entity: int = MAX_ENTITY_CHARS) -> str:
    """A context with the head and the tail marked once each, in either order (each stretch of text
    between the marks at most `max_chars` // 2 characters, each entity 1..`max_entity`)."""
    gap, ent = f"{TEXT_CHAR}{{0,{max_chars // 2}}}", f"{TEXT_CHAR}{{1,{max_entity}}}"
    head, tail = f"{HEAD_OPEN}{ent}{HEAD_CLOSE}", f"{TAIL_OPEN}{ent}{TAIL_CLOSE}"
    return f"^({gap}{head}{gap}{tail}{gap}|{gap}{tail}{gap}{head}{gap})$"


def text_slices() -> list[str]:
    """Extra llguidance "slices" (token sets precomputed once per tokenizer) for the context's character
    class: with them a mask over the SmolLM2 vocabulary costs ~0.03 ms per token instead of ~0.2 ms."""
    return [f"{TEXT_CHAR}{{1,10}}", f"{TEXT_CHAR}{{1,30}}", f"{TEXT_CHAR}+"]


def sample_item_schema(relation: str, type_pairs: Sequence[Sequence[str]] | None = None) -> dict[str, Any]:
    """The schema of one sample of `relation`; with type pairs, one `anyOf` branch per allowed pair."""
    def item(head_type: str | None, tail_type: str | None) -> dict[str, Any]:
        props: dict[str, Any] = {"relation": {"type": "string", "enum": [relation]},
                                 "context": {"type": "string", "pattern": marked_context_pattern()}}
        if head_type is not None:
            props["head_type"] = {"type": "string", "enum": [head_type]}
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


def mark_context(context: str, head: tuple[int, int], tail: tuple[int, int]) -> str:
    """`context` with the character spans `head` and `tail` (end-exclusive, not overlapping) marked."""
    marks = sorted([(head, HEAD_OPEN, HEAD_CLOSE), (tail, TAIL_OPEN, TAIL_CLOSE)])
    out, pos = [], 0
    for (a, b), opening, closing in marks:
        out += [context[pos:a], opening, context[a:b], closing]
        pos = b
    return "".join(out + [context[pos:]])


def example_json(relation: str, context: str, head: tuple[int, int], tail: tuple[int, int],
                 head_type: str | None = None, tail_type: str | None = None) -> str:
    """One sample in the schema's JSON (what the constrained prompt shows for each golden example):
    `head` and `tail` are character spans of `context`."""
    sample: dict[str, str] = {"relation": relation, "context": mark_context(context, head, tail)}
    if head_type is not None:
        sample["head_type"] = head_type
    if tail_type is not None:
        sample["tail_type"] = tail_type
    return json.dumps(sample, ensure_ascii=False)
