"""Knowledge-guided masking (MSLM) and the BERT-style ablation, as pure functions.

Every token gets a role from the tokenizer's offset mapping (character ranges, never a search for
sub-token sequences, so BPE and WordPiece tokenizers behave alike):

  SPECIAL  [CLS]/<s>, [SEP]/</s>, padding: never masked
  ENTITY   overlaps the subject or object mention                       (p_entity,   paper 0.5)
  RELATION between the two mentions (the "relation span")                (p_relation, paper 0.8)
  OTHER    everything else                                               (p_other,    paper 0.2)

then an independent Bernoulli draw per token with a seeded `torch.Generator`. Masked tokens become
the mask token; labels hold the original id there and -100 everywhere else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

OTHER, ENTITY, RELATION, SPECIAL = 0, 1, 2, 3
IGNORE_INDEX = -100

CharSpan = tuple[int, int]  # [start, end) in characters


@dataclass(frozen=True)
class MaskingProbabilities:
    relation: float = 0.8
    entity: float = 0.5
    other: float = 0.2


def _mention_pattern(mention: str) -> re.Pattern:
    words = [re.escape(w) for w in mention.split()]
    body = r"\s+".join(words)
    left = r"(?<!\w)" if mention[:1].isalnum() else ""
    right = r"(?!\w)" if mention[-1:].isalnum() else ""
    return re.compile(left + body + right, re.IGNORECASE)


def locate_mentions(text: str, subject: str, obj: str) -> tuple[CharSpan | None, CharSpan | None]:
    """Character spans of the subject and object mentions in free text (e.g. an LLM explanation).

    Case-insensitive, whole words, any whitespace between words. When a mention occurs several
    times, the non-overlapping pair closest together is chosen (it most likely states the relation).
    Returns None for a mention that does not occur."""
    if not subject.strip() or not obj.strip():
        return None, None
    subs = [m.span() for m in _mention_pattern(subject.strip()).finditer(text)]
    objs = [m.span() for m in _mention_pattern(obj.strip()).finditer(text)]
    if not subs or not objs:
        return (subs[0] if subs else None), (objs[0] if objs else None)
    best, best_gap = None, None
    for s in subs:
        for o in objs:
            if s[0] < o[1] and o[0] < s[1]:  # overlapping (e.g. one mention contains the other)
                continue
            gap = o[0] - s[1] if s[0] < o[0] else s[0] - o[1]
            if best_gap is None or gap < best_gap:
                best, best_gap = (s, o), gap
    if best is None:
        return subs[0], None
    return best


def relation_char_span(subj: CharSpan | None, obj: CharSpan | None) -> CharSpan | None:
    """Characters strictly between the two mentions (whichever comes first); None if either is missing."""
    if subj is None or obj is None:
        return None
    first, second = sorted([subj, obj])
    return (first[1], second[0]) if first[1] <= second[0] else None


def token_roles(text: str, offsets: list[tuple[int, int]], special_tokens_mask: list[int],
                subj: CharSpan | None, obj: CharSpan | None) -> list[int]:
    """Role of every token from its character offsets. Whitespace at a token's edges is ignored
    (byte-level BPE tokens may carry their leading space); entities win over the relation span."""
    rel = relation_char_span(subj, obj)
    roles = []
    for (a, b), special in zip(offsets, special_tokens_mask):
        if special or a >= b:
            roles.append(SPECIAL)
            continue
        piece = text[a:b]
        if piece.strip():  # a pure-whitespace token keeps its range
            a, b = a + (len(piece) - len(piece.lstrip())), b - (len(piece) - len(piece.rstrip()))
        if any(span is not None and a < span[1] and span[0] < b for span in (subj, obj)):
            roles.append(ENTITY)
        elif rel is not None and a < rel[1] and rel[0] < b:
            roles.append(RELATION)
        else:
            roles.append(OTHER)
    return roles


def role_probabilities(roles: torch.Tensor, probs: MaskingProbabilities) -> torch.Tensor:
    """Per-token masking probability; 0 for special tokens."""
    table = torch.tensor([probs.other, probs.entity, probs.relation, 0.0], dtype=torch.float32)
    return table[roles.long()]


def mslm_mask(input_ids: torch.Tensor, mask_probs: torch.Tensor, mask_token_id: int,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent Bernoulli(p_i) per token; masked tokens -> mask token. Returns (inputs, labels)."""
    chosen = torch.bernoulli(mask_probs, generator=generator).bool()
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    return torch.where(chosen, torch.full_like(input_ids, mask_token_id), input_ids), labels


def bert_mask(input_ids: torch.Tensor, special: torch.Tensor, mask_token_id: int, vocab_size: int,
              generator: torch.Generator, rate: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking ("w/o MSLM" ablation): choose `rate` of the non-special tokens; of those 80% ->
    mask token, 10% -> a random token, 10% unchanged. Labels on all chosen tokens."""
    probs = torch.full(input_ids.shape, rate, dtype=torch.float32).masked_fill(special.bool(), 0.0)
    chosen = torch.bernoulli(probs, generator=generator).bool()
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    u = torch.rand(input_ids.shape, generator=generator)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator, dtype=input_ids.dtype)
    out = torch.where(chosen & (u < 0.8), torch.full_like(input_ids, mask_token_id), input_ids)
    out = torch.where(chosen & (u >= 0.8) & (u < 0.9), random_ids, out)
    return out, labels


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The generator for one example in one epoch: masks depend on (seed, epoch, index) only, not on
    the number of workers or the order the data loader visits examples in."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch * 10_007 + index) % (2**63 - 1))
