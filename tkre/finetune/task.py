"""`FinetuneTask`: the fine-tuning method as a `tkre.train_loop.TrainTask` (built on each Ray Train
worker): model from the init checkpoint, encoded training items, the backbone's loss, dev micro-F1
after every epoch, and saving a self-describing checkpoint (HF weights + tokenizer + spec).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tkre.store.refs import HandOver, materialise
from tkre.data.records import RelationExample
from tkre.finetune.evaluate import predict
from tkre.finetune.inputs import load_tokenizer
from tkre.finetune.spec import FinetuneSpec
from tkre.metrics import classification_scores


class ItemDataset:
    """Map-style dataset over pre-encoded items (dicts of ints / int lists)."""

    def __init__(self, items: list[dict]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


@dataclass
class FinetuneTask:
    spec: FinetuneSpec
    init_path: HandOver                # HF folder/id the weights start from, or a reference (tkre.store.refs)
    train: list[RelationExample]
    dev: list[RelationExample]
    seed: int = 42
    eval_batch_size: int = 64
    _tokenizer: Any = field(default=None, repr=False, compare=False)
    _dev_encoded: Any = field(default=None, repr=False, compare=False)  # the dev set, encoded once

    def __getstate__(self) -> dict:  # tokenizers (and what they encoded) are rebuilt on the worker, not pickled
        state = dict(self.__dict__)
        state["_tokenizer"] = state["_dev_encoded"] = None
        return state

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(materialise(self.init_path))
        return self._tokenizer

    # ---------------------------------------------------------------- TrainTask protocol
    def build_model(self):
        return self.spec.build_model(materialise(self.init_path), self.tokenizer, self.seed)

    def train_dataset(self) -> ItemDataset:
        items, _ = self.spec.encode(self.train, self.tokenizer)
        return ItemDataset(items)

    def collate(self, items: list) -> dict:
        return self.spec.collate(items, self.tokenizer.pad_token_id)

    def loss(self, model, batch: dict) -> tuple[Any, dict[str, float]]:
        out = model(**batch)
        return out["loss"], {}

    def evaluate(self, model, epoch: int) -> dict[str, float]:
        if not self.dev:
            return {}
        if self._dev_encoded is None:
            self._dev_encoded = self.spec.encode(self.dev, self.tokenizer)
        preds, _, _ = predict(model, self.tokenizer, self.spec, self.dev, batch_size=self.eval_batch_size,
                              encoded=self._dev_encoded)
        s = classification_scores([ex.relation for ex in self.dev], preds, self.spec.no_relation)
        return {"dev_micro_f1": s["micro_f1"], "dev_macro_f1": s["macro_f1"], "dev_accuracy": s["accuracy"]}

    def save(self, model, directory: str) -> None:
        self.spec.save(model, directory, self.tokenizer)
