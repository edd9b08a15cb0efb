"""GenPT backbone (Han et al., EMNLP Findings 2022, "Generative Prompt Tuning for Relation
Classification"), in its masked-LM form.

Relation classification as prompt infilling: each relation is verbalised into label words, and
the input is the sentence followed by a template over the entities with mask slots where the
relation's words go:

    [CLS] sentence [SEP] the <subject type> <subject> [MASK] x L the <object type> <object> . [SEP]

(types are written only when the data has them; SemEval has none, so the template is just
`<subject> [MASK] x L <object> .`). Verbalisations shorter than the L slots (L = the longest
verbalisation in subword tokens) are padded with the tokenizer's pad token, so every relation has
exactly L target tokens. Scoring: score(r) = sum over the L slots of log p_MLM(token of r at slot).
Training: the masked-LM cross-entropy of the gold verbalisation at the L slots. Prediction: the
relation with the highest score; its softmax over relations is the reported confidence.

Simplifications against the paper (which uses T5/BART infilling or RoBERTa): entity types are
written as given, not generated; no continuous (soft) prompt tokens; all relations are scored at
once with one forward pass (the MLM slots are conditionally independent), which is the paper's
discriminative relation scoring without the separate entity-guided decoding step.
"""

from __future__ import annotations

import re
from typing import Sequence

from tkre.data.records import RelationExample
from tkre.errors import ConfigError
from tkre.finetune.inputs import Windowed, add_special, pad_batch, type_words, window_ranges, words_to_subwords

#: Longest entity mention (subwords) repeated in the template; longer mentions are cut.
MAX_ENTITY_SUBWORDS = 16

_SEMEVAL = re.compile(r"^([A-Za-z]+)-([A-Za-z]+)\((e[12]),(e[12])\)$")
_PREFIX = {"per": "person", "org": "organization", "loc": "location", "gpe": "place"}


def verbalize(relation: str) -> str:
    """Label words of a relation name.

    SemEval `A-B(e1,e2)`: the subject (e1) plays role A, the object role B -> "a to b";
    `A-B(e2,e1)`: the subject plays role B -> "b to a" (e.g. Cause-Effect(e2,e1) -> "effect to cause").
    No-relation classes -> "no relation". TACRED style `per:city_of_birth` -> "person city of birth".
    Anything else: lower-cased words of the name.
    """
    if relation in ("Other", "no_relation", "NA"):
        return "no relation"
    m = _SEMEVAL.match(relation)
    if m:
        a, b, first, _ = m.groups()
        subj_role, obj_role = (a, b) if first == "e1" else (b, a)
        return f"{subj_role.lower()} to {obj_role.lower()}"
    prefix, sep, rest = relation.partition(":")
    words = []
    if sep:
        words.append(_PREFIX.get(prefix.lower(), prefix.lower()))
    else:
        rest = relation
    words += [w for w in re.split(r"[_/\-\s():.]+", rest.lower()) if w]
    return " ".join(words)


def label_token_table(tokenizer, relations: Sequence[str],
                      label_words: dict[str, str] | None = None) -> list[list[int]]:
    """[R][L] target token ids: each verbalisation tokenised and padded with the pad token to the
    longest one. Two relations with the same tokens are a ConfigError."""
    words = [(label_words or {}).get(r) or verbalize(r) for r in relations]
    ids = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in words]
    if any(not t for t in ids):
        bad = [r for r, t in zip(relations, ids) if not t]
        raise ConfigError(f"GenPT: empty verbalisation for relations {bad}")
    seen: dict[tuple, str] = {}
    for r, t in zip(relations, ids):
        if tuple(t) in seen:
            raise ConfigError(f"GenPT: relations {seen[tuple(t)]!r} and {r!r} have the same label words "
                              f"{tokenizer.decode(t)!r}; set finetune.genpt_label_words")
        seen[tuple(t)] = r
    width = max(len(t) for t in ids)
    pad = tokenizer.pad_token_id
    return [t + [pad] * (width - len(t)) for t in ids]


