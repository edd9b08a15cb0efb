"""TYP Marker backbone (Zhou & Chen 2022, "typed entity marker (punct)").

Input: `@ * subject-type * subject @ ... # ^ object-type ^ object #` inserted into the sentence.
Datasets without entity types (SemEval) leave the type slot out, giving `@ subject @ ... # object #`
-- Zhou & Chen's "entity marker (punct)" variant; no neutral word is invented.

Representation: h = concat(encoder state at the subject-start `@`, state at the object-start `#`)
-> MLP (Linear 2H->H, ReLU, dropout, Linear H->R) -> relation logits.

When the marked sentence is longer than `max_length`, a window of subwords around the two entities
is kept (see inputs.window_ranges) so both start markers survive; such examples are counted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from tkre.data.records import RelationExample
from tkre.finetune.inputs import Windowed, add_special, pad_batch, type_words, window_ranges, words_to_subwords

HEAD_FILE = "tkre_head.pt"

SUBJ_OPEN, SUBJ_TYPE, SUBJ_CLOSE = "@", "*", "@"
OBJ_OPEN, OBJ_TYPE, OBJ_CLOSE = "#", "^", "#"


def marked_words(ex: RelationExample, use_types: bool) -> tuple[list[str], tuple[int, int], tuple[int, int]]:
    """The sentence with typed punct markers; returns (words, subject span, object span) where each
    span is the word range of the whole marked entity (its first word is the start marker)."""

    def wrap(start: int, end: int, open_: str, tmark: str, close: str, etype: str | None) -> list[str]:
        typed = type_words(etype) if use_types else []
        head = [open_, tmark, *typed, tmark] if typed else [open_]
        return head + list(ex.tokens[start:end]) + [close]

    subj = (ex.subj_start, ex.subj_end, wrap(ex.subj_start, ex.subj_end, SUBJ_OPEN, SUBJ_TYPE, SUBJ_CLOSE,
                                             ex.subj_type))
    obj = (ex.obj_start, ex.obj_end, wrap(ex.obj_start, ex.obj_end, OBJ_OPEN, OBJ_TYPE, OBJ_CLOSE, ex.obj_type))
    words: list[str] = []
    spans: dict[str, tuple[int, int]] = {}
    pos = 0
    for name, (start, end, piece) in sorted({"subj": subj, "obj": obj}.items(), key=lambda kv: kv[1][0]):
        words.extend(ex.tokens[pos:start])
        spans[name] = (len(words), len(words) + len(piece))
        words.extend(piece)
        pos = end
    words.extend(ex.tokens[pos:])
    return words, spans["subj"], spans["obj"]


def encode(examples: Sequence[RelationExample], tokenizer, *, relations: Sequence[str], max_length: int,
           use_types: bool) -> tuple[list[dict], int]:
    """Examples -> items {input_ids, subj_pos, obj_pos, label} (label -1 = not in the label set),
    and the number of examples that had to be windowed."""
    label_of = {r: i for i, r in enumerate(relations)}
    n_special = tokenizer.num_special_tokens_to_add(pair=False)
    budget = max_length - n_special
    marked = [marked_words(ex, use_types) for ex in examples]
    pieces = words_to_subwords(tokenizer, [m[0] for m in marked])
    items, n_windowed = [], 0
    for ex, (words, subj, obj), (ids, starts) in zip(examples, marked, pieces):
        s_span = (starts[subj[0]], starts[subj[1]])
        o_span = (starts[obj[0]], starts[obj[1]])
        win, mapping = Windowed.apply(ids, window_ranges(len(ids), [s_span, o_span], budget))
        n_windowed += win.windowed
        full, offset, _ = add_special(tokenizer, win.ids)
        items.append({"input_ids": full, "subj_pos": mapping[s_span[0]] + offset,
                      "obj_pos": mapping[o_span[0]] + offset, "label": label_of.get(ex.relation, -1)})
    return items, n_windowed


def collate(items: list[dict], pad_id: int) -> dict:
    import torch

    ids, mask = pad_batch([it["input_ids"] for it in items], pad_id)
    return {"input_ids": ids, "attention_mask": mask,
            "subj_pos": torch.tensor([it["subj_pos"] for it in items], dtype=torch.long),
            "obj_pos": torch.tensor([it["obj_pos"] for it in items], dtype=torch.long),
            "labels": torch.tensor([it["label"] for it in items], dtype=torch.long)}


def _model_class():
    import torch
    import torch.nn.functional as F
    from torch import nn

    class TypMarkerClassifier(nn.Module):
        """Encoder + MLP over [h(subject-start marker); h(object-start marker)]."""

        def __init__(self, encoder, num_labels: int, dropout: float = 0.1):
            super().__init__()
            self.encoder = encoder
            hidden = encoder.config.hidden_size
            self.head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
                                      nn.Linear(hidden, num_labels))

        def forward(self, input_ids, attention_mask, subj_pos, obj_pos, labels=None):
            states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            rows = torch.arange(states.size(0), device=states.device)
            h = torch.cat([states[rows, subj_pos], states[rows, obj_pos]], dim=-1)
            logits = self.head(h)
            out = {"scores": logits}
            if labels is not None:
                known = labels >= 0
                out["loss"] = F.cross_entropy(logits[known], labels[known]) if known.any() else logits.sum() * 0
            return out

    return TypMarkerClassifier


def _load_encoder(path: str):
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(path)
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None  # unused: would leave DDP with parameters that get no gradient
    return encoder


def build_model(init_path: str, num_labels: int, seed: int = 0):
    """Fresh classifier on the encoder at `init_path` (HF folder/id; MLM heads are dropped)."""
    import torch

    encoder = _load_encoder(init_path)
    torch.manual_seed(seed)
    return _model_class()(encoder, num_labels)


def save_model(model, directory: str) -> None:
    """Encoder as a plain HF folder + the head's state dict in tkre_head.pt."""
    import torch

    model.encoder.save_pretrained(directory)
    torch.save({"state_dict": model.head.state_dict(), "num_labels": model.head[-1].out_features},
               Path(directory) / HEAD_FILE)


def load_model(directory: str):
    import torch

    head = torch.load(Path(directory) / HEAD_FILE, map_location="cpu", weights_only=True)
    model = _model_class()(_load_encoder(directory), head["num_labels"])
    model.head.load_state_dict(head["state_dict"])
    return model

