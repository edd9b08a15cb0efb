"""Pre-training corpora -> token ids with roles -> masked batches.

A corpus is a list of `SpanText` (text + optional subject/object character spans + relation):
golden/synthetic examples give exact spans; explanations get them by locating the mentions.
`encode_corpus` tokenizes once (on the driver) and counts what it had to skip; `MaskedSpanDataset`
draws fresh masks (and SCL negative spans) per epoch from (seed, epoch, index).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

from tkre.config import SCLConfig
from tkre.data import RelationExample
from tkre.data.records import example_text_and_spans
from tkre.errors import DataError, TkreError
from tkre.pretrain.masking import (
    ENTITY,
    IGNORE_INDEX,
    OTHER,
    RELATION,
    SPECIAL,
    CharSpan,
    MaskingProbabilities,
    bert_mask,
    item_generator,
    locate_mentions,
    mslm_mask,
    role_probabilities,
    token_roles,
)
from tkre.pretrain.scl import sample_negative_span


#: encode_corpus's count of SCL examples without a negative span (their SCL term is skipped)
SCL_SKIPPED = "scl_skipped_no_negative_span"


@dataclass(frozen=True)
class SpanText:
    text: str
    subj: CharSpan | None
    obj: CharSpan | None
    relation: str | None
    record: str  # for error messages


@dataclass(frozen=True)
class EncodedText:
    input_ids: tuple[int, ...]
    roles: tuple[int, ...]
    relation: int  # anchor index, -1 when unused


def from_examples(examples: list[RelationExample]) -> list[SpanText]:
    out = []
    for ex in examples:
        text, subj, obj = example_text_and_spans(ex.tokens, (ex.subj_start, ex.subj_end), (ex.obj_start, ex.obj_end))
        out.append(SpanText(text, subj, obj, ex.relation, ex.id))
    return out


def from_explanations(rows: list[dict], counts: Counter) -> list[SpanText]:
    """Explanation rows (relation, subject, object, explanation, ...) with the mentions located in
    the explanation text. Rows whose mentions are not found are kept (plain 0.2 masking) and counted."""
    out = []
    for i, row in enumerate(rows):
        text = row.get("explanation")
        if not isinstance(text, str) or not text.strip():
            raise DataError("empty or missing explanation text", record=row.get("source_id", i), field="explanation")
        subj, obj = locate_mentions(text, str(row.get("subject") or ""), str(row.get("object") or ""))
        if subj is None:
            counts["explanation_subject_not_found"] += 1
        if obj is None:
            counts["explanation_object_not_found"] += 1
        out.append(SpanText(text, subj, obj, row.get("relation"), str(row.get("source_id", i))))
    return out


def _covered(span: CharSpan | None, offsets, roles) -> bool:
    """True when the whole mention survived truncation (its last character is inside a kept token)."""
    if span is None:
        return True
    ends = [b for (a, b), r in zip(offsets, roles) if r != SPECIAL]
    return bool(ends) and max(ends) >= span[1]


def encode_corpus(tokenizer, texts: list[SpanText], *, max_length: int,
                  relation_index=None) -> tuple[list[EncodedText], Counter]:
    """Tokenize with offsets, assign roles. Examples whose subject or object is cut off by
    `max_length` are skipped and counted (`entity_truncated`). `relation_index(relation, record)`
    maps relations to anchor rows (and raises for unknown ones) when SCL is on; then examples with no
    token outside the entities and the relation span are counted (SCL_SKIPPED): they keep their
    MSLM term, but have no negative span, so their SCL term is skipped."""
    counts: Counter = Counter()
    out = []
    for t in texts:
        enc = tokenizer(t.text, truncation=True, max_length=max_length, return_offsets_mapping=True,
                        return_special_tokens_mask=True)
        offsets = [tuple(o) for o in enc["offset_mapping"]]
        roles = token_roles(t.text, offsets, enc["special_tokens_mask"], t.subj, t.obj)
        if not (_covered(t.subj, offsets, roles) and _covered(t.obj, offsets, roles)):
            counts["entity_truncated"] += 1
            continue
        rel = -1
        if relation_index is not None:
            if t.relation is None:
                raise DataError("no relation label", record=t.record, field="relation")
            rel = relation_index(t.relation, t.record)
            if RELATION not in roles:
                counts["empty_relation_span"] += 1  # adjacent mentions: positive = the entity tokens
            if OTHER not in roles:
                counts[SCL_SKIPPED] += 1  # no token for a negative span: the example has no SCL term
        out.append(EncodedText(tuple(enc["input_ids"]), tuple(roles), rel))
    return out, counts


@dataclass
class MaskingSettings:
    masking: str  # "mslm" | "bert"
    probs: MaskingProbabilities
    bert_rate: float
    mask_token_id: int
    vocab_size: int
    pad_token_id: int
    seed: int
    scl: SCLConfig | None = None  # when set, items carry SCL's positive/negative span masks


class MaskedSpanDataset(torch.utils.data.Dataset):
    """Encoded texts -> masked items. Masks depend on (seed, epoch, index) only."""

    def __init__(self, items: list[EncodedText], settings: MaskingSettings, epoch: int = 0):
        if not items:
            raise TkreError("empty pre-training corpus: nothing left to train on")
        self.items, self.s, self.epoch = items, settings, epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        item, s = self.items[i], self.s
        g = item_generator(s.seed, self.epoch, i)
        ids = torch.tensor(item.input_ids, dtype=torch.long)
        roles = torch.tensor(item.roles, dtype=torch.long)
        if s.masking == "bert":
            inputs, labels = bert_mask(ids, roles == SPECIAL, s.mask_token_id, s.vocab_size, g, s.bert_rate)
        else:
            inputs, labels = mslm_mask(ids, role_probabilities(roles, s.probs), s.mask_token_id, g)
        out = {"input_ids": inputs, "labels": labels}
        if s.scl is not None:
            pos = roles == RELATION
            if not pos.any():
                pos = roles == ENTITY
            neg, _ = sample_negative_span(roles, s.scl.negative_span_min, s.scl.negative_span_max, g,
                                          s.scl.negative_span)
            out.update(pos_mask=pos, neg_mask=neg, relation=item.relation)
        return out


def collate_masked(items: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Pad to the longest item of the batch."""
    n = max(len(it["input_ids"]) for it in items)

    def pad(key, value, dtype):
        t = torch.full((len(items), n), value, dtype=dtype)
        for row, it in enumerate(items):
            t[row, :len(it[key])] = it[key]
        return t

    batch = {"input_ids": pad("input_ids", pad_token_id, torch.long),
             "labels": pad("labels", IGNORE_INDEX, torch.long)}
    batch["attention_mask"] = torch.zeros((len(items), n), dtype=torch.long)
    for row, it in enumerate(items):
        batch["attention_mask"][row, :len(it["input_ids"])] = 1
    if "pos_mask" in items[0]:
        batch["pos_mask"] = pad("pos_mask", False, torch.bool)
        batch["neg_mask"] = pad("neg_mask", False, torch.bool)
        batch["relation"] = torch.tensor([it["relation"] for it in items], dtype=torch.long)
    return batch