def encode(examples: Sequence[RelationExample], tokenizer, *, relations: Sequence[str], max_length: int,
           use_types: bool, label_table: list[list[int]]) -> tuple[list[dict], int]:
    """Examples -> items {input_ids, mask_pos (L), target_ids (L), label} and the windowed count."""
    label_of = {r: i for i, r in enumerate(relations)}
    n_slots = len(label_table[0])
    mask_id = tokenizer.mask_token_id
    if mask_id is None:
        raise ConfigError("GenPT needs a masked-LM tokenizer with a mask token")
    n_special = tokenizer.num_special_tokens_to_add(pair=True)

    sentences = [list(ex.tokens) for ex in examples]
    subj_words = [(["the", *type_words(ex.subj_type)] if use_types and ex.subj_type else []) + list(
        ex.tokens[ex.subj_start:ex.subj_end]) for ex in examples]
    obj_words = [(["the", *type_words(ex.obj_type)] if use_types and ex.obj_type else []) + list(
        ex.tokens[ex.obj_start:ex.obj_end]) + ["."] for ex in examples]
    sent_pieces = words_to_subwords(tokenizer, sentences)
    subj_pieces = words_to_subwords(tokenizer, subj_words)
    obj_pieces = words_to_subwords(tokenizer, obj_words)

    items, n_windowed = [], 0
    for ex, (ids, starts), (s_ids, _), (o_ids, _) in zip(examples, sent_pieces, subj_pieces, obj_pieces):
        prompt = s_ids[:MAX_ENTITY_SUBWORDS] + [mask_id] * n_slots + o_ids[-(MAX_ENTITY_SUBWORDS + 1):]
        budget = max_length - n_special - len(prompt)
        if budget < 8:
            raise ConfigError(f"max_length {max_length} leaves {budget} subwords for the sentence of "
                              f"{ex.id} after the GenPT template; raise max_length")
        keep = [(starts[ex.subj_start], starts[ex.subj_end]), (starts[ex.obj_start], starts[ex.obj_end])]
        win, _ = Windowed.apply(ids, window_ranges(len(ids), keep, budget))
        n_windowed += win.windowed
        full, _, prompt_at = add_special(tokenizer, win.ids, prompt)
        first_mask = prompt_at + min(len(s_ids), MAX_ENTITY_SUBWORDS)
        mask_pos = list(range(first_mask, first_mask + n_slots))
        label = label_of.get(ex.relation, -1)
        target = label_table[label] if label >= 0 else [-100] * n_slots
        items.append({"input_ids": full, "mask_pos": mask_pos, "target_ids": target, "label": label})
    return items, n_windowed


def collate(items: list[dict], pad_id: int) -> dict:
    import torch

    ids, mask = pad_batch([it["input_ids"] for it in items], pad_id)
    return {"input_ids": ids, "attention_mask": mask,
            "mask_pos": torch.tensor([it["mask_pos"] for it in items], dtype=torch.long),
            "target_ids": torch.tensor([it["target_ids"] for it in items], dtype=torch.long),
            "labels": torch.tensor([it["label"] for it in items], dtype=torch.long)}


def _model_class():
    import torch
    import torch.nn.functional as F
    from torch import nn

    class GenPTModel(nn.Module):
        """Masked LM + the fixed label token table; forward scores every relation."""

        def __init__(self, mlm, label_table: list[list[int]]):
            super().__init__()
            self.mlm = mlm
            self.register_buffer("label_table", torch.tensor(label_table, dtype=torch.long), persistent=False)

        def forward(self, input_ids, attention_mask, mask_pos, target_ids=None, labels=None):
            hidden = self.mlm.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            rows = torch.arange(hidden.size(0), device=hidden.device).unsqueeze(1)
            slot_states = hidden[rows, mask_pos]                                # [B, L, H]
            logp = F.log_softmax(_mlm_head(self.mlm)(slot_states), dim=-1)      # [B, L, V]
            table = self.label_table                                            # [R, L]
            n_rel, n_slots = table.shape
            gathered = logp.gather(2, table.t().unsqueeze(0).expand(logp.size(0), n_slots, n_rel))  # [B, L, R]
            out = {"scores": gathered.sum(dim=1)}                               # [B, R]
            if target_ids is not None:
                out["loss"] = F.cross_entropy(logp.reshape(-1, logp.size(-1)), target_ids.reshape(-1),
                                              ignore_index=-100)
            return out

    return GenPTModel


def _mlm_head(mlm):
    """The module mapping hidden states to vocabulary logits (BERT: `cls`, RoBERTa: `lm_head`)."""
    for name in ("cls", "lm_head", "vocab_projector", "generator_lm_head"):
        head = getattr(mlm, name, None)
        if head is not None:
            if name == "vocab_projector":  # DistilBERT: transform + norm live beside the projector
                def distil(h, m=mlm):
                    return m.vocab_projector(m.vocab_layer_norm(m.activation(m.vocab_transform(h))))
                return distil
            return head
    raise ConfigError(f"GenPT: no masked-LM head found on {type(mlm).__name__}")


def build_model(init_path: str, label_table: list[list[int]]):
    from transformers import AutoModelForMaskedLM

    mlm = AutoModelForMaskedLM.from_pretrained(init_path)
    return _model_class()(mlm, label_table)


def save_model(model, directory: str) -> None:
    model.mlm.save_pretrained(directory)


def load_model(directory: str, label_table: list[list[int]]):
    return build_model(directory, label_table)
