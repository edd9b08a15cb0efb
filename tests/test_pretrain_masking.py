"""Masking roles from offset mappings (WordPiece and byte-level BPE), Bernoulli rates, BERT 80/10/10,
mention location in explanations, truncation skips."""

from __future__ import annotations

import math

import pytest
import torch

from tkre.pretrain.data import SpanText, encode_corpus, from_examples, from_explanations
from tkre.data.records import example_text_and_spans
from tkre.pretrain.masking import (
    ENTITY,
    IGNORE_INDEX,
    OTHER,
    RELATION,
    SPECIAL,
    MaskingProbabilities,
    bert_mask,
    locate_mentions,
    mslm_mask,
    role_probabilities,
    token_roles,
)

SENTENCE = ["the", "hammerhead", "shark", "was", "swimming", "into", "the", "deep", "reefs", "today", "."]
SUBJ, OBJ = (1, 3), (7, 9)  # "hammerhead shark", "deep reefs"


@pytest.fixture(scope="module")
def wordpiece():
    from transformers import AutoTokenizer

    from tkre.model_sources import resolve_encoder

    return AutoTokenizer.from_pretrained(resolve_encoder("embedded:minilm"))


def _bpe(trim_offsets: bool):
    """A small RoBERTa-style byte-level BPE tokenizer trained offline on SemEval sentences."""
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import PreTrainedTokenizerFast

    from tkre.data import load_dataset

    texts = [ex.text for ex in load_dataset("semeval").splits["train"][:2000]]
    tok = ByteLevelBPETokenizer(add_prefix_space=True, trim_offsets=trim_offsets)
    tok.train_from_iterator(texts, vocab_size=400, min_frequency=2,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False)
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")),
                                                      ("<s>", tok.token_to_id("<s>")), trim_offsets=trim_offsets)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", mask_token="<mask>", cls_token="<s>", sep_token="</s>")


def _word_roles(tokenizer, tokens=SENTENCE, subj=SUBJ, obj=OBJ):
    text, s, o = example_text_and_spans(tokens, subj, obj)
    enc = tokenizer(text, return_offsets_mapping=True, return_special_tokens_mask=True)
    roles = token_roles(text, enc["offset_mapping"], enc["special_tokens_mask"], s, o)
    pieces = tokenizer.convert_ids_to_tokens(enc["input_ids"])
    return pieces, roles, enc


def test_char_spans_of_word_tokens():
    text, s, o = example_text_and_spans(SENTENCE, SUBJ, OBJ)
    assert text[s[0]:s[1]] == "hammerhead shark" and text[o[0]:o[1]] == "deep reefs"




@pytest.mark.parametrize("kind", ["wordpiece", "bpe_trimmed", "bpe_untrimmed"])
def test_roles_follow_offsets_for_wordpiece_and_bpe(kind, wordpiece):
    tok = wordpiece if kind == "wordpiece" else _bpe(trim_offsets=kind == "bpe_trimmed")
    pieces, roles, enc = _word_roles(tok)
    text, _, _ = example_text_and_spans(SENTENCE, SUBJ, OBJ)
    assert roles[0] == SPECIAL and roles[-1] == SPECIAL
    # map every token back to the word its offsets fall in, and check the role of that word
    word_role = {1: ENTITY, 2: ENTITY, 3: RELATION, 4: RELATION, 5: RELATION, 6: RELATION, 7: ENTITY, 8: ENTITY,
                 0: OTHER, 9: OTHER, 10: OTHER}
    starts = [sum(len(w) + 1 for w in SENTENCE[:i]) for i in range(len(SENTENCE))]
    n_sub = 0
    for (a, b), role, special in zip(enc["offset_mapping"], roles, enc["special_tokens_mask"]):
        if special:
            continue
        piece = text[a:b].strip()
        a = a + (b - a - len(text[a:b].lstrip()))
        word = max(i for i, st in enumerate(starts) if st <= a)
        n_sub += len(piece) < len(SENTENCE[word])
        assert role == word_role[word], (kind, piece, SENTENCE[word], role)
    assert n_sub > 0, "the test sentence should split some word into sub-tokens"
    # the first "the" (OTHER) and the second "the" (between the mentions -> RELATION) differ
    the_roles = [r for (a, b), r in zip(enc["offset_mapping"], roles) if text[a:b].strip() == "the"]
    assert the_roles == [OTHER, RELATION]


def test_object_before_subject_and_adjacent_mentions(wordpiece):
    _, roles, _ = _word_roles(wordpiece, subj=(7, 9), obj=(1, 3))  # reversed order: same relation span
    _, roles_fwd, _ = _word_roles(wordpiece)
    assert roles == roles_fwd
    _, roles_adj, _ = _word_roles(wordpiece, subj=(1, 3), obj=(3, 4))  # "... shark was": no relation span
    assert RELATION not in roles_adj and roles_adj.count(ENTITY) >= 3


