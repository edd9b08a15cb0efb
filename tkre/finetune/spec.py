"""`FinetuneSpec`: everything that defines a fine-tuned classifier besides its weights -- backbone,
label set, no-relation class (or None), max length, whether types are written, GenPT label words.

It is picklable (shipped to Ray workers and actors), dispatches to the backbone modules
(typ_marker, genpt), and is saved next to the HF weights as `tkre_finetune.json`, so a checkpoint
folder is self-describing: `load_checkpoint(dir)` rebuilds the model, tokenizer and spec.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from tkre.data.records import RelationExample
from tkre.errors import ConfigError
from tkre.finetune import genpt, typ_marker
from tkre.finetune.inputs import load_tokenizer

SPEC_FILE = "tkre_finetune.json"
BACKBONES = ("typ_marker", "genpt")


@dataclass
class FinetuneSpec:
    backbone: str
    relations: list[str]
    no_relation: str | None  # the class micro-F1 leaves out; None: the label set has none
    max_length: int
    use_types: bool
    label_words: dict[str, str] = field(default_factory=dict)  # GenPT overrides of verbalize()

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ConfigError(f"unknown backbone {self.backbone!r} (known: {', '.join(BACKBONES)})")
        if len(set(self.relations)) != len(self.relations) or not self.relations:
            raise ConfigError("the label set must be a non-empty list of distinct relations")

    # ------------------------------------------------------------------ inputs
    def label_table(self, tokenizer) -> list[list[int]]:
        return genpt.label_token_table(tokenizer, self.relations, self.label_words)

    def encode(self, examples: Sequence[RelationExample], tokenizer) -> tuple[list[dict], int]:
        """Items for `collate` and the number of windowed examples."""
        if self.backbone == "typ_marker":
            return typ_marker.encode(examples, tokenizer, relations=self.relations, max_length=self.max_length,
                                     use_types=self.use_types)
        return genpt.encode(examples, tokenizer, relations=self.relations, max_length=self.max_length,
                            use_types=self.use_types, label_table=self.label_table(tokenizer))

    def collate(self, items: list[dict], pad_id: int) -> dict:
        return (typ_marker if self.backbone == "typ_marker" else genpt).collate(items, pad_id)

    # ------------------------------------------------------------------ models
    def build_model(self, init_path: str, tokenizer, seed: int = 0):
        if self.backbone == "typ_marker":
            return typ_marker.build_model(init_path, len(self.relations), seed)
        return genpt.build_model(init_path, self.label_table(tokenizer))  # seeded by the train loop

    def save(self, model, directory: str, tokenizer) -> None:
        """Plain HF folder (weights + tokenizer) + backbone extras + tkre_finetune.json."""
        Path(directory).mkdir(parents=True, exist_ok=True)
        (typ_marker if self.backbone == "typ_marker" else genpt).save_model(model, directory)
        tokenizer.save_pretrained(directory)
        Path(directory, SPEC_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    def to_dict(self) -> dict:
        return asdict(self)


def read_spec(directory: str) -> FinetuneSpec:
    path = Path(directory) / SPEC_FILE
    if not path.is_file():
        raise ConfigError(f"{directory} is not a tkre fine-tuned checkpoint (no {SPEC_FILE})")
    return FinetuneSpec(**json.loads(path.read_text(encoding="utf-8")))


def load_checkpoint(directory: str, *, relations: Sequence[str] | None = None):
    """(model in eval mode, tokenizer, spec) of a fine-tuned checkpoint. With `relations`, the
    checkpoint's label set must be exactly that set, else ConfigError naming the differences."""
    spec = read_spec(directory)
    if relations is not None and set(relations) != set(spec.relations):
        extra = sorted(set(relations) - set(spec.relations))
        missing = sorted(set(spec.relations) - set(relations))
        raise ConfigError(f"checkpoint {directory} was trained on a different label set: "
                          f"{len(spec.relations)} relations in the checkpoint, {len(relations)} expected; "
                          f"not in the checkpoint: {extra or 'none'}; only in the checkpoint: {missing or 'none'}")
    tokenizer = load_tokenizer(directory)
    if spec.backbone == "typ_marker":
        model = typ_marker.load_model(directory)
        if model.head[-1].out_features != len(spec.relations):
            raise ConfigError(f"checkpoint {directory}: head has {model.head[-1].out_features} outputs but "
                              f"{SPEC_FILE} lists {len(spec.relations)} relations")
    else:
        model = genpt.load_model(directory, spec.label_table(tokenizer))
    model.eval()
    return model, tokenizer, spec
