"""Shared input plumbing for the fine-tuning backbones: tokenizer loading, word -> subword mapping,
and windowing that keeps both entities inside `max_length`.

Pure functions (no model, no Ray). Windowing works on subword positions:
`window_ranges(n, keep, budget)` returns the subword ranges to keep so that the start of every
`keep` span survives and the total length is at most `budget`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from tkre.errors import ConfigError


def load_tokenizer(path: str):
    """Fast tokenizer of a checkpoint folder or HF id (byte-level BPE gets add_prefix_space, which
    pre-split words need)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if not getattr(tok, "is_fast", False):
        raise ConfigError(f"{path}: tkre fine-tuning needs a fast tokenizer (tokenizer.json)")
    if getattr(tok, "add_prefix_space", None) is False:
        tok = AutoTokenizer.from_pretrained(path, add_prefix_space=True)
    return tok


def words_to_subwords(tokenizer, batch_words: Sequence[Sequence[str]]) -> list[tuple[list[int], list[int]]]:
    """For each word list: (subword ids without special tokens, start offset of every word plus the
    total length as a last entry), so word i covers subwords [starts[i], starts[i+1])."""
    enc = tokenizer([list(w) for w in batch_words], is_split_into_words=True, add_special_tokens=False)
    out = []
    for i, words in enumerate(batch_words):
        ids = enc["input_ids"][i]
        word_ids = enc.word_ids(i)
        starts = [0] * (len(words) + 1)
        counts = [0] * len(words)
        for w in word_ids:
            if w is not None:
                counts[w] += 1
        pos = 0
        for w in range(len(words)):
            starts[w] = pos
            pos += counts[w]
        starts[len(words)] = pos
        out.append((ids, starts))
    return out


def window_ranges(n: int, keep: Sequence[tuple[int, int]], budget: int) -> list[tuple[int, int]]:
    """Subword ranges (sorted, disjoint, end exclusive) of total length <= budget that contain the
    start of every `keep` span (and as much of each span and its context as fits).

    - n <= budget: everything.
    - all spans fit in one window: one window centred on them.
    - otherwise: one window per span (budget split evenly), each starting at its span's start; a
      span longer than its share is cut at the end.
    """
    if budget <= 0:
        raise ValueError(f"window budget must be positive (got {budget})")
    if n <= budget:
        return [(0, n)]
    lo = min(s for s, _ in keep)
    hi = max(e for _, e in keep)
    if hi - lo <= budget:
        extra = budget - (hi - lo)
        start = max(0, lo - extra // 2)
        end = min(n, start + budget)
        start = max(0, end - budget)
        return [(start, end)]
    share = budget // len(keep)
    ranges = []
    for s, e in sorted(keep):
        span = min(e - s, share)
        context = share - span
        start = max(0, s - context // 2)
        start = min(start, s)
        end = min(n, start + share)
        ranges.append((start, end))
    merged: list[tuple[int, int]] = []
    for s, e in ranges:
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    total = sum(e - s for s, e in merged)
    if total > budget:  # merging cannot grow the total, this guards the invariant
        raise AssertionError(f"window of {total} subwords exceeds budget {budget}")
    return merged


@dataclass
class Windowed:
    """Subword ids after windowing and a map old position -> new position (None if dropped)."""

    ids: list[int]
    windowed: bool

    @staticmethod
    def apply(ids: list[int], ranges: list[tuple[int, int]]) -> tuple["Windowed", dict[int, int]]:
        new_ids: list[int] = []
        mapping: dict[int, int] = {}
        for s, e in ranges:
            for p in range(s, e):
                mapping[p] = len(new_ids)
                new_ids.append(ids[p])
        return Windowed(new_ids, len(new_ids) < len(ids)), mapping


def type_words(entity_type: str | None) -> list[str]:
    """'STATE_OR_PROVINCE' -> ['state', 'or', 'province']; None -> []."""
    if not entity_type:
        return []
    return entity_type.lower().replace("_", " ").replace("/", " ").split()


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int):
    """Right-pad to the longest sequence: (input_ids, attention_mask) as LongTensors."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.as_tensor(s, dtype=torch.long)
        mask[i, :len(s)] = 1
    return ids, mask


def special_template(tokenizer) -> tuple[list[int], ...]:
    """(prefix, suffix) of a single sequence and (prefix, middle, suffix) of a pair, read off the
    tokenizer by encoding probe words (works for any fast tokenizer, e.g. [CLS] a [SEP] b [SEP])."""
    a = tokenizer("apple", add_special_tokens=False)["input_ids"]
    b = tokenizer("river", add_special_tokens=False)["input_ids"]
    single = tokenizer("apple")["input_ids"]
    pair = tokenizer("apple", "river")["input_ids"]

    def find(seq: list[int], sub: list[int], start: int = 0) -> int:
        for i in range(start, len(seq) - len(sub) + 1):
            if seq[i:i + len(sub)] == sub:
                return i
        raise ValueError(f"cannot read the special-token template of {type(tokenizer).__name__}")

    i = find(single, a)
    j = find(pair, a)
    k = find(pair, b, j + len(a))
    return single[:i], single[i + len(a):], pair[:j], pair[j + len(a):k], pair[k + len(b):]


def add_special(tokenizer, ids: list[int], pair_ids: list[int] | None = None) -> tuple[list[int], int, int]:
    """ids with the model's special tokens; returns (full ids, offset of ids, offset of pair_ids)."""
    cache = getattr(tokenizer, "_tkre_template", None)
    if cache is None:
        cache = special_template(tokenizer)
        try:
            tokenizer._tkre_template = cache
        except AttributeError:  # tokenizers refusing attributes just recompute
            pass
    s_pre, s_suf, p_pre, p_mid, p_suf = cache
    if pair_ids is None:
        return s_pre + ids + s_suf, len(s_pre), -1
    return p_pre + ids + p_mid + pair_ids + p_suf, len(p_pre), len(p_pre) + len(ids) + len(p_mid)