def test_locate_mentions_in_explanation():
    text = ("The Burst was reported last week in the city, and engineers later found water hammer. "
            "Because Water Hammer produces the burst, the relation Cause-Effect holds.")
    s, o = locate_mentions(text, "water hammer", "burst")
    assert text[s[0]:s[1]] == "Water Hammer" and text[o[0]:o[1]] == "burst"  # closest pair, case-insensitive
    assert s[0] > text.index("Because") and o[0] > s[1]
    assert locate_mentions("a bursting pipe", "pipe", "burst") == ((11, 15), None)  # whole words only
    assert locate_mentions("water\n  hammer hit", "water hammer", "hit") == ((0, 14), (15, 18))
    counts = __import__("collections").Counter()
    rows = [{"relation": "r", "subject": "water hammer", "object": "pipe", "explanation": text, "source_id": "x"}]
    (st,) = from_explanations(rows, counts)
    assert st.subj is not None and st.obj is None and counts["explanation_object_not_found"] == 1


def test_mslm_never_masks_special_tokens_and_labels_only_masked():
    roles = torch.tensor([SPECIAL, OTHER, ENTITY, RELATION, RELATION, ENTITY, SPECIAL])
    ids = torch.arange(10, 17)
    probs = role_probabilities(roles, MaskingProbabilities(1.0, 1.0, 1.0))
    inputs, labels = mslm_mask(ids, probs, mask_token_id=99, generator=torch.Generator().manual_seed(0))
    assert inputs.tolist() == [10, 99, 99, 99, 99, 99, 16]
    assert labels.tolist() == [IGNORE_INDEX, 11, 12, 13, 14, 15, IGNORE_INDEX]
    a = mslm_mask(ids, role_probabilities(roles, MaskingProbabilities()), 99, torch.Generator().manual_seed(5))
    b = mslm_mask(ids, role_probabilities(roles, MaskingProbabilities()), 99, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])  # seeded


def test_empirical_masking_rate_per_role_matches_its_probability():
    probs = MaskingProbabilities(relation=0.8, entity=0.5, other=0.2)
    roles = torch.tensor([SPECIAL] + [OTHER] * 10 + [ENTITY] * 5 + [RELATION] * 7 + [SPECIAL])
    ids = torch.arange(100, 100 + len(roles))
    g = torch.Generator().manual_seed(1)
    n_draws = 3000
    masked = torch.zeros(len(roles))
    for _ in range(n_draws):
        _, labels = mslm_mask(ids, role_probabilities(roles, probs), 0, g)
        masked += (labels != IGNORE_INDEX).float()
    for role, p in ((OTHER, 0.2), (ENTITY, 0.5), (RELATION, 0.8), (SPECIAL, 0.0)):
        sel = roles == role
        n = n_draws * int(sel.sum())
        rate = float(masked[sel].sum()) / n
        sigma = math.sqrt(p * (1 - p) / n) if 0 < p < 1 else 0.0
        assert abs(rate - p) <= 4 * sigma + 1e-12, (role, rate, p)


def test_bert_masking_15_percent_80_10_10():
    n = 200_000
    ids = torch.full((n,), 7)
    special = torch.zeros(n, dtype=torch.bool)
    special[:1000] = True
    inputs, labels = bert_mask(ids, special, mask_token_id=3, vocab_size=50, generator=torch.Generator().manual_seed(0))
    chosen = labels != IGNORE_INDEX
    assert not chosen[:1000].any()
    rate = float(chosen[1000:].float().mean())
    assert abs(rate - 0.15) < 4 * math.sqrt(0.15 * 0.85 / (n - 1000))
    m = int(chosen.sum())
    to_mask = float((inputs[chosen] == 3).sum()) / m
    unchanged = float((inputs[chosen] == 7).sum()) / m  # includes random draws of id 7 (1/50 of 10%)
    assert abs(to_mask - 0.8) < 0.01 and abs(unchanged - (0.1 + 0.1 / 50)) < 0.01
    assert (labels[chosen] == 7).all()


def test_entity_cut_by_truncation_is_a_counted_skip(wordpiece):
    long = ["word"] * 60 + ["the", "shark", "ate", "a", "fish"]
    from tkre.data import RelationExample

    exs = [RelationExample("far", tuple(long), 61, 62, 64, 65, "r"),
           RelationExample("near", tuple(SENTENCE), 1, 3, 7, 9, "r")]
    items, counts = encode_corpus(wordpiece, from_examples(exs), max_length=32)
    assert len(items) == 1 and counts["entity_truncated"] == 1
    items, counts = encode_corpus(wordpiece, from_examples(exs), max_length=128)
    assert len(items) == 2 and not counts["entity_truncated"]


def test_span_text_without_mentions_is_plain_other(wordpiece):
    items, _ = encode_corpus(wordpiece, [SpanText("some words here", None, None, None, "x")], max_length=16)
    assert set(items[0].roles) == {SPECIAL, OTHER}
