"""Prompt templates for knowledge generation, in one place (see shared/method.md sections 1-2).

- EDKG: ask the LLM to explain, from the text, why the subject holds the relation with the object.
  As in the reference code (UESTC-GQJ/TKRE) the prompt sets no length: the paper's explanations run
  150-250 words, bounded only by `edkg.max_new_tokens`.
- SCDG: show golden samples of one relation in a fixed schema and ask for N more in the same schema.

Templates are `str.format` strings; every one can be overridden (`edkg.prompt`, `scdg.prompt`,
`scdg.example_prompt`; the system message is the generator's `system_prompt`).
Prompts are plain user messages: the backends wrap them in the model's chat template when it has one
(`as_chat_text`), or send them as chat messages (OpenAI-compatible servers, vLLM's chat stage).
"""

from __future__ import annotations

from typing import Any, Sequence

from tkre.data.records import RelationExample, example_text_and_spans
from tkre.generate.schema import example_json

EDKG_TEMPLATE = (
    "Take the text below and give an explanation of why the subject \"{subject}\" has the relation "
    "\"{relation}\" with the object \"{object}\".\n\n"
    "Text: {text}\n"
    "Subject: {subject}\n"
    "Object: {object}\n"
    "Relation: {relation}\n\n"
    "Explanation:"
)

#: One sample in the SCDG schema. Type lines stay empty for datasets without entity types (SemEval).
SCDG_EXAMPLE_TEMPLATE = (
    "Relation: {relation}.\n"
    "Context: {text}\n"
    "Head Entity: {subject}.\n"
    "Head Type: {subj_type}.\n"
    "Tail Entity: {object}.\n"
    "Tail Type: {obj_type}.\n"
)

SCDG_TEMPLATE = (
    "Here are samples of the relation \"{relation}\" between a head entity and a tail entity. "
    "Each sample has the fields Relation, Context, Head Entity, Head Type, Tail Entity and Tail Type; "
    "both entities are copied word for word from the context.\n\n"
    "{examples}\n"
    "Generate {n} more samples like above for the relation \"{relation}\", each with a new context, "
    "in exactly the same format:\n"
)

#: The same request for constrained decoding (tkre/generate/schema.py): samples shown and asked as JSON.
SCDG_JSON_TEMPLATE = (
    "Here are samples of the relation \"{relation}\" between a head entity and a tail entity, one JSON "
    "object per sample; in each context the head entity is marked <head>...</head> and the tail entity "
    "<tail>...</tail>.\n\n"
    "{examples}\n\n"
    "Generate {n} more samples like above for the relation \"{relation}\", each with a new context, "
    "as JSON: {{\"samples\": [...]}}\n"
)

def edkg_prompt(ex: RelationExample, template: str | None = None) -> str:
    """The EDKG prompt for one golden example (`template` overrides EDKG_TEMPLATE)."""
    return (template or EDKG_TEMPLATE).format(text=ex.text, subject=ex.subject, object=ex.object,
                                              relation=ex.relation)


def scdg_example_block(ex: RelationExample, template: str | None = None) -> str:
    return (template or SCDG_EXAMPLE_TEMPLATE).format(
        relation=ex.relation, text=ex.text, subject=ex.subject, object=ex.object,
        subj_type=ex.subj_type or "", obj_type=ex.obj_type or "")


def scdg_prompt(relation: str, examples: Sequence[RelationExample], n: int, template: str | None = None,
                example_template: str | None = None, *, constrained: bool = False, typed: bool = False) -> str:
    """The SCDG prompt for one relation: `examples` in the schema, then the request for `n` more.

    constrained: the examples as JSON objects of tkre/generate/schema.py (type fields when `typed`),
    in `template` or SCDG_JSON_TEMPLATE; the example template applies to the free-text form only."""
    if constrained:
        blocks = "\n".join(_example_json(ex, typed) for ex in examples)
        return (template or SCDG_JSON_TEMPLATE).format(relation=relation, examples=blocks, n=n)
    blocks = "\n".join(scdg_example_block(ex, example_template) for ex in examples)
    return (template or SCDG_TEMPLATE).format(relation=relation, examples=blocks, n=n)


def _example_json(ex: RelationExample, typed: bool) -> str:
    text, head, tail = example_text_and_spans(ex.tokens, (ex.subj_start, ex.subj_end), (ex.obj_start, ex.obj_end))
    return example_json(ex.relation, text, head, tail, (ex.subj_type or "") if typed else None,
                        (ex.obj_type or "") if typed else None)


def chat_messages(prompt: str, system: str | None = None) -> list[dict[str, str]]:
    """OpenAI-style messages for one prompt."""
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": prompt}]


def as_chat_text(tokenizer: Any, prompt: str, system: str | None = None) -> str:
    """The model input for `prompt`: the tokenizer's chat template if it has one, else plain text."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(chat_messages(prompt, system), tokenize=False,
                                             add_generation_prompt=True)
    return f"{system}\n\n{prompt}" if system else prompt
